import CheckpointIO
import DroptraceSupport
import TensorEngine

/// HunYuanVL (`hunyuan_vl`, transformers' models/hunyuan_vl/:
/// HunYuanVLForConditionalGeneration, e.g. HunyuanOCR) read as its language
/// model, HunYuanVLTextModel: Hunyuan dense's block (`HunYuanDenseV1Model`:
/// q/k/v/o biases by `attention_bias`, per-head query/key RMSNorms after
/// rotary, NTK-alpha rotation for type "dynamic" with an `alpha`) under
/// HunYuanVLTextConfig, rotating by M-RoPE. The vision tower is never read:
/// scoring runs on text, where HunYuanVLModel computes no multimodal
/// positions (no image grid) and the text model takes positions 0, 1, … on
/// every axis, so M-RoPE rotates as the plain rotation; its section is only
/// checked (`checkSection`).
enum HunYuanVL {
    /// Where the language model is: `text_config` (HunYuanVLTextConfig) or
    /// the top level, weights beside `vit.`
    /// (`TextModelPlacement.textConfigOrTopLevel`).
    static func placement(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        try .textConfigOrTopLevel(checkpoint, textModelType: "hunyuan_vl_text")
    }

    /// HunYuanVLRotaryEmbedding: Hunyuan dense's rotation
    /// (`HunYuanDenseV1Model.rotary`), the released rope type "xdrope" read
    /// as "dynamic" (HunYuanVLTextConfig.convert_rope_params_to_dict).
    /// - Throws: `DroptraceError` naming config.json for rope settings the
    ///   family cannot run or a section transformers refuses or cannot index.
    static func rotary(_ parts: DecoderParts, _ config: HunYuanDenseV1Configuration) throws -> RotaryEmbedding {
        var (settings, key, _) = try parts.ropeSettings(defaults: [:])
        if settings.type == "xdrope" { settings.type = "dynamic" }
        let rotary = try HunYuanDenseV1Model.rotary(parts, config, settings: settings)
        try parts.checks {
            try checkSection(parts.sectionDocument?.member(key), halfHead: parts.dimensions.resolvedHeadDim / 2, key: key)
        }
        return rotary
    }

    /// The M-RoPE section as HunYuanVLTextConfig and its rotary embedding
    /// take it: `mrope_section`, else its legacy name `xdrope_section`
    /// (both given, their values must agree); integers (or integral floats,
    /// which the class converts) summing to head_dim // 2
    /// (`_validate_mrope_section`), none negative (torch.split fails on a
    /// negative run); absent or null, the rotary embedding fails on it
    /// (`len(None)`).
    /// - Throws: `InvalidConfigValue` naming the key.
    static func checkSection(_ rope: JSONValue?, halfHead: Int, key: String) throws {
        func present(_ name: String) -> JSONValue? {
            guard let value = rope?.member(name) else { return nil }
            if case .null = value { return nil }
            return value
        }
        /// Python's float() of each item where the value is a list of numbers.
        func numbers(_ value: JSONValue) -> [Double]? {
            guard case .array(let items) = value else { return nil }
            let values = items.compactMap { item -> Double? in
                switch item {
                case .integer(let n): return Double(n)
                case .number(let x), .bigInteger(let x): return x
                case .bool(let flag): return flag ? 1 : 0
                default: return nil
                }
            }
            return values.count == items.count ? values : nil
        }
        let section = present("mrope_section"), legacy = present("xdrope_section")
        if let section, let legacy, numbers(section) == nil || numbers(legacy) == nil || numbers(section) != numbers(legacy) {
            throw InvalidConfigValue(
                key: key + ".xdrope_section",
                problem: "differs from \(key).mrope_section: HunYuanVLTextConfig refuses both names with different sections")
        }
        let name = section != nil ? "mrope_section" : "xdrope_section"
        guard let value = section ?? legacy else {
            throw InvalidConfigValue(
                key: key + ".mrope_section",
                problem: "is absent or null, which HunYuanVLRotaryEmbedding counts the M-RoPE axes of: give the section (summing to \(halfHead))")
        }
        guard let values = numbers(value), values.allSatisfy({ $0 == $0.rounded() && abs($0) < 1e15 }),
              values.map({ Int($0) }).reduce(0, +) == halfHead, values.allSatisfy({ $0 >= 0 })
        else {
            throw InvalidConfigValue(
                key: key + "." + name,
                problem: "is \(ConfigValueKinds.spelled(value)), but HunYuanVL splits each head's \(halfHead) frequency pairs by it: "
                    + "it must be non-negative integers summing to \(halfHead)")
        }
    }
}

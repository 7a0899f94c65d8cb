import CheckpointIO
import DroptraceSupport
import TensorEngine

/// The `mrope_section` of a multimodal rotary embedding (M-RoPE): how many
/// of the rotary frequencies read each position axis (temporal, height,
/// width). Text has the same position on every axis, so the section changes
/// no score; but transformers still indexes the frequencies with it, and a
/// section it cannot index makes the forward pass fail. droptrace refuses
/// those, as the rotary embedding that reads the section would fail:
/// - `.split(frequencies:)`: Qwen2-VL's, Qwen2.5-VL's and GLM-4.1V/4.5V's rotary
///   embeddings split the head's rotated frequencies into consecutive runs
///   of the given lengths (`torch.split`): non-negative integers summing to
///   that count, or one positive integer (runs of that length);
/// - `.interleaved(className:)`: Qwen3-VL's and CohereCompass's take items 1
///   and 2 as counts of interleaved columns: a list of at least 3 integers.
enum MropeSection {
    case split(frequencies: Int)
    case interleaved(className: String)

    /// Checks `value` (nil: absent, then `defaultSection` applies) of the
    /// config key `key` (named as config.json writes it).
    /// - Throws: `InvalidConfigValue` naming `key`.
    func check(_ value: JSONValue?, defaultSection: [Int], key: String) throws {
        let integers: [Int]?
        switch value {
        case nil:
            integers = defaultSection
        case .array(let items)?:
            let values = items.compactMap { item -> Int? in if case .integer(let n) = item { n } else { nil } }
            integers = values.count == items.count ? values : nil
        case .integer(let run)?:
            if case .split = self, run > 0 { return }
            integers = nil
        default:
            integers = nil
        }
        switch self {
        case .split(let frequencies):
            guard let integers, integers.allSatisfy({ $0 >= 0 }), integers.reduce(0, +) == frequencies else {
                let stated = value == nil ? "is absent, so the rotary embedding takes \(defaultSection)," : "is \(value.map(ConfigValueKinds.spelled) ?? "")"
                throw InvalidConfigValue(
                    key: key,
                    problem: "\(stated) but the rotary embedding splits the head's \(frequencies) rotated frequencies by it: "
                        + "it must be non-negative integers summing to \(frequencies)")
            }
        case .interleaved(let className):
            guard let integers, integers.count >= 3 else {
                throw InvalidConfigValue(
                    key: key, problem: "must be a list of at least 3 integers: \(className) indexes items 1 and 2 as column counts")
            }
        }
    }
}

extension DecoderParts {
    /// The rotary embedding of a language model whose transformers class
    /// rotates by M-RoPE (the plain rotation on text): rope parameters from a
    /// truthy `rope_scaling`, else `rope_parameters`, base `defaultTheta`
    /// when they name none, `partialRotary` as the family reads it; with
    /// `readsMropeType`, rope type "mrope" is the default one
    /// (`Qwen2VLTextConfig.convert_rope_params_to_dict`). Their
    /// `mrope_section` (`defaultSection` when absent) must split the rotated
    /// frequencies, or with `interleavedBy` (the class's name) index them as
    /// interleaved columns (`MropeSection`).
    /// - Throws: `DroptraceError` naming config.json for rope settings the
    ///   family cannot run or a section the rotary embedding cannot index.
    func mropeRotary(
        interleavedBy className: String? = nil, defaultSection: [Int], defaultTheta: Double,
        partialRotary: RopeSettings.PartialRotary = .ignored, readsMropeType: Bool = false
    ) throws -> RotaryEmbedding {
        try confirmAttentionProjections()
        var (settings, key, _) = try ropeSettings(defaults: [:])
        if readsMropeType, settings.type == "mrope" { settings.type = "default" }
        let rotary = try self.rotary(defaultTheta: defaultTheta, partialRotary: partialRotary, confirmProjections: false, settings: settings)
        let rule = className.map(MropeSection.interleaved) ?? .split(frequencies: rotary.inverseFrequencies.count)
        try checks {
            try rule.check(sectionDocument?.member(key)?.member("mrope_section"), defaultSection: defaultSection, key: key + ".mrope_section")
        }
        return rotary
    }
}

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
///   and 2 as counts of interleaved columns: a list whose items 1 and 2 are
///   integers (item 0 is never read);
/// - `.heightWidthPairs(frequencies:)`: ERNIE 4.5 VL's (Ernie4_5_VLMoeTextRotaryEmbedding)
///   takes [height, width, temporal]: it reorders the first height + width
///   frequencies evens first, then stacks the height and width runs into
///   pairs and the temporal run after them: three non-negative integers
///   summing to the frequency count, height equal to width (the stacked
///   runs), temporal at least 1 (it slices the frequencies up to −temporal).
///   On text the reordering and the pairing undo each other: the plain rotation.
/// - `.interleavedRuns(className:frequencies:)`: interleaved columns as
///   Qwen3-VL's, in a config class whose validation requires exactly three
///   integers summing to a given count (Cosmos3EdgeTextConfig's: head_dim / 2;
///   HYV4VLTextConfig's: qk_rope_head_dim / 2).
enum MropeSection {
    case split(frequencies: Int)
    case interleaved(className: String)
    case heightWidthPairs(frequencies: Int)
    case interleavedRuns(className: String, frequencies: Int)

    /// Checks `value` (nil: absent, then `defaultSection` applies) of the
    /// config key `key` (named as config.json writes it).
    /// - Throws: `InvalidConfigValue` naming `key`.
    func check(_ value: JSONValue?, defaultSection: [Int], key: String) throws {
        let items: [JSONValue]?
        switch value {
        case nil: items = defaultSection.map { .integer($0) }
        case .array(let list)?: items = list
        default: items = nil
        }
        // The items as runs of frequencies: all non-negative integers, else nil.
        let runs = items.flatMap { items in
            let runs = items.compactMap { item -> Int? in if case .integer(let n) = item, n >= 0 { n } else { nil } }
            return runs.count == items.count ? runs : nil
        }
        let stated = value == nil ? "is absent, so the rotary embedding takes \(defaultSection)," : "is \(value.map(ConfigValueKinds.spelled) ?? "")"
        switch self {
        case .split(let frequencies):
            if case .integer(let run)? = value, run > 0 { return }
            guard let runs, runs.reduce(0, +) == frequencies else {
                throw InvalidConfigValue(
                    key: key,
                    problem: "\(stated) but the rotary embedding splits the head's \(frequencies) rotated frequencies by it: "
                        + "it must be non-negative integers summing to \(frequencies)")
            }
        case .heightWidthPairs(let frequencies):
            guard let runs, runs.count == 3, runs.reduce(0, +) == frequencies, runs[0] == runs[1], runs[2] >= 1 else {
                throw InvalidConfigValue(
                    key: key,
                    problem: "\(stated) but the rotary embedding pairs its height and width runs over the head's \(frequencies) "
                        + "rotated frequencies: it must be [height, width, temporal], non-negative integers summing to \(frequencies), "
                        + "height equal to width, temporal at least 1")
            }
        case .interleavedRuns(let className, let frequencies):
            let integers = items?.compactMap { item -> Int? in if case .integer(let n) = item { n } else { nil } }
            guard let integers, integers.count == 3, items?.count == 3, integers.reduce(0, +) == frequencies else {
                throw InvalidConfigValue(
                    key: key,
                    problem: "\(stated) but transformers (\(className)) requires three integers (time, height, width) "
                        + "summing to \(frequencies)")
            }
        case .interleaved(let className):
            // Only items 1 and 2 are read, as Python ints (true counts as 1, a huge one is clipped).
            func isCount(_ item: JSONValue) -> Bool {
                switch item {
                case .integer, .bigInteger, .bool: return true
                default: return false
                }
            }
            guard let items, items.count >= 3, isCount(items[1]), isCount(items[2]) else {
                throw InvalidConfigValue(
                    key: key, problem: "must be a list whose items 1 and 2 are integers: \(className) indexes them as column counts")
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
    /// interleaved columns (with `runsSummingTo`, three runs summing to it),
    /// or with `pairingHeightWidth` pair the height and width runs (`MropeSection`).
    /// - Throws: `DroptraceError` naming config.json for rope settings the
    ///   family cannot run or a section the rotary embedding cannot index.
    func mropeRotary(
        interleavedBy className: String? = nil, pairingHeightWidth: Bool = false, runsSummingTo halfHead: Int? = nil,
        defaultSection: [Int], defaultTheta: Double, partialRotary: RopeSettings.PartialRotary = .ignored, readsMropeType: Bool = false
    ) throws -> RotaryEmbedding {
        try confirmAttentionProjections()
        var (settings, key, _) = try ropeSettings(defaults: [:])
        if readsMropeType, settings.type == "mrope" { settings.type = "default" }
        let rotary = try self.rotary(defaultTheta: defaultTheta, partialRotary: partialRotary, confirmProjections: false, settings: settings)
        let frequencies = rotary.inverseFrequencies.count
        let rule: MropeSection
        if pairingHeightWidth {
            rule = .heightWidthPairs(frequencies: frequencies)
        } else if let className {
            rule = halfHead.map { .interleavedRuns(className: className, frequencies: $0) } ?? .interleaved(className: className)
        } else {
            rule = .split(frequencies: frequencies)
        }
        try checks {
            try rule.check(sectionDocument?.member(key)?.member("mrope_section"), defaultSection: defaultSection, key: key + ".mrope_section")
        }
        return rotary
    }
}

import CheckpointIO
import DroptraceSupport

/// The `mrope_section` of a multimodal rotary embedding (M-RoPE): how many
/// of the rotary frequencies read each position axis (temporal, height,
/// width). Text has the same position on every axis, so the section changes
/// no score; but transformers still indexes the frequencies with it, and a
/// section it cannot index makes the forward pass fail. droptrace refuses
/// those, as the rotary embedding that reads the section would fail:
/// - `.split(halfWidth:)`: Qwen2-VL's and Qwen2.5-VL's
///   (`Qwen2VLRotaryEmbedding`) split the head's `halfWidth` frequencies into
///   consecutive runs of the given lengths (`torch.split`): non-negative
///   integers summing to `halfWidth`, or one positive integer (runs of that length);
/// - `.interleaved(className:)`: Qwen3-VL's and CohereCompass's take items 1
///   and 2 as counts of interleaved columns: a list of at least 3 integers.
enum MropeSection {
    case split(halfWidth: Int)
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
        case .split(let halfWidth):
            guard let integers, integers.allSatisfy({ $0 >= 0 }), integers.reduce(0, +) == halfWidth else {
                let stated = value == nil ? "is absent, so Qwen2VLRotaryEmbedding takes \(defaultSection)," : "is \(value.map(ConfigValueKinds.spelled) ?? "")"
                throw InvalidConfigValue(
                    key: key,
                    problem: "\(stated) but the rotary embedding splits the head's \(halfWidth) frequencies by it: "
                        + "it must be non-negative integers summing to \(halfWidth)")
            }
        case .interleaved(let className):
            guard let integers, integers.count >= 3 else {
                throw InvalidConfigValue(
                    key: key, problem: "must be a list of at least 3 integers: \(className) indexes items 1 and 2 as column counts")
            }
        }
    }
}

import Foundation

/// Training steps and token counts encoded in checkpoint directory names:
/// `checkpoint-<step>` (Trainer), `step<N>`, `step-<N>`, `step_<N>`,
/// `global_step<N>` (DeepSpeed) and `step<N>-tokens<M>[K|M|B|T]`, optionally
/// behind a `stage<K>-` prefix (OLMo; `tokens4B` is four billion tokens).
public enum CheckpointName {
    nonisolated(unsafe) private static let stepPattern = try! NSRegularExpression(
        pattern: #"^(?:stage\d+-)?(?:checkpoint-|global_step|step[-_]?)(\d+)(?:-tokens(\d+)([KMBT]?))?$"#)

    /// The step in `name`, or nil when the name follows none of the patterns.
    public static func step(_ name: String) -> Int64? {
        match(name)?.step
    }

    /// The tokens seen, when the name carries them (OLMo's `-tokens<M>`).
    public static func tokens(_ name: String) -> Int64? {
        match(name)?.tokens
    }

    private static func match(_ name: String) -> (step: Int64, tokens: Int64?)? {
        let range = NSRange(name.startIndex..., in: name)
        guard let result = stepPattern.firstMatch(in: name, range: range),
              let stepRange = Range(result.range(at: 1), in: name),
              let step = Int64(name[stepRange])
        else { return nil }
        let count = Range(result.range(at: 2), in: name).flatMap { Int64(name[$0]) }
        let unit = Range(result.range(at: 3), in: name).map { String(name[$0]) } ?? ""
        let scale: Int64 = ["K": 1_000, "M": 1_000_000, "B": 1_000_000_000, "T": 1_000_000_000_000][unit] ?? 1
        return (step, count.map { $0 * scale })
    }
}

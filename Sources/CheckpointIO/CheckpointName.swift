import Foundation

/// Training steps, token counts and stages encoded in checkpoint directory
/// names, as the training frameworks and the published checkpoint series
/// write them:
///
/// | name | written by |
/// | --- | --- |
/// | `checkpoint-<N>` | transformers' Trainer |
/// | `step<N>`, `step-<N>`, `step_<N>` | Pythia, SmolLM, most hand-written loops |
/// | `global_step<N>` | DeepSpeed |
/// | `step<N>-tokens<M>[K\|M\|B\|T]` | OLMo (`tokens4B` is four billion tokens) |
/// | `stage<S>-step<N>-tokens<M>B`, `stage<S>-ingredient<K>-step<N>-tokens<M>B` | OLMo 2 |
/// | `step-<N>k-token-<M>B`, `step-<N>k-<M>B` | TinyLlama (`step-480k` is step 480 000; `2.5T` tokens) |
/// | `<model>-<size>B-[intermediate-]<any of these>` | Hub repository names (`TinyLlama-1.1B-intermediate-step-1431k-3T`) |
/// | `step-<N>-<M>BT` | FineWeb ablations (`2BT`: two billion tokens) |
/// | `ckpt_<N>` | LLM360 Amber: a checkpoint index, not a step |
///
/// Token units are K, M, B or T in either case, after a whole or decimal
/// count (`2.5T`, a whole number of tokens once scaled).
/// A number too large for Int64 (or that overflows once scaled) leaves the
/// step or token count unknown and sets `Parts.overflowed`; it never traps.
public enum CheckpointName {
    /// The accepted forms, for messages that say what was expected.
    public static let acceptedForms =
        "checkpoint-<N>, step<N>, step-<N>, step_<N>, global_step<N>, step<N>-tokens<M>B, "
        + "stage<S>-[ingredient<K>-]step<N>-tokens<M>B, step-<N>k-[token-]<M>B, step-<N>-<M>BT, ckpt_<N>, "
        + "each also after a Hub repository's <model>-<size>B-[intermediate-]"

    /// What a name says about its checkpoint.
    public struct Parts: Sendable, Equatable {
        /// Training stage (OLMo 2 `stage<S>-`), nil when the name has none.
        public var stage: Int64?
        /// Mid-training ingredient (OLMo 2 `ingredient<K>-`), nil when the name has none.
        public var ingredient: Int64?
        /// Training step; nil when the name carries an index instead, or the number overflows.
        public var step: Int64?
        /// Checkpoint index (Amber's `ckpt_<N>`), which orders but is not a step.
        public var index: Int64?
        /// Tokens seen, when the name carries them.
        public var tokens: Int64?
        /// Whether a number in the name is beyond Int64 (once scaled), so the
        /// part it stands for is unknown although the name carries it.
        public var overflowed = false

        public init(stage: Int64? = nil, ingredient: Int64? = nil, step: Int64? = nil, index: Int64? = nil, tokens: Int64? = nil) {
            (self.stage, self.ingredient, self.step, self.index, self.tokens) = (stage, ingredient, step, index, tokens)
        }
    }

    // ASCII digits only (ICU's \d takes any script's, which Int64 does not
    // read), and \z: `$` also matches before a final line break.
    // Groups: 1 stage, 2 ingredient, 3 step, 4 its k; tokens as 5 count and 6 unit (`-tokens4B`, `-token-2.5T`),
    // 7 and 8 (FineWeb's `-2BT`) or 9 and 10 (TinyLlama's `-3T`, `-105b`).
    nonisolated(unsafe) private static let stepPattern = try! NSRegularExpression(
        pattern: #"^"# + hubRepository + #"(?:stage([0-9]+)-)?(?:ingredient([0-9]+)-)?(?:checkpoint-|global_step|step[-_]?)([0-9]+)([kK])?"#
            + #"(?:-tokens?-?([0-9]+(?:\.[0-9]+)?)([KMBTkmbt]?)|-([0-9]+)([KMBTkmbt])T|-([0-9]+(?:\.[0-9]+)?)([KMBTkmbt]))?\z"#)
    nonisolated(unsafe) private static let indexPattern = try! NSRegularExpression(pattern: #"^"# + hubRepository + #"ckpt_([0-9]+)\z"#)
    /// A Hub repository's name before the checkpoint's (`TinyLlama-1.1B-intermediate-`), as a download
    /// into a directory of the repository's name leaves it.
    private static let hubRepository = #"(?:[A-Za-z][A-Za-z0-9]*-[0-9]+(?:\.[0-9]+)?[BMbm]-(?:intermediate-)?)?"#

    /// The parts of `name`, or nil when the name follows none of the forms.
    public static func parse(_ name: String) -> Parts? {
        let range = NSRange(name.startIndex..., in: name)
        if let result = indexPattern.firstMatch(in: name, range: range) {
            var parts = Parts(index: number(result, 1, in: name))
            parts.overflowed = parts.index == nil
            return parts
        }
        guard let result = stepPattern.firstMatch(in: name, range: range) else { return nil }
        var parts = Parts(stage: number(result, 1, in: name), ingredient: number(result, 2, in: name))
        parts.step = scaled(number(result, 3, in: name), unit: text(result, 4, in: name))
        let tokenGroups = [(5, 6), (7, 8), (9, 10)].first { result.range(at: $0.0).location != NSNotFound }
        let hasTokens = tokenGroups != nil
        if let (countGroup, unitGroup) = tokenGroups {
            let (count, unit) = (text(result, countGroup, in: name), text(result, unitGroup, in: name))
            guard isWholeNumberOfTokens(count, unit: unit) else { return nil }
            parts.tokens = scaledTokens(count, unit: unit)
        }
        let present = [1, 2].filter { result.range(at: $0).location != NSNotFound }
        parts.overflowed = parts.step == nil || (hasTokens && parts.tokens == nil)
            || present.contains { number(result, $0, in: name) == nil }
        return parts
    }

    /// The entries of `directory` named like checkpoints, sorted by name;
    /// none when it cannot be listed.
    public static func entries(in directory: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { parse($0) != nil }.sorted()
    }

    /// Whether `name` is a Trainer's staging directory for a checkpoint
    /// (`tmp-checkpoint-<N>`: some versions save there and rename it when complete).
    public static func isStaging(_ name: String) -> Bool {
        name.hasPrefix("tmp-") && parse(String(name.dropFirst(4))) != nil
    }

    /// Whether `name` is a checkpoint's, finished or staged.
    public static func isCheckpointOrStaging(_ name: String) -> Bool {
        parse(name) != nil || isStaging(name)
    }

    /// The step in `name`, or nil when the name follows none of the forms or carries no step.
    public static func step(_ name: String) -> Int64? {
        parse(name)?.step
    }

    /// The tokens seen, when the name carries them.
    public static func tokens(_ name: String) -> Int64? {
        parse(name)?.tokens
    }

    /// Where a checkpoint falls in its series: by stage, then ingredient, then
    /// step (or index, for names that carry one). OLMo 2's stage-2
    /// ingredients are separate mid-training runs that each restart their
    /// steps from the end of stage 1, so each ingredient is kept together
    /// after stage 1 rather than interleaved with the others. A name without
    /// a stage or ingredient counts as stage 0, ingredient 0; an unknown step
    /// sorts after every known one. Callers break ties by name.
    public struct Position: Comparable, Hashable, Sendable {
        public var stage: Int64
        public var ingredient: Int64
        public var step: Int64

        /// Whether the step is known (from trainer_state.json or the name):
        /// only then do two positions name one point of training.
        public var isKnown: Bool { step != Int64.max }

        public static func < (a: Position, b: Position) -> Bool {
            (a.stage, a.ingredient, a.step) < (b.stage, b.ingredient, b.step)
        }
    }

    /// The position of checkpoint `name` whose step is `step` (−1 when
    /// unknown; it may come from trainer_state.json rather than the name).
    /// A name that carries an index is placed by it even when `step` is
    /// known: a series where trainer_state.json is missing from some
    /// checkpoints (the newest, before the Trainer writes it) would
    /// otherwise set indices against steps.
    public static func position(name: String, step: Int64) -> Position {
        let parts = parse(name)
        return Position(
            stage: parts?.stage ?? 0, ingredient: parts?.ingredient ?? 0,
            step: parts?.index ?? (step >= 0 ? step : Int64.max))
    }

    /// `count` times K, M, B or T in either case (`k` for thousands of steps); nil on overflow.
    private static func scaled(_ count: Int64?, unit: String) -> Int64? {
        guard let count else { return nil }
        let (product, overflow) = count.multipliedReportingOverflow(by: scale(of: unit))
        return overflow ? nil : product
    }

    private static func scale(of unit: String) -> Int64 {
        ["K": 1_000, "M": 1_000_000, "B": 1_000_000_000, "T": 1_000_000_000_000][unit.uppercased()] ?? 1
    }

    /// Whether a count written `2.5` with unit `T` is a whole number of
    /// tokens: at most as many decimals as the unit has zeros.
    private static func isWholeNumberOfTokens(_ count: String, unit: String) -> Bool {
        let decimals = count.split(separator: ".").dropFirst().first?.count ?? 0
        return decimals <= String(scale(of: unit)).count - 1
    }

    /// The tokens of a count written `2.5` with unit `T`, whole
    /// (`isWholeNumberOfTokens`); nil beyond Int64.
    private static func scaledTokens(_ count: String, unit: String) -> Int64? {
        let parts = count.split(separator: ".")
        guard parts.count == 2 else { return scaled(Int64(count), unit: unit) }
        var divisor: Int64 = 1
        for _ in parts[1] { divisor *= 10 }
        guard let whole = scaled(Int64(parts[0]), unit: unit), let fraction = Int64(parts[1]) else { return nil }
        let (part, overflow) = fraction.multipliedReportingOverflow(by: scale(of: unit) / divisor)
        let (sum, beyond) = whole.addingReportingOverflow(part)
        return overflow || beyond ? nil : sum
    }

    private static func text(_ result: NSTextCheckingResult, _ group: Int, in name: String) -> String {
        Range(result.range(at: group), in: name).map { String(name[$0]) } ?? ""
    }

    /// The decimal number in `group`, nil when absent or beyond Int64.
    private static func number(_ result: NSTextCheckingResult, _ group: Int, in name: String) -> Int64? {
        Range(result.range(at: group), in: name).flatMap { Int64(name[$0]) }
    }
}

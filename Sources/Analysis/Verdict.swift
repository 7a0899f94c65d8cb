import Foundation

/// Whether attention redundancy is inherent across a training run.
///
/// The paper's claim (He et al. 2024, "What Matters in Transformers?") is
/// that attention layers are more redundant than MLP layers and that the
/// redundant ones are the same throughout training, not something that
/// appears only at the end. The rule tests exactly those three parts:
///
/// 1. `attention_below_mlp`: attention's mean importance is below MLP's at
///    ≥ 80% of the checkpoints (attention is the more redundant module type;
///    checkpoints with an undefined mean are left out);
/// 2. `drop_set_agreement`: the median, over all checkpoints but the final
///    one, of the Jaccard overlap between the checkpoint's attention drop-k
///    set and the final checkpoint's is ≥ 0.5 (the layers one would drop
///    early are mostly the ones one drops at the end);
/// 3. `early_stabilisation`: the attention drop-k set stops changing within
///    the first half of the run, i.e. (stabilisation step − first step) /
///    (last step − first step) ≤ 0.5; when steps are unknown or not
///    increasing, the checkpoint index / (C − 1) is used instead.
///
/// k is the larger default drop-k (round(L/2)), whatever k values were asked
/// for, so the verdict of a run does not depend on command-line options.
/// "inherent" when all three pass, "not inherent" when any fails, and
/// "inconclusive" with fewer than 3 checkpoints (no trend to speak of) or
/// when a criterion cannot be measured (undefined scores).
public struct Verdict: Sendable, Equatable {
    public enum Outcome: String, Sendable, CaseIterable {
        case inherent
        case notInherent = "not inherent"
        case inconclusive
    }

    public var outcome: Outcome
    /// The drop-k used by criteria 2 and 3.
    public var k: Int
    public var criteria: [VerdictCriterion]
    /// One sentence on why the outcome is what it is.
    public var reason: String

    public init(outcome: Outcome, k: Int, criteria: [VerdictCriterion], reason: String) {
        self.outcome = outcome
        self.k = k
        self.criteria = criteria
        self.reason = reason
    }

    /// Thresholds of the rule (see the type's documentation).
    public static let attentionBelowMLPFraction = 0.8
    public static let medianJaccardThreshold = 0.5
    public static let stabilisationFraction = 0.5
    public static let minimumCheckpoints = 3

    /// The rule in one paragraph, for the report and the HDF5 attribute.
    public static let ruleDescription = """
        Attention redundancy is called inherent when all three criteria pass: \
        (1) attention's mean importance is below MLP's at ≥ 80% of checkpoints \
        (those with undefined scores left out); \
        (2) the median, over all checkpoints except the final one, of the Jaccard overlap between \
        the checkpoint's attention drop-k set and the final checkpoint's is ≥ 0.5; \
        (3) the attention drop-k set stops changing within the first half of the run \
        ((stabilisation step − first step) / (last step − first step) ≤ 0.5, or checkpoint index / (C − 1) \
        when steps are unknown). k is the larger default drop-k, round(L/2). \
        Not inherent when any criterion fails; inconclusive with fewer than 3 checkpoints \
        or when a criterion cannot be measured.
        """

    /// Applies the rule.
    /// - Parameters:
    ///   - attentionMean, mlpMean: [C] mean importance per checkpoint.
    ///   - attentionRankings: [C][L] attention rankings (most redundant first).
    ///   - steps: [C] training steps, -1 when unknown.
    public static func evaluate(
        attentionMean: [Double], mlpMean: [Double], attentionRankings: [[Int]], steps: [Int64]
    ) -> Verdict {
        let count = steps.count
        let layers = attentionRankings.first?.count ?? 0
        let k = DropSets.defaultDropK(layers: layers).last ?? 1
        let sets = attentionRankings.map { DropSets.dropSet(ranking: $0, k: k) }

        // 1. Attention below MLP. A checkpoint with an undefined mean (a NaN
        // score) says nothing either way, so it is left out rather than
        // counted as a failure.
        let comparable = zip(attentionMean, mlpMean).filter { !$0.isNaN && !$1.isNaN }
        let below = comparable.filter { $0 < $1 }.count
        let belowFraction = comparable.isEmpty ? Double.nan : Double(below) / Double(comparable.count)
        let leftOut = count - comparable.count
        let criterion1 = VerdictCriterion(
            id: "attention_below_mlp",
            description: "Fraction of checkpoints where attention's mean importance is below MLP's",
            value: belowFraction, comparison: .atLeast, threshold: attentionBelowMLPFraction,
            detail: "attention below MLP at \(below) of \(comparable.count) "
                + "checkpoint\(comparable.count == 1 ? "" : "s")"
                + (leftOut > 0 ? " (\(leftOut) with undefined scores left out)" : ""))

        // 2. Agreement with the final drop set.
        let earlier = sets.dropLast().map { DropSets.jaccard($0, sets[count - 1]) }
        let medianJaccard = median(earlier)
        let criterion2 = VerdictCriterion(
            id: "drop_set_agreement",
            description: "Median Jaccard overlap of the attention drop-\(k) set with the final checkpoint's "
                + "(all checkpoints but the final)",
            value: medianJaccard, comparison: .atLeast, threshold: medianJaccardThreshold,
            detail: earlier.isEmpty ? "no earlier checkpoint to compare"
                : "median over \(earlier.count) checkpoint\(earlier.count == 1 ? "" : "s")")

        // 3. Early stabilisation.
        let index = DropSets.stabilisationIndex(sets) ?? 0
        let usesSteps = stepsAreUsable(steps)
        let fraction: Double
        if count < 2 {
            fraction = .nan
        } else if usesSteps {
            fraction = Double(steps[index] - steps[0]) / Double(steps[count - 1] - steps[0])
        } else {
            fraction = Double(index) / Double(count - 1)
        }
        let location = usesSteps ? "step \(steps[index]) (checkpoint \(index) of \(count))"
            : "checkpoint \(index) of \(count)"
        let criterion3 = VerdictCriterion(
            id: "early_stabilisation",
            description: "Fraction of the run (\(usesSteps ? "in steps" : "in checkpoints")) elapsed when the "
                + "attention drop-\(k) set stops changing",
            value: fraction, comparison: .atMost, threshold: stabilisationFraction,
            detail: "settles at \(location)")

        let criteria = [criterion1, criterion2, criterion3]
        let outcome: Outcome
        let reason: String
        if count < minimumCheckpoints {
            outcome = .inconclusive
            reason = "Only \(count) checkpoint\(count == 1 ? "" : "s"); the rule needs at least "
                + "\(minimumCheckpoints) to judge a trend across training."
        } else if let unmeasured = criteria.first(where: { $0.value.isNaN }) {
            outcome = .inconclusive
            reason = "Criterion \(unmeasured.id) cannot be measured (undefined importance scores)."
        } else if criteria.allSatisfy(\.passed) {
            outcome = .inherent
            reason = "All three criteria pass."
        } else {
            outcome = .notInherent
            let failed = criteria.filter { !$0.passed }.map(\.id)
            reason = "Failed: \(failed.joined(separator: ", "))."
        }
        return Verdict(outcome: outcome, k: k, criteria: criteria, reason: reason)
    }

    /// Steps are usable as a time axis when all are known and strictly increasing.
    public static func stepsAreUsable(_ steps: [Int64]) -> Bool {
        steps.count >= 2 && steps.allSatisfy { $0 >= 0 } && zip(steps, steps.dropFirst()).allSatisfy { $0 < $1 }
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.filter { !$0.isNaN }.sorted()
        guard !sorted.isEmpty else { return .nan }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}

/// One criterion of the verdict: what was measured, against what threshold.
public struct VerdictCriterion: Sendable, Equatable, Codable {
    public enum Comparison: String, Sendable, Codable {
        case atLeast = ">="
        case atMost = "<="

        public var symbol: String { self == .atLeast ? "≥" : "≤" }
    }

    /// Stable identifier, e.g. "attention_below_mlp".
    public var id: String
    public var description: String
    /// The measured value; NaN when it cannot be measured.
    public var value: Double
    public var comparison: Comparison
    public var threshold: Double
    /// Human-readable numbers behind `value`.
    public var detail: String

    public init(id: String, description: String, value: Double, comparison: Comparison, threshold: Double,
                detail: String) {
        self.id = id
        self.description = description
        self.value = value
        self.comparison = comparison
        self.threshold = threshold
        self.detail = detail
    }

    /// Whether `value` meets the threshold; false when it is NaN.
    public var passed: Bool {
        switch comparison {
        case .atLeast: value >= threshold
        case .atMost: value <= threshold
        }
    }

    public static func == (lhs: VerdictCriterion, rhs: VerdictCriterion) -> Bool {
        lhs.id == rhs.id && lhs.description == rhs.description
            && (lhs.value == rhs.value || (lhs.value.isNaN && rhs.value.isNaN))
            && lhs.comparison == rhs.comparison && lhs.threshold == rhs.threshold && lhs.detail == rhs.detail
    }

    // JSON has no NaN: an unmeasurable value is written as null (h5py users
    // get None from json.loads), and `passed` is written for convenience.
    private enum CodingKeys: String, CodingKey {
        case id, description, value, comparison, threshold, passed, detail
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        description = try container.decode(String.self, forKey: .description)
        value = try container.decodeIfPresent(Double.self, forKey: .value) ?? .nan
        comparison = try container.decode(Comparison.self, forKey: .comparison)
        threshold = try container.decode(Double.self, forKey: .threshold)
        detail = try container.decode(String.self, forKey: .detail)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(description, forKey: .description)
        if value.isNaN { try container.encodeNil(forKey: .value) } else { try container.encode(value, forKey: .value) }
        try container.encode(comparison, forKey: .comparison)
        try container.encode(threshold, forKey: .threshold)
        try container.encode(passed, forKey: .passed)
        try container.encode(detail, forKey: .detail)
    }
}

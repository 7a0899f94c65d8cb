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
/// k is the larger default drop-k of the A layers with attention
/// (round(A/2); A = L but for models whose layers lack attention or had it
/// dropped, `ModuleSeries.layers`), whatever k values were asked for, so the
/// verdict of a run does not depend on command-line options.
/// "inconclusive" with fewer than 3 checkpoints (no trend to speak of) or
/// for attention in one layer (its drop-k set is that layer, so criteria 2
/// and 3 are not measured); otherwise "not inherent" when any criterion
/// fails, "inconclusive" when none fails but one cannot be measured
/// (undefined scores) or is within noise, and "inherent" when all three pass.
///
/// With bootstrap intervals (`ImportanceBootstrap`), a criterion passes or
/// fails only when its value and its whole interval lie on one side of the
/// threshold; one whose interval straddles the threshold is within noise.
/// A criterion that cannot be measured has no interval either.
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

    /// The verdict without its wording (the reason, each criterion's
    /// description and detail): what a stored verdict must agree with to be
    /// its rows' verdict, whichever version of droptrace worded it.
    public var judgement: Verdict {
        Verdict(outcome: outcome, k: k, criteria: criteria.map { criterion in
            var bare = criterion
            bare.description = ""
            bare.detail = ""
            return bare
        }, reason: "")
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
        when steps are unknown). k is the larger default drop-k of the A layers with attention, round(A/2) \
        (layers without a score at any checkpoint lack attention or had it dropped, and are left out of every \
        criterion). Inconclusive with fewer than 3 checkpoints or for attention in one layer (its drop-k set is \
        that layer); otherwise not inherent when any criterion fails, and inconclusive when none fails but one \
        cannot be measured or is within noise. Criteria 2 and 3 cannot be measured when the final drop-k \
        set is not decided by the scores (an undefined score, or a tie at its edge); an earlier checkpoint whose set \
        is not decided is left out of both. With per-sequence statistics stored, each measured criterion \
        carries a 95% bootstrap interval (calibration sequences resampled) and passes or fails only when \
        its value and whole interval are on the same side of the threshold; otherwise it is within noise.
        """

    /// Criterion identifiers, as stored in the criteria JSON.
    public enum CriterionID {
        public static let attentionBelowMLP = "attention_below_mlp"
        public static let dropSetAgreement = "drop_set_agreement"
        public static let earlyStabilisation = "early_stabilisation"

        /// The criterion as the verdict's reason names it to a reader.
        public static func name(_ id: String) -> String {
            switch id {
            case attentionBelowMLP: "attention below MLP"
            case dropSetAgreement: "drop-set agreement"
            case earlyStabilisation: "early stabilisation"
            default: id
            }
        }
    }

    /// What the three criteria measure, from the per-checkpoint inputs. One
    /// function for the point verdict and for every bootstrap replicate, so
    /// the intervals are intervals of exactly the verdict's numbers.
    public struct Measurements: Sendable {
        /// Checkpoints where attention's mean is below MLP's, of `comparable`
        /// (both means defined).
        public var below: Int
        public var comparable: Int
        /// Criterion 1: below / comparable (NaN when none is comparable).
        public var belowFraction: Double
        /// Criterion 2: the median Jaccard over all checkpoints but the final
        /// whose drop-k set is known (`earlierCount` of them; `undecidedCount`
        /// others, their Jaccard NaN, are left out).
        public var medianJaccard: Double
        public var earlierCount: Int
        public var undecidedCount: Int
        /// Where the attention drop-k set stops changing.
        public var stabilisationIndex: Int
        /// Criterion 3: share of the run elapsed at `stabilisationIndex`.
        public var stabilisationFraction: Double
        public var usesSteps: Bool

        /// The three criterion values, in the order of `Verdict.criteria`.
        public var values: [Double] { [belowFraction, medianJaccard, stabilisationFraction] }
    }

    /// - Parameters:
    ///   - attentionMean, mlpMean: [C] mean importance per checkpoint.
    ///   - jaccardWithFinal: [C] Jaccard overlap of each checkpoint's
    ///     attention drop-k set with the final checkpoint's (1 = the same set;
    ///     NaN where the set is not decided by the scores: left out of
    ///     criteria 2 and 3).
    ///   - steps: [C] training steps, -1 when unknown.
    public static func measure(attentionMean: [Double], mlpMean: [Double], jaccardWithFinal: [Double],
                               steps: [Int64]) -> Measurements {
        let count = steps.count
        // 1. A checkpoint with an undefined mean (a NaN score) says nothing
        // either way, so it is left out rather than counted as a failure.
        var below = 0, comparable = 0
        for (attention, mlp) in zip(attentionMean, mlpMean) where !attention.isNaN && !mlp.isNaN {
            comparable += 1
            if attention < mlp { below += 1 }
        }
        // 2. Agreement with the final drop set.
        let earlier = Array(jaccardWithFinal.dropLast())
        let undecided = earlier.filter(\.isNaN).count
        // 3. Early stabilisation, over the checkpoints whose set is known (an unknown one neither changes nor
        // keeps the set); sets of equal size are equal exactly when their Jaccard is 1.
        let known = jaccardWithFinal.indices.filter { !jaccardWithFinal[$0].isNaN }
        let settled = DropSets.stabilisationIndex(matchingFinal: known.map { jaccardWithFinal[$0] == 1 })
        let index = settled.map { known[$0] } ?? 0
        let usesSteps = stepsAreUsable(steps)
        let fraction: Double
        if count < 2 || index >= count {
            fraction = .nan
        } else if usesSteps {
            fraction = Double(steps[index] - steps[0]) / Double(steps[count - 1] - steps[0])
        } else {
            fraction = Double(index) / Double(count - 1)
        }
        return Measurements(
            below: below, comparable: comparable,
            belowFraction: comparable == 0 ? .nan : Double(below) / Double(comparable),
            medianJaccard: median(earlier), earlierCount: earlier.count - undecided, undecidedCount: undecided,
            stabilisationIndex: index,
            stabilisationFraction: fraction, usesSteps: usesSteps)
    }

    /// Applies the rule to the attention and MLP series of a run, on the
    /// layers attention is in (`attention.layers`, A of them: k = round(A/2)).
    /// - Parameters:
    ///   - attentionImportance: [C][L] attention importance per checkpoint:
    ///     where a drop-k set is decided by a tie at its edge (zero-initialised
    ///     output projections score every layer 0) or by undefined scores, the
    ///     set is the tie-break's. Such a final set leaves criteria 2 and 3
    ///     unmeasurable; such an earlier one is left out of both (its
    ///     tie-break set would count as agreeing, or not, by layer numbering).
    ///   - steps: [C] training steps, -1 when unknown.
    ///   - intervals: bootstrap intervals of the criterion values by
    ///     criterion id (`ImportanceBootstrap`); nil without per-sequence
    ///     statistics, and the verdict then rests on the point values alone.
    ///   - confidence: the intervals' level, for the reason sentence.
    public static func evaluate(
        attention: ModuleSeries, mlp: ModuleSeries, attentionImportance: [[Double]], steps: [Int64],
        intervals: [String: ConfidenceInterval]? = nil, confidence: Double = BootstrapSettings.defaultConfidence
    ) -> Verdict {
        let count = steps.count
        let present = attention.layers
        let layers = present.count
        let k = verdictK(layers: layers)
        let rankings = attention.rankings
        let sets = rankings.map { DropSets.dropSet(ranking: $0, k: k) }
        func undecidedSet(_ index: Int) -> String? {
            undecidedEdge(present.map { attentionImportance[index][$0] }, layers: present, ranking: rankings[index], k: k)
        }
        let jaccard = sets.indices.map { index in
            index < count - 1 && undecidedSet(index) != nil ? .nan : DropSets.jaccard(sets[index], sets[count - 1])
        }
        var measured = measure(attentionMean: attention.meanImportance, mlpMean: mlp.meanImportance,
                               jaccardWithFinal: jaccard, steps: steps)
        // A drop-k set of every layer with attention (a one-layer model) is the same at every checkpoint whatever the
        // scores: criteria 2 and 3 would pass without measuring anything.
        let everyLayer = k >= layers
        if everyLayer {
            measured.medianJaccard = .nan
            measured.stabilisationFraction = .nan
        }
        let whole = layers == rankings.first?.count ? "the whole \(layers)-layer model"
            : "every layer with attention (\(layers) of \(rankings.first?.count ?? 0))"
        let wholeModel = "the drop-\(k) set is \(whole): nothing to compare"
        let undecided = everyLayer ? nil : undecidedSet(count - 1)
        if undecided != nil {
            measured.medianJaccard = .nan
            measured.stabilisationFraction = .nan
        }

        let leftOut = count - measured.comparable
        let criterion1 = VerdictCriterion(
            id: CriterionID.attentionBelowMLP,
            description: "Fraction of checkpoints where attention's mean importance is below MLP's",
            value: measured.belowFraction, comparison: .atLeast, threshold: attentionBelowMLPFraction,
            detail: "attention below MLP at \(measured.below) of \(measured.comparable) "
                + "checkpoint\(measured.comparable == 1 ? "" : "s")"
                + (leftOut > 0 ? " (\(leftOut) with undefined scores left out)" : ""),
            interval: intervals?[CriterionID.attentionBelowMLP])

        let criterion2 = VerdictCriterion(
            id: CriterionID.dropSetAgreement,
            description: "Median Jaccard overlap of the attention drop-\(k) set with the final checkpoint's "
                + "(all checkpoints but the final)",
            value: measured.medianJaccard, comparison: .atLeast, threshold: medianJaccardThreshold,
            detail: everyLayer ? wholeModel : undecided ?? (measured.earlierCount == 0 ? "no earlier checkpoint to compare"
                : "median over \(measured.earlierCount) checkpoint\(measured.earlierCount == 1 ? "" : "s")")
                + (measured.undecidedCount > 0 && !everyLayer && undecided == nil
                    ? " (\(measured.undecidedCount) whose drop-\(k) set a tie or an undefined score decides left out)" : ""),
            interval: intervals?[CriterionID.dropSetAgreement])

        let index = measured.stabilisationIndex
        // Counted from 1, as "of N" reads: the 0-based index beside the count read as one checkpoint too early.
        let place = "the \(ordinal(index + 1)) of \(count) checkpoints"
        let location = measured.usesSteps ? "step \(steps[index]) (\(place))" : place
        let criterion3 = VerdictCriterion(
            id: CriterionID.earlyStabilisation,
            description: "Fraction of the run (\(measured.usesSteps ? "in steps" : "in checkpoints")) elapsed when "
                + "the attention drop-\(k) set stops changing",
            value: measured.stabilisationFraction, comparison: .atMost, threshold: stabilisationFraction,
            detail: everyLayer ? wholeModel : undecided ?? "settles at \(location)", interval: intervals?[CriterionID.earlyStabilisation])

        let criteria = [criterion1, criterion2, criterion3]
        let (outcome, reason) = decide(criteria, checkpoints: count, attentionLayers: layers, confidence: confidence)
        return Verdict(outcome: outcome, k: k, criteria: criteria, reason: reason)
    }

    /// The rule's outcome for `criteria` measured over `count` checkpoints
    /// of a model with attention in `attentionLayers` layers, and the
    /// sentence that says why (intervals at `confidence`). A stored verdict
    /// is checked against it.
    public static func decide(
        _ criteria: [VerdictCriterion], checkpoints count: Int, attentionLayers layers: Int,
        confidence: Double = BootstrapSettings.defaultConfidence
    ) -> (Outcome, String) {
        let outcome: Outcome
        let reason: String
        let failed = criteria.filter { $0.status == .fail }.map { CriterionID.name($0.id) }
        let straddling = criteria.filter { $0.status == .inconclusive }
        let percent = "\(Int((confidence * 100).rounded()))%"
        if count < minimumCheckpoints {
            outcome = .inconclusive
            reason = "Only \(count) checkpoint\(count == 1 ? "" : "s"); the rule needs at least "
                + "\(minimumCheckpoints) to judge a trend across training."
        } else if verdictK(layers: layers) >= layers {
            outcome = .inconclusive
            reason = "Attention is in \(layers) layer\(layers == 1 ? "" : "s"): the attention drop-\(verdictK(layers: layers)) "
                + "set is every one of them at every checkpoint, so \(CriterionID.name(CriterionID.dropSetAgreement)) and "
                + "\(CriterionID.name(CriterionID.earlyStabilisation)) cannot tell anything."
        } else if !failed.isEmpty {
            // Inherence needs all three to pass: one failure settles it, whatever the others could not tell.
            let unmeasured = criteria.filter { $0.status == .unmeasured }
            outcome = .notInherent
            reason = "Failed: \(failed.joined(separator: ", "))."
                + (straddling.isEmpty ? "" : " Within noise: \(straddling.map { CriterionID.name($0.id) }.joined(separator: ", ")).")
                + (unmeasured.isEmpty ? "" : " Not measured: \(unmeasured.map { CriterionID.name($0.id) }.joined(separator: ", ")).")
        } else if let unmeasured = criteria.first(where: { $0.value.isNaN }) {
            outcome = .inconclusive
            reason = "Criterion \(CriterionID.name(unmeasured.id)) cannot be measured: \(unmeasured.detail)."
        } else if !straddling.isEmpty {
            outcome = .inconclusive
            reason = straddling.map { criterion in
                "Criterion \(CriterionID.name(criterion.id)) is within noise: measured \(format(criterion.value)), but its "
                    + "\(percent) bootstrap interval \(format(criterion.interval!.low))–"
                    + "\(format(criterion.interval!.high)) straddles the threshold "
                    + "\(criterion.comparison.symbol) \(format(criterion.threshold))."
            }.joined(separator: " ")
        } else {
            outcome = .inherent
            reason = criteria.contains { $0.interval?.isDefined == true }
                ? "All three criteria pass, with their whole \(percent) bootstrap intervals on the passing side."
                : "All three criteria pass."
        }
        return (outcome, reason)
    }

    /// Why the drop-`k` set of a checkpoint is not decided by its scores —
    /// undefined scores, or equal ones either side of its edge — or nil when
    /// it is. `importance` ([A]) holds the scores of `layers` (the layers
    /// with attention), `ranking` ([L]) the checkpoint's ranking of all
    /// layers, least important first, those without a score last.
    static func undecidedEdge(_ importance: [Double], layers: [Int], ranking: [Int], k: Int) -> String? {
        guard k < layers.count else { return nil }
        let undefined = layers.indices.filter { importance[$0].isNaN }.map { layers[$0] }
        if !undefined.isEmpty {
            return "the final checkpoint's attention importance is undefined at layer\(undefined.count == 1 ? "" : "s") "
                + "\(undefined.map(String.init).joined(separator: ", ")), so its drop-\(k) set is not known"
        }
        // Every layer with attention is scored, so they are the first A of the ranking.
        let score = Dictionary(uniqueKeysWithValues: zip(layers, importance))
        let inside = ranking[k - 1], outside = ranking[k]
        guard score[inside] == score[outside] else { return nil }
        return "the final checkpoint's drop-\(k) set is decided by a tie: layers \(inside) and \(outside) have the same "
            + "attention importance (\(score[inside]!)), one inside the set and one outside"
    }

    /// The drop-k the verdict uses for attention in `layers` layers: the larger default, round(layers/2).
    public static func verdictK(layers: Int) -> Int {
        DropSets.defaultDropK(layers: layers).last ?? 1
    }

    private static func format(_ value: Double) -> String { String(format: "%.3f", value) }

    /// `n` (≥ 1) as an English ordinal: 1st, 2nd, 3rd, 4th, …, 11th, 12th, 13th, …, 21st.
    public static func ordinal(_ n: Int) -> String {
        let suffix = (11...13).contains(n % 100) ? "th" : [1: "st", 2: "nd", 3: "rd"][n % 10] ?? "th"
        return "\(n)\(suffix)"
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
    /// The bootstrap interval of `value` (nil when the store holds no
    /// per-sequence statistics, or when `value` is undefined: nothing to
    /// bound; undefined ends when a resample left the value undefined).
    public var interval: ConfidenceInterval?

    public init(id: String, description: String, value: Double, comparison: Comparison, threshold: Double,
                detail: String, interval: ConfidenceInterval? = nil) {
        self.id = id
        self.description = description
        self.value = value
        self.comparison = comparison
        self.threshold = threshold
        self.detail = detail
        self.interval = value.isNaN ? nil : interval
    }

    /// Whether `value` meets the threshold; false when it is NaN.
    public var passed: Bool { meets(value) }

    /// What no run stores, nil when nothing: every criterion measures a
    /// fraction, so a value or interval end outside [0, 1], or an interval
    /// whose low end lies above its high end.
    var implausibility: String? {
        let fraction = { (x: Double) in x.isNaN || (0...1).contains(x) }
        if !fraction(value) { return "value \(value) is outside [0, 1]" }
        guard let interval else { return nil }
        if !fraction(interval.low) || !fraction(interval.high) || interval.low > interval.high {
            return "interval [\(interval.low), \(interval.high)] is not a part of [0, 1]"
        }
        return nil
    }

    /// pass / fail / inconclusive / n/a, as the report shows it.
    public enum Status: String, Sendable, Codable {
        case pass, fail, inconclusive
        case unmeasured = "n/a"
    }

    /// `pass` or `fail` when the measured value and its whole interval lie on
    /// the same side of the threshold; `inconclusive` when the interval
    /// straddles it (or lies on the other side from the value); `n/a` when
    /// the value is undefined. Without a defined interval, the value alone.
    public var status: Status {
        if value.isNaN { return .unmeasured }
        guard let interval, interval.isDefined else { return passed ? .pass : .fail }
        let sides = [meets(value), meets(interval.low), meets(interval.high)]
        if sides.allSatisfy({ $0 }) { return .pass }
        if sides.allSatisfy({ !$0 }) { return .fail }
        return .inconclusive
    }

    private func meets(_ x: Double) -> Bool {
        switch comparison {
        case .atLeast: x >= threshold
        case .atMost: x <= threshold
        }
    }

    public static func == (lhs: VerdictCriterion, rhs: VerdictCriterion) -> Bool {
        lhs.id == rhs.id && lhs.description == rhs.description
            && (lhs.value == rhs.value || (lhs.value.isNaN && rhs.value.isNaN))
            && lhs.comparison == rhs.comparison && lhs.threshold == rhs.threshold && lhs.detail == rhs.detail
            && lhs.interval == rhs.interval
    }

    // JSON has no NaN: an unmeasurable value is written as null (h5py users
    // get None from json.loads), and `passed` and `status` are written for
    // convenience. The interval's keys are present only when there is one.
    private enum CodingKeys: String, CodingKey {
        case id, description, value, comparison, threshold, passed, status, detail
        case intervalLow = "interval_low"
        case intervalHigh = "interval_high"
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        description = try container.decode(String.self, forKey: .description)
        value = try container.decodeIfPresent(Double.self, forKey: .value) ?? .nan
        comparison = try container.decode(Comparison.self, forKey: .comparison)
        threshold = try container.decode(Double.self, forKey: .threshold)
        detail = try container.decode(String.self, forKey: .detail)
        // An undefined value has no interval (stores of earlier versions kept one).
        if !value.isNaN, container.contains(.intervalLow) || container.contains(.intervalHigh) {
            interval = ConfidenceInterval(
                low: try container.decodeIfPresent(Double.self, forKey: .intervalLow) ?? .nan,
                high: try container.decodeIfPresent(Double.self, forKey: .intervalHigh) ?? .nan)
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(description, forKey: .description)
        if value.isNaN { try container.encodeNil(forKey: .value) } else { try container.encode(value, forKey: .value) }
        try container.encode(comparison, forKey: .comparison)
        try container.encode(threshold, forKey: .threshold)
        try container.encode(passed, forKey: .passed)
        try container.encode(status, forKey: .status)
        try container.encode(detail, forKey: .detail)
        if let interval {
            for (end, key) in [(interval.low, CodingKeys.intervalLow), (interval.high, .intervalHigh)] {
                if end.isNaN { try container.encodeNil(forKey: key) } else { try container.encode(end, forKey: key) }
            }
        }
    }
}

import Foundation
import TensorEngine

/// Group-limited top-k expert routing (DeepSeek-V2's `group_limited_greedy`
/// and `greedy`, DeepSeek-V3's sigmoid router), as transformers'
/// DeepseekV2TopkRouter / DeepseekV3TopkRouter compute it in Float32:
///
/// 1. scores = softmax or sigmoid of the router logits;
/// 2. the experts, in `groups` consecutive groups, are limited to the
///    `groupsPerToken` groups of highest group score (the best expert's score,
///    or the sum of the best two), ranked by the scores plus `selectionBias`
///    (V3's `e_score_correction_bias`, which only chooses: it never weighs);
/// 3. the k experts of highest biased score within those groups are chosen,
///    weighted by their unbiased scores, divided by their sum plus 1e-20 when
///    `normalizesWeights`, times `scalingFactor` (`routed_scaling_factor`).
///
/// One group of which it keeps one is plain top-k (`greedy`).
public struct GroupLimitedTopK: Sendable {
    public enum Scoring: Sendable {
        /// Softmax over all experts (V2).
        case softmax
        /// Each logit's sigmoid, independently (V3).
        case sigmoid
    }

    public enum GroupScore: Sendable {
        /// The group's best score (V2).
        case best
        /// The sum of the group's two best scores (V3; groups of at least two).
        case sumOfBestTwo
    }

    public let scoring: Scoring
    public let groupScore: GroupScore
    public let groups: Int
    public let groupsPerToken: Int
    /// [experts], added to the scores for choosing only.
    public let selectionBias: [Float]?
    public let normalizesWeights: Bool
    public let scalingFactor: Float

    /// - Precondition: `groups` divides the expert count given to `route`,
    ///   `groupsPerToken` is in 1...groups, and a `.sumOfBestTwo` group has at
    ///   least two experts (config checks refuse anything else first).
    public init(
        scoring: Scoring, groupScore: GroupScore, groups: Int, groupsPerToken: Int, selectionBias: [Float]?,
        normalizesWeights: Bool, scalingFactor: Float
    ) {
        precondition(groups >= 1 && (1...groups).contains(groupsPerToken))
        self.scoring = scoring
        self.groupScore = groupScore
        self.groups = groups
        self.groupsPerToken = groupsPerToken
        self.selectionBias = selectionBias
        self.normalizesWeights = normalizesWeights
        self.scalingFactor = scalingFactor
    }

    /// Each row's k experts and weights for router logits [rows, experts].
    /// - Precondition: the allowed groups hold at least `expertsPerToken` experts.
    public func route(_ logits: Matrix, expertsPerToken k: Int) -> MixtureOfExperts.Routing {
        let count = logits.cols, perGroup = count / groups
        precondition(count % groups == 0 && groupsPerToken * perGroup >= k && (groupScore == .best || perGroup >= 2))
        precondition(selectionBias.map { $0.count == count } ?? true)
        var chosen = [Int](repeating: 0, count: logits.rows * k)
        var weights = [Float](repeating: 0, count: logits.rows * k)
        // Highest first; equal ones keep the lower index.
        func ranked(_ values: [Float], _ candidates: [Int]) -> [Int] {
            candidates.sorted { values[$0] > values[$1] || (values[$0] == values[$1] && $0 < $1) }
        }
        for r in 0..<logits.rows {
            let row = Array(logits.data[(r * count)..<((r + 1) * count)])
            let scores: [Float]
            switch scoring {
            case .softmax:
                let maximum = row.max() ?? 0
                let exponentials = row.map { exp($0 - maximum) }
                let sum = exponentials.reduce(0, +)
                scores = exponentials.map { $0 / sum }
            case .sigmoid:
                scores = row.map { 1 / (1 + exp(-$0)) }
            }
            let forChoice = selectionBias.map { zip(scores, $0).map { $0 + $1 } } ?? scores
            var allowed = Array(0..<count)
            if groupsPerToken < groups {
                let groupScores = (0..<groups).map { g -> Float in
                    let best = ranked(forChoice, Array((g * perGroup)..<((g + 1) * perGroup)))
                    switch groupScore {
                    case .best: return forChoice[best[0]]
                    case .sumOfBestTwo: return forChoice[best[0]] + forChoice[best[1]]
                    }
                }
                let keptGroups = ranked(groupScores, Array(0..<groups)).prefix(groupsPerToken).sorted()
                allowed = keptGroups.flatMap { g in (g * perGroup)..<((g + 1) * perGroup) }
            }
            let top = ranked(forChoice, allowed).prefix(k)
            let denominator = normalizesWeights ? top.reduce(Float(0)) { $0 + scores[$1] } + 1e-20 : 1
            for (slot, e) in top.enumerated() {
                chosen[r * k + slot] = e
                weights[r * k + slot] = scores[e] / denominator * scalingFactor
            }
        }
        return MixtureOfExperts.Routing(experts: chosen, weights: weights, expertsPerToken: k)
    }
}

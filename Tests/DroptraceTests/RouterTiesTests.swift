import Architectures
import Testing
import TensorEngine

/// Experts of equal score at the top-k cut are those torch.topk keeps on
/// CPU (`TorchTopK`), not the lowest indices: a zeroed router, or a sigmoid
/// router saturated to 1.0, ties every expert, and transformers then routes
/// to others (the expected indices are torch 2.x's).
struct RouterTiesTests {
    /// `torch.zeros(1, 8).softmax(-1).topk(2)` → 6, 5, for every top-k rule.
    @Test(arguments: [
        MixtureOfExperts.RoutingRule.softmaxTopK(renormalize: true), .topKThenSoftmax, .sigmoidOfTopK, .normalizedSigmoidOfTopK,
        .softmaxTopKOverPNorm(p: 2),
    ])
    func tiedExpertsAreThoseTorchTopKKeeps(rule: MixtureOfExperts.RoutingRule) {
        let router = Linear(weight: [Float](repeating: 0, count: 8 * 2), bias: nil, inFeatures: 2, outFeatures: 8)
        let identity = FeedForward.plain(
            up: Linear(weight: [1, 0, 0, 1], bias: nil, inFeatures: 2, outFeatures: 2),
            down: Linear(weight: [1, 0, 0, 1], bias: nil, inFeatures: 2, outFeatures: 2), activation: .relu)
        let moe = MixtureOfExperts(router: router, experts: Array(repeating: identity, count: 8), expertsPerToken: 2, rule: rule)
        #expect(Set(moe.route(Matrix(rows: 1, cols: 2, data: [1, 0.5])).experts) == [5, 6])
    }

    /// DeepSeek-V3's router on zero logits, 16 experts in 4 groups, 2 kept,
    /// 4 chosen: torch.topk keeps groups 2 and 3, then experts 9 to 12 of
    /// the other groups masked to −∞; ungrouped, `torch.zeros(16).topk(4)`
    /// keeps the same four.
    @Test func tiedGroupsAndExpertsAreThoseTorchTopKKeeps() {
        let logits = Matrix(rows: 1, cols: 16, data: [Float](repeating: 0, count: 16))
        func rule(groupsPerToken: Int) -> GroupLimitedTopK {
            GroupLimitedTopK(
                scoring: .sigmoid, groupScore: .sumOfBestTwo, groups: 4, groupsPerToken: groupsPerToken, selectionBias: nil,
                normalizesWeights: true, scalingFactor: 1)
        }
        #expect(Set(rule(groupsPerToken: 2).route(logits, expertsPerToken: 4).experts) == [9, 10, 11, 12])
        #expect(Set(rule(groupsPerToken: 4).route(logits, expertsPerToken: 4).experts) == [9, 10, 11, 12])
    }

    /// A NaN in the correction bias ranks above everything, as in torch.topk
    /// (`topk(2)` in the group, then of the groups): 4 experts in 2 groups,
    /// bias NaN on expert 3 → group 1, experts 3 and 2 (torch 2.x).
    /// A group scored by its best (DeepSeek-V2's max) is NaN as well.
    @Test(arguments: [GroupLimitedTopK.GroupScore.sumOfBestTwo, .best])
    func aNaNBiasRanksFirstAsInTorchTopK(groupScore: GroupLimitedTopK.GroupScore) {
        let rule = GroupLimitedTopK(
            scoring: .sigmoid, groupScore: groupScore, groups: 2, groupsPerToken: 1, selectionBias: [0, 0, 0, .nan],
            normalizesWeights: true, scalingFactor: 1)
        #expect(Set(rule.route(Matrix(rows: 1, cols: 4, data: [2, 1, 0, -1]), expertsPerToken: 2).experts) == [2, 3])
    }
}

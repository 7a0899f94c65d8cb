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

    /// torch.topk's output order (sorted=True) among equal values: its
    /// `std::partial_sort` for k · 64 ≤ n, else `std::nth_element` and
    /// `std::sort` of all but the k-th (expected: torch 2.x on values 0–2).
    @Test(arguments: [
        (k: 10, values: "0112102212", torch: [9, 3, 7, 6, 1, 8, 4, 2, 5, 0]),
        (k: 4, values: "1120210100", torch: [2, 4, 1, 5]),
        (k: 40, values: "0120122102010110022212022112210220002110", torch: [
            31, 23, 24, 17, 18, 27, 28, 19, 9, 32, 6, 5, 36, 21, 2, 14, 38, 13, 4, 11, 20, 7, 25, 26, 29, 37, 1, 10, 39, 33, 15, 16, 22, 12,
            34, 35, 30, 3, 0, 8,
        ]),
        (k: 17, values: "1022201222222221022111120022110020110212", torch: [12, 26, 23, 27, 32, 18, 17, 14, 13, 11, 37, 39, 2, 3, 4, 10, 9]),
        (k: 2, values: "0012102210021011120112212102020000000011121202221110121012222201012022101202021020010020210012001202012201022220220011022111120200",
         torch: [6, 3]),
        (k: 3, values: "01111010221111120210020100210000012200011101011110011022122002111011122201002212122002111020212110122111120022120002020211122120122120021010111112000111121222210101111212122011112021212212200120012202",
         torch: [15, 9, 8]),
        (k: 100, values: "2102212122110200210011210020111200110022200021010220222010112112010020221210202102111211211122000200", torch: [
            63, 22, 81, 78, 26, 76, 73, 31, 71, 70, 68, 0, 38, 39, 40, 60, 44, 54, 53, 49, 50, 52, 97, 9, 8, 92, 13, 88, 6, 16, 93, 85, 4, 3,
            47, 82, 45, 5, 11, 7, 10, 83, 35, 34, 17, 30, 29, 28, 20, 21, 23, 91, 72, 74, 87, 86, 89, 84, 65, 90, 62, 61, 79, 59, 58, 1, 56,
            46, 24, 42, 41, 43, 57, 37, 36, 32, 25, 77, 51, 75, 69, 66, 67, 55, 48, 64, 80, 19, 18, 15, 14, 12, 94, 95, 96, 2, 98, 99, 27, 33,
        ]),
    ])
    func sortedTopKOrdersTiesAsTorch(k: Int, values: String, torch: [Int]) {
        let numbers = values.map { Float(String($0))! }
        #expect(TorchTopK.sortedIndices(count: numbers.count, k: k) { numbers[$0] } == torch)
    }

    /// Doge's product-key router on tied halves chooses the experts
    /// transformers' DogeCDMoE chooses: each half's torch.topk order lays
    /// out the keys² pair scores, whose torch.topk picks among equals.
    @Test(arguments: [
        (k: 4, x: "01100100", y: "00101110", torch: [20, 42, 21, 46]),
        (k: 16, x: "01011111", y: "11000000", torch: [32, 8, 9, 24, 25, 40, 41, 48, 49, 56, 33, 57, 39, 27, 26, 28]),
        (k: 30, x: "11000100", y: "10000111", torch: [
            5, 40, 45, 46, 47, 0, 6, 7, 15, 8, 13, 14, 53, 54, 42, 48, 39, 38, 37, 55, 32, 31, 30, 29, 24, 23, 22, 21, 16, 44,
        ]),
        (k: 1, x: "111101", y: "000111", torch: [5]),
    ])
    func productKeyTiesAreThoseTransformersChooses(k: Int, x: String, y: String, torch: [Int]) {
        // One token, one input feature: the router's weight column is the token's logits, x's half then y's (× 0.5).
        let logits = (x + y).map { Float(String($0))! * 0.5 }, keys = x.count
        let zero = Linear(weight: [0], bias: nil, inFeatures: 1, outFeatures: 1)
        let experts = ProductKeyExperts(
            shared: .plain(up: zero, down: zero, activation: .relu), router: Linear(weight: logits, bias: nil, inFeatures: 1, outFeatures: 2 * keys),
            down: [Float](repeating: 0, count: keys * keys), up: [Float](repeating: 0, count: keys * keys), expertsPerToken: k,
            activation: .relu, renormalizes: false)
        #expect(experts.route(Matrix(rows: 1, cols: 1, data: [1]), sequences: [0..<1]).experts == torch)
    }
}

import CheckpointIO
import DroptraceSupport
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
///    weighted by their unbiased scores, divided by their sum plus
///    `denominatorEpsilon` (1e-20; LFM2-MoE's 1e-6) when `normalizesWeights`
///    (by their sum but at least `denominatorFloor` when one is set: ERNIE
///    4.5's `moe_norm_min`), times `scalingFactor` (`routed_scaling_factor`).
///
/// One group of which it keeps one is plain top-k (`greedy`).
public struct GroupLimitedTopK: Sendable {
    public enum Scoring: Sendable, Equatable {
        /// Softmax over all experts (V2).
        case softmax
        /// Each logit's sigmoid, independently (V3).
        case sigmoid
        /// Each logit's sigmoid as the weight, but the experts ranked by the
        /// logits themselves plus `selectionBias` (Kolibri-1's router).
        case sigmoidRankedByLogits
        /// √softplus of each logit, independently (DeepSeek-V4's `sqrtsoftplus`;
        /// softplus as torch's, the logit itself above 20).
        case sqrtSoftplus
        /// An activation of each logit, independently (DeepSeek-V4's
        /// `scoring_func`, any of transformers' `ACT2FN`).
        case activation(Activation)
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
    /// When set, normalised weights are divided by max(sum, floor) rather
    /// than by sum + 1e-20 (Ernie4_5_MoeTopKRouter's clamp to `moe_norm_min`).
    public let denominatorFloor: Float?
    /// Added to the sum the weights are divided by (without a floor).
    public let denominatorEpsilon: Float
    public let scalingFactor: Float
    /// Logits l become tanh(l / cap) · cap before anything reads them
    /// (Laguna's `moe_router_logit_softcapping`); nil for none.
    public var logitSoftcap: Float? = nil
    /// When set, the experts outside the kept groups are not excluded but
    /// ranked at this score (A.X K2's router fills them with 0.0); nil:
    /// excluded (−∞). Groups and experts are chosen as torch.topk's CPU
    /// kernel chooses among equal scores (`TorchTopK`).
    public var excludedGroupScore: Float? = nil

    /// - Precondition: `groups` divides the expert count given to `route`,
    ///   `groupsPerToken` is in 1...groups, and a `.sumOfBestTwo` group has at
    ///   least two experts (config checks refuse anything else first).
    public init(
        scoring: Scoring, groupScore: GroupScore, groups: Int, groupsPerToken: Int, selectionBias: [Float]?,
        normalizesWeights: Bool, denominatorFloor: Float? = nil, denominatorEpsilon: Float = 1e-20, scalingFactor: Float
    ) {
        precondition(groups >= 1 && (1...groups).contains(groupsPerToken))
        self.scoring = scoring
        self.groupScore = groupScore
        self.groups = groups
        self.groupsPerToken = groupsPerToken
        self.selectionBias = selectionBias
        self.normalizesWeights = normalizesWeights
        self.denominatorFloor = denominatorFloor
        self.denominatorEpsilon = denominatorEpsilon
        self.scalingFactor = scalingFactor
    }

    /// Each row's k experts and weights for router logits [rows, experts].
    /// - Precondition: the allowed groups hold at least `expertsPerToken`
    ///   experts, unless the others rank at `excludedGroupScore`.
    public func route(_ logits: Matrix, expertsPerToken k: Int) -> MixtureOfExperts.Routing {
        let count = logits.cols, perGroup = count / groups
        precondition(count % groups == 0 && (groupsPerToken * perGroup >= k || excludedGroupScore != nil) && (groupScore == .best || perGroup >= 2))
        precondition(selectionBias.map { $0.count == count } ?? true)
        var chosen = [Int](repeating: 0, count: logits.rows * k)
        var weights = [Float](repeating: 0, count: logits.rows * k)
        for r in 0..<logits.rows {
            let written = logits.data[(r * count)..<((r + 1) * count)]
            let row = logitSoftcap.map { cap in written.map { tanh($0 / cap) * cap } } ?? Array(written)
            let scores = Self.scores(row, scoring: scoring)
            let ranking = scoring == .sigmoidRankedByLogits ? row : scores
            let forChoice = selectionBias.map { zip(ranking, $0).map { $0 + $1 } } ?? ranking
            // As transformers: each group scored by its best (or best two), torch.topk of the groups,
            // then torch.topk over every expert, those of the other groups at `excludedGroupScore`
            // (−∞ where transformers masks them out); equal scores as torch.topk keeps them (`TorchTopK`).
            var kept = [Bool](repeating: true, count: groups)
            if groupsPerToken < groups {
                let groupScores = (0..<groups).map { g -> Float in
                    let best = forChoice[(g * perGroup)..<((g + 1) * perGroup)].sorted(by: TorchTopK.ranksBefore)
                    switch groupScore {
                    case .best: return best[0]
                    case .sumOfBestTwo: return best[0] + best[1]
                    }
                }
                kept = [Bool](repeating: false, count: groups)
                for g in TorchTopK.indices(count: groups, k: groupsPerToken, value: { groupScores[$0] }) { kept[g] = true }
            }
            let excluded = excludedGroupScore ?? -.infinity
            let top = TorchTopK.indices(count: count, k: k) { kept[$0 / perGroup] ? forChoice[$0] : excluded }
            let sum = top.reduce(Float(0)) { $0 + scores[$1] }
            let denominator = !normalizesWeights ? 1 : denominatorFloor.map { max(sum, $0) } ?? sum + denominatorEpsilon
            for (slot, e) in top.enumerated() {
                chosen[r * k + slot] = e
                weights[r * k + slot] = scores[e] / denominator * scalingFactor
            }
        }
        return MixtureOfExperts.Routing(experts: chosen, weights: weights, expertsPerToken: k)
    }
}

extension GroupLimitedTopK {
    /// √softplus(x), softplus as torch's (beta 1, threshold 20: x itself above).
    static func sqrtSoftplus(_ x: Float) -> Float { (x > 20 ? x : log1p(exp(x))).squareRoot() }

    /// The scores `scoring` gives a row of logits.
    static func scores(_ row: [Float], scoring: Scoring) -> [Float] {
        switch scoring {
        case .softmax:
            let maximum = row.max() ?? 0
            let exponentials = row.map { exp($0 - maximum) }
            let sum = exponentials.reduce(0, +)
            return exponentials.map { $0 / sum }
        case .sigmoid, .sigmoidRankedByLogits: return row.map { 1 / (1 + exp(-$0)) }
        case .sqrtSoftplus: return row.map(sqrtSoftplus)
        case .activation(let activation): return row.map(activation.apply)
        }
    }
}

/// Routing by a table of each token's experts (DeepSeek-V4's
/// `DeepseekV4HashRouter`, on the `hash_moe` layers): token t goes to
/// experts `table[t · k ..< (t + 1) · k]` (`tid2eid`), each weighted by its
/// score (`scoring` of the router logits) divided by the k scores' sum plus
/// 1e-20, times `scalingFactor` (`routed_scaling_factor`), in float32.
public struct TokenHashedRouting: Sendable {
    /// [vocabulary, k], each entry an expert.
    public let table: [Int]
    public let scoring: GroupLimitedTopK.Scoring
    public let scalingFactor: Float

    public init(table: [Int], scoring: GroupLimitedTopK.Scoring, scalingFactor: Float) {
        self.table = table
        self.scoring = scoring
        self.scalingFactor = scalingFactor
    }

    func route(_ logits: Matrix, tokenIDs: [Int], expertsPerToken k: Int) -> MixtureOfExperts.Routing {
        let count = logits.cols
        precondition(tokenIDs.count == logits.rows && table.count % k == 0)
        var chosen = [Int](repeating: 0, count: logits.rows * k)
        var weights = [Float](repeating: 0, count: logits.rows * k)
        for r in 0..<logits.rows {
            let scores = GroupLimitedTopK.scores(Array(logits.data[(r * count)..<((r + 1) * count)]), scoring: scoring)
            let token = tokenIDs[r]
            precondition(token >= 0 && (token + 1) * k <= table.count)
            let experts = table[(token * k)..<((token + 1) * k)]
            let sum = experts.reduce(Float(0)) { $0 + scores[$1] }
            for (slot, e) in experts.enumerated() {
                chosen[r * k + slot] = e
                weights[r * k + slot] = scores[e] / (sum + 1e-20) * scalingFactor
            }
        }
        return MixtureOfExperts.Routing(experts: chosen, weights: weights, expertsPerToken: k)
    }
}

/// The mixture-of-experts layer DeepSeek-V2/V3 and GLM-4.5 (`glm4_moe`)
/// share, under one MLP prefix: a router `gate` [experts, hidden] choosing
/// each token's experts by `GroupLimitedTopK` (with `gate.e_score_correction_bias`
/// when `correctsSelection` and stored; transformers' zeros otherwise), the
/// gated routed experts under `experts.` (per expert or fused), and the
/// shared experts stored as one MLP `shared_experts` of `sharedExperts`
/// times the expert width, added for every token.
struct GroupRoutedMixture {
    /// `n_routed_experts`, and the key config.json gives it under (for errors).
    var experts: Int
    var expertsKey: String
    /// `num_experts_per_tok`; nil when config.json leaves it unset (refused).
    var expertsPerToken: Int?
    /// `n_shared_experts`; 0: none.
    var sharedExperts: Int
    /// `moe_intermediate_size`: the width of each routed and shared expert.
    var inner: Int
    var scoring: GroupLimitedTopK.Scoring
    var groupScore: GroupLimitedTopK.GroupScore
    /// Whether experts are chosen within the best groups only (`n_group`,
    /// `topk_group`); one group otherwise.
    var groupLimited: Bool
    var groups: Int?
    var groupsPerToken: Int?
    var correctsSelection: Bool
    var normalizesWeights: Bool
    /// `routed_scaling_factor`.
    var scalingFactor: Double
    /// The key config.json gives the shared expert count under, for errors
    /// (EXAONE MoE's `num_shared_experts`).
    var sharedExpertsKey = "n_shared_experts"
    /// Where, under the MLP prefix, the correction bias may be stored, in
    /// the names transformers reads as `gate.e_score_correction_bias`
    /// (EXAONE MoE's checkpoints store it as `e_score_correction_bias`).
    var correctionBiasNames = ["gate.e_score_correction_bias"]
    /// The router's name under the MLP prefix (AFMoE's `router.gate`).
    var routerName = "gate"
    /// The shared experts' name under the MLP prefix (HY-V3's saved
    /// `shared_mlp`); nil: the layer has no such module (MiMo-V2-Flash's),
    /// and nothing there is read.
    var sharedName: String? = "shared_experts"
    /// The key config.json gives the scaling factor under, for errors (AFMoE's `route_scale`).
    var scalingFactorKey = "routed_scaling_factor"
    /// The shared experts' width where it is not `sharedExperts` ×
    /// `inner` (HY-V3's MLP with no shared experts falls back to
    /// `intermediate_size`).
    var sharedWidth: Int? = nil
    /// `GroupLimitedTopK.logitSoftcap` (Laguna's).
    var logitSoftcap: Float? = nil
    /// `GroupLimitedTopK.excludedGroupScore` (A.X K2's 0.0).
    var excludedGroupScore: Float? = nil
    /// Each routed expert's projections when stored per expert (Kimi
    /// Linear's released `w1`, `w3`, `w2`).
    var expertNames = ExpertNaming.gatedNames

    /// Refuses expert counts and widths transformers could not run, or whose
    /// tensors would not fit in 64 bits, before anything is sized from them.
    /// `hidden`: the experts' input width, named `hiddenKey` in errors
    /// (Nemotron-H's latent experts read `moe_latent_size` columns).
    func checkExperts(hidden: Int, hiddenKey: String = "hidden_size") throws {
        try ConfigRules.count(experts, expertsKey)
        guard let k = expertsPerToken else {
            throw InvalidConfigValue(key: "num_experts_per_tok", problem: "must be set for the routed layers")
        }
        guard (1...experts).contains(k) else {
            throw InvalidConfigValue(key: "num_experts_per_tok", problem: "must be between 1 and \(expertsKey) \(experts), got \(k)")
        }
        // 0: no shared experts (transformers adds their empty output).
        try ConfigRules.nonNegative(sharedExperts, sharedExpertsKey)
        try ConfigRules.count(inner, "moe_intermediate_size")
        let width = (hidden, hiddenKey)
        try ConfigRules.product([(experts, expertsKey), (2, "gate and up"), (inner, "moe_intermediate_size"), width])
        try ConfigRules.product([(sharedExperts, sharedExpertsKey), (inner, "moe_intermediate_size"), (2, "gate and up"), width])
        try ConfigRules.positive(scalingFactor, scalingFactorKey)
    }

    /// Refuses groups that do not split the experts evenly, keep none or
    /// more than there are, leave fewer than two experts to a group scored by
    /// its best two, or hold fewer experts than each token takes.
    func checkGroups() throws {
        guard groupLimited, let k = expertsPerToken else { return }
        guard let groups else { throw InvalidConfigValue(key: "n_group", problem: "must be set for group-limited routing") }
        try ConfigRules.divides(groups, "n_group", experts, expertsKey)
        guard let kept = groupsPerToken, (1...groups).contains(kept) else {
            throw InvalidConfigValue(key: "topk_group", problem: "must be between 1 and n_group \(groups), got \(groupsPerToken.map(String.init) ?? "null")")
        }
        let perGroup = experts / groups
        if groupScore == .sumOfBestTwo, perGroup < 2 {
            throw InvalidConfigValue(key: "n_group", problem: "leaves \(perGroup) expert per group; groups are scored by their best two")
        }
        // Experts ranked at a score outside the kept groups (not excluded) make up any shortfall.
        guard kept * perGroup >= k || excludedGroupScore != nil else {
            throw InvalidConfigValue(
                key: "topk_group", problem: "keeps \(kept) groups of \(perGroup) experts, fewer than num_experts_per_tok \(k)")
        }
    }

    /// The first routed layer `parts` keeps (by `isSparse`): its experts
    /// against `moe_intermediate_size`, before any expert is read.
    func confirmExpertWidth(_ parts: DecoderParts, isSparse: (Int) -> Bool, module: (Int) throws -> String = { _ in "mlp." }) throws {
        try parts.confirmExpertWidth(
            layers: (0..<parts.dimensions.numHiddenLayers).filter(isSparse), experts: experts, expertsKey: expertsKey, inner: inner,
            module: module, gateName: expertNames.gate)
    }

    /// The layer under `p` (e.g. "layers.3.mlp."), its shared experts with
    /// biases when `sharedBias`.
    /// The mixture under `p`; the shared experts' activation is `sharedActivation` when given, else `activation`.
    func load(
        _ weights: Weights, _ p: String, hidden d: Int, activation: Activation, sharedActivation: Activation? = nil, sharedBias: Bool
    ) throws -> FeedForward {
        let routed = try weights.gatedExperts(
            fused: p + "experts.", perExpert: p + "experts.", names: expertNames,
            count: experts, hidden: d, inner: inner, activation: activation)
        let stored = correctionBiasNames.map { p + $0 }.filter { weights.has($0) }
        if stored.count > 1 {
            // transformers reads both as one buffer; which copy it kept would depend on the order it met them.
            throw DroptraceError(
                "tensors '\(weights.prefix + stored[0])' and '\(weights.prefix + stored[1])' are both the router's correction bias, "
                    + "which transformers reads as one; keep one of the two",
                path: weights.checkpoint.weightsPath)
        }
        var routing = GroupLimitedTopK(
            scoring: scoring, groupScore: groupScore,
            groups: groupLimited ? groups ?? 1 : 1, groupsPerToken: groupLimited ? groupsPerToken ?? 1 : 1,
            selectionBias: correctsSelection ? try stored.first.map { try weights.floats($0, [experts]) } : nil,
            normalizesWeights: normalizesWeights, scalingFactor: Float(scalingFactor))
        routing.logitSoftcap = logitSoftcap
        routing.excludedGroupScore = excludedGroupScore
        return .mixture(MixtureOfExperts(
            router: try weights.linear(p + routerName, in: d, out: experts, bias: false),
            experts: routed, expertsPerToken: expertsPerToken ?? 1, rule: .groupLimited(routing),
            sharedExperts: try sharedName.map {
                try weights.sharedExperts(
                    p + $0 + ".", hidden: d, inner: sharedWidth ?? inner * sharedExperts, activation: sharedActivation ?? activation, bias: sharedBias,
                    widthKeys: "\(sharedExpertsKey) and moe_intermediate_size")
            } ?? []))
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The mixture keys of `lfm2_moe` (Lfm2MoeConfig's), with their defaults.
struct Lfm2MoeConfiguration: Decodable {
    var numDenseLayers: Int
    var numExperts: Int
    var numExpertsPerTok: Int
    var moeIntermediateSize: Int
    var useExpertBias: Bool
    var routedScalingFactor: Double
    var normTopkProb: Bool

    enum CodingKeys: String, CodingKey {
        case numDenseLayers = "num_dense_layers"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size"
        case useExpertBias = "use_expert_bias"
        case routedScalingFactor = "routed_scaling_factor"
        case normTopkProb = "norm_topk_prob"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        numDenseLayers = try c.decodeIfPresent(Int.self, forKey: .numDenseLayers) ?? 2
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 32
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 4
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 1792
        useExpertBias = try c.decodeIfPresent(Bool.self, forKey: .useExpertBias) ?? true
        routedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .routedScalingFactor) ?? 1.0
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? true
    }

    /// Layer `index` routes its tokens to experts (Lfm2MoeDecoderLayer:
    /// dense below `num_dense_layers`).
    func isSparse(_ index: Int) -> Bool { index >= numDenseLayers }

    /// Refuses counts and widths transformers could not run, or whose
    /// tensors would not fit in 64 bits, before anything is sized from them.
    func check(hidden: Int, layers: Int) throws {
        try ConfigRules.nonNegative(numDenseLayers, "num_dense_layers")
        guard (0..<layers).contains(where: isSparse) else { return }
        try ConfigRules.count(numExperts, "num_experts")
        guard (1...numExperts).contains(numExpertsPerTok) else {
            throw InvalidConfigValue(
                key: "num_experts_per_tok", problem: "must be between 1 and num_experts \(numExperts), got \(numExpertsPerTok)")
        }
        try ConfigRules.count(moeIntermediateSize, "moe_intermediate_size")
        try ConfigRules.product([
            (numExperts, "num_experts"), (2, "w1 and w3"), (moeIntermediateSize, "moe_intermediate_size"), (hidden, "hidden_size"),
        ])
        try ConfigRules.positive(routedScalingFactor, "routed_scaling_factor")
    }
}

/// Liquid AI's LFM2-MoE (LFM2-8B-A1B), `lfm2_moe` (Lfm2MoeForCausalLM):
/// LFM2's layers — gated short convolutions and GQA attention with
/// per-head q/k RMSNorms by `layer_types`, which has no default here —
/// whose MLP is, below `num_dense_layers`, a SwiGLU of `intermediate_size`
/// (no width rule), and from there a mixture of `num_experts` SwiGLU
/// experts of `moe_intermediate_size`: `num_experts_per_tok` chosen by
/// sigmoid scores plus `expert_bias` (when `use_expert_bias`; zeros where
/// the checkpoint has none), which only chooses, weighted by the unbiased
/// scores, divided by their sum + 1e-6 when `norm_topk_prob`, times
/// `routed_scaling_factor`. Experts per expert (`experts.<e>.w1/w3/w2`, as
/// the released checkpoints and `save_pretrained` write them) or fused
/// (`experts.gate_up_proj` / `down_proj`); tied by default.
struct Lfm2MoeModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let layers: Lfm2Layers
    let config: Lfm2MoeConfiguration

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(Lfm2MoeConfiguration.self)
        self.config = config
        parts = try DecoderParts(
            checkpoint, tiedEmbeddings: try Lfm2Layers.tiedEmbeddings(checkpoint), naming: { Lfm2Layers.naming($0) },
            experts: ExpertNaming(
                parts: ["feed_forward.experts."], projections: ["w1", "w3", "w2"], count: config.numExperts, countKey: "num_experts",
                isSparse: config.isSparse),
            finalNorm: "embedding_norm")
        let d = parts.dimensions
        try ConfigRules.checks(path: parts.configPath) {
            try config.check(hidden: d.hiddenSize, layers: d.numHiddenLayers)
            _ = try ConfigRules.product([(d.intermediateSize, "intermediate_size"), (d.hiddenSize, "hidden_size"), (2, "w1 and w3")])
        }
        layers = try Lfm2Layers(parts, fullAttentionRule: false)
        let keptMLPs = (0..<d.numHiddenLayers).filter { !parts.configuredDrops.dropsMLP($0) }
        // Each kept MLP's weights are those of its kind: num_dense_layers must not contradict them.
        let weights = parts.weights
        try ConfigRules.checks(path: parts.configPath) {
            for index in keptMLPs {
                let p = "layers.\(index).feed_forward.", sparse = config.isSparse(index)
                let (expected, other) = sparse ? ("gate.weight", "w1.weight") : ("w1.weight", "gate.weight")
                if !weights.has(p + expected), weights.has(p + other) {
                    throw InvalidConfigValue(
                        key: "num_dense_layers",
                        problem: "is \(config.numDenseLayers), which makes layer \(index) \(sparse ? "routed" : "dense"), but the weights "
                            + "hold its feed_forward.\(other) and no feed_forward.\(expected)")
                }
            }
        }
        if let dense = keptMLPs.first(where: { !config.isSparse($0) }) {
            try parts.weights.confirmShape(
                "layers.\(dense).feed_forward.w1.weight", [d.intermediateSize, d.hiddenSize], keys: "intermediate_size, hidden_size",
                configPath: parts.configPath)
        }
        if let sparse = keptMLPs.first(where: config.isSparse) {
            let p = "layers.\(sparse).feed_forward."
            try parts.confirmRouter(
                "feed_forward.gate", experts: config.numExperts, expertsKey: "num_experts", layers: [sparse])
            if parts.weights.hasFusedExperts(p + "experts.") {
                try parts.weights.confirmShape(
                    p + "experts.gate_up_proj", [config.numExperts, 2 * config.moeIntermediateSize, d.hiddenSize],
                    keys: "num_experts, 2 × moe_intermediate_size, hidden_size", configPath: parts.configPath)
            } else {
                try parts.weights.confirmShape(
                    p + "experts.0.w1.weight", [config.moeIntermediateSize, d.hiddenSize], keys: "moe_intermediate_size, hidden_size",
                    configPath: parts.configPath)
            }
        }
    }

    /// An export without some blocks writes `num_dense_layers` for the kept
    /// layers also where config.json leaves it to its default.
    var layerNaming: LayerNaming {
        var naming = layers.layerNaming
        naming.layerThresholds["num_dense_layers"] = config.numDenseLayers
        return naming
    }

    func head() throws -> OutputHead { try layers.head() }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try layers.block(index, drops: plan.union(configuredDrops)) {
            config.isSparse(index) ? try mixture(index) : try layers.swiGLU(index, inner: parts.dimensions.intermediateSize)
        }
    }

    /// Lfm2MoeSparseMoeBlock of layer `index`.
    func mixture(_ index: Int) throws -> FeedForward {
        let p = "layers.\(index).feed_forward.", weights = parts.weights, d = hiddenSize, experts = config.numExperts
        let biasName = p + "expert_bias"
        let routing = GroupLimitedTopK(
            scoring: .sigmoid, groupScore: .best, groups: 1, groupsPerToken: 1,
            selectionBias: config.useExpertBias && weights.has(biasName) ? try weights.floats(biasName, [experts]) : nil,
            normalizesWeights: config.normTopkProb, denominatorEpsilon: 1e-6, scalingFactor: Float(config.routedScalingFactor))
        return .mixture(MixtureOfExperts(
            router: try weights.linear(p + "gate", in: d, out: experts, bias: false),
            experts: try weights.gatedExperts(
                fused: p + "experts.", perExpert: p + "experts.", names: ("w1", "w3", "w2"), count: experts, hidden: d,
                inner: config.moeIntermediateSize, activation: .silu),
            expertsPerToken: config.numExpertsPerTok, rule: .groupLimited(routing)))
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `kolibri1`, with Kolibri1Config's defaults.
struct Kolibri1Configuration: Decodable {
    /// The config class's only dense MLP's width, the shared expert's, as
    /// intermediate_size (Kolibri1Config has no such key; one in the file is
    /// not read).
    var section: ConfigSection {
        ConfigSection(overrides: ["intermediate_size": .integer(sharedExpertIntermediateSize)])
    }

    var rmsNormEps: Double
    var hiddenAct: String
    /// As written: absent is 513, `null` none (then every layer rotates).
    var slidingWindow: Int?
    var layerTypes: [String]?
    /// `num_experts`, saved as `num_local_experts`; `numExpertsKey` the key it was read under.
    var numExperts: Int
    var numExpertsKey: String
    var numExpertsPerTok: Int
    var normTopkProb: Bool
    var moeIntermediateSize: Int
    var sharedExpertIntermediateSize: Int

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case numExperts = "num_experts"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case normTopkProb = "norm_topk_prob"
        case moeIntermediateSize = "moe_intermediate_size"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : 513
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        // Saved as num_local_experts (Kolibri1Config's attribute map; the schema refuses the two disagreeing).
        let local = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts)
        numExperts = try local ?? c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 384
        numExpertsKey = local == nil ? "num_experts" : "num_local_experts"
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 6
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? false
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 512
        sharedExpertIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .sharedExpertIntermediateSize) ?? 512
    }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(hidden: Int) throws {
        try ConfigRules.count(moeIntermediateSize, "moe_intermediate_size")
        try MixtureOfExperts.checkExpertsPerToken(numExpertsPerTok, of: numExperts, expertsKey: numExpertsKey)
        try ConfigRules.product([(numExperts, numExpertsKey), (2, "gate and up"), (moeIntermediateSize, "moe_intermediate_size"), (hidden, "hidden_size")])
        try ConfigRules.product([(sharedExpertIntermediateSize, "shared_expert_intermediate_size"), (3, "gate, up and down"), (hidden, "hidden_size")])
    }
}

/// Kolibri-1 (Aleph Alpha, transformers' models/kolibri1/): sandwich blocks
///
///     H = X + post_self_attn_layernorm(Attn(input_layernorm X)),
///     Y = H + post_mlp_layernorm(MoE(post_attention_layernorm H)),
///
/// each branch owning its two norms; attention with per-head q/k RMSNorms
/// and heads of `head_dim` (128); by `layer_types` (by default every fifth
/// layer full) sliding layers attend within `sliding_window` (513) and
/// rotate, full layers attend without positions — every layer rotates when
/// the window is null. Every MLP is a mixture: the router's top
/// `num_experts_per_tok` logits plus `mlp.gate.e_score_correction_bias`
/// choose the experts, weighted by their logits' sigmoids (divided by their
/// sum when `norm_topk_prob`), beside a shared SwiGLU of
/// `shared_expert_intermediate_size`. Weights are read under the saved
/// names transformers' conversion mapping renames (`post_attn_norm`,
/// `post_ffn_norm`, `moe.router.expert_bias`; experts per expert) or under
/// its own (fused experts).
struct Kolibri1Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Kolibri1Configuration
    let layerTypes: [String]
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        let config = try checkpoint.decodeConfig(Kolibri1Configuration.self)
        self.config = config
        // It sizes the dense MLP DecoderDimensions checks: named as written, first.
        try ConfigRules.checks(path: checkpoint.configURL.path) {
            try ConfigRules.count(config.sharedExpertIntermediateSize, "shared_expert_intermediate_size")
            try ConfigRules.product([(config.sharedExpertIntermediateSize, "shared_expert_intermediate_size"), (3, "gate, up and down")])
        }
        parts = try DecoderParts(
            checkpoint, section: config.section, naming: Self.naming,
            experts: .gatedMLP(count: config.numExperts, countKey: config.numExpertsKey, isSparse: { _ in true }))
        try parts.checks { [parts] in try config.check(hidden: parts.dimensions.hiddenSize) }
        // Kolibri1Config's rule: every fifth layer full attention.
        layerTypes = try parts.layerTypes(config.layerTypes, slidingWindow: config.slidingWindow) {
            ($0 + 1) % 5 == 0 ? AttentionLayerType.full : AttentionLayerType.sliding
        }
        try parts.confirmRouter("mlp.gate", experts: config.numExperts, expertsKey: config.numExpertsKey, layers: Array(0..<layerTypes.count))
        rotary = try parts.rotary()
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm.", "post_self_attn_layernorm.", "post_attn_norm."],
            mlp: ["mlp.", "post_attention_layernorm.", "post_mlp_layernorm.", "post_ffn_norm.", "moe."], layerCountKeys: ["num_hidden_layers"])
    }

    /// Exports without some blocks spell out the kept layers' types.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let sliding = layerTypes[index] == AttentionLayerType.sliding, eps = config.rmsNormEps
        let p = "layers.\(index).", weights = parts.weights, layout = parts.attentionLayout
        let activation = try parts.activation(config.hiddenAct)
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: eps,
            outputNorms: (try weights.storedModule(p, saved: "post_attn_norm", renamed: "post_self_attn_layernorm"),
                          try weights.storedModule(p, saved: "post_ffn_norm", renamed: "post_mlp_layernorm")),
            attention: {
                try parts.attention(
                    p + "self_attn.", bias: false, rotary: sliding || config.slidingWindow == nil ? rotary : nil,
                    slidingWindow: sliding ? config.slidingWindow : nil,
                    queryKeyNorm: .perHead(
                        query: try weights.rmsNorm(p + "self_attn.q_norm", size: layout.headDim, eps: eps),
                        key: try weights.rmsNorm(p + "self_attn.k_norm", size: layout.headDim, eps: eps)))
            },
            feedForward: { .mixture(try Self.mixture(index, parts: parts, config: config, activation: activation)) })
    }

    /// Layer `index`'s Kolibri1SparseMoeBlock (Kolibri 1.1's alike).
    static func mixture(_ index: Int, parts: DecoderParts, config c: Kolibri1Configuration, activation: Activation) throws -> MixtureOfExperts {
        let weights = parts.weights, d = parts.dimensions.hiddenSize
        let prefix = "layers.\(index).mlp."
        let bias = try weights.storedName(saved: "layers.\(index).moe.router.expert_bias", renamed: prefix + "gate.e_score_correction_bias")
        return MixtureOfExperts(
            router: try weights.linear(prefix + "gate", in: d, out: c.numExperts, bias: false),
            experts: try weights.gatedExperts(
                fused: prefix + "experts.", perExpert: prefix + "experts.", names: ("gate_proj", "up_proj", "down_proj"),
                count: c.numExperts, hidden: d, inner: c.moeIntermediateSize, activation: activation),
            expertsPerToken: c.numExpertsPerTok,
            rule: .groupLimited(GroupLimitedTopK(
                scoring: .sigmoidRankedByLogits, groupScore: .best, groups: 1, groupsPerToken: 1,
                // A buffer transformers initialises to zeros when the checkpoint has none.
                selectionBias: weights.has(bias) ? try weights.floats(bias, [c.numExperts]) : nil,
                normalizesWeights: c.normTopkProb, denominatorEpsilon: 0, scalingFactor: 1)),
            sharedExperts: [try weights.gatedMLP(prefix + "shared_experts.", hidden: d, inner: parts.dimensions.intermediateSize, activation: activation)])
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `minimax_m2`, with MiniMaxM2Config's defaults
/// (transformers' `models/minimax_m2/configuration_minimax_m2.py`).
struct MiniMaxM2Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// `num_local_experts` (`num_experts` is its alias).
    var numLocalExperts: Int
    /// The key config.json gives the expert count under, for errors.
    var numLocalExpertsKey: String
    var numExpertsPerTok: Int
    /// The released checkpoints' `rotary_dim`: the rotated width, read as
    /// partial_rotary_factor rotary_dim / head_dim where no rotary fraction is given.
    var rotaryDim: Double?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case numLocalExperts = "num_local_experts"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case rotaryDim = "rotary_dim"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        let local = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts)
        let alias = try c.decodeIfPresent(Int.self, forKey: .numExperts)
        numLocalExperts = local ?? alias ?? 256
        numLocalExpertsKey = local == nil && alias != nil ? "num_experts" : "num_local_experts"
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 8
        rotaryDim = try c.decodeIfPresent(Double.self, forKey: .rotaryDim)
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let local, let alias, local != alias {
                throw InvalidConfigValue(
                    key: "num_local_experts", problem: "is \(local), but num_experts (the same setting) is \(alias)")
            }
            try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        }
    }
}

/// MiniMax-M2 (MiniMaxAI/MiniMax-M2 and M2.1; transformers'
/// `models/minimax_m2/modeling_minimax_m2.py`): Llama's pre-RMSNorm blocks
/// whose attention has no biases and one RMSNorm over the whole query
/// projection and one over the whole key projection (`q_norm`
/// [heads · head_dim], `k_norm` [kv_heads · head_dim], as OLMoE's, not per
/// head) before rotary, which turns the halves of the first rotary width of
/// each head: `partial_rotary_factor`, or the released configs'
/// `rotary_dim` / head_dim (MiniMaxM2Config's `convert_rope_params_to_dict`),
/// else the whole head; the rotary base is 5e6 unless given, `head_dim` 128.
///
/// Every MLP is Mixtral's sparse block with a sigmoid router: each expert
/// scored σ(logit), the `num_experts_per_tok` best of σ + the layer's
/// `e_score_correction_bias` chosen (the bias only chooses), weighted by
/// their σ divided by their sum — DeepSeek-V3's routing with one group and
/// no scaling (`GroupLimitedTopK`), no shared experts. Experts are SwiGLU of
/// width `intermediate_size`, stored per expert
/// (`block_sparse_moe.experts.<e>.w1|w3|w2`, router `block_sparse_moe.gate`,
/// bias `block_sparse_moe.e_score_correction_bias`, as released and saved)
/// or fused under `mlp.`. The MLP module is router and experts together.
struct MiniMaxM2Model: DecoderFamily {
    let parts: DecoderParts
    let config: MiniMaxM2Configuration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the expert tensors are checked with the layers.
        let section = ConfigSection.topLevel
        let config = try checkpoint.decodeConfig(MiniMaxM2Configuration.self, section: section)
        self.config = config
        parts = try DecoderParts(
            checkpoint, section: section, naming: MixtralModel.naming,
            experts: MixtralModel.experts(count: config.numLocalExperts, countKey: config.numLocalExpertsKey, projections: ["w1", "w3", "w2"]))
        var rope = try parts.ropeSettings()
        if rope.partialRotaryFactor == nil, !rope.partialRotaryFactorIsNull, let rotaryDim = config.rotaryDim {
            rope.partialRotaryFactor = rotaryDim / Double(parts.dimensions.resolvedHeadDim)
            rope.partialRotaryKey = "rotary_dim"
        }
        rotary = try parts.rotary(defaultTheta: 5_000_000, partialRotary: .honoured(default: 1), settings: rope)
        try parts.checkMixtralExperts(
            count: config.numLocalExperts, countKey: config.numLocalExpertsKey, expertsPerToken: config.numExpertsPerTok,
            inner: parts.dimensions.intermediateSize, innerKey: "intermediate_size")
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let weights = parts.weights, layout = parts.attentionLayout, eps = config.rmsNormEps
        let p = "layers.\(index).self_attn."
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: eps,
            attention: {
                try parts.attention(
                    p, bias: false, rotary: rotary,
                    queryKeyNorm: .acrossHeads(
                        query: try weights.rmsNorm(p + "q_norm", size: layout.queryWidth, eps: eps),
                        key: try weights.rmsNorm(p + "k_norm", size: layout.keyWidth, eps: eps)))
            },
            feedForward: { .mixture(try experts(layer: index)) })
    }

    /// Layer `index`'s sigmoid router, correction bias and experts.
    func experts(layer index: Int) throws -> MixtureOfExperts {
        let weights = parts.weights, count = config.numLocalExperts
        let sparse = try parts.mixtralExperts(
            layer: index, count: count, inner: parts.dimensions.intermediateSize, activation: try parts.activation(config.hiddenAct))
        // transformers renames the original `block_sparse_moe.` to `mlp.`: either holds the bias,
        // which stays zero (its initial value) when neither does.
        let biasNames = ["mlp.", "block_sparse_moe."].map { "layers.\(index).\($0)e_score_correction_bias" }
        let bias = try biasNames.first(where: { weights.has($0) }).map { try weights.floats($0, [count]) }
        let routing = GroupLimitedTopK(
            scoring: .sigmoid, groupScore: .best, groups: 1, groupsPerToken: 1, selectionBias: bias,
            normalizesWeights: true, scalingFactor: 1)
        return MixtureOfExperts(
            router: sparse.router, experts: sparse.experts, expertsPerToken: config.numExpertsPerTok, rule: .groupLimited(routing))
    }
}

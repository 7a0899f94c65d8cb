import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

extension OlmoeConfiguration.Defaults {
    /// FlexOlmoConfig's: 7 experts, 5 per token, epsilon 1e-6; no `clip_qkv`.
    static let flexOlmo = Self(rmsNormEps: 1e-6, numExperts: 7, numExpertsPerTok: 5, readsClipQKV: false)
}

/// config.json of `flex_olmo`: OLMoE's keys with FlexOlmoConfig's defaults
/// (`clip_qkv` is not read: FlexOlmo's attention does not clamp).
struct FlexOlmoConfiguration: Decodable {
    var moe: OlmoeConfiguration

    init(from decoder: Decoder) throws { moe = try OlmoeConfiguration(from: decoder, defaults: .flexOlmo) }

    /// The attention and norm keys as OLMo-2's block reads them.
    var olmo2: Olmo2Configuration {
        Olmo2Configuration(rmsNormEps: moe.rmsNormEps, hiddenAct: moe.hiddenAct, attentionBias: moe.attentionBias)
    }
}

/// FlexOlmo (`flex_olmo`, allenai/FlexOlmo-7x7B-1T; transformers'
/// `models/flex_olmo/modeling_flex_olmo.py`): OLMo-2's post-norm block
///
///     H = X + RMSNorm(Attn(X)),   Y = H + RMSNorm(MoE(H))
///
/// (`post_attention_layernorm`, `post_feedforward_layernorm`; no input norms)
/// with OLMo-2's attention — an RMSNorm over the whole query projection
/// [heads · head_dim] and one over the whole key projection before rotary,
/// q/k/v/o biases by `attention_bias`, no clamp — and as every MLP OLMoE's
/// mixture: a router `mlp.gate` over `num_experts` (7) SwiGLU experts of
/// `intermediate_size`, softmax top-`num_experts_per_tok` (5), renormalised
/// only when `norm_topk_prob` (false). Rotary base 500000 unless given.
/// Experts are read per expert (as saved) or fused.
struct FlexOlmoModel: DecoderFamily {
    let parts: DecoderParts
    let config: FlexOlmoConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the expert tensors are checked with the layers.
        config = try checkpoint.decodeConfig(FlexOlmoConfiguration.self)
        let moe = config.moe
        parts = try DecoderParts(
            checkpoint, naming: { Olmo2Model.naming($0) },
            experts: .gatedMLP(count: moe.numExperts, countKey: moe.numExpertsKey, isSparse: { _ in true }))
        let dimensions = parts.dimensions
        try ConfigRules.checks(path: parts.configPath) {
            try ConfigRules.positive(moe.rmsNormEps, "rms_norm_eps")
            try ConfigRules.product([
                (moe.numExperts, moe.numExpertsKey), (2, "gate and up"), (dimensions.intermediateSize, "intermediate_size"),
                (dimensions.hiddenSize, "hidden_size"),
            ])
        }
        rotary = try parts.rotary(defaultTheta: 500_000)
        let layers = Array(0..<dimensions.numHiddenLayers)
        try parts.confirmRouter("mlp.gate", experts: moe.numExperts, expertsKey: moe.numExpertsKey, layers: layers)
        try parts.confirmExpertWidth(
            layers: layers, experts: moe.numExperts, expertsKey: moe.numExpertsKey, inner: dimensions.intermediateSize,
            innerKey: "intermediate_size")
    }

    func head() throws -> OutputHead { try Olmo2Model.head(parts, config.olmo2) }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let moe = config.moe
        return try Olmo2Model.block(index, skipping: plan, parts: parts, config: config.olmo2, rotary: rotary) {
            .mixture(try parts.weights.routedExperts(
                "layers.\(index).mlp.", count: moe.numExperts, expertsPerToken: moe.numExpertsPerTok, hidden: hiddenSize,
                inner: parts.dimensions.intermediateSize, activation: try parts.activation(moe.hiddenAct ?? "silu"),
                rule: .softmaxTopK(renormalize: moe.normTopkProb)))
        }
    }
}

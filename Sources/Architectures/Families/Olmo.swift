import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `olmo` (OLMo-1B-hf, OLMo-7B-hf).
struct OlmoConfiguration: Decodable {
    var hiddenAct: String?
    var attentionBias: Bool?
    var clipQKV: Double?

    enum CodingKeys: String, CodingKey {
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case clipQKV = "clip_qkv"
    }
}

/// OLMo: Llama's layout, but every norm is a LayerNorm with neither weight
/// nor bias (eps fixed at 1e-5), and q/k/v may be clamped to ±`clip_qkv`
/// straight after their projections.
struct OlmoModel: DecoderFamily {
    let parts: DecoderParts
    let config: OlmoConfiguration
    let rotary: RotaryEmbedding

    /// OlmoLayerNorm hard-codes its epsilon; config.json has none.
    static let layerNormEpsilon: Float = 1e-5

    init(_ checkpoint: Checkpoint) throws {
        // The norms have no tensors, so a branch is just its module.
        parts = try DecoderParts(checkpoint) { prefix in
            LayerNaming(prefix: prefix + "layers.", attention: ["self_attn."], mlp: ["mlp."], layerCountKeys: ["num_hidden_layers"])
        }
        config = try parts.config(OlmoConfiguration.self)
        rotary = try parts.rotary()
        if let clip = config.clipQKV {
            try ConfigRules.checks(path: parts.configPath) { try ConfigRules.bound(clip, "clip_qkv") }
        }
    }

    var norm: Normalization { .parameterFreeLayer(size: hiddenSize, eps: Self.layerNormEpsilon) }

    func head() throws -> OutputHead {
        // OLMo-1B ties its head to the embedding (saved without lm_head).
        try parts.head(norm: norm)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize
        let bias = config.attentionBias == true
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: bias, rotary: rotary,
            clip: config.clipQKV.map { Float($0) }) }
        func feedForward() throws -> FeedForward {
            try weights.gatedMLP(
                p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize, activation: try parts.activation(config.hiddenAct ?? "silu"))
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(inputNorm: norm, attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(inputNorm: norm, feedForward: try feedForward()),
            residual: .sequential)
    }
}

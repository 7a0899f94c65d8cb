import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `helium` (HeliumConfig).
struct HeliumConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v_proj (o_proj never has one).
    var attentionBias: Bool
    /// Biases on the MLP's projections.
    var mlpBias: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
    }
}

/// Helium (kyutai/helium-1): Llama's pre-RMSNorm blocks and SwiGLU MLP,
/// rotary on interleaved pairs (dimensions 2i, 2i + 1) of each head, base
/// 100000 unless given, `head_dim` 128 unless given (and always
/// hidden_size / num_attention_heads: o_proj is square); q/k/v biases by
/// `attention_bias`, MLP biases by `mlp_bias`; untied head by default.
struct HeliumModel: DecoderFamily {
    let parts: DecoderParts
    let config: HeliumConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, section: ConfigSection(defaults: ["head_dim": 128]), naming: LlamaModel.naming)
        // HeliumAttention's o_proj takes hidden_size inputs, whatever head_dim says.
        try parts.confirmHeadDimIsHiddenOverHeads(": HeliumAttention's o_proj takes hidden_size inputs, so its heads are")
        config = try parts.config(HeliumConfiguration.self)
        rotary = try parts.rotary(defaultTheta: 100_000)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index)."
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: {
                try parts.attention(
                    p + "self_attn.", bias: config.attentionBias, outputBias: false, rotary: rotary, interleavedRotary: true)
            },
            feedForward: {
                try parts.weights.gatedMLP(
                    p + "mlp.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.hiddenAct), bias: config.mlpBias)
            })
    }
}

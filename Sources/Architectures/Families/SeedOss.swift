import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `seed_oss`, with SeedOssConfig's defaults
/// (transformers' `models/seed_oss/configuration_seed_oss.py`).
struct SeedOssConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v_proj (SeedOssConfig: on unless switched off).
    var attentionBias: Bool
    /// A bias on o_proj (off unless switched on).
    var attentionOutBias: Bool
    /// Biases on the MLP's gate/up/down_proj.
    var mlpBias: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case attentionOutBias = "attention_out_bias"
        case mlpBias = "mlp_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? true
        attentionOutBias = try c.decodeIfPresent(Bool.self, forKey: .attentionOutBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
    }
}

/// Seed-OSS (ByteDance-Seed/Seed-OSS-36B), as transformers'
/// `models/seed_oss/modeling_seed_oss.py` runs it: Llama's pre-RMSNorm
/// blocks and SwiGLU MLP, rotary grouped-query attention whose q/k/v_proj
/// carry biases (`attention_bias`, on by default) while o_proj has its own
/// switch (`attention_out_bias`, off by default), MLP biases by `mlp_bias`,
/// `head_dim` 128 unless given (null: hidden_size / num_attention_heads),
/// untied head by default. Its dropouts act in training only.
struct SeedOssModel: DecoderFamily {
    let parts: DecoderParts
    let config: SeedOssConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming)
        config = try parts.config(SeedOssConfiguration.self)
        rotary = try parts.rotary()
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
                    p + "self_attn.", bias: config.attentionBias, outputBias: config.attentionOutBias, rotary: rotary)
            },
            feedForward: {
                try parts.weights.gatedMLP(
                    p + "mlp.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.hiddenAct), bias: config.mlpBias)
            })
    }
}

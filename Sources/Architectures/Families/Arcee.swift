import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `arcee`, with ArceeConfig's defaults
/// (transformers' `models/arcee/configuration_arcee.py`).
struct ArceeConfiguration: Decodable {
    var rmsNormEps: Double
    /// The MLP's activation: ReLU² (`relu2`) unless given.
    var hiddenAct: String
    /// Biases on q/k/v_proj and o_proj alike.
    var attentionBias: Bool
    /// Biases on up_proj and down_proj.
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
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "relu2"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
    }
}

/// Arcee (arcee-ai/AFM-4.5B), as transformers'
/// `models/arcee/modeling_arcee.py` runs it: Llama's pre-RMSNorm blocks and
/// rotary grouped-query attention (q/k/v/o biases by `attention_bias`), with
/// a non-gated MLP down(act(up(x))) whose activation is ReLU² unless
/// `hidden_act` says otherwise (biases by `mlp_bias`); untied head by default.
struct ArceeModel: DecoderFamily {
    let parts: DecoderParts
    let config: ArceeConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming)
        // ArceeConfig's validate_architecture refuses heads that do not split
        // hidden_size, whatever head_dim says.
        let d = parts.dimensions
        try ConfigRules.checks(path: parts.configPath) {
            try ConfigRules.divides(d.numAttentionHeads, "num_attention_heads", d.hiddenSize, "hidden_size")
        }
        config = try parts.config(ArceeConfiguration.self)
        rotary = try parts.rotary()
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let weights = parts.weights, d = hiddenSize, inner = parts.dimensions.intermediateSize
        let p = "layers.\(index)."
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try parts.attention(p + "self_attn.", bias: config.attentionBias, rotary: rotary) },
            feedForward: {
                .plain(
                    up: try weights.linear(p + "mlp.up_proj", in: d, out: inner, bias: config.mlpBias),
                    down: try weights.linear(p + "mlp.down_proj", in: inner, out: d, bias: config.mlpBias),
                    activation: try parts.activation(config.hiddenAct))
            })
    }
}

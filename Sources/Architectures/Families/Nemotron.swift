import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `nemotron`, with NemotronConfig's defaults (transformers'
/// `models/nemotron/configuration_nemotron.py`).
struct NemotronConfiguration: Decodable {
    var normEps: Double
    var hiddenAct: String
    /// Biases on q/k/v/o_proj.
    var attentionBias: Bool
    /// Biases on up_proj and down_proj.
    var mlpBias: Bool

    enum CodingKeys: String, CodingKey {
        case normEps = "norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        normEps = try c.decodeIfPresent(Double.self, forKey: .normEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "relu2"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        let eps = normEps
        try ConfigRules.decodingChecks { try ConfigRules.positive(eps, "norm_eps") }
    }
}

/// NVIDIA's Nemotron-4 and the Minitron models pruned and distilled from
/// it and from Llama 3.1 (`nemotron`, transformers'
/// `models/nemotron/modeling_nemotron.py`): Llama's pre-norm blocks with
/// LayerNorm1P norms (LayerNorms with biases scaling by 1 + weight:
/// `input_layernorm`, `post_attention_layernorm`, the final `norm`,
/// epsilon `norm_eps`), grouped-query attention (heads `head_dim` wide,
/// else hidden_size / num_attention_heads; q/k/v/o biases by
/// `attention_bias`) rotating the first `partial_rotary_factor` of each
/// head (0.5 unless given), and a non-gated MLP down(act(up(x))) with ReLU²
/// (`relu2`) unless `hidden_act` says otherwise (biases by `mlp_bias`);
/// untied head by default.
struct NemotronModel: DecoderFamily {
    let parts: DecoderParts
    let config: NemotronConfiguration
    let rotary: RotaryEmbedding
    let activation: Activation

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming)
        // NemotronConfig leaves it None, which NemotronAttention divides by.
        if parts.dimensions.numKeyValueHeads == nil {
            throw InvalidConfigValue(key: "num_key_value_heads", problem: "is not given: NemotronConfig leaves it None, which transformers' NemotronAttention cannot divide by")
                .error(path: parts.configPath)
        }
        config = try parts.config(NemotronConfiguration.self)
        // NemotronConfig sets the fraction to 0.5 when config.json has none.
        rotary = try parts.rotary(partialRotary: .honoured(default: 0.5))
        activation = try parts.activation(config.hiddenAct)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.norm(.offsetLayer, "norm", size: hiddenSize, eps: config.normEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let weights = parts.weights, d = hiddenSize, inner = parts.dimensions.intermediateSize
        let p = "layers.\(index)."
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.normEps, normKind: .offsetLayer,
            attention: { try parts.attention(p + "self_attn.", bias: config.attentionBias, rotary: rotary) },
            feedForward: {
                .plain(
                    up: try weights.linear(p + "mlp.up_proj", in: d, out: inner, bias: config.mlpBias),
                    down: try weights.linear(p + "mlp.down_proj", in: inner, out: d, bias: config.mlpBias),
                    activation: activation)
            })
    }
}

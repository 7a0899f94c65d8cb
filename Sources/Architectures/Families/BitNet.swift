import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `bitnet`, with BitNetConfig's defaults.
struct BitNetConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v/o_proj.
    var attentionBias: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "relu2"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
    }
}

/// BitNet b1.58 (`bitnet`, transformers' `models/bitnet/`) as its master
/// weights run it: Llama's pre-RMSNorm blocks (rotary at base 5e5 unless
/// given, grouped-query attention, biases on q/k/v/o by `attention_bias`)
/// with the attention output normalised before o_proj (`attn_sub_norm`,
/// an RMSNorm of `hidden_size`) and the MLP's hidden rows before down_proj
/// (`ffn_sub_norm`, of `intermediate_size`), its activation squared ReLU
/// (`hidden_act` "relu2"). Checkpoints packed as ternary weights
/// (`quantization_config` "bitnet") are refused with the other quantisations
/// droptrace does not run (`ForwardPassKeys`): score the bf16 master weights.
struct BitNetModel: DecoderFamily {
    let parts: DecoderParts
    let config: BitNetConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // BitNetConfig declares no head_dim: a written one reaches BitNetAttention as it is.
        try checkpoint.requireIntegers(["head_dim"], reader: "BitNetAttention")
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming)
        config = try parts.config(BitNetConfiguration.self)
        // attn_sub_norm normalises hidden_size values: the heads must fill exactly that.
        let d = parts.dimensions
        if d.numAttentionHeads * d.resolvedHeadDim != d.hiddenSize {
            throw InvalidConfigValue(
                key: d.headDim == nil ? "num_attention_heads" : "head_dim",
                problem: "gives heads \(d.numAttentionHeads) × \(d.resolvedHeadDim) wide, but BitNetAttention's attn_sub_norm normalises hidden_size \(d.hiddenSize) values")
                .error(path: parts.configPath)
        }
        rotary = try parts.rotary(defaultTheta: 500_000)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index).", weights = parts.weights, eps = config.rmsNormEps, d = hiddenSize
        let inner = parts.dimensions.intermediateSize
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: eps,
            attention: {
                var attention = try parts.attention(p + "self_attn.", bias: config.attentionBias, rotary: rotary)
                attention.attendedNorm = try weights.rmsNorm(p + "self_attn.attn_sub_norm", size: d, eps: eps)
                return attention
            },
            feedForward: {
                .hiddenNormed(
                    try weights.gatedMLP(p + "mlp.", hidden: d, inner: inner, activation: try parts.activation(config.hiddenAct)),
                    norm: try weights.rmsNorm(p + "mlp.ffn_sub_norm", size: inner, eps: eps))
            })
    }
}

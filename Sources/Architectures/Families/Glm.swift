import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `glm` and `glm4` (GlmConfig, Glm4Config: the same keys).
struct GlmConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v_proj (o_proj never has one); GlmConfig's default is true.
    var attentionBias: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? true
    }
}

/// GLM-4 (`glm`: THUDM/glm-4-9b-hf; `glm4`: GLM-4-0414, GLM-Z1): Llama's
/// pre-RMSNorm blocks with q/k/v biases, one fused `gate_up_proj` (gate
/// rows first), and rotary on interleaved pairs (dimensions 2i and 2i + 1
/// rotate together) of the first `partial_rotary_factor` (default 0.5) of
/// each head; `head_dim` is 128 unless given. `glm4` adds an RMSNorm on each
/// branch's output before it joins the stream (`post_self_attn_layernorm`,
/// `post_mlp_layernorm`):
///
///     H = X + RMSNorm(Attn(RMSNorm X)),   Y = H + RMSNorm(MLP(RMSNorm H))
///
/// The interleaved pairs are gathered when the weights are read
/// (`DecoderParts.interleavingPairs`), over the rotated rows of each q and k head only.
struct GlmModel: DecoderFamily {
    let parts: DecoderParts
    let config: GlmConfiguration
    let rotary: RotaryEmbedding
    /// `glm4`: each branch ends in its own RMSNorm.
    let normsBranchOutputs: Bool

    init(_ checkpoint: Checkpoint) throws {
        normsBranchOutputs = checkpoint.modelType == "glm4"
        let sandwich = normsBranchOutputs
        parts = try DecoderParts(checkpoint, section: ConfigSection(defaults: ["head_dim": 128])) { Self.naming($0, sandwich: sandwich) }
        config = try parts.config(GlmConfiguration.self)
        rotary = try parts.rotary(partialRotary: .honoured(default: 0.5))
    }

    /// Each branch owns its norms: glm4's output norms go with them.
    static func naming(_ prefix: String, sandwich: Bool) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.",
            attention: ["self_attn.", "input_layernorm."] + (sandwich ? ["post_self_attn_layernorm."] : []),
            mlp: ["mlp.", "post_attention_layernorm."] + (sandwich ? ["post_mlp_layernorm."] : []),
            layerCountKeys: ["num_hidden_layers"])
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index)."
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            outputNorms: normsBranchOutputs ? ("post_self_attn_layernorm", "post_mlp_layernorm") : nil,
            attention: {
                try parts.attention(
                    p + "self_attn.", bias: config.attentionBias, outputBias: false, rotary: rotary, interleavedRotary: true)
            },
            feedForward: {
                try parts.weights.fusedGatedMLP(
                    p + "mlp.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.hiddenAct))
            })
    }
}

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
///
/// Also the language model of `glm4v` (Glm4vForConditionalGeneration:
/// GLM-4.1V): glm4's block under `text_config`, heads of hidden_size /
/// num_attention_heads, the whole head rotating unless the rope parameters
/// give `partial_rotary_factor`, M-RoPE (the plain rotation on text), weights
/// under `model.language_model.`, the head tied by the top-level or the text
/// config's `tie_word_embeddings`; the vision tower is not read. And of
/// `glm46v` (Glm46VForConditionalGeneration: GLM-4.6V), whose language
/// model is the same (`text_config` of model type `glm4v_text`, the only
/// one read under it: `Llava.wrappers`), its head tied by the top-level
/// `tie_word_embeddings` alone (default false); `glmga` (GlmgaConfig, the
/// same class under another type, whose model transformers builds as
/// Glm46VForConditionalGeneration) alike. And of `glm_ocr`
/// (GlmOcrForConditionalGeneration: GLM-OCR), GLM-4.1V's language model
/// without q/k/v biases, its heads `head_dim` wide where written (else
/// hidden_size / num_attention_heads), placed and tied as `glm4v`'s.
struct GlmModel: DecoderFamily {
    let parts: DecoderParts
    let config: GlmConfiguration
    let rotary: RotaryEmbedding
    /// `glm4`: each branch ends in its own RMSNorm.
    let normsBranchOutputs: Bool

    init(_ checkpoint: Checkpoint) throws {
        let vision = ["glm4v", "glm46v", "glmga", "glm_ocr"].contains(checkpoint.modelType)
        normsBranchOutputs = checkpoint.modelType == "glm4" || vision
        if vision {
            // Glm4vVisionEmbeddings sizes its positions by image_size // patch_size (GLM-OCR's tower by both).
            try Llava.checkPatchDividesImage(checkpoint)
        }
        let sandwich = normsBranchOutputs
        parts = try DecoderParts(checkpoint, placement: try Self.placement(checkpoint)) { Self.naming($0, sandwich: sandwich) }
        config = try parts.config(GlmConfiguration.self)
        // Glm4vTextConfig rotates the whole head unless its rope parameters say otherwise.
        rotary = vision
            ? try parts.mropeRotary(defaultSection: [8, 12, 12], defaultTheta: 10_000, partialRotary: .honoured(default: 1))
            : try parts.rotary(partialRotary: .honoured(default: 0.5))
    }

    /// The top level (head_dim 128 unless given), or for `glm4v` and
    /// `glm46v` the wrapper's text_config (Glm4vTextConfig: no head_dim
    /// default, q/k/v biases always, `attention_bias` not read), for
    /// `glm_ocr` GlmOcrTextConfig's (no q/k/v biases, `attention_bias` not
    /// read; a written `head_dim` sizes the heads, none null or 0).
    static func placement(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        var placement: TextModelPlacement
        switch checkpoint.modelType {
        case "glm4v":
            placement = try TextModelPlacement.ownTextConfig(checkpoint, textTiesToo: true)
        case "glm_ocr":
            // GlmOcrTextAttention: head_dim = getattr(config, "head_dim", hidden_size // num_attention_heads),
            // its scaling head_dim ** -0.5, which fails on a written null or 0.
            placement = try TextModelPlacement.ownTextConfig(checkpoint, textTiesToo: true)
            switch checkpoint.configDocument.member("text_config")?.member("head_dim") {
            case .null?, .integer(0)?:
                throw DroptraceError(
                    "\"text_config.head_dim\" is null or 0: GlmOcrTextAttention sizes its heads by it where written (its scaling head_dim ** -0.5 fails)",
                    path: checkpoint.configURL.path)
            default: break
            }
            placement.section.overrides["attention_bias"] = .boolean(false)
            return placement
        case "glm46v", "glmga":
            // Glm46VConfig (and GlmgaConfig, the same class under another type) builds its text config by model type (an AutoConfig): GLM-4.1V's own text config class.
            placement = try Llava.placement(checkpoint)
            placement.section.defaults.merge(
                ConfigValueKinds.omittedDefaultValues(of: "glm4v.text_config"), uniquingKeysWith: { current, _ in current })
        default:
            return TextModelPlacement(section: ConfigSection(defaults: ["head_dim": 128]))
        }
        placement.section.overrides["attention_bias"] = .null
        placement.readZeroHeadDimAsNone(checkpoint)
        return placement
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

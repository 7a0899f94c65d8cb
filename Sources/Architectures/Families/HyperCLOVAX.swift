import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `hyperclovax`, with HyperCLOVAXConfig's defaults.
struct HyperCLOVAXConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    /// Biases on q/k/v_proj and o_proj alike.
    var attentionBias: Bool
    var mlpBias: Bool
    /// Multiplies the token embeddings.
    var embeddingMultiplier: Float
    /// Multiplies each branch's (normalised) output as it joins the residual stream.
    var residualMultiplier: Float
    /// The softmax scale; nil (absent or null): 1/√head_dim.
    var attentionMultiplier: Float?
    /// Multiplies the logits (Granite divides by its own).
    var logitsScaling: Float
    /// Peri-LN: an RMSNorm on each branch's output (`post_norm1`, `post_norm2`).
    var usePostNorm: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case embeddingMultiplier = "embedding_multiplier"
        case residualMultiplier = "residual_multiplier"
        case attentionMultiplier = "attention_multiplier"
        case logitsScaling = "logits_scaling"
        case usePostNorm = "use_post_norm"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        embeddingMultiplier = try c.multiplier(.embeddingMultiplier)
        residualMultiplier = try c.multiplier(.residualMultiplier)
        // HyperCLOVAXConfig replaces a null or absent one by head_dim ** -0.5.
        let unset = try !c.contains(.attentionMultiplier) || c.decodeNil(forKey: .attentionMultiplier)
        attentionMultiplier = unset ? nil : try c.multiplier(.attentionMultiplier)
        logitsScaling = try c.multiplier(.logitsScaling)
        usePostNorm = try c.decodeIfPresent(Bool.self, forKey: .usePostNorm) ?? true
    }
}

/// HyperCLOVA X SEED (NAVER, transformers' models/hyperclovax/): Granite's
/// µP block — token embeddings × `embedding_multiplier`, each branch's output
/// × `residual_multiplier` as it joins the stream, softmax scale
/// `attention_multiplier` (else 1/√head_dim), logits × `logits_scaling` —
/// with Peri-LN (`use_post_norm`, on unless given): an RMSNorm on each
/// branch's output before the multiplier,
///
///     H = X + m · post_norm1(Attn(input_layernorm X)),
///     Y = H + m · post_norm2(MLP(post_attention_layernorm H)).
///
/// Each branch owns its output norm: the attention and MLP importances
/// compare the stream before and after the normalised, scaled branch is
/// added, as transformers' layer forms it. Also the language model of
/// `hyperclovax_vision_v2` (`Llava.wrappers`): the keys under `text_config`,
/// the weights under `model.language_model.`, the wrapper's head `lm_head`
/// tied by the top-level `tie_word_embeddings` (default true) and
/// multiplying the logits by the text config's `logits_scaling`.
struct HyperCLOVAXModel: DecoderFamily {
    let parts: DecoderParts
    let config: HyperCLOVAXConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, placement: try .topLevelOrWrapped(checkpoint), naming: Self.naming)
        config = try parts.config(HyperCLOVAXConfiguration.self)
        rotary = try parts.rotary()
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm.", "post_norm1."],
            mlp: ["mlp.", "post_attention_layernorm.", "post_norm2."], layerCountKeys: ["num_hidden_layers"])
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch, multiplier: config.embeddingMultiplier) }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps), logitScale: config.logitsScaling)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), activation = try parts.activation(config.hiddenAct ?? "silu")
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: config.attentionBias, rotary: rotary, scale: config.attentionMultiplier) }
        func feedForward() throws -> FeedForward {
            try parts.weights.gatedMLP(
                p + "mlp.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize, activation: activation, bias: config.mlpBias)
        }
        return try parts.preNormBlock(
            index, drops: drops, eps: config.rmsNormEps, outputNorms: config.usePostNorm ? ("post_norm1", "post_norm2") : nil,
            outputScale: config.residualMultiplier, attention: attention, feedForward: feedForward)
    }
}

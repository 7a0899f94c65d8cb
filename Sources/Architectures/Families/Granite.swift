import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `granite`, with GraniteConfig's defaults: the four
/// multipliers are 1 (Llama's arithmetic) unless given.
struct GraniteConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    /// Biases on q/k/v_proj and o_proj alike.
    var attentionBias: Bool
    var mlpBias: Bool
    /// Multiplies the token embeddings.
    var embeddingMultiplier: Float
    /// Multiplies each branch's output as it joins the residual stream.
    var residualMultiplier: Float
    /// The softmax scale, in place of 1/√head_dim.
    var attentionMultiplier: Float
    /// Divides the logits.
    var logitsScaling: Float

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case embeddingMultiplier = "embedding_multiplier"
        case residualMultiplier = "residual_multiplier"
        case attentionMultiplier = "attention_multiplier"
        case logitsScaling = "logits_scaling"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // (DecoderDimensions refuses a non-positive one.)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        // transformers multiplies float32 activations by these Python floats
        // in float32, so a value float32 cannot hold (1e39) would make every
        // activation infinite, and logits divided by 0 are no distribution.
        func multiplier(_ key: CodingKeys) throws -> Float {
            let value = try c.decodeIfPresent(Double.self, forKey: key) ?? 1
            try ConfigRules.decodingChecks {
                guard value.isFinite, Float(value).isFinite else {
                    throw InvalidConfigValue(key: key.rawValue, problem: "must be a finite number that float32 holds, got \(value)")
                }
            }
            return Float(value)
        }
        embeddingMultiplier = try multiplier(.embeddingMultiplier)
        residualMultiplier = try multiplier(.residualMultiplier)
        attentionMultiplier = try multiplier(.attentionMultiplier)
        logitsScaling = try multiplier(.logitsScaling)
        let logitsScaling = logitsScaling
        try ConfigRules.decodingChecks {
            guard logitsScaling != 0 else {
                throw InvalidConfigValue(key: "logits_scaling", problem: "must not be 0 (the logits are divided by it)")
            }
        }
    }
}

/// Granite (IBM Granite 3.x dense models): Llama's pre-RMSNorm block with
/// four multipliers — token embeddings × `embedding_multiplier`, each
/// branch output × `residual_multiplier` before it is added to the stream
/// (h = x + m · attn(norm x), y = h + m · mlp(norm h)), softmax scale
/// `attention_multiplier` instead of 1/√head_dim, logits ÷ `logits_scaling`.
///
/// The residual multiplier belongs to the branch: the attention and MLP
/// importances compare the stream before and after the scaled branch is
/// added, as transformers' layer forms it.
struct GraniteModel: DecoderFamily {
    let parts: DecoderParts
    let config: GraniteConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming)
        config = try parts.config(GraniteConfiguration.self)
        rotary = try parts.rotary()
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch, multiplier: config.embeddingMultiplier) }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps), logitDivisor: config.logitsScaling)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: config.attentionBias, rotary: rotary, scale: config.attentionMultiplier) }
        func feedForward() throws -> FeedForward {
            try weights.gatedMLP(
                p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize,
                activation: try parts.activation(config.hiddenAct ?? "silu"), bias: config.mlpBias)
        }
        return try parts.preNormBlock(
            index, drops: drops, eps: config.rmsNormEps, outputScale: config.residualMultiplier,
            attention: attention, feedForward: feedForward)
    }
}

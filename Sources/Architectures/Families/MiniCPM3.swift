import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `minicpm3`'s config.json besides the sizes, with
/// MiniCPM3Config's defaults.
struct MiniCPM3Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    var mlpBias: Bool
    var latent: LatentAttentionSettings
    /// Multiplies the token embeddings.
    var scaleEmbedding: Double
    /// Each branch joins the stream × scale_depth / √num_hidden_layers; nil
    /// (null): √num_hidden_layers, a factor of 1.
    var scaleDepth: Double?
    /// The final hidden states are divided by hidden_size / dim_model_base;
    /// nil (null): hidden_size, a divisor of 1.
    var dimModelBase: Int?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case mlpBias = "mlp_bias"
        case hiddenSize = "hidden_size"
        case numAttentionHeads = "num_attention_heads"
        case scaleEmbedding = "scale_emb"
        case scaleDepth = "scale_depth"
        case dimModelBase = "dim_model_base"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        // v_head_dim absent or null is hidden_size / num_attention_heads
        // (DecoderDimensions refuses heads below 1 before this is used).
        let hidden = try c.decode(Int.self, forKey: .hiddenSize), heads = try c.decode(Int.self, forKey: .numAttentionHeads)
        latent = try LatentAttentionSettings(
            from: decoder,
            defaults: LatentAttentionSettings(
                qLoraRank: 768, kvLoraRank: 256, qkNopeHeadDim: 64, qkRopeHeadDim: 32, vHeadDim: heads > 0 ? hidden / heads : 0,
                ropeInterleave: false, attentionBias: false),
            nullValueWidthIsDefault: true)
        // MiniCPM3Attention rotates each rope part's halves (rotate_half) and reads no rope_interleave.
        latent.ropeInterleave = false
        scaleEmbedding = c.contains(.scaleEmbedding) ? try c.decode(Double.self, forKey: .scaleEmbedding) : 12
        scaleDepth = c.contains(.scaleDepth) ? try c.decodeIfPresent(Double.self, forKey: .scaleDepth) : 1.4
        dimModelBase = c.contains(.dimModelBase) ? try c.decodeIfPresent(Int.self, forKey: .dimModelBase) : 256
    }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try latent.check(d)
        for (value, key) in [(scaleEmbedding, "scale_emb"), (scaleDepth ?? 1, "scale_depth")] {
            guard value.isFinite, Float(value).isFinite else {
                throw InvalidConfigValue(key: key, problem: "must be a finite number that float32 holds, got \(value)")
            }
        }
        if dimModelBase == 0 {
            throw InvalidConfigValue(key: "dim_model_base", problem: "must not be 0 (MiniCPM3ForCausalLM divides by hidden_size / dim_model_base)")
        }
    }

    /// The branch multiplier scale_depth / √layers, as the layer rounds it to float32.
    func residualScale(layers: Int) -> Float {
        scaleDepth.map { Float($0 / Double(layers).squareRoot()) } ?? 1
    }

    /// hidden_size / dim_model_base, which divides the final hidden states.
    func logitDivisor(hidden: Int) -> Float {
        dimModelBase.map { Float(Double(hidden) / Double($0)) } ?? 1
    }
}

/// MiniCPM3 (OpenBMB, transformers' models/minicpm3/): Llama's pre-RMSNorm
/// blocks with DeepSeek-V2's multi-head latent attention
/// (`LatentAttentionSettings`: q_a_proj / q_b_proj or q_proj,
/// kv_a_proj_with_mqa, kv_b_proj; the softmax scale grown by YaRN's
/// `mscale_all_dim`) rotating each head's last `qk_rope_head_dim` columns
/// by halves, as Llama does, not DeepSeek's interleaved pairs; a dense
/// SwiGLU MLP; and MiniCPM's µP scalings —
///
///     X₀ = scale_emb · E[token],
///     H = X + s · Attn(RMSNorm X),   Y = H + s · MLP(RMSNorm H),   s = scale_depth / √L,
///     logits = lm_head(RMSNorm(Y_L) / (hidden_size / dim_model_base)).
///
/// The branch scale belongs to the branch: the importances compare the
/// stream before and after the scaled branch is added; an export without
/// some blocks rewrites `scale_depth` so the kept branches keep it. Tied
/// by default.
struct MiniCPM3Model: DecoderFamily {
    let parts: DecoderParts
    let config: MiniCPM3Configuration
    let rotary: RotaryEmbedding
    let scale: Float

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming)
        let config = try parts.config(MiniCPM3Configuration.self)
        self.config = config
        try ConfigRules.checks(path: parts.configPath) { [parts] in try config.check(parts.dimensions) }
        try config.latent.confirmShapes(parts)
        let rope = try parts.ropeSettings()
        // MiniCPM3Config sets head_dim to qk_rope_head_dim, which sizes the rotary table.
        rotary = try rope.embedding(headDim: parts.firstKeptAttention == nil ? 0 : config.latent.qkRopeHeadDim, configPath: parts.configPath)
        scale = try config.latent.scale(rope, configPath: parts.configPath)
    }

    /// An export without some blocks rescales `scale_depth` to the kept
    /// layer count (default included; a null one is a factor of 1 at any depth).
    var layerNaming: LayerNaming {
        var naming = parts.naming
        if let scaleDepth = config.scaleDepth { naming.depthScaledMultipliers["scale_depth"] = scaleDepth }
        return naming
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch, multiplier: Float(config.scaleEmbedding)) }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps),
            logitDivisor: config.logitDivisor(hidden: hiddenSize))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let activation = try parts.activation(config.hiddenAct ?? "silu")
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            outputScale: config.residualScale(layers: parts.dimensions.numHiddenLayers),
            attention: { try config.latent.attention(parts, layer: index, rotary: rotary, scale: scale) },
            feedForward: {
                try parts.weights.gatedMLP(
                    "layers.\(index).mlp.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize, activation: activation,
                    bias: config.mlpBias)
            })
    }
}

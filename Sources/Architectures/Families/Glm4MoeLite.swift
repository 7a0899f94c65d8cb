import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `glm4_moe_lite`'s or `deepseek_v32`'s config.json besides
/// the sizes, with Glm4MoeLiteConfig's or DeepseekV32Config's defaults
/// (DeepseekV32Config derives from Glm4MoeLiteConfig).
struct Glm4MoeLiteConfiguration: Decodable {
    /// DeepSeek-V3.2's (`deepseek_v32`): sparse attention, 3 dense layers by default.
    var isDeepseekV32: Bool
    var rmsNormEps: Double
    var hiddenAct: String
    var latent: LatentAttentionSettings
    /// Each layer's MLP, "dense" or "sparse"; nil: the first
    /// `first_k_dense_replace` layers dense (1 for glm4_moe_lite, which does
    /// not read the key), the others sparse.
    var mlpLayerTypes: [String]?
    var firstKDenseReplace: Int
    /// The routed layers' keys.
    var experts: DeepSeekExperts
    /// DeepSeek Sparse Attention's indexer (`deepseek_v32`): `index_topk`
    /// keys per query, `index_n_heads` heads of `index_head_dim`.
    var indexTopk: Int?
    var indexHeadDim: Int
    var indexNHeads: Int
    /// `layer_types` (`deepseek_v32`): every layer "indexed_attention".
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case mlpLayerTypes = "mlp_layer_types"
        case firstKDenseReplace = "first_k_dense_replace"
        case qkRopeHeadDim = "qk_rope_head_dim"
        case headDim = "head_dim"
        case indexTopk = "index_topk"
        case indexHeadDim = "index_head_dim"
        case indexNHeads = "index_n_heads"
        case layerTypes = "layer_types"
    }

    /// Glm4MoeLiteConfig's latent attention defaults.
    static let latentDefaults = LatentAttentionSettings(
        qLoraRank: 768, kvLoraRank: 512, qkNopeHeadDim: 192, qkRopeHeadDim: 64, vHeadDim: 256, ropeInterleave: true,
        attentionBias: false)
    /// DeepseekV32Config's.
    static let deepseekV32LatentDefaults = LatentAttentionSettings(
        qLoraRank: 1536, kvLoraRank: 512, qkNopeHeadDim: 128, qkRopeHeadDim: 64, vHeadDim: 128, ropeInterleave: true,
        attentionBias: false)

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let v32 = try c.decode(String.self, forKey: .modelType) == "deepseek_v32"
        isDeepseekV32 = v32
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? (v32 ? 1e-6 : 1e-5)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        latent = try LatentAttentionSettings(from: decoder, defaults: v32 ? Self.deepseekV32LatentDefaults : Self.latentDefaults)
        // Glm4MoeLiteConfig maps head_dim onto qk_rope_head_dim, set over the field;
        // DeepseekV32Config sets head_dim to qk_rope_head_dim instead.
        let rope = try c.decodeIfPresent(Int.self, forKey: .qkRopeHeadDim)
        let headDim = v32 ? nil : try c.decodeIfPresent(Int.self, forKey: .headDim)
        if let headDim { latent.qkRopeHeadDim = headDim }
        // DeepseekV32Attention rotates interleaved pairs whatever rope_interleave says.
        if v32 { latent.ropeInterleave = true }
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        firstKDenseReplace = v32 ? try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? 3 : 1
        experts = try DeepSeekExperts(from: decoder, configClass: v32 ? .deepseekV32 : .glm4MoeLite)
        indexTopk = v32 ? try c.decodeIfPresent(Int.self, forKey: .indexTopk) ?? 2048 : nil
        indexHeadDim = try c.decodeIfPresent(Int.self, forKey: .indexHeadDim) ?? 128
        indexNHeads = try c.decodeIfPresent(Int.self, forKey: .indexNHeads) ?? 64
        layerTypes = v32 ? try c.decodeIfPresent([String].self, forKey: .layerTypes) : nil
        let types = mlpLayerTypes
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let rope, let headDim, rope != headDim {
                throw InvalidConfigValue(key: "head_dim", problem: "is \(headDim), but qk_rope_head_dim (the same setting) is \(rope)")
            }
            try MLPLayerTypes.checkEntries(types)
        }
    }

    /// The first kept attention's indexer projections against the config,
    /// before anything is sized from them.
    func confirmIndexerShapes(_ parts: DecoderParts) throws {
        guard indexTopk != nil, let rank = latent.qLoraRank, let layer = parts.firstKeptAttention else { return }
        let p = "layers.\(layer).self_attn.indexer.", weights = parts.weights, d = parts.dimensions.hiddenSize
        for (name, shape, keys) in [
            ("wq_b.weight", [indexNHeads * indexHeadDim, rank], "index_n_heads × index_head_dim, q_lora_rank"),
            ("wk.weight", [indexHeadDim, d], "index_head_dim, hidden_size"),
            ("weights_proj.weight", [indexNHeads, d], "index_n_heads, hidden_size"),
        ] {
            try weights.confirmShape(p + name, shape, keys: keys, configPath: parts.configPath)
        }
    }

    /// Each layer's MLP type for `layers` layers (Glm4MoeLiteConfig's rule when unset).
    func layerTypes(_ layers: Int) -> [String] {
        MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: firstKDenseReplace)
    }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        try latent.check(d)
        try ConfigRules.nonNegative(firstKDenseReplace, "first_k_dense_replace")
        if let indexTopk {
            // DeepseekV32Attention has no direct q_proj: the indexer reads the query latent.
            guard latent.qLoraRank != nil else {
                throw InvalidConfigValue(key: "q_lora_rank", problem: "must be set: DeepSeek-V3.2's attention and indexer read the query latent")
            }
            // No key kept would leave a query nothing to attend to.
            try ConfigRules.count(indexTopk, "index_topk")
            try ConfigRules.count(indexNHeads, "index_n_heads")
            try ConfigRules.count(indexHeadDim, "index_head_dim")
            guard indexHeadDim >= latent.qkRopeHeadDim else {
                throw InvalidConfigValue(
                    key: "index_head_dim", problem: "must be at least qk_rope_head_dim \(latent.qkRopeHeadDim) (the indexer rotates that many columns), got \(indexHeadDim)")
            }
            try ConfigRules.product([(indexNHeads, "index_n_heads"), (indexHeadDim, "index_head_dim"), (latent.qLoraRank!, "q_lora_rank")])
            try ConfigRules.product([(indexHeadDim, "index_head_dim"), (d.hiddenSize, "hidden_size")])
            try ConfigRules.product([(indexNHeads, "index_n_heads"), (d.hiddenSize, "hidden_size")])
            // transformers' cache builds an indexed layer per entry; any other type has no indexer keys.
            if let layerTypes {
                if let other = layerTypes.first(where: { $0 != "indexed_attention" }) {
                    throw InvalidConfigValue(key: "layer_types", problem: "must list \"indexed_attention\" per layer, got \"\(other.forErrorMessage)\"")
                }
                if layerTypes.count < d.numHiddenLayers {
                    throw InvalidConfigValue(key: "layer_types", problem: "lists \(layerTypes.count) layers, but num_hidden_layers is \(d.numHiddenLayers)")
                }
            }
        }
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers)
        guard layerTypes(d.numHiddenLayers).prefix(d.numHiddenLayers).contains("sparse") else { return }
        try experts.check(hidden: d.hiddenSize)
    }
}

/// GLM-4.7-Flash (`glm4_moe_lite`; transformers' `models/glm4_moe_lite/`):
/// GLM-4.5's pre-RMSNorm blocks with DeepSeek-V3's multi-head latent
/// attention (`LatentAttentionSettings`; the rotary table is
/// `qk_rope_head_dim` (which `head_dim` names) times `partial_rotary_factor`,
/// default 1, which must rotate all of it; the softmax scale grown by YaRN's
/// `mscale_all_dim`), a dense SwiGLU MLP on the `mlp_layer_types` layers
/// marked "dense" (by default layer 0 alone) and GLM-4.5's mixture of
/// experts on the "sparse" ones (`GroupRoutedMixture`: DeepSeek-V3's sigmoid
/// group-limited routing with `gate.e_score_correction_bias` and
/// `n_shared_experts` shared experts). The MLP module is router, routed and
/// shared experts together: dropping the MLP drops all of it.
/// Multi-token-prediction layers (`num_nextn_predict_layers`, layer 47 of
/// the release) are not run.
///
/// Routed experts are read per expert (`mlp.experts.<e>.gate_proj|up_proj|
/// down_proj`, as the released checkpoints and `save_pretrained` write
/// them) or fused (`mlp.experts.gate_up_proj` / `down_proj`).
///
/// DeepSeek-V3.2 (`deepseek_v32`; transformers' `models/deepseek_v32/`,
/// whose config and decoder layer derive from these) is the same model with
/// DeepseekV32Config's defaults — the first `first_k_dense_replace` (3)
/// layers dense unless `mlp_layer_types` says otherwise, head_dim not read,
/// rope pairs always interleaved, the low-rank query path required — and
/// DeepSeek Sparse Attention: each attention's lightning indexer
/// (`self_attn.indexer.wq_b|wk|k_norm|weights_proj`,
/// `SparseAttentionIndexer`, its rope non-interleaved) chooses the
/// `index_topk` keys each query attends to. Dropping the attention drops
/// its indexer.
struct Glm4MoeLiteModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { modelType == "deepseek_v32" }
    let parts: DecoderParts
    let config: Glm4MoeLiteConfiguration
    let types: [String]
    let rotary: RotaryEmbedding
    let scale: Float

    init(_ checkpoint: Checkpoint) throws {
        let predictionLayers = try checkpoint.decodeConfig(MultiTokenPredictionLayers.self).count
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(Glm4MoeLiteConfiguration.self)
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self).numHiddenLayers
        let types = config.layerTypes(layers)
        self.config = config
        self.types = types
        let isSparse: @Sendable (Int) -> Bool = { $0 < types.count && types[$0] == "sparse" }
        parts = try DecoderParts(
            checkpoint, naming: LlamaModel.naming, extraLayers: predictionLayers,
            experts: config.experts.naming(isSparse: isSparse))
        let d = parts.dimensions, configPath = parts.configPath, latent = config.latent
        try ConfigRules.checks(path: configPath) { try config.check(d) }
        try latent.confirmShapes(parts)
        try config.experts.confirm(parts, isSparse: isSparse)
        try config.confirmIndexerShapes(parts)
        let rope = try parts.ropeSettings()
        let kept = parts.firstKeptAttention != nil
        let factor = rope.partialRotaryFactor ?? 1, width = Int(min(Double(latent.qkRopeHeadDim) * factor, Double(Int.max / 2)))
        if !rope.partialRotaryFactorIsNull, width + width % 2 != latent.qkRopeHeadDim {
            throw InvalidConfigValue(
                key: rope.partialRotaryKey,
                problem: "is \(factor): a rotary table int(qk_rope_head_dim \(latent.qkRopeHeadDim) × \(factor)) = \(width) wide, but Glm4MoeLiteAttention rotates all \(latent.qkRopeHeadDim) rope columns"
            ).error(path: configPath)
        }
        // No table when the config drops every attention layer: no tensor confirmed its width.
        rotary = try rope.embedding(
            headDim: kept ? latent.qkRopeHeadDim : 0, partialRotary: .honoured(default: 1), configPath: configPath)
        scale = try latent.scale(rope, configPath: configPath)
    }

    func isSparse(_ index: Int) -> Bool { index < types.count && types[index] == "sparse" }

    /// An export without some blocks writes `mlp_layer_types` for the kept
    /// layers also where config.json leaves it to the class's rule.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.mlpLayerTypes = Array(types.prefix(layerCount))
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: {
                try config.latent.attention(parts, layer: index, rotary: rotary, scale: scale, indexer: try indexer(layer: index))
            },
            feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s sparse-attention indexer (`deepseek_v32`; nil otherwise).
    func indexer(layer index: Int) throws -> SparseAttentionIndexer? {
        guard let topK = config.indexTopk, let rank = config.latent.qLoraRank else { return nil }
        let p = "layers.\(index).self_attn.indexer.", weights = parts.weights, d = hiddenSize
        let heads = config.indexNHeads, dim = config.indexHeadDim
        return SparseAttentionIndexer(
            queryUp: try weights.linear(p + "wq_b", in: rank, out: heads * dim, bias: false),
            key: try weights.linear(p + "wk", in: d, out: dim, bias: false),
            keyNorm: try weights.layerNorm(p + "k_norm", size: dim, eps: 1e-6),
            headWeights: try weights.linear(p + "weights_proj", in: d, out: heads, bias: false),
            heads: heads, dim: dim, topK: topK, rotary: rotary)
    }

    /// Layer `index`'s MLP: dense, or router, routed experts and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        try config.experts.feedForward(parts, layer: index, sparse: isSparse(index), activation: try parts.activation(config.hiddenAct))
    }
}

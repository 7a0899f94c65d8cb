import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `glm4_moe_lite`'s, `deepseek_v32`'s, `glm_moe_dsa`'s,
/// `axk1`'s, `axk2`'s or `mistral_large4_text`'s config.json besides the
/// sizes, with their config class's defaults (DeepseekV32Config derives from
/// Glm4MoeLiteConfig, GlmMoeDsaConfig and AXK2Config from DeepseekV32Config,
/// MistralLarge4TextConfig from GlmMoeDsaConfig).
struct Glm4MoeLiteConfiguration: Decodable {
    /// What distinguishes the config classes.
    struct ConfigClass {
        var latentDefaults: LatentAttentionSettings
        var experts: DeepSeekExperts.ConfigClass
        var rmsNormEps: Double
        /// `first_k_dense_replace`'s default; nil: not read (layer 0 dense).
        var firstKDenseReplace: Int?
        /// DeepSeek Sparse Attention's `index_topk`, `index_head_dim` and
        /// `index_n_heads` defaults; nil: no indexer.
        var indexer: (topK: Int, headDim: Int, heads: Int)?
        /// Whether the indexer rotates interleaved pairs (GlmMoeDsaIndexer).
        var indexerRopeInterleave = false
        /// A.X K1's: the routed MLP ends at an RMSNorm (`post_mlp_layernorm`,
        /// saved beside the MLP), the low-rank query path is required,
        /// `head_dim` is not read, and the legacy `first_k_dense_replace` /
        /// `moe_layer_freq` give the MLP types when `mlp_layer_types` is absent.
        var axk1 = false
        /// A.X K2's (`AXK2.swift`): A.X K1's legacy MLP types on
        /// DeepSeek-V3.2's layers, with the queries and an output gate fused
        /// in `q_gate_proj`, gated input norms (`gated_norm_rank`) and A.X
        /// K2's router.
        var axk2 = false
        /// Whether the rotary embedding reads `partial_rotary_factor`
        /// (Glm4MoeLiteRotaryEmbedding does; DeepSeek-V3.2's, GLM-5's and
        /// A.X K1/K2's rotate the whole rope part whatever it says).
        var readsPartialRotaryFactor = false
        /// Mistral Large 4's (`MistralLarge4.swift`): no low-rank query path
        /// (`q_lora_rank` not read), the indexer's queries read from the layer
        /// input (wq_b [index_n_heads × index_head_dim, hidden_size]), the
        /// routed weights always renormalised (`norm_topk_prob` not read).
        var indexerReadsInput = false

        /// Whether the legacy `first_k_dense_replace` / `moe_layer_freq`
        /// give the MLP types when `mlp_layer_types` is absent.
        var readsMoeLayerFrequency: Bool { axk1 || axk2 }

        static let glm4MoeLite = ConfigClass(
            latentDefaults: LatentAttentionSettings(
                qLoraRank: 768, kvLoraRank: 512, qkNopeHeadDim: 192, qkRopeHeadDim: 64, vHeadDim: 256, ropeInterleave: true,
                attentionBias: false),
            experts: .glm4MoeLite, rmsNormEps: 1e-5, firstKDenseReplace: nil, indexer: nil, readsPartialRotaryFactor: true)
        static let deepseekV32 = ConfigClass(
            latentDefaults: LatentAttentionSettings(
                qLoraRank: 1536, kvLoraRank: 512, qkNopeHeadDim: 128, qkRopeHeadDim: 64, vHeadDim: 128, ropeInterleave: true,
                attentionBias: false),
            experts: .deepseekV32, rmsNormEps: 1e-6, firstKDenseReplace: 3, indexer: (2048, 128, 64))
        static let glmMoeDsa = ConfigClass(
            latentDefaults: LatentAttentionSettings(
                qLoraRank: 2048, kvLoraRank: 512, qkNopeHeadDim: 192, qkRopeHeadDim: 64, vHeadDim: 256, ropeInterleave: true,
                attentionBias: false),
            experts: .glmMoeDsa, rmsNormEps: 1e-5, firstKDenseReplace: 3, indexer: (2048, 128, 32), indexerRopeInterleave: true)
        static let axk1 = ConfigClass(
            latentDefaults: LatentAttentionSettings(
                qLoraRank: 1536, kvLoraRank: 512, qkNopeHeadDim: 128, qkRopeHeadDim: 64, vHeadDim: 128, ropeInterleave: true,
                attentionBias: false),
            experts: .axk1, rmsNormEps: 1e-6, firstKDenseReplace: 1, indexer: nil, axk1: true)

        static let mistralLarge4 = ConfigClass(
            latentDefaults: LatentAttentionSettings(
                qLoraRank: nil, kvLoraRank: 512, qkNopeHeadDim: 64, qkRopeHeadDim: 64, vHeadDim: 128, ropeInterleave: true,
                attentionBias: false),
            experts: .mistralLarge4, rmsNormEps: 1e-5, firstKDenseReplace: 1, indexer: (2048, 128, 32), indexerRopeInterleave: true,
            readsPartialRotaryFactor: true, indexerReadsInput: true)

        static func of(_ modelType: String) -> ConfigClass {
            switch modelType {
            case "mistral_large4", "mistral_large4_text": mistralLarge4
            case "deepseek_v32": deepseekV32
            case "glm_moe_dsa": glmMoeDsa
            case "axk1": axk1
            case "axk2": axk2
            default: glm4MoeLite
            }
        }
    }

    let configClass: ConfigClass
    var rmsNormEps: Double
    var hiddenAct: String
    var latent: LatentAttentionSettings
    /// Each layer's MLP, "dense" or "sparse"; nil: the first
    /// `first_k_dense_replace` layers dense (1 for glm4_moe_lite, which does
    /// not read the key), the others sparse.
    var mlpLayerTypes: [String]?
    var firstKDenseReplace: Int
    /// A.X K1's legacy `moe_layer_freq`: of the layers from
    /// `first_k_dense_replace` on, those whose index it divides are sparse.
    var moeLayerFrequency = 1
    /// The routed layers' keys.
    var experts: DeepSeekExperts
    /// DeepSeek Sparse Attention's indexer (`deepseek_v32`, `glm_moe_dsa`):
    /// `index_topk` keys per query, `index_n_heads` heads of `index_head_dim`.
    var indexTopk: Int?
    var indexHeadDim: Int
    var indexNHeads: Int
    /// `layer_types` (with an indexer): every layer "indexed_attention".
    var layerTypes: [String]?
    /// GLM-5's indexer type of each layer, as GlmMoeDsaConfig resolves it:
    /// "full" layers run their indexer, "shared" ones reuse the previous
    /// full layer's choice.
    var indexerTypes: IndexerTypes?
    /// A.X K2's `gated_norm_rank`: the width of the gated norms' gates (0 for the others).
    var gatedNormRank = 0

    enum IndexerTypes {
        /// `indexer_types`, or `index_topk_pattern`, and the key.
        case listed([String], key: String)
        /// Full where max(i − `index_skip_topk_offset` + 1, 0) is a multiple
        /// of `index_topk_freq` (at least 1).
        case every(freq: Int, offset: Int)

        /// GlmMoeDsaConfig's rule (GLM-5's, GLM-5-Next's): `indexer_types`, else
        /// `index_topk_pattern` ("F"/"S" per layer, or the names), else every
        /// `index_topk_freq`-th layer from `index_skip_topk_offset`.
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            if let types = try c.decodeIfPresent([String].self, forKey: .indexerTypes) {
                self = .listed(types, key: "indexer_types")
            } else if let pattern = try? c.decode(String.self, forKey: .indexTopkPattern) {
                // GlmMoeDsaConfig maps every character, past the last layer too: any but F and S fails (KeyError).
                if let other = pattern.first(where: { $0 != "F" && $0 != "S" }) {
                    throw DecodingError.dataCorruptedError(
                        forKey: .indexTopkPattern, in: c,
                        debugDescription: "holds \"\(String(other).forErrorMessage)\", which GlmMoeDsaConfig cannot map: each character is F (full) or S (shared)")
                }
                self = .listed(pattern.map { $0 == "F" ? "full" : "shared" }, key: "index_topk_pattern")
            } else if let pattern = try c.decodeIfPresent([String].self, forKey: .indexTopkPattern) {
                self = .listed(pattern, key: "index_topk_pattern")
            } else {
                // Read with dict.get's default: a written null reaches max() and the arithmetic (TypeError).
                func written(_ key: CodingKeys, absent: Int) throws -> Int {
                    guard c.contains(key) else { return absent }
                    guard let value = try c.decodeIfPresent(Int.self, forKey: key) else {
                        throw DecodingError.dataCorruptedError(
                            forKey: key, in: c, debugDescription: "is null, which GlmMoeDsaConfig cannot compute the indexer types from")
                    }
                    return value
                }
                self = .every(freq: max(try written(.indexTopkFreq, absent: 1), 1), offset: try written(.indexSkipTopkOffset, absent: 2))
            }
        }

        /// The key the types come from, for errors.
        var key: String {
            switch self {
            case .listed(_, let key): key
            case .every: "index_topk_freq"
            }
        }

        /// Layer `index`'s type; nil past a list's end.
        func type(_ index: Int) -> String? {
            switch self {
            case .listed(let types, _): return index < types.count ? types[index] : nil
            case .every(let freq, let offset):
                // Python's integers: no overflow, whatever the offset.
                return max(Int128(index) - Int128(offset) + 1, 0) % Int128(freq) == 0 ? "full" : "shared"
            }
        }
    }

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case mlpLayerTypes = "mlp_layer_types"
        case firstKDenseReplace = "first_k_dense_replace"
        case moeLayerFrequency = "moe_layer_freq"
        case qkRopeHeadDim = "qk_rope_head_dim"
        case headDim = "head_dim"
        case indexTopk = "index_topk"
        case indexHeadDim = "index_head_dim"
        case indexNHeads = "index_n_heads"
        case layerTypes = "layer_types"
        case indexerTypes = "indexer_types"
        case indexTopkPattern = "index_topk_pattern"
        case indexTopkFreq = "index_topk_freq"
        case indexSkipTopkOffset = "index_skip_topk_offset"
        case gatedNormRank = "gated_norm_rank"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let configClass = ConfigClass.of(try c.decode(String.self, forKey: .modelType))
        let indexed = configClass.indexer != nil
        self.configClass = configClass
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? configClass.rmsNormEps
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        latent = try LatentAttentionSettings(from: decoder, defaults: configClass.latentDefaults)
        // Glm4MoeLiteConfig maps head_dim onto qk_rope_head_dim, set over the field;
        // DeepseekV32Config sets head_dim to qk_rope_head_dim instead.
        let rope = try c.decodeIfPresent(Int.self, forKey: .qkRopeHeadDim)
        // (AXK1Config, too, sets head_dim to qk_rope_head_dim.)
        let headDim = indexed || configClass.axk1 ? nil : try c.decodeIfPresent(Int.self, forKey: .headDim)
        if let headDim { latent.qkRopeHeadDim = headDim }
        // DeepseekV32Attention rotates interleaved pairs whatever rope_interleave says.
        if indexed { latent.ropeInterleave = true }
        if configClass.axk2 {
            latent.fusedQueryGate = true
            gatedNormRank = try c.decodeIfPresent(Int.self, forKey: .gatedNormRank) ?? 16
        }
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        firstKDenseReplace = try configClass.firstKDenseReplace.map { try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? $0 } ?? 1
        if configClass.readsMoeLayerFrequency { moeLayerFrequency = try c.decodeIfPresent(Int.self, forKey: .moeLayerFrequency) ?? 1 }
        experts = try DeepSeekExperts(from: decoder, configClass: configClass.experts)
        if configClass.indexerReadsInput {
            // MistralLarge4TextConfig removes q_lora_rank and norm_topk_prob: q_proj, always renormalised.
            latent.qLoraRank = nil
            experts.normTopkProb = true
        }
        indexTopk = try configClass.indexer.map { try c.decodeIfPresent(Int.self, forKey: .indexTopk) ?? $0.topK }
        indexHeadDim = try c.decodeIfPresent(Int.self, forKey: .indexHeadDim) ?? configClass.indexer?.headDim ?? 0
        indexNHeads = try c.decodeIfPresent(Int.self, forKey: .indexNHeads) ?? configClass.indexer?.heads ?? 0
        layerTypes = indexed ? try c.decodeIfPresent([String].self, forKey: .layerTypes) : nil
        if configClass.indexerRopeInterleave {
            indexerTypes = try IndexerTypes(from: decoder)
        }
        let types = mlpLayerTypes
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let rope, let headDim, rope != headDim {
                throw InvalidConfigValue(key: "head_dim", problem: "is \(headDim), but qk_rope_head_dim (the same setting) is \(rope)")
            }
            try MLPLayerTypes.checkEntries(types)
        }
    }

    /// Refuses DeepSeek Sparse Attention's indexer sizes and layer lists
    /// transformers could not run (`index_topk`, `index_n_heads`,
    /// `index_head_dim` against `qk_rope_head_dim` and `q_lora_rank`; each
    /// of `types` "full" or "shared", layer 0 full; `layer_types` all
    /// "indexed_attention"), before anything is sized from them.
    static func checkIndexer(
        topK: Int, heads: Int, dim: Int, ropeDim: Int, queryRank: Int, types: IndexerTypes?, layerTypes: [String]?, _ d: DecoderDimensions
    ) throws {
        // No key kept would leave a query nothing to attend to.
        try ConfigRules.count(topK, "index_topk")
        try ConfigRules.count(heads, "index_n_heads")
        try ConfigRules.count(dim, "index_head_dim")
        guard dim >= ropeDim else {
            throw InvalidConfigValue(
                key: "index_head_dim", problem: "must be at least qk_rope_head_dim \(ropeDim) (the indexer rotates that many columns), got \(dim)")
        }
        try ConfigRules.product([(heads, "index_n_heads"), (dim, "index_head_dim"), (queryRank, "q_lora_rank")])
        try ConfigRules.product([(dim, "index_head_dim"), (d.hiddenSize, "hidden_size")])
        try ConfigRules.product([(heads, "index_n_heads"), (d.hiddenSize, "hidden_size")])
        if let types, let layer = (0..<d.numHiddenLayers).first(where: { !["full", "shared"].contains(types.type($0)) }) {
            throw InvalidConfigValue(
                key: types.key,
                problem: "gives layer \(layer) \(types.type(layer).map { "type \"\($0.forErrorMessage)\"" } ?? "no type"); "
                    + "each layer is \"full\" (runs its indexer) or \"shared\" (reuses the last full layer's top-k)")
        }
        if let types, types.type(0) == "shared" {
            // GlmMoeDsaAttention raises it: a shared layer needs an earlier full one.
            throw InvalidConfigValue(
                key: types.key, problem: "makes layer 0 \"shared\", but a shared layer reuses the top-k of an earlier \"full\" layer")
        }
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

    /// The first kept attention's indexer projections against the config,
    /// before anything is sized from them.
    func confirmIndexerShapes(_ parts: DecoderParts) throws {
        guard indexTopk != nil, let rank = configClass.indexerReadsInput ? parts.dimensions.hiddenSize : latent.qLoraRank else { return }
        try Self.confirmIndexerShapes(
            parts, sharesIndexer: sharesIndexer, heads: indexNHeads, dim: indexHeadDim, queryRank: rank,
            queryRankKey: configClass.indexerReadsInput ? "hidden_size" : "q_lora_rank")
    }

    /// The indexer projections of the first kept attention that runs one
    /// (`sharesIndexer` false) against `index_n_heads`, `index_head_dim` and `q_lora_rank`.
    static func confirmIndexerShapes(
        _ parts: DecoderParts, sharesIndexer: (Int) -> Bool, heads: Int, dim: Int, queryRank rank: Int, queryRankKey: String = "q_lora_rank"
    ) throws {
        let full = (0..<parts.dimensions.numHiddenLayers).first { !parts.configuredDrops.dropsAttention($0) && !sharesIndexer($0) }
        guard let layer = full else { return }
        let p = "layers.\(layer).self_attn.indexer.", weights = parts.weights, d = parts.dimensions.hiddenSize
        try weights.confirmShapes(
            [
                ("wq_b.weight", [heads * dim, rank], "index_n_heads × index_head_dim, \(queryRankKey)"),
                ("wk.weight", [dim, d], "index_head_dim, hidden_size"),
                ("weights_proj.weight", [heads, d], "index_n_heads, hidden_size"),
            ], prefix: p, configPath: parts.configPath)
    }

    /// Whether layer `index` reuses the last full layer's top-k instead of running an indexer (GLM-5's "shared").
    func sharesIndexer(_ index: Int) -> Bool { indexerTypes?.type(index) == "shared" }

    /// Each layer's MLP type for `layers` layers (the config class's rule when unset).
    func layerTypes(_ layers: Int) -> [String] {
        guard configClass.readsMoeLayerFrequency, mlpLayerTypes == nil else {
            return MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: firstKDenseReplace)
        }
        // AXK1Config, AXK2Config: sparse from first_k_dense_replace on where moe_layer_freq divides the index (checked non-zero).
        return (0..<layers).map { $0 >= firstKDenseReplace && $0 % max(moeLayerFrequency, 1) == 0 ? "sparse" : "dense" }
    }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        try latent.check(d)
        try ConfigRules.nonNegative(firstKDenseReplace, "first_k_dense_replace")
        if configClass.axk1 {
            // AXK1Attention always builds q_a_proj of q_lora_rank; AXK1Config takes the remainder by moe_layer_freq.
            guard latent.qLoraRank != nil else {
                throw InvalidConfigValue(key: "q_lora_rank", problem: "must be set: AXK1Attention always has the low-rank query path")
            }
        }
        if configClass.readsMoeLayerFrequency, mlpLayerTypes == nil, moeLayerFrequency == 0 {
            throw InvalidConfigValue(key: "moe_layer_freq", problem: "must not be 0: \(experts.configClass.name) takes each layer index modulo it")
        }
        if configClass.axk2 { try checkAXK2(d) }
        if let indexTopk {
            // DeepseekV32Attention has no direct q_proj: the indexer reads the query latent.
            guard let rank = configClass.indexerReadsInput ? d.hiddenSize : latent.qLoraRank else {
                throw InvalidConfigValue(key: "q_lora_rank", problem: "must be set: DeepSeek Sparse Attention's attention and indexer read the query latent")
            }
            try Self.checkIndexer(
                topK: indexTopk, heads: indexNHeads, dim: indexHeadDim, ropeDim: latent.qkRopeHeadDim, queryRank: rank,
                types: indexerTypes, layerTypes: layerTypes, d)
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
///
/// GLM-5 (`glm_moe_dsa`; transformers' `models/glm_moe_dsa/`) is
/// DeepSeek-V3.2's model with GlmMoeDsaConfig's defaults and an indexer
/// rotating interleaved pairs. By `indexer_types` (else
/// `index_topk_pattern`, else every `index_topk_freq`-th layer from
/// `index_skip_topk_offset`) a "shared" layer has no indexer and attends to
/// the keys the last "full" layer before it chose (`AttentionSharing`).
/// With modules dropped, a shared layer reuses the last full layer the
/// model keeps; a full layer whose attention is dropped still runs its
/// indexer for them (`TransformerBlock.sharingProducer`), as transformers'
/// layers pass the top-k on when an attention's output is zeroed.
///
/// A.X K1 (`axk1`; SK Telecom's, transformers' `models/axk1/`) is
/// DeepSeek-V3's model on this layout with AXK1Config's defaults: the
/// low-rank query path required, `mlp_layer_types` (else the legacy
/// `first_k_dense_replace`, 1, and `moe_layer_freq`, 1), and each routed
/// MLP's output normalised by `post_mlp_layernorm`, part of the MLP module.
///
/// A.X K2 (`axk2`; transformers' `models/axk2/`) is DeepSeek-V3.2's model
/// with a fused query and output-gate projection, gated norms and its own
/// router (`AXK2.swift`).
struct Glm4MoeLiteModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { ConfigClass.of(modelType).indexer != nil }
    typealias ConfigClass = Glm4MoeLiteConfiguration.ConfigClass
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
        if config.configClass.axk2 { try config.confirmGatedNormShapes(parts, isSparse: isSparse) }
        let rope = try parts.ropeSettings()
        let kept = parts.firstKeptAttention != nil
        let factor = rope.partialRotaryFactor ?? 1, width = RopeSettings.truncatedWidth(latent.qkRopeHeadDim, factor)
        let readsFactor = config.configClass.readsPartialRotaryFactor
        if readsFactor, !rope.partialRotaryFactorIsNull, width + width % 2 != latent.qkRopeHeadDim {
            throw InvalidConfigValue(
                key: rope.partialRotaryKey,
                problem: "is \(factor): a rotary table int(qk_rope_head_dim \(latent.qkRopeHeadDim) × \(factor)) = \(width) wide, but Glm4MoeLiteAttention rotates all \(latent.qkRopeHeadDim) rope columns"
            ).error(path: configPath)
        }
        // No table when the config drops every attention layer: no tensor confirmed its width.
        rotary = try rope.embedding(
            headDim: kept ? latent.qkRopeHeadDim : 0, partialRotary: readsFactor ? .honoured(default: 1) : .ignored, configPath: configPath)
        scale = try latent.scale(rope, configPath: configPath)
    }

    func isSparse(_ index: Int) -> Bool { index < types.count && types[index] == "sparse" }

    /// An export without some blocks writes `mlp_layer_types` (and GLM-5's
    /// `indexer_types`) for the kept layers also where config.json leaves
    /// them to the class's rule.
    var layerNaming: LayerNaming {
        var naming = parts.naming(spellingOut: nil, mlpTypes: types)
        if let indexerTypes = config.indexerTypes {
            naming.perLayerLists["indexer_types"] = (0..<layerCount).map { indexerTypes.type($0) ?? "full" }
        }
        if config.configClass.axk1 { naming.mlp.append("post_mlp_layernorm.") }
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), sharing = try attentionSharing(skipping: plan).keySelections
        let mine = sharing.isEmpty ? nil : sharing[index]
        func attention() throws -> SelfAttention {
            try config.latent.attention(parts, layer: index, rotary: rotary, scale: scale, indexer: try indexer(layer: index))
                .sharingKeySelection(mine)
        }
        if config.configClass.axk2 { return try gatedNormBlock(index, drops: drops, attention: attention) }
        let block = try parts.preNormBlock(
            index, drops: drops, eps: config.rmsNormEps, attention: attention, feedForward: { try feedForward(layer: index) })
        guard drops.dropsAttention(index), mine?.storesOnly == true else { return block }
        return TransformerBlock(
            attention: nil, mlp: block.mlp, residual: block.residual,
            sharingProducer: AttentionBranch(
                inputNorm: try parts.weights.rmsNorm("layers.\(index).input_layernorm", size: hiddenSize, eps: config.rmsNormEps),
                attention: try attention()))
    }

    /// GLM-5's shared indexer layers with `plan`'s modules dropped (`LayerSharing.sharedIndexers`).
    /// - Throws: `DroptraceError` when `plan` leaves a shared layer no full layer before it.
    func attentionSharing(skipping plan: DropPlan) throws -> LayerSharing {
        try LayerSharing.sharedIndexers(
            layers: layerCount, isShared: config.sharesIndexer, drops: plan.union(configuredDrops), key: config.indexerTypes?.key ?? "",
            configPath: parts.configPath)
    }

    /// Attention-drop exports (LLM-Drop's format) leave out a dropped
    /// attention's indexer, which shared layers after it still reuse here.
    func exportProblem(_ plan: DropPlan) -> String? {
        (try? attentionSharing(skipping: plan))?.sharedIndexerExportProblem(key: config.indexerTypes?.key ?? "")
    }

    /// Layer `index`'s sparse-attention indexer (`deepseek_v32`,
    /// `glm_moe_dsa`; nil otherwise, and on GLM-5's shared layers); GLM-5's
    /// rotates interleaved pairs.
    func indexer(layer index: Int) throws -> SparseAttentionIndexer? {
        guard let topK = config.indexTopk, let rank = config.latent.qLoraRank, !config.sharesIndexer(index) else { return nil }
        return try SparseAttentionIndexer(
            parts.weights, "layers.\(index).self_attn.indexer.", queryRank: rank, hidden: hiddenSize, heads: config.indexNHeads,
            dim: config.indexHeadDim, topK: topK, rotary: rotary, interleaved: config.configClass.indexerRopeInterleave)
    }

    /// Layer `index`'s MLP: dense, or router, routed experts and shared
    /// experts (A.X K1's then normalised by `post_mlp_layernorm`, stored
    /// beside the MLP or, as transformers renames it, inside).
    func feedForward(layer index: Int) throws -> FeedForward {
        let mlp = try config.experts.feedForward(parts, layer: index, sparse: isSparse(index), activation: try parts.activation(config.hiddenAct))
        guard config.configClass.axk1, isSparse(index) else { return mlp }
        let p = "layers.\(index).", weights = parts.weights
        let name = try weights.storedModule(p, saved: "post_mlp_layernorm", renamed: "mlp.post_mlp_layernorm")
        let norm = try weights.rmsNorm(p + name, size: hiddenSize, eps: config.rmsNormEps)
        return .parallel([FeedForwardPart(inputNorm: nil, feedForward: mlp, outputNorm: norm)])
    }
}

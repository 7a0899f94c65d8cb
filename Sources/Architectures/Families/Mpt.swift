import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `mpt`, with MptConfig's and MptAttentionConfig's defaults
/// for the keys it omits; the attention's settings are nested under
/// `attn_config` (null or absent: all defaults). Decoding refuses sizes that
/// cannot describe a model (`ConfigRules`) and the settings transformers'
/// MptModel does not run although MosaicML's code does (it would score
/// another model than the checkpoint's): biases (`no_bias` false), q/k
/// LayerNorms (`attn_config.qk_ln`), multi-query attention
/// (`attn_config.attn_type`), no ALiBi (`attn_config.alibi` false), another
/// ALiBi maximum than the 8 MptModel always uses (`attn_config.alibi_bias_max`),
/// an MLP other than 4 × `d_model` wide (`expansion_ratio`).
struct MptConfiguration: Decodable {
    var dModel: Int
    var nHeads: Int
    var nLayers: Int
    var maxSeqLen: Int
    var vocabSize: Int
    var layerNormEpsilon: Double
    var tieWordEmbeddings: Bool
    /// q, k and v clamped to ±clip_qkv after Wqkv (null or 0: none).
    var clipQKV: Double?
    /// The softmax scale (null: 1 / √head_dim).
    var softmaxScale: Double?

    enum CodingKeys: String, CodingKey {
        case dModel = "d_model"
        case nHeads = "n_heads"
        case nLayers = "n_layers"
        case expansionRatio = "expansion_ratio"
        case maxSeqLen = "max_seq_len"
        case vocabSize = "vocab_size"
        case layerNormEpsilon = "layer_norm_epsilon"
        case noBias = "no_bias"
        case tieWordEmbeddings = "tie_word_embeddings"
        case attnConfig = "attn_config"
    }

    enum AttentionKeys: String, CodingKey {
        case attnType = "attn_type"
        case clipQKV = "clip_qkv"
        case softmaxScale = "softmax_scale"
        case qkLn = "qk_ln"
        case alibi
        case alibiBiasMax = "alibi_bias_max"
    }

    /// The ALiBi maximum transformers' MptModel builds its slopes with,
    /// whatever `alibi_bias_max` says.
    static let alibiBiasMax = 8.0

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dModel = try c.decodeIfPresent(Int.self, forKey: .dModel) ?? 2048
        nHeads = try c.decodeIfPresent(Int.self, forKey: .nHeads) ?? 16
        nLayers = try c.decodeIfPresent(Int.self, forKey: .nLayers) ?? 24
        let expansionRatio = try c.decodeIfPresent(Int.self, forKey: .expansionRatio) ?? 4
        maxSeqLen = try c.decodeIfPresent(Int.self, forKey: .maxSeqLen) ?? 2048
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? 50368
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? 1e-5
        let noBias = try c.decodeIfPresent(Bool.self, forKey: .noBias) ?? true
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        var attnType = "multihead_attention", qkLn = false, alibi = true, alibiBiasMax = Self.alibiBiasMax
        if c.contains(.attnConfig), try !c.decodeNil(forKey: .attnConfig) {
            let a = try c.nestedContainer(keyedBy: AttentionKeys.self, forKey: .attnConfig)
            attnType = try a.decodeIfPresent(String.self, forKey: .attnType) ?? attnType
            clipQKV = try a.decodeIfPresent(Double.self, forKey: .clipQKV)
            softmaxScale = try a.decodeIfPresent(Double.self, forKey: .softmaxScale)
            qkLn = try a.decodeIfPresent(Bool.self, forKey: .qkLn) ?? qkLn
            alibi = try a.decodeIfPresent(Bool.self, forKey: .alibi) ?? alibi
            alibiBiasMax = try a.decodeIfPresent(Double.self, forKey: .alibiBiasMax) ?? alibiBiasMax
        }
        let d = dModel, heads = nHeads, layers = nLayers, positions = maxSeqLen, vocabulary = vocabSize
        let eps = layerNormEpsilon, clip = clipQKV, scale = softmaxScale
        try ConfigRules.decodingChecks {
            try ConfigRules.count(d, "d_model")
            try ConfigRules.count(layers, "n_layers")
            try ConfigRules.divides(heads, "n_heads", d, "d_model")
            try ConfigRules.count(positions, "max_seq_len")
            try ConfigRules.count(vocabulary, "vocab_size")
            try ConfigRules.product([(d, "d_model"), (d, "d_model"), (4, "4 (the MLP's width over the model's)")])
            try ConfigRules.product([(vocabulary, "vocab_size"), (d, "d_model")])
            try ConfigRules.positive(eps, "layer_norm_epsilon")
            if let clip { try ConfigRules.bound(clip, "attn_config.clip_qkv") }
            if let scale, !Float(scale).isFinite {
                throw InvalidConfigValue(key: "attn_config.softmax_scale", problem: "must be a number float32 holds, got \(scale)")
            }
            let unrun = "which transformers' MptModel does not run (it would score another model than the checkpoint's)"
            if expansionRatio != 4 {
                throw InvalidConfigValue(key: "expansion_ratio", problem: "is \(expansionRatio); MptMLP is 4 × d_model wide, \(unrun)")
            }
            if !noBias { throw InvalidConfigValue(key: "no_bias", problem: "is false: biases, \(unrun)") }
            if qkLn { throw InvalidConfigValue(key: "attn_config.qk_ln", problem: "is true: q/k LayerNorms, \(unrun)") }
            if attnType != "multihead_attention" {
                throw InvalidConfigValue(key: "attn_config.attn_type", problem: "is \"\(attnType)\", \(unrun)")
            }
            if !alibi { throw InvalidConfigValue(key: "attn_config.alibi", problem: "is false: no ALiBi, \(unrun)") }
            if alibiBiasMax != Self.alibiBiasMax {
                throw InvalidConfigValue(
                    key: "attn_config.alibi_bias_max", problem: "is \(alibiBiasMax); MptModel builds its slopes with 8, \(unrun)")
            }
        }
    }
}

/// MPT (MPT-7B, MPT-30B), as transformers' models/mpt/modeling_mpt.py runs
/// it: no position embedding but ALiBi with MPT's slopes (1 / 2^(8i/n) for
/// the n ≥ heads power of two, the odd-numbered first when heads < n),
/// each key's bias slope · (j − last key) as MPT slices its table;
/// pre-LayerNorm blocks whose norms have no bias, a fused `Wqkv` (q | k | v)
/// and `out_proj` without biases, q/k/v clamped by `clip_qkv`, the softmax
/// scale `softmax_scale` (1 / √head_dim by default), the MLP
/// `down_proj(gelu(up_proj x))` 4 × d_model wide, a head tied to `wte`.
struct MptModel: RegisteredModel {
    public let checkpoint: Checkpoint
    let config: MptConfiguration
    let weights: Weights
    let alibi: ALiBi

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        config = try checkpoint.decodeConfig(MptConfiguration.self)
        configuredDrops = try DropPlan(config: checkpoint, layerCount: config.nLayers)
        weights = try Weights(
            checkpoint, probe: "wte.weight", candidates: ["transformer.", ""],
            tiedHead: config.tieWordEmbeddings ? ["lm_head.weight"] : [])
        try weights.confirmLayers(Self.naming(weights.prefix), count: config.nLayers, drops: configuredDrops, configPath: configPath)
        try weights.confirmShape("wte.weight", [config.vocabSize, config.dModel], keys: "vocab_size, d_model", configPath: configPath)
        try weights.confirmStoredOutputShapes(hidden: config.dModel, vocabulary: config.vocabSize, finalNorm: "norm_f")
        alibi = ALiBi(slopesFromLastKey: ALiBi.mptSlopes(heads: config.nHeads, maxBias: MptConfiguration.alibiBiasMax))
    }

    public var modelType: String { "mpt" }
    public var layerCount: Int { config.nLayers }
    public var hiddenSize: Int { config.dModel }
    public var vocabularySize: Int { config.vocabSize }
    /// MptModel's ALiBi table has max_seq_len columns: longer sequences fail.
    public var maxPositions: Int { config.maxSeqLen }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let d = config.dModel
        return try gatherRows(try weights.tensor("wte.weight", [config.vocabSize, d]), ids: batch.tokenIDs, width: d)
    }

    public var layerNaming: LayerNaming { Self.naming(weights.prefix) }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(prefix: prefix + "blocks.", attention: ["attn.", "norm_1."], mlp: ["ffn.", "norm_2."], layerCountKeys: ["n_layers"])
    }

    public func head() throws -> OutputHead {
        let d = config.dModel
        return OutputHead(
            norm: try weights.layerNorm("norm_f", size: d, eps: config.layerNormEpsilon, bias: false),
            projection: try weights.head(tiedTo: "wte", tied: config.tieWordEmbeddings, hidden: d, vocabulary: config.vocabSize))
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = config.dModel, heads = config.nHeads, headDim = d / heads, eps = config.layerNormEpsilon
        let p = "blocks.\(index)."
        // MptAttention clips when clip_qkv is truthy: 0 is no clip.
        let clip = config.clipQKV.flatMap { $0 == 0 ? nil : Float($0) }
        func attention() throws -> SelfAttention { SelfAttention(
            qkv: try weights.linear(p + "attn.Wqkv", in: d, out: 3 * d, bias: false),
            layout: QKVLayout(numHeads: heads, numKVHeads: heads, headDim: headDim),
            rotary: nil,
            output: try weights.linear(p + "attn.out_proj", in: d, out: d, bias: false),
            scale: config.softmaxScale.map { Float($0) } ?? 1 / Float(Double(headDim).squareRoot()),
            clip: clip, alibi: alibi) }
        func feedForward() throws -> FeedForward { FeedForward.plain(
            up: try weights.linear(p + "ffn.up_proj", in: d, out: 4 * d, bias: false),
            down: try weights.linear(p + "ffn.down_proj", in: 4 * d, out: d, bias: false),
            activation: .gelu) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.layerNorm(p + "norm_1", size: d, eps: eps, bias: false), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.layerNorm(p + "norm_2", size: d, eps: eps, bias: false), feedForward: try feedForward()),
            residual: .sequential)
    }
}

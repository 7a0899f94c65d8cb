import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `dbrx`, with DbrxConfig's, DbrxAttentionConfig's and
/// DbrxFFNConfig's defaults for the keys it omits; the attention's settings
/// nested under `attn_config`, the mixture's under `ffn_config` (null or
/// absent: all defaults, which for `attn_config` leave out the clip_qkv and
/// rope_theta transformers needs, so it is refused). Refused, naming the key under its section: sizes
/// that cannot describe a model, null sizes (the config class takes them,
/// the model cannot be built), tied embeddings (DbrxConfig refuses them),
/// a negative `attn_config.clip_qkv` or none (DbrxAttention clamps by it
/// and fails on None), no `attn_config.rope_theta` (DbrxAttention reads it),
/// an `ffn_config.moe_top_k` outside
/// 1...`moe_num_experts`, an `ffn_config.moe_normalize_expert_weights` that
/// is not a finite p above 0, an activation droptrace does not implement,
/// a `head_dim` other than d_model / n_heads (the rotary table would not
/// fit the heads), and an `attn_config.rope_theta` other than the base transformers'
/// rotary embedding uses (it reads `rope_parameters`, default 10000, and
/// ignores the attention's key: the checkpoint would be scored with
/// another rotation than it was trained with).
struct DbrxConfiguration: Decodable {
    var dModel: Int
    var nHeads: Int
    var nLayers: Int
    var maxSeqLen: Int
    var vocabSize: Int
    var kvNHeads: Int
    /// q, k and v clamped to ±clip_qkv after Wqkv (0 clamps them to 0).
    var clipQKV: Double
    /// attn_config.rope_theta, which the rotary embedding does not read.
    var attentionRopeTheta: Double
    var activation: String
    var ffnHiddenSize: Int
    var moeNumExperts: Int
    var moeTopK: Int
    /// The p of the top-k weights' p-norm they are divided by (null: not normalised).
    var moeNormalizeExpertWeights: Double?

    enum CodingKeys: String, CodingKey {
        case dModel = "d_model"
        case nHeads = "n_heads"
        case nLayers = "n_layers"
        case maxSeqLen = "max_seq_len"
        case vocabSize = "vocab_size"
        case headDim = "head_dim"
        case tieWordEmbeddings = "tie_word_embeddings"
        case attnConfig = "attn_config"
        case ffnConfig = "ffn_config"
    }

    enum AttentionKeys: String, CodingKey {
        case kvNHeads = "kv_n_heads"
        case clipQKV = "clip_qkv"
        case ropeTheta = "rope_theta"
    }

    enum FFNKeys: String, CodingKey {
        case ffnActFn = "ffn_act_fn"
        case ffnHiddenSize = "ffn_hidden_size"
        case moeNumExperts = "moe_num_experts"
        case moeTopK = "moe_top_k"
        case moeNormalizeExpertWeights = "moe_normalize_expert_weights"
    }

    enum ActivationKeys: String, CodingKey { case name }

    /// A count that may be left out (`fallback`) but not given as null, named `key`.
    private static func count<K: CodingKey>(_ c: KeyedDecodingContainer<K>, _ k: K, _ fallback: Int, _ key: String) throws -> Int {
        if try c.contains(k) && c.decodeNil(forKey: k) {
            try ConfigRules.decodingChecks { throw InvalidConfigValue(key: key, problem: "must be a number, got null") }
        }
        return try c.decodeIfPresent(Int.self, forKey: k) ?? fallback
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dModel = try Self.count(c, .dModel, 2048, "d_model")
        nHeads = try Self.count(c, .nHeads, 16, "n_heads")
        nLayers = try Self.count(c, .nLayers, 24, "n_layers")
        maxSeqLen = try Self.count(c, .maxSeqLen, 2048, "max_seq_len")
        vocabSize = try Self.count(c, .vocabSize, 32000, "vocab_size")
        // Not a DbrxConfig setting, but its rotary embedding sizes its table by it when given (0 or
        // null: d_model / n_heads) while the heads stay d_model / n_heads wide: another width fails there.
        let headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        let tied = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        kvNHeads = 1
        var clip: Double?, theta: Double?
        if c.contains(.attnConfig), try !c.decodeNil(forKey: .attnConfig) {
            let a = try c.nestedContainer(keyedBy: AttentionKeys.self, forKey: .attnConfig)
            kvNHeads = try Self.count(a, .kvNHeads, 1, "attn_config.kv_n_heads")
            clip = try a.decodeIfPresent(Double.self, forKey: .clipQKV)
            theta = try a.decodeIfPresent(Double.self, forKey: .ropeTheta)
        }
        try ConfigRules.decodingChecks {
            guard clip != nil else {
                throw InvalidConfigValue(
                    key: "attn_config.clip_qkv", problem: "is null or absent; transformers' DbrxAttention clamps by it and fails on None")
            }
            guard theta != nil else {
                throw InvalidConfigValue(
                    key: "attn_config.rope_theta", problem: "is null or absent; transformers' DbrxAttention reads it and fails without it")
            }
        }
        clipQKV = clip!
        attentionRopeTheta = theta!
        activation = "silu"
        ffnHiddenSize = 3584
        moeNumExperts = 4
        moeTopK = 1
        moeNormalizeExpertWeights = 1
        if c.contains(.ffnConfig), try !c.decodeNil(forKey: .ffnConfig) {
            let f = try c.nestedContainer(keyedBy: FFNKeys.self, forKey: .ffnConfig)
            if f.contains(.ffnActFn), try !f.decodeNil(forKey: .ffnActFn) {
                let act = try f.nestedContainer(keyedBy: ActivationKeys.self, forKey: .ffnActFn)
                activation = try act.decodeIfPresent(String.self, forKey: .name) ?? activation
            }
            ffnHiddenSize = try Self.count(f, .ffnHiddenSize, ffnHiddenSize, "ffn_config.ffn_hidden_size")
            moeNumExperts = try Self.count(f, .moeNumExperts, moeNumExperts, "ffn_config.moe_num_experts")
            moeTopK = try Self.count(f, .moeTopK, moeTopK, "ffn_config.moe_top_k")
            if f.contains(.moeNormalizeExpertWeights) {
                moeNormalizeExpertWeights = try f.decodeIfPresent(Double.self, forKey: .moeNormalizeExpertWeights)
            }
        }
        let d = dModel, heads = nHeads, kv = kvNHeads, layers = nLayers, positions = maxSeqLen, vocabulary = vocabSize
        let inner = ffnHiddenSize, experts = moeNumExperts, k = moeTopK, p = moeNormalizeExpertWeights, bound = clipQKV
        try ConfigRules.decodingChecks {
            try ConfigRules.count(d, "d_model")
            try ConfigRules.count(layers, "n_layers")
            try ConfigRules.divides(heads, "n_heads", d, "d_model")
            try ConfigRules.divides(kv, "attn_config.kv_n_heads", heads, "n_heads")
            if let headDim, headDim != 0, headDim != d / heads {
                throw InvalidConfigValue(
                    key: "head_dim",
                    problem: "is \(headDim); DbrxRotaryEmbedding sizes its table by it and DbrxAttention's heads are d_model / n_heads "
                        + "= \(d / heads) wide, which transformers cannot run together")
            }
            try ConfigRules.count(positions, "max_seq_len")
            try ConfigRules.count(vocabulary, "vocab_size")
            try ConfigRules.product([(vocabulary, "vocab_size"), (d, "d_model")])
            try ConfigRules.count(inner, "ffn_config.ffn_hidden_size")
            try ConfigRules.count(experts, "ffn_config.moe_num_experts")
            try ConfigRules.product([(experts, "ffn_config.moe_num_experts"), (inner, "ffn_config.ffn_hidden_size"), (d, "d_model")])
            try MixtureOfExperts.checkExpertsPerToken(
                k, of: experts, expertsKey: "ffn_config.moe_num_experts", key: "ffn_config.moe_top_k")
            if let p, !(p > 0 && Float(p).isFinite) {
                throw InvalidConfigValue(
                    key: "ffn_config.moe_normalize_expert_weights", problem: "must be a finite p above 0 (null: no normalisation), got \(p)")
            }
            try ConfigRules.bound(bound, "attn_config.clip_qkv")
            if tied {
                throw InvalidConfigValue(key: "tie_word_embeddings", problem: "is true, which DbrxConfig refuses")
            }
        }
    }
}

/// DBRX (Databricks' DBRX), as transformers' models/dbrx/modeling_dbrx.py
/// runs it: pre-LayerNorm blocks whose norms have no bias (`norm_1`,
/// `norm_2` under `norm_attn_norm.`, the final `norm_f`), a fused `Wqkv`
/// (q | k | v, grouped-query by `attn_config.kv_n_heads`) clamped to
/// ±`attn_config.clip_qkv`, rotary positions, `out_proj`; the MLP a mixture
/// of GLU experts: the router `ffn.router.layer`'s softmax, the top
/// `moe_top_k` weighted by their probabilities divided by their p-norm
/// (p = `moe_normalize_expert_weights`), each expert act(x·w1ᵀ) · (x·v1ᵀ)
/// then · w2, stored fused as `ffn.experts.mlp.w1`, `v1` and `w2`, each
/// [experts · ffn_hidden_size, d_model]; embeddings `wte`, an untied `lm_head`.
struct DbrxModel: RegisteredModel {
    public let checkpoint: Checkpoint
    let config: DbrxConfiguration
    let weights: Weights
    let rotary: RotaryEmbedding
    let activation: Activation

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        config = try checkpoint.decodeConfig(DbrxConfiguration.self)
        let config = config
        activation = try Activation(huggingFaceName: config.activation, key: "ffn_config.ffn_act_fn.name", configPath: configPath)
        let settings = try checkpoint.decodeConfig(RopeSettings.self)
        if config.attentionRopeTheta != settings.theta {
            let theta = config.attentionRopeTheta
            throw InvalidConfigValue(
                key: "attn_config.rope_theta",
                problem: "is \(theta), but transformers' DbrxRotaryEmbedding rotates with rope_parameters' base \(settings.theta) "
                    + "and ignores this key; give the base in rope_parameters.rope_theta").error(path: configPath)
        }
        configuredDrops = try DropPlan(config: checkpoint, layerCount: config.nLayers)
        weights = try Weights(checkpoint, probe: "wte.weight", candidates: ["transformer.", ""], tiedHead: [])
        try weights.confirmLayers(Self.naming(weights.prefix), count: config.nLayers, drops: configuredDrops, configPath: configPath)
        try weights.confirmShape("wte.weight", [config.vocabSize, config.dModel], keys: "vocab_size, d_model", configPath: configPath)
        try weights.confirmStoredOutputShapes(hidden: config.dModel, vocabulary: config.vocabSize, finalNorm: "norm_f")
        // After the embedding confirmed d_model: the rotary tables are sized by the head width.
        rotary = try settings.embedding(headDim: config.dModel / config.nHeads, maxPositions: config.maxSeqLen, configPath: configPath)
        if let layer = (0..<config.nLayers).first(where: { !configuredDrops.dropsMLP($0) }) {
            let p = "blocks.\(layer).ffn."
            try weights.confirmShape(
                p + "router.layer.weight", [config.moeNumExperts, config.dModel], keys: "ffn_config.moe_num_experts, d_model",
                configPath: configPath)
            try weights.confirmShape(
                p + "experts.mlp.w1", [config.moeNumExperts * config.ffnHiddenSize, config.dModel],
                keys: "ffn_config.moe_num_experts × ffn_config.ffn_hidden_size, d_model", configPath: configPath)
        }
    }

    public var modelType: String { "dbrx" }
    public var layerCount: Int { config.nLayers }
    public var hiddenSize: Int { config.dModel }
    public var vocabularySize: Int { config.vocabSize }
    public var maxPositions: Int { config.maxSeqLen }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let d = config.dModel
        return try gatherRows(try weights.tensor("wte.weight", [config.vocabSize, d]), ids: batch.tokenIDs, width: d)
    }

    public var layerNaming: LayerNaming { Self.naming(weights.prefix) }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "blocks.", attention: ["norm_attn_norm.attn.", "norm_attn_norm.norm_1."],
            mlp: ["ffn.", "norm_attn_norm.norm_2."], layerCountKeys: ["n_layers"])
    }

    public func head() throws -> OutputHead {
        let d = config.dModel
        return OutputHead(
            norm: try weights.layerNorm("norm_f", size: d, eps: 1e-5, bias: false),
            projection: try weights.head(tiedTo: "wte", tied: false, hidden: d, vocabulary: config.vocabSize))
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = config.dModel, heads = config.nHeads, kv = config.kvNHeads, headDim = d / heads
        let p = "blocks.\(index).", eps = 1e-5
        func attention() throws -> SelfAttention { SelfAttention(
            qkv: try weights.linear(p + "norm_attn_norm.attn.Wqkv", in: d, out: d + 2 * kv * headDim, bias: false),
            layout: QKVLayout(numHeads: heads, numKVHeads: kv, headDim: headDim),
            rotary: rotary,
            output: try weights.linear(p + "norm_attn_norm.attn.out_proj", in: d, out: d, bias: false),
            scale: 1 / Float(Double(headDim).squareRoot()),
            clip: Float(config.clipQKV)) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.layerNorm(p + "norm_attn_norm.norm_1", size: d, eps: eps, bias: false),
                attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.layerNorm(p + "norm_attn_norm.norm_2", size: d, eps: eps, bias: false),
                feedForward: .mixture(try experts(layer: index))),
            residual: .sequential)
    }

    /// Layer `index`'s router and its experts, cut from the fused w1 (gate),
    /// v1 (up) and w2 (down, stored transposed: x · w2).
    func experts(layer index: Int) throws -> MixtureOfExperts {
        let d = config.dModel, inner = config.ffnHiddenSize, count = config.moeNumExperts
        let p = "blocks.\(index).ffn."
        let w1 = try weights.floats(p + "experts.mlp.w1", [count * inner, d])
        let v1 = try weights.floats(p + "experts.mlp.v1", [count * inner, d])
        let w2 = try weights.floats(p + "experts.mlp.w2", [count * inner, d])
        let experts: [FeedForward] = (0..<count).map { e in
            let rows = (e * inner * d)..<((e + 1) * inner * d)
            var down = [Float](repeating: 0, count: d * inner)
            for i in 0..<inner {
                for j in 0..<d { down[j * inner + i] = w2[e * inner * d + i * d + j] }
            }
            return .gated(
                gateUp: Linear(weight: Array(w1[rows]) + Array(v1[rows]), bias: nil, inFeatures: d, outFeatures: 2 * inner),
                down: Linear(weight: down, bias: nil, inFeatures: inner, outFeatures: d),
                activation: activation)
        }
        return MixtureOfExperts(
            router: try weights.linear(p + "router.layer", in: d, out: count, bias: false), experts: experts,
            expertsPerToken: config.moeTopK,
            rule: config.moeNormalizeExpertWeights.map { .softmaxTopKOverPNorm(p: $0) } ?? .softmaxTopK(renormalize: false))
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `falcon`, with FalconConfig's defaults for the keys it
/// omits (the width is `n_embed` when given, else `hidden_size`). Falcon's
/// switches are read as Python reads them: absent takes the default, null is
/// false. Decoding refuses sizes that cannot describe a model
/// (`ConfigRules`): counts below 1, heads not dividing the width or key/value
/// heads not dividing the heads, element counts that overflow, a
/// non-positive `layer_norm_epsilon`.
struct FalconConfiguration: Decodable {
    var hiddenSize: Int
    /// The key the width came from, to name in errors.
    var widthKey: String
    var numHiddenLayers: Int
    var numAttentionHeads: Int
    /// Key/value heads of `new_decoder_architecture` (and of multi-head
    /// attention, where they must equal the heads); multi-query has one.
    var numKVHeads: Int
    /// 2: separate `ln_attn` / `ln_mlp` (the new architecture's default), 1: one `input_layernorm`.
    var numLnInParallelAttn: Int?
    var layerNormEpsilon: Double
    var alibi: Bool
    /// Falcon-40B/180B: grouped key/value heads in the fused projection, a parallel block.
    var newDecoderArchitecture: Bool
    var multiQuery: Bool
    var parallelAttn: Bool
    var bias: Bool
    var maxPositionEmbeddings: Int
    var vocabSize: Int
    var ffnHiddenSize: Int
    var activation: String
    var tieWordEmbeddings: Bool

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case nEmbed = "n_embed"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKVHeads = "num_kv_heads"
        case numLnInParallelAttn = "num_ln_in_parallel_attn"
        case layerNormEpsilon = "layer_norm_epsilon"
        case alibi
        case newDecoderArchitecture = "new_decoder_architecture"
        case multiQuery = "multi_query"
        case parallelAttn = "parallel_attn"
        case bias
        case maxPositionEmbeddings = "max_position_embeddings"
        case vocabSize = "vocab_size"
        case ffnHiddenSize = "ffn_hidden_size"
        case activation
        case tieWordEmbeddings = "tie_word_embeddings"
        case headDim = "head_dim"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        /// A switch FalconConfig types `bool | None`: its default when absent, false when null.
        func flag(_ key: CodingKeys, _ absent: Bool) throws -> Bool {
            c.contains(key) ? try c.decodeIfPresent(Bool.self, forKey: key) ?? false : absent
        }
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .nEmbed) ?? c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? 4544
        widthKey = c.contains(.nEmbed) ? "n_embed" : "hidden_size"
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? 32
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? 71
        numKVHeads = try c.decodeIfPresent(Int.self, forKey: .numKVHeads) ?? numAttentionHeads
        numLnInParallelAttn = try c.decodeIfPresent(Int.self, forKey: .numLnInParallelAttn)
        alibi = try flag(.alibi, false)
        newDecoderArchitecture = try flag(.newDecoderArchitecture, false)
        multiQuery = try flag(.multiQuery, true)
        parallelAttn = try flag(.parallelAttn, true)
        bias = try flag(.bias, false)
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? 65024
        ffnHiddenSize = try c.decodeIfPresent(Int.self, forKey: .ffnHiddenSize) ?? 4 * hiddenSize
        let activation = c.contains(.activation) ? try c.decodeIfPresent(String.self, forKey: .activation) : "gelu"
        self.activation = activation ?? ""
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        // LayerNorm(eps=None) cannot be built: null is no epsilon at all.
        let eps = c.contains(.layerNormEpsilon) ? try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) : 1e-5
        layerNormEpsilon = eps ?? 0
        let widthKey = widthKey, d = hiddenSize, layers = numHiddenLayers, heads = numAttentionHeads, kv = numKVHeads
        let ffn = ffnHiddenSize, vocabulary = vocabSize, positions = maxPositionEmbeddings, lns = numLnInParallelAttn
        try ConfigRules.decodingChecks {
            try ConfigRules.count(d, widthKey)
            try ConfigRules.count(layers, "num_hidden_layers")
            try ConfigRules.divides(heads, "num_attention_heads", d, widthKey)
            try ConfigRules.divides(kv, "num_kv_heads", heads, "num_attention_heads")
            try ConfigRules.count(ffn, "ffn_hidden_size")
            try ConfigRules.count(vocabulary, "vocab_size")
            try ConfigRules.count(positions, "max_position_embeddings")
            try ConfigRules.product([(d, widthKey), (d, widthKey), (3, "q, k and v")])
            try ConfigRules.product([(ffn, "ffn_hidden_size"), (d, widthKey)])
            try ConfigRules.product([(vocabulary, "vocab_size"), (d, widthKey)])
            guard let eps else { throw InvalidConfigValue(key: "layer_norm_epsilon", problem: "is null; a LayerNorm needs one") }
            guard activation != nil else { throw InvalidConfigValue(key: "activation", problem: "is null; FalconMLP needs one") }
            // FalconConfig's head_dim is hidden_size / num_attention_heads, a property a given value cannot set.
            if c.contains(.headDim) {
                throw InvalidConfigValue(key: "head_dim", problem: "is given; FalconConfig derives it and cannot load a config that sets it")
            }
            try ConfigRules.positive(eps, "layer_norm_epsilon")
            if let lns, lns != 1, lns != 2 {
                throw InvalidConfigValue(key: "num_ln_in_parallel_attn", problem: "is \(lns); FalconDecoderLayer builds 1 or 2 norms")
            }
        }
    }

    /// Whether the block's branches read two norms of their own (`ln_attn`,
    /// `ln_mlp`): the new architecture's default.
    var separateParallelNorms: Bool { newDecoderArchitecture && (numLnInParallelAttn ?? 2) == 2 }
}

/// Falcon (transformers' models/falcon/modeling_falcon.py): LayerNorms with
/// biases, one fused `query_key_value` and `dense` (biases by `bias`), the
/// MLP `dense_4h_to_h(act(dense_h_to_4h x))`, rotary on whole heads or
/// (`alibi`, Falcon-RW) ALiBi, and a head tied to the embedding. Falcon-7B
/// is a parallel block off one `input_layernorm` with multi-query attention;
/// Falcon-40B/180B (`new_decoder_architecture`) a parallel block off
/// `ln_attn` and `ln_mlp` with grouped key/value heads; Falcon-RW a
/// sequential pre-norm block with multi-head attention.
struct FalconModel: RegisteredModel {
    public let checkpoint: Checkpoint
    let config: FalconConfiguration
    let weights: Weights
    let layout: QKVLayout
    let rotary: RotaryEmbedding?
    let alibi: ALiBi?

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        config = try checkpoint.decodeConfig(FalconConfiguration.self)
        let heads = config.numAttentionHeads, headDim = config.hiddenSize / heads
        if config.newDecoderArchitecture {
            // transformers' layer reads ln_attn / ln_mlp or input_layernorm only where a parallel block builds them.
            guard config.parallelAttn else {
                throw DroptraceError(
                    "new_decoder_architecture with parallel_attn false: FalconDecoderLayer cannot run it", path: configPath)
            }
            layout = QKVLayout(numHeads: heads, numKVHeads: config.numKVHeads, headDim: headDim)
        } else if config.multiQuery {
            layout = QKVLayout(numHeads: heads, numKVHeads: 1, headDim: headDim)
        } else {
            guard config.numKVHeads == heads else {
                throw DroptraceError(
                    "num_kv_heads \(config.numKVHeads) with multi-head attention (multi_query false): FalconAttention "
                        + "splits \(heads) key heads and cannot regroup them", path: configPath)
            }
            layout = QKVLayout(numHeads: heads, numKVHeads: heads, headDim: headDim, arrangement: .interleavedPerHead)
        }
        if !config.newDecoderArchitecture, config.parallelAttn, config.numLnInParallelAttn == 2 {
            throw DroptraceError(
                "num_ln_in_parallel_attn 2 without new_decoder_architecture: FalconDecoderLayer builds ln_attn and ln_mlp "
                    + "but reads input_layernorm, which it does not build", path: configPath)
        }
        configuredDrops = try DropPlan(config: checkpoint, layerCount: config.numHiddenLayers)
        weights = try Weights(
            checkpoint, probe: "word_embeddings.weight", candidates: ["transformer.", ""],
            tiedHead: config.tieWordEmbeddings ? ["lm_head.weight"] : [])
        try weights.confirmLayers(Self.naming(weights.prefix, config), count: config.numHiddenLayers, drops: configuredDrops, configPath: configPath)
        try weights.confirmShape(
            "word_embeddings.weight", [config.vocabSize, config.hiddenSize], keys: "vocab_size, \(config.widthKey)",
            configPath: configPath)
        try weights.confirmStoredOutputShapes(hidden: config.hiddenSize, vocabulary: config.vocabSize, finalNorm: "ln_f")
        if config.alibi {
            // FalconModel rounds the biases to bfloat16 and divides them by √head_dim.
            alibi = ALiBi(slopes: ALiBi.slopes(heads: heads), bfloat16Bias: true, divisor: Float(Double(headDim).squareRoot()))
            rotary = nil
        } else {
            alibi = nil
            rotary = try checkpoint.decodeConfig(RopeSettings.self).embedding(
                headDim: headDim, maxPositions: config.maxPositionEmbeddings, configPath: configPath)
        }
    }

    public var modelType: String { "falcon" }
    public var layerCount: Int { config.numHiddenLayers }
    public var hiddenSize: Int { config.hiddenSize }
    public var vocabularySize: Int { config.vocabSize }
    public var maxPositions: Int { config.maxPositionEmbeddings }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let d = config.hiddenSize
        return try gatherRows(try weights.tensor("word_embeddings.weight", [config.vocabSize, d]), ids: batch.tokenIDs, width: d)
    }

    public var layerNaming: LayerNaming { Self.naming(weights.prefix, config) }

    /// A parallel block's one shared `input_layernorm` belongs to neither branch.
    static func naming(_ prefix: String, _ config: FalconConfiguration) -> LayerNaming {
        let norms: (attention: [String], mlp: [String]) =
            config.separateParallelNorms ? (["ln_attn."], ["ln_mlp."])
            : config.parallelAttn ? ([], []) : (["input_layernorm."], ["post_attention_layernorm."])
        return LayerNaming(
            prefix: prefix + "h.", attention: ["self_attention."] + norms.attention, mlp: ["mlp."] + norms.mlp,
            layerCountKeys: ["num_hidden_layers"])
    }

    public func head() throws -> OutputHead {
        let d = config.hiddenSize
        return OutputHead(
            norm: try weights.layerNorm("ln_f", size: d, eps: config.layerNormEpsilon),
            projection: try weights.head(tiedTo: "word_embeddings", tied: config.tieWordEmbeddings, hidden: d, vocabulary: config.vocabSize))
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = config.hiddenSize, p = "h.\(index).", eps = config.layerNormEpsilon
        let norms: (attention: String, mlp: String) =
            config.separateParallelNorms ? ("ln_attn", "ln_mlp")
            : config.parallelAttn ? ("input_layernorm", "input_layernorm") : ("input_layernorm", "post_attention_layernorm")
        func attention() throws -> SelfAttention {
            var qkv = try weights.linear(p + "self_attention.query_key_value", in: d, out: layout.width, bias: config.bias)
            if config.newDecoderArchitecture { qkv = Self.groupedQKV(qkv, layout: layout) }
            return SelfAttention(
                qkv: qkv, layout: layout, rotary: rotary,
                output: try weights.linear(p + "self_attention.dense", in: d, out: d, bias: config.bias),
                scale: 1 / Float(layout.headDim).squareRoot(), alibi: alibi)
        }
        func feedForward() throws -> FeedForward { FeedForward.plain(
            up: try weights.linear(p + "mlp.dense_h_to_4h", in: d, out: config.ffnHiddenSize, bias: config.bias),
            down: try weights.linear(p + "mlp.dense_4h_to_h", in: config.ffnHiddenSize, out: d, bias: config.bias),
            activation: try Activation(huggingFaceName: config.activation, key: "activation", configPath: checkpoint.configURL.path)) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.layerNorm(p + norms.attention, size: d, eps: eps), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.layerNorm(p + norms.mlp, size: d, eps: eps), feedForward: try feedForward()),
            residual: config.parallelAttn ? .parallel : .sequential)
    }

    /// The new architecture's fused rows, for each key/value group g the
    /// group's query heads, then k_g, then v_g, reordered into the grouped
    /// layout (all queries, all keys, all values); biases alike.
    static func groupedQKV(_ qkv: Linear, layout: QKVLayout) -> Linear {
        let group = layout.numHeads / layout.numKVHeads, headDim = layout.headDim
        // Source head-blocks in destination order.
        let queries = (0..<layout.numKVHeads).flatMap { g in (0..<group).map { g * (group + 2) + $0 } }
        let keys = (0..<layout.numKVHeads).map { $0 * (group + 2) + group }
        let order = queries + keys + keys.map { $0 + 1 }
        return qkv.rearrangingRows { values, rowWidth in
            let block = headDim * rowWidth
            return order.flatMap { values[($0 * block)..<(($0 + 1) * block)] }
        }
    }
}

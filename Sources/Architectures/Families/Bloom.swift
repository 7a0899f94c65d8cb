import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `bloom`, with BloomConfig's defaults for the keys it
/// omits. The width is `n_embed` when given (BLOOM's own configs), else
/// `hidden_size`, as BloomConfig reads them. Decoding refuses sizes that
/// cannot describe a model (`ConfigRules`): counts below 1, `n_head` not
/// dividing the width, element counts that overflow, a non-positive
/// `layer_norm_epsilon`.
struct BloomConfiguration: Decodable {
    var hiddenSize: Int
    /// The key the width came from, to name in errors.
    var widthKey: String
    var nLayer: Int
    var nHead: Int
    var vocabSize: Int
    var layerNormEpsilon: Double
    /// The residual is the normalised stream, not the stream (never set by
    /// a released BLOOM; refused by `BloomModel`).
    var applyResidualConnectionPostLayernorm: Bool
    var tieWordEmbeddings: Bool

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case nEmbed = "n_embed"
        case nLayer = "n_layer"
        case nHead = "n_head"
        case vocabSize = "vocab_size"
        case layerNormEpsilon = "layer_norm_epsilon"
        case applyResidualConnectionPostLayernorm = "apply_residual_connection_post_layernorm"
        case tieWordEmbeddings = "tie_word_embeddings"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .nEmbed) ?? c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? 64
        nLayer = try c.decodeIfPresent(Int.self, forKey: .nLayer) ?? 2
        nHead = try c.decodeIfPresent(Int.self, forKey: .nHead) ?? 8
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? 250880
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? 1e-5
        applyResidualConnectionPostLayernorm =
            try c.decodeIfPresent(Bool.self, forKey: .applyResidualConnectionPostLayernorm) ?? false
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        widthKey = c.contains(.nEmbed) ? "n_embed" : "hidden_size"
        let widthKey = widthKey, d = hiddenSize, layers = nLayer, heads = nHead, vocabulary = vocabSize, eps = layerNormEpsilon
        try ConfigRules.decodingChecks {
            try ConfigRules.count(d, widthKey)
            try ConfigRules.count(layers, "n_layer")
            try ConfigRules.divides(heads, "n_head", d, widthKey)
            try ConfigRules.count(vocabulary, "vocab_size")
            try ConfigRules.product([(d, widthKey), (d, widthKey), (4, "4 (the MLP's width over the model's)")])
            try ConfigRules.product([(vocabulary, "vocab_size"), (d, widthKey)])
            try ConfigRules.positive(eps, "layer_norm_epsilon")
        }
    }
}

/// BLOOM (transformers' models/bloom/modeling_bloom.py): a LayerNorm on the
/// token embeddings (`word_embeddings_layernorm`), no position embedding but
/// ALiBi (each head's scores gain slope · key position), pre-LayerNorm
/// blocks with biases everywhere, a fused `query_key_value` laid out per
/// head ([q_h, k_h, v_h] for each head h), the MLP `dense_4h_to_h(gelu_tanh(dense_h_to_4h x))`
/// four times as wide as the model, and a head tied to the embedding.
struct BloomModel: RegisteredModel {
    public let checkpoint: Checkpoint
    let config: BloomConfiguration
    let weights: Weights
    let alibi: ALiBi

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        config = try checkpoint.decodeConfig(BloomConfiguration.self)
        if config.applyResidualConnectionPostLayernorm {
            throw DroptraceError(
                "apply_residual_connection_post_layernorm is true (the residual is the normalised stream), which droptrace "
                    + "does not compute", path: configPath)
        }
        configuredDrops = try DropPlan(config: checkpoint, layerCount: config.nLayer)
        weights = try Weights(
            checkpoint, probe: "word_embeddings.weight", candidates: ["transformer.", ""],
            tiedHead: config.tieWordEmbeddings ? ["lm_head.weight"] : [])
        try weights.confirmLayers(Self.naming(weights.prefix), count: config.nLayer, drops: configuredDrops, configPath: configPath)
        try weights.confirmShape(
            "word_embeddings.weight", [config.vocabSize, config.hiddenSize], keys: "vocab_size, \(config.widthKey)",
            configPath: configPath)
        try weights.confirmStoredOutputShapes(hidden: config.hiddenSize, vocabulary: config.vocabSize, finalNorm: "ln_f")
        alibi = ALiBi(slopes: ALiBi.slopes(heads: config.nHead))
    }

    public var modelType: String { "bloom" }
    public var layerCount: Int { config.nLayer }
    public var hiddenSize: Int { config.hiddenSize }
    public var vocabularySize: Int { config.vocabSize }
    /// ALiBi has no table of positions; BLOOM was trained on 2048 tokens.
    public var maxPositions: Int { 2048 }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let d = config.hiddenSize
        let tokens = try gatherRows(try weights.tensor("word_embeddings.weight", [config.vocabSize, d]), ids: batch.tokenIDs, width: d)
        return try weights.layerNorm("word_embeddings_layernorm", size: d, eps: config.layerNormEpsilon)(tokens)
    }

    public var layerNaming: LayerNaming { Self.naming(weights.prefix) }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "h.", attention: ["self_attention.", "input_layernorm."], mlp: ["mlp.", "post_attention_layernorm."],
            layerCountKeys: ["n_layer", "num_hidden_layers"])
    }

    public func head() throws -> OutputHead {
        let d = config.hiddenSize
        return OutputHead(
            norm: try weights.layerNorm("ln_f", size: d, eps: config.layerNormEpsilon),
            projection: try weights.head(
                tiedTo: "word_embeddings", tied: config.tieWordEmbeddings, hidden: d, vocabulary: config.vocabSize))
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = config.hiddenSize, heads = config.nHead, headDim = d / heads, eps = config.layerNormEpsilon
        let p = "h.\(index)."
        // Megatron's pretraining_tp / slow_but_exact only split these products
        // into column slices: the same sums in another order.
        func attention() throws -> SelfAttention { SelfAttention(
            qkv: try weights.linear(p + "self_attention.query_key_value", in: d, out: 3 * d, bias: true),
            layout: QKVLayout(numHeads: heads, numKVHeads: heads, headDim: headDim, arrangement: .interleavedPerHead),
            rotary: nil,
            output: try weights.linear(p + "self_attention.dense", in: d, out: d, bias: true),
            scale: 1 / Float(headDim).squareRoot(),
            alibi: alibi) }
        func feedForward() throws -> FeedForward { FeedForward.plain(
            up: try weights.linear(p + "mlp.dense_h_to_4h", in: d, out: 4 * d, bias: true),
            down: try weights.linear(p + "mlp.dense_4h_to_h", in: 4 * d, out: d, bias: true),
            // bloom_gelu_forward: the tanh approximation of GELU.
            activation: .geluTanh) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.layerNorm(p + "input_layernorm", size: d, eps: eps), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.layerNorm(p + "post_attention_layernorm", size: d, eps: eps),
                feedForward: try feedForward()),
            residual: .sequential)
    }
}

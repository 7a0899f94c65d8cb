import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gpt_neox` (Pythia, GPT-NeoX-20B). Decoding refuses sizes
/// that cannot describe a model (`ConfigRules`): counts below 1, heads not
/// dividing `hidden_size` (as transformers requires), element counts that
/// overflow, a non-positive `layer_norm_eps`.
struct GPTNeoXConfiguration: Decodable {
    var hiddenSize: Int
    var numHiddenLayers: Int
    var numAttentionHeads: Int
    var intermediateSize: Int
    var layerNormEps: Double
    var vocabSize: Int
    var maxPositionEmbeddings: Int
    var hiddenAct: String?
    var useParallelResidual: Bool?
    var attentionBias: Bool?
    var tieWordEmbeddings: Bool?
    /// Not a setting of GPTNeoXConfig, but its rotary embedding sizes the
    /// table by it when given (0 or null: hidden_size / heads), while the
    /// heads stay hidden_size / heads wide.
    var headDim: Int?

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case intermediateSize = "intermediate_size"
        case layerNormEps = "layer_norm_eps"
        case vocabSize = "vocab_size"
        case maxPositionEmbeddings = "max_position_embeddings"
        case hiddenAct = "hidden_act"
        case useParallelResidual = "use_parallel_residual"
        case attentionBias = "attention_bias"
        case tieWordEmbeddings = "tie_word_embeddings"
        case headDim = "head_dim"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        layerNormEps = try c.decode(Double.self, forKey: .layerNormEps)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        maxPositionEmbeddings = try c.decode(Int.self, forKey: .maxPositionEmbeddings)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        useParallelResidual = try c.decodeIfPresent(Bool.self, forKey: .useParallelResidual)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias)
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings)
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim).flatMap { $0 == 0 ? nil : $0 }
        try ConfigRules.decodingChecks {
            if let headDim { try ConfigRules.count(headDim, "head_dim") }
            try ConfigRules.count(hiddenSize, "hidden_size")
            try ConfigRules.count(numHiddenLayers, "num_hidden_layers")
            try ConfigRules.divides(numAttentionHeads, "num_attention_heads", hiddenSize, "hidden_size")
            try ConfigRules.count(intermediateSize, "intermediate_size")
            try ConfigRules.count(vocabSize, "vocab_size")
            try ConfigRules.count(maxPositionEmbeddings, "max_position_embeddings")
            try ConfigRules.product([(hiddenSize, "hidden_size"), (hiddenSize, "hidden_size"), (3, "q, k and v")])
            try ConfigRules.product([(intermediateSize, "intermediate_size"), (hiddenSize, "hidden_size")])
            try ConfigRules.product([(vocabSize, "vocab_size"), (hiddenSize, "hidden_size")])
            try ConfigRules.positive(layerNormEps, "layer_norm_eps")
        }
    }
}

/// GPT-NeoX: LayerNorm blocks, by default with attention and MLP in
/// parallel off the same input; partial rotary on a quarter of each head.
struct GPTNeoXModel: RegisteredModel {
    public let checkpoint: Checkpoint
    let config: GPTNeoXConfiguration
    let weights: Weights
    let rotary: RotaryEmbedding

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        config = try checkpoint.decodeConfig(GPTNeoXConfiguration.self)
        configuredDrops = try DropPlan(config: checkpoint, layerCount: config.numHiddenLayers)
        weights = try Weights(
            checkpoint, probe: "embed_in.weight", candidates: ["gpt_neox.", ""],
            tiedHead: config.tieWordEmbeddings ?? false ? Self.headNames.map { $0 + ".weight" } : [])
        try weights.confirmLayers(Self.naming(weights.prefix), count: config.numHiddenLayers, drops: configuredDrops, configPath: configPath)
        try weights.confirmShape(
            "embed_in.weight", [config.vocabSize, config.hiddenSize], keys: "vocab_size, hidden_size", configPath: configPath)
        try weights.confirmStoredOutputShapes(
            hidden: config.hiddenSize, vocabulary: config.vocabSize, names: Self.headNames, finalNorm: "final_layer_norm")
        rotary = try checkpoint.decodeConfig(GPTNeoXRopeSettings.self).settings.embedding(
            headDim: config.hiddenSize / config.numAttentionHeads, tableWidth: config.headDim,
            partialRotary: .honoured(default: 0.25), configPath: configPath)
    }

    public var modelType: String { "gpt_neox" }
    public var layerCount: Int { config.numHiddenLayers }
    public var hiddenSize: Int { config.hiddenSize }
    public var vocabularySize: Int { config.vocabSize }
    public var maxPositions: Int { config.maxPositionEmbeddings }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let table = try weights.tensor("embed_in.weight", [config.vocabSize, config.hiddenSize])
        return try gatherRows(table, ids: batch.tokenIDs, width: config.hiddenSize)
    }

    public var layerNaming: LayerNaming { Self.naming(weights.prefix) }

    /// The head as transformers 5 names it, and as 4.x and Pythia saved it
    /// (`embed_out`, which GPTNeoXForCausalLM's conversion renames onto `lm_head`).
    static let headNames = ["lm_head", "embed_out"]

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(prefix: prefix + "layers.", attention: ["attention.", "input_layernorm."], mlp: ["mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    public func head() throws -> OutputHead {
        let d = config.hiddenSize
        // GPT-NeoX leaves it untied unless the config says otherwise.
        return OutputHead(
            norm: try weights.layerNorm("final_layer_norm", size: d, eps: config.layerNormEps),
            projection: try weights.head(
                tiedTo: "embed_in", tied: config.tieWordEmbeddings ?? false, hidden: d, vocabulary: config.vocabSize,
                names: Self.headNames))
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = config.hiddenSize, heads = config.numAttentionHeads, headDim = d / heads
        let p = "layers.\(index)."
        let bias = config.attentionBias ?? true
        let eps = config.layerNormEps
        func attention() throws -> SelfAttention { SelfAttention(
            // Rows of query_key_value are per head: [q_h, k_h, v_h] for each head h.
            qkv: try weights.linear(p + "attention.query_key_value", in: d, out: 3 * d, bias: bias),
            layout: QKVLayout(numHeads: heads, numKVHeads: heads, headDim: headDim, arrangement: .interleavedPerHead),
            rotary: rotary,
            output: try weights.linear(p + "attention.dense", in: d, out: d, bias: bias),
            scale: 1 / Float(headDim).squareRoot()) }
        func feedForward() throws -> FeedForward { FeedForward.plain(
            up: try weights.linear(p + "mlp.dense_h_to_4h", in: d, out: config.intermediateSize, bias: true),
            down: try weights.linear(p + "mlp.dense_4h_to_h", in: config.intermediateSize, out: d, bias: true),
            activation: try Activation(huggingFaceName: config.hiddenAct ?? "gelu", configPath: checkpoint.configURL.path)) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.layerNorm(p + "input_layernorm", size: d, eps: eps), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.layerNorm(p + "post_attention_layernorm", size: d, eps: eps),
                feedForward: try feedForward()),
            residual: config.useParallelResidual ?? true ? .parallel : .sequential)
    }
}

/// GPTNeoXConfig reads its base and rotary fraction as `rotary_emb_base`
/// and `rotary_pct` (default 0.25), and ignores the `rope_theta` and
/// `partial_rotary_factor` every other family reads at the top level.
struct GPTNeoXRopeSettings: Decodable {
    let settings: RopeSettings

    init(from decoder: Decoder) throws {
        settings = try RopeSettings(from: decoder, topLevelKeys: .gptNeoX)
    }
}

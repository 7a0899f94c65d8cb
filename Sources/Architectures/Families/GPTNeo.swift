import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gpt_neo`, with GPTNeoConfig's defaults for the keys it
/// omits. `attention_types` ([[types, repeats], ...], null: [[["global",
/// "local"], 12]]) expands to one type per layer as GPTNeoConfig expands it
/// into `attention_layers`. Decoding refuses sizes that cannot describe a
/// model (`ConfigRules`), an expansion of another length than `num_layers`
/// (GPTNeoConfig refuses it), types other than "global" and "local"
/// (GPTNeoAttention raises), and a `window_size` below 1.
struct GPTNeoConfiguration: Decodable {
    var hiddenSize: Int
    var numLayers: Int
    var numHeads: Int
    var intermediateSize: Int
    var maxPositionEmbeddings: Int
    var vocabSize: Int
    var windowSize: Int
    /// Per layer: whether it attends within the window ("local").
    var localLayers: [Bool]
    var activationFunction: String
    var layerNormEpsilon: Double
    var tieWordEmbeddings: Bool

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case numLayers = "num_layers"
        case numHeads = "num_heads"
        case intermediateSize = "intermediate_size"
        case maxPositionEmbeddings = "max_position_embeddings"
        case vocabSize = "vocab_size"
        case windowSize = "window_size"
        case attentionTypes = "attention_types"
        case activationFunction = "activation_function"
        case layerNormEpsilon = "layer_norm_epsilon"
        case tieWordEmbeddings = "tie_word_embeddings"
    }

    /// One [types, repeats] entry of `attention_types`.
    struct AttentionTypes: Decodable {
        var types: [String]
        var repeats: Int

        init(from decoder: Decoder) throws {
            var c = try decoder.unkeyedContainer()
            types = try c.decode([String].self)
            repeats = try c.decode(Int.self)
        }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? 2048
        numLayers = try c.decodeIfPresent(Int.self, forKey: .numLayers) ?? 24
        numHeads = try c.decodeIfPresent(Int.self, forKey: .numHeads) ?? 16
        let inner = try c.decodeIfPresent(Int.self, forKey: .intermediateSize)
        intermediateSize = inner ?? 4 * hiddenSize
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? 50257
        windowSize = try c.decodeIfPresent(Int.self, forKey: .windowSize) ?? 256
        activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? "gelu_new"
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? 1e-5
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        let entries = try c.decodeIfPresent([AttentionTypes].self, forKey: .attentionTypes)
            ?? [AttentionTypes(types: ["global", "local"], repeats: 12)]
        let d = hiddenSize, layers = numLayers, heads = numHeads, positions = maxPositionEmbeddings
        let vocabulary = vocabSize, window = windowSize, eps = layerNormEpsilon
        var types: [String] = []
        try ConfigRules.decodingChecks {
            try ConfigRules.count(d, "hidden_size")
            try ConfigRules.count(layers, "num_layers")
            try ConfigRules.divides(heads, "num_heads", d, "hidden_size")
            try ConfigRules.countIfPresent(inner, "intermediate_size")
            try ConfigRules.count(positions, "max_position_embeddings")
            try ConfigRules.count(vocabulary, "vocab_size")
            try ConfigRules.count(window, "window_size")
            try ConfigRules.product([(d, "hidden_size"), (d, "hidden_size"), (4, "q, k, v and out_proj")])
            if let inner {
                try ConfigRules.product([(inner, "intermediate_size"), (d, "hidden_size")])
            } else {
                try ConfigRules.product([(d, "hidden_size"), (d, "hidden_size"), (4, "4 (the default intermediate_size)")])
            }
            try ConfigRules.product([(positions, "max_position_embeddings"), (d, "hidden_size")])
            try ConfigRules.product([(vocabulary, "vocab_size"), (d, "hidden_size")])
            try ConfigRules.positive(eps, "layer_norm_epsilon")
            // GPTNeoConfig expands each entry `repeats` times; more entries than layers are refused before expanding.
            for entry in entries {
                guard entry.repeats >= 0, entry.repeats <= layers, entry.types.count <= layers,
                      types.count + entry.repeats * entry.types.count <= layers
                else {
                    throw InvalidConfigValue(
                        key: "attention_types", problem: "expands to more than num_layers \(layers) layer types, as GPTNeoConfig expands it")
                }
                for _ in 0..<entry.repeats { types += entry.types }
            }
            guard types.count == layers else {
                throw InvalidConfigValue(
                    key: "attention_types", problem: "expands to \(types.count) layer types, not num_layers \(layers), which GPTNeoConfig refuses")
            }
            if let other = types.first(where: { $0 != "global" && $0 != "local" }) {
                throw InvalidConfigValue(
                    key: "attention_types", problem: "names \"\(other)\"; GPTNeoAttention runs \"global\" and \"local\" only")
            }
        }
        localLayers = types.map { $0 == "local" }
    }
}

extension GPTNeoConfiguration.AttentionTypes {
    init(types: [String], repeats: Int) {
        self.types = types
        self.repeats = repeats
    }
}

/// GPT-Neo (EleutherAI/gpt-neo-125m … 2.7B), as transformers'
/// models/gpt_neo/modeling_gpt_neo.py runs it: GPT-2's layout (learned
/// positions, pre-LayerNorm blocks, the MLP `c_proj(act(c_fc x))` with
/// biases, a head tied to `wte`) with nn.Linear q/k/v projections without
/// biases and `out_proj` with one, scores not scaled by 1/√head_dim, and
/// layers alternating global attention with local attention over the last
/// `window_size` keys (the query's own included), per `attention_types`.
struct GPTNeoModel: RegisteredModel {
    public let checkpoint: Checkpoint
    let config: GPTNeoConfiguration
    let weights: Weights

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        config = try checkpoint.decodeConfig(GPTNeoConfiguration.self)
        configuredDrops = try DropPlan(config: checkpoint, layerCount: config.numLayers)
        weights = try Weights(
            checkpoint, probe: "wte.weight", candidates: ["transformer.", ""],
            tiedHead: config.tieWordEmbeddings ? ["lm_head.weight"] : [])
        try weights.confirmLayers(Self.naming(weights.prefix), count: config.numLayers, drops: configuredDrops, configPath: configPath)
        try weights.confirmShape("wte.weight", [config.vocabSize, config.hiddenSize], keys: "vocab_size, hidden_size", configPath: configPath)
        try weights.confirmShape(
            "wpe.weight", [config.maxPositionEmbeddings, config.hiddenSize], keys: "max_position_embeddings, hidden_size",
            configPath: configPath)
        try weights.confirmStoredOutputShapes(hidden: config.hiddenSize, vocabulary: config.vocabSize, finalNorm: "ln_f")
    }

    public var modelType: String { "gpt_neo" }
    public var layerCount: Int { config.numLayers }
    public var hiddenSize: Int { config.hiddenSize }
    public var vocabularySize: Int { config.vocabSize }
    public var maxPositions: Int { config.maxPositionEmbeddings }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let d = config.hiddenSize
        var tokens = try gatherRows(try weights.tensor("wte.weight", [config.vocabSize, d]), ids: batch.tokenIDs, width: d)
        let positions = try gatherRows(
            try weights.tensor("wpe.weight", [config.maxPositionEmbeddings, d]), ids: batch.positions, width: d)
        tokens.add(positions)
        return tokens
    }

    public var layerNaming: LayerNaming {
        var naming = Self.naming(weights.prefix)
        naming.attentionTypeRuns = config.localLayers.map { $0 ? "local" : "global" }
        return naming
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "h.", attention: ["attn.", "ln_1."], mlp: ["mlp.", "ln_2."],
            layerCountKeys: ["num_layers", "num_hidden_layers"])
    }

    public func head() throws -> OutputHead {
        let d = config.hiddenSize
        return OutputHead(
            norm: try weights.layerNorm("ln_f", size: d, eps: config.layerNormEpsilon),
            projection: try weights.head(tiedTo: "wte", tied: config.tieWordEmbeddings, hidden: d, vocabulary: config.vocabSize))
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = config.hiddenSize, heads = config.numHeads, eps = config.layerNormEpsilon
        let p = "h.\(index)."
        let layout = QKVLayout(numHeads: heads, numKVHeads: heads, headDim: d / heads)
        func attention() throws -> SelfAttention { SelfAttention(
            qkv: try weights.stackedQKV(p + "attn.attention.", hidden: d, layout: layout, bias: false),
            layout: layout, rotary: nil,
            output: try weights.linear(p + "attn.attention.out_proj", in: d, out: d, bias: true),
            // GPTNeoSelfAttention does not scale the scores.
            scale: 1,
            slidingWindow: config.localLayers[index] ? config.windowSize : nil) }
        func feedForward() throws -> FeedForward { FeedForward.plain(
            up: try weights.linear(p + "mlp.c_fc", in: d, out: config.intermediateSize, bias: true),
            down: try weights.linear(p + "mlp.c_proj", in: config.intermediateSize, out: d, bias: true),
            activation: try Activation(huggingFaceName: config.activationFunction, key: "activation_function", configPath: checkpoint.configURL.path)) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.layerNorm(p + "ln_1", size: d, eps: eps), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.layerNorm(p + "ln_2", size: d, eps: eps), feedForward: try feedForward()),
            residual: .sequential)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gpt2` or `gpt_bigcode` (GPTBigCodeConfig: GPT-2's keys
/// without `scale_attn_by_inverse_layer_idx`, plus `multi_query`, default
/// true, and the activation `gelu_pytorch_tanh` by default). Decoding
/// refuses sizes that cannot describe a model (`ConfigRules`): counts below
/// 1, `n_head` not dividing `n_embd` (as transformers requires), element
/// counts that overflow, a non-positive `layer_norm_epsilon`.
struct GPT2Configuration: Decodable {
    var modelType: String
    var nEmbd: Int
    var nLayer: Int
    var nHead: Int
    var nInner: Int?
    var nPositions: Int
    var vocabSize: Int
    var layerNormEpsilon: Double?
    var activationFunction: String
    var scaleAttnWeights: Bool?
    var scaleAttnByInverseLayerIdx: Bool?
    var tieWordEmbeddings: Bool?
    /// gpt_bigcode: one key/value head shared by all query heads (StarCoder,
    /// SantaCoder); false is multi-head attention with c_attn's rows per head.
    var multiQuery: Bool

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case nEmbd = "n_embd"
        case nLayer = "n_layer"
        case nHead = "n_head"
        case nInner = "n_inner"
        case nPositions = "n_positions"
        case vocabSize = "vocab_size"
        case layerNormEpsilon = "layer_norm_epsilon"
        case activationFunction = "activation_function"
        case scaleAttnWeights = "scale_attn_weights"
        case scaleAttnByInverseLayerIdx = "scale_attn_by_inverse_layer_idx"
        case tieWordEmbeddings = "tie_word_embeddings"
        case multiQuery = "multi_query"
        case addCrossAttention = "add_cross_attention"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decode(String.self, forKey: .modelType)
        let bigCode = modelType == "gpt_bigcode"
        nEmbd = try c.decode(Int.self, forKey: .nEmbd)
        nLayer = try c.decode(Int.self, forKey: .nLayer)
        nHead = try c.decode(Int.self, forKey: .nHead)
        nInner = try c.decodeIfPresent(Int.self, forKey: .nInner)
        nPositions = try c.decode(Int.self, forKey: .nPositions)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon)
        activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction)
            ?? (bigCode ? "gelu_pytorch_tanh" : "gelu_new")
        scaleAttnWeights = try c.decodeIfPresent(Bool.self, forKey: .scaleAttnWeights)
        // GPTBigCodeConfig has no such key: its attention never reads one.
        scaleAttnByInverseLayerIdx = bigCode ? nil : try c.decodeIfPresent(Bool.self, forKey: .scaleAttnByInverseLayerIdx)
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings)
        multiQuery = bigCode ? try c.decodeIfPresent(Bool.self, forKey: .multiQuery) ?? true : false
        let multiQuery = multiQuery, crossAttention = try c.decodeIfPresent(Bool.self, forKey: .addCrossAttention) ?? false
        try ConfigRules.decodingChecks {
            if multiQuery, crossAttention {
                // GPTBigCodeBlock raises NotImplementedError for this pair.
                throw InvalidConfigValue(
                    key: "add_cross_attention", problem: "is true with multi_query; GPTBigCodeBlock cannot build cross-attention for it")
            }
            try ConfigRules.count(nEmbd, "n_embd")
            try ConfigRules.count(nLayer, "n_layer")
            try ConfigRules.divides(nHead, "n_head", nEmbd, "n_embd")
            try ConfigRules.countIfPresent(nInner, "n_inner")
            try ConfigRules.count(nPositions, "n_positions")
            try ConfigRules.count(vocabSize, "vocab_size")
            try ConfigRules.product([(nEmbd, "n_embd"), (nEmbd, "n_embd"), (3, "q, k and v")])
            if let nInner {
                try ConfigRules.product([(nInner, "n_inner"), (nEmbd, "n_embd")])
            } else {
                try ConfigRules.product([(nEmbd, "n_embd"), (nEmbd, "n_embd"), (4, "4 (the default n_inner)")])
            }
            try ConfigRules.product([(nPositions, "n_positions"), (nEmbd, "n_embd")])
            try ConfigRules.product([(vocabSize, "vocab_size"), (nEmbd, "n_embd")])
            try ConfigRules.positiveIfPresent(layerNormEpsilon, "layer_norm_epsilon")
        }
    }

    /// The MLP width: `n_inner`, by default 4 · `n_embd`.
    var inner: Int { nInner ?? 4 * nEmbd }
}

/// GPT-2: learned positions, pre-LayerNorm blocks, Conv1D projections
/// (weights stored [in, out]), fused c_attn split into q | k | v.
/// GPTBigCode (`gpt_bigcode`, transformers' models/gpt_bigcode/
/// modeling_gpt_bigcode.py) is the same block with nn.Linear projections
/// (weights [out, in]) and, by `multi_query`, one key/value head: c_attn's
/// rows are the queries, then the one key head, then the one value head;
/// without it they are [q_h, k_h, v_h] for each head h.
struct GPT2Model: RegisteredModel {
    public let checkpoint: Checkpoint
    let config: GPT2Configuration
    let weights: Weights

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        config = try checkpoint.decodeConfig(GPT2Configuration.self)
        configuredDrops = try DropPlan(config: checkpoint, layerCount: config.nLayer)
        weights = try Weights(
            checkpoint, probe: "wte.weight", candidates: ["transformer.", ""],
            tiedHead: config.tieWordEmbeddings ?? true ? ["lm_head.weight"] : [])
        try weights.confirmLayers(Self.naming(weights.prefix), count: config.nLayer, drops: configuredDrops, configPath: configPath)
        try weights.confirmShape("wte.weight", [config.vocabSize, config.nEmbd], keys: "vocab_size, n_embd", configPath: configPath)
        try weights.confirmShape("wpe.weight", [config.nPositions, config.nEmbd], keys: "n_positions, n_embd", configPath: configPath)
        try weights.confirmStoredOutputShapes(hidden: config.nEmbd, vocabulary: config.vocabSize, finalNorm: "ln_f")
    }

    public var modelType: String { config.modelType }
    public var layerCount: Int { config.nLayer }
    public var hiddenSize: Int { config.nEmbd }
    public var vocabularySize: Int { config.vocabSize }
    public var maxPositions: Int { config.nPositions }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let d = config.nEmbd
        var tokens = try gatherRows(try weights.tensor("wte.weight", [config.vocabSize, d]), ids: batch.tokenIDs, width: d)
        let positions = try gatherRows(try weights.tensor("wpe.weight", [config.nPositions, d]), ids: batch.positions, width: d)
        tokens.add(positions)
        return tokens
    }

    public var layerNaming: LayerNaming {
        var naming = Self.naming(weights.prefix)
        if config.scaleAttnByInverseLayerIdx == true {
            naming.inverseLayerIndexQuery = .init(weight: "attn.c_attn.weight", bias: "attn.c_attn.bias", queryWidth: config.nEmbd)
        }
        return naming
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(prefix: prefix + "h.", attention: ["attn.", "ln_1."], mlp: ["mlp.", "ln_2."], layerCountKeys: ["n_layer", "num_hidden_layers"])
    }

    public func head() throws -> OutputHead {
        let d = config.nEmbd
        // GPT2LMHeadModel ties lm_head to wte (transformers' default) and saves only wte.
        return OutputHead(
            norm: try weights.layerNorm("ln_f", size: d, eps: config.layerNormEpsilon ?? 1e-5),
            projection: try weights.head(tiedTo: "wte", tied: config.tieWordEmbeddings ?? true, hidden: d, vocabulary: config.vocabSize))
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = config.nEmbd, heads = config.nHead, headDim = d / heads
        let inner = config.inner
        let eps = config.layerNormEpsilon ?? 1e-5
        let p = "h.\(index)."
        var scale: Float = config.scaleAttnWeights ?? true ? 1 / Float(headDim).squareRoot() : 1
        if config.scaleAttnByInverseLayerIdx == true { scale /= Float(index + 1) }
        // GPT-2's Conv1D stores [in, out]; GPTBigCode's nn.Linear [out, in].
        let bigCode = config.modelType == "gpt_bigcode"
        func projection(_ name: String, in inFeatures: Int, out outFeatures: Int) throws -> Linear {
            bigCode ? try weights.linear(p + name, in: inFeatures, out: outFeatures, bias: true)
                : try weights.conv1D(p + name, in: inFeatures, out: outFeatures)
        }
        let layout = config.multiQuery ? QKVLayout(numHeads: heads, numKVHeads: 1, headDim: headDim)
            : QKVLayout(numHeads: heads, numKVHeads: heads, headDim: headDim, arrangement: bigCode ? .interleavedPerHead : .grouped)
        func attention() throws -> SelfAttention { SelfAttention(
            qkv: try projection("attn.c_attn", in: d, out: layout.width),
            layout: layout,
            rotary: nil,
            output: try projection("attn.c_proj", in: d, out: d),
            scale: scale) }
        func feedForward() throws -> FeedForward { FeedForward.plain(
            up: try projection("mlp.c_fc", in: d, out: inner),
            down: try projection("mlp.c_proj", in: inner, out: d),
            activation: try Activation(
                huggingFaceName: config.activationFunction, key: "activation_function", configPath: checkpoint.configURL.path)) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil
                : AttentionBranch(inputNorm: try weights.layerNorm(p + "ln_1", size: d, eps: eps), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil
                : MLPBranch(inputNorm: try weights.layerNorm(p + "ln_2", size: d, eps: eps), feedForward: try feedForward()),
            residual: .sequential)
    }
}

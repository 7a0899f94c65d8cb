import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gptj` and `codegen`, with GPTJConfig's and
/// CodeGenConfig's defaults (the same) for the keys it omits. Decoding
/// refuses sizes that cannot describe a model (`ConfigRules`): counts below
/// 1, `n_head` not dividing `n_embd`, element counts that overflow, a
/// non-positive `layer_norm_epsilon`, and a `rotary_dim` the attention
/// cannot apply (null, which the config classes refuse, odd, 0, or wider
/// than a head).
struct GPTJConfiguration: Decodable {
    var nEmbd: Int
    var nLayer: Int
    var nHead: Int
    var nInner: Int
    var nPositions: Int
    var vocabSize: Int
    var rotaryDim: Int
    var layerNormEpsilon: Double
    var activationFunction: String
    var tieWordEmbeddings: Bool

    enum CodingKeys: String, CodingKey {
        case nEmbd = "n_embd"
        case nLayer = "n_layer"
        case nHead = "n_head"
        case nInner = "n_inner"
        case nPositions = "n_positions"
        case vocabSize = "vocab_size"
        case rotaryDim = "rotary_dim"
        case layerNormEpsilon = "layer_norm_epsilon"
        case activationFunction = "activation_function"
        case tieWordEmbeddings = "tie_word_embeddings"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        nEmbd = try c.decodeIfPresent(Int.self, forKey: .nEmbd) ?? 4096
        nLayer = try c.decodeIfPresent(Int.self, forKey: .nLayer) ?? 28
        nHead = try c.decodeIfPresent(Int.self, forKey: .nHead) ?? 16
        let inner = try c.decodeIfPresent(Int.self, forKey: .nInner)
        nInner = inner ?? 4 * nEmbd
        nPositions = try c.decodeIfPresent(Int.self, forKey: .nPositions) ?? 2048
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? 50400
        rotaryDim = try c.decodeCount(.rotaryDim, default: 64)
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? 1e-5
        activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? "gelu_new"
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        let d = nEmbd, layers = nLayer, heads = nHead, positions = nPositions, vocabulary = vocabSize
        let rotary = rotaryDim, eps = layerNormEpsilon
        try ConfigRules.decodingChecks {
            try ConfigRules.count(d, "n_embd")
            try ConfigRules.count(layers, "n_layer")
            try ConfigRules.divides(heads, "n_head", d, "n_embd")
            try ConfigRules.countIfPresent(inner, "n_inner")
            try ConfigRules.count(positions, "n_positions")
            try ConfigRules.count(vocabulary, "vocab_size")
            try ConfigRules.product([(d, "n_embd"), (d, "n_embd"), (4, "q, k, v and out_proj")])
            if let inner {
                try ConfigRules.product([(inner, "n_inner"), (d, "n_embd")])
            } else {
                try ConfigRules.product([(d, "n_embd"), (d, "n_embd"), (4, "4 (the default n_inner)")])
            }
            try ConfigRules.product([(vocabulary, "vocab_size"), (d, "n_embd")])
            try ConfigRules.positive(eps, "layer_norm_epsilon")
            // The sin/cos table is rotary_dim wide (0: n_embd wide, which no head of several matches).
            guard rotary >= 1, rotary % 2 == 0, rotary <= d / heads else {
                throw InvalidConfigValue(
                    key: "rotary_dim",
                    problem: "is \(rotary); the attention rotates an even number of each head's \(d / heads) dimensions, at least 2")
            }
        }
    }
}

/// GPT-J (EleutherAI/gpt-j-6b), as transformers' models/gptj/modeling_gptj.py
/// runs it: a parallel block, attention and MLP both reading one `ln_1`
/// (y = x + attn(ln_1 x) + mlp(ln_1 x)); q/k/v and out_proj without biases;
/// rotary (base 10000) on the first `rotary_dim` dimensions of each head in
/// the interleaved form (pairs 2i, 2i + 1: rotate_every_two); the MLP
/// `fc_out(act(fc_in x))` with biases; no position embedding; the head
/// `lm_head` has a bias and is untied unless config.json ties it.
///
/// CodeGen (`codegen`: Salesforce's CodeGen-350M … 16B, mono / multi / nl,
/// transformers' models/codegen) is the same block with q, v and k in one
/// `qkv_proj` laid out for 4 model-parallel shards (CodeGenAttention's
/// `mp_num`): its rows are 4 runs of [q, v, k] rows, n_embd / 4 each,
/// which concatenated give q, v and k (so `n_embd` must be a multiple of
/// 4); its scores scaled by head_dim^−½.
struct GPTJModel: RegisteredModel {
    public let checkpoint: Checkpoint
    let config: GPTJConfiguration
    let weights: Weights
    let rotary: RotaryEmbedding

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        config = try checkpoint.decodeConfig(GPTJConfiguration.self)
        if checkpoint.modelType == "codegen", config.nEmbd % Self.codeGenShards != 0 {
            // CodeGenAttention views qkv_proj's output as shards of 3 × (n_embd // 4), which then fails.
            throw InvalidConfigValue(key: "n_embd", problem: "must be a multiple of CodeGen's 4 qkv_proj shards, got \(config.nEmbd)")
                .error(path: configPath)
        }
        configuredDrops = try DropPlan(config: checkpoint, layerCount: config.nLayer)
        weights = try Weights(
            checkpoint, probe: "wte.weight", candidates: ["transformer.", ""],
            tiedHead: config.tieWordEmbeddings ? ["lm_head.weight"] : [])
        try weights.confirmLayers(Self.naming(weights.prefix), count: config.nLayer, drops: configuredDrops, configPath: configPath)
        try weights.confirmShape("wte.weight", [config.vocabSize, config.nEmbd], keys: "vocab_size, n_embd", configPath: configPath)
        try weights.confirmStoredOutputShapes(hidden: config.nEmbd, vocabulary: config.vocabSize, finalNorm: "ln_f")
        // create_sinusoidal_positions: 1 / 10000^(2i / rotary_dim) in float32.
        rotary = RotaryEmbedding(
            inverseFrequencies: RotaryEmbedding.defaultInverseFrequencies(base: 10000, rotaryDim: config.rotaryDim),
            headDim: config.nEmbd / config.nHead)
    }

    public var modelType: String { checkpoint.modelType }

    /// CodeGenAttention's `mp_num`: the shards of its qkv_proj rows.
    static let codeGenShards = 4
    public var layerCount: Int { config.nLayer }
    public var hiddenSize: Int { config.nEmbd }
    public var vocabularySize: Int { config.vocabSize }
    /// GPTJAttention's sin/cos table has n_positions rows.
    public var maxPositions: Int { config.nPositions }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let d = config.nEmbd
        return try gatherRows(try weights.tensor("wte.weight", [config.vocabSize, d]), ids: batch.tokenIDs, width: d)
    }

    public var layerNaming: LayerNaming { Self.naming(weights.prefix) }

    /// The one `ln_1` both branches read belongs to neither.
    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(prefix: prefix + "h.", attention: ["attn."], mlp: ["mlp."], layerCountKeys: ["n_layer", "num_hidden_layers"])
    }

    public func head() throws -> OutputHead {
        let d = config.nEmbd
        return OutputHead(
            norm: try weights.layerNorm("ln_f", size: d, eps: config.layerNormEpsilon),
            projection: try weights.head(
                tiedTo: "wte", tied: config.tieWordEmbeddings, hidden: d, vocabulary: config.vocabSize, bias: true))
    }

    /// CodeGen's `qkv_proj` [3 × n_embd, n_embd] as q | k | v: each of its
    /// shards of rows is [q, v, k], n_embd / 4 rows each.
    private func codeGenQKV(_ name: String) throws -> Linear {
        let d = config.nEmbd, local = d / Self.codeGenShards
        // Shard m's q rows start at 3·local·m, its v rows local later, its k rows 2·local later.
        return try weights.linear(name, in: d, out: 3 * d, bias: false).rearrangingRows { values, width in
            [0, 2, 1].flatMap { part in
                (0..<Self.codeGenShards).flatMap { shard in
                    let start = (3 * shard + part) * local * width
                    return values[start..<(start + local * width)]
                }
            }
        }
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = config.nEmbd, heads = config.nHead, headDim = d / heads, eps = config.layerNormEpsilon
        let p = "h.\(index)."
        let layout = QKVLayout(numHeads: heads, numKVHeads: heads, headDim: headDim)
        func attention() throws -> SelfAttention {
            let isCodeGen = modelType == "codegen"
            let qkv = isCodeGen ? try codeGenQKV(p + "attn.qkv_proj") : try weights.stackedQKV(p + "attn.", hidden: d, layout: layout, bias: false)
            return SelfAttention(
                qkv: DecoderParts.interleavingPairs(qkv, layout: layout, rotaryDim: rotary.rotaryDim),
                layout: layout, rotary: rotary,
                output: try weights.linear(p + "attn.out_proj", in: d, out: d, bias: false),
                // GPTJAttention divides by √head_dim, CodeGenAttention multiplies by head_dim ** -0.5 (Python floats).
                scale: isCodeGen ? Float(pow(Double(headDim), -0.5)) : 1 / Float(Double(headDim).squareRoot()))
        }
        func feedForward() throws -> FeedForward { FeedForward.plain(
            up: try weights.linear(p + "mlp.fc_in", in: d, out: config.nInner, bias: true),
            down: try weights.linear(p + "mlp.fc_out", in: config.nInner, out: d, bias: true),
            activation: try Activation(huggingFaceName: config.activationFunction, key: "activation_function", configPath: checkpoint.configURL.path)) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.layerNorm(p + "ln_1", size: d, eps: eps), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.layerNorm(p + "ln_1", size: d, eps: eps), feedForward: try feedForward()),
            residual: .parallel)
    }
}

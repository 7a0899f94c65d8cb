import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `opt`, with OPTConfig's defaults for the keys it may omit.
/// Decoding refuses sizes that cannot describe a model (`ConfigRules`):
/// counts below 1, `num_attention_heads` not dividing `hidden_size` (as
/// OPTAttention requires), element counts that overflow.
struct OptConfiguration: Decodable {
    var vocabSize: Int
    var hiddenSize: Int
    var numHiddenLayers: Int
    var ffnDim: Int
    /// Positions the learned table covers; it stores 2 rows more (`embed_positions`' offset).
    var maxPositionEmbeddings: Int
    var numAttentionHeads: Int
    /// Pre-LN blocks (every OPT but 350m); false: post-LN, the norm after each add.
    var doLayerNormBefore: Bool
    /// No final norm although the blocks are pre-LN (checkpoints fine-tuned
    /// before transformers 4.20.1).
    var removeFinalLayerNorm: Bool
    /// The token embedding's width (OPT-350m: 512 under a 1024-wide stream):
    /// `project_in` widens it, `project_out` narrows the stream back before
    /// the head. `hidden_size` when absent or null.
    var wordEmbedProjDim: Int
    var activationFunction: String
    /// Biases on q/k/v/out_proj, fc1 and fc2.
    var enableBias: Bool
    /// LayerNorms with a weight and a bias; false: neither.
    var layerNormElementwiseAffine: Bool
    var tieWordEmbeddings: Bool

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case ffnDim = "ffn_dim"
        case maxPositionEmbeddings = "max_position_embeddings"
        case numAttentionHeads = "num_attention_heads"
        case doLayerNormBefore = "do_layer_norm_before"
        case removeFinalLayerNorm = "_remove_final_layer_norm"
        case wordEmbedProjDim = "word_embed_proj_dim"
        case activationFunction = "activation_function"
        case enableBias = "enable_bias"
        case layerNormElementwiseAffine = "layer_norm_elementwise_affine"
        case tieWordEmbeddings = "tie_word_embeddings"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        ffnDim = try c.decode(Int.self, forKey: .ffnDim)
        maxPositionEmbeddings = try c.decode(Int.self, forKey: .maxPositionEmbeddings)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        doLayerNormBefore = try c.decodeIfPresent(Bool.self, forKey: .doLayerNormBefore) ?? true
        removeFinalLayerNorm = try c.decodeIfPresent(Bool.self, forKey: .removeFinalLayerNorm) ?? false
        wordEmbedProjDim = try c.decodeIfPresent(Int.self, forKey: .wordEmbedProjDim) ?? hiddenSize
        activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? "relu"
        enableBias = try c.decodeIfPresent(Bool.self, forKey: .enableBias) ?? true
        layerNormElementwiseAffine = try c.decodeIfPresent(Bool.self, forKey: .layerNormElementwiseAffine) ?? true
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        let (vocab, hidden, layers, ffn, positions, heads, embedding) = (
            vocabSize, hiddenSize, numHiddenLayers, ffnDim, maxPositionEmbeddings, numAttentionHeads, wordEmbedProjDim)
        try ConfigRules.decodingChecks {
            try ConfigRules.count(vocab, "vocab_size")
            try ConfigRules.count(hidden, "hidden_size")
            try ConfigRules.count(layers, "num_hidden_layers")
            try ConfigRules.count(ffn, "ffn_dim")
            try ConfigRules.count(positions, "max_position_embeddings")
            try ConfigRules.divides(heads, "num_attention_heads", hidden, "hidden_size")
            try ConfigRules.count(embedding, "word_embed_proj_dim")
            try ConfigRules.product([(hidden, "hidden_size"), (hidden, "hidden_size"), (4, "q, k, v and out_proj")])
            try ConfigRules.product([(ffn, "ffn_dim"), (hidden, "hidden_size"), (2, "fc1 and fc2")])
            // The table holds max_position_embeddings + 2 rows.
            try ConfigRules.product([(positions, "max_position_embeddings"), (hidden, "hidden_size"), (2, "the offset of 2 rows")])
            try ConfigRules.product([(vocab, "vocab_size"), (embedding, "word_embed_proj_dim")])
            try ConfigRules.product([(embedding, "word_embed_proj_dim"), (hidden, "hidden_size")])
        }
    }

    /// The final `final_layer_norm` exists (OPTDecoder builds it only for pre-LN blocks).
    var hasFinalNorm: Bool { doLayerNormBefore && !removeFinalLayerNorm }
    /// `project_in` and `project_out` exist.
    var projectsEmbedding: Bool { wordEmbedProjDim != hiddenSize }
}

/// OPT (facebook/opt-125m … 66b), as transformers' `models/opt/modeling_opt.py`:
/// learned positions read at position + 2, LayerNorms (with weight and bias
/// unless `layer_norm_elementwise_affine` is false), multi-head attention
/// with biases (`enable_bias`) scaled by head_dim^-0.5, a plain MLP
/// `fc2(act(fc1 x))` (ReLU by default), a head tied to the embedding by
/// default. Names under `model.decoder.` (OPTForCausalLM) or `decoder.` (OPTModel).
///
/// `do_layer_norm_before` true (pre-LN): H = X + Attn(LN₁ X), Y = H + FC(LN₂ H),
/// then the decoder's `final_layer_norm` (unless `_remove_final_layer_norm`).
/// False (OPT-350m, post-LN): H = LN₁(X + Attn X), Y = LN₂(H + FC H), no final
/// norm. Each LN is the branch's, so a dropped branch skips it too: its
/// sublayer, norm and all, is gone, as when LLM-Drop deletes the layer's attention.
///
/// `word_embed_proj_dim` ≠ `hidden_size` (OPT-350m): the embedding is
/// [vocab, word_embed_proj_dim], widened by `project_in` before the positions
/// are added and narrowed by `project_out` before the head.
struct OptModel: RegisteredModel {
    let checkpoint: Checkpoint
    let config: OptConfiguration
    let weights: Weights
    let configuredDrops: DropPlan
    let layer: FairseqDecoderLayer

    /// OPTLearnedPositionalEmbedding's offset: position p reads row p + 2.
    static let positionOffset = 2

    /// - Throws: `DroptraceError` naming config.json for sizes that cannot
    ///   describe a model or that the tensors contradict, or naming the
    ///   weights when the embedding is missing.
    init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        config = try checkpoint.decodeConfig(OptConfiguration.self)
        configuredDrops = try DropPlan(config: checkpoint, layerCount: config.numHiddenLayers)
        weights = try Weights(
            checkpoint, probe: "embed_tokens.weight", candidates: ["model.decoder.", "decoder."],
            tiedHead: config.tieWordEmbeddings ? ["lm_head.weight"] : [])
        let c = config, d = c.hiddenSize, e = c.wordEmbedProjDim
        try weights.confirmLayers(Self.naming(weights.prefix), count: c.numHiddenLayers, drops: configuredDrops, configPath: configPath)
        try weights.confirmShape(
            "embed_tokens.weight", [c.vocabSize, e], keys: c.projectsEmbedding ? "vocab_size, word_embed_proj_dim" : "vocab_size, hidden_size",
            configPath: configPath)
        try weights.confirmShape(
            "embed_positions.weight", [c.maxPositionEmbeddings + Self.positionOffset, d],
            keys: "max_position_embeddings (+ 2), hidden_size", configPath: configPath)
        if c.projectsEmbedding {
            try weights.confirmShape("project_in.weight", [d, e], keys: "hidden_size, word_embed_proj_dim", configPath: configPath)
            try weights.confirmShape("project_out.weight", [e, d], keys: "word_embed_proj_dim, hidden_size", configPath: configPath)
        }
        try weights.confirmStoredOutputShapes(hidden: e, vocabulary: c.vocabSize, finalNorm: "final_layer_norm", normWidth: d)
        layer = FairseqDecoderLayer(
            weights: weights, hiddenSize: d, heads: c.numAttentionHeads, ffnDim: c.ffnDim, bias: c.enableBias,
            activation: try Activation(huggingFaceName: c.activationFunction, key: "activation_function", configPath: configPath),
            preLN: c.doLayerNormBefore, affineNorms: c.layerNormElementwiseAffine)
    }

    var modelType: String { "opt" }
    var layerCount: Int { config.numHiddenLayers }
    var hiddenSize: Int { config.hiddenSize }
    var vocabularySize: Int { config.vocabSize }
    var maxPositions: Int { config.maxPositionEmbeddings }

    /// [tokens, hidden_size]: `project_in`(embed_tokens[id]) + embed_positions[position + 2],
    /// as OPTDecoder sums them.
    func embed(_ batch: TokenBatch) throws -> Matrix {
        let c = config, d = c.hiddenSize, e = c.wordEmbedProjDim
        let rows = try gatherRows(try weights.tensor("embed_tokens.weight", [c.vocabSize, e]), ids: batch.tokenIDs, width: e)
        var tokens = c.projectsEmbedding ? try weights.linear("project_in", in: e, out: d, bias: false)(rows) : rows
        let positions = try gatherRows(
            try weights.tensor("embed_positions.weight", [c.maxPositionEmbeddings + Self.positionOffset, d]),
            ids: batch.positions.map { $0 + Self.positionOffset }, width: d)
        tokens.add(positions)
        return tokens
    }

    var layerNaming: LayerNaming { Self.naming(weights.prefix) }

    static func naming(_ prefix: String) -> LayerNaming { FairseqDecoderLayer.naming(prefix, layerCountKey: "num_hidden_layers") }

    /// The decoder's `final_layer_norm` (pre-LN only), `project_out` where the
    /// embedding is narrower, and `lm_head` [vocab, word_embed_proj_dim] (the
    /// embedding when tied and not stored).
    func head() throws -> OutputHead {
        let c = config
        return OutputHead(
            norm: c.hasFinalNorm ? try layer.layerNorm("final_layer_norm") : nil,
            projectOut: c.projectsEmbedding ? try weights.linear("project_out", in: c.hiddenSize, out: c.wordEmbedProjDim, bias: false) : nil,
            projection: try weights.head(
                tiedTo: "embed_tokens", tied: c.tieWordEmbeddings, hidden: c.wordEmbedProjDim, vocabulary: c.vocabSize))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try layer.block(index, drops: plan.union(configuredDrops))
    }
}

/// The decoder layer OPT and XGLM keep from fairseq's TransformerDecoderLayer:
/// `self_attn` (q/k/v/out_proj, multi-head, scaled by head_dim^-0.5, no
/// positions of its own) with `self_attn_layer_norm`, and `fc2(act(fc1 x))`
/// with `final_layer_norm`, each norm before its sublayer (pre-LN) or after
/// the add (post-LN, OPT-350m). Each norm belongs to its branch, so a
/// dropped branch skips it too.
struct FairseqDecoderLayer {
    let weights: Weights
    let hiddenSize: Int
    let heads: Int
    let ffnDim: Int
    /// Biases on q/k/v/out_proj, fc1 and fc2.
    let bias: Bool
    let activation: Activation
    let preLN: Bool
    /// LayerNorms with a weight and a bias; false: neither (OPT's `layer_norm_elementwise_affine`).
    let affineNorms: Bool

    /// nn.LayerNorm(hidden_size) named `name` (without `.weight`) at its
    /// default epsilon 1e-5; without parameters unless `affineNorms`.
    func layerNorm(_ name: String) throws -> Normalization {
        affineNorms ? try weights.layerNorm(name, size: hiddenSize, eps: 1e-5) : .parameterFreeLayer(size: hiddenSize, eps: 1e-5)
    }

    /// Each branch owns the LayerNorm of its sublayer, before it (pre-LN) or after the add (post-LN).
    static func naming(_ prefix: String, layerCountKey: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "self_attn_layer_norm."],
            mlp: ["fc1.", "fc2.", "final_layer_norm."], layerCountKeys: [layerCountKey])
    }

    /// Layer `index` under `layers.<index>.`, without the sublayers `drops` removes.
    func block(_ index: Int, drops: DropPlan) throws -> TransformerBlock {
        let d = hiddenSize, headDim = d / heads
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention {
            let layout = QKVLayout(numHeads: heads, numKVHeads: heads, headDim: headDim)
            // The attention scales the queries, this engine the scores: the same
            // product, rounded alike when head_dim is a power of 4 (64 in every OPT).
            return SelfAttention(
                qkv: try weights.stackedQKV(p + "self_attn.", hidden: d, layout: layout, bias: bias),
                layout: layout, rotary: nil,
                output: try weights.linear(p + "self_attn.out_proj", in: d, out: d, bias: bias),
                scale: 1 / Float(headDim).squareRoot())
        }
        func feedForward() throws -> FeedForward {
            .plain(
                up: try weights.linear(p + "fc1", in: d, out: ffnDim, bias: bias),
                down: try weights.linear(p + "fc2", in: ffnDim, out: d, bias: bias),
                activation: activation)
        }
        // Pre-LN: each norm reads the stream before its sublayer; post-LN: the stream after the add.
        func attentionBranch() throws -> AttentionBranch {
            let norm = try layerNorm(p + "self_attn_layer_norm")
            return AttentionBranch(inputNorm: preLN ? norm : nil, attention: try attention(), residualNorm: preLN ? nil : norm)
        }
        func mlpBranch() throws -> MLPBranch {
            let norm = try layerNorm(p + "final_layer_norm")
            return MLPBranch(inputNorm: preLN ? norm : nil, feedForward: try feedForward(), residualNorm: preLN ? nil : norm)
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : try attentionBranch(),
            mlp: drops.dropsMLP(index) ? nil : try mlpBranch(),
            residual: .sequential)
    }
}

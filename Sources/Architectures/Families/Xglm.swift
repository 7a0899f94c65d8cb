import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `xglm`, with XGLMConfig's defaults for the keys it may
/// omit (its aliases `hidden_size`, `num_attention_heads` and
/// `num_hidden_layers` are read as `d_model`, `attention_heads` and
/// `num_layers`). Decoding refuses sizes that cannot describe a model
/// (`ConfigRules`): counts below 1, `attention_heads` not dividing `d_model`
/// (as XGLMAttention requires), a `d_model` of 2 or 3 (the sinusoid's
/// log(10000) / (d_model / 2 − 1) divides by zero), element counts that
/// overflow, and a `pad_token_id` outside the position table.
struct XglmConfiguration: Decodable {
    var vocabSize: Int
    var dModel: Int
    var numLayers: Int
    var ffnDim: Int
    /// Positions the sinusoid table covers; it holds 2 rows more (the offset).
    var maxPositionEmbeddings: Int
    var attentionHeads: Int
    var activationFunction: String
    /// The token embedding multiplied by √d_model.
    var scaleEmbedding: Bool
    /// The row of the position table XGLMSinusoidalPositionalEmbedding
    /// zeroes (its `padding_idx`): 1 by default, which no position reads
    /// (they start at row 2); null zeroes none.
    var padTokenID: Int?
    var tieWordEmbeddings: Bool

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case dModel = "d_model"
        case numLayers = "num_layers"
        case ffnDim = "ffn_dim"
        case maxPositionEmbeddings = "max_position_embeddings"
        case attentionHeads = "attention_heads"
        case activationFunction = "activation_function"
        case scaleEmbedding = "scale_embedding"
        case padTokenID = "pad_token_id"
        case tieWordEmbeddings = "tie_word_embeddings"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        dModel = try c.decode(Int.self, forKey: .dModel)
        numLayers = try c.decode(Int.self, forKey: .numLayers)
        ffnDim = try c.decode(Int.self, forKey: .ffnDim)
        maxPositionEmbeddings = try c.decode(Int.self, forKey: .maxPositionEmbeddings)
        attentionHeads = try c.decode(Int.self, forKey: .attentionHeads)
        activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? "gelu"
        scaleEmbedding = try c.decodeIfPresent(Bool.self, forKey: .scaleEmbedding) ?? true
        padTokenID = c.contains(.padTokenID) ? try c.decodeIfPresent(Int.self, forKey: .padTokenID) : 1
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        let (vocab, hidden, layers, ffn, positions, heads, pad) = (
            vocabSize, dModel, numLayers, ffnDim, maxPositionEmbeddings, attentionHeads, padTokenID)
        try ConfigRules.decodingChecks {
            try ConfigRules.count(vocab, "vocab_size")
            try ConfigRules.count(hidden, "d_model")
            if hidden / 2 == 1 {
                throw InvalidConfigValue(
                    key: "d_model", problem: "is \(hidden): XGLM's sinusoid divides log(10000) by d_model / 2 − 1, which is 0")
            }
            try ConfigRules.count(layers, "num_layers")
            try ConfigRules.count(ffn, "ffn_dim")
            try ConfigRules.count(positions, "max_position_embeddings")
            try ConfigRules.divides(heads, "attention_heads", hidden, "d_model")
            try ConfigRules.product([(hidden, "d_model"), (hidden, "d_model"), (4, "q, k, v and out_proj")])
            try ConfigRules.product([(ffn, "ffn_dim"), (hidden, "d_model"), (2, "fc1 and fc2")])
            let (rows, overflow) = positions.addingReportingOverflow(XglmModel.positionOffset)
            guard !overflow else {
                throw InvalidConfigValue(key: "max_position_embeddings", problem: "is too large: \(positions) + 2 rows does not fit in 64 bits")
            }
            try ConfigRules.product([(vocab, "vocab_size"), (hidden, "d_model")])
            // The table zeroes row padding_idx as Python indexes it: the model cannot be built beyond it.
            if let pad, pad >= rows || pad < -rows {
                throw InvalidConfigValue(
                    key: "pad_token_id",
                    problem: "is \(pad), outside XGLM's sinusoid table of max_position_embeddings + 2 = \(rows) rows, "
                        + "whose row pad_token_id transformers zeroes; set it in [-\(rows), \(rows - 1)], or to null")
            }
        }
    }

    /// The row of the position table that holds zeros, counted from 0.
    var zeroedPositionRow: Int? {
        padTokenID.map { $0 < 0 ? $0 + maxPositionEmbeddings + XglmModel.positionOffset : $0 }
    }
}

/// XGLM (facebook/xglm-564M … 7.5B), as transformers' `models/xglm/modeling_xglm.py`:
/// fairseq's pre-LN decoder (`FairseqDecoderLayer`: LayerNorms with biases,
/// multi-head q/k/v/out_proj with biases scaled by head_dim^-0.5,
/// `fc2(gelu(fc1 x))`), the token embedding scaled by √d_model
/// (`scale_embedding`), fixed sinusoidal positions read at position + 2, a
/// final `layer_norm`, a head tied to the embedding by default. Names under
/// `model.` (XGLMForCausalLM) or none (XGLMModel).
struct XglmModel: RegisteredModel {
    let checkpoint: Checkpoint
    let config: XglmConfiguration
    let weights: Weights
    let configuredDrops: DropPlan
    let layer: FairseqDecoderLayer

    /// XGLMSinusoidalPositionalEmbedding's offset: position p reads row p + 2.
    static let positionOffset = 2

    /// - Throws: `DroptraceError` naming config.json for sizes that cannot
    ///   describe a model or that the tensors contradict, or naming the
    ///   weights when the embedding is missing.
    init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        config = try checkpoint.decodeConfig(XglmConfiguration.self)
        configuredDrops = try DropPlan(config: checkpoint, layerCount: config.numLayers)
        weights = try Weights(
            checkpoint, probe: "embed_tokens.weight", candidates: ["model.", ""],
            tiedHead: config.tieWordEmbeddings ? ["lm_head.weight"] : [])
        let c = config
        try weights.confirmLayers(Self.naming(weights.prefix), count: c.numLayers, drops: configuredDrops, configPath: configPath)
        try weights.confirmShape("embed_tokens.weight", [c.vocabSize, c.dModel], keys: "vocab_size, d_model", configPath: configPath)
        try weights.confirmStoredOutputShapes(hidden: c.dModel, vocabulary: c.vocabSize, finalNorm: "layer_norm")
        layer = FairseqDecoderLayer(
            weights: weights, hiddenSize: c.dModel, heads: c.attentionHeads, ffnDim: c.ffnDim, bias: true,
            activation: try Activation(huggingFaceName: c.activationFunction, key: "activation_function", configPath: configPath),
            preLN: true, affineNorms: true)
    }

    var modelType: String { "xglm" }
    var layerCount: Int { config.numLayers }
    var hiddenSize: Int { config.dModel }
    var vocabularySize: Int { config.vocabSize }
    /// The sinusoid extends past the table, but the model was trained to this length.
    var maxPositions: Int { config.maxPositionEmbeddings }

    /// [tokens, d_model]: embed_tokens[id] · √d_model + sinusoid(position + 2), as XGLMModel sums them.
    func embed(_ batch: TokenBatch) throws -> Matrix {
        let d = config.dModel
        var tokens = try gatherRows(try weights.tensor("embed_tokens.weight", [config.vocabSize, d]), ids: batch.tokenIDs, width: d)
            .scaled(by: config.scaleEmbedding ? Float(Double(d).squareRoot()) : nil)
        tokens.add(Self.sinusoids(rows: batch.positions.map { $0 + Self.positionOffset }, width: d, zeroedRow: config.zeroedPositionRow))
        return tokens
    }

    /// [rows.count, width]: rows of XGLMSinusoidalPositionalEmbedding's
    /// table (tensor2tensor's layout: sin of every frequency, then cos, a
    /// zero column when `width` is odd), computed in float32 as
    /// `get_embedding` does: frequency i = exp(i · −log(10000) / (width/2 − 1)),
    /// angle = row · frequency; `zeroedRow` (its `padding_idx`) all zeros.
    static func sinusoids(rows: [Int], width: Int, zeroedRow: Int?) -> Matrix {
        let half = width / 2
        let step = Float(-log(10000.0) / Double(half - 1))
        let frequencies = (0..<half).map { exp(Float($0) * step) }
        return Matrix(uninitialized: rows.count, width) { out in
            for (index, row) in rows.enumerated() {
                let line = out + index * width
                line.initialize(repeating: 0, count: width)
                guard row != zeroedRow else { continue }
                for (i, frequency) in frequencies.enumerated() {
                    let angle = Float(row) * frequency
                    line[i] = sin(angle)
                    line[half + i] = cos(angle)
                }
            }
        }
    }

    var layerNaming: LayerNaming { Self.naming(weights.prefix) }

    static func naming(_ prefix: String) -> LayerNaming { FairseqDecoderLayer.naming(prefix, layerCountKey: "num_layers") }

    /// The model's `layer_norm`, and `lm_head` [vocab, d_model] (the embedding when tied and not stored).
    func head() throws -> OutputHead {
        OutputHead(
            norm: try layer.layerNorm("layer_norm"),
            projection: try weights.head(tiedTo: "embed_tokens", tied: config.tieWordEmbeddings, hidden: config.dModel, vocabulary: config.vocabSize))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try layer.block(index, drops: plan.union(configuredDrops))
    }
}

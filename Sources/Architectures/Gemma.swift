import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gemma`.
struct GemmaConfiguration: Decodable {
    var hiddenSize: Int
    var numHiddenLayers: Int
    var numAttentionHeads: Int
    var numKeyValueHeads: Int?
    var headDim: Int?
    var intermediateSize: Int
    var rmsNormEps: Double
    var vocabSize: Int
    var maxPositionEmbeddings: Int
    var hiddenAct: String?
    var hiddenActivation: String?
    var attentionBias: Bool?

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case intermediateSize = "intermediate_size"
        case rmsNormEps = "rms_norm_eps"
        case vocabSize = "vocab_size"
        case maxPositionEmbeddings = "max_position_embeddings"
        case hiddenAct = "hidden_act"
        case hiddenActivation = "hidden_activation"
        case attentionBias = "attention_bias"
    }

    var kvHeads: Int { numKeyValueHeads ?? numAttentionHeads }
    var resolvedHeadDim: Int { headDim ?? hiddenSize / numAttentionHeads }

    /// The GeGLU nonlinearity. The first Gemma configs say `hidden_act:
    /// "gelu"` but were trained with the tanh approximation, which
    /// `hidden_activation` (when set) names; transformers reads "gelu" as
    /// the approximation too.
    var activationName: String {
        if let hiddenActivation { return hiddenActivation }
        guard let hiddenAct, hiddenAct != "gelu" else { return "gelu_pytorch_tanh" }
        return hiddenAct
    }
}

/// Gemma: Llama's block with GeGLU MLPs, RMSNorms that scale by
/// (1 + weight), token embeddings multiplied by √hidden, a head tied to the
/// embedding, and a head_dim of its own (256 while hidden/heads is 128 in
/// Gemma-7B).
public struct GemmaModel: LanguageModel {
    public let checkpoint: Checkpoint
    let config: GemmaConfiguration
    let weights: Weights
    let rotary: RotaryEmbedding

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        config = try checkpoint.decodeConfig(GemmaConfiguration.self)
        configuredDrops = try DropPlan(config: checkpoint, layerCount: config.numHiddenLayers)
        weights = try Weights(checkpoint, probe: "embed_tokens.weight", candidates: ["model.", ""])
        rotary = try checkpoint.decodeConfig(RopeSettings.self).embedding(
            headDim: config.resolvedHeadDim, configPath: checkpoint.configURL.path)
        try checkHeads(heads: config.numAttentionHeads, kvHeads: config.kvHeads, configPath: checkpoint.configURL.path)
    }

    public var modelType: String { "gemma" }
    public var layerCount: Int { config.numHiddenLayers }
    public var hiddenSize: Int { config.hiddenSize }
    public var vocabularySize: Int { config.vocabSize }
    public var maxPositions: Int { config.maxPositionEmbeddings }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let table = try weights.tensor("embed_tokens.weight", [config.vocabSize, config.hiddenSize])
        return scaledEmbedding(table, ids: batch.tokenIDs, width: config.hiddenSize)
    }

    public var layerNaming: LayerNaming {
        LayerNaming(prefix: weights.prefix + "layers.", attention: ["self_attn.", "input_layernorm."], mlp: ["mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    public func head() throws -> OutputHead {
        let d = config.hiddenSize
        return OutputHead(
            norm: try weights.offsetRMSNorm("norm", size: d, eps: config.rmsNormEps),
            projection: try weights.head(tiedTo: "embed_tokens", hidden: d, vocabulary: config.vocabSize))
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = config.hiddenSize, headDim = config.resolvedHeadDim, eps = config.rmsNormEps
        let layout = QKVLayout(numHeads: config.numAttentionHeads, numKVHeads: config.kvHeads, headDim: headDim)
        let bias = config.attentionBias == true
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { SelfAttention(
            qkv: try weights.stackedQKV(p + "self_attn.", hidden: d, layout: layout, bias: bias),
            layout: layout,
            rotary: rotary,
            output: try weights.linear(p + "self_attn.o_proj", in: layout.numHeads * headDim, out: d, bias: bias),
            scale: 1 / Float(headDim).squareRoot()) }
        func feedForward() throws -> FeedForward {
            try weights.gatedMLP(p + "mlp.", hidden: d, inner: config.intermediateSize, activation: try Activation(
                huggingFaceName: config.activationName, configPath: checkpoint.configURL.path))
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.offsetRMSNorm(p + "input_layernorm", size: d, eps: eps), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.offsetRMSNorm(p + "post_attention_layernorm", size: d, eps: eps),
                feedForward: try feedForward()),
            residual: .sequential)
    }
}

/// Gemma's embedding lookup: rows multiplied by √hidden. transformers casts
/// the factor to the weights' dtype first; droptrace computes in Float32,
/// so it is the Float32 value.
func scaledEmbedding(_ table: TensorSlice, ids: [Int], width: Int) -> Matrix {
    var rows = gatherRows(table, ids: ids, width: width)
    let normalizer = Float(Double(width).squareRoot())
    rows.data.withUnsafeMutableBufferPointer { values in
        for i in values.indices { values[i] *= normalizer }
    }
    return rows
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gemma`.
struct GemmaConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    var hiddenActivation: String?
    var attentionBias: Bool?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case hiddenActivation = "hidden_activation"
        case attentionBias = "attention_bias"
    }

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
    let dimensions: DecoderDimensions
    let config: GemmaConfiguration
    let weights: Weights
    let rotary: RotaryEmbedding

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        dimensions = try checkpoint.decodeConfig(DecoderDimensions.self)
        config = try checkpoint.decodeConfig(GemmaConfiguration.self)
        configuredDrops = try DropPlan(config: checkpoint, layerCount: dimensions.numHiddenLayers)
        weights = try Weights(checkpoint, probe: "embed_tokens.weight", candidates: ["model.", ""])
        let rotaryHeadDim = try dimensions.confirm(by: weights, naming: Self.naming(weights.prefix), drops: configuredDrops, configPath: configPath)
        rotary = try checkpoint.decodeConfig(RopeSettings.self).embedding(headDim: rotaryHeadDim, configPath: configPath)
    }

    public var modelType: String { "gemma" }
    public var layerCount: Int { dimensions.numHiddenLayers }
    public var hiddenSize: Int { dimensions.hiddenSize }
    public var vocabularySize: Int { dimensions.vocabSize }
    public var maxPositions: Int { dimensions.maxPositionEmbeddings }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let table = try weights.tensor("embed_tokens.weight", [dimensions.vocabSize, dimensions.hiddenSize])
        return try scaledEmbedding(table, ids: batch.tokenIDs, width: dimensions.hiddenSize)
    }

    public var layerNaming: LayerNaming { Self.naming(weights.prefix) }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."], mlp: ["mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    public func head() throws -> OutputHead {
        let d = dimensions.hiddenSize
        return OutputHead(
            norm: try weights.offsetRMSNorm("norm", size: d, eps: config.rmsNormEps),
            projection: try weights.head(
                tiedTo: "embed_tokens", tied: dimensions.tiedEmbeddings(default: true), hidden: d, vocabulary: dimensions.vocabSize))
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = dimensions.hiddenSize, headDim = dimensions.resolvedHeadDim, eps = config.rmsNormEps
        let layout = QKVLayout(numHeads: dimensions.numAttentionHeads, numKVHeads: dimensions.kvHeads, headDim: headDim)
        let bias = config.attentionBias == true
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { SelfAttention(
            qkv: try weights.stackedQKV(p + "self_attn.", hidden: d, layout: layout, bias: bias),
            layout: layout,
            rotary: rotary,
            output: try weights.linear(p + "self_attn.o_proj", in: layout.numHeads * headDim, out: d, bias: bias),
            scale: 1 / Float(headDim).squareRoot()) }
        func feedForward() throws -> FeedForward {
            try weights.gatedMLP(p + "mlp.", hidden: d, inner: dimensions.intermediateSize, activation: try Activation(
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
func scaledEmbedding(_ table: TensorSlice, ids: [Int], width: Int) throws -> Matrix {
    var rows = try gatherRows(table, ids: ids, width: width)
    let normalizer = Float(Double(width).squareRoot())
    rows.data.withUnsafeMutableBufferPointer { values in
        for i in values.indices { values[i] *= normalizer }
    }
    return rows
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `olmo` (OLMo-1B-hf, OLMo-7B-hf).
struct OlmoConfiguration: Decodable {
    var hiddenAct: String?
    var attentionBias: Bool?
    var clipQKV: Double?

    enum CodingKeys: String, CodingKey {
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case clipQKV = "clip_qkv"
    }
}

/// OLMo: Llama's layout, but every norm is a LayerNorm with neither weight
/// nor bias (eps fixed at 1e-5), and q/k/v may be clamped to ±`clip_qkv`
/// straight after their projections.
public struct OlmoModel: LanguageModel {
    public let checkpoint: Checkpoint
    let dimensions: DecoderDimensions
    let config: OlmoConfiguration
    let weights: Weights
    let rotary: RotaryEmbedding

    public let configuredDrops: DropPlan

    /// OlmoLayerNorm hard-codes its epsilon; config.json has none.
    static let layerNormEpsilon: Float = 1e-5

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        dimensions = try checkpoint.decodeConfig(DecoderDimensions.self)
        config = try checkpoint.decodeConfig(OlmoConfiguration.self)
        configuredDrops = try DropPlan(config: checkpoint, layerCount: dimensions.numHiddenLayers)
        weights = try Weights(checkpoint, probe: "embed_tokens.weight", candidates: ["model.", ""])
        let rotaryHeadDim = try dimensions.confirm(by: weights, naming: Self.naming(weights.prefix), drops: configuredDrops, configPath: configPath)
        rotary = try checkpoint.decodeConfig(RopeSettings.self).embedding(headDim: rotaryHeadDim, configPath: configPath)
        if let clip = config.clipQKV {
            try ConfigRules.checks(path: configPath) { try ConfigRules.positive(clip, "clip_qkv") }
        }
    }

    public var modelType: String { "olmo" }
    public var layerCount: Int { dimensions.numHiddenLayers }
    public var hiddenSize: Int { dimensions.hiddenSize }
    public var vocabularySize: Int { dimensions.vocabSize }
    public var maxPositions: Int { dimensions.maxPositionEmbeddings }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let table = try weights.tensor("embed_tokens.weight", [dimensions.vocabSize, dimensions.hiddenSize])
        return try gatherRows(table, ids: batch.tokenIDs, width: dimensions.hiddenSize)
    }

    /// The norms have no tensors, so a branch is just its module.
    public var layerNaming: LayerNaming { Self.naming(weights.prefix) }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(prefix: prefix + "layers.", attention: ["self_attn."], mlp: ["mlp."], layerCountKeys: ["num_hidden_layers"])
    }

    var norm: Normalization { .parameterFreeLayer(size: dimensions.hiddenSize, eps: Self.layerNormEpsilon) }

    public func head() throws -> OutputHead {
        // OLMo-1B ties its head to the embedding (saved without lm_head).
        OutputHead(norm: norm, projection: try weights.head(
            tiedTo: "embed_tokens", tied: dimensions.tiedEmbeddings(default: false), hidden: dimensions.hiddenSize,
            vocabulary: dimensions.vocabSize))
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = dimensions.hiddenSize, headDim = dimensions.resolvedHeadDim
        let layout = QKVLayout(numHeads: dimensions.numAttentionHeads, numKVHeads: dimensions.kvHeads, headDim: headDim)
        let bias = config.attentionBias == true
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { SelfAttention(
            qkv: try weights.stackedQKV(p + "self_attn.", hidden: d, layout: layout, bias: bias),
            layout: layout,
            rotary: rotary,
            output: try weights.linear(p + "self_attn.o_proj", in: layout.numHeads * headDim, out: d, bias: bias),
            scale: 1 / Float(headDim).squareRoot(),
            clip: config.clipQKV.map { Float($0) }) }
        func feedForward() throws -> FeedForward {
            try weights.gatedMLP(p + "mlp.", hidden: d, inner: dimensions.intermediateSize, activation: try Activation(
                huggingFaceName: config.hiddenAct ?? "silu", configPath: checkpoint.configURL.path))
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(inputNorm: norm, attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(inputNorm: norm, feedForward: try feedForward()),
            residual: .sequential)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `olmo2` (OLMo-2).
struct Olmo2Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    var attentionBias: Bool?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
    }
}

/// OLMo-2: the norms sit at the end of each branch, inside the residual:
///
///     H = X + RMSNorm(Attn(X)),   Y = H + RMSNorm(MLP(H))
///
/// (`post_attention_layernorm`, `post_feedforward_layernorm`; nothing
/// normalises a branch's input). The attention also RMS-normalises the whole
/// query and the whole key projection (all heads together) before rotary.
/// Importance is still measured on the residual stream, X against H and H
/// against Y.
public struct Olmo2Model: LanguageModel {
    public let checkpoint: Checkpoint
    let dimensions: DecoderDimensions
    let config: Olmo2Configuration
    let weights: Weights
    let rotary: RotaryEmbedding

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        dimensions = try checkpoint.decodeConfig(DecoderDimensions.self)
        config = try checkpoint.decodeConfig(Olmo2Configuration.self)
        configuredDrops = try DropPlan(config: checkpoint, layerCount: dimensions.numHiddenLayers)
        weights = try Weights(checkpoint, probe: "embed_tokens.weight", candidates: ["model.", ""])
        let rotaryHeadDim = try dimensions.confirm(by: weights, naming: Self.naming(weights.prefix), drops: configuredDrops, configPath: configPath)
        rotary = try checkpoint.decodeConfig(RopeSettings.self).embedding(headDim: rotaryHeadDim, configPath: configPath)
    }

    public var modelType: String { "olmo2" }
    public var layerCount: Int { dimensions.numHiddenLayers }
    public var hiddenSize: Int { dimensions.hiddenSize }
    public var vocabularySize: Int { dimensions.vocabSize }
    public var maxPositions: Int { dimensions.maxPositionEmbeddings }

    public func embed(_ batch: TokenBatch) throws -> Matrix {
        let table = try weights.tensor("embed_tokens.weight", [dimensions.vocabSize, dimensions.hiddenSize])
        return try gatherRows(table, ids: batch.tokenIDs, width: dimensions.hiddenSize)
    }

    public var layerNaming: LayerNaming { Self.naming(weights.prefix) }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "post_attention_layernorm."],
            mlp: ["mlp.", "post_feedforward_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    public func head() throws -> OutputHead {
        let d = dimensions.hiddenSize
        return OutputHead(
            norm: try weights.rmsNorm("norm", size: d, eps: config.rmsNormEps),
            projection: try weights.head(
                tiedTo: "embed_tokens", tied: dimensions.tiedEmbeddings(default: false), hidden: d, vocabulary: dimensions.vocabSize))
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
            scale: 1 / Float(headDim).squareRoot(),
            queryNorm: try weights.rmsNorm(p + "self_attn.q_norm", size: layout.numHeads * headDim, eps: eps),
            keyNorm: try weights.rmsNorm(p + "self_attn.k_norm", size: layout.numKVHeads * headDim, eps: eps)) }
        func feedForward() throws -> FeedForward {
            try weights.gatedMLP(p + "mlp.", hidden: d, inner: dimensions.intermediateSize, activation: try Activation(
                huggingFaceName: config.hiddenAct ?? "silu", configPath: checkpoint.configURL.path))
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: nil, attention: try attention(),
                outputNorm: try weights.rmsNorm(p + "post_attention_layernorm", size: d, eps: eps)),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: nil, feedForward: try feedForward(),
                outputNorm: try weights.rmsNorm(p + "post_feedforward_layernorm", size: d, eps: eps)),
            residual: .sequential)
    }
}

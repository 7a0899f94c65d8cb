import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of the Llama family: `llama`, `mistral` and `qwen2`, which
/// differ only in biases and sliding-window rules.
struct LlamaConfiguration: Decodable {
    var modelType: String
    var rmsNormEps: Double
    var hiddenAct: String?
    var attentionBias: Bool?
    var mlpBias: Bool?
    var slidingWindow: Int?
    var useSlidingWindow: Bool?
    var maxWindowLayers: Int?
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case slidingWindow = "sliding_window"
        case useSlidingWindow = "use_sliding_window"
        case maxWindowLayers = "max_window_layers"
        case layerTypes = "layer_types"
    }

    /// The attention window of layer `index`, as each family decides it.
    func slidingWindow(layer index: Int) -> Int? {
        switch modelType {
        case "mistral":
            return slidingWindow
        case "qwen2":
            if let layerTypes, index < layerTypes.count {
                return layerTypes[index] == "sliding_attention" ? slidingWindow : nil
            }
            guard useSlidingWindow == true, let slidingWindow else { return nil }
            return index >= (maxWindowLayers ?? 0) ? slidingWindow : nil
        default:
            return nil
        }
    }
}

/// Llama, Mistral and Qwen2: pre-RMSNorm blocks, rotary attention with
/// grouped-query heads, SwiGLU MLP.
public struct LlamaModel: LanguageModel {
    public let checkpoint: Checkpoint
    let dimensions: DecoderDimensions
    let config: LlamaConfiguration
    let weights: Weights
    let rotary: RotaryEmbedding

    public let configuredDrops: DropPlan

    public init(_ checkpoint: Checkpoint) throws {
        self.checkpoint = checkpoint
        let configPath = checkpoint.configURL.path
        dimensions = try checkpoint.decodeConfig(DecoderDimensions.self)
        config = try checkpoint.decodeConfig(LlamaConfiguration.self)
        configuredDrops = try DropPlan(config: checkpoint, layerCount: dimensions.numHiddenLayers)
        weights = try Weights(checkpoint, probe: "embed_tokens.weight", candidates: ["model.", ""])
        let rotaryHeadDim = try dimensions.confirm(by: weights, naming: Self.naming(weights.prefix), drops: configuredDrops, configPath: configPath)
        rotary = try checkpoint.decodeConfig(RopeSettings.self).embedding(headDim: rotaryHeadDim, configPath: configPath)
    }

    public var modelType: String { config.modelType }
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
        LayerNaming(prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."], mlp: ["mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    public func head() throws -> OutputHead {
        let d = dimensions.hiddenSize
        // Tied models (Qwen2-0.5B, SmolLM) save no lm_head.
        return OutputHead(
            norm: try weights.rmsNorm("norm", size: d, eps: config.rmsNormEps),
            projection: try weights.head(
                tiedTo: "embed_tokens", tied: dimensions.tiedEmbeddings(default: false), hidden: d, vocabulary: dimensions.vocabSize))
    }

    public func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let d = dimensions.hiddenSize, headDim = dimensions.resolvedHeadDim
        let heads = dimensions.numAttentionHeads, kvHeads = dimensions.kvHeads
        let p = "layers.\(index)."
        // Qwen2 always has q/k/v biases and none on o_proj; Llama's attention_bias covers all four.
        let qkvBias = config.modelType == "qwen2" || config.attentionBias == true
        let outputBias = config.modelType != "qwen2" && config.attentionBias == true
        func attention() throws -> SelfAttention { SelfAttention(
            qkv: .stacking([
                try weights.linear(p + "self_attn.q_proj", in: d, out: heads * headDim, bias: qkvBias),
                try weights.linear(p + "self_attn.k_proj", in: d, out: kvHeads * headDim, bias: qkvBias),
                try weights.linear(p + "self_attn.v_proj", in: d, out: kvHeads * headDim, bias: qkvBias),
            ]),
            layout: QKVLayout(numHeads: heads, numKVHeads: kvHeads, headDim: headDim),
            rotary: rotary,
            output: try weights.linear(p + "self_attn.o_proj", in: heads * headDim, out: d, bias: outputBias),
            scale: 1 / Float(headDim).squareRoot(),
            slidingWindow: config.slidingWindow(layer: index)) }

        let mlpBias = config.mlpBias == true
        let inner = dimensions.intermediateSize
        func feedForward() throws -> FeedForward { FeedForward.gated(
            gateUp: .stacking([
                try weights.linear(p + "mlp.gate_proj", in: d, out: inner, bias: mlpBias),
                try weights.linear(p + "mlp.up_proj", in: d, out: inner, bias: mlpBias),
            ]),
            down: try weights.linear(p + "mlp.down_proj", in: inner, out: d, bias: mlpBias),
            activation: try Activation(huggingFaceName: config.hiddenAct ?? "silu", configPath: checkpoint.configURL.path)) }

        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.rmsNorm(p + "input_layernorm", size: d, eps: config.rmsNormEps),
                attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.rmsNorm(p + "post_attention_layernorm", size: d, eps: config.rmsNormEps),
                feedForward: try feedForward()),
            residual: .sequential)
    }
}

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
struct LlamaModel: DecoderFamily {
    let parts: DecoderParts
    let config: LlamaConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        try self.init(checkpoint, defaultTheta: 10_000)
    }

    /// A Llama-shaped model whose family rotates with base `defaultTheta`
    /// when config.json names none, and ties its head as `tiedByDefault`
    /// says when config.json does not (SmolLM3).
    init(_ checkpoint: Checkpoint, defaultTheta: Double, tiedByDefault: Bool = false) throws {
        parts = try DecoderParts(checkpoint, tiedByDefault: tiedByDefault, naming: Self.naming)
        config = try parts.config(LlamaConfiguration.self)
        rotary = try parts.rotary(defaultTheta: defaultTheta)
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."], mlp: ["mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    func head() throws -> OutputHead {
        // Tied models (Qwen2-0.5B, SmolLM) save no lm_head.
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try block(index, skipping: plan, rotary: rotary, slidingWindow: config.slidingWindow(layer: index))
    }

    /// Block `index` rotating with `rotary` (nil: a NoPE layer, SmolLM3) and
    /// attending within `slidingWindow` tokens when given.
    func block(_ index: Int, skipping plan: DropPlan, rotary: RotaryEmbedding?, slidingWindow: Int?) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, eps = config.rmsNormEps
        let p = "layers.\(index)."
        // Qwen2 always has q/k/v biases and none on o_proj; Llama's attention_bias covers all four.
        let qkvBias = config.modelType == "qwen2" || config.attentionBias == true
        let outputBias = config.modelType != "qwen2" && config.attentionBias == true
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: qkvBias, outputBias: outputBias, rotary: rotary,
            slidingWindow: slidingWindow) }
        func feedForward() throws -> FeedForward {
            try weights.gatedMLP(
                p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize,
                activation: try parts.activation(config.hiddenAct ?? "silu"), bias: config.mlpBias == true)
        }
        return try parts.preNormBlock(index, drops: drops, eps: eps, attention: attention, feedForward: feedForward)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `qwen2_moe`, with Qwen2MoeConfig's defaults.
struct Qwen2MoeConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v_proj (never on o_proj).
    var qkvBias: Bool
    var useSlidingWindow: Bool
    /// As written: absent is the config class's default 4096, `null` is none.
    var slidingWindow: Int?
    var maxWindowLayers: Int
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case qkvBias = "qkv_bias"
        case useSlidingWindow = "use_sliding_window"
        case slidingWindow = "sliding_window"
        case maxWindowLayers = "max_window_layers"
        case layerTypes = "layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // (DecoderDimensions refuses a non-positive one.)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        qkvBias = try c.decodeIfPresent(Bool.self, forKey: .qkvBias) ?? true
        useSlidingWindow = try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) ?? false
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : 4096
        maxWindowLayers = try c.decodeIfPresent(Int.self, forKey: .maxWindowLayers) ?? 28
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
    }

    /// Each layer's attention type and the window of the sliding ones, as
    /// Qwen2MoeConfig resolves them: a window only when `use_sliding_window`
    /// (the class sets it to 0 otherwise, which no layer can attend within);
    /// `layer_types`, else the even layers below `max_window_layers` slide
    /// (Qwen2's own rule slides the layers from it on).
    func attentionLayout(layers: Int) -> (types: [String], window: Int?) {
        let window = useSlidingWindow ? slidingWindow : nil
        let types = layerTypes ?? (0..<layers).map { i in
            useSlidingWindow && i % 2 == 0 && i < maxWindowLayers ? AttentionLayerType.sliding : AttentionLayerType.full
        }
        return (types, window)
    }
}

/// Qwen1.5-MoE / Qwen2-MoE: Qwen2's attention (q/k/v biases, windows per
/// layer) in pre-RMSNorm blocks whose MLP is `QwenExperts`' with
/// Qwen2MoeConfig's defaults: on sparse layers softmax top-k experts
/// (unnormalised unless `norm_topk_prob`) plus a shared expert behind a
/// sigmoid gate, a dense SwiGLU elsewhere. Dropping the MLP drops router,
/// experts and shared expert together, as the layer adds their sum.
struct Qwen2MoeModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Qwen2MoeConfiguration
    let experts: QwenExperts
    let rotary: RotaryEmbedding
    /// Each layer's attention window, nil for full attention.
    let windows: [Int?]
    let layerTypes: [String]

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the expert tensors are checked with the layers.
        experts = try QwenExperts(checkpoint, configClass: .qwen2Moe)
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming, experts: experts.naming)
        config = try parts.config(Qwen2MoeConfiguration.self)
        rotary = try parts.rotary()
        // Qwen2MoeConfig saves the window as 0 without use_sliding_window, which its mask takes.
        if config.useSlidingWindow {
            try parts.requireWindow(config.slidingWindow, builtBy: "Qwen2MoeModel", keys: "sliding_window (use_sliding_window true)")
        }
        let layout = config.attentionLayout(layers: parts.dimensions.numHiddenLayers)
        layerTypes = layout.types
        windows = try parts.slidingWindows(
            layerTypes: layout.types, window: layout.window, windowKeys: "sliding_window and use_sliding_window")
        try experts.confirm(parts)
    }

    /// An export without some blocks spells out the layer types (even
    /// layers below `max_window_layers` slide), so renumbering cannot move a window.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: config.qkvBias, outputBias: false, rotary: rotary, slidingWindow: windows[index]) }
        func feedForward() throws -> FeedForward {
            try experts.feedForward(parts, layer: index, activation: try parts.activation(config.hiddenAct))
        }
        return try parts.preNormBlock(index, drops: drops, eps: config.rmsNormEps, attention: attention, feedForward: feedForward)
    }
}

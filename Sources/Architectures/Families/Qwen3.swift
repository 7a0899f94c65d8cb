import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `qwen3`, and the attention keys `qwen3_moe` shares.
struct Qwen3Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    var attentionBias: Bool?
    var useSlidingWindow: Bool?
    /// As written: absent is transformers' default 4096, `null` is none.
    var slidingWindow: Int?
    var maxWindowLayers: Int?
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case useSlidingWindow = "use_sliding_window"
        case slidingWindow = "sliding_window"
        case maxWindowLayers = "max_window_layers"
        case layerTypes = "layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias)
        useSlidingWindow = try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow)
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : 4096
        maxWindowLayers = try c.decodeIfPresent(Int.self, forKey: .maxWindowLayers)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        // DecoderDimensions checks sliding_window and layer_types' length.
        try ConfigRules.decodingChecks {
            if let maxWindowLayers { try ConfigRules.nonNegative(maxWindowLayers, "max_window_layers") }
        }
    }

    /// The window transformers uses: `sliding_window` only when
    /// `use_sliding_window` is true (it is then set to None otherwise).
    var window: Int? { useSlidingWindow == true ? slidingWindow : nil }

    /// Each layer's attention type: `layer_types` when given, else layers
    /// from `max_window_layers` (default 28) on slide when a window is set
    /// (Qwen3Config's rule).
    func resolvedLayerTypes(layers: Int) -> [String] {
        layerTypes ?? AttentionLayerType.qwenDefault(layers: layers, window: window, maxWindowLayers: maxWindowLayers)
    }
}

/// Qwen3: Llama's pre-RMSNorm blocks and SwiGLU MLP, with an explicit
/// `head_dim`, no q/k/v biases unless `attention_bias`, and an RMSNorm over
/// each head's head_dim columns of the queries and of the keys (`q_norm`,
/// `k_norm`, weights [head_dim]) before rotary. Layers slide their attention
/// window where `layer_types` says `sliding_attention`. Also the language
/// model of `qwen3_vl` and `cosmos3_omni` checkpoints (`QwenVL`), which attends in full everywhere.
struct Qwen3Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { !QwenVL.qwen3Types.contains(modelType) && modelType != "qwen3_vl_text" }
    let parts: DecoderParts
    let config: Qwen3Configuration
    let rotary: RotaryEmbedding
    /// Each layer's attention type (nil: Qwen3-VL's, which has none).
    let layerTypes: [String]?
    /// Each layer's attention window, nil for full attention.
    let windows: [Int?]

    init(_ checkpoint: Checkpoint) throws {
        // Qwen3Config's and Qwen3VLTextConfig's head_dim is 128 when config.json omits it (Qwen3-0.6B: 1024 wide, 16 heads).
        let headDim: [String: ConfigDefault] = ["head_dim": 128]
        let vision = QwenVL.qwen3Types.contains(checkpoint.modelType)
        let placement = try vision ? QwenVL.placement(checkpoint, defaults: headDim) : .topLevelOrWrapped(checkpoint, defaults: headDim)
        parts = try DecoderParts(checkpoint, placement: placement) { Self.naming($0) }
        config = try parts.config(Qwen3Configuration.self)
        guard !vision else {
            rotary = try QwenVL.qwen3Rotary(parts)
            try QwenVL.checkIndexedLayerTypes(parts)
            (layerTypes, windows) = (nil, Array(repeating: nil, count: parts.dimensions.numHiddenLayers))
            return
        }
        rotary = try parts.rotary()
        let types = config.resolvedLayerTypes(layers: parts.dimensions.numHiddenLayers)
        layerTypes = types
        windows = try parts.slidingWindows(
            layerTypes: types, window: config.window, windowKeys: "sliding_window and use_sliding_window")
    }

    /// An export without some blocks spells out the remaining layers' types,
    /// so renumbering cannot move a window to another layer.
    var layerNaming: LayerNaming { parts.naming(spellingOut: layerTypes) }

    static func naming(_ prefix: String, layerTypes: [String]? = nil) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."], mlp: ["mlp.", "post_attention_layernorm."],
            layerCountKeys: ["num_hidden_layers"], layerTypes: layerTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, eps = config.rmsNormEps
        let p = "layers.\(index)."
        return try parts.preNormBlock(
            index, drops: drops, eps: eps,
            attention: { try Self.attention(parts, layer: index, config: config, rotary: rotary, window: windows[index]) }
        ) {
            try weights.gatedMLP(
                p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize, activation: try parts.activation(config.hiddenAct ?? "silu"))
        }
    }

    /// Layer `index`'s attention as Qwen3 and Qwen3-MoE build it: q/k/v/o
    /// projections (biased when `attention_bias`), per-head RMSNorm of
    /// queries and keys over head_dim, scale head_dim^-1/2.
    static func attention(
        _ parts: DecoderParts, layer index: Int, config: Qwen3Configuration, rotary: RotaryEmbedding, window: Int?
    ) throws -> SelfAttention {
        try attention(parts, layer: index, bias: config.attentionBias == true, eps: config.rmsNormEps, rotary: rotary, window: window)
    }

    /// `attention(_:layer:config:rotary:window:)` with the bias switch and
    /// the norms' epsilon given (HY-V3's attention).
    static func attention(
        _ parts: DecoderParts, layer index: Int, bias: Bool, eps: Double, rotary: RotaryEmbedding, window: Int? = nil
    ) throws -> SelfAttention {
        let weights = parts.weights, layout = parts.attentionLayout
        let p = "layers.\(index).self_attn."
        return try parts.attention(
            p, bias: bias, rotary: rotary,
            slidingWindow: window,
            queryKeyNorm: .perHead(
                query: try weights.rmsNorm(p + "q_norm", size: layout.headDim, eps: eps),
                key: try weights.rmsNorm(p + "k_norm", size: layout.headDim, eps: eps)))
    }
}

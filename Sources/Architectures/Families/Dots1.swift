import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The mixture-of-experts keys of `dots1`'s config.json, with Dots1Config's
/// defaults (transformers' `models/dots1/configuration_dots1.py`); the
/// attention keys are Qwen3's (`Qwen3Configuration`).
struct Dots1Configuration: Decodable {
    var firstKDenseReplace: Int?
    /// The routed layers' keys (Dots1Config leaves the expert counts None).
    var experts: DeepSeekExperts
    /// As written: absent is Dots1Config's 62, null is None.
    var maxWindowLayers: Int?

    enum CodingKeys: String, CodingKey {
        case firstKDenseReplace = "first_k_dense_replace"
        case maxWindowLayers = "max_window_layers"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        /// Only absence takes the default: a written null stays None in transformers.
        func written<T: Decodable>(_ key: CodingKeys, absent: T?) throws -> T? {
            c.contains(key) ? try c.decodeIfPresent(T.self, forKey: key) : absent
        }
        firstKDenseReplace = try written(.firstKDenseReplace, absent: 0)
        experts = try DeepSeekExperts(from: decoder, configClass: .dots1)
        maxWindowLayers = try written(.maxWindowLayers, absent: 62)
    }

    /// Whether layer `index`'s MLP is the routed experts (Dots1DecoderLayer's rule).
    func isSparse(_ index: Int) -> Bool { index >= (firstKDenseReplace ?? .max) }

    /// Refuses values transformers could not build or run the routed layers
    /// from (Dots1Config leaves the expert counts None), before anything is
    /// sized from them.
    func check(_ d: DecoderDimensions) throws {
        guard let firstKDenseReplace else {
            throw InvalidConfigValue(key: "first_k_dense_replace", problem: "must be an integer, got null")
        }
        // Routed layers exist only past the dense ones.
        guard firstKDenseReplace < d.numHiddenLayers else { return }
        try experts.check(hidden: d.hiddenSize)
    }
}

/// dots.llm1 (`dots1`, rednote-hilab/dots.llm1.base and .inst; transformers'
/// `models/dots1/modeling_dots1.py`): Qwen3's attention — q/k/v/o biases by
/// `attention_bias`, an RMSNorm over each head of the queries and of the
/// keys before rotary, sliding windows on the `layer_types` layers (when
/// absent, layers from `max_window_layers`, 62 by default, on slide when
/// `sliding_window`, 4096 by default, is set) — in pre-RMSNorm blocks whose
/// MLP is, below `first_k_dense_replace` (default 0), a dense SwiGLU of width
/// `intermediate_size`, and from it on DeepSeek-V3's mixture of experts
/// (`GroupRoutedMixture`): a sigmoid router `mlp.gate` choosing
/// `num_experts_per_tok` of `n_routed_experts` within the best `topk_group`
/// of `n_group` groups, ranked with `gate.e_score_correction_bias`, weights
/// renormalised when `norm_topk_prob` (default false) and scaled by
/// `routed_scaling_factor`, plus `n_shared_experts` shared experts
/// (`mlp.shared_experts`). Dots1Config leaves the expert counts None: a
/// model with routed layers must give them. The MLP module is router, routed
/// and shared experts together. Routed experts are read per expert (as
/// saved) or fused. Untied head by default; heads hidden_size /
/// num_attention_heads wide unless `head_dim` is given.
struct Dots1Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let attentionConfig: Qwen3Configuration
    let config: Dots1Configuration
    let rotary: RotaryEmbedding
    let layerTypes: [String]
    /// Each layer's attention window, nil for full attention.
    let windows: [Int?]

    /// Dots1Config's defaults of the keys `Qwen3Configuration` requires.
    static let section = ConfigSection(defaults: ["rms_norm_eps": 1e-6])

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(Dots1Configuration.self)
        self.config = config
        parts = try DecoderParts(
            checkpoint, section: Self.section, naming: { Qwen3Model.naming($0) },
            experts: config.experts.naming(isSparse: config.isSparse))
        attentionConfig = try parts.config(Qwen3Configuration.self)
        let d = parts.dimensions, attention = attentionConfig
        try ConfigRules.checks(path: parts.configPath) {
            try ConfigRules.positive(attention.rmsNormEps, "rms_norm_eps")
            try config.check(d)
            if attention.layerTypes == nil, attention.slidingWindow != nil, config.maxWindowLayers == nil {
                throw InvalidConfigValue(
                    key: "max_window_layers", problem: "must be an integer when sliding_window is set and layer_types is not given, got null")
            }
        }
        rotary = try parts.rotary()
        let window = attention.slidingWindow
        layerTypes = attention.layerTypes
            ?? AttentionLayerType.qwenDefault(layers: d.numHiddenLayers, window: window, maxWindowLayers: config.maxWindowLayers)
        windows = try parts.slidingWindows(layerTypes: layerTypes, window: window)
        try config.experts.confirm(parts, isSparse: config.isSparse)
    }

    /// An export without some blocks spells out the kept layers' types and
    /// writes `first_k_dense_replace` also where config.json leaves it to its default.
    var layerNaming: LayerNaming {
        var naming = Qwen3Model.naming(parts.weights.prefix, layerTypes: layerTypes)
        naming.configSection = parts.naming.configSection
        naming.layerThresholds["first_k_dense_replace"] = config.firstKDenseReplace
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: attentionConfig.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: attentionConfig.rmsNormEps,
            attention: {
                try Qwen3Model.attention(parts, layer: index, config: attentionConfig, rotary: rotary, window: windows[index])
            },
            feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s MLP: dense below `first_k_dense_replace`, else router,
    /// routed experts and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        try config.experts.feedForward(
            parts, layer: index, sparse: config.isSparse(index), activation: try parts.activation(attentionConfig.hiddenAct ?? "silu"))
    }
}

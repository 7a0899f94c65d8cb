import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The mixture-of-experts keys of `dots1`'s config.json, with Dots1Config's
/// defaults (transformers' `models/dots1/configuration_dots1.py`); the
/// attention keys are Qwen3's (`Qwen3Configuration`).
struct Dots1Configuration: Decodable {
    var firstKDenseReplace: Int?
    /// `n_routed_experts`, which config.json may write as `num_local_experts`
    /// (nil: None, Dots1Config's default, which routed layers cannot be built from).
    var nRoutedExperts: Int?
    var nRoutedExpertsKey: String
    var numExpertsPerTok: Int?
    var nSharedExperts: Int?
    var moeIntermediateSize: Int
    var routedScalingFactor: Double
    var nGroup: Int?
    var topkGroup: Int?
    var normTopkProb: Bool
    /// As written: absent is Dots1Config's 62, null is None.
    var maxWindowLayers: Int?

    enum CodingKeys: String, CodingKey {
        case firstKDenseReplace = "first_k_dense_replace"
        case nRoutedExperts = "n_routed_experts"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case nSharedExperts = "n_shared_experts"
        case moeIntermediateSize = "moe_intermediate_size"
        case routedScalingFactor = "routed_scaling_factor"
        case nGroup = "n_group"
        case topkGroup = "topk_group"
        case normTopkProb = "norm_topk_prob"
        case maxWindowLayers = "max_window_layers"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        /// Only absence takes the default: a written null stays None in transformers.
        func written<T: Decodable>(_ key: CodingKeys, absent: T?) throws -> T? {
            c.contains(key) ? try c.decodeIfPresent(T.self, forKey: key) : absent
        }
        firstKDenseReplace = try written(.firstKDenseReplace, absent: 0)
        let routed = try c.decodeIfPresent(Int.self, forKey: .nRoutedExperts)
        let local = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts)
        nRoutedExperts = c.contains(.numLocalExperts) ? local : routed
        nRoutedExpertsKey = c.contains(.numLocalExperts) ? "num_local_experts" : "n_routed_experts"
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok)
        nSharedExperts = try c.decodeIfPresent(Int.self, forKey: .nSharedExperts)
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 1408
        routedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .routedScalingFactor) ?? 1.0
        nGroup = try written(.nGroup, absent: 1)
        topkGroup = try written(.topkGroup, absent: 1)
        // A null flag is None, which the router's `if` reads as false.
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? false
        maxWindowLayers = try written(.maxWindowLayers, absent: 62)
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let routed, c.contains(.numLocalExperts), routed != local {
                throw InvalidConfigValue(
                    key: "n_routed_experts", problem: "is \(routed), but num_local_experts (the same setting) is \(local.map(String.init) ?? "null")")
            }
        }
    }

    /// Whether layer `index`'s MLP is the routed experts (Dots1DecoderLayer's rule).
    func isSparse(_ index: Int) -> Bool { index >= (firstKDenseReplace ?? .max) }

    /// DeepSeek-V3's routing (Dots1TopkRouter): sigmoid scores, the best
    /// `topk_group` of `n_group` groups scored by their best two plus
    /// `e_score_correction_bias`, weights renormalised when `norm_topk_prob`
    /// and scaled by `routed_scaling_factor`, plus the shared experts.
    var routedMixture: GroupRoutedMixture {
        GroupRoutedMixture(
            experts: nRoutedExperts ?? 0, expertsKey: nRoutedExpertsKey, expertsPerToken: numExpertsPerTok,
            sharedExperts: nSharedExperts ?? 0, inner: moeIntermediateSize, scoring: .sigmoid, groupScore: .sumOfBestTwo,
            groupLimited: true, groups: nGroup, groupsPerToken: topkGroup, correctsSelection: true,
            normalizesWeights: normTopkProb, scalingFactor: routedScalingFactor)
    }

    /// Refuses values transformers could not build or run the routed layers
    /// from (Dots1Config leaves the expert counts None), before anything is
    /// sized from them.
    func check(_ d: DecoderDimensions) throws {
        guard let firstKDenseReplace else {
            throw InvalidConfigValue(key: "first_k_dense_replace", problem: "must be an integer, got null")
        }
        // Routed layers exist only past the dense ones.
        guard firstKDenseReplace < d.numHiddenLayers else { return }
        guard nRoutedExperts != nil else {
            throw InvalidConfigValue(key: nRoutedExpertsKey, problem: "must be set for the routed layers (Dots1Config's default is None)")
        }
        guard nSharedExperts != nil else {
            throw InvalidConfigValue(key: "n_shared_experts", problem: "must be set for the routed layers (Dots1Config's default is None)")
        }
        let routed = routedMixture
        try routed.checkExperts(hidden: d.hiddenSize)
        try routed.checkGroups()
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
            experts: .gatedMLP(count: config.nRoutedExperts ?? 0, countKey: config.nRoutedExpertsKey, isSparse: config.isSparse))
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
        let routed = (0..<d.numHiddenLayers).filter(config.isSparse)
        try parts.confirmRouter("mlp.gate", experts: config.nRoutedExperts ?? 0, expertsKey: config.nRoutedExpertsKey, layers: routed)
        try parts.confirmExpertWidth(
            layers: routed, experts: config.nRoutedExperts ?? 0, expertsKey: config.nRoutedExpertsKey, inner: config.moeIntermediateSize)
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
        let p = "layers.\(index).mlp.", activation = try parts.activation(attentionConfig.hiddenAct ?? "silu")
        guard config.isSparse(index) else {
            return try parts.weights.gatedMLP(p, hidden: hiddenSize, inner: parts.dimensions.intermediateSize, activation: activation)
        }
        return try config.routedMixture.load(parts.weights, p, hidden: hiddenSize, activation: activation, sharedBias: false)
    }
}

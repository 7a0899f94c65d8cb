import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `cohere2_moe`'s config.json beyond Cohere's
/// (`CohereConfiguration`: layer_norm_eps, hidden_act, logit_scale,
/// attention_bias), with Cohere2MoeConfig's defaults (transformers'
/// `models/cohere2_moe/configuration_cohere2_moe.py`).
struct Cohere2MoeConfiguration: Decodable {
    /// When set, every norm is an RMSNorm of this epsilon; else CohereLayerNorm of `layer_norm_eps`.
    var rmsNormEps: Double?
    /// Absent: 4096; null: none.
    var slidingWindow: Int?
    var layerTypes: [String]?
    var mlpLayerTypes: [String]?
    var slidingWindowPattern: Int
    var prefixDenseSlidingWindowPattern: Int
    /// Read only where `layer_types` or `mlp_layer_types` is absent
    /// (Cohere2MoeConfig takes it as an argument, not a key it keeps).
    var firstKDenseReplace: Int
    var numExperts: Int
    var numExpertsPerTok: Int
    var numSharedExperts: Int
    var sharedExpertCombinationStrategy: String
    var expertSelectionFn: String
    var normTopkProb: Bool
    /// The dense layers' width (nil: `intermediate_size`).
    var prefixDenseIntermediateSize: Int?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case mlpLayerTypes = "mlp_layer_types"
        case slidingWindowPattern = "sliding_window_pattern"
        case prefixDenseSlidingWindowPattern = "prefix_dense_sliding_window_pattern"
        case firstKDenseReplace = "first_k_dense_replace"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case numSharedExperts = "num_shared_experts"
        case sharedExpertCombinationStrategy = "shared_expert_combination_strategy"
        case expertSelectionFn = "expert_selection_fn"
        case normTopkProb = "norm_topk_prob"
        case prefixDenseIntermediateSize = "prefix_dense_intermediate_size"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps)
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : 4096
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        slidingWindowPattern = try c.decodeIfPresent(Int.self, forKey: .slidingWindowPattern) ?? 4
        prefixDenseSlidingWindowPattern = try c.decodeIfPresent(Int.self, forKey: .prefixDenseSlidingWindowPattern) ?? 1
        firstKDenseReplace = try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? 0
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 8
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 2
        numSharedExperts = try c.decodeIfPresent(Int.self, forKey: .numSharedExperts) ?? 0
        sharedExpertCombinationStrategy = try c.decodeIfPresent(String.self, forKey: .sharedExpertCombinationStrategy) ?? "average"
        expertSelectionFn = try c.decodeIfPresent(String.self, forKey: .expertSelectionFn) ?? "softmax"
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? true
        prefixDenseIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .prefixDenseIntermediateSize)
        let config = self
        try ConfigRules.decodingChecks {
            if let eps = config.rmsNormEps { try ConfigRules.positive(eps, "rms_norm_eps") }
            try MLPLayerTypes.checkEntries(config.mlpLayerTypes)
        }
    }

    /// Each layer's MLP type: `mlp_layer_types`, else the first `first_k_dense_replace` dense.
    func mlpTypes(layers: Int) -> [String] {
        MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: firstKDenseReplace)
    }

    /// Each layer's attention type: `layer_types`, else Cohere2MoeConfig's
    /// rule: the first `first_k_dense_replace` layers by
    /// `prefix_dense_sliding_window_pattern`, the others, counted from 0,
    /// by `sliding_window_pattern` (every n-th full).
    func attentionTypes(layers: Int, path: String) throws -> [String] {
        if let layerTypes { return layerTypes }
        let prefix = firstKDenseReplace
        guard (0...layers).contains(prefix) else {
            throw DroptraceError(
                "first_k_dense_replace \(prefix) is not between 0 and num_hidden_layers \(layers), so the layer_types "
                    + "Cohere2MoeConfig derives do not list one per layer; give layer_types", path: path)
        }
        let dense = prefix == 0 ? [] : try SlidingWindowPattern.everyNthFull(
            layers: prefix, pattern: prefixDenseSlidingWindowPattern, key: "prefix_dense_sliding_window_pattern",
            configClass: "Cohere2MoeConfig", path: path)
        let rest = prefix == layers ? [] : try SlidingWindowPattern.everyNthFull(
            layers: layers - prefix, pattern: slidingWindowPattern, key: "sliding_window_pattern", configClass: "Cohere2MoeConfig",
            path: path)
        return dense + rest
    }

    /// The routing rule of `expert_selection_fn`: the top-k logits softmaxed,
    /// or their sigmoids, divided by their sum when `norm_topk_prob`.
    var routingRule: MixtureOfExperts.RoutingRule {
        expertSelectionFn == "softmax" ? .topKThenSoftmax : normTopkProb ? .normalizedSigmoidOfTopK : .sigmoidOfTopK
    }

    /// Refuses values transformers could not build or run the routed layers
    /// from (`hasSparse`: some layer routes), before anything is sized from them.
    func check(_ d: DecoderDimensions, hasSparse: Bool) throws {
        if let prefixDenseIntermediateSize { try ConfigRules.count(prefixDenseIntermediateSize, "prefix_dense_intermediate_size") }
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers)
        guard hasSparse else { return }
        try ConfigRules.count(numExperts, "num_experts")
        try MixtureOfExperts.checkExpertsPerToken(numExpertsPerTok, of: numExperts, expertsKey: "num_experts")
        try ConfigRules.nonNegative(numSharedExperts, "num_shared_experts")
        guard ["softmax", "sigmoid"].contains(expertSelectionFn) else {
            throw InvalidConfigValue(
                key: "expert_selection_fn", problem: "must be \"softmax\" or \"sigmoid\", got \"\(expertSelectionFn.forErrorMessage)\"")
        }
        if numSharedExperts > 0, !["sum", "average"].contains(sharedExpertCombinationStrategy) {
            throw InvalidConfigValue(
                key: "shared_expert_combination_strategy",
                problem: "must be \"sum\" or \"average\", got \"\(sharedExpertCombinationStrategy.forErrorMessage)\"")
        }
        let width = (d.hiddenSize, "hidden_size"), inner = (d.intermediateSize, "intermediate_size")
        try ConfigRules.product([(numExperts, "num_experts"), (2, "gate and up"), inner, width])
        try ConfigRules.product([(numSharedExperts, "num_shared_experts"), (2, "gate and up"), inner, width])
    }
}

/// Cohere2MoeConfig reads its rotary from `rope_parameters`, else
/// `rope_theta` (10000); `rope_scaling` is a key it keeps but never reads.
struct Cohere2MoeRope: Decodable {
    var settings: RopeSettings

    init(from decoder: Decoder) throws {
        typealias Key = ConfigKey
        let top = try decoder.container(keyedBy: Key.self)
        var nested: KeyedDecodingContainer<Key>?
        if top.contains(Key("rope_parameters")), try !top.decodeNil(forKey: Key("rope_parameters")) {
            nested = try top.nestedContainer(keyedBy: Key.self, forKey: Key("rope_parameters"))
        }
        settings = try RopeSettings(top: top, nested: nested)
    }
}

/// Cohere2-MoE (`cohere2_moe`, Command A+; transformers'
/// `models/cohere2_moe/modeling_cohere2_moe.py`): cohere2's parallel block
/// off one input norm — an RMSNorm when `rms_norm_eps` is set, else
/// Cohere's mean-centred LayerNorm of `layer_norm_eps` (the final norm
/// likewise) —, its attention without q/k norms rotating interleaved pairs
/// (base `rope_theta`, 10000) on the `sliding_attention` layers of
/// `layer_types` within `sliding_window` (4096), the full layers without
/// positions except dense layers while `prefix_dense_sliding_window_pattern`
/// is 1 (they rotate); when `layer_types` is absent, the first
/// `first_k_dense_replace` layers follow `prefix_dense_sliding_window_pattern`
/// (1: all full) and the others `sliding_window_pattern` (4), counted afresh.
/// Heads `head_dim` (128) wide. The MLP is, on the `mlp_layer_types` layers
/// marked dense (by default the first `first_k_dense_replace`, 0), a SwiGLU
/// of `prefix_dense_intermediate_size` (else `intermediate_size`), and on
/// the others a router `mlp.gate` over `num_experts` (8) SwiGLU experts of
/// `intermediate_size` choosing the top `num_experts_per_tok` (2) logits,
/// weighted by their softmax (`expert_selection_fn` "softmax") or their
/// sigmoids ("sigmoid", divided by their sum when `norm_topk_prob`), plus
/// `num_shared_experts` (0) shared experts as one MLP `mlp.shared_experts`
/// of `num_shared_experts` × `intermediate_size`, added to the routed output
/// or averaged with it (`shared_expert_combination_strategy`, "average").
/// Tied head by default, logits times `logit_scale` (0.0625).
struct Cohere2MoeModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let cohere: CohereConfiguration
    let config: Cohere2MoeConfiguration
    let rotary: RotaryEmbedding
    let layerTypes: [String]
    let mlpTypes: [String]
    /// Each layer's attention window, nil for full attention.
    let windows: [Int?]

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(Cohere2MoeConfiguration.self, section: .topLevel)
        self.config = config
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self, section: .topLevel).numHiddenLayers
        let mlpTypes = config.mlpTypes(layers: layers)
        self.mlpTypes = mlpTypes
        func isSparse(_ index: Int) -> Bool { index < mlpTypes.count && mlpTypes[index] == "sparse" }
        parts = try DecoderParts(
            checkpoint, section: .topLevel, naming: CohereModel.naming,
            experts: .gatedMLP(count: config.numExperts, countKey: "num_experts", isSparse: isSparse))
        var cohere = try parts.config(CohereConfiguration.self)
        cohere.useQKNorm = false
        self.cohere = cohere
        let d = parts.dimensions, path = parts.configPath
        let sparse = (0..<d.numHiddenLayers).filter(isSparse)
        try ConfigRules.checks(path: path) { try config.check(d, hasSparse: !sparse.isEmpty) }
        // Cohere2MoeModel builds the sliding-window mask whatever the layers.
        try parts.requireWindow(config.slidingWindow, builtBy: "Cohere2MoeModel")
        layerTypes = try parts.layerTypes(
            config.attentionTypes(layers: d.numHiddenLayers, path: path), slidingWindow: config.slidingWindow
        ) { _ in AttentionLayerType.full }
        windows = try parts.slidingWindows(layerTypes: layerTypes, window: config.slidingWindow)
        rotary = try parts.rotary(defaultTheta: 10_000, settings: try parts.config(Cohere2MoeRope.self).settings)
        try CohereModel.confirmEvenHeads(parts)
        try parts.confirmRouter("mlp.gate", experts: config.numExperts, expertsKey: "num_experts", layers: sparse)
        try parts.confirmExpertWidth(
            layers: sparse, experts: config.numExperts, expertsKey: "num_experts", inner: d.intermediateSize, innerKey: "intermediate_size")
        // The dense layers' width, before any is read.
        if let layer = (0..<d.numHiddenLayers).first(where: { !isSparse($0) && !parts.configuredDrops.dropsMLP($0) }) {
            let key = config.prefixDenseIntermediateSize == nil ? "intermediate_size" : "prefix_dense_intermediate_size"
            try parts.weights.confirmShape(
                "layers.\(layer).mlp.gate_proj.weight", [config.prefixDenseIntermediateSize ?? d.intermediateSize, d.hiddenSize],
                keys: "\(key), hidden_size", configPath: path)
        }
    }

    /// An export without some blocks spells out the kept layers' attention
    /// and MLP types.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes, mlpTypes: mlpTypes)
    }

    func norm(_ name: String) throws -> Normalization {
        guard let eps = config.rmsNormEps else {
            return try CohereModel.layerNorm(parts.weights, name, size: hiddenSize, eps: cohere.layerNormEps)
        }
        return try parts.weights.rmsNorm(name, size: hiddenSize, eps: eps)
    }

    func head() throws -> OutputHead { try parts.head(norm: norm("norm"), logitScale: cohere.logitScale) }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index).", window = windows[index]
        // Dense layers rotate whatever their type while the prefix pattern is 1 (Cohere2MoeAttention's force_rope).
        let rotates = window != nil || (mlpTypes[index] == "dense" && config.prefixDenseSlidingWindowPattern == 1)
        return try CohereModel.parallelBlock(
            index, drops: plan.union(configuredDrops), norm: { try norm(p + "input_layernorm") },
            attention: {
                try CohereModel.attention(parts, layer: index, bias: cohere.attentionBias, rotary: rotates ? rotary : nil, window: window)
            },
            feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s MLP: the dense SwiGLU, or router, routed experts and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", d = hiddenSize, inner = parts.dimensions.intermediateSize
        let activation = try parts.activation(cohere.hiddenAct), weights = parts.weights
        guard mlpTypes[index] == "sparse" else {
            return try weights.gatedMLP(p, hidden: d, inner: config.prefixDenseIntermediateSize ?? inner, activation: activation)
        }
        let shared = config.numSharedExperts > 0
            ? try weights.sharedExperts(
                p + "shared_experts.", hidden: d, inner: inner * config.numSharedExperts, activation: activation,
                widthKeys: "num_shared_experts and intermediate_size")
            : []
        return .mixture(MixtureOfExperts(
            router: try weights.linear(p + "gate", in: d, out: config.numExperts, bias: false),
            experts: try weights.gatedExperts(
                fused: p + "experts.", perExpert: p + "experts.", names: ("gate_proj", "up_proj", "down_proj"),
                count: config.numExperts, hidden: d, inner: inner, activation: activation),
            expertsPerToken: config.numExpertsPerTok, rule: config.routingRule, sharedExperts: shared,
            averagesShared: config.sharedExpertCombinationStrategy == "average"))
    }
}

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
    /// 0 makes every MLP dense.
    var numExperts: Int
    var numExpertsPerTok: Int
    var normTopkProb: Bool
    var moeIntermediateSize: Int
    /// The width of the one shared expert every token of a sparse layer goes through.
    var sharedExpertIntermediateSize: Int
    /// Every n-th layer (1-based) is sparse.
    var decoderSparseStep: Int
    /// Layers whose MLP is dense whatever `decoder_sparse_step` says
    /// (entries past the last layer or below 0 select none).
    var mlpOnlyLayers: [Int]

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case qkvBias = "qkv_bias"
        case useSlidingWindow = "use_sliding_window"
        case slidingWindow = "sliding_window"
        case maxWindowLayers = "max_window_layers"
        case layerTypes = "layer_types"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case normTopkProb = "norm_topk_prob"
        case moeIntermediateSize = "moe_intermediate_size"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
        case decoderSparseStep = "decoder_sparse_step"
        case mlpOnlyLayers = "mlp_only_layers"
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
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 60
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 4
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? false
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 1408
        sharedExpertIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .sharedExpertIntermediateSize) ?? 5632
        decoderSparseStep = try c.decodeIfPresent(Int.self, forKey: .decoderSparseStep) ?? 1
        mlpOnlyLayers = try c.decodeIfPresent([Int].self, forKey: .mlpOnlyLayers) ?? []
        try ConfigRules.decodingChecks {
            try ConfigRules.nonNegative(numExperts, "num_experts")
            // transformers takes the layer index modulo the step (0 divides by zero).
            try ConfigRules.count(decoderSparseStep, "decoder_sparse_step")
            if numExperts > 0 {
                try ConfigRules.count(moeIntermediateSize, "moe_intermediate_size")
                // 0: no shared expert (transformers adds its empty output).
                try ConfigRules.nonNegative(sharedExpertIntermediateSize, "shared_expert_intermediate_size")
                try MixtureOfExperts.checkExpertsPerToken(numExpertsPerTok, of: numExperts, expertsKey: "num_experts")
            }
        }
    }

    /// Whether layer `index`'s MLP is the routed experts (Qwen2MoeDecoderLayer's rule).
    func isSparse(_ index: Int) -> Bool {
        numExperts > 0 && !mlpOnlyLayers.contains(index) && (index + 1) % decoderSparseStep == 0
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
/// layer) in pre-RMSNorm blocks whose MLP is, on sparse layers, a router
/// `mlp.gate` over `num_experts` SwiGLU experts of width
/// `moe_intermediate_size` (softmax top-`num_experts_per_tok`, renormalised
/// when `norm_topk_prob`) plus one shared SwiGLU expert
/// `mlp.shared_expert` of width `shared_expert_intermediate_size` that every
/// token goes through, its output multiplied per token by
/// sigmoid(`mlp.shared_expert_gate` x). Other layers (`mlp_only_layers`, or
/// off the `decoder_sparse_step` beat) have a dense SwiGLU MLP of width
/// `intermediate_size`. Dropping the MLP drops router, experts and shared
/// expert together, as the layer adds their sum.
struct Qwen2MoeModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Qwen2MoeConfiguration
    let rotary: RotaryEmbedding
    /// Each layer's attention window, nil for full attention.
    let windows: [Int?]
    let layerTypes: [String]

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the expert tensors are checked with the layers.
        config = try checkpoint.decodeConfig(Qwen2MoeConfiguration.self)
        let config = config
        parts = try DecoderParts(
            checkpoint, naming: LlamaModel.naming,
            experts: .gatedMLP(count: config.numExperts, countKey: "num_experts", isSparse: config.isSparse))
        rotary = try parts.rotary()
        let dimensions = parts.dimensions
        // Qwen2MoeConfig saves the window as 0 without use_sliding_window, which its mask takes.
        if config.useSlidingWindow {
            try parts.requireWindow(config.slidingWindow, builtBy: "Qwen2MoeModel", keys: "sliding_window (use_sliding_window true)")
        }
        let layout = config.attentionLayout(layers: dimensions.numHiddenLayers)
        layerTypes = layout.types
        windows = try parts.slidingWindows(
            layerTypes: layout.types, window: layout.window, windowKeys: "sliding_window and use_sliding_window")
        try ConfigRules.checks(path: parts.configPath) {
            // The fused expert tensors hold experts × 2 · inner × hidden values.
            try ConfigRules.product([
                (config.numExperts, "num_experts"), (2, "gate and up"), (config.moeIntermediateSize, "moe_intermediate_size"),
                (dimensions.hiddenSize, "hidden_size"),
            ])
            try ConfigRules.product([
                (config.sharedExpertIntermediateSize, "shared_expert_intermediate_size"), (3, "gate, up and down"),
                (dimensions.hiddenSize, "hidden_size"),
            ])
        }
        try parts.confirmRouter(
            "mlp.gate", experts: config.numExperts, expertsKey: "num_experts",
            layers: (0..<dimensions.numHiddenLayers).filter(config.isSparse))
    }

    /// An export without some blocks spells out the layer types (even
    /// layers below `max_window_layers` slide), so renumbering cannot move a window.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.layerTypes = layerTypes
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, eps = config.rmsNormEps
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: config.qkvBias, outputBias: false, rotary: rotary, slidingWindow: windows[index]) }
        func feedForward() throws -> FeedForward {
            let activation = try parts.activation(config.hiddenAct)
            guard config.isSparse(index) else {
                return try weights.gatedMLP(p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize, activation: activation)
            }
            let routed = try weights.softmaxRoutedExperts(
                p + "mlp.", count: config.numExperts, expertsPerToken: config.numExpertsPerTok, hidden: d,
                inner: config.moeIntermediateSize, activation: activation, renormalize: config.normTopkProb)
            let shared = try weights.sharedExperts(
                p + "mlp.shared_expert.", hidden: d, inner: config.sharedExpertIntermediateSize, activation: activation,
                widthKeys: "shared_expert_intermediate_size")
            let gate = p + "mlp.shared_expert_gate"
            if shared.isEmpty, weights.has(gate + ".weight") { try weights.checkShape(gate + ".weight", [1, d]) }
            return .mixture(MixtureOfExperts(
                router: routed.router, experts: routed.experts, expertsPerToken: routed.expertsPerToken, rule: routed.rule,
                sharedExperts: shared,
                sharedExpertGate: shared.isEmpty ? nil : try weights.linear(gate, in: d, out: 1, bias: false)))
        }
        return try parts.preNormBlock(index, drops: drops, eps: eps, attention: attention, feedForward: feedForward)
    }
}

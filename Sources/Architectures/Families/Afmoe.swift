import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `afmoe`, with AfmoeConfig's defaults (transformers'
/// `models/afmoe/configuration_afmoe.py`).
struct AfmoeConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    var attentionBias: Bool?
    /// As written: absent is AfmoeConfig's 1, null is None (refused).
    var numDenseLayers: Int?
    /// nil: None, which routed layers cannot be built from.
    var numExperts: Int?
    var numExpertsPerTok: Int?
    var numSharedExperts: Int?
    var moeIntermediateSize: Int
    var routeScale: Double?
    /// Read only when `layer_types` is absent (nil: not a non-zero integer, refused then).
    var globalAttnEveryNLayers: Int?
    /// Absent: 1024; null: none.
    var slidingWindow: Int?
    var layerTypes: [String]?
    /// muP's input scaling: the embeddings times √hidden_size (null is false).
    var mupEnabled: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case numDenseLayers = "num_dense_layers"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case numSharedExperts = "num_shared_experts"
        case moeIntermediateSize = "moe_intermediate_size"
        case routeScale = "route_scale"
        case globalAttnEveryNLayers = "global_attn_every_n_layers"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case mupEnabled = "mup_enabled"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        /// Only absence takes the default: a written null stays None in transformers.
        func written<T: Decodable>(_ key: CodingKeys, absent: T?) throws -> T? {
            c.contains(key) ? try c.decodeIfPresent(T.self, forKey: key) : absent
        }
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias)
        numDenseLayers = try written(.numDenseLayers, absent: 1)
        numExperts = try written(.numExperts, absent: 64)
        numExpertsPerTok = try written(.numExpertsPerTok, absent: 6)
        numSharedExperts = try written(.numSharedExperts, absent: 2)
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 1408
        routeScale = try written(.routeScale, absent: 1.0)
        globalAttnEveryNLayers = try written(.globalAttnEveryNLayers, absent: 4)
        slidingWindow = try written(.slidingWindow, absent: 1024)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        mupEnabled = try c.decodeIfPresent(Bool.self, forKey: .mupEnabled) ?? false
    }

    /// Whether layer `index`'s MLP is the routed experts (AfmoeDecoderLayer's rule).
    func isSparse(_ index: Int) -> Bool { index >= (numDenseLayers ?? .max) }

    /// AfmoeTokenChoiceRouter as `GroupRoutedMixture` builds it, one group:
    /// sigmoid scores, the top `num_experts_per_tok` of scores plus
    /// `mlp.expert_bias` (which only chooses), their scores divided by their
    /// sum plus 1e-20 and times `route_scale`; the shared experts one MLP
    /// `mlp.shared_experts` of `num_shared_experts` × `moe_intermediate_size`.
    var routedMixture: GroupRoutedMixture {
        var mixture = GroupRoutedMixture(
            experts: numExperts ?? 0, expertsKey: "num_experts", expertsPerToken: numExpertsPerTok,
            sharedExperts: numSharedExperts ?? 0, inner: moeIntermediateSize, scoring: .sigmoid, groupScore: .best,
            groupLimited: false, groups: nil, groupsPerToken: nil, correctsSelection: true, normalizesWeights: true,
            scalingFactor: routeScale ?? 1)
        mixture.sharedExpertsKey = "num_shared_experts"
        mixture.correctionBiasNames = ["expert_bias"]
        mixture.routerName = "router.gate"
        mixture.scalingFactorKey = "route_scale"
        return mixture
    }

    /// Refuses values transformers could not build or run the layers from,
    /// before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        guard let numDenseLayers else {
            throw InvalidConfigValue(key: "num_dense_layers", problem: "must be an integer, got null")
        }
        // Routed layers exist only past the dense ones.
        guard numDenseLayers < d.numHiddenLayers else { return }
        for (value, key) in [(numExperts, "num_experts"), (numExpertsPerTok, "num_experts_per_tok"), (numSharedExperts, "num_shared_experts")]
        where value == nil {
            throw InvalidConfigValue(key: key, problem: "must be an integer for the routed layers, got null")
        }
        guard routeScale != nil else {
            throw InvalidConfigValue(key: "route_scale", problem: "must be a number for the routed layers, got null")
        }
        try routedMixture.checkExperts(hidden: d.hiddenSize)
    }
}

/// AFMoE (`afmoe`, Arcee's Trinity models; transformers'
/// `models/afmoe/modeling_afmoe.py`): blocks with an RMSNorm at both ends of
/// each branch,
///
///     H = X + RMSNorm(Attn(RMSNorm X)),   Y = H + RMSNorm(MLP(RMSNorm H))
///
/// (`input_layernorm` / `post_attention_layernorm`, `pre_mlp_layernorm` /
/// `post_mlp_layernorm`). The attention has q/k/v/o biases by
/// `attention_bias`, an RMSNorm over each head of the queries and of the
/// keys, and its output times sigmoid(`gate_proj` x) before `o_proj`; the
/// `sliding_attention` layers of `layer_types` (when absent, all but every
/// `global_attn_every_n_layers`-th, 4) rotate and attend within
/// `sliding_window` (1024), the full layers attend without positions. The
/// MLP is, below `num_dense_layers` (1), a dense SwiGLU of
/// `intermediate_size`, and from it on `num_experts` (64) SwiGLU experts of
/// `moe_intermediate_size` (1408) behind a sigmoid router `mlp.router.gate`
/// choosing `num_experts_per_tok` (6) by score plus `mlp.expert_bias`,
/// weighted by their renormalised scores times `route_scale` (1), plus
/// `num_shared_experts` (2) shared experts (`GroupRoutedMixture`, one
/// group). With `mup_enabled` the embeddings are scaled by √hidden_size.
/// Heads `head_dim` (128) wide; untied head by default. Routed experts are
/// read per expert (as saved) or fused.
struct AfmoeModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: AfmoeConfiguration
    let rotary: RotaryEmbedding
    let layerTypes: [String]
    /// Each layer's attention window, nil for full attention (which has no rotary).
    let windows: [Int?]

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(AfmoeConfiguration.self, section: .topLevel)
        self.config = config
        parts = try DecoderParts(
            checkpoint, section: .topLevel, naming: { Self.naming($0) },
            experts: .gatedMLP(count: config.numExperts ?? 0, countKey: "num_experts", isSparse: config.isSparse))
        let d = parts.dimensions, path = parts.configPath
        try ConfigRules.checks(path: path) { try config.check(d) }
        layerTypes = try config.layerTypes ?? SlidingWindowPattern.everyNthFull(
            layers: d.numHiddenLayers, pattern: config.globalAttnEveryNLayers, key: "global_attn_every_n_layers",
            configClass: "AfmoeConfig", path: path)
        // AfmoeModel builds the sliding-window mask whatever the layers.
        try parts.requireWindow(config.slidingWindow, builtBy: "AfmoeModel")
        windows = try parts.slidingWindows(layerTypes: layerTypes, window: config.slidingWindow)
        rotary = try parts.rotary()
        let routed = (0..<d.numHiddenLayers).filter(config.isSparse)
        let mixture = config.routedMixture
        try parts.confirmRouter("mlp.router.gate", experts: mixture.experts, expertsKey: mixture.expertsKey, layers: routed)
        try mixture.confirmExpertWidth(parts, isSparse: config.isSparse)
        // The shared experts' width, before any is read.
        if let layer = routed.first(where: { !parts.configuredDrops.dropsMLP($0) }), mixture.sharedExperts > 0 {
            try parts.weights.confirmShape(
                "layers.\(layer).mlp.shared_experts.gate_proj.weight", [mixture.sharedExperts * mixture.inner, d.hiddenSize],
                keys: "num_shared_experts × moe_intermediate_size, hidden_size", configPath: path)
        }
    }

    static func naming(_ prefix: String, layerTypes: [String]? = nil) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm.", "post_attention_layernorm."],
            mlp: ["mlp.", "pre_mlp_layernorm.", "post_mlp_layernorm."], layerCountKeys: ["num_hidden_layers"],
            layerTypes: layerTypes)
    }

    /// An export without some blocks spells out the kept layers' types and
    /// writes `num_dense_layers` also where config.json leaves it to its default.
    var layerNaming: LayerNaming {
        var naming = Self.naming(parts.weights.prefix, layerTypes: layerTypes)
        naming.configSection = parts.naming.configSection
        naming.layerThresholds["num_dense_layers"] = config.numDenseLayers
        return naming
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch, scaled: config.mupEnabled) }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps, norms: ("input_layernorm", "pre_mlp_layernorm"),
            outputNorms: ("post_attention_layernorm", "post_mlp_layernorm"),
            attention: { try attention(layer: index) }, feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s attention: per-head q/k RMSNorms, rotary and the
    /// window on sliding layers only, the output gated by sigmoid(gate_proj x).
    func attention(layer index: Int) throws -> SelfAttention {
        let weights = parts.weights, layout = parts.attentionLayout, eps = config.rmsNormEps
        let p = "layers.\(index).self_attn.", window = windows[index]
        return try parts.attention(
            p, bias: config.attentionBias == true, rotary: window == nil ? nil : rotary, slidingWindow: window,
            queryKeyNorm: .perHead(
                query: try weights.rmsNorm(p + "q_norm", size: layout.headDim, eps: eps),
                key: try weights.rmsNorm(p + "k_norm", size: layout.headDim, eps: eps)),
            outputGate: try weights.linear(p + "gate_proj", in: hiddenSize, out: layout.queryWidth, bias: false))
    }

    /// Layer `index`'s MLP: dense below `num_dense_layers`, else router,
    /// routed experts and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", activation = try parts.activation(config.hiddenAct ?? "silu")
        guard config.isSparse(index) else {
            return try parts.weights.gatedMLP(p, hidden: hiddenSize, inner: parts.dimensions.intermediateSize, activation: activation)
        }
        return try config.routedMixture.load(parts.weights, p, hidden: hiddenSize, activation: activation, sharedBias: false)
    }
}

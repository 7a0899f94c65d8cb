import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `laguna`, with LagunaConfig's defaults.
struct LagunaConfiguration: Decodable {
    /// `LagunaConfig.__post_init__`'s rope parameters when config.json has none.
    static let defaultRope: [String: [String: Any]] = [
        AttentionLayerType.full: ["rope_type": "default", "rope_theta": 500_000.0, "partial_rotary_factor": 0.5],
        AttentionLayerType.sliding: ["rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 1.0],
    ]

    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v/o_proj.
    var attentionBias: Bool
    var slidingWindow: Int
    var layerTypes: [String]?
    var mlpLayerTypes: [String]?
    /// `num_attention_heads_per_layer`; nil: `num_attention_heads` on every layer.
    var headsPerLayer: [Int]?
    /// `gating`: true or "per-head" gate each head, anything else each output column.
    var gatesPerHead: Bool
    var numExperts: Int
    var numExpertsPerTok: Int
    var moeIntermediateSize: Int
    var sharedExpertIntermediateSize: Int
    var moeRoutedScalingFactor: Double
    /// `moe_router_logit_softcapping`; not above 0: none.
    var routerLogitSoftcapping: Double

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case mlpLayerTypes = "mlp_layer_types"
        case headsPerLayer = "num_attention_heads_per_layer"
        case gating
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
        case moeRoutedScalingFactor = "moe_routed_scaling_factor"
        case routerLogitSoftcapping = "moe_router_logit_softcapping"
        case applyRouterWeightOnInput = "moe_apply_router_weight_on_input"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow) ?? 512
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        headsPerLayer = try c.decodeIfPresent([Int].self, forKey: .headsPerLayer)
        // LagunaAttention: `gating is True or gating == "per-head"` (the schema allows a boolean or a string).
        gatesPerHead = (try? c.decodeIfPresent(Bool.self, forKey: .gating)) ?? (try? c.decodeIfPresent(String.self, forKey: .gating))
            .map { $0 == "per-head" } ?? true
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 256
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 8
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 512
        sharedExpertIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .sharedExpertIntermediateSize) ?? 512
        moeRoutedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .moeRoutedScalingFactor) ?? 1
        routerLogitSoftcapping = try c.decodeIfPresent(Double.self, forKey: .routerLogitSoftcapping) ?? 0
        let onInput = try c.decodeIfPresent(Bool.self, forKey: .applyRouterWeightOnInput) ?? false
        let (heads, types, cap) = (headsPerLayer, mlpLayerTypes, routerLogitSoftcapping)
        try ConfigRules.decodingChecks {
            if onInput {
                throw InvalidConfigValue(
                    key: CodingKeys.applyRouterWeightOnInput.rawValue, problem: "is true, which transformers' LagunaConfig refuses (NotImplementedError)")
            }
            for count in heads ?? [] { try ConfigRules.count(count, CodingKeys.headsPerLayer.rawValue) }
            try MLPLayerTypes.checkEntries(types)
            if cap > 0 { try ConfigRules.positive(cap, CodingKeys.routerLogitSoftcapping.rawValue) }
        }
    }

    /// The routed layers as `GroupRoutedMixture` builds them: sigmoid scores
    /// (of logits soft-capped when `moe_router_logit_softcapping` > 0) plus
    /// the correction bias choose, the chosen sigmoids over their sum weigh,
    /// times `moe_routed_scaling_factor`, beside the shared SwiGLU.
    var mixture: GroupRoutedMixture {
        GroupRoutedMixture(
            experts: numExperts, expertsKey: "num_experts", expertsPerToken: numExpertsPerTok, sharedExperts: 1, inner: moeIntermediateSize,
            scoring: .sigmoid, groupScore: .best, groupLimited: false, groups: 1, groupsPerToken: 1, correctsSelection: true,
            normalizesWeights: true, scalingFactor: moeRoutedScalingFactor, sharedExpertsKey: "shared_expert_intermediate_size",
            correctionBiasNames: ["gate.e_score_correction_bias", "experts.e_score_correction_bias"],
            scalingFactorKey: "moe_routed_scaling_factor", sharedWidth: sharedExpertIntermediateSize,
            logitSoftcap: routerLogitSoftcapping > 0 ? Float(routerLogitSoftcapping) : nil)
    }

    /// Refuses head counts, lists and expert sizes transformers could not run
    /// (`validate_architecture`'s lengths, repeat_kv's grouping), before
    /// anything is sized from them.
    func check(_ d: DecoderDimensions, mlpTypes: [String]) throws {
        let layers = d.numHiddenLayers
        if let headsPerLayer {
            guard headsPerLayer.count == layers else {
                throw InvalidConfigValue(
                    key: CodingKeys.headsPerLayer.rawValue, problem: "lists \(headsPerLayer.count) layers, but num_hidden_layers is \(layers)")
            }
            for heads in headsPerLayer {
                try ConfigRules.divides(d.kvHeads, "num_key_value_heads", heads, CodingKeys.headsPerLayer.rawValue)
                try ConfigRules.product([(heads, CodingKeys.headsPerLayer.rawValue), (d.resolvedHeadDim, "head_dim"), (d.hiddenSize, "hidden_size")])
            }
        }
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: layers, validated: true)
        guard mlpTypes.contains("sparse") else { return }
        try mixture.checkExperts(hidden: d.hiddenSize)
        try ConfigRules.nonNegative(sharedExpertIntermediateSize, CodingKeys.sharedExpertIntermediateSize.rawValue)
        try ConfigRules.product([
            (sharedExpertIntermediateSize, CodingKeys.sharedExpertIntermediateSize.rawValue), (3, "gate, up and down"), (d.hiddenSize, "hidden_size"),
        ])
    }
}

/// Poolside's Laguna (`laguna`, transformers' `models/laguna/`): Llama's
/// pre-RMSNorm blocks whose attention has per-head q/k RMSNorms before
/// rotary, heads of `head_dim` (128), `num_attention_heads_per_layer` query
/// heads per layer over `num_key_value_heads` key/value heads, q/k/v/o
/// biases by `attention_bias`, and an output gate: softplus(`g_proj` x)
/// multiplies each head's output (`gating` true or "per-head") or each
/// output column (otherwise) before o_proj. By `layer_types` (by default all
/// full) sliding layers attend within `sliding_window` (512); each layer
/// type rotates by its own entry of `rope_parameters`, read as written (by
/// default half of each head at 5e5 for full layers, all of it at 1e4 for
/// sliding ones). The MLP by `mlp_layer_types` (by default layer 0 dense):
/// a dense SwiGLU of `intermediate_size`, or `LagunaConfiguration.mixture`
/// (router `mlp.gate`, correction bias saved as
/// `mlp.experts.e_score_correction_bias`, shared SwiGLU saved as
/// `mlp.shared_expert`).
struct LagunaModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: LagunaConfiguration
    let layerTypes: [String]
    let mlpTypes: [String]
    /// Each layer's query, key and value heads.
    let layouts: [QKVLayout]
    /// The rotary embedding of each layer type in use.
    let rotaries: [String: RotaryEmbedding]

    init(_ checkpoint: Checkpoint) throws {
        let section = ConfigSection.topLevel
        // Decoded first: the routed layers' expert tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(LagunaConfiguration.self, section: section)
        let dimensions = try checkpoint.decodeConfig(DecoderDimensions.self, section: section)
        let mlpTypes = MLPLayerTypes.resolved(config.mlpLayerTypes, layers: dimensions.numHiddenLayers, firstDense: 1)
        try ConfigRules.checks(path: checkpoint.configURL.path) { try config.check(dimensions, mlpTypes: mlpTypes) }
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        self.config = config
        self.mlpTypes = mlpTypes
        parts = try DecoderParts(
            checkpoint, section: section, naming: LlamaModel.naming,
            experts: .gatedMLP(count: config.numExperts, countKey: "num_experts", isSparse: isSparse))
        let d = parts.dimensions
        layerTypes = try parts.layerTypes(config.layerTypes, slidingWindow: config.slidingWindow) { _ in AttentionLayerType.full }
        layouts = (config.headsPerLayer ?? Array(repeating: d.numAttentionHeads, count: d.numHiddenLayers)).map {
            QKVLayout(numHeads: $0, numKVHeads: d.kvHeads, headDim: d.resolvedHeadDim)
        }
        if let layer = parts.firstKeptAttention {
            try parts.confirmProjections(layer: layer, [
                ("q_proj", layouts[layer].queryWidth, "num_attention_heads_per_layer[\(layer)] × head_dim"),
                ("k_proj", layouts[layer].keyWidth, "num_key_value_heads × head_dim"),
            ])
        }
        if mlpTypes.contains("sparse") {
            let sparse = (0..<d.numHiddenLayers).filter(isSparse)
            try parts.confirmRouter("mlp.gate", experts: config.numExperts, expertsKey: "num_experts", layers: sparse)
            try config.mixture.confirmExpertWidth(parts, isSparse: isSparse)
        }
        // LagunaRotaryEmbedding reads each type's rotated share with 1 as the default.
        rotaries = try parts.rotariesAsWritten(
            types: Set(layerTypes), defaults: LagunaConfiguration.defaultRope, rotaryClass: "LagunaRotaryEmbedding",
            attentionClass: "LagunaAttention", partialRotary: { _ in .honoured(default: 1) }, standardised: false)
    }

    /// Exports without some blocks spell out the kept layers' attention and MLP types.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes, mlpTypes: mlpTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try attention(layer: index) }, feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s LagunaAttention.
    func attention(layer index: Int) throws -> SelfAttention {
        let type = layerTypes[index], layout = layouts[index], eps = config.rmsNormEps, d = hiddenSize
        let p = "layers.\(index).self_attn.", weights = parts.weights
        var attention = try parts.attention(
            p, bias: config.attentionBias, rotary: rotaries[type],
            slidingWindow: type == AttentionLayerType.sliding ? config.slidingWindow : nil,
            queryKeyNorm: .perHead(
                query: try weights.rmsNorm(p + "q_norm", size: layout.headDim, eps: eps),
                key: try weights.rmsNorm(p + "k_norm", size: layout.headDim, eps: eps)),
            outputGate: config.gatesPerHead
                ? weights.perHeadGate(p + "g_proj", layout: layout, hidden: d)
                : weights.linear(p + "g_proj", in: d, out: layout.queryWidth, bias: false),
            layout: layout)
        attention.outputGateFunction = .softplus
        return attention
    }

    /// Layer `index`'s MLP: dense, or router, routed experts and the shared expert.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", d = hiddenSize, weights = parts.weights, activation = try parts.activation(config.hiddenAct)
        guard mlpTypes[index] == "sparse" else {
            return try weights.gatedMLP(p, hidden: d, inner: parts.dimensions.intermediateSize, activation: activation)
        }
        var mixture = config.mixture
        mixture.sharedName = try weights.storedModule(p, saved: "shared_expert", renamed: "shared_experts", probe: ".down_proj.weight")
        return try mixture.load(weights, p, hidden: d, activation: activation, sharedBias: false)
    }
}

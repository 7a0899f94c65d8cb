import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The mixture-of-experts keys of `exaone_moe`'s config.json, with
/// ExaoneMoeConfig's defaults (transformers'
/// `models/exaone_moe/configuration_exaone_moe.py`); the attention's are
/// EXAONE 4's (`SlidingWindowPattern`).
struct ExaoneMoeConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Each layer's MLP, "dense" or "sparse"; nil: the first
    /// `first_k_dense_replace` layers dense, the others sparse.
    var mlpLayerTypes: [String]?
    var firstKDenseReplace: Int
    var numExperts: Int
    var numExpertsPerTok: Int
    var numSharedExperts: Int
    var moeIntermediateSize: Int
    var routedScalingFactor: Double
    var nGroup: Int
    var topkGroup: Int
    var normTopkProb: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case mlpLayerTypes = "mlp_layer_types"
        case firstKDenseReplace = "first_k_dense_replace"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case numSharedExperts = "num_shared_experts"
        case moeIntermediateSize = "moe_intermediate_size"
        case routedScalingFactor = "routed_scaling_factor"
        case nGroup = "n_group"
        case topkGroup = "topk_group"
        case normTopkProb = "norm_topk_prob"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        firstKDenseReplace = try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? 1
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 64
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 8
        numSharedExperts = try c.decodeIfPresent(Int.self, forKey: .numSharedExperts) ?? 1
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 1024
        routedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .routedScalingFactor) ?? 2.5
        nGroup = try c.decodeIfPresent(Int.self, forKey: .nGroup) ?? 1
        topkGroup = try c.decodeIfPresent(Int.self, forKey: .topkGroup) ?? 1
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? true
        let types = mlpLayerTypes
        try ConfigRules.decodingChecks { try MLPLayerTypes.checkEntries(types) }
    }

    /// Each layer's MLP type for `layers` layers (ExaoneMoeConfig's rule when unset).
    func layerTypes(_ layers: Int) -> [String] {
        MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: firstKDenseReplace)
    }

    /// DeepSeek-V3's router (ExaoneMoeTopkRouter): sigmoid scores, groups
    /// scored by their best two, `e_score_correction_bias` for choosing.
    var routedMixture: GroupRoutedMixture {
        GroupRoutedMixture(
            experts: numExperts, expertsKey: "num_experts", expertsPerToken: numExpertsPerTok, sharedExperts: numSharedExperts,
            inner: moeIntermediateSize, scoring: .sigmoid, groupScore: .sumOfBestTwo, groupLimited: true, groups: nGroup,
            groupsPerToken: topkGroup, correctsSelection: true, normalizesWeights: normTopkProb, scalingFactor: routedScalingFactor,
            sharedExpertsKey: "num_shared_experts",
            correctionBiasNames: ["gate.e_score_correction_bias", "e_score_correction_bias"])
    }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers)
        guard layerTypes(d.numHiddenLayers).prefix(d.numHiddenLayers).contains("sparse") else { return }
        let routed = routedMixture
        try routed.checkExperts(hidden: d.hiddenSize)
        try routed.checkGroups()
    }
}

/// EXAONE MoE (K-EXAONE; transformers' `models/exaone_moe/`): EXAONE 4's
/// attention (per-head q/k RMSNorms before rotary; `layer_types` sliding
/// layers rotate and attend within `sliding_window`, the others attend
/// fully without positions) in pre-RMSNorm blocks (OLMoE's layer, not
/// EXAONE 4's post-norm one), a dense SwiGLU MLP on the `mlp_layer_types`
/// layers marked "dense" (by default the first `first_k_dense_replace`)
/// and DeepSeek-V3's mixture on the "sparse" ones (`GroupRoutedMixture`:
/// sigmoid group-limited routing with the correction bias, stored as
/// `mlp.e_score_correction_bias` (read by transformers as the router's
/// `gate.e_score_correction_bias`, a name also accepted),
/// `routed_scaling_factor`, and `num_shared_experts` shared experts of
/// `moe_intermediate_size` stored as one MLP `shared_experts`). The MLP
/// module is router, routed and shared experts together. Multi-token
/// prediction weights (`mtp.*`) are not run.
///
/// Routed experts are read per expert (`mlp.experts.<e>.gate_proj|up_proj|
/// down_proj`, as `save_pretrained` writes them) or fused
/// (`mlp.experts.gate_up_proj` / `down_proj`).
struct ExaoneMoeModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: ExaoneMoeConfiguration
    /// The attention's settings, as EXAONE 4 reads them (no biases).
    let attentionConfig: Olmo2Configuration
    let mlpTypes: [String]
    let layout: (window: Int?, types: [String])
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(ExaoneMoeConfiguration.self)
        let dimensions = try checkpoint.decodeConfig(DecoderDimensions.self)
        try ConfigRules.checks(path: checkpoint.configURL.path) { try config.check(dimensions) }
        let types = config.layerTypes(dimensions.numHiddenLayers)
        self.config = config
        mlpTypes = types
        let isSparse: @Sendable (Int) -> Bool = { $0 < types.count && types[$0] == "sparse" }
        parts = try DecoderParts(
            checkpoint, naming: LlamaModel.naming,
            experts: .gatedMLP(count: config.numExperts, countKey: "num_experts", isSparse: isSparse))
        attentionConfig = Olmo2Configuration(rmsNormEps: config.rmsNormEps, hiddenAct: config.hiddenAct, attentionBias: nil)
        layout = try Exaone4Model.hybridLayout(parts, configClass: "ExaoneMoeConfig")
        rotary = try parts.rotary()
        try parts.confirmRouter(
            "mlp.gate", experts: config.numExperts, expertsKey: "num_experts",
            layers: (0..<dimensions.numHiddenLayers).filter(isSparse))
        try config.routedMixture.confirmExpertWidth(parts, isSparse: isSparse)
    }

    func isSparse(_ index: Int) -> Bool { index < mlpTypes.count && mlpTypes[index] == "sparse" }

    /// An export without some blocks spells out the kept layers' attention
    /// and MLP types, so renumbering cannot move a window, positions or
    /// experts to another layer.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.layerTypes = layout.types
        naming.mlpLayerTypes = Array(mlpTypes.prefix(layerCount))
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try Exaone4Model.attention(index, parts: parts, config: attentionConfig, rotary: rotary, layout: layout) },
            feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s MLP: dense, or router, routed experts and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", activation = try parts.activation(config.hiddenAct)
        guard isSparse(index) else {
            return try parts.weights.gatedMLP(p, hidden: hiddenSize, inner: parts.dimensions.intermediateSize, activation: activation)
        }
        return try config.routedMixture.load(parts.weights, p, hidden: hiddenSize, activation: activation, sharedBias: false)
    }
}

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
    /// The routed layers' keys.
    var experts: DeepSeekExperts

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case mlpLayerTypes = "mlp_layer_types"
        case firstKDenseReplace = "first_k_dense_replace"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        firstKDenseReplace = try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? 1
        experts = try DeepSeekExperts(from: decoder, configClass: .exaoneMoe)
        let types = mlpLayerTypes
        try ConfigRules.decodingChecks { try MLPLayerTypes.checkEntries(types) }
    }

    /// Each layer's MLP type for `layers` layers (ExaoneMoeConfig's rule when unset).
    func layerTypes(_ layers: Int) -> [String] {
        MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: firstKDenseReplace)
    }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers)
        guard layerTypes(d.numHiddenLayers).prefix(d.numHiddenLayers).contains("sparse") else { return }
        try experts.check(hidden: d.hiddenSize)
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
            experts: config.experts.naming(isSparse: isSparse))
        attentionConfig = Olmo2Configuration(rmsNormEps: config.rmsNormEps, hiddenAct: config.hiddenAct, attentionBias: nil)
        layout = try Exaone4Model.hybridLayout(parts, configClass: "ExaoneMoeConfig")
        rotary = try parts.rotary()
        try config.experts.confirm(parts, isSparse: isSparse)
    }

    func isSparse(_ index: Int) -> Bool { index < mlpTypes.count && mlpTypes[index] == "sparse" }

    /// An export without some blocks spells out the kept layers' attention
    /// and MLP types, so renumbering cannot move a window, positions or
    /// experts to another layer.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layout.types, mlpTypes: mlpTypes)
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
        try config.experts.feedForward(parts, layer: index, sparse: isSparse(index), activation: try parts.activation(config.hiddenAct))
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `hy_v3`, with HYV3Config's defaults (transformers'
/// `models/hy_v3/configuration_hy_v3.py`).
struct HYV3Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v/o_proj.
    var attentionBias: Bool
    /// Biases on the dense MLPs and the shared experts (not the routed experts).
    var mlpBias: Bool
    /// Each layer's MLP, "dense" or "sparse"; nil: layer 0 dense, the others sparse.
    var mlpLayerTypes: [String]?
    /// The routed layers' keys.
    var experts: DeepSeekExperts

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case mlpLayerTypes = "mlp_layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        experts = try DeepSeekExperts(from: decoder, configClass: .hyV3)
        let types = mlpLayerTypes
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
            try MLPLayerTypes.checkEntries(types)
        }
    }

    /// Each layer's MLP type for `layers` layers (HYV3Config's rule when unset).
    func layerTypes(_ layers: Int) -> [String] {
        MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: 1)
    }
}

/// Tencent's Hy3 (`hy_v3`, transformers' `models/hy_v3/modeling_hy_v3.py`):
/// Llama's pre-RMSNorm blocks with Qwen3's attention (per-head q/k
/// RMSNorms before rotary, biases on q/k/v/o by `attention_bias`, heads of
/// `head_dim` 128 unless given, rotary base 11158840 unless given). A dense
/// SwiGLU of `intermediate_size` (biased by `mlp_bias`) on the
/// `mlp_layer_types` layers marked "dense" (by default layer 0), and on the
/// "sparse" ones a mixture (`GroupRoutedMixture`, one group): the router
/// `mlp.gate` takes the `num_experts_per_tok` of `num_experts` (alias
/// `num_local_experts`) experts of `moe_intermediate_size` with the highest
/// sigmoid score plus `mlp.e_score_correction_bias` (which only chooses),
/// weighted by their sigmoid scores over their sum + 1e-20 times
/// `router_scaling_factor`, plus the shared experts `mlp.shared_experts`, one
/// MLP of `num_shared_experts` × `moe_intermediate_size` (biased by
/// `mlp_bias`; with 0 shared experts, HYV3MLP's width falls back to
/// `intermediate_size`). Routed experts fused (`experts.gate_up_proj`,
/// `down_proj`) or per expert. The MLP module is router, routed and shared
/// experts together. Untied head by default.
struct HYV3Model: DecoderFamily {
    let parts: DecoderParts
    let config: HYV3Configuration
    let mlpTypes: [String]
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(HYV3Configuration.self, section: .topLevel)
        let dimensions = try checkpoint.decodeConfig(DecoderDimensions.self, section: .topLevel)
        let types = config.layerTypes(dimensions.numHiddenLayers)
        let isSparse: @Sendable (Int) -> Bool = { $0 < types.count && types[$0] == "sparse" }
        try ConfigRules.checks(path: checkpoint.configURL.path) {
            try MLPLayerTypes.checkCount(config.mlpLayerTypes, layers: dimensions.numHiddenLayers)
            if types.prefix(dimensions.numHiddenLayers).contains("sparse") { try config.experts.check(hidden: dimensions.hiddenSize) }
        }
        self.config = config
        mlpTypes = types
        parts = try DecoderParts(
            checkpoint, section: .topLevel, naming: { Qwen3Model.naming($0) }, experts: config.experts.naming(isSparse: isSparse))
        rotary = try parts.rotary(defaultTheta: 11_158_840)
        let weights = parts.weights
        try config.experts.confirm(parts, isSparse: isSparse, router: { try Self.names(weights, layer: $0).router })
    }

    /// Where layer `layer` stores its router and shared experts: as Hy3's
    /// checkpoints save them (`mlp.router.gate`, `mlp.shared_mlp`), or under
    /// transformers' names (`mlp.gate`, `mlp.shared_experts`); the
    /// correction bias is read as `mlp.expert_bias` or `mlp.e_score_correction_bias`.
    static func names(_ weights: Weights, layer: Int) throws -> (router: String, shared: String) {
        let p = "layers.\(layer).mlp."
        return (
            try weights.storedModule(p, saved: "router.gate", renamed: "gate"),
            try weights.storedModule(p, saved: "shared_mlp", renamed: "shared_experts", probe: ".down_proj.weight"))
    }

    func isSparse(_ index: Int) -> Bool { index < mlpTypes.count && mlpTypes[index] == "sparse" }

    /// An export without some blocks spells out the kept layers' MLP types.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: nil, mlpTypes: mlpTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try Qwen3Model.attention(parts, layer: index, bias: config.attentionBias, eps: config.rmsNormEps, rotary: rotary) },
            feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s MLP: dense, or router, routed experts and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", d = hiddenSize, activation = try parts.activation(config.hiddenAct)
        guard isSparse(index) else {
            return try parts.weights.gatedMLP(
                p, hidden: d, inner: parts.dimensions.intermediateSize, activation: activation, bias: config.mlpBias)
        }
        var mixture = config.experts.mixture
        if mixture.sharedExperts == 0 { mixture.sharedWidth = parts.dimensions.intermediateSize }
        (mixture.routerName, mixture.sharedName) = try Self.names(parts.weights, layer: index)
        return try mixture.load(parts.weights, p, hidden: d, activation: activation, sharedBias: config.mlpBias)
    }
}

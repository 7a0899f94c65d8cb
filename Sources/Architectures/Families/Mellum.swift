import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `mellum`, with MellumConfig's defaults.
struct MellumConfiguration: Decodable {
    /// `MellumConfig.__post_init__`'s rope parameters when config.json has none.
    static let defaultRope: [String: [String: Any]] = [
        AttentionLayerType.full: ["rope_type": "default", "rope_theta": 500_000.0],
        AttentionLayerType.sliding: ["rope_type": "default", "rope_theta": 10_000.0],
    ]

    var rmsNormEps: Double
    var hiddenAct: String
    var attentionBias: Bool
    /// As written: absent is 1024, `null` none.
    var slidingWindow: Int?
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : 1024
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
    }
}

/// Mellum (JetBrains' Mellum 2, transformers' models/mellum/): Qwen3-MoE's
/// block — pre-RMSNorm, per-head q/k RMSNorms, heads of `head_dim` (128) —
/// with sliding-window layers by `layer_types` (by default none; window
/// `sliding_window`, 1024) each layer type rotating by its own rope
/// parameters (`rope_parameters.full_attention` / `.sliding_attention`, as
/// written: MellumConfig does not standardise them; by default base 5e5
/// and 1e4), and the MLP by `mlp_layer_types`: routed experts
/// (`QwenExperts`: softmax top-`num_experts_per_tok` of `num_experts`,
/// renormalised by `norm_topk_prob`, fused `gate_up_proj` / `down_proj`)
/// or a dense SwiGLU of `intermediate_size`. The multi-token-prediction
/// layer (`mtp.`) is not part of the model transformers loads.
struct MellumModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: MellumConfiguration
    let experts: QwenExperts
    let layerTypes: [String]
    /// The rotary embedding of each layer type in use.
    let rotaries: [String: RotaryEmbedding]

    init(_ checkpoint: Checkpoint) throws {
        let section = ConfigSection.topLevel
        // Decoded first: the expert tensors are checked with the layers, by mlp_layer_types.
        let experts = try QwenExperts(checkpoint, section: section, configClass: .mellum)
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self, section: section).numHiddenLayers
        do { try MLPLayerTypes.checkCount(experts.mlpLayerTypes, layers: layers) } catch let invalid as InvalidConfigValue {
            throw invalid.error(path: checkpoint.configURL.path)
        }
        self.experts = experts
        parts = try DecoderParts(checkpoint, section: section, naming: LlamaModel.naming, experts: experts.naming)
        let config = try parts.config(MellumConfiguration.self)
        self.config = config
        let types = try parts.layerTypes(config.layerTypes, slidingWindow: config.slidingWindow) { _ in AttentionLayerType.full }
        layerTypes = types
        try experts.confirm(parts)
        try parts.confirmAttentionProjections()
        // MellumRotaryEmbedding reads rope_theta in each entry; MellumAttention has no partial rotation.
        rotaries = try parts.rotariesAsWritten(
            types: Set(types), defaults: MellumConfiguration.defaultRope, rotaryClass: "MellumRotaryEmbedding",
            attentionClass: "MellumAttention", standardised: false)
    }

    /// Exports without some blocks spell out the kept layers' types.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let type = layerTypes[index]
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: {
                try Qwen3Model.attention(
                    parts, layer: index, bias: config.attentionBias, eps: config.rmsNormEps, rotary: rotaries[type]!,
                    window: type == AttentionLayerType.sliding ? config.slidingWindow : nil)
            },
            feedForward: { try experts.feedForward(parts, layer: index, activation: try parts.activation(config.hiddenAct)) })
    }
}

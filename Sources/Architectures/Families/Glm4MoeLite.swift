import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `glm4_moe_lite`'s config.json besides the sizes, with
/// Glm4MoeLiteConfig's defaults.
struct Glm4MoeLiteConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var latent: LatentAttentionSettings
    /// Each layer's MLP, "dense" or "sparse"; nil: layer 0 dense, the others sparse.
    var mlpLayerTypes: [String]?
    /// The routed layers' keys.
    var experts: DeepSeekExperts

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case mlpLayerTypes = "mlp_layer_types"
        case qkRopeHeadDim = "qk_rope_head_dim"
        case headDim = "head_dim"
    }

    /// Glm4MoeLiteConfig's latent attention defaults.
    static let latentDefaults = LatentAttentionSettings(
        qLoraRank: 768, kvLoraRank: 512, qkNopeHeadDim: 192, qkRopeHeadDim: 64, vHeadDim: 256, ropeInterleave: true,
        attentionBias: false)

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        latent = try LatentAttentionSettings(from: decoder, defaults: Self.latentDefaults)
        // Glm4MoeLiteConfig maps head_dim onto qk_rope_head_dim, set over the field.
        let rope = try c.decodeIfPresent(Int.self, forKey: .qkRopeHeadDim)
        let headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        if let headDim { latent.qkRopeHeadDim = headDim }
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        experts = try DeepSeekExperts(from: decoder, configClass: .glm4MoeLite)
        let types = mlpLayerTypes
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let rope, let headDim, rope != headDim {
                throw InvalidConfigValue(key: "head_dim", problem: "is \(headDim), but qk_rope_head_dim (the same setting) is \(rope)")
            }
            try MLPLayerTypes.checkEntries(types)
        }
    }

    /// Each layer's MLP type for `layers` layers (Glm4MoeLiteConfig's rule when unset).
    func layerTypes(_ layers: Int) -> [String] { MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: 1) }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        try latent.check(d)
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers)
        guard layerTypes(d.numHiddenLayers).prefix(d.numHiddenLayers).contains("sparse") else { return }
        try experts.check(hidden: d.hiddenSize)
    }
}

/// GLM-4.7-Flash (`glm4_moe_lite`; transformers' `models/glm4_moe_lite/`):
/// GLM-4.5's pre-RMSNorm blocks with DeepSeek-V3's multi-head latent
/// attention (`LatentAttentionSettings`; the rotary table is
/// `qk_rope_head_dim` (which `head_dim` names) times `partial_rotary_factor`,
/// default 1, which must rotate all of it; the softmax scale grown by YaRN's
/// `mscale_all_dim`), a dense SwiGLU MLP on the `mlp_layer_types` layers
/// marked "dense" (by default layer 0 alone) and GLM-4.5's mixture of
/// experts on the "sparse" ones (`GroupRoutedMixture`: DeepSeek-V3's sigmoid
/// group-limited routing with `gate.e_score_correction_bias` and
/// `n_shared_experts` shared experts). The MLP module is router, routed and
/// shared experts together: dropping the MLP drops all of it.
/// Multi-token-prediction layers (`num_nextn_predict_layers`, layer 47 of
/// the release) are not run.
///
/// Routed experts are read per expert (`mlp.experts.<e>.gate_proj|up_proj|
/// down_proj`, as the released checkpoints and `save_pretrained` write
/// them) or fused (`mlp.experts.gate_up_proj` / `down_proj`).
struct Glm4MoeLiteModel: DecoderFamily {
    let parts: DecoderParts
    let config: Glm4MoeLiteConfiguration
    let types: [String]
    let rotary: RotaryEmbedding
    let scale: Float

    init(_ checkpoint: Checkpoint) throws {
        let predictionLayers = try checkpoint.decodeConfig(MultiTokenPredictionLayers.self).count
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(Glm4MoeLiteConfiguration.self)
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self).numHiddenLayers
        let types = config.layerTypes(layers)
        self.config = config
        self.types = types
        let isSparse: @Sendable (Int) -> Bool = { $0 < types.count && types[$0] == "sparse" }
        parts = try DecoderParts(
            checkpoint, naming: LlamaModel.naming, extraLayers: predictionLayers,
            experts: config.experts.naming(isSparse: isSparse))
        let d = parts.dimensions, configPath = parts.configPath, latent = config.latent
        try ConfigRules.checks(path: configPath) { try config.check(d) }
        try latent.confirmShapes(parts)
        try config.experts.confirm(parts, isSparse: isSparse)
        let rope = try parts.ropeSettings()
        let kept = parts.firstKeptAttention != nil
        let factor = rope.partialRotaryFactor ?? 1, width = Int(min(Double(latent.qkRopeHeadDim) * factor, Double(Int.max / 2)))
        if !rope.partialRotaryFactorIsNull, width + width % 2 != latent.qkRopeHeadDim {
            throw InvalidConfigValue(
                key: rope.partialRotaryKey,
                problem: "is \(factor): a rotary table int(qk_rope_head_dim \(latent.qkRopeHeadDim) × \(factor)) = \(width) wide, but Glm4MoeLiteAttention rotates all \(latent.qkRopeHeadDim) rope columns"
            ).error(path: configPath)
        }
        // No table when the config drops every attention layer: no tensor confirmed its width.
        rotary = try rope.embedding(
            headDim: kept ? latent.qkRopeHeadDim : 0, partialRotary: .honoured(default: 1), configPath: configPath)
        scale = try latent.scale(rope, configPath: configPath)
    }

    func isSparse(_ index: Int) -> Bool { index < types.count && types[index] == "sparse" }

    /// An export without some blocks writes `mlp_layer_types` for the kept
    /// layers also where config.json leaves it to the class's rule.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.mlpLayerTypes = Array(types.prefix(layerCount))
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try config.latent.attention(parts, layer: index, rotary: rotary, scale: scale) },
            feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s MLP: dense, or router, routed experts and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        try config.experts.feedForward(parts, layer: index, sparse: isSparse(index), activation: try parts.activation(config.hiddenAct))
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `mimo_v2_flash`, with MiMoV2FlashConfig's defaults.
struct MiMoV2FlashConfiguration: Decodable {
    /// `MiMoV2FlashConfig.__post_init__`'s rope parameters when config.json has none.
    static let defaultRope: [String: [String: Any]] = [
        AttentionLayerType.full: ["rope_type": "default", "rope_theta": 5_000_000.0, "partial_rotary_factor": 0.334],
        AttentionLayerType.sliding: ["rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.334],
    ]

    /// The window `sliding_window_size` + 1 replaces `sliding_window` with.
    var section: ConfigSection {
        ConfigSection(overrides: slidingWindowSize == nil ? [:] : ["sliding_window": .integer(slidingWindow)])
    }

    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v_proj (o_proj has none).
    var attentionBias: Bool
    /// The width of each value head (the query and key heads are `head_dim` wide).
    var vHeadDim: Int
    /// The window of the sliding layers: `sliding_window_size` + 1 when
    /// config.json gives that (the original checkpoints' key), else `sliding_window`.
    var slidingWindow: Int
    var slidingWindowSize: Int?
    var layerTypes: [String]?
    var mlpLayerTypes: [String]?
    /// `attention_value_scale`; null is 1.
    var attentionValueScale: Double
    /// The routed layers' keys.
    var experts: DeepSeekExperts

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case vHeadDim = "v_head_dim"
        case slidingWindow = "sliding_window"
        case slidingWindowSize = "sliding_window_size"
        case layerTypes = "layer_types"
        case mlpLayerTypes = "mlp_layer_types"
        case attentionValueScale = "attention_value_scale"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        vHeadDim = try c.decodeIfPresent(Int.self, forKey: .vHeadDim) ?? 128
        slidingWindowSize = try c.decodeIfPresent(Int.self, forKey: .slidingWindowSize)
        // An overflowing sum is refused below.
        slidingWindow = try slidingWindowSize.map { $0 &+ 1 } ?? c.decodeIfPresent(Int.self, forKey: .slidingWindow) ?? 129
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        attentionValueScale = c.contains(.attentionValueScale)
            ? try c.decodeIfPresent(Double.self, forKey: .attentionValueScale) ?? 1 : 0.707
        experts = try DeepSeekExperts(from: decoder, configClass: .mimoV2Flash)
        let (size, width, types) = (slidingWindowSize, vHeadDim, mlpLayerTypes)
        try ConfigRules.decodingChecks {
            if let size, size < 0 || size == Int.max {
                throw InvalidConfigValue(key: "sliding_window_size", problem: "is \(size), which gives a window of \(size) + 1 tokens: it must be at least 0 and the sum fit in 64 bits")
            }
            try ConfigRules.count(width, "v_head_dim")
            try MLPLayerTypes.checkEntries(types)
        }
    }

    /// Each layer's MLP type for `layers` layers (MiMoV2FlashConfig's rule when unset: layer 0 dense).
    func mlpTypes(_ layers: Int) -> [String] {
        MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: 1)
    }
}

/// Xiaomi's MiMo-V2-Flash (`mimo_v2_flash`, transformers'
/// `models/mimo_v2_flash/`): Llama's pre-RMSNorm blocks whose attention
/// has heads of `head_dim` (192) for queries and keys but `v_head_dim`
/// (128) for values, the values multiplied by `attention_value_scale`
/// (0.707) and the scores by 1/√head_dim, and q/k/v biases by
/// `attention_bias`. By `layer_types` (by default layer 0 and every sixth
/// full) sliding layers attend within `sliding_window` (129, or
/// `sliding_window_size` + 1) with twice `num_key_value_heads` key/value
/// heads and a learned sink logit per head (`self_attn.sinks`, saved as
/// `attention_sink_bias`); full layers have neither. Each layer type
/// rotates by its own entry of `rope_parameters`, read as written (by
/// default bases 5e6 and 1e4), rotating `partial_rotary_factor` of each
/// head (0.334 unless given for the "default" type, else 1). The MLP by
/// `mlp_layer_types` (by default layer 0 dense): a dense SwiGLU of
/// `intermediate_size`, or DeepSeek-V3's routing (`GroupRoutedMixture`:
/// sigmoid scores plus `mlp.gate.e_score_correction_bias` choose
/// `num_experts_per_tok` of `n_routed_experts` within the best `topk_group`
/// of `n_group` groups, weighted by their sigmoids, renormalised by
/// `norm_topk_prob`, times `routed_scaling_factor`) without shared experts.
/// The multi-token-prediction layers (`mtp.`) are not part of the model
/// transformers loads.
///
/// Value heads narrower than the query/key heads are zero-padded to their
/// width (`Weights.stackedQKV`) and o_proj widened to match.
struct MiMoV2FlashModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: MiMoV2FlashConfiguration
    let layerTypes: [String]
    let mlpTypes: [String]
    /// The rotary embedding of each layer type in use.
    let rotaries: [String: RotaryEmbedding]

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: its section sizes the layers, whose routed experts are checked with them.
        let config = try checkpoint.decodeConfig(MiMoV2FlashConfiguration.self)
        let section = config.section
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self, section: section).numHiddenLayers
        let mlpTypes = config.mlpTypes(layers)
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        self.config = config
        self.mlpTypes = mlpTypes
        parts = try DecoderParts(checkpoint, section: section, naming: LlamaModel.naming, experts: config.experts.naming(isSparse: isSparse))
        let d = parts.dimensions
        layerTypes = try parts.layerTypes(config.layerTypes, slidingWindow: config.slidingWindow) {
            $0 == 0 || ($0 + 1) % 6 == 0 ? AttentionLayerType.full : AttentionLayerType.sliding
        }
        try parts.checks { [layerTypes] in
            try MLPLayerTypes.checkCount(config.mlpLayerTypes, layers: layers, validated: true)
            if mlpTypes.contains("sparse") { try config.experts.check(hidden: d.hiddenSize) }
            try ConfigRules.product([(config.vHeadDim, "v_head_dim"), (d.numAttentionHeads, "num_attention_heads"), (d.hiddenSize, "hidden_size")])
            // num_key_value_heads divides num_attention_heads (DecoderDimensions); the sliding layers have twice as many.
            if layerTypes.contains(AttentionLayerType.sliding), (d.numAttentionHeads / d.kvHeads) % 2 != 0 {
                throw InvalidConfigValue(
                    key: "num_key_value_heads",
                    problem: "gives the sliding layers 2 × \(d.kvHeads) key/value heads, which do not divide num_attention_heads \(d.numAttentionHeads)")
            }
        }
        try Self.confirmProjections(parts, layerTypes: layerTypes, vHeadDim: config.vHeadDim)
        try config.experts.confirm(parts, isSparse: isSparse)
        rotaries = try parts.rotariesAsWritten(
            types: Set(layerTypes), defaults: MiMoV2FlashConfiguration.defaultRope, rotaryClass: "MiMoV2FlashRotaryEmbedding",
            attentionClass: "MiMoV2FlashAttention",
            // Its own default rotation reads the fraction with 0.334 as the default; transformers' other types with 1.
            partialRotary: { $0 == "default" ? .honoured(default: 0.334) : .honoured(default: 1) }, standardised: false)
    }

    /// The heads of a layer of `type`, each `head_dim` or `v_head_dim` wide, whichever is wider.
    func layout(_ type: String) -> QKVLayout {
        let d = parts.dimensions
        return QKVLayout(
            numHeads: d.numAttentionHeads, numKVHeads: type == AttentionLayerType.sliding ? 2 * d.kvHeads : d.kvHeads,
            headDim: max(d.resolvedHeadDim, config.vHeadDim))
    }

    /// q_proj, k_proj and v_proj of the first kept layer of each type against
    /// the head counts and widths, before any table is sized from them.
    private static func confirmProjections(_ parts: DecoderParts, layerTypes: [String], vHeadDim: Int) throws {
        let d = parts.dimensions
        for type in Set(layerTypes).sorted() {
            guard let layer = layerTypes.indices.first(where: { layerTypes[$0] == type && !parts.configuredDrops.dropsAttention($0) }) else { continue }
            let (kv, kvKey) = type == AttentionLayerType.sliding
                ? (2 * d.kvHeads, "2 × num_key_value_heads") : (d.kvHeads, "num_key_value_heads")
            try parts.confirmProjections(layer: layer, [
                ("q_proj", d.numAttentionHeads * d.resolvedHeadDim, "num_attention_heads × head_dim"),
                ("k_proj", kv * d.resolvedHeadDim, "\(kvKey) × head_dim"), ("v_proj", kv * vHeadDim, "\(kvKey) × v_head_dim"),
            ])
        }
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
            attention: { try attention(layer: index) },
            feedForward: {
                try config.experts.feedForward(
                    parts, layer: index, sparse: mlpTypes[index] == "sparse", activation: try parts.activation(config.hiddenAct))
            })
    }

    /// Layer `index`'s MiMoV2FlashAttention.
    func attention(layer index: Int) throws -> SelfAttention {
        let type = layerTypes[index], sliding = type == AttentionLayerType.sliding, layout = layout(type)
        let p = "layers.\(index).self_attn.", weights = parts.weights, d = hiddenSize, headDim = parts.dimensions.resolvedHeadDim
        let output = try weights.linear(p + "o_proj", in: layout.numHeads * config.vHeadDim, out: d, bias: false)
        let sinks: String? = try sliding ? weights.storedName(saved: p + "attention_sink_bias", renamed: p + "sinks") : nil
        var attention = SelfAttention(
            qkv: try weights.stackedQKV(
                p, hidden: d, layout: layout, bias: config.attentionBias, queryKeyHeadDim: headDim, valueHeadDim: config.vHeadDim),
            layout: layout, rotary: rotaries[type],
            output: LatentQKVProjection.paddedOutput(output, numHeads: layout.numHeads, valueDim: config.vHeadDim, headDim: layout.headDim),
            scale: 1 / Float(headDim).squareRoot(), slidingWindow: sliding ? config.slidingWindow : nil,
            sinkLogits: try sinks.map { try weights.floats($0, [layout.numHeads]) })
        attention.valueScale = Float(config.attentionValueScale)
        return attention
    }
}

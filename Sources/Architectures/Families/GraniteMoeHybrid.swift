import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The Mamba-2 keys of config.json (GraniteMoeHybridConfig's `mamba_*`,
/// `time_step_limit`), with the config class's defaults.
struct Mamba2Configuration: Decodable {
    var heads: Int
    var groups: Int
    var stateSize: Int
    /// nil: "auto", mamba_expand × hidden_size / mamba_n_heads.
    var headDim: Int?
    var convolutionKernel: Int
    var expand: Int
    var chunkSize: Int
    var convolutionBias: Bool
    var projectionBias: Bool
    var timeStepLimit: (lower: Double, upper: Double)

    enum CodingKeys: String, CodingKey {
        case heads = "mamba_n_heads"
        case groups = "mamba_n_groups"
        case stateSize = "mamba_d_state"
        case headDim = "mamba_d_head"
        case convolutionKernel = "mamba_d_conv"
        case expand = "mamba_expand"
        case chunkSize = "mamba_chunk_size"
        case convolutionBias = "mamba_conv_bias"
        case projectionBias = "mamba_proj_bias"
        case timeStepLimit = "time_step_limit"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        heads = try c.decodeCount(.heads, default: 128)
        groups = try c.decodeCount(.groups, default: 1)
        stateSize = try c.decodeCount(.stateSize, default: 256)
        convolutionKernel = try c.decodeCount(.convolutionKernel, default: 4)
        expand = try c.decodeCount(.expand, default: 2)
        chunkSize = try c.decodeCount(.chunkSize, default: 256)
        convolutionBias = try c.decodeBiasFlag(.convolutionBias, default: true)
        projectionBias = try c.decodeBiasFlag(.projectionBias, default: false)
        headDim = try c.decodeNumberOrAuto(.headDim)
        timeStepLimit = try c.decodeTimeStepLimit(.timeStepLimit)
        let settings = self
        try ConfigRules.decodingChecks {
            try ConfigRules.count(settings.heads, "mamba_n_heads")
            try ConfigRules.count(settings.groups, "mamba_n_groups")
            try ConfigRules.count(settings.stateSize, "mamba_d_state")
            try ConfigRules.countIfPresent(settings.headDim, "mamba_d_head")
            try ConfigRules.count(settings.convolutionKernel, "mamba_d_conv")
            try ConfigRules.count(settings.expand, "mamba_expand")
            try ConfigRules.count(settings.chunkSize, "mamba_chunk_size")
        }
    }

    /// The mixer's sizes for a model of `hidden` columns, its inner width
    /// mamba_expand × hidden_size unless `innerWidth` gives it (Falcon-H1's
    /// `mamba_d_ssm`).
    /// - Throws: `InvalidConfigValue` naming the key whose value does not fit.
    func heads(hidden: Int, innerWidth: (value: Int, key: String)? = nil) throws -> Mamba2Heads {
        let inner = try innerWidth?.value ?? ConfigRules.product([(expand, "mamba_expand"), (hidden, "hidden_size")])
        let innerKey = innerWidth?.key ?? "mamba_expand × hidden_size"
        guard inner % heads == 0 else {
            throw InvalidConfigValue(key: "mamba_n_heads", problem: "must divide \(innerKey) \(inner), got \(heads)")
        }
        let headDim = headDim ?? inner / heads
        // Compared without multiplying: a huge mamba_d_head would overflow.
        guard headDim == inner / heads else {
            throw InvalidConfigValue(
                key: "mamba_d_head", problem: "times mamba_n_heads \(heads) must be \(innerKey) \(inner), got \(headDim)")
        }
        return try Mamba2Heads.checked(
            heads: heads, headDim: headDim, groups: groups, stateSize: stateSize, convolutionKernel: convolutionKernel, hidden: hidden,
            keys: .init(heads: "mamba_n_heads", groups: "mamba_n_groups", stateSize: "mamba_d_state", convolutionKernel: "mamba_d_conv",
                        inner: innerKey))
    }
}

extension Mamba2Heads {
    /// The config keys that give a family's Mamba-2 sizes, for errors.
    struct Keys {
        var heads: String
        var groups: String
        var stateSize: String
        var convolutionKernel: String
        /// What gives heads × headDim.
        var inner: String
    }

    /// The sizes of a model of `hidden` columns, refused naming the key
    /// where the groups do not divide the heads, or where the projection
    /// [z | x | B | C | dt, hidden], the taps or a head's state would not
    /// fit in 64 bits.
    static func checked(
        heads: Int, headDim: Int, groups: Int, stateSize: Int, convolutionKernel: Int, hidden: Int, keys: Keys
    ) throws -> Mamba2Heads {
        let inner = try ConfigRules.product([(heads, keys.heads), (headDim, keys.inner)])
        guard heads % groups == 0 else {
            throw InvalidConfigValue(key: keys.groups, problem: "must divide \(keys.heads) \(heads), got \(groups)")
        }
        let groupWidth = try ConfigRules.product([(groups, keys.groups), (stateSize, keys.stateSize), (2, "B and C")])
        let (channels, overflow) = inner.addingReportingOverflow(groupWidth)
        guard !overflow else { throw InvalidConfigValue(key: keys.stateSize, problem: "is too large: \(stateSize)") }
        try ConfigRules.product([(channels, keys.stateSize), (convolutionKernel, keys.convolutionKernel), (hidden, "hidden_size"), (4, "z, x, B, C")])
        try ConfigRules.product([(stateSize, keys.stateSize), (inner, keys.inner), (4, "float32")])
        return Mamba2Heads(heads: heads, headDim: headDim, groups: groups, stateSize: stateSize, convolutionKernel: convolutionKernel)
    }
}

/// GraniteMoeHybrid's own keys of config.json: the layer types and the rotary switch.
struct GraniteMoeHybridSettings: Decodable {
    /// `layer_types`, else its alias `layers_block_type` (the config class's attribute map).
    var layerTypes: [String]?
    /// The key `layerTypes` was read from.
    var layerTypesKey = "layer_types"
    var positionEmbeddingType: String?

    enum CodingKeys: String, CodingKey {
        case layerTypes = "layer_types"
        case layersBlockType = "layers_block_type"
        case positionEmbeddingType = "position_embedding_type"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        if layerTypes == nil, let aliased = try c.decodeIfPresent([String].self, forKey: .layersBlockType) {
            layerTypes = aliased
            layerTypesKey = "layers_block_type"
        }
        positionEmbeddingType = try c.decodeIfPresent(String.self, forKey: .positionEmbeddingType)
    }

    static let linear = "linear_attention"
    /// transformers' names for its earlier ones (`remap_legacy_layer_types`).
    static let legacyNames = ["mamba": linear, "attention": AttentionLayerType.full]
}

/// IBM Granite 4.0-H (`granitemoehybrid`, transformers'
/// models/granitemoehybrid): Granite's multipliers around layers whose
/// token mixer is a Mamba-2 mixer (`mamba`, layer type `linear_attention`,
/// legacy `mamba`) or softmax attention (`self_attn`, `full_attention`,
/// legacy `attention`), every layer Mamba-2 unless `layer_types` (or its
/// alias `layers_block_type`) says otherwise; attention rotated only when
/// `position_embedding_type` is "rope" (Granite 4.0-H uses none), scaled
/// by `attention_multiplier`. The MLP module is GraniteMoE-Shared's
/// mixture with its shared MLP (`shared_intermediate_size`, 1024 by
/// default), or the shared MLP alone with `num_local_experts` 0.
struct GraniteMoeHybridModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: GraniteConfiguration
    let mixture: GraniteMoeMLP
    let mamba: Mamba2Configuration
    let heads: Mamba2Heads
    /// Each layer's type, legacy names read as transformers reads them.
    let layerTypes: [String]
    let rotary: RotaryEmbedding?

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(
            checkpoint, section: ConfigSection(defaults: ["shared_intermediate_size": 1024])
        ) { prefix in
            LayerNaming(
                prefix: prefix + "layers.", attention: ["self_attn.", "mamba.", "input_layernorm."],
                mlp: ["block_sparse_moe.", "shared_mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
        }
        config = try parts.config(GraniteConfiguration.self)
        mixture = try GraniteMoeMLP(parts, readsSharedMLP: true, readsSavedNames: true, allowsNoExperts: true)
        mamba = try parts.config(Mamba2Configuration.self)
        let settings = try parts.config(GraniteMoeHybridSettings.self)
        let layers = parts.dimensions.numHiddenLayers, d = parts.dimensions.hiddenSize
        let types = (settings.layerTypes ?? Array(repeating: GraniteMoeHybridSettings.linear, count: layers)).map {
            GraniteMoeHybridSettings.legacyNames[$0] ?? $0
        }
        let mambaSettings = mamba
        var heads: Mamba2Heads?
        try ConfigRules.checks(path: parts.configPath) {
            if types.count != layers {
                throw InvalidConfigValue(
                    key: settings.layerTypesKey, problem: "has \(types.count) entries for \(layers) layers (num_hidden_layers)")
            }
            if let other = settings.layerTypes?.first(where: {
                ![GraniteMoeHybridSettings.linear, AttentionLayerType.full].contains(GraniteMoeHybridSettings.legacyNames[$0] ?? $0)
            }) {
                throw InvalidConfigValue(
                    key: settings.layerTypesKey,
                    problem: "names \"\(other.forErrorMessage)\": the layers are linear_attention (mamba) or full_attention (attention)")
            }
            heads = try mambaSettings.heads(hidden: d)
        }
        self.heads = heads!
        layerTypes = types
        // Attention tensors are confirmed on the first kept attention layer, before the rotary table is sized.
        let drops = parts.configuredDrops
        let firstAttention = (0..<layers).first { types[$0] == AttentionLayerType.full && !drops.dropsAttention($0) }
        if let firstAttention {
            let dims = parts.dimensions
            try parts.weights.confirmShape(
                "layers.\(firstAttention).self_attn.q_proj.weight", [dims.numAttentionHeads * dims.resolvedHeadDim, d],
                keys: "num_attention_heads × head_dim", configPath: parts.configPath)
            try parts.weights.confirmShape(
                "layers.\(firstAttention).self_attn.k_proj.weight", [dims.kvHeads * dims.resolvedHeadDim, d],
                keys: "num_key_value_heads × head_dim", configPath: parts.configPath)
        }
        rotary = settings.positionEmbeddingType == "rope" ? try parts.rotary(confirmProjections: false) : nil
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch, multiplier: config.embeddingMultiplier) }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps), logitDivisor: config.logitsScaling)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), p = "layers.\(index).", eps = config.rmsNormEps
        let activation = try parts.activation(config.hiddenAct ?? "silu")
        func mixer() throws -> TokenMixer {
            if layerTypes[index] == AttentionLayerType.full {
                return .attention(try parts.attention(
                    p + "self_attn.", bias: config.attentionBias, rotary: rotary, scale: config.attentionMultiplier))
            }
            return .mamba2(try mamba2(p + "mamba.", activation: activation))
        }
        return try parts.preNormBlock(index, drops: drops, eps: eps, outputScale: config.residualMultiplier, mixer: mixer) {
            try mixture.feedForward(index, parts: parts, activation: activation)
        }
    }

    /// The Mamba-2 mixer under `prefix`.
    func mamba2(_ prefix: String, activation: Activation) throws -> Mamba2Mixer {
        try mamba.mixer(prefix, parts: parts, heads: heads, activation: activation, eps: config.rmsNormEps)
    }
}

extension Mamba2Configuration {
    /// The Mamba-2 mixer stored under `prefix` (`in_proj`, `conv1d`, `A_log`,
    /// `dt_bias`, `D`, `norm`, `out_proj`), its gated norm's epsilon `eps`
    /// (`rms_norm_eps`), the convolution's `activation` (`hidden_act`).
    /// Falcon-H1's variant: `out_proj`'s bias by `outputBias`, no `norm`
    /// unless `normalises`, normalised before the gate by
    /// `normalisesBeforeGate`, the projection's columns times `projectionScales`.
    func mixer(
        _ prefix: String, parts: DecoderParts, heads h: Mamba2Heads, activation: Activation, eps: Double, outputBias: Bool? = nil,
        normalises: Bool = true, normalisesBeforeGate: Bool = false, projectionScales: [Float]? = nil
    ) throws -> Mamba2Mixer {
        try Mamba2Mixer.stored(
            prefix, weights: parts.weights, hidden: parts.dimensions.hiddenSize, heads: h, projectionBias: projectionBias,
            convolutionBias: convolutionBias, activation: activation, timeStepLimit: timeStepLimit, eps: eps, outputBias: outputBias,
            normalises: normalises, normalisesBeforeGate: normalisesBeforeGate, projectionScales: projectionScales)
    }

    /// The mixer's sizes for `parts`, refused naming the key that does not fit.
    func heads(_ parts: DecoderParts) throws -> Mamba2Heads {
        var heads: Mamba2Heads?
        try ConfigRules.checks(path: parts.configPath) { heads = try self.heads(hidden: parts.dimensions.hiddenSize) }
        return heads!
    }
}

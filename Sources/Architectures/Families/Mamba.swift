import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `mamba` and `falcon_mamba` beside the sizes, with
/// MambaConfig's and FalconMambaConfig's defaults.
struct MambaConfiguration: Decodable {
    var layerNormEpsilon: Double
    /// FalconMamba's `mixer_rms_eps`: the epsilon of the norms of dt, B and C
    /// (checked where the model has them).
    var mixerEpsilon: Double
    var hiddenAct: String
    var stateSize: Int
    var convolutionKernel: Int
    var expand: Int
    /// The mixers' width where written: MambaConfig keeps config.json's
    /// value over the expand × hidden_size it derives (nil: that product).
    var intermediateSize: Int?
    /// nil: "auto", ⌈hidden_size / 16⌉.
    var timeStepRank: Int?
    /// Biases of in_proj and out_proj.
    var useBias: Bool
    var useConvBias: Bool

    enum CodingKeys: String, CodingKey {
        case layerNormEpsilon = "layer_norm_epsilon"
        case mixerEpsilon = "mixer_rms_eps"
        case hiddenAct = "hidden_act"
        case stateSize = "state_size"
        case convolutionKernel = "conv_kernel"
        case expand
        case intermediateSize = "intermediate_size"
        case timeStepRank = "time_step_rank"
        case useBias = "use_bias"
        case useConvBias = "use_conv_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? 1e-5
        mixerEpsilon = try c.decodeIfPresent(Double.self, forKey: .mixerEpsilon) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        stateSize = try c.decodeCount(.stateSize, default: 16)
        convolutionKernel = try c.decodeCount(.convolutionKernel, default: 4)
        expand = try c.decodeCount(.expand, default: 2)
        intermediateSize = try c.contains(.intermediateSize) ? c.decodeCount(.intermediateSize, default: 0) : nil
        timeStepRank = try c.decodeNumberOrAuto(.timeStepRank)
        useBias = try c.decodeIfPresent(Bool.self, forKey: .useBias) ?? false
        useConvBias = try c.decodeIfPresent(Bool.self, forKey: .useConvBias) ?? true
        let settings = self
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(settings.layerNormEpsilon, "layer_norm_epsilon")
            try ConfigRules.count(settings.stateSize, "state_size")
            try ConfigRules.count(settings.convolutionKernel, "conv_kernel")
            if settings.intermediateSize == nil { try ConfigRules.count(settings.expand, "expand") }
            try ConfigRules.countIfPresent(settings.intermediateSize, "intermediate_size")
            try ConfigRules.countIfPresent(settings.timeStepRank, "time_step_rank")
        }
    }

    /// The keys that give the mixer's sizes, for errors.
    var keys: MambaSizes.Keys {
        MambaSizes.Keys(
            inner: intermediateSize == nil ? "expand × hidden_size" : "intermediate_size", stateSize: "state_size",
            convolutionKernel: "conv_kernel", timeStepRank: "time_step_rank")
    }

    /// The mixers' sizes for a model of `hidden` columns.
    /// - Throws: `InvalidConfigValue` naming the key whose value does not fit.
    func sizes(hidden: Int) throws -> MambaSizes {
        let inner = try intermediateSize ?? ConfigRules.product([(expand, "expand"), (hidden, "hidden_size")])
        return try MambaSizes.checked(
            innerWidth: inner, stateSize: stateSize, convolutionKernel: convolutionKernel, timeStepRank: timeStepRank ?? (hidden + 15) / 16,
            hidden: hidden, keys: keys)
    }
}

/// Mamba (`mamba`, transformers' models/mamba: state-spaces' mamba-130m-hf
/// to mamba-2.8b-hf) and Falcon Mamba (`falcon_mamba`, models/falcon_mamba:
/// TII's falcon-mamba-7b): a stack of x + mixer(norm(x)) blocks
/// (`MixerStack`) whose mixer is Mamba-1 (`MambaMixer`: in_proj to x and
/// gate, a causal depthwise convolution with its bias by `use_conv_bias`
/// and `hidden_act`, x_proj to dt | B | C, dt_proj, the selective scan with
/// D, y · silu(gate), out_proj; in_proj and out_proj biases by `use_bias`),
/// as its torch path computes it. Falcon Mamba's one difference: weightless
/// RMSNorms (epsilon `mixer_rms_eps`) on dt, B and C before the scan, dt's
/// before dt_proj. The mixer is `intermediate_size` wide where config.json
/// writes it (the config class keeps it over expand × hidden_size).
struct MambaModel: MixerStack {
    let parts: DecoderParts
    let config: MambaConfiguration
    let sizes: MambaSizes

    init(_ checkpoint: Checkpoint) throws {
        parts = try Self.parts(checkpoint, section: .mixerStack())
        // As written: the section's placeholder intermediate_size is not the mixers' width.
        config = try checkpoint.decodeConfig(MambaConfiguration.self)
        let config = config, d = parts.dimensions.hiddenSize
        sizes = try ConfigRules.checks(path: parts.configPath) { try config.sizes(hidden: d) }
        if checkpoint.modelType == "falcon_mamba" {
            try ConfigRules.checks(path: parts.configPath) { try ConfigRules.positive(config.mixerEpsilon, "mixer_rms_eps") }
        }
        _ = try parts.activation(config.hiddenAct)
        if let first = (0..<parts.dimensions.numHiddenLayers).first(where: { !parts.configuredDrops.dropsAttention($0) }) {
            try MambaMixer.confirmShapes(
                "layers.\(first).mixer.", weights: parts.weights, hidden: d, sizes: sizes, keys: config.keys, configPath: parts.configPath)
        }
    }

    var normEpsilon: Double { config.layerNormEpsilon }

    /// Falcon Mamba normalises dt, B and C without weights.
    var isFalconMamba: Bool { modelType == "falcon_mamba" }

    func mixer(_ index: Int) throws -> TokenMixer {
        .mamba(try MambaMixer.stored(
            "layers.\(index).mixer.", weights: parts.weights, hidden: hiddenSize, sizes: sizes, projectionBias: config.useBias,
            convolutionBias: config.useConvBias, activation: try parts.activation(config.hiddenAct),
            norms: isFalconMamba ? .weightless(eps: config.mixerEpsilon) : .none))
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `mamba2` beside the sizes, with Mamba2Config's defaults.
struct Mamba2StackConfiguration: Decodable {
    var layerNormEpsilon: Double
    var hiddenAct: String
    var heads: Int
    var headDim: Int
    var stateSize: Int
    var groups: Int
    var convolutionKernel: Int
    var expand: Int
    var chunkSize: Int
    /// Biases of in_proj and out_proj.
    var useBias: Bool
    var useConvBias: Bool
    var timeStepLimit: (lower: Double, upper: Double)

    enum CodingKeys: String, CodingKey {
        case layerNormEpsilon = "layer_norm_epsilon"
        case hiddenAct = "hidden_act"
        case heads = "num_heads"
        case headDim = "head_dim"
        case stateSize = "state_size"
        case groups = "n_groups"
        case convolutionKernel = "conv_kernel"
        case expand
        case chunkSize = "chunk_size"
        case useBias = "use_bias"
        case useConvBias = "use_conv_bias"
        case timeStepLimit = "time_step_limit"
        case timeStepRank = "time_step_rank"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        heads = try c.decodeCount(.heads, default: 128)
        headDim = try c.decodeCount(.headDim, default: 64)
        stateSize = try c.decodeCount(.stateSize, default: 128)
        groups = try c.decodeCount(.groups, default: 8)
        convolutionKernel = try c.decodeCount(.convolutionKernel, default: 4)
        expand = try c.decodeCount(.expand, default: 2)
        chunkSize = try c.decodeCount(.chunkSize, default: 256)
        useBias = try c.decodeIfPresent(Bool.self, forKey: .useBias) ?? false
        useConvBias = try c.decodeIfPresent(Bool.self, forKey: .useConvBias) ?? true
        timeStepLimit = try c.decodeTimeStepLimit(.timeStepLimit)
        // The mixer reads int(time_step_rank) and uses it for nothing: a number or "auto".
        _ = try c.decodeNumberOrAuto(.timeStepRank)
        let settings = self
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(settings.layerNormEpsilon, "layer_norm_epsilon")
            try ConfigRules.count(settings.heads, "num_heads")
            try ConfigRules.count(settings.headDim, "head_dim")
            try ConfigRules.count(settings.stateSize, "state_size")
            try ConfigRules.count(settings.groups, "n_groups")
            try ConfigRules.count(settings.convolutionKernel, "conv_kernel")
            try ConfigRules.count(settings.expand, "expand")
            try ConfigRules.count(settings.chunkSize, "chunk_size")
        }
    }

    /// The mixer's sizes for a model of `hidden` columns: num_heads ×
    /// head_dim must be expand × hidden_size (Mamba2Config's
    /// `validate_architecture`), n_groups must divide num_heads.
    /// - Throws: `InvalidConfigValue` naming the key whose value does not fit.
    func heads(hidden: Int) throws -> Mamba2Heads {
        let inner = try ConfigRules.product([(expand, "expand"), (hidden, "hidden_size")])
        let width = try ConfigRules.product([(heads, "num_heads"), (headDim, "head_dim")])
        guard width == inner else {
            throw InvalidConfigValue(
                key: "num_heads",
                problem: "× head_dim (\(heads) × \(headDim) = \(width)) must equal expand × hidden_size (\(expand) × \(hidden) = \(inner))")
        }
        return try Mamba2Heads.checked(
            heads: heads, headDim: headDim, groups: groups, stateSize: stateSize, convolutionKernel: convolutionKernel, hidden: hidden,
            keys: .init(heads: "num_heads", groups: "n_groups", stateSize: "state_size", convolutionKernel: "conv_kernel", inner: "head_dim"))
    }
}

/// Mamba-2 (`mamba2`, transformers' models/mamba2: Mistral's
/// Mamba-Codestral-7B, state-spaces' mamba2 models): a stack of
/// x + mixer(norm(x)) blocks (`MixerStack`) whose mixer is Mamba-2
/// (`Mamba2Mixer`: in_proj to z | x | B | C | dt, a causal depthwise
/// convolution over x | B | C with its bias by `use_conv_bias` and
/// `hidden_act`, num_heads heads of head_dim sharing B and C in n_groups
/// groups, Δ = softplus(dt + dt_bias) clamped to `time_step_limit`, the scan
/// with D, the gated RMSNorm norm(y · silu(z)) of each group's columns,
/// out_proj; in_proj and out_proj biases by `use_bias`), as its torch path
/// computes it (chunks of `chunk_size`, equal to the step form up to
/// rounding). config.json's `norm_before_gate` and `rms_norm` (written by
/// Mamba-Codestral) are not read by transformers, nor here.
struct Mamba2Model: MixerStack {
    let parts: DecoderParts
    let config: Mamba2StackConfiguration
    let heads: Mamba2Heads

    init(_ checkpoint: Checkpoint) throws {
        // Mamba2Mixer derives its width from expand × hidden_size whatever intermediate_size says.
        parts = try Self.parts(checkpoint, section: .mixerStack(overrides: ["intermediate_size": 1]))
        config = try parts.config(Mamba2StackConfiguration.self)
        let config = config, d = parts.dimensions.hiddenSize
        heads = try ConfigRules.checks(path: parts.configPath) { try config.heads(hidden: d) }
        _ = try parts.activation(config.hiddenAct)
        if let first = (0..<parts.dimensions.numHiddenLayers).first(where: { !parts.configuredDrops.dropsAttention($0) }) {
            let p = "layers.\(first).mixer.", h = heads, path = parts.configPath
            try parts.weights.confirmShape(
                p + "in_proj.weight", [h.projectionWidth, d],
                keys: "2 × num_heads × head_dim + 2 × n_groups × state_size + num_heads, hidden_size", configPath: path)
            try parts.weights.confirmShape(
                p + "conv1d.weight", [h.convolutionChannels, 1, h.convolutionKernel],
                keys: "num_heads × head_dim + 2 × n_groups × state_size, conv_kernel", configPath: path)
            try parts.weights.confirmShape(p + "A_log", [h.heads], keys: "num_heads", configPath: path)
        }
    }

    var normEpsilon: Double { config.layerNormEpsilon }

    func mixer(_ index: Int) throws -> TokenMixer {
        .mamba2(try Mamba2Mixer.stored(
            "layers.\(index).mixer.", weights: parts.weights, hidden: hiddenSize, heads: heads, projectionBias: config.useBias,
            convolutionBias: config.useConvBias, activation: try parts.activation(config.hiddenAct), timeStepLimit: config.timeStepLimit,
            eps: config.layerNormEpsilon))
    }
}

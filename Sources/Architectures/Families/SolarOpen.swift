import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `solar_open`, with SolarOpenConfig's defaults
/// (transformers' `models/solar_open/configuration_solar_open.py`):
/// Glm4MoeConfig without `intermediate_size`, `first_k_dense_replace`,
/// `use_qk_norm` and the multi-token-prediction layers, which it does not read.
struct SolarOpenConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v_proj (o_proj never has one).
    var attentionBias: Bool
    /// The routed layers' keys.
    var experts: DeepSeekExperts

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        experts = try DeepSeekExperts(from: decoder, configClass: .solarOpen)
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        }
    }
}

/// Solar Open (upstage/Solar-Open-100B; transformers'
/// `models/solar_open/modeling_solar_open.py`): GLM-4.5's mixture of
/// experts in Llama's blocks. Pre-RMSNorm, q/k/v biases when
/// `attention_bias` (none on o_proj), no q/k norms, rotary over the whole
/// head (Llama's attention: a rotary fraction below 1 would give a table
/// narrower than the heads it multiplies, which transformers cannot run,
/// and is refused), base 1e6 unless given, `head_dim` 128 unless given.
/// Every layer's MLP is GLM-4.5's (`GroupRoutedMixture`): a sigmoid router
/// `mlp.gate` choosing `num_experts_per_tok` of `n_routed_experts` within the
/// best `topk_group` of `n_group` groups, ranked with
/// `gate.e_score_correction_bias`, plus `n_shared_experts` shared experts
/// (`mlp.shared_experts`); the MLP module is all of it. Experts are read per
/// expert (`mlp.experts.<e>.gate_proj|up_proj|down_proj`, as saved) or fused.
struct SolarOpenModel: DecoderFamily {
    let parts: DecoderParts
    let config: SolarOpenConfiguration
    let rotary: RotaryEmbedding

    /// SolarOpenConfig has no `intermediate_size` (no layer is dense): the
    /// one config.json may carry is not read, and a placeholder stands in
    /// when it has none.
    static let section = ConfigSection(defaults: ["intermediate_size": 1])

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(SolarOpenConfiguration.self, section: Self.section)
        self.config = config
        parts = try DecoderParts(
            checkpoint, section: Self.section, naming: LlamaModel.naming,
            experts: config.experts.naming(isSparse: { _ in true }))
        let d = parts.dimensions, experts = config.experts
        try ConfigRules.checks(path: parts.configPath) { try experts.check(hidden: d.hiddenSize) }
        rotary = try parts.rotary(defaultTheta: 1_000_000, partialRotary: .honoured(default: 1))
        let width = parts.firstKeptAttention == nil ? 0 : d.resolvedHeadDim
        if rotary.rotaryDim != width {
            let rope = try parts.ropeSettings()
            throw InvalidConfigValue(
                key: rope.partialRotaryKey,
                problem: "is \(rope.partialRotaryFactor ?? 1): a rotary table \(rotary.rotaryDim) wide, but SolarOpenAttention rotates whole heads of \(width)"
            ).error(path: parts.configPath)
        }
        try experts.confirm(parts, isSparse: { _ in true })
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try parts.attention("layers.\(index).self_attn.", bias: config.attentionBias, outputBias: false, rotary: rotary) },
            feedForward: {
                try config.experts.feedForward(parts, layer: index, sparse: true, activation: try parts.activation(config.hiddenAct))
            })
    }
}

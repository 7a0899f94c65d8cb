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
    /// `n_routed_experts`, which config.json may write as `num_local_experts`.
    var nRoutedExperts: Int
    /// The key config.json gives the expert count under, for errors.
    var nRoutedExpertsKey: String
    var numExpertsPerTok: Int
    var nSharedExperts: Int
    var moeIntermediateSize: Int
    var routedScalingFactor: Double
    var nGroup: Int
    var topkGroup: Int
    var normTopkProb: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case nRoutedExperts = "n_routed_experts"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case nSharedExperts = "n_shared_experts"
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
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        let routed = try c.decodeIfPresent(Int.self, forKey: .nRoutedExperts)
        let local = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts)
        nRoutedExperts = local ?? routed ?? 128
        nRoutedExpertsKey = local == nil ? "n_routed_experts" : "num_local_experts"
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 8
        nSharedExperts = try c.decodeIfPresent(Int.self, forKey: .nSharedExperts) ?? 1
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 1280
        routedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .routedScalingFactor) ?? 1.0
        nGroup = try c.decodeIfPresent(Int.self, forKey: .nGroup) ?? 1
        topkGroup = try c.decodeIfPresent(Int.self, forKey: .topkGroup) ?? 1
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? true
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let routed, let local, routed != local {
                throw InvalidConfigValue(key: "n_routed_experts", problem: "is \(routed), but num_local_experts (the same setting) is \(local)")
            }
            try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        }
    }

    /// GLM-4.5's routing (SolarOpenTopkRouter): sigmoid scores, groups
    /// scored by their best two plus `e_score_correction_bias`, weights
    /// renormalised when `norm_topk_prob` and scaled by `routed_scaling_factor`.
    var routedMixture: GroupRoutedMixture {
        GroupRoutedMixture(
            experts: nRoutedExperts, expertsKey: nRoutedExpertsKey, expertsPerToken: numExpertsPerTok, sharedExperts: nSharedExperts,
            inner: moeIntermediateSize, scoring: .sigmoid, groupScore: .sumOfBestTwo, groupLimited: true, groups: nGroup,
            groupsPerToken: topkGroup, correctsSelection: true, normalizesWeights: normTopkProb, scalingFactor: routedScalingFactor)
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

    /// SolarOpenConfig's head_dim is 128 when config.json omits it. It has no
    /// `intermediate_size` (no layer is dense): the one config.json may
    /// carry is not read, and a placeholder stands in when it has none.
    static let section = ConfigSection(defaults: ["head_dim": 128, "intermediate_size": 1])

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(SolarOpenConfiguration.self, section: Self.section)
        self.config = config
        parts = try DecoderParts(
            checkpoint, section: Self.section, naming: LlamaModel.naming,
            experts: .gatedMLP(count: config.nRoutedExperts, countKey: config.nRoutedExpertsKey, isSparse: { _ in true }))
        let d = parts.dimensions, routed = config.routedMixture
        try ConfigRules.checks(path: parts.configPath) {
            try routed.checkExperts(hidden: d.hiddenSize)
            try routed.checkGroups()
        }
        rotary = try parts.rotary(defaultTheta: 1_000_000, partialRotary: .honoured(default: 1))
        let width = parts.firstKeptAttention == nil ? 0 : d.resolvedHeadDim
        if rotary.rotaryDim != width {
            let rope = try parts.ropeSettings()
            throw InvalidConfigValue(
                key: rope.partialRotaryKey,
                problem: "is \(rope.partialRotaryFactor ?? 1): a rotary table \(rotary.rotaryDim) wide, but SolarOpenAttention rotates whole heads of \(width)"
            ).error(path: parts.configPath)
        }
        try parts.confirmRouter(
            "mlp.gate", experts: config.nRoutedExperts, expertsKey: config.nRoutedExpertsKey, layers: Array(0..<d.numHiddenLayers))
        try routed.confirmExpertWidth(parts, isSparse: { _ in true })
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index)."
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try parts.attention(p + "self_attn.", bias: config.attentionBias, outputBias: false, rotary: rotary) },
            feedForward: {
                try config.routedMixture.load(
                    parts.weights, p + "mlp.", hidden: hiddenSize, activation: try parts.activation(config.hiddenAct), sharedBias: false)
            })
    }
}

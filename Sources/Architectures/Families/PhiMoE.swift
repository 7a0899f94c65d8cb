import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `phimoe`, with PhimoeConfig's defaults (transformers'
/// `models/phimoe/configuration_phimoe.py`).
struct PhiMoEConfiguration: Decodable {
    /// The LayerNorms' epsilon (PhiMoE keeps Mixtral's key for it).
    var rmsNormEps: Double
    var hiddenAct: String
    var slidingWindow: Int?
    var numLocalExperts: Int
    /// Read by transformers but not by its router: `sparsemixer` always picks two experts.
    var numExpertsPerTok: Int
    /// The sparsemixer's jitter band (`jitter_eps`).
    var routerJitterNoise: Double
    /// Biases on q/k/v_proj and o_proj.
    var attentionBias: Bool
    var lmHeadBias: Bool
    /// LongRoPE's factors on cos and sin, within and beyond the pre-training length.
    var shortMscale: Double?
    var longMscale: Double?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case slidingWindow = "sliding_window"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case routerJitterNoise = "router_jitter_noise"
        case attentionBias = "attention_bias"
        case lmHeadBias = "lm_head_bias"
        case ropeParameters = "rope_parameters"
        case ropeScaling = "rope_scaling"
    }

    /// The mscales inside `rope_parameters` (or 4.x `rope_scaling`).
    struct Mscales: Decodable {
        var short: Double?
        var long: Double?
        enum CodingKeys: String, CodingKey {
            case short = "short_mscale"
            case long = "long_mscale"
        }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        numLocalExperts = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts) ?? 16
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 2
        routerJitterNoise = try c.decodeIfPresent(Double.self, forKey: .routerJitterNoise) ?? 0.01
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        lmHeadBias = try c.decodeIfPresent(Bool.self, forKey: .lmHeadBias) ?? false
        let mscales = try c.decodeIfPresent(Mscales.self, forKey: .ropeParameters) ?? c.decodeIfPresent(Mscales.self, forKey: .ropeScaling)
        shortMscale = mscales?.short
        longMscale = mscales?.long
        let (eps, jitter, experts) = (rmsNormEps, routerJitterNoise, numLocalExperts)
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(eps, "rms_norm_eps")
            // A negative band leaves out the largest logit too: every weight NaN.
            try ConfigRules.bound(jitter, "router_jitter_noise")
            // The second pick needs a second expert (with one, transformers' weights are NaN).
            guard experts >= 2 else {
                throw InvalidConfigValue(key: "num_local_experts", problem: "must be at least 2 (the router always picks two experts), got \(experts)")
            }
        }
    }
}

/// PhiMoE (Phi-3.5-MoE; transformers' `models/phimoe/modeling_phimoe.py`):
/// Mixtral's layout with LayerNorms that have biases (`input_layernorm`,
/// `post_attention_layernorm`, the final `norm`, all of epsilon
/// `rms_norm_eps`), q/k/v/o biases by `attention_bias`, a head bias by
/// `lm_head_bias`, a sliding window on every layer when `sliding_window` is
/// set, and LongRoPE as PhiMoE runs it: always the `short_factor`
/// frequencies, cos and sin multiplied by `short_mscale`, or by
/// `long_mscale` for a sequence longer than `original_max_position_embeddings`.
///
/// Every MLP is Mixtral's sparse block of SwiGLU experts
/// (`block_sparse_moe.experts.<e>.w1|w3|w2`, router `block_sparse_moe.gate`,
/// as released and saved; or fused under `mlp.` with the router `mlp.router`,
/// transformers' modules) routed by the sparsemixer: always two experts,
/// each weighted by its softmax probability within a jitter band
/// (`MixtureOfExperts.RoutingRule.sparseMixer`), whatever
/// `num_experts_per_tok` says. The MLP module is router and experts together.
struct PhiMoEModel: DecoderFamily {
    let parts: DecoderParts
    let config: PhiMoEConfiguration
    let rotary: RotaryEmbedding

    /// The router's names: stored `gate`, `router` in transformers' modules.
    static let routers = ["gate", "router"]

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the expert tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(PhiMoEConfiguration.self)
        self.config = config
        parts = try DecoderParts(
            checkpoint, naming: MixtralModel.naming,
            experts: MixtralModel.experts(count: config.numLocalExperts, countKey: "num_local_experts", projections: ["w1", "w3", "w2"]))
        rotary = try Self.rotary(parts, config: config)
        try parts.checkMixtralExperts(
            count: config.numLocalExperts, countKey: "num_local_experts", expertsPerToken: 2,
            inner: parts.dimensions.intermediateSize, innerKey: "intermediate_size", routers: Self.routers)
    }

    /// PhimoeRotaryEmbedding: the default rotation (base 1e6 unless given),
    /// or LongRoPE's short frequencies with the mscale of the sequence's
    /// length. Other scaled types are refused.
    static func rotary(_ parts: DecoderParts, config: PhiMoEConfiguration) throws -> RotaryEmbedding {
        var rope = try parts.ropeSettings()
        let configPath = parts.configPath
        switch rope.type {
        case "default":
            return try parts.rotary(defaultTheta: 1_000_000, settings: rope)
        case "longrope":
            // PhimoeConfig's validate_rope wants both mscales as numbers.
            var mscales: [Float] = []
            for (value, key) in [(config.shortMscale, "short_mscale"), (config.longMscale, "long_mscale")] {
                guard let value, Float(value).isFinite else {
                    throw DroptraceError(
                        "rope type \"longrope\" needs \"\(key)\", a number float32 holds (PhimoeConfig's rope validation wants one)", path: configPath)
                }
                mscales.append(Float(value))
            }
            // PhiMoE scales by the mscales, never by attention_factor: fixed here so that no factor is derived.
            rope.attentionFactor = 1
            let embedding = try parts.rotary(defaultTheta: 1_000_000, settings: rope)
            // Its forward rebuilds the frequencies without a length: the short ones, at every length.
            return RotaryEmbedding(
                inverseFrequencies: embedding.inverseFrequencies, headDim: embedding.headDim, attentionScaling: mscales[0],
                longContext: embedding.longContext.map {
                    .init(beyondLength: $0.beyondLength, inverseFrequencies: embedding.inverseFrequencies, attentionScaling: mscales[1])
                })
        default:
            throw DroptraceError("unsupported rope type \"\(rope.type)\" for phimoe (supported: default, longrope)", path: configPath)
        }
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.layerNorm("norm", size: hiddenSize, eps: config.rmsNormEps), bias: config.lmHeadBias)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps, normKind: .layer,
            attention: {
                try parts.attention(
                    "layers.\(index).self_attn.", bias: config.attentionBias, rotary: rotary, slidingWindow: config.slidingWindow)
            },
            feedForward: { .mixture(try experts(layer: index)) })
    }

    /// Layer `index`'s router and experts, routed by the sparsemixer.
    func experts(layer index: Int) throws -> MixtureOfExperts {
        let sparse = try parts.mixtralExperts(
            layer: index, count: config.numLocalExperts, inner: parts.dimensions.intermediateSize,
            activation: try parts.activation(config.hiddenAct), routers: Self.routers)
        return MixtureOfExperts(
            router: sparse.router, experts: sparse.experts, expertsPerToken: 2,
            rule: .sparseMixer(jitterEps: config.routerJitterNoise))
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `olmoe`, with OlmoeConfig's defaults (or, by
/// `init(from:defaults:)`, another class's: FlexOlmoConfig's).
struct OlmoeConfiguration: Decodable {
    /// The config class's defaults of the keys it reads, and whether it
    /// reads `clip_qkv` at all (FlexOlmo's attention does not).
    struct Defaults {
        var rmsNormEps: Double
        var numExperts: Int
        var numExpertsPerTok: Int
        var readsClipQKV: Bool

        static let olmoe = Defaults(rmsNormEps: 1e-5, numExperts: 64, numExpertsPerTok: 8, readsClipQKV: true)
    }

    var rmsNormEps: Double
    var hiddenAct: String?
    var attentionBias: Bool?
    var clipQKV: Double?
    /// `num_experts` (`num_local_experts` is its alias).
    var numExperts: Int
    /// The key config.json gives the expert count under, for errors.
    var numExpertsKey: String
    var numExpertsPerTok: Int
    var normTopkProb: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case clipQKV = "clip_qkv"
        case numExperts = "num_experts"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case normTopkProb = "norm_topk_prob"
    }

    init(from decoder: Decoder) throws { try self.init(from: decoder, defaults: .olmoe) }

    init(from decoder: Decoder, defaults: Defaults) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? defaults.rmsNormEps
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias)
        clipQKV = defaults.readsClipQKV ? try c.decodeIfPresent(Double.self, forKey: .clipQKV) : nil
        let experts = try c.decodeIfPresent(Int.self, forKey: .numExperts)
        let localExperts = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts)
        numExperts = experts ?? localExperts ?? defaults.numExperts
        numExpertsKey = experts == nil && localExperts != nil ? "num_local_experts" : "num_experts"
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? defaults.numExpertsPerTok
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? false
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let experts, let localExperts, experts != localExperts {
                throw InvalidConfigValue(
                    key: "num_experts", problem: "is \(experts), but num_local_experts (the same setting) is \(localExperts)")
            }
            let key = numExpertsKey
            try ConfigRules.count(numExperts, key)
            try MixtureOfExperts.checkExpertsPerToken(numExpertsPerTok, of: numExperts, expertsKey: key)
            if let clipQKV { try ConfigRules.bound(clipQKV, "clip_qkv") }
        }
    }
}

/// OLMoE: Llama's pre-RMSNorm layout with OLMo-2's q/k RMSNorm over the
/// whole query and key projections (`q_norm` [hidden], `k_norm`
/// [kv_heads · head_dim]), then q, k and v clamped to ±`clip_qkv` when set,
/// and as every MLP a router `mlp.gate` over `num_experts` SwiGLU experts
/// (softmax top-`num_experts_per_tok`, renormalised only when
/// `norm_topk_prob`). Experts are read per expert
/// (`mlp.experts.<e>.gate_proj`, as saved) or fused.
struct OlmoeModel: DecoderFamily {
    let parts: DecoderParts
    let config: OlmoeConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the expert tensors are checked with the layers.
        config = try checkpoint.decodeConfig(OlmoeConfiguration.self)
        parts = try DecoderParts(
            checkpoint, naming: LlamaModel.naming,
            experts: .gatedMLP(count: config.numExperts, countKey: config.numExpertsKey, isSparse: { _ in true }))
        let dimensions = parts.dimensions, config = config
        try ConfigRules.checks(path: parts.configPath) {
            // q_norm is sized hidden_size and applied to all heads' queries.
            if let headDim = dimensions.headDim, headDim * dimensions.numAttentionHeads != dimensions.hiddenSize {
                throw InvalidConfigValue(
                    key: "head_dim",
                    problem: "must be hidden_size / num_attention_heads (\(dimensions.hiddenSize) / \(dimensions.numAttentionHeads)) for OLMoE's q_norm, got \(headDim)")
            }
            try ConfigRules.product([
                (config.numExperts, config.numExpertsKey), (2, "gate and up"), (dimensions.intermediateSize, "intermediate_size"),
                (dimensions.hiddenSize, "hidden_size"),
            ])
        }
        rotary = try parts.rotary()
        try parts.confirmRouter(
            "mlp.gate", experts: config.numExperts, expertsKey: config.numExpertsKey, layers: Array(0..<dimensions.numHiddenLayers))
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, layout = parts.attentionLayout, eps = config.rmsNormEps
        let bias = config.attentionBias == true
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: bias, rotary: rotary,
            clip: config.clipQKV.map { Float($0) },
            queryKeyNorm: .acrossHeads(
                query: try weights.rmsNorm(p + "self_attn.q_norm", size: layout.queryWidth, eps: eps),
                key: try weights.rmsNorm(p + "self_attn.k_norm", size: layout.keyWidth, eps: eps))) }
        return try parts.preNormBlock(index, drops: drops, eps: eps, attention: attention) {
            .mixture(try weights.routedExperts(
                p + "mlp.", count: config.numExperts, expertsPerToken: config.numExpertsPerTok, hidden: d,
                inner: parts.dimensions.intermediateSize, activation: try parts.activation(config.hiddenAct ?? "silu"),
                rule: .softmaxTopK(renormalize: config.normTopkProb)))
        }
    }
}

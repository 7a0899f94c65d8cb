import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `doge`, with DogeConfig's defaults (transformers'
/// `models/doge/configuration_doge.py`).
struct DogeConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var attentionBias: Bool
    var mlpBias: Bool
    /// Every layer attends within it when set (DogeModel's one mask).
    var slidingWindow: Int?
    /// The most keys a query attends to in a longer sequence (the dynamic mask's cap).
    var keepWindowSize: Int
    /// The MLP is the CDMoE (`ProductKeyExperts`), not the dense MLP.
    var isMoe: Bool
    var numExperts: Int
    var numExpertsPerTok: Int
    var normTopkProb: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case slidingWindow = "sliding_window"
        case keepWindowSize = "keep_window_size"
        case isMoe = "is_moe"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case normTopkProb = "norm_topk_prob"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        keepWindowSize = try c.decodeIfPresent(Int.self, forKey: .keepWindowSize) ?? 2048
        isMoe = try c.decodeIfPresent(Bool.self, forKey: .isMoe) ?? false
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 16384
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 64
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? false
    }

    /// The product keys' count per half, ⌊√num_experts⌋ (`DogeCDMoE.num_keys`).
    var numKeys: Int { Int(Double(numExperts).squareRoot()) }

    /// Refuses what DogeForCausalLM cannot run or would run as another
    /// model (`hidden`: hidden_size, for the experts' tables).
    func check(hidden: Int) throws {
        // prepare_dynamic_mask's torch.topk fails on a negative count; with 0 every key is masked
        // and each query spreads evenly over the whole sequence, future keys included.
        guard keepWindowSize >= 1 else {
            throw InvalidConfigValue(
                key: "keep_window_size",
                problem: "must be at least 1 (DogeAttention keeps that many keys per query; \(keepWindowSize) masks every key), got \(keepWindowSize)")
        }
        guard isMoe else { return }
        try ConfigRules.count(numExperts, "num_experts")
        guard numKeys * numKeys == numExperts else {
            throw InvalidConfigValue(
                key: "num_experts",
                problem: "must be a perfect square (DogeCDMoE retrieves its experts by pairs of ⌊√num_experts⌋ product keys, leaving the others unused), got \(numExperts)")
        }
        try MixtureOfExperts.checkExpertsPerToken(numExpertsPerTok, of: numExperts, expertsKey: "num_experts")
        try ConfigRules.product([(numExperts, "num_experts"), (hidden, "hidden_size"), (2, "down_embed and up_embed")])
    }
}

/// Doge (`doge`, SmallDoge's Doge models; transformers'
/// `models/doge/modeling_doge.py`): pre-RMSNorm blocks whose branches join
/// the stream scaled per channel,
///
///     H = s_a ⊙ X + Attn(RMSNorm X),   Y = s_m ⊙ H + MLP(RMSNorm H)
///
/// (`input_residual`, `post_attention_residual` [hidden]; `input_layernorm`,
/// `post_attention_layernorm`), a dropped branch leaving the stream unscaled.
///
/// The attention is Qwen3's (q/k/v/o projections, biased when
/// `attention_bias`, per-head q/k RMSNorms before rotary, scale
/// head_dim^-1/2, every layer within `sliding_window` when set) with the
/// dynamic mask (`DynamicMask`): each key's bias exp(A · softplus(dt_proj(v)))
/// per key/value head joins its scores, and in a sequence longer than
/// `keep_window_size` (2048) a query attends only to that many of its keys,
/// those of highest bias.
///
/// The MLP is SwiGLU of `intermediate_size` (biased when `mlp_bias`), or,
/// when `is_moe`, the CDMoE (`ProductKeyExperts`): that MLP plus the
/// `num_experts_per_tok` (64) best of `num_experts` (16384) single-neuron
/// experts (`down_embed`, `up_embed`), chosen by product keys from
/// `router_gate`'s logits as transformers lays them across the sequence.
struct DogeModel: DecoderFamily {
    let parts: DecoderParts
    let config: DogeConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: Self.naming)
        let config = try parts.config(DogeConfiguration.self)
        self.config = config
        let parts = parts
        try parts.checks { try config.check(hidden: parts.dimensions.hiddenSize) }
        rotary = try parts.rotary()
        try Self.confirmShapes(parts, config: config)
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm.", "input_residual"],
            mlp: ["mlp.", "post_attention_layernorm.", "post_attention_residual"], layerCountKeys: ["num_hidden_layers"])
    }

    /// Checks the dynamic mask's and the experts' tensors of the first kept layers against the sizes, before anything is read.
    private static func confirmShapes(_ parts: DecoderParts, config: DogeConfiguration) throws {
        let d = parts.dimensions, path = parts.configPath, weights = parts.weights
        let kvHeads = d.kvHeads, headKey = d.headDim == nil ? "hidden_size / num_attention_heads" : "head_dim"
        if let layer = parts.firstKeptAttention {
            let p = "layers.\(layer).self_attn."
            try weights.confirmShape(
                p + "dt_proj.weight", [kvHeads, kvHeads * d.resolvedHeadDim],
                keys: "num_key_value_heads, num_key_value_heads × \(headKey)", configPath: path)
            try weights.confirmShape(p + "A", [kvHeads], keys: "num_key_value_heads", configPath: path)
        }
        guard let layer = (0..<d.numHiddenLayers).first(where: { !parts.configuredDrops.dropsMLP($0) }) else { return }
        let p = "layers.\(layer).mlp."
        try weights.confirmShape(
            p + "gate_proj.weight", [d.intermediateSize, d.hiddenSize], keys: "intermediate_size, hidden_size", configPath: path)
        guard config.isMoe else {
            if weights.has(p + "router_gate.weight") {
                throw DroptraceError(
                    "is_moe is false, but layer \(layer) stores the CDMoE's router_gate: the weights are a mixture of experts (is_moe true)",
                    path: path)
            }
            return
        }
        try weights.confirmShape(
            p + "router_gate.weight", [2 * config.numKeys, d.hiddenSize], keys: "2 × √num_experts, hidden_size", configPath: path)
        for name in ["down_embed", "up_embed"] {
            try weights.confirmShape(p + name + ".weight", [config.numExperts, d.hiddenSize], keys: "num_experts, hidden_size", configPath: path)
        }
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            residualJoins: (
                { try parts.streamScale("layers.\(index).input_residual") },
                { try parts.streamScale("layers.\(index).post_attention_residual") }),
            attention: { try attention(layer: index) }, feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s DogeAttention: Qwen3's attention with the dynamic mask.
    func attention(layer index: Int) throws -> SelfAttention {
        let layout = parts.attentionLayout, p = "layers.\(index).self_attn."
        var attention = try Qwen3Model.attention(
            parts, layer: index, bias: config.attentionBias, eps: config.rmsNormEps, rotary: rotary, window: config.slidingWindow)
        attention.dynamicMask = DynamicMask(
            projection: try parts.weights.linear(p + "dt_proj", in: layout.keyWidth, out: layout.numKVHeads, bias: config.attentionBias),
            rates: try parts.weights.floats(p + "A", [layout.numKVHeads]), keep: config.keepWindowSize)
        return attention
    }

    /// Layer `index`'s DogeMLP, or its DogeCDMoE when `is_moe`.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", weights = parts.weights, d = hiddenSize
        let activation = try parts.activation(config.hiddenAct)
        let dense = try weights.gatedMLP(
            p, hidden: d, inner: parts.dimensions.intermediateSize, activation: activation, bias: config.mlpBias)
        guard config.isMoe else { return dense }
        let experts = config.numExperts
        return .productKeys(ProductKeyExperts(
            shared: dense, router: try weights.linear(p + "router_gate", in: d, out: 2 * config.numKeys, bias: false),
            down: try weights.floats(p + "down_embed.weight", [experts, d]), up: try weights.floats(p + "up_embed.weight", [experts, d]),
            expertsPerToken: config.numExpertsPerTok, activation: activation, renormalizes: config.normTopkProb))
    }
}

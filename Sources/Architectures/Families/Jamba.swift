import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `jamba`, with JambaConfig's defaults.
struct JambaConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// `num_experts`, or its alias `num_local_experts` (the config class's attribute map).
    var experts: Int
    var expertsKey: String
    var expertsPerToken: Int
    var expertLayerPeriod: Int
    var expertLayerOffset: Int
    var attentionLayerPeriod: Int
    var attentionLayerOffset: Int
    /// The Mamba mixers' keys.
    var mamba: MambaPrefixedKeys

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case experts = "num_experts"
        case localExperts = "num_local_experts"
        case expertsPerToken = "num_experts_per_tok"
        case expertLayerPeriod = "expert_layer_period"
        case expertLayerOffset = "expert_layer_offset"
        case attentionLayerPeriod = "attn_layer_period"
        case attentionLayerOffset = "attn_layer_offset"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        let local = try c.contains(.localExperts) ? c.decodeCount(.localExperts, default: 16) : nil
        let named = try c.contains(.experts) ? c.decodeCount(.experts, default: 16) : nil
        experts = local ?? named ?? 16
        expertsKey = local == nil ? "num_experts" : "num_local_experts"
        let both = (local, named)
        try ConfigRules.decodingChecks {
            if let local = both.0, let named = both.1, local != named {
                throw InvalidConfigValue(
                    key: "num_local_experts", problem: "is \(local) but num_experts, which it stands for, is \(named); give one")
            }
        }
        expertsPerToken = try c.decodeCount(.expertsPerToken, default: 2)
        expertLayerPeriod = try c.decodeCount(.expertLayerPeriod, default: 2)
        expertLayerOffset = try c.decodeCount(.expertLayerOffset, default: 1)
        attentionLayerPeriod = try c.decodeCount(.attentionLayerPeriod, default: 8)
        attentionLayerOffset = try c.decodeCount(.attentionLayerOffset, default: 4)
        mamba = try MambaPrefixedKeys(from: decoder)
        let settings = self
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(settings.rmsNormEps, "rms_norm_eps")
            try ConfigRules.nonNegative(settings.experts, settings.expertsKey)
            for (period, periodKey, offset, offsetKey) in [
                (settings.attentionLayerPeriod, "attn_layer_period", settings.attentionLayerOffset, "attn_layer_offset"),
                (settings.expertLayerPeriod, "expert_layer_period", settings.expertLayerOffset, "expert_layer_offset"),
            ] {
                try ConfigRules.count(period, periodKey)
                guard (0..<period).contains(offset) else {
                    throw InvalidConfigValue(key: offsetKey, problem: "must be between 0 and \(periodKey) \(period) − 1, got \(offset)")
                }
            }
        }
    }

    /// Layer `index` has attention (else Mamba): index % attn_layer_period == attn_layer_offset.
    func isAttention(_ index: Int) -> Bool { index % attentionLayerPeriod == attentionLayerOffset }
    /// Layer `index`'s rule gives it experts: index % expert_layer_period == expert_layer_offset.
    func isExpertLayer(_ index: Int) -> Bool { index % expertLayerPeriod == expertLayerOffset }
}

/// AI21's Jamba (`jamba`, transformers' models/jamba; Jamba 1.5–1.7):
/// pre-RMSNorm layers (`input_layernorm`, `pre_ff_layernorm`) whose token
/// mixer, the layer's attention module, is attention without positions
/// (`self_attn`) on the layers where index % `attn_layer_period` ==
/// `attn_layer_offset` and a Mamba-1 mixer (`mamba`, with RMSNorms on dt,
/// B and C) on the others; whose feed-forward is a sparse mixture on the
/// layers where index % `expert_layer_period` == `expert_layer_offset`
/// (when `num_experts` > 1: a router `feed_forward.router` choosing the
/// top `num_experts_per_tok` of the softmax over all experts, weighted by
/// those probabilities without renormalising) and a SwiGLU MLP elsewhere;
/// the final norm `final_layernorm`. Block-drop exports rewrite both
/// periods and offsets for the kept layers, and refuse plans no period and
/// offset express.
struct JambaModel: DecoderFamily {
    let parts: DecoderParts
    let config: JambaConfiguration
    let sizes: MambaSizes
    /// Each layer's MLP is routed (the rule, with more than one expert).
    let sparse: [Bool]

    init(_ checkpoint: Checkpoint) throws {
        config = try checkpoint.decodeConfig(JambaConfiguration.self)
        let config = config
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self).numHiddenLayers
        let sparse = (0..<layers).map { config.experts > 1 && config.isExpertLayer($0) }
        self.sparse = sparse
        parts = try DecoderParts(checkpoint, naming: BambaModel.naming, experts: ExpertNaming(
            parts: ["feed_forward.experts."], projections: ["gate_proj", "up_proj", "down_proj"], count: config.experts,
            countKey: config.expertsKey, isSparse: { sparse.indices.contains($0) && sparse[$0] }),
            finalNorm: "final_layernorm")
        let d = parts.dimensions.hiddenSize
        var sizes: MambaSizes?
        try ConfigRules.checks(path: parts.configPath) { sizes = try config.mamba.sizes(hidden: d) }
        self.sizes = sizes!
        let routed = sparse.indices.filter { sparse[$0] }
        if !routed.isEmpty {
            try ConfigRules.checks(path: parts.configPath) {
                try MixtureOfExperts.checkExpertsPerToken(config.expertsPerToken, of: config.experts, expertsKey: config.expertsKey)
                try ConfigRules.product([
                    (config.experts, config.expertsKey), (2, "gate and up"), (parts.dimensions.intermediateSize, "intermediate_size"),
                    (d, "hidden_size"),
                ])
            }
            try parts.confirmRouter("feed_forward.router", experts: config.experts, expertsKey: config.expertsKey, layers: routed)
            if let layer = routed.first(where: { !parts.configuredDrops.dropsMLP($0) }) {
                let p = "layers.\(layer).feed_forward.experts.", inner = parts.dimensions.intermediateSize
                if parts.weights.hasFusedExperts(p) {
                    try parts.weights.confirmShape(
                        p + "gate_up_proj", [config.experts, 2 * inner, d],
                        keys: "\(config.expertsKey), 2 × intermediate_size, hidden_size", configPath: parts.configPath)
                } else {
                    try parts.weights.confirmShape(
                        p + "0.gate_proj.weight", [inner, d], keys: "intermediate_size, hidden_size", configPath: parts.configPath)
                }
            }
        }
        // The Mamba tensors are confirmed on the first kept Mamba layer, attention's on the first kept attention layer.
        let drops = parts.configuredDrops
        if let first = (0..<layers).first(where: { !config.isAttention($0) && !drops.dropsAttention($0) }) {
            try MambaMixer.confirmShapes(
                "layers.\(first).mamba.", weights: parts.weights, hidden: d, sizes: self.sizes, keys: MambaPrefixedKeys.keys,
                configPath: parts.configPath)
        }
        if let first = (0..<layers).first(where: { config.isAttention($0) && !drops.dropsAttention($0) }) {
            let dims = parts.dimensions
            try parts.weights.confirmShape(
                "layers.\(first).self_attn.q_proj.weight", [dims.numAttentionHeads * dims.resolvedHeadDim, d],
                keys: "num_attention_heads × head_dim", configPath: parts.configPath)
            try parts.weights.confirmShape(
                "layers.\(first).self_attn.k_proj.weight", [dims.kvHeads * dims.resolvedHeadDim, d],
                keys: "num_key_value_heads × head_dim", configPath: parts.configPath)
        }
    }

    /// An export without some blocks rewrites both periods and offsets for the kept layers.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.periodicLayers = [
            PeriodicLayers(
                periodKey: "attn_layer_period", offsetKey: "attn_layer_offset", period: config.attentionLayerPeriod,
                offset: config.attentionLayerOffset, layers: layerCount),
            PeriodicLayers(
                periodKey: "expert_layer_period", offsetKey: "expert_layer_offset", period: config.expertLayerPeriod,
                offset: config.expertLayerOffset, layers: layerCount),
        ]
        return naming
    }

    func exportProblem(_ plan: DropPlan) -> String? {
        let kept = (0..<layerCount).filter { !plan.blocks.contains($0) }
        for rule in layerNaming.periodicLayers where rule.fitting(removing: plan.blocks) == nil {
            let marked = kept.filter { rule.flags[$0] }
            return "dropping blocks \(plan.blocks.sorted().map(String.init).joined(separator: ", ")) leaves the layers "
                + "\(marked.map(String.init).joined(separator: ", ")) of the kept \(kept.map(String.init).joined(separator: ", ")) "
                + "as the ones \(rule.periodKey) and \(rule.offsetKey) pick, which no period and offset give the renumbered layers; "
                + "drop other blocks"
        }
        return nil
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("final_layernorm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), p = "layers.\(index).", d = hiddenSize, eps = config.rmsNormEps
        let weights = parts.weights, activation = try parts.activation(config.hiddenAct)
        func mixer() throws -> TokenMixer {
            if config.isAttention(index) { return .attention(try parts.attention(p + "self_attn.", bias: false, rotary: nil)) }
            return .mamba(try mamba(p + "mamba.", activation: activation))
        }
        func feedForward() throws -> FeedForward {
            let inner = parts.dimensions.intermediateSize
            guard sparse[index] else {
                return try weights.gatedMLP(p + "feed_forward.", hidden: d, inner: inner, activation: activation)
            }
            return .mixture(MixtureOfExperts(
                router: try weights.linear(p + "feed_forward.router", in: d, out: config.experts, bias: false),
                experts: try weights.gatedExperts(
                    fused: p + "feed_forward.experts.", perExpert: p + "feed_forward.experts.",
                    names: ("gate_proj", "up_proj", "down_proj"), count: config.experts, hidden: d, inner: inner,
                    activation: activation),
                expertsPerToken: config.expertsPerToken, rule: .softmaxTopK(renormalize: false)))
        }
        return try parts.preNormBlock(index, drops: drops, eps: eps, norms: BambaModel.norms, mixer: mixer, feedForward: feedForward)
    }

    /// The Mamba mixer under `prefix` (`in_proj`, `conv1d`, `x_proj`,
    /// `dt_layernorm`, `b_layernorm`, `c_layernorm`, `dt_proj`, `A_log`, `D`,
    /// `out_proj`), its norms' epsilon `rms_norm_eps`.
    func mamba(_ prefix: String, activation: Activation) throws -> MambaMixer {
        try MambaMixer.stored(
            prefix, weights: parts.weights, hidden: hiddenSize, sizes: sizes, projectionBias: config.mamba.projectionBias,
            convolutionBias: config.mamba.convolutionBias, activation: activation, norms: .stored(eps: config.rmsNormEps))
    }
}

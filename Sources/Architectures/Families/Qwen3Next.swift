import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The mixture-of-experts keys of a `qwen3_next` config.json, with
/// Qwen3NextConfig's defaults.
struct Qwen3NextExpertsConfiguration: Decodable {
    var numExperts: Int
    var numExpertsPerTok: Int
    var normTopkProb: Bool
    var moeIntermediateSize: Int
    var sharedExpertIntermediateSize: Int
    var decoderSparseStep: Int
    var mlpOnlyLayers: [Int]

    enum CodingKeys: String, CodingKey {
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case normTopkProb = "norm_topk_prob"
        case moeIntermediateSize = "moe_intermediate_size"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
        case decoderSparseStep = "decoder_sparse_step"
        case mlpOnlyLayers = "mlp_only_layers"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 512
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 10
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? true
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 512
        sharedExpertIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .sharedExpertIntermediateSize) ?? 512
        decoderSparseStep = try c.decodeIfPresent(Int.self, forKey: .decoderSparseStep) ?? 1
        mlpOnlyLayers = try c.decodeIfPresent([Int].self, forKey: .mlpOnlyLayers) ?? []
        try ConfigRules.decodingChecks {
            try ConfigRules.nonNegative(numExperts, "num_experts")
            try ConfigRules.count(decoderSparseStep, "decoder_sparse_step")
            if numExperts > 0 {
                try ConfigRules.count(moeIntermediateSize, "moe_intermediate_size")
                try ConfigRules.nonNegative(sharedExpertIntermediateSize, "shared_expert_intermediate_size")
                try MixtureOfExperts.checkExpertsPerToken(numExpertsPerTok, of: numExperts, expertsKey: "num_experts")
            }
        }
    }

    /// Whether layer `index`'s MLP is the routed experts (Qwen3NextDecoderLayer's rule).
    func isSparse(_ index: Int) -> Bool {
        numExperts > 0 && !mlpOnlyLayers.contains(index) && (index + 1) % decoderSparseStep == 0
    }
}

/// Qwen3-Next (Qwen3-Next-80B-A3B): Qwen3.5's hybrid layers (Gated DeltaNet
/// and gated attention by `layer_types`, (1 + weight) RMSNorms) with the
/// linear layers' projections fused as transformers stores them —
/// `in_proj_qkvz` grouped by key head (q, k, then its value heads' v and z)
/// and `in_proj_ba` (its value heads' b, then a) — and, on sparse layers,
/// Qwen2-MoE's MLP: softmax top-`num_experts_per_tok` experts (renormalised
/// by `norm_topk_prob`) plus a shared expert gated by
/// sigmoid(`shared_expert_gate` x); dense SwiGLU elsewhere.
struct Qwen3NextModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let layers: HybridQwenLayers
    let experts: Qwen3NextExpertsConfiguration

    init(_ checkpoint: Checkpoint) throws {
        experts = try checkpoint.decodeConfig(Qwen3NextExpertsConfiguration.self)
        let experts = experts
        var defaults = ConfigValueKinds.omittedDefaultValues(of: "qwen3_next")
        defaults["head_dim"] = .integer(256)
        parts = try DecoderParts(
            checkpoint, section: ConfigSection(defaults: defaults), naming: { HybridQwenLayers.naming($0) },
            experts: .gatedMLP(count: experts.numExperts, countKey: "num_experts", isSparse: experts.isSparse))
        layers = try HybridQwenLayers(parts, attentionClass: "Qwen3NextAttention")
        let d = parts.dimensions.hiddenSize
        try ConfigRules.checks(path: parts.configPath) {
            try ConfigRules.product([
                (experts.numExperts, "num_experts"), (2, "gate and up"), (experts.moeIntermediateSize, "moe_intermediate_size"),
                (d, "hidden_size"),
            ])
            try ConfigRules.product([
                (experts.sharedExpertIntermediateSize, "shared_expert_intermediate_size"), (3, "gate, up and down"), (d, "hidden_size"),
            ])
        }
        try parts.confirmRouter(
            "mlp.gate", experts: experts.numExperts, expertsKey: "num_experts",
            layers: (0..<parts.dimensions.numHiddenLayers).filter(experts.isSparse))
    }

    /// An export without some blocks spells out the remaining layers' types.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.layerTypes = layers.layerTypes
        return naming
    }

    func head() throws -> OutputHead { try layers.head() }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let d = hiddenSize, weights = parts.weights, p = "layers.\(index).mlp."
        return try layers.block(index, drops: plan.union(configuredDrops)) { prefix in
            try fusedProjection(prefix)
        } feedForward: {
            let activation = try parts.activation(layers.config.hiddenAct)
            guard experts.isSparse(index) else {
                return try weights.gatedMLP(p, hidden: d, inner: parts.dimensions.intermediateSize, activation: activation)
            }
            let routed = try weights.softmaxRoutedExperts(
                p, count: experts.numExperts, expertsPerToken: experts.numExpertsPerTok, hidden: d,
                inner: experts.moeIntermediateSize, activation: activation, renormalize: experts.normTopkProb)
            let shared = try weights.sharedExperts(
                p + "shared_expert.", hidden: d, inner: experts.sharedExpertIntermediateSize, activation: activation,
                widthKeys: "shared_expert_intermediate_size")
            return .mixture(MixtureOfExperts(
                router: routed.router, experts: routed.experts, expertsPerToken: routed.expertsPerToken, rule: routed.rule,
                sharedExperts: shared,
                sharedExpertGate: shared.isEmpty ? nil : try weights.linear(p + "shared_expert_gate", in: d, out: 1, bias: false)))
        }
    }

    /// `in_proj_qkvz` and `in_proj_ba` with their rows moved to the
    /// q | k | v | z | b | a order of `GatedDeltaNet.projection`.
    func fusedProjection(_ prefix: String) throws -> Linear {
        let h = layers.heads, d = hiddenSize, weights = parts.weights
        let group = h.valueHeads / h.keyHeads
        let qkvz = try weights.floats(prefix + "in_proj_qkvz.weight", [2 * h.keyWidth + 2 * h.valueWidth, d])
        let ba = try weights.floats(prefix + "in_proj_ba.weight", [2 * h.valueHeads, d])
        // Per key head: q (keyDim rows), k (keyDim), v (group · valueDim), z (group · valueDim).
        let perKeyHead = 2 * h.keyDim + 2 * group * h.valueDim
        func rows(_ source: [Float], _ start: Int, _ count: Int) -> ArraySlice<Float> { source[(start * d)..<((start + count) * d)] }
        var weight: [Float] = []
        weight.reserveCapacity(h.projectionWidth * d)
        for (offset, count) in [(0, h.keyDim), (h.keyDim, h.keyDim), (2 * h.keyDim, group * h.valueDim),
                                (2 * h.keyDim + group * h.valueDim, group * h.valueDim)] {
            for g in 0..<h.keyHeads { weight += rows(qkvz, g * perKeyHead + offset, count) }
        }
        // Per key head: b (group rows), then a (group rows).
        for offset in [0, group] {
            for g in 0..<h.keyHeads { weight += rows(ba, g * 2 * group + offset, group) }
        }
        return Linear(weight: weight, bias: nil, inFeatures: d, outFeatures: h.projectionWidth)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The mixture-of-experts keys of `qwen3_moe`'s config.json, with
/// Qwen3MoeConfig's defaults.
struct Qwen3MoeConfiguration: Decodable {
    /// `num_experts`, which transformers 5 writes as `num_local_experts`;
    /// 0 makes every MLP dense.
    var numExperts: Int
    /// The key config.json gives the expert count under, for errors.
    var numExpertsKey: String
    var numExpertsPerTok: Int
    var normTopkProb: Bool
    var moeIntermediateSize: Int
    /// Every n-th layer (1-based) is sparse.
    var decoderSparseStep: Int
    /// Layers whose MLP is dense whatever `decoder_sparse_step` says
    /// (entries past the last layer or below 0 select none).
    var mlpOnlyLayers: [Int]

    enum CodingKeys: String, CodingKey {
        case numExperts = "num_experts"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case normTopkProb = "norm_topk_prob"
        case moeIntermediateSize = "moe_intermediate_size"
        case decoderSparseStep = "decoder_sparse_step"
        case mlpOnlyLayers = "mlp_only_layers"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let experts = try c.decodeIfPresent(Int.self, forKey: .numExperts)
        let localExperts = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts)
        numExperts = localExperts ?? experts ?? 128
        numExpertsKey = localExperts == nil ? "num_experts" : "num_local_experts"
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 8
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? false
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 768
        decoderSparseStep = try c.decodeIfPresent(Int.self, forKey: .decoderSparseStep) ?? 1
        mlpOnlyLayers = try c.decodeIfPresent([Int].self, forKey: .mlpOnlyLayers) ?? []
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let experts, let localExperts, experts != localExperts {
                throw InvalidConfigValue(
                    key: "num_experts", problem: "is \(experts), but num_local_experts (the same setting) is \(localExperts)")
            }
            let key = numExpertsKey
            try ConfigRules.nonNegative(numExperts, key)
            try ConfigRules.count(decoderSparseStep, "decoder_sparse_step")
            if numExperts > 0 {
                try ConfigRules.count(moeIntermediateSize, "moe_intermediate_size")
                try MixtureOfExperts.checkExpertsPerToken(numExpertsPerTok, of: numExperts, expertsKey: key)
            }
        }
    }

    /// Whether layer `index`'s MLP is the routed experts (Qwen3MoeDecoderLayer's rule).
    func isSparse(_ index: Int) -> Bool {
        numExperts > 0 && !mlpOnlyLayers.contains(index) && (index + 1) % decoderSparseStep == 0
    }

    /// The sparse layers' experts under `mlp.experts.`, as transformers' `qwen2_moe` conversion names them.
    var experts: ExpertNaming { .gatedMLP(count: numExperts, countKey: numExpertsKey, isSparse: isSparse) }
}

/// Qwen3-MoE: Qwen3's attention (per-head q/k RMSNorm) in pre-RMSNorm
/// blocks whose MLP is, on sparse layers, a router `mlp.gate` over
/// `num_experts` SwiGLU experts of width `moe_intermediate_size`, softmax
/// top-`num_experts_per_tok`, renormalised when `norm_topk_prob`; other
/// layers (`mlp_only_layers`, or off the `decoder_sparse_step` beat) have a
/// dense SwiGLU MLP of width `intermediate_size`. Experts are read per
/// expert (`mlp.experts.<e>.gate_proj`, as saved) or fused
/// (`mlp.experts.gate_up_proj` / `down_proj`). Every layer slides its window
/// when `use_sliding_window` is set.
struct Qwen3MoeModel: DecoderFamily {
    let parts: DecoderParts
    let attentionConfig: Qwen3Configuration
    let config: Qwen3MoeConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the expert tensors are checked with the layers.
        config = try checkpoint.decodeConfig(Qwen3MoeConfiguration.self)
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming, experts: config.experts)
        attentionConfig = try parts.config(Qwen3Configuration.self)
        rotary = try parts.rotary()
        let dimensions = parts.dimensions, configPath = parts.configPath, config = config
        try ConfigRules.checks(path: configPath) {
            // transformers asks whether a layer's index is in the list, so an
            // entry past the last layer (left when layers were cut and the list
            // was not) or below 0 matches no layer and is ignored.
            // The fused expert tensors hold experts × 2 · inner × hidden values.
            try ConfigRules.product([
                (config.numExperts, config.numExpertsKey), (2, "gate and up"), (config.moeIntermediateSize, "moe_intermediate_size"),
                (dimensions.hiddenSize, "hidden_size"),
            ])
        }
        try parts.confirmRouter(
            "mlp.gate", experts: config.numExperts, expertsKey: config.numExpertsKey,
            layers: (0..<dimensions.numHiddenLayers).filter(config.isSparse))
    }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: attentionConfig.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, eps = attentionConfig.rmsNormEps
        let p = "layers.\(index)."
        func feedForward() throws -> FeedForward {
            let activation = try parts.activation(attentionConfig.hiddenAct ?? "silu")
            guard config.isSparse(index) else {
                return try weights.gatedMLP(p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize, activation: activation)
            }
            return .mixture(try weights.softmaxRoutedExperts(
                p + "mlp.", count: config.numExperts, expertsPerToken: config.numExpertsPerTok, hidden: d,
                inner: config.moeIntermediateSize, activation: activation, renormalize: config.normTopkProb))
        }
        return try parts.preNormBlock(
            index, drops: drops, eps: eps,
            attention: { try Qwen3Model.attention(parts, layer: index, config: attentionConfig, rotary: rotary, window: attentionConfig.window) },
            feedForward: feedForward)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `mixtral`.
struct MixtralConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    var slidingWindow: Int?
    var numLocalExperts: Int
    var numExpertsPerTok: Int

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case slidingWindow = "sliding_window"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
    }
}

/// Mixtral: Mistral's attention (sliding window when configured) with a
/// sparse mixture of SwiGLU experts as the MLP. The MLP module is router and
/// experts together: dropping the MLP drops all of it.
///
/// Experts are read in either form checkpoints have them:
/// - per expert, `block_sparse_moe.experts.<e>.w1|w3|w2` (gate, up, down)
///   with the router at `block_sparse_moe.gate` — Mixtral's original names,
///   which transformers' `save_pretrained` still writes;
/// - fused, `mlp.experts.gate_up_proj` [experts, 2·inner, hidden] (gate rows
///   first) and `mlp.experts.down_proj` [experts, hidden, inner] with the
///   router at `mlp.gate` — the layout of transformers' modules in memory.
struct MixtralModel: DecoderFamily {
    let parts: DecoderParts
    let config: MixtralConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the expert tensors are checked with the layers.
        config = try checkpoint.decodeConfig(MixtralConfiguration.self)
        // transformers renames `block_sparse_moe.` to `mlp.` before collecting experts: both spellings are one.
        let experts = ExpertNaming(
            parts: ["block_sparse_moe.experts.", "mlp.experts."], projections: ["w1", "w3", "w2"], count: config.numLocalExperts,
            countKey: "num_local_experts", isSparse: { _ in true })
        parts = try DecoderParts(checkpoint, naming: { prefix in
            LayerNaming(
                prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."],
                mlp: ["block_sparse_moe.", "mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
        }, experts: experts)
        // Mixtral's rotary base defaults to 1e6, not the usual 1e4.
        rotary = try parts.rotary(defaultTheta: 1_000_000)
        let dimensions = parts.dimensions, configPath = parts.configPath
        try ConfigRules.checks(path: configPath) {
            try ConfigRules.count(config.numLocalExperts, "num_local_experts")
            guard (1...config.numLocalExperts).contains(config.numExpertsPerTok) else {
                throw InvalidConfigValue(
                    key: "num_experts_per_tok",
                    problem: "must be between 1 and num_local_experts \(config.numLocalExperts), got \(config.numExpertsPerTok)")
            }
            // The fused expert tensors hold experts × 2 · inner × hidden values.
            try ConfigRules.product([
                (config.numLocalExperts, "num_local_experts"), (2, "gate and up"),
                (dimensions.intermediateSize, "intermediate_size"), (dimensions.hiddenSize, "hidden_size"),
            ])
        }
        // The expert list is built num_local_experts long: the first kept
        // router [experts, hidden] confirms the count first.
        if let layer = (0..<dimensions.numHiddenLayers).lazy.first(where: { !parts.configuredDrops.dropsMLP($0) }) {
            let routers = ["layers.\(layer).mlp.gate.weight", "layers.\(layer).block_sparse_moe.gate.weight"]
            try parts.weights.confirmShape(
                routers.first(where: { parts.weights.has($0) }) ?? routers[1], [config.numLocalExperts, dimensions.hiddenSize],
                keys: "num_local_experts, hidden_size", configPath: configPath)
        }
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), eps = config.rmsNormEps
        func attention() throws -> SelfAttention { try parts.attention(
            "layers.\(index).self_attn.", bias: false, rotary: rotary,
            slidingWindow: config.slidingWindow) }
        return try parts.preNormBlock(index, drops: drops, eps: eps, attention: attention) { .mixture(try experts(layer: index)) }
    }

    /// Layer `index`'s router and experts, from whichever naming the checkpoint uses.
    func experts(layer index: Int) throws -> MixtureOfExperts {
        let d = hiddenSize, inner = parts.dimensions.intermediateSize, count = config.numLocalExperts
        let activation = try parts.activation(config.hiddenAct ?? "silu")
        let weights = parts.weights
        let p = "layers.\(index)."
        // The router sits beside the experts: `mlp.gate` with fused ones.
        let fused = weights.hasFusedExperts(p + "mlp.experts.")
        let routerName = p + (fused ? "mlp.gate" : "block_sparse_moe.gate")
        let experts = try weights.gatedExperts(
            fused: p + "mlp.experts.", perExpert: p + "block_sparse_moe.experts.", names: (gate: "w1", up: "w3", down: "w2"),
            count: count, hidden: d, inner: inner, activation: activation)
        return MixtureOfExperts(
            router: try weights.linear(routerName, in: d, out: count, bias: false),
            experts: experts, expertsPerToken: config.numExpertsPerTok)
    }
}

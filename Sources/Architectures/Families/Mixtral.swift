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
        parts = try DecoderParts(
            checkpoint, naming: Self.naming,
            experts: Self.experts(count: config.numLocalExperts, countKey: "num_local_experts", projections: ["w1", "w3", "w2"]))
        // Mixtral's rotary base defaults to 1e6, not the usual 1e4.
        rotary = try parts.rotary(defaultTheta: 1_000_000)
        let config = config
        try parts.checkMixtralExperts(
            count: config.numLocalExperts, countKey: "num_local_experts", expertsPerToken: config.numExpertsPerTok,
            inner: parts.dimensions.intermediateSize, innerKey: "intermediate_size")
    }

    /// Mixtral's layer names: the sparse MLP under `block_sparse_moe.`
    /// (original) or `mlp.` (transformers' modules).
    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."],
            mlp: ["block_sparse_moe.", "mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    /// Experts stored per expert under either part (transformers renames
    /// `block_sparse_moe.` to `mlp.` before collecting them: both spellings
    /// are one), in every layer.
    static func experts(count: Int, countKey: String, projections: [String]) -> ExpertNaming {
        ExpertNaming(
            parts: ["block_sparse_moe.experts.", "mlp.experts."], projections: projections, count: count,
            countKey: countKey, isSparse: { _ in true })
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
        let activation = try parts.activation(config.hiddenAct ?? "silu")
        let sparse = try parts.mixtralExperts(
            layer: index, count: config.numLocalExperts, inner: parts.dimensions.intermediateSize, activation: activation)
        return MixtureOfExperts(router: sparse.router, experts: sparse.experts, expertsPerToken: config.numExpertsPerTok)
    }
}

/// A layer's sparse MLP as Mixtral names it (also MiniMax-M2's and PhiMoE's).
struct MixtralStyleExperts {
    let router: Linear
    let experts: [FeedForward]
}

extension DecoderParts {
    /// Refuses an expert count, experts per token or expert width that
    /// transformers could not run or whose fused tensors overflow, then
    /// confirms the first kept router [experts, hidden] (the expert list is
    /// built `count` long).
    func checkMixtralExperts(
        count: Int, countKey: String, expertsPerToken: Int, inner: Int, innerKey: String, routers: [String] = ["gate"]
    ) throws {
        let dimensions = dimensions
        try ConfigRules.checks(path: configPath) {
            try ConfigRules.count(count, countKey)
            guard (1...count).contains(expertsPerToken) else {
                throw InvalidConfigValue(
                    key: "num_experts_per_tok", problem: "must be between 1 and \(countKey) \(count), got \(expertsPerToken)")
            }
            try ConfigRules.count(inner, innerKey)
            // The fused expert tensors hold experts × 2 · inner × hidden values.
            try ConfigRules.product([
                (count, countKey), (2, "gate and up"), (inner, innerKey), (dimensions.hiddenSize, "hidden_size"),
            ])
        }
        // transformers renames block_sparse_moe. onto mlp.: a tensor stored under both is one key stored twice.
        for name in checkpoint.storedTensorNames where name.contains(".block_sparse_moe.") {
            let renamed = name.replacingOccurrences(of: ".block_sparse_moe.", with: ".mlp.")
            if checkpoint.hasTensor(renamed) {
                throw DroptraceError(
                    "tensor '\(name.forErrorMessage)' is stored twice, also as '\(renamed.forErrorMessage)' (transformers reads both as one)",
                    path: checkpoint.weightsPath)
            }
        }
        guard let layer = (0..<dimensions.numHiddenLayers).lazy.first(where: { !configuredDrops.dropsMLP($0) }) else { return }
        try weights.confirmShape(
            mixtralRouter(layer: layer, routers: routers) + ".weight", [count, dimensions.hiddenSize],
            keys: "\(countKey), hidden_size", configPath: configPath)
        // Its experts against the expert width, before any is read.
        let module = mixtralExpertsModule(layer: layer)
        if weights.hasFusedExperts(module + "experts.") {
            try weights.confirmShape(
                module + "experts.gate_up_proj", [count, 2 * inner, dimensions.hiddenSize],
                keys: "\(countKey), 2 × \(innerKey), hidden_size", configPath: configPath)
        } else {
            try weights.confirmShape(
                module + "experts.0.w1.weight", [inner, dimensions.hiddenSize], keys: "\(innerKey), hidden_size",
                configPath: configPath)
        }
    }

    /// Layer `layer`'s router, by the first of `routers` stored under
    /// `block_sparse_moe.` (the original module name, which save_pretrained
    /// still writes) or `mlp.` (transformers' module, onto which it renames the other).
    func mixtralRouter(layer: Int, routers: [String]) -> String {
        let names = ["block_sparse_moe.", "mlp."].flatMap { module in routers.map { "layers.\(layer).\(module)\($0)" } }
        return names.first { weights.has($0 + ".weight") } ?? names[0]
    }

    /// The module under which layer `layer` stores its experts, fused or
    /// per expert: `block_sparse_moe.` or `mlp.` (see `mixtralRouter`).
    func mixtralExpertsModule(layer: Int) -> String {
        let p = "layers.\(layer)."
        return [p + "block_sparse_moe.", p + "mlp."].first { weights.hasFusedExperts($0 + "experts.") || weights.has($0 + "experts.0.w1.weight") }
            ?? p + "block_sparse_moe."
    }

    /// Layer `index`'s router and gated experts, Mixtral's names, each under
    /// `block_sparse_moe.` or `mlp.` (`mixtralRouter`, `mixtralExpertsModule`):
    /// - per expert, `experts.<e>.w1|w3|w2` (gate, up, down) — the
    ///   original names, which transformers' `save_pretrained` still writes;
    /// - fused, `experts.gate_up_proj` [experts, 2·inner, hidden] (gate rows
    ///   first) and `experts.down_proj` [experts, hidden, inner] —
    ///   transformers' parameters in memory.
    /// `routers` lists the router's names, the stored one first (PhiMoE's
    /// `gate` is `router` in memory); `routerBias`: the router has a bias.
    func mixtralExperts(
        layer index: Int, count: Int, inner: Int, activation: Activation, routers: [String] = ["gate"], routerBias: Bool = false
    ) throws -> MixtralStyleExperts {
        let d = dimensions.hiddenSize, module = mixtralExpertsModule(layer: index)
        let experts = try weights.gatedExperts(
            fused: module + "experts.", perExpert: module + "experts.", names: (gate: "w1", up: "w3", down: "w2"),
            count: count, hidden: d, inner: inner, activation: activation)
        return MixtralStyleExperts(
            router: try weights.linear(mixtralRouter(layer: index, routers: routers), in: d, out: count, bias: routerBias), experts: experts)
    }
}

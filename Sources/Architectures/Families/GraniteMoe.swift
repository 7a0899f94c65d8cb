import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The mixture keys of config.json of `granitemoe`, `granitemoeshared` and
/// `granitemoe_swa`, with their config classes' defaults: 8 experts of width
/// `intermediate_size`, 2 per token, no shared MLP.
struct GraniteMoeSettings: Decodable {
    var numLocalExperts: Int
    var numExpertsPerTok: Int
    /// The width of the shared MLP every token goes through; 0 for none.
    /// Read by `granitemoeshared` and `granitemoe_swa` (GraniteMoeConfig has no such key).
    var sharedIntermediateSize: Int

    enum CodingKeys: String, CodingKey {
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case sharedIntermediateSize = "shared_intermediate_size"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // The config class takes null for both counts, which its model then cannot build.
        func count(_ key: CodingKeys, default fallback: Int) throws -> Int {
            let isNull = try c.contains(key) && c.decodeNil(forKey: key)
            try ConfigRules.decodingChecks {
                guard !isNull else {
                    throw InvalidConfigValue(key: key.rawValue, problem: "must be a number, got null (GraniteMoeMoE sizes its experts by it)")
                }
            }
            return try c.decodeIfPresent(Int.self, forKey: key) ?? fallback
        }
        numLocalExperts = try count(.numLocalExperts, default: 8)
        numExpertsPerTok = try count(.numExpertsPerTok, default: 2)
        sharedIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .sharedIntermediateSize) ?? 0
        let settings = self
        try ConfigRules.decodingChecks {
            // GraniteMoeHybrid takes 0 experts (`GraniteMoeMLP.allowsNoExperts`).
            try ConfigRules.nonNegative(settings.numLocalExperts, "num_local_experts")
            try ConfigRules.nonNegative(settings.sharedIntermediateSize, "shared_intermediate_size")
        }
    }

    /// The checks of a mixture: at least one expert, and between 1 and that many per token.
    func checkMixture() throws {
        try ConfigRules.count(numLocalExperts, "num_local_experts")
        try MixtureOfExperts.checkExpertsPerToken(numExpertsPerTok, of: numLocalExperts, expertsKey: "num_local_experts")
    }
}

/// GraniteMoE's sparse MLP (`block_sparse_moe`), for `GraniteModel`: a
/// router over `num_local_experts` SwiGLU experts of width
/// `intermediate_size`, the `num_experts_per_tok` largest logits softmaxed
/// among themselves (GraniteMoeTopKRouter), and on `granitemoeshared` and `granitemoe_swa` a
/// shared SwiGLU MLP (`shared_mlp`, width `shared_intermediate_size`) every
/// token goes through, added ungated. The MLP module is all of it: dropping
/// it drops router, experts and shared MLP, as the layer adds their sum.
///
/// The experts are two 3-D tensors, gate rows before up rows. GraniteMoE
/// checkpoints name them `input_linear.weight` [experts, 2·inner, hidden] and
/// `output_linear.weight` [experts, hidden, inner], the router
/// `router.layer.weight`; transformers renames them (its conversion mapping
/// for granitemoe and granitemoeshared) to its modules' `experts.gate_up_proj`,
/// `experts.down_proj` and `router.weight`, and reads either spelling;
/// granitemoe_swa has no such mapping and only transformers' names. The
/// shared MLP is `input_linear` [2·shared, hidden] and `output_linear`.
struct GraniteMoeMLP: Sendable {
    let settings: GraniteMoeSettings
    /// Whether the checkpoint may spell the tensors as GraniteMoE saved them
    /// (transformers maps `granitemoe` and `granitemoeshared` only).
    let readsSavedNames: Bool

    /// The family's keys of `parts`' config: the shared MLP's width only where
    /// `readsSharedMLP`. `allowsNoExperts`: 0 experts leave the shared MLP
    /// alone (GraniteMoeHybrid's dense layers), which must then have a width.
    init(_ parts: DecoderParts, readsSharedMLP: Bool, readsSavedNames: Bool, allowsNoExperts: Bool = false) throws {
        var settings = try parts.config(GraniteMoeSettings.self)
        if !readsSharedMLP { settings.sharedIntermediateSize = 0 }
        self.settings = settings
        self.readsSavedNames = readsSavedNames
        let dimensions = parts.dimensions
        try ConfigRules.checks(path: parts.configPath) {
            if !allowsNoExperts || settings.numLocalExperts > 0 {
                try settings.checkMixture()
            } else if settings.sharedIntermediateSize == 0 {
                throw InvalidConfigValue(
                    key: "shared_intermediate_size", problem: "is 0 with num_local_experts 0: the layers would have no MLP at all")
            }
            // The fused expert tensors hold experts × 2 · inner × hidden values.
            try ConfigRules.product([
                (settings.numLocalExperts, "num_local_experts"), (2, "gate and up"),
                (dimensions.intermediateSize, "intermediate_size"), (dimensions.hiddenSize, "hidden_size"),
            ])
            try ConfigRules.product([
                (settings.sharedIntermediateSize, "shared_intermediate_size"), (3, "gate, up and down"),
                (dimensions.hiddenSize, "hidden_size"),
            ])
        }
        // The expert list is built num_local_experts long: the first kept MLP confirms the sizes first.
        if let layer = (0..<dimensions.numHiddenLayers).first(where: { !parts.configuredDrops.dropsMLP($0) }) {
            let weights = parts.weights, d = dimensions.hiddenSize
            if settings.numLocalExperts > 0 {
                try weights.confirmShape(
                    try name(layer, weights, saved: "router.layer.weight", renamed: "router.weight"),
                    [settings.numLocalExperts, d], keys: "num_local_experts, hidden_size", configPath: parts.configPath)
                try weights.confirmShape(
                    try name(layer, weights, saved: "input_linear.weight", renamed: "experts.gate_up_proj"),
                    [settings.numLocalExperts, 2 * dimensions.intermediateSize, d],
                    keys: "num_local_experts, intermediate_size, hidden_size", configPath: parts.configPath)
            }
            if settings.sharedIntermediateSize > 0 {
                try weights.confirmShape(
                    "layers.\(layer).shared_mlp.input_linear.weight", [2 * settings.sharedIntermediateSize, d],
                    keys: "shared_intermediate_size, hidden_size", configPath: parts.configPath)
            }
        }
    }

    /// The layer naming: the MLP module is `block_sparse_moe` and `shared_mlp`.
    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."],
            mlp: ["block_sparse_moe.", "shared_mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    /// Layer `index`'s tensor under `block_sparse_moe.` as stored: `saved`
    /// (GraniteMoE's name, where transformers maps it) or `renamed`
    /// (transformers' own); a missing one is named as the checkpoint would hold it.
    /// - Throws: `DroptraceError` naming the weights when both are stored:
    ///   transformers reads them as one parameter, whichever it met last.
    private func name(_ index: Int, _ weights: Weights, saved: String, renamed: String) throws -> String {
        let p = "layers.\(index).block_sparse_moe."
        guard readsSavedNames else { return p + renamed }
        return try weights.storedName(saved: p + saved, renamed: p + renamed)
    }

    /// Layer `index`'s MLP.
    func feedForward(_ index: Int, parts: DecoderParts, activation: Activation) throws -> FeedForward {
        let weights = parts.weights, d = parts.dimensions.hiddenSize, count = settings.numLocalExperts
        if count == 0 {
            return try weights.fusedGatedMLP(
                "layers.\(index).shared_mlp.", hidden: d, inner: settings.sharedIntermediateSize, activation: activation,
                names: ("input_linear", "output_linear"))
        }
        let experts = try weights.fusedGatedExperts(
            gateUp: try name(index, weights, saved: "input_linear.weight", renamed: "experts.gate_up_proj"),
            down: try name(index, weights, saved: "output_linear.weight", renamed: "experts.down_proj"),
            count: count, hidden: d, inner: parts.dimensions.intermediateSize, activation: activation)
        let shared = settings.sharedIntermediateSize == 0 ? [] : [
            try weights.fusedGatedMLP(
                "layers.\(index).shared_mlp.", hidden: d, inner: settings.sharedIntermediateSize, activation: activation,
                names: ("input_linear", "output_linear")),
        ]
        return .mixture(MixtureOfExperts(
            router: try weights.linear(
                String(try name(index, weights, saved: "router.layer.weight", renamed: "router.weight").dropLast(".weight".count)),
                in: d, out: count, bias: false),
            experts: experts, expertsPerToken: settings.numExpertsPerTok, rule: .topKThenSoftmax, sharedExperts: shared))
    }
}

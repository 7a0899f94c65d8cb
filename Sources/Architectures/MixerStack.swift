import CheckpointIO
import DroptraceSupport
import TensorEngine

/// A stack of one-branch blocks, x + mixer(norm(x)), without attention or
/// MLP (transformers' MambaBlock, FalconMambaBlock, Mamba2Block): each
/// layer's mixer is its token mixer (the attention module) and the layer
/// has no MLP module (`absentModules`), so the block's score is the
/// mixer's and dropping the mixer drops the layer, which an export
/// removes. Weights under `backbone.` as released (or without a prefix):
/// the embedding `embeddings`, each layer's RMSNorm `norm` and `mixer`, the
/// final RMSNorm `norm_f`, all with `layer_norm_epsilon`.
protocol MixerStack: DecoderFamily {
    /// `layer_norm_epsilon`: the blocks' and the final norm's epsilon.
    var normEpsilon: Double { get }
    /// Layer `index`'s mixer, stored under `layers.<index>.mixer.`.
    func mixer(_ index: Int) throws -> TokenMixer
}

extension MixerStack {
    /// The stack's parts: config.json's sizes with `section`'s defaults for
    /// the keys a stack has no use for, the weights under `backbone.`.
    /// - Throws: `DroptraceError` naming config.json for `rescale_prenorm_residual`
    ///   true: transformers' `_init_weights` then divides each layer's
    ///   `out_proj.weight` by √num_hidden_layers in place, also as it loads a
    ///   checkpoint (5.25), so it would run another model than the one stored.
    static func parts(_ checkpoint: Checkpoint, section: ConfigSection) throws -> DecoderParts {
        let parts = try DecoderParts(
            checkpoint, section: section, naming: naming, prefixes: ["backbone.", ""], finalNorm: "norm_f", embedding: "embeddings")
        if try checkpoint.decodeConfig(PrenormRescaling.self).rescale == true {
            try parts.checks {
                throw InvalidConfigValue(
                    key: "rescale_prenorm_residual",
                    problem: "is true: transformers divides each layer's out_proj weight by √num_hidden_layers as it loads the "
                        + "checkpoint, so it runs another model than the one stored (released checkpoints set it false)")
            }
        }
        return parts
    }

    /// The mixer and the norm before it are the layer's one module.
    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(prefix: prefix + "layers.", attention: ["mixer.", "norm."], mlp: [], layerCountKeys: ["num_hidden_layers"])
    }

    /// No layer has an MLP module.
    var absentModules: DropPlan { DropPlan(mlp: Set(0..<layerCount)) }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm_f", size: hiddenSize, eps: normEpsilon))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try parts.weights.rmsNorm("layers.\(index).norm", size: hiddenSize, eps: normEpsilon), mixer: try mixer(index)),
            mlp: nil, residual: .sequential)
    }
}

/// config.json's `rescale_prenorm_residual` (MambaConfig, FalconMambaConfig, Mamba2Config; default false).
private struct PrenormRescaling: Decodable {
    var rescale: Bool?

    enum CodingKeys: String, CodingKey { case rescale = "rescale_prenorm_residual" }
}

extension ConfigSection {
    /// A mixer stack's config.json: the attention and MLP sizes the shared
    /// decoder keys hold mean nothing to it (one placeholder head, a width
    /// `intermediate_size` only Mamba-1 reads, where written); positions
    /// are `max_position_embeddings` where written, else 2048
    /// (lm-evaluation-harness's maximum where a config names none).
    static func mixerStack(overrides: [String: ConfigDefault] = [:]) -> ConfigSection {
        ConfigSection(
            defaults: ["intermediate_size": 1, "max_position_embeddings": 2048],
            overrides: overrides.merging(["num_attention_heads": 1, "num_key_value_heads": .null]) { mine, _ in mine })
    }
}

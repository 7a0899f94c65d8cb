import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `rwkv` beside the sizes (RwkvConfig's keys and defaults).
struct RwkvConfiguration: Decodable {
    /// The time mixing's width; the hidden size when absent or null.
    var attentionHiddenSize: Int?
    /// The channel mixing's width; 4 × the hidden size when absent or null.
    var intermediateSize: Int?
    var layerNormEpsilon: Double
    /// At inference the stream is halved after every `rescale_every`-th
    /// block and each block's output projections divided to match; ≤ 0: never.
    var rescaleEvery: Int
    /// The positions a sequence may have (RwkvConfig's `max_position_embeddings` is this key).
    var contextLength: Int

    enum CodingKeys: String, CodingKey {
        case attentionHiddenSize = "attention_hidden_size"
        case intermediateSize = "intermediate_size"
        case layerNormEpsilon = "layer_norm_epsilon"
        case rescaleEvery = "rescale_every"
        case contextLength = "context_length"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        attentionHiddenSize = try c.decodeIfPresent(Int.self, forKey: .attentionHiddenSize)
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize)
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? 1e-5
        rescaleEvery = try c.decodeIfPresent(Int.self, forKey: .rescaleEvery) ?? 6
        contextLength = try c.decodeIfPresent(Int.self, forKey: .contextLength) ?? 1024
        let (attention, intermediate, eps, positions) = (attentionHiddenSize, intermediateSize, layerNormEpsilon, contextLength)
        try ConfigRules.decodingChecks {
            try ConfigRules.count(positions, "context_length")
            try ConfigRules.countIfPresent(attention, "attention_hidden_size")
            try ConfigRules.countIfPresent(intermediate, "intermediate_size")
            try ConfigRules.positive(eps, "layer_norm_epsilon")
        }
    }
}

/// RWKV-4 (`rwkv`, transformers' models/rwkv: BlinkDL's RWKV-4 Pile and
/// Raven models as converted to `RWKV/rwkv-4-*`): pre-LayerNorm blocks
/// (`ln1`, `ln2`, with biases, `layer_norm_epsilon`) whose token mixer is
/// the time mixing (`RwkvTimeMixing`, its "attention" module: `attention.`)
/// and whose MLP is the channel mixing (`RwkvChannelMixing`:
/// `feed_forward.`), both over token-shifted rows; the first block's
/// `pre_ln` normalises the embeddings (read here as part of them: no drop
/// removes it, an export gives it to the first kept block); the final
/// `ln_out` with nn.LayerNorm's own epsilon, 1e-5; the head `head`, untied
/// by default. As RwkvModel runs at inference, the stream is halved after
/// each block whose index + 1 is a multiple of `rescale_every`, and block
/// i's `attention.output` and `feed_forward.value` divided by
/// 2^⌊i / rescale_every⌋ (applied here to their outputs: the same powers
/// of two). The index is the block's in the model the plan leaves, as
/// transformers numbers the blocks of an export without some of them.
struct RwkvModel: DecoderFamily {
    let parts: DecoderParts
    let config: RwkvConfiguration

    init(_ checkpoint: Checkpoint) throws {
        // RwkvConfig has no heads; its max_position_embeddings is context_length (its attribute map).
        let config = try checkpoint.decodeConfig(RwkvConfiguration.self)
        let section = ConfigSection(
            defaults: ["hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 50277],
            overrides: [
                "num_attention_heads": 1, "num_key_value_heads": .null, "intermediate_size": 1,
                "max_position_embeddings": .integer(config.contextLength),
            ])
        let parts = try DecoderParts(
            checkpoint, section: section, headNames: ["head"], naming: Self.naming, prefixes: ["rwkv.", ""], finalNorm: "ln_out",
            embedding: "embeddings")
        (self.parts, self.config) = (parts, config)
        let d = parts.dimensions.hiddenSize, width = config.attentionHiddenSize ?? d
        let intermediate = try parts.checks { try config.intermediateSize ?? ConfigRules.product([(4, "4"), (d, "hidden_size")]) }
        try parts.checks {
            _ = try ConfigRules.product([(width, "attention_hidden_size"), (d, "hidden_size"), (3, "key, value and receptance")])
            _ = try ConfigRules.product([(intermediate, "intermediate_size"), (d, "hidden_size")])
        }
        let widthKey = config.attentionHiddenSize == nil ? "hidden_size" : "attention_hidden_size"
        let innerKey = config.intermediateSize == nil ? "4 × hidden_size" : "intermediate_size"
        try parts.weights.confirmShape("blocks.0.pre_ln.weight", [d], keys: "hidden_size", configPath: parts.configPath)
        let layers = 0..<parts.dimensions.numHiddenLayers
        if let first = layers.first(where: { !parts.configuredDrops.dropsAttention($0) }) {
            try parts.weights.confirmShapes(
                [("key.weight", [width, d], "\(widthKey), hidden_size"), ("output.weight", [d, width], "hidden_size, \(widthKey)"),
                 ("time_decay", [width], widthKey)],
                prefix: "blocks.\(first).attention.", configPath: parts.configPath)
        }
        if let first = layers.first(where: { !parts.configuredDrops.dropsMLP($0) }) {
            try parts.weights.confirmShapes(
                [("key.weight", [intermediate, d], "\(innerKey), hidden_size"), ("value.weight", [d, intermediate], "hidden_size, \(innerKey)")],
                prefix: "blocks.\(first).feed_forward.", configPath: parts.configPath)
        }
    }

    /// The rescaling follows each block's index in the dropped model.
    var blocksFollowTheirIndex: Bool { true }

    var width: Int { config.attentionHiddenSize ?? hiddenSize }
    var intermediateSize: Int { config.intermediateSize ?? 4 * hiddenSize }

    static func naming(_ prefix: String) -> LayerNaming {
        var naming = LayerNaming(
            prefix: prefix + "blocks.", attention: ["attention.", "ln1."], mlp: ["feed_forward.", "ln2."], layerCountKeys: ["num_hidden_layers"])
        naming.firstLayerParts = ["pre_ln."]
        return naming
    }

    /// The embeddings through the first block's `pre_ln`.
    func embed(_ batch: TokenBatch) throws -> Matrix {
        try parts.weights.layerNorm("blocks.0.pre_ln", size: hiddenSize, eps: config.layerNormEpsilon)(parts.embed(batch))
    }

    func head() throws -> OutputHead {
        // RwkvModel's ln_out is nn.LayerNorm(hidden_size): its default epsilon, not layer_norm_epsilon.
        try parts.head(norm: parts.weights.layerNorm("ln_out", size: hiddenSize, eps: 1e-5))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights, d = hiddenSize, eps = config.layerNormEpsilon
        let p = "blocks.\(index).", a = p + "attention.", f = p + "feed_forward."
        // The block's index in the model without the plan's blocks, and its rescaling there.
        let position = index - plan.blocks.filter { $0 < index }.count, every = config.rescaleEvery
        let branchScale = every > 0 && position >= every ? Float(pow(2, -Double(position / every))) : nil
        func mix(_ name: String) throws -> [Float] { try weights.floats(name, [1, 1, d]) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.layerNorm(p + "ln1", size: d, eps: eps),
                mixer: .rwkvTimeMixing(RwkvTimeMixing(
                    shifts: (try mix(a + "time_mix_key"), try mix(a + "time_mix_value"), try mix(a + "time_mix_receptance")),
                    key: try weights.linear(a + "key", in: d, out: width, bias: false),
                    value: try weights.linear(a + "value", in: d, out: width, bias: false),
                    receptance: try weights.linear(a + "receptance", in: d, out: width, bias: false),
                    timeDecay: try weights.floats(a + "time_decay", [width]), timeFirst: try weights.floats(a + "time_first", [width]),
                    output: try weights.linear(a + "output", in: width, out: d, bias: false))),
                outputScale: branchScale),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.layerNorm(p + "ln2", size: d, eps: eps),
                feedForward: .rwkvChannelMixing(RwkvChannelMixing(
                    shifts: (try mix(f + "time_mix_key"), try mix(f + "time_mix_receptance")),
                    key: try weights.linear(f + "key", in: d, out: intermediateSize, bias: false),
                    receptance: try weights.linear(f + "receptance", in: d, out: d, bias: false),
                    value: try weights.linear(f + "value", in: intermediateSize, out: d, bias: false), layer: index)),
                outputScale: branchScale),
            residual: .sequential,
            outputScale: every > 0 && (position + 1) % every == 0 ? 0.5 : nil)
    }
}

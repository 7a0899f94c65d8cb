import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of config.json the LFM2 families share (Lfm2Config's and
/// Lfm2MoeConfig's), with their defaults.
struct Lfm2Configuration: Decodable {
    var normEps: Double
    /// Biases on in_proj, the convolution and out_proj of the conv layers.
    var convBias: Bool
    /// `conv_L_cache`: taps of the causal convolution.
    var convolutionKernel: Int
    var layerTypes: [String]?
    /// `full_attn_idxs` (lfm2 only): the attention layers when `layer_types` is absent; null or absent: all.
    var fullAttentionIndices: [Int]?
    /// `tie_embedding`, which both config classes read over `tie_word_embeddings`.
    var tieEmbedding: Bool?

    enum CodingKeys: String, CodingKey {
        case normEps = "norm_eps"
        case convBias = "conv_bias"
        case convolutionKernel = "conv_L_cache"
        case layerTypes = "layer_types"
        case fullAttentionIndices = "full_attn_idxs"
        case tieEmbedding = "tie_embedding"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        normEps = try c.decodeIfPresent(Double.self, forKey: .normEps) ?? 1e-5
        convBias = try c.decodeIfPresent(Bool.self, forKey: .convBias) ?? false
        convolutionKernel = try c.decodeIfPresent(Int.self, forKey: .convolutionKernel) ?? 3
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        fullAttentionIndices = try c.decodeIfPresent([Int].self, forKey: .fullAttentionIndices)
        if c.contains(.tieEmbedding), try c.decodeNil(forKey: .tieEmbedding) {
            // transformers sets tie_word_embeddings to it, which then holds None.
            throw DecodingError.dataCorruptedError(
                forKey: .tieEmbedding, in: c, debugDescription: "is null: the head is tied or not (true or false)")
        }
        tieEmbedding = try c.decodeIfPresent(Bool.self, forKey: .tieEmbedding)
        let (normEps, convolutionKernel) = (normEps, convolutionKernel)
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(normEps, "norm_eps")
            try ConfigRules.count(convolutionKernel, "conv_L_cache")
        }
    }

    static let conv = "conv"

    /// Each layer's token mixer: `layer_types`, else full attention on the
    /// `full_attn_idxs` layers (all of them when it is null or absent) and
    /// conv elsewhere (Lfm2Config's rule); nil when neither applies
    /// (Lfm2MoeConfig has no rule).
    func resolvedLayerTypes(layers: Int, fullAttentionRule: Bool) -> [String]? {
        if let layerTypes { return layerTypes }
        guard fullAttentionRule else { return nil }
        let full = Set(fullAttentionIndices ?? Array(0..<layers))
        return (0..<layers).map { full.contains($0) ? AttentionLayerType.full : Self.conv }
    }
}

/// What the LFM2 families (LFM2, LFM2-MoE) build the same way: the layer
/// types, the attention and short-convolution mixers, the blocks' norms
/// and the head.
struct Lfm2Layers: Sendable {
    let parts: DecoderParts
    let config: Lfm2Configuration
    let layerTypes: [String]
    let rotary: RotaryEmbedding

    /// Lfm2Config's and Lfm2MoeConfig's `tie_embedding`, read over
    /// `tie_word_embeddings`; both tie by default.
    static func tiedEmbeddings(_ checkpoint: Checkpoint) throws -> Bool? {
        try checkpoint.decodeConfig(Lfm2Configuration.self).tieEmbedding
    }

    init(_ parts: DecoderParts, fullAttentionRule: Bool) throws {
        self.parts = parts
        let config = try parts.config(Lfm2Configuration.self)
        self.config = config
        let layers = parts.dimensions.numHiddenLayers, d = parts.dimensions.hiddenSize
        var resolved: [String] = []
        try ConfigRules.checks(path: parts.configPath) {
            if fullAttentionRule, let indices = config.fullAttentionIndices,
               let outside = indices.first(where: { $0 < 0 || $0 >= layers }) {
                throw InvalidConfigValue(
                    key: "full_attn_idxs", problem: "names layer \(outside), but the layers are 0 to \(layers - 1) (num_hidden_layers \(layers))")
            }
            guard let types = config.resolvedLayerTypes(layers: layers, fullAttentionRule: fullAttentionRule) else {
                throw InvalidConfigValue(
                    key: "layer_types", problem: "is absent or null: each layer is conv or full_attention, and this model has no default")
            }
            if types.count != layers {
                throw InvalidConfigValue(key: "layer_types", problem: "has \(types.count) entries for \(layers) layers (num_hidden_layers)")
            }
            if let other = types.first(where: { $0 != AttentionLayerType.full && $0 != Lfm2Configuration.conv }) {
                throw InvalidConfigValue(
                    key: "layer_types", problem: "names \"\(other.forErrorMessage)\": the layers are conv or full_attention")
            }
            // in_proj [3 · hidden, hidden] and the taps [hidden, 1, conv_L_cache].
            _ = try ConfigRules.product([(d, "hidden_size"), (d, "hidden_size"), (3, "B, C and x")])
            _ = try ConfigRules.product([(config.convolutionKernel, "conv_L_cache"), (d, "hidden_size")])
            resolved = types
        }
        layerTypes = resolved
        // A type list that contradicts the weights names the key that gave it.
        try Self.confirmMixers(
            parts, types: resolved, kernel: config.convolutionKernel, typeKey: config.layerTypes != nil ? "layer_types" : "full_attn_idxs")
        // The rotary table is sized from the first kept full-attention layer's q_proj.
        try parts.confirmAttentionProjections(layers: (0..<layers).filter { resolved[$0] == AttentionLayerType.full })
        rotary = try parts.rotary(defaultTheta: 1_000_000, confirmProjections: false)
    }

    /// Checks that each kept token mixer's weights are those of its type in
    /// `types` (`conv`: `conv.in_proj`; an attention type: `self_attn.q_proj`),
    /// and the first kept convolution's in_proj [3 · hidden, hidden] and taps
    /// [hidden, 1, `kernel`], before anything is sized from them (LFM2, LFM3).
    /// - Throws: `DroptraceError` naming config.json and `typeKey`, the key
    ///   the types came from, or the keys a shape contradicts.
    static func confirmMixers(_ parts: DecoderParts, types: [String], kernel: Int, typeKey: String) throws {
        let drops = parts.configuredDrops, weights = parts.weights, d = parts.dimensions.hiddenSize
        let kept = types.indices.filter { !drops.dropsAttention($0) }
        try parts.confirmMixerTypes(types, key: typeKey) {
            $0 == Lfm2Configuration.conv ? ("conv.in_proj", "self_attn.q_proj") : ("self_attn.q_proj", "conv.in_proj")
        }
        guard let firstConv = kept.first(where: { types[$0] == Lfm2Configuration.conv }) else { return }
        let p = "layers.\(firstConv).conv."
        try weights.confirmShape("\(p)in_proj.weight", [3 * d, d], keys: "3 × hidden_size, hidden_size", configPath: parts.configPath)
        try weights.confirmShape("\(p)conv.weight", [d, 1, kernel], keys: "hidden_size, conv_L_cache", configPath: parts.configPath)
    }

    /// The layer naming: the token mixer (`self_attn` or `conv`) and its
    /// `operator_norm` are the attention branch, `feed_forward` and
    /// `ffn_norm` the MLP.
    static func naming(_ prefix: String, layerTypes: [String]? = nil) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "conv.", "operator_norm."], mlp: ["feed_forward.", "ffn_norm."],
            layerCountKeys: ["num_hidden_layers"], layerTypes: layerTypes)
    }

    /// The naming with the resolved layer types, which a block-drop export
    /// spells out where config.json leaves them to `full_attn_idxs`.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes)
    }

    /// Layer `index`'s token mixer: Lfm2Attention (q/k/v and out_proj
    /// without biases, per-head q/k RMSNorms before rotary) or Lfm2ShortConv.
    func mixer(_ index: Int) throws -> TokenMixer {
        let p = "layers.\(index).", weights = parts.weights, eps = config.normEps
        if layerTypes[index] == Lfm2Configuration.conv {
            return .shortConvolution(try Self.shortConvolution(parts, layer: index, bias: config.convBias, kernel: config.convolutionKernel))
        }
        let headDim = parts.attentionLayout.headDim
        return .attention(try parts.attention(
            p + "self_attn.", bias: false, outputName: "out_proj", rotary: rotary,
            queryKeyNorm: .perHead(
                query: try weights.rmsNorm(p + "self_attn.q_layernorm", size: headDim, eps: eps),
                key: try weights.rmsNorm(p + "self_attn.k_layernorm", size: headDim, eps: eps))))
    }

    /// Layer `index`'s Lfm2ShortConv (LFM3's alike): in_proj to B | C | x,
    /// `kernel` causal depthwise taps over B · x, C times that, out_proj.
    static func shortConvolution(_ parts: DecoderParts, layer index: Int, bias: Bool, kernel: Int) throws -> ShortConvolution {
        let p = "layers.\(index).conv.", weights = parts.weights, d = parts.dimensions.hiddenSize
        return ShortConvolution(
            projection: try weights.linear(p + "in_proj", in: d, out: 3 * d, bias: bias),
            taps: try weights.floats(p + "conv.weight", [d, 1, kernel]),
            tapBias: bias ? try weights.floats(p + "conv.bias", [d]) : nil,
            output: try weights.linear(p + "out_proj", in: d, out: d, bias: bias))
    }

    /// Block `index`: RMSNorms before each branch (`operator_norm`,
    /// `ffn_norm`), the token mixer, then `feedForward`.
    func block(_ index: Int, drops: DropPlan, feedForward: () throws -> FeedForward) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: drops, eps: config.normEps, norms: ("operator_norm", "ffn_norm"), mixer: { try mixer(index) },
            feedForward: feedForward)
    }

    /// Lfm2MLP: w2(silu(w1 x) · w3 x), no biases.
    func swiGLU(_ index: Int, inner: Int) throws -> FeedForward {
        try parts.weights.gatedMLP(
            "layers.\(index).feed_forward.", hidden: parts.dimensions.hiddenSize, inner: inner, activation: .silu,
            names: ("w1", "w3", "w2"))
    }

    /// The final RMSNorm, which the model names `embedding_norm`, and the head.
    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("embedding_norm", size: parts.dimensions.hiddenSize, eps: config.normEps))
    }
}

/// The width rule of Lfm2MLP and the keys it reads.
struct Lfm2FeedForwardWidth: Decodable {
    /// `block_ff_dim`, which Lfm2Config reads over `intermediate_size`.
    var blockFFDim: Int?
    var autoAdjust: Bool
    /// `block_ffn_dim_multiplier`; the rounding to `block_multiple_of` comes with it.
    var multiplier: Double?
    var multipleOf: Int

    enum CodingKeys: String, CodingKey {
        case blockFFDim = "block_ff_dim"
        case autoAdjust = "block_auto_adjust_ff_dim"
        case multiplier = "block_ffn_dim_multiplier"
        case multipleOf = "block_multiple_of"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if c.contains(.blockFFDim), try c.decodeNil(forKey: .blockFFDim) {
            throw DecodingError.dataCorruptedError(
                forKey: .blockFFDim, in: c, debugDescription: "is null: transformers reads it as the MLP width (intermediate_size)")
        }
        blockFFDim = try c.decodeIfPresent(Int.self, forKey: .blockFFDim)
        autoAdjust = try c.decodeIfPresent(Bool.self, forKey: .autoAdjust) ?? true
        multiplier = c.contains(.multiplier) ? try c.decodeIfPresent(Double.self, forKey: .multiplier) : 1.0
        multipleOf = try c.decodeIfPresent(Int.self, forKey: .multipleOf) ?? 256
        let (blockFFDim, multiplier) = (blockFFDim, multiplier)
        try ConfigRules.decodingChecks {
            try ConfigRules.countIfPresent(blockFFDim, "block_ff_dim")
            if let multiplier, !multiplier.isFinite || multiplier <= 0 {
                throw InvalidConfigValue(key: "block_ffn_dim_multiplier", problem: "must be a finite number above 0, got \(multiplier)")
            }
        }
    }

    /// The MLP width Lfm2MLP builds from `intermediate_size` (or
    /// `block_ff_dim`): with `block_auto_adjust_ff_dim`, int(2 · width / 3),
    /// then, with a multiplier, int(multiplier · that) rounded up to a
    /// multiple of `block_multiple_of`.
    func width(intermediateSize: Int) throws -> Int {
        let base = blockFFDim ?? intermediateSize
        let baseKey = blockFFDim == nil ? "intermediate_size" : "block_ff_dim"
        guard autoAdjust else { return base }
        var width = Int(2 * Double(base) / 3)
        guard let multiplier else {
            if width < 1 { throw InvalidConfigValue(key: baseKey, problem: "leaves an MLP of width int(2 × \(base) / 3) = \(width)") }
            return width
        }
        let scaled = multiplier * Double(width)
        guard scaled < 0x1p62 else {
            throw InvalidConfigValue(key: "block_ffn_dim_multiplier", problem: "is too large: \(multiplier) × \(width) does not fit in 64 bits")
        }
        width = Int(scaled)
        try ConfigRules.count(multipleOf, "block_multiple_of")
        guard !width.addingReportingOverflow(multipleOf).overflow,
              case let (rounded, false) = multipleOf.multipliedReportingOverflow(by: (width + multipleOf - 1) / multipleOf)
        else {
            throw InvalidConfigValue(key: "block_multiple_of", problem: "is too large: \(multipleOf) rounds the MLP width beyond 64 bits")
        }
        if rounded < 1 {
            throw InvalidConfigValue(
                key: "block_ffn_dim_multiplier",
                problem: "leaves an MLP of width 0: int(\(multiplier) × int(2 × \(baseKey) \(base) / 3)) rounded up to block_multiple_of \(multipleOf)")
        }
        return rounded
    }
}

/// Liquid AI's LFM2 (LFM2-350M, -700M, -1.2B, -2.6B), `lfm2`
/// (Lfm2ForCausalLM, weights under `model.`): each layer's token mixer is
/// a gated short convolution (`conv` in `layer_types`) or GQA attention
/// with per-head q/k RMSNorms (`full_attention`), every layer with a SwiGLU
/// MLP whose width follows `block_auto_adjust_ff_dim`; RMSNorms before each
/// branch and after the last layer (`embedding_norm`); tied by default.
struct Lfm2Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let layers: Lfm2Layers
    /// The MLP width, by Lfm2MLP's rule.
    let feedForwardWidth: Int

    init(_ checkpoint: Checkpoint) throws {
        // Also LFM2-VL's language model (`Llava`), whose config class decides the tying.
        var placement = try TextModelPlacement.topLevelOrWrapped(checkpoint)
        if placement.section == .topLevel { placement.tiedEmbeddings = try Lfm2Layers.tiedEmbeddings(checkpoint) }
        parts = try DecoderParts(
            checkpoint, placement: placement, naming: { Lfm2Layers.naming($0) }, finalNorm: "embedding_norm")
        layers = try Lfm2Layers(parts, fullAttentionRule: true)
        let rule = try parts.config(Lfm2FeedForwardWidth.self)
        let d = parts.dimensions
        var width = 0
        try ConfigRules.checks(path: parts.configPath) {
            width = try rule.width(intermediateSize: d.intermediateSize)
            _ = try ConfigRules.product([(width, "intermediate_size"), (d.hiddenSize, "hidden_size"), (2, "w1 and w3")])
        }
        feedForwardWidth = width
        if let first = (0..<d.numHiddenLayers).first(where: { !parts.configuredDrops.dropsMLP($0) }) {
            try parts.weights.confirmShape(
                "layers.\(first).feed_forward.w1.weight", [width, d.hiddenSize],
                keys: "\(rule.blockFFDim == nil ? "intermediate_size" : "block_ff_dim") by block_auto_adjust_ff_dim, "
                    + "block_ffn_dim_multiplier and block_multiple_of (width \(width)), hidden_size",
                configPath: parts.configPath)
        }
    }

    var layerNaming: LayerNaming { layers.layerNaming }

    func head() throws -> OutputHead { try layers.head() }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try layers.block(index, drops: plan.union(configuredDrops)) { try layers.swiGLU(index, inner: feedForwardWidth) }
    }
}

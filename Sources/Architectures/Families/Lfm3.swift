import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `lfm3`, with Lfm3Config's defaults.
struct Lfm3Configuration: Decodable {
    /// The config class's defaults of the keys its sizes differ in from what
    /// droptrace assumes (head_dim 128 as a field, not hidden / heads).
    static let classDefaults: [String: ConfigDefault] = ["head_dim": 128]
    /// `Lfm3Config.__post_init__`'s rope parameters when config.json has none.
    static let defaultRope: [String: Gemma4Rope] = [
        AttentionLayerType.sliding: Gemma4Rope(proportional: false, theta: 10_000),
        AttentionLayerType.full: Gemma4Rope(proportional: true, theta: 1_000_000, partialRotaryFactor: 0.5),
    ]

    var normEps: Double
    var convBias: Bool
    var convolutionKernel: Int
    var layerTypes: [String]?
    /// As written: absent is 256, `null` none.
    var slidingWindow: Int?
    var useSandwichNorm: Bool
    var useAttentionGate: Bool
    var attentionBias: Bool

    enum CodingKeys: String, CodingKey {
        case normEps = "norm_eps"
        case convBias = "conv_bias"
        case convolutionKernel = "conv_L_cache"
        case layerTypes = "layer_types"
        case slidingWindow = "sliding_window"
        case useSandwichNorm = "use_sandwich_norm"
        case useAttentionGate = "use_attention_gate"
        case attentionBias = "attention_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        normEps = try c.decodeIfPresent(Double.self, forKey: .normEps) ?? 1e-5
        convBias = try c.decodeIfPresent(Bool.self, forKey: .convBias) ?? false
        convolutionKernel = try c.decodeIfPresent(Int.self, forKey: .convolutionKernel) ?? 7
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : 256
        useSandwichNorm = try c.decodeIfPresent(Bool.self, forKey: .useSandwichNorm) ?? true
        useAttentionGate = try c.decodeIfPresent(Bool.self, forKey: .useAttentionGate) ?? true
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        let (normEps, convolutionKernel) = (normEps, convolutionKernel)
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(normEps, "norm_eps")
            try ConfigRules.count(convolutionKernel, "conv_L_cache")
        }
    }

    /// Lfm3Config's rule when `layer_types` is absent: layer i attends fully
    /// when i % 4 == 2, within the window when i % 4 == 0 (but layer 0), and
    /// is a short convolution otherwise.
    static func defaultLayerType(_ i: Int) -> String {
        i % 4 == 2 ? AttentionLayerType.full : i % 4 == 0 && i > 0 ? AttentionLayerType.sliding : Lfm2Configuration.conv
    }
}

/// LFM3 (Liquid AI, transformers' models/lfm3/): LFM2's hybrid of short
/// convolutions and grouped-query attention, with
/// - sliding-window attention layers besides the full ones, by
///   `layer_types` (`Lfm3Configuration.defaultLayerType`; window
///   `sliding_window`, 256), each attention type rotating by its own
///   `rope_parameters` entry (by default sliding layers "default" at 1e4,
///   full layers "proportional" rotating half their pairs at 1e6; an entry
///   without `rope_theta` takes the top-level one, else 1e6);
/// - sandwich norms (`use_sandwich_norm`, on unless given): each branch
///   ends at its own RMSNorm (`post_operator_norm`, `post_ffn_norm`);
/// - a per-head output gate (`use_attention_gate`): each head's output
///   times sigmoid(`g_proj` x), saved as `gate_proj`;
/// - q/k RMSNorms per head (`q_norm`, `k_norm`) and `o_proj`; SwiGLU MLPs of
///   `intermediate_size` (`w1`, `w3`, `w2`); the final norm `embedding_norm`;
///   tied by default.
struct Lfm3Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Lfm3Configuration
    let layerTypes: [String]
    let rotaries: [String: RotaryEmbedding]

    init(_ checkpoint: Checkpoint) throws {
        // Also LFM3-VL's language model (`Llava`).
        let placement = try TextModelPlacement.topLevelOrWrapped(checkpoint, defaults: Lfm3Configuration.classDefaults)
        parts = try DecoderParts(checkpoint, placement: placement, naming: Self.naming)
        let config = try parts.config(Lfm3Configuration.self)
        self.config = config
        let layers = parts.dimensions.numHiddenLayers
        let types = config.layerTypes ?? (0..<layers).map(Lfm3Configuration.defaultLayerType)
        layerTypes = types
        let parts = parts, drops = parts.configuredDrops
        try parts.checks {
            if let other = types.first(where: { ![AttentionLayerType.full, AttentionLayerType.sliding, Lfm2Configuration.conv].contains($0) }) {
                throw InvalidConfigValue(
                    key: "layer_types", problem: "names \"\(other.forErrorMessage)\": the layers are conv, sliding_attention or full_attention")
            }
            if types.contains(AttentionLayerType.sliding), config.slidingWindow == nil {
                throw InvalidConfigValue(key: "sliding_window", problem: "is null, but layer_types has sliding_attention layers")
            }
        }
        try Lfm2Layers.confirmMixers(parts, types: types, kernel: config.convolutionKernel, typeKey: "layer_types")
        let attentionLayers = (0..<layers).filter { types[$0] != Lfm2Configuration.conv }
        try parts.confirmAttentionProjections(layers: attentionLayers)
        let headDim = attentionLayers.contains { !drops.dropsAttention($0) } ? parts.dimensions.resolvedHeadDim : 0
        let ropes = try Self.ropeParameters(parts, types: Set(attentionLayers.map { types[$0] }))
        rotaries = ropes.mapValues { $0.embedding(headDim: headDim) }
    }

    /// Each attention type's rotation from `rope_parameters` as Lfm3Config
    /// completes it (`Gemma4Rope.parameters`: one object per type, "default"
    /// or "proportional"), a missing `rope_theta` taken from the top level,
    /// else 1e6.
    /// - Throws: `DroptraceError` naming config.json for a legacy
    ///   `rope_scaling`, which Lfm3Config turns into one flat set of rope
    ///   parameters its model then cannot look its layer types up in (KeyError).
    private static func ropeParameters(_ parts: DecoderParts, types: Set<String>) throws -> [String: Gemma4Rope] {
        var object = try parts.checkpoint.configObject(parts.section)
        if let scaling = object["rope_scaling"], !(scaling is NSNull) {
            throw DroptraceError(
                "\"\(parts.section.qualified("rope_scaling"))\" is set: Lfm3Config reads it as one set of rope parameters for every "
                    + "layer type, which its model cannot run; give rope_parameters per layer type instead",
                path: parts.configPath)
        }
        if var given = object["rope_parameters"] as? [String: Any] {
            let theta = object["rope_theta"] ?? 1_000_000.0
            for (type, entry) in given {
                guard var entry = entry as? [String: Any], entry["rope_theta"] == nil else { continue }
                entry["rope_theta"] = theta
                given[type] = entry
            }
            object["rope_parameters"] = given
        }
        let keys = try parts.checkpoint.decodeConfig(Gemma4LayerKeys.self, object: object, under: parts.section.name)
        return try Gemma4Rope.parameters(
            keys.rope, layerTypes: types, keyPrefix: parts.section.qualified(""), configPath: parts.configPath,
            defaults: Lfm3Configuration.defaultRope)
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "conv.", "operator_norm.", "post_operator_norm."],
            mlp: ["feed_forward.", "ffn_norm.", "post_ffn_norm."], layerCountKeys: ["num_hidden_layers"])
    }

    /// Exports without some blocks spell out the kept layers' types.
    var layerNaming: LayerNaming { parts.naming(spellingOut: layerTypes) }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("embedding_norm", size: hiddenSize, eps: config.normEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.normEps, norms: ("operator_norm", "ffn_norm"),
            outputNorms: config.useSandwichNorm ? ("post_operator_norm", "post_ffn_norm") : nil,
            mixer: { try mixer(index) },
            feedForward: {
                try parts.weights.gatedMLP(
                    "layers.\(index).feed_forward.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize, activation: .silu,
                    names: ("w1", "w3", "w2"))
            })
    }

    /// Layer `index`'s token mixer: Lfm3Attention or Lfm2's short convolution.
    private func mixer(_ index: Int) throws -> TokenMixer {
        let type = layerTypes[index]
        guard type != Lfm2Configuration.conv else {
            return .shortConvolution(try Lfm2Layers.shortConvolution(parts, layer: index, bias: config.convBias, kernel: config.convolutionKernel))
        }
        let p = "layers.\(index).self_attn.", weights = parts.weights, layout = parts.attentionLayout, eps = config.normEps
        return .attention(try parts.attention(
            p, bias: config.attentionBias, rotary: rotaries[type]!,
            slidingWindow: type == AttentionLayerType.sliding ? config.slidingWindow : nil,
            queryKeyNorm: .perHead(
                query: try weights.rmsNorm(p + "q_norm", size: layout.headDim, eps: eps),
                key: try weights.rmsNorm(p + "k_norm", size: layout.headDim, eps: eps)),
            outputGate: config.useAttentionGate ? try headGate(p) : nil))
    }

    /// `g_proj` [heads, hidden] (saved as `gate_proj`) as a gate of every
    /// output column (`Weights.perHeadGate`).
    private func headGate(_ prefix: String) throws -> Linear {
        let weights = parts.weights
        let name = try weights.storedModule(prefix, saved: "gate_proj", renamed: "g_proj")
        return try weights.perHeadGate(prefix + name, layout: parts.attentionLayout, hidden: hiddenSize)
    }
}

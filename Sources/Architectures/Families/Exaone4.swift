import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json keys of `exaone4` beyond OLMo-2's (Exaone4Config).
struct Exaone4Configuration: Decodable {
    /// transformers' default when config.json has no `sliding_window` key
    /// (an explicit null means no window).
    static let defaultSlidingWindow = 4096

    var slidingWindow: Int?
    /// `sliding_window_pattern` when it is an integer (Exaone4Config's
    /// default 4); nil for null or a string ("LLLG"), which its layer-type
    /// rule cannot divide by.
    var pattern: Int?
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case slidingWindow = "sliding_window"
        case slidingWindowPattern = "sliding_window_pattern"
        case layerTypes = "layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // DecoderDimensions checks the window is at least 1 and layer_types' length.
        slidingWindow = c.contains(.slidingWindow)
            ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : Self.defaultSlidingWindow
        pattern = AttentionLayerType.pattern(in: c, key: .slidingWindowPattern, fallback: 4)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
    }

    /// Each layer's type: `layer_types`, else Exaone4Config's rule — layer i
    /// slides unless (i + 1) is a multiple of the pattern, every layer
    /// attends fully without a window (the pattern is then 0, and the rule
    /// divides by it: transformers fails, so such a config is refused).
    func resolvedLayerTypes(layers: Int, configPath: String) throws -> [String] {
        if let layerTypes { return layerTypes }
        guard slidingWindow != nil else {
            throw DroptraceError(
                "sliding_window is null and layer_types is not given: Exaone4Config derives layer_types by dividing by "
                    + "a sliding_window_pattern of 0 then, which fails; give layer_types", path: configPath)
        }
        guard let types = AttentionLayerType.everyNthFull(layers: layers, pattern: pattern) else {
            throw DroptraceError(
                "sliding_window_pattern is not a non-zero integer and layer_types is not given: Exaone4Config derives "
                    + "layer_types as (i + 1) % sliding_window_pattern, which fails; give layer_types", path: configPath)
        }
        return types
    }
}

/// EXAONE 4.0: OLMo-2's post-norm block (an RMSNorm at the end of each
/// branch, nothing before it) with per-head q/k RMSNorms over head_dim, and
/// hybrid attention: layers `layer_types` marks `sliding_attention` (three
/// of four by default) rotate and attend within the window; the others
/// attend fully without positions (NoPE) — unless there is no window
/// (`sliding_window: null`, EXAONE-4.0-1.2B), when every layer rotates.
struct Exaone4Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Olmo2Configuration
    let slidingWindow: Int?
    let layerTypes: [String]
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint) { Olmo2Model.naming($0) }
        var config = try parts.config(Olmo2Configuration.self)
        // Exaone4Config has no attention_bias: its projections never have biases.
        config.attentionBias = nil
        self.config = config
        let own = try parts.config(Exaone4Configuration.self)
        slidingWindow = own.slidingWindow
        let types = try own.resolvedLayerTypes(layers: parts.dimensions.numHiddenLayers, configPath: parts.configPath)
        layerTypes = try parts.layerTypes(types, slidingWindow: own.slidingWindow) { _ in AttentionLayerType.full }
        rotary = try parts.rotary()
    }

    /// Exports without some blocks spell out the kept layers' types, so
    /// renumbering cannot move a window (or positions) to another layer.
    var layerNaming: LayerNaming { Olmo2Model.naming(parts.weights.prefix, layerTypes: layerTypes) }

    func head() throws -> OutputHead { try Olmo2Model.head(parts, config) }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        // parts.layerTypes admits only the two types.
        let slides = layerTypes[index] == AttentionLayerType.sliding
        return try Olmo2Model.block(
            index, skipping: plan, parts: parts, config: config, rotary: slidingWindow == nil || slides ? rotary : nil,
            slidingWindow: slides ? slidingWindow : nil, perHeadQueryKeyNorm: true)
    }
}

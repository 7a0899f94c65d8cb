import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json keys `olmo3` adds to OLMo-2's.
struct Olmo3Configuration: Decodable {
    /// transformers' default when config.json has no `sliding_window` key
    /// (an explicit null means no window).
    static let defaultSlidingWindow = 4096
    /// transformers' rotary base of both layer types when the config names none.
    static let defaultTheta = 500_000.0

    var slidingWindow: Int?
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // DecoderDimensions checks the window is at least 1 and layer_types' length.
        slidingWindow = c.contains(.slidingWindow)
            ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : Self.defaultSlidingWindow
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
    }

    /// transformers' rule when config.json has no `layer_types`: every
    /// fourth layer attends fully, the others slide.
    static func defaultLayerType(_ layer: Int) -> String {
        (layer + 1) % 4 == 0 ? AttentionLayerType.full : AttentionLayerType.sliding
    }
}

/// OLMo-3: OLMo-2's post-norm block (q/k RMSNorm across heads, norms at the
/// end of each branch), with sliding-window attention on the layers
/// `layer_types` marks `sliding_attention` (by default three of every four)
/// and a rotary embedding per layer type (`rope_parameters.full_attention` /
/// `.sliding_attention`).
struct Olmo3Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Olmo2Configuration
    let slidingWindow: Int?
    let layerTypes: [String]
    /// The rotary embedding of each layer type.
    let rotary: (full: RotaryEmbedding, sliding: RotaryEmbedding)

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint) { Olmo2Model.naming($0) }
        config = try parts.config(Olmo2Configuration.self)
        let own = try parts.config(Olmo3Configuration.self)
        slidingWindow = own.slidingWindow
        try parts.requireWindow(own.slidingWindow, builtBy: "Olmo3Model")
        layerTypes = try parts.layerTypes(own.layerTypes, slidingWindow: own.slidingWindow, default: Olmo3Configuration.defaultLayerType)
        rotary = try parts.rotaryByLayerType(defaultTheta: Olmo3Configuration.defaultTheta)
    }

    /// Exports without some blocks spell out the kept layers' types, so
    /// renumbering cannot move a window to another layer.
    var layerNaming: LayerNaming { Olmo2Model.naming(parts.weights.prefix, layerTypes: layerTypes) }

    func head() throws -> OutputHead { try Olmo2Model.head(parts, config) }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        // parts.layerTypes admits only the two types.
        let slides = layerTypes[index] == AttentionLayerType.sliding
        return try Olmo2Model.block(
            index, skipping: plan, parts: parts, config: config, rotary: slides ? rotary.sliding : rotary.full,
            slidingWindow: slides ? slidingWindow : nil)
    }
}

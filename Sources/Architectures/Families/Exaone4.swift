import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

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
        // Also EXAONE 4.5's language model (`Llava`).
        parts = try DecoderParts(checkpoint, placement: try .topLevelOrWrapped(checkpoint)) { Olmo2Model.naming($0) }
        var config = try parts.config(Olmo2Configuration.self)
        // Exaone4Config has no attention_bias: its projections never have biases.
        config.attentionBias = nil
        self.config = config
        (slidingWindow, layerTypes) = try Self.hybridLayout(parts, configClass: "Exaone4Config")
        rotary = try parts.rotary()
    }

    /// Exports without some blocks spell out the kept layers' types, so
    /// renumbering cannot move a window (or positions) to another layer.
    var layerNaming: LayerNaming { parts.naming(spellingOut: layerTypes) }

    func head() throws -> OutputHead { try Olmo2Model.head(parts, config) }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        // hybridLayout admits only the two types.
        let slides = layerTypes[index] == AttentionLayerType.sliding
        return try Olmo2Model.block(
            index, skipping: plan, parts: parts, config: config, rotary: slidingWindow == nil || slides ? rotary : nil,
            slidingWindow: slides ? slidingWindow : nil, perHeadQueryKeyNorm: true)
    }

    /// The window and each layer's attention type as `configClass`
    /// (Exaone4Config, or ExaoneMoeConfig, which inherits its rule) resolves
    /// them: `layer_types`, else every `sliding_window_pattern`-th layer full.
    static func hybridLayout(_ parts: DecoderParts, configClass: String) throws -> (window: Int?, types: [String]) {
        let own = try parts.config(SlidingWindowPattern.self)
        // The config class sets the pattern to 0 without a window, and its rule then divides by it.
        if own.slidingWindow == nil, own.layerTypes == nil {
            throw DroptraceError(
                "sliding_window is null and layer_types is not given: \(configClass) derives layer_types by dividing by "
                    + "a sliding_window_pattern of 0 then, which fails; give layer_types", path: parts.configPath)
        }
        let types = try own.resolvedLayerTypes(
            layers: parts.dimensions.numHiddenLayers, configClass: configClass, section: parts.section, path: parts.configPath)
        return (own.slidingWindow, try parts.layerTypes(types, slidingWindow: own.slidingWindow) { _ in AttentionLayerType.full })
    }

    /// Layer `index`'s attention as EXAONE runs it: per-head q/k RMSNorms
    /// before rotary; sliding layers rotate and attend within the window,
    /// the others attend fully without positions — unless there is no
    /// window, when every layer rotates.
    static func attention(
        _ index: Int, parts: DecoderParts, config: Olmo2Configuration, rotary: RotaryEmbedding, layout: (window: Int?, types: [String])
    ) throws -> SelfAttention {
        let slides = layout.types[index] == AttentionLayerType.sliding
        return try Olmo2Model.attention(
            index, parts: parts, config: config, rotary: layout.window == nil || slides ? rotary : nil,
            slidingWindow: slides ? layout.window : nil, perHeadQueryKeyNorm: true)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json keys `smollm3` adds to Llama's.
struct SmolLM3Configuration: Decodable {
    /// transformers' rotary base when the config names none.
    static let defaultTheta = 2_000_000.0

    var noRopeLayers: [Int]?
    var noRopeLayerInterval: Int?
    var useSlidingWindow: Bool?
    var slidingWindow: Int?
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case noRopeLayers = "no_rope_layers"
        case noRopeLayerInterval = "no_rope_layer_interval"
        case useSlidingWindow = "use_sliding_window"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
    }

    /// Each layer's rotary flag as transformers resolves it: `no_rope_layers`
    /// (1: the layer rotates, 0: it is a NoPE layer), else every
    /// `no_rope_layer_interval`-th layer (default 4) is NoPE.
    ///
    /// - Throws: `InvalidConfigValue` for a flag other than 0 or 1, a list
    ///   that is not one flag per layer, or an interval below 1.
    func ropeFlags(layers: Int) throws -> [Int] {
        if let noRopeLayers {
            guard noRopeLayers.count == layers else {
                throw InvalidConfigValue(
                    key: "no_rope_layers", problem: "lists \(noRopeLayers.count) layers, but num_hidden_layers is \(layers)")
            }
            if let flag = noRopeLayers.first(where: { $0 != 0 && $0 != 1 }) {
                throw InvalidConfigValue(key: "no_rope_layers", problem: "holds \(flag); each entry must be 1 (rotary) or 0 (no rotary)")
            }
            return noRopeLayers
        }
        let interval = try ConfigRules.count(noRopeLayerInterval ?? 4, "no_rope_layer_interval")
        return (0..<layers).map { ($0 + 1) % interval == 0 ? 0 : 1 }
    }
}

/// SmolLM3: Llama's block, except that the layers `no_rope_layers` flags 0
/// (by default every fourth) attend without rotary embedding (NoPE), and
/// layers `layer_types` marks `sliding_attention` (by default, with
/// `use_sliding_window`, the NoPE ones) attend within a window.
struct SmolLM3Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let llama: LlamaModel
    let ropeFlags: [Int]
    /// The attention window of each layer.
    let windows: [Int?]
    /// The flags are spelled out only when the config derived them.
    let flagsAreDerived: Bool

    var parts: DecoderParts { llama.parts }

    init(_ checkpoint: Checkpoint) throws {
        llama = try LlamaModel(checkpoint, defaultTheta: SmolLM3Configuration.defaultTheta)
        let parts = llama.parts, configPath = parts.configPath
        let config = try parts.config(SmolLM3Configuration.self)
        let layers = parts.dimensions.numHiddenLayers
        var flags: [Int] = []
        try ConfigRules.checks(path: configPath) { flags = try config.ropeFlags(layers: layers) }
        ropeFlags = flags
        flagsAreDerived = config.noRopeLayers == nil
        let sliding = config.useSlidingWindow == true
        let window = config.slidingWindow
        let types = try parts.layerTypes(config.layerTypes, slidingWindow: window) { layer in
            sliding && window != nil && flags[layer] == 0 ? AttentionLayerType.sliding : AttentionLayerType.full
        }
        // A sliding_attention layer gets the sliding-window mask even without
        // use_sliding_window (which only reaches flash attention's own window
        // argument): transformers' eager and sdpa attention, and the hooked
        // pass droptrace matches, attend within the window.
        windows = types.map { $0 == AttentionLayerType.sliding ? window : nil }
    }

    var layerNaming: LayerNaming {
        var naming = llama.layerNaming
        naming.noRopeLayers = flagsAreDerived ? ropeFlags : nil
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: llama.config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try llama.block(index, skipping: plan, rotary: ropeFlags[index] == 1 ? llama.rotary : nil, slidingWindow: windows[index])
    }
}

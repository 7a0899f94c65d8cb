import CheckpointIO

/// Meta's Code World Model (transformers' models/cwm/: `CwmConfig`,
/// `CwmAttention`): Llama 3's block with every fourth layer, from layer 0,
/// attending fully and the others within `sliding_window` tokens, attention
/// without biases and `mlp_bias` on the MLP. `LlamaModel` runs it; these
/// are the config class's defaults, which differ from Llama's.
enum Cwm {
    /// The rotary base of rope parameters that name none.
    static let defaultTheta = 1_000_000.0

    /// `CwmConfig`'s window when config.json has no `sliding_window` (a null
    /// or 0 one fails its validation).
    static let defaultSlidingWindow = 8192

    /// `CwmConfig.__post_init__`'s rope parameters when config.json gives
    /// neither `rope_parameters` nor `rope_scaling`; a top-level
    /// `rope_theta` is then not read.
    static let defaultRopeParameters: [String: Any] = [
        "rope_type": "llama3", "rope_theta": defaultTheta, "factor": 16.0, "high_freq_factor": 4.0,
        "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
    ]

    /// `CwmConfig`'s `layer_types` when config.json has none: layer i
    /// attends fully when i is a multiple of 4, within the window otherwise.
    static func defaultLayerTypes(layers: Int) -> [String] {
        (0..<layers).map { $0 % 4 == 0 ? AttentionLayerType.full : AttentionLayerType.sliding }
    }
}

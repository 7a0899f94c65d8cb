import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `recurrent_gemma` (RecurrentGemmaConfig's keys and defaults).
struct RecurrentGemmaConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenActivation: String
    /// The recurrence's width; the hidden size when absent or null.
    var lruWidth: Int?
    /// The local attention's window (`attention_window_size`, alias `sliding_window`).
    var attentionWindowSize: Int
    var conv1dWidth: Int
    var logitsSoftCap: Double
    /// The temporal blocks' pattern, repeated over the layers.
    var blockTypes: [String]
    var attentionBias: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenActivation = "hidden_activation"
        case lruWidth = "lru_width"
        case attentionWindowSize = "attention_window_size"
        case conv1dWidth = "conv1d_width"
        case logitsSoftCap = "logits_soft_cap"
        case blockTypes = "block_types"
        case attentionBias = "attention_bias"
        /// Refused where written: RecurrentGemmaConfig cannot set it (`layers_block_type` is derived from `block_types`).
        case layerTypes = "layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if c.contains(.layerTypes) {
            throw DecodingError.dataCorruptedError(
                forKey: .layerTypes, in: c,
                debugDescription: "is set, which RecurrentGemmaConfig cannot set (its layer types follow block_types)")
        }
        if c.contains(.blockTypes), try c.decodeNil(forKey: .blockTypes) {
            throw DecodingError.dataCorruptedError(forKey: .blockTypes, in: c, debugDescription: "is null: RecurrentGemmaConfig needs the pattern's list")
        }
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenActivation = try c.decodeIfPresent(String.self, forKey: .hiddenActivation) ?? "gelu_pytorch_tanh"
        lruWidth = try c.decodeIfPresent(Int.self, forKey: .lruWidth)
        attentionWindowSize = try c.decodeIfPresent(Int.self, forKey: .attentionWindowSize) ?? 2048
        conv1dWidth = try c.decodeIfPresent(Int.self, forKey: .conv1dWidth) ?? 4
        logitsSoftCap = try c.decodeIfPresent(Double.self, forKey: .logitsSoftCap) ?? 30
        blockTypes = try c.decodeIfPresent([String].self, forKey: .blockTypes) ?? ["recurrent", "recurrent", "attention"]
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        let (eps, window, kernel, cap) = (rmsNormEps, attentionWindowSize, conv1dWidth, logitsSoftCap)
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(eps, "rms_norm_eps")
            try ConfigRules.count(window, "attention_window_size")
            try ConfigRules.count(kernel, "conv1d_width")
            try ConfigRules.positive(cap, "logits_soft_cap")
        }
    }

    static let recurrent = "recurrent"
}

/// RecurrentGemma (Google's RecurrentGemma-2B / 9B; transformers'
/// models/recurrent_gemma, "Griffin"): Gemma's (1 + w) RMSNorms before each
/// branch (`temporal_pre_norm`, `channel_pre_norm`) and embeddings × √hidden
/// (rounded to bfloat16, as the model's `normalizer` buffer holds it); each
/// layer's temporal block, its "attention" module, by `block_types`
/// repeated over the layers: Griffin's recurrent block
/// (`GriffinRecurrentBlock`) for "recurrent", any other entry local
/// attention (multi-query by `num_key_value_heads`, q/k/v biases by
/// `attention_bias`, `o_proj` always with one, a window of
/// `attention_window_size`, rotary on half of each head unless
/// `partial_rotary_factor` says otherwise); a GeGLU MLP (`mlp_block`) of
/// intermediate_size // 2 with biases; `final_norm`; logits soft-capped at
/// `logits_soft_cap`; head tied by default.
struct RecurrentGemmaModel: DecoderFamily {
    let parts: DecoderParts
    let config: RecurrentGemmaConfiguration
    let rotary: RotaryEmbedding
    /// Each layer's `block_types` entry.
    let blockTypes: [String]
    /// The recurrence's width: `lru_width`, else the hidden size.
    var lruWidth: Int { config.lruWidth ?? hiddenSize }

    init(_ checkpoint: Checkpoint) throws {
        // RecurrentGemmaConfig has no max_position_embeddings: the recurrence and the local attention run at any length.
        let unbounded = ConfigSection(overrides: ["max_position_embeddings": .integer(Self.positions)])
        let parts = try DecoderParts(checkpoint, section: unbounded, naming: Self.naming, finalNorm: "final_norm")
        let config = try parts.config(RecurrentGemmaConfiguration.self)
        (self.parts, self.config) = (parts, config)
        let layers = parts.dimensions.numHiddenLayers, pattern = config.blockTypes
        let lruWidth = config.lruWidth ?? parts.dimensions.hiddenSize
        try parts.checks {
            // RecurrentGemmaConfig repeats the pattern 100 times and takes the first num_hidden_layers.
            guard !pattern.isEmpty, layers <= 100 * pattern.count else {
                throw InvalidConfigValue(
                    key: "block_types", problem: "has \(pattern.count) entries, which 100 repeats cannot stretch over \(layers) layers (num_hidden_layers)")
            }
            try ConfigRules.count(lruWidth, "lru_width")
            guard lruWidth % parts.dimensions.numAttentionHeads == 0 else {
                throw InvalidConfigValue(
                    key: "lru_width", problem: "\(lruWidth) is not a multiple of num_attention_heads \(parts.dimensions.numAttentionHeads), the RG-LRU's gate blocks")
            }
            _ = try ConfigRules.product([(lruWidth, "lru_width"), (parts.dimensions.hiddenSize, "hidden_size"), (2, "linear_x and linear_y")])
            _ = try ConfigRules.product([(lruWidth, "lru_width"), (config.conv1dWidth, "conv1d_width")])
        }
        let blockTypes = (0..<layers).map { pattern[$0 % pattern.count] }
        self.blockTypes = blockTypes
        let attentionLayers = (0..<layers).filter { blockTypes[$0] != RecurrentGemmaConfiguration.recurrent }
        // A pattern that contradicts the weights names block_types.
        try parts.confirmMixerTypes(blockTypes, key: "block_types") {
            $0 == RecurrentGemmaConfiguration.recurrent
                ? ("temporal_block.linear_x", "temporal_block.q_proj") : ("temporal_block.q_proj", "temporal_block.linear_x")
        }
        try parts.confirmAttentionProjections(attention: "temporal_block.", layers: attentionLayers)
        let settings = try parts.ropeSettings()
        guard settings.type == "default" else {
            throw DroptraceError(
                "rope type \"\(settings.type.forErrorMessage)\": RecurrentGemmaRotaryEmbedding runs the default rotary embedding alone",
                path: parts.configPath)
        }
        rotary = try parts.rotary(
            partialRotary: .honoured(default: 0.5), confirmProjections: false, settings: settings)
    }

    /// The positions droptrace allows it (any a 32-bit count holds).
    static let positions = Int(Int32.max)

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["temporal_block.", "temporal_pre_norm."], mlp: ["mlp_block.", "channel_pre_norm."],
            layerCountKeys: ["num_hidden_layers"])
    }

    /// An export without some blocks spells out the kept layers' `block_types`.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.cycledLists["block_types"] = blockTypes
        return naming
    }

    /// The token embeddings × √hidden_size as a bfloat16 (RecurrentGemmaModel's `normalizer`).
    func embed(_ batch: TokenBatch) throws -> Matrix {
        try parts.embed(batch, multiplier: BFloat16.round(Float(Double(hiddenSize).squareRoot())))
    }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.offsetRMSNorm("final_norm", size: hiddenSize, eps: config.rmsNormEps), logitSoftcap: Float(config.logitsSoftCap))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights, d = hiddenSize
        let p = "layers.\(index).", activation = try parts.activation(config.hiddenActivation, key: "hidden_activation")
        func temporalBlock() throws -> TokenMixer {
            let t = p + "temporal_block."
            guard blockTypes[index] == RecurrentGemmaConfiguration.recurrent else {
                return .attention(try parts.attention(
                    t, bias: config.attentionBias, outputBias: true, rotary: rotary, slidingWindow: config.attentionWindowSize))
            }
            let width = lruWidth, heads = parts.dimensions.numAttentionHeads, block = width / heads, g = t + "rg_lru."
            return .griffinRecurrent(GriffinRecurrentBlock(
                projection: try weights.stackedLinear([t + "linear_y", t + "linear_x"], in: d, outs: [width, width], bias: true),
                taps: try weights.floats(t + "conv_1d.weight", [width, 1, config.conv1dWidth]),
                tapBias: try weights.floats(t + "conv_1d.bias", [width]), heads: heads,
                gateWeights: (
                    try weights.floats(g + "input_gate_weight", [heads, block, block]),
                    try weights.floats(g + "recurrent_gate_weight", [heads, block, block])),
                gateBiases: (try weights.floats(g + "input_gate_bias", [heads, block]), try weights.floats(g + "recurrent_gate_bias", [heads, block])),
                recurrentParameter: try weights.floats(g + "recurrent_param", [width]), activation: activation,
                output: try weights.linear(t + "linear_out", in: width, out: d, bias: true)))
        }
        return try parts.preNormBlock(
            index, drops: drops, eps: config.rmsNormEps, norms: ("temporal_pre_norm", "channel_pre_norm"), normKind: .offsetRMS,
            mixer: temporalBlock,
            feedForward: {
                try weights.gatedMLP(p + "mlp_block.", hidden: d, inner: parts.dimensions.intermediateSize / 2, activation: activation, bias: true)
            })
    }
}

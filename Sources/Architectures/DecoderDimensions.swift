import CheckpointIO
import DroptraceSupport

/// The config.json sizes every rotary decoder family (Llama, Mistral, Qwen2,
/// OLMo, OLMo-2, Mixtral, Gemma, Gemma-2) names alike; each family decodes
/// only its own extra keys besides these.
///
/// Decoding refuses sizes that cannot describe a model (`ConfigRules`):
/// counts below 1, key/value heads not dividing the query heads, a head
/// width of 0, weights whose element count overflows, a non-positive
/// `rms_norm_eps`, a `sliding_window` below 1, a `layer_types` list whose
/// length is not the layer count. `DecoderParts` then checks the sizes against the tensors.
struct DecoderDimensions: Decodable {
    var hiddenSize: Int
    var numHiddenLayers: Int
    var numAttentionHeads: Int
    var numKeyValueHeads: Int?
    var headDim: Int?
    var intermediateSize: Int
    var vocabSize: Int
    var maxPositionEmbeddings: Int
    var tieWordEmbeddings: Bool?

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case intermediateSize = "intermediate_size"
        case vocabSize = "vocab_size"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case rmsNormEps = "rms_norm_eps"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case useSlidingWindow = "use_sliding_window"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads)
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        maxPositionEmbeddings = try c.decode(Int.self, forKey: .maxPositionEmbeddings)
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings)
        // Each family decodes rms_norm_eps and sliding_window itself (where
        // it has them); the checks are shared.
        let eps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps)
        let window = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        // The config classes that have `use_sliding_window` (Qwen2, Qwen2-MoE,
        // Qwen3, SmolLM3) ignore the window when it is false, and
        // Qwen2MoeConfig then saves it as 0: such a window is not checked.
        // (Its kind is checked with the family's other keys.)
        let windowSwitchedOff = (try? c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow)) == false
        let layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        try ConfigRules.decodingChecks {
            try ConfigRules.count(hiddenSize, "hidden_size")
            try ConfigRules.count(numHiddenLayers, "num_hidden_layers")
            guard numHiddenLayers <= ModelLimits.maxLayers else {
                throw InvalidConfigValue(
                    key: "num_hidden_layers", problem: "is \(numHiddenLayers); droptrace reads models of up to \(ModelLimits.maxLayers) layers")
            }
            try ConfigRules.count(numAttentionHeads, "num_attention_heads")
            try ConfigRules.countIfPresent(numKeyValueHeads, "num_key_value_heads")
            try ConfigRules.countIfPresent(headDim, "head_dim")
            try ConfigRules.count(intermediateSize, "intermediate_size")
            try ConfigRules.count(vocabSize, "vocab_size")
            try ConfigRules.count(maxPositionEmbeddings, "max_position_embeddings")
            try ConfigRules.divides(kvHeads, "num_key_value_heads", numAttentionHeads, "num_attention_heads")
            if headDim == nil, hiddenSize < numAttentionHeads {
                throw InvalidConfigValue(
                    key: "num_attention_heads",
                    problem: "leaves heads of width 0: \(numAttentionHeads) heads in hidden_size \(hiddenSize)")
            }
            let headKey = headDim == nil ? "hidden_size" : "head_dim"
            try ConfigRules.product([(resolvedHeadDim, headKey), (numAttentionHeads, "num_attention_heads"), (hiddenSize, "hidden_size")])
            try ConfigRules.product([(vocabSize, "vocab_size"), (hiddenSize, "hidden_size")])
            try ConfigRules.product([(intermediateSize, "intermediate_size"), (hiddenSize, "hidden_size"), (2, "gate and up")])
            try ConfigRules.positiveIfPresent(eps, "rms_norm_eps")
            if !windowSwitchedOff { try ConfigRules.countIfPresent(window, "sliding_window") }
            // One attention type per layer, as transformers validates it.
            if let layerTypes, layerTypes.count != numHiddenLayers {
                throw InvalidConfigValue(
                    key: "layer_types", problem: "lists \(layerTypes.count) layers, but num_hidden_layers is \(numHiddenLayers)")
            }
        }
    }

    var kvHeads: Int { numKeyValueHeads ?? numAttentionHeads }
    var resolvedHeadDim: Int { headDim ?? hiddenSize / numAttentionHeads }

    /// Whether the LM head is the token embedding, with the family's default
    /// when config.json is silent (transformers: true for Gemma and Gemma-2,
    /// false for Llama, Mistral, Qwen2, Mixtral, OLMo and OLMo-2).
    func tiedEmbeddings(default familyDefault: Bool) -> Bool { tieWordEmbeddings ?? familyDefault }
}

extension ConfigSection {
    /// The top level of a config class that stores `max_position_embeddings`
    /// as `model_max_length` (its attribute map reads one as the other:
    /// BailingHybridConfig, KimiLinearConfig): the stored value stands for it.
    static func maxPositionsStoredAsModelMaxLength(_ checkpoint: Checkpoint) throws -> ConfigSection {
        struct Stored: Decodable {
            var modelMaxLength: Int?
            enum CodingKeys: String, CodingKey { case modelMaxLength = "model_max_length" }
        }
        guard let length = try checkpoint.decodeConfig(Stored.self).modelMaxLength else { return .topLevel }
        return ConfigSection(overrides: ["max_position_embeddings": .integer(length)])
    }
}

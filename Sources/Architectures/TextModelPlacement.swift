import CheckpointIO
import DroptraceSupport

/// Where a checkpoint keeps the language model a family reads: config.json's
/// top level with weights under `model.` (or none) and the head `lm_head`,
/// or the text part of a multimodal wrapper (`wrapped`): sizes and the
/// family's keys under `text_config`, weights under the wrapper's language
/// model, the head `language_model.lm_head` (or `lm_head`). Exports edit the
/// section the placement names (`LayerNaming.configSection`). The vision
/// tower and projector are never read: scoring runs on text.
struct TextModelPlacement {
    var section = ConfigSection.topLevel
    /// The names transformers reads as the head (`DecoderParts.headNames`).
    var headNames = ["lm_head"]
    var prefixes = ["model.", ""]
    /// The head's tying when config.json's top level decides it over the
    /// section (`mistral3`); nil: the section's `tie_word_embeddings`, else
    /// the config class's default (`ConfigValueKinds.tiesByDefault`).
    var tiedEmbeddings: Bool?
    /// The sizes of the wrapper's `lm_head` where its class takes them from
    /// its own top-level keys (Ovis2ForConditionalGeneration's); nil: the text model's.
    var headSizes: (hidden: Int, vocabulary: Int)?
    /// Tensors outside the language model that the wrapper's model sizes
    /// [rows, `headSizes.hidden`] (Ovis2's visual embedding table), checked
    /// as transformers does on loading, though droptrace never reads them.
    var widthTensors: [String] = []
    /// The rows of a stored head where the config class sizes `lm_head`
    /// apart from the embedding (Apertus 1.5's `output_vocab_size`); nil: vocab_size.
    var headRows: Int?
    /// The vision tower's output width where the config class requires it
    /// to be the text model's hidden_size (LlavaOnevision15Config's
    /// `vision_config.out_hidden_size`); nil: no such rule.
    var visionOutputWidth: Int?
    /// Token ids the wrapper's model embeds as token 0 (Kimi K2.5's image and
    /// video tokens, `Kimi_K25Model.forward`), so that text holding them
    /// scores as in transformers.
    var tokensEmbeddedAsRowZero: Set<Int> = []

    /// A language model at config.json's top level.
    static let topLevel = TextModelPlacement()

    /// The language model of a multimodal wrapper: its keys under
    /// `text_config`, which takes `textDefaults` for the keys it omits (the
    /// text config class's defaults), its weights under the first of
    /// `prefixes` that holds them (`model.language_model.` as transformers 5
    /// names the modules of most wrappers, `language_model.model.` as 4.x
    /// saved them and as Llama 4's wrapper still does), its head `lm_head`,
    /// or `language_model.lm_head` where the weights may have the 4.x names
    /// (transformers renames that head with them; elsewhere it is a tensor
    /// transformers does not read). Under `model.language_model.` the weights
    /// may also carry the causal LM's own `model.` (`model.language_model.model.`,
    /// `language_model.model.model.`), which transformers' legacy conversion renames away.
    static func wrapped(
        textDefaults: [String: ConfigDefault], prefixes: [String] = ["model.language_model.", "language_model.model."],
        tiedEmbeddings: Bool? = nil
    ) -> TextModelPlacement {
        TextModelPlacement(
            section: ConfigSection("text_config", defaults: textDefaults),
            headNames: prefixes.contains("language_model.model.") ? legacyHeadNames : ["lm_head"],
            prefixes: withLegacyNames(prefixes), tiedEmbeddings: tiedEmbeddings)
    }

    /// A wrapper's head as transformers 5 names it and as 4.x saved it, which it renames onto `lm_head`.
    static let legacyHeadNames = ["lm_head", "language_model.lm_head"]

    /// `prefixes` and, where they include `model.language_model.`, the names
    /// transformers' legacy conversion renames onto it: a language model saved
    /// inside its causal LM, `model.language_model.model.` and `language_model.model.model.`.
    static func withLegacyNames(_ prefixes: [String]) -> [String] {
        prefixes + (prefixes.contains("model.language_model.") ? ["model.language_model.model.", "language_model.model.model."] : [])
    }
}

extension TextModelPlacement {
    /// The language model of a wrapper whose config class builds its
    /// `text_config` as a class of its own (`<model_type>.text_config` in
    /// `ConfigValueKinds`, whose defaults the keys it omits take, and
    /// `defaults`), weights under the first of `prefixes` that holds them,
    /// head `lm_head` tied by the top-level `tie_word_embeddings` (default
    /// false) or, when `textTiesToo` (Qwen2VLConfig, Glm4vConfig), also by the text config's.
    static func ownTextConfig(
        _ checkpoint: Checkpoint, defaults: [String: ConfigDefault] = [:], prefixes: [String] = ["model.language_model."],
        textTiesToo: Bool
    ) throws -> TextModelPlacement {
        let keys = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
        let textDefaults = ConfigValueKinds.omittedDefaultValues(of: checkpoint.modelType + ".text_config")
            .merging(defaults, uniquingKeysWith: { $1 })
        let tied = keys.tieWordEmbeddings ?? false || (textTiesToo && keys.textConfig?.tieWordEmbeddings == true)
        return .wrapped(textDefaults: textDefaults, prefixes: prefixes, tiedEmbeddings: tied)
    }

    /// The language model of a wrapper whose config class moves the text
    /// keys of a config without `text_config` (as the releases write them)
    /// into its text config class (`textModelType`), and forwards a true text
    /// flag over a false top-level one (PaddleOCRVLConfig, HunYuanVLConfig):
    /// the section `text_config`, else the top level; weights under
    /// `model.language_model.` or, as released and as transformers saves
    /// them, `model.`. The head is tied unless both the top-level and the
    /// text config's `tie_word_embeddings` are false, each true where absent,
    /// so a config without `text_config` always ties.
    static func textConfigOrTopLevel(_ checkpoint: Checkpoint, textModelType: String) throws -> TextModelPlacement {
        var placement = try ownTextConfig(
            checkpoint, defaults: ["model_type": .string(textModelType)], prefixes: ["model.language_model.", "model."], textTiesToo: true)
        let keys = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
        placement.tiedEmbeddings = (keys.tieWordEmbeddings ?? true) || (keys.textConfig?.tieWordEmbeddings ?? true)
        if checkpoint.document(of: placement.section) == nil {
            placement.section = ConfigSection(defaults: placement.section.defaults)
        }
        return placement
    }

    /// A family's language model at config.json's top level, or the text
    /// model of a LLaVA-style wrapper (`Llava.placement`), its section
    /// taking `defaults` for the keys it omits (the family's class defaults
    /// droptrace's general ones lack).
    static func topLevelOrWrapped(_ checkpoint: Checkpoint, defaults: [String: ConfigDefault] = [:]) throws -> TextModelPlacement {
        var placement = try Llava.placement(checkpoint)
        placement.section.defaults.merge(defaults, uniquingKeysWith: { current, _ in current })
        return placement
    }

    /// Reads a `head_dim` of 0 in the section as none (hidden_size /
    /// num_attention_heads), as the classes that take `head_dim or
    /// hidden_size // num_attention_heads` do (Qwen2-VL's and GLM-4.1V's
    /// rotary embeddings, Qwen3VLMoeTextConfig).
    mutating func readZeroHeadDimAsNone(_ checkpoint: Checkpoint) {
        if case .integer(0)? = checkpoint.document(of: section)?.member("head_dim") { section.overrides["head_dim"] = .null }
    }
}

/// The top-level keys of a multimodal wrapper's config.json that say
/// where its language model is and how its head is tied.
struct MultimodalWrapperKeys: Decodable {
    struct Text: Decodable {
        var modelType: String?
        var tieWordEmbeddings: Bool?
        enum CodingKeys: String, CodingKey {
            case modelType = "model_type"
            case tieWordEmbeddings = "tie_word_embeddings"
        }
    }

    var textConfig: Text?
    /// The wrapper's own, which decides the head's tying over the text config's.
    var tieWordEmbeddings: Bool?
    /// Lfm2VlConfig's name for it, read over it.
    var tieEmbedding: Bool?
    /// The wrapper's own sizes, where its class sizes the head by them (Ovis2Config).
    var hiddenSize: Int?
    var vocabSize: Int?

    enum CodingKeys: String, CodingKey {
        case textConfig = "text_config"
        case tieWordEmbeddings = "tie_word_embeddings"
        case tieEmbedding = "tie_embedding"
        case hiddenSize = "hidden_size"
        case vocabSize = "vocab_size"
    }
}

extension DecoderParts {
    /// The parts of the language model `placement` locates (see the
    /// designated initialiser for the other parameters).
    init(
        _ checkpoint: Checkpoint, placement: TextModelPlacement,
        naming: (String) -> LayerNaming, extraLayers: Int = 0, experts: ExpertNaming? = nil, finalNorm: String = "norm",
        extraEmbeddingRows: Int = 0, extraEmbeddingRowsKey: String? = nil, joinedEmbedding: [String] = []
    ) throws {
        try self.init(
            checkpoint, section: placement.section, tiedEmbeddings: placement.tiedEmbeddings,
            headNames: placement.headNames, naming: naming, prefixes: placement.prefixes, extraLayers: extraLayers,
            experts: experts, finalNorm: finalNorm, headRows: placement.headRows, extraEmbeddingRows: extraEmbeddingRows,
            extraEmbeddingRowsKey: extraEmbeddingRowsKey, joinedEmbedding: joinedEmbedding)
        tokensEmbeddedAsRowZero = placement.tokensEmbeddedAsRowZero
        let text = (hidden: dimensions.hiddenSize, vocabulary: dimensions.vocabSize)
        if let head = placement.headSizes, head != text, try weights.storedHead(headNames) != nil {
            // transformers builds the stored head [vocab_size, hidden_size] by the wrapper's keys and cannot load another shape.
            throw DroptraceError(
                "the top level's hidden_size \(head.hidden) and vocab_size \(head.vocabulary) (its config class's defaults where absent) "
                    + "size \(checkpoint.modelType)'s lm_head, which the weights store, but the text model's are \(text.hidden) and \(text.vocabulary)",
                path: configPath)
        }
        if let width = placement.visionOutputWidth, width != dimensions.hiddenSize {
            throw DroptraceError(
                "\"vision_config.out_hidden_size\" \(width) (its config class's default where absent) is not the text model's hidden_size "
                    + "\(dimensions.hiddenSize): \(checkpoint.modelType)'s config class refuses it",
                path: configPath)
        }
        for name in placement.widthTensors where checkpoint.hasTensor(name) {
            guard let hidden = placement.headSizes?.hidden, let stored = try checkpoint.storedTensor(name).shape.last, stored == hidden else {
                throw DroptraceError(
                    "the top level's hidden_size \(placement.headSizes?.hidden ?? 0) (its config class's default where absent) sizes "
                        + "\(checkpoint.modelType)'s '\(name)', which the weights store with another width: transformers cannot load it",
                    path: configPath)
            }
        }
    }
}

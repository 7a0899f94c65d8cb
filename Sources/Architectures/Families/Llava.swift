import CheckpointIO
import DroptraceSupport

/// The LLaVA-style vision-language models, read as their language model
/// (the vision tower and projector are never read: scoring runs on text):
/// `llava` (LlavaForConditionalGeneration: LLaVA-1.5), `llava_next`
/// (LLaVA-NeXT), `llava_onevision` (LLaVA-OneVision), `internvl`
/// (InternVLForConditionalGeneration: InternVL3), `idefics3` (Idefics3),
/// `smolvlm` (SmolVLM) and `mistral3` (Mistral3ForConditionalGeneration:
/// Mistral-Small-3.1/3.2, the Ministral 3 and Mistral Small 4 releases, whose
/// weights transformers converts as LLaVA's); transformers' models/llava*/,
/// models/internvl/, models/idefics3/, models/smolvlm/, models/mistral3/.
/// Their `text_config` is built by its own `model_type` (an AutoConfig:
/// `llama` by default, `qwen2` for LLaVA-OneVision and InternVL, `mistral`
/// for Mistral 3) with that class's defaults, and read here by the Llama
/// family (`llama`, `mistral`, `qwen2`; Mistral 3's `mistral` and
/// `ministral3`, its `mistral4` by `Mistral4Model`); weights under
/// `model.language_model.` (transformers 5) or `language_model.model.` (as
/// the -hf releases and transformers 4.x store them; Idefics3's and
/// SmolVLM's under `model.text_model.`), the head `lm_head` or
/// `language_model.lm_head`, tied as each config class says (`Wrapper`).
enum Llava {
    /// What one wrapper's config class decides.
    struct Wrapper {
        /// The text model type when `text_config` names none.
        var textType: String
        /// The top-level `tie_word_embeddings` when absent.
        var tiedByDefault = false
        /// Whether the class also ties when its text config does (LlavaConfig, LlavaOnevisionConfig).
        var textTiesToo = false
        /// Where the language model's weights may be, first match first.
        var prefixes = ["model.language_model.", "language_model.model."]
        /// The text model types the Llama family reads under this wrapper.
        var textTypes = ["llama", "mistral", "qwen2"]
        /// Those another family reads (Mistral 3's `mistral4`), for errors.
        var textTypesReadElsewhere: [String] = []
    }

    static let wrappers: [String: Wrapper] = [
        "llava": Wrapper(textType: "llama", textTiesToo: true),
        "llava_next": Wrapper(textType: "llama"),
        "llava_onevision": Wrapper(textType: "qwen2", textTiesToo: true),
        "internvl": Wrapper(textType: "qwen2", tiedByDefault: true),
        "idefics3": Wrapper(textType: "llama", prefixes: ["model.text_model."]),
        "smolvlm": Wrapper(textType: "llama", prefixes: ["model.text_model."]),
        "mistral3": Wrapper(
            textType: "mistral", tiedByDefault: true, textTypes: ["mistral", "ministral3"], textTypesReadElsewhere: ["mistral4"]),
    ]

    /// Where a checkpoint of one of `wrappers` keeps its language model,
    /// for a family that reads `textTypes` (the Llama family's by default):
    /// `text_config` with its model_type's class defaults (Ministral 3's too:
    /// `Ministral3Rope.classDefaults`).
    /// - Throws: `DroptraceError` naming config.json for a text model type
    ///   the family does not read.
    static func placement(_ checkpoint: Checkpoint, textTypes: [String]? = nil) throws -> TextModelPlacement {
        let wrapper = wrappers[checkpoint.modelType] ?? Wrapper(textType: "llama")
        let keys = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
        let textType = keys.textConfig?.modelType ?? wrapper.textType
        guard (textTypes ?? wrapper.textTypes).contains(textType) else {
            throw DroptraceError(
                "\"text_config.model_type\" is \"\(textType.forErrorMessage)\": droptrace reads \(checkpoint.modelType) checkpoints "
                    + "with a \((wrapper.textTypes + wrapper.textTypesReadElsewhere).joined(separator: ", ")) language model",
                path: checkpoint.configURL.path)
        }
        var defaults = ConfigValueKinds.omittedDefaultValues(of: textType).merging(
            Ministral3Rope.classDefaults(textType), uniquingKeysWith: { $1 })
        defaults["model_type"] = .string(textType)
        let textTies = wrapper.textTiesToo && keys.textConfig?.tieWordEmbeddings == true
        return .wrapped(
            textDefaults: defaults, prefixes: wrapper.prefixes, tiedEmbeddings: keys.tieWordEmbeddings ?? wrapper.tiedByDefault || textTies)
    }
}

import CheckpointIO
import DroptraceSupport

/// The LLaVA-style vision-language models, read as their language model
/// (the vision tower and projector are never read: scoring runs on text):
/// `llava` (LlavaForConditionalGeneration: LLaVA-1.5), `llava_next`
/// (LLaVA-NeXT), `llava_onevision` (LLaVA-OneVision), `internvl`
/// (InternVLForConditionalGeneration: InternVL3), `idefics3` (Idefics3) and
/// `smolvlm` (SmolVLM; transformers' models/llava*/, models/internvl/,
/// models/idefics3/, models/smolvlm/), whose `text_config` is built by its
/// own `model_type` (an AutoConfig: `llama` by default, `qwen2` for
/// LLaVA-OneVision and InternVL) and read here by the Llama family (`llama`,
/// `mistral`, `qwen2`); weights under `model.language_model.` (transformers 5)
/// or `language_model.model.` (as the -hf releases store them; Idefics3's
/// and SmolVLM's under `model.text_model.`), the head
/// `lm_head` or `language_model.lm_head`, tied as each config class says (`Wrapper`).
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
    }

    static let wrappers: [String: Wrapper] = [
        "llava": Wrapper(textType: "llama", textTiesToo: true),
        "llava_next": Wrapper(textType: "llama"),
        "llava_onevision": Wrapper(textType: "qwen2", textTiesToo: true),
        "internvl": Wrapper(textType: "qwen2", tiedByDefault: true),
        "idefics3": Wrapper(textType: "llama", prefixes: ["model.text_model."]),
        "smolvlm": Wrapper(textType: "llama", prefixes: ["model.text_model."]),
    ]

    /// The text model types read here (by `LlamaModel`).
    static let textTypes = ["llama", "mistral", "qwen2"]

    /// Where a checkpoint of one of `wrappers` keeps its language model.
    /// - Throws: `DroptraceError` naming config.json for a text model type
    ///   other than `textTypes`.
    static func placement(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        let wrapper = wrappers[checkpoint.modelType] ?? Wrapper(textType: "llama")
        let keys = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
        let textType = keys.textConfig?.modelType ?? wrapper.textType
        guard textTypes.contains(textType) else {
            throw DroptraceError(
                "\"text_config.model_type\" is \"\(textType.forErrorMessage)\": droptrace reads \(checkpoint.modelType) checkpoints "
                    + "with a \(textTypes.joined(separator: ", ")) language model",
                path: checkpoint.configURL.path)
        }
        var defaults = ConfigValueKinds.omittedDefaultValues(of: textType)
        defaults["model_type"] = .string(textType)
        let textTies = wrapper.textTiesToo && keys.textConfig?.tieWordEmbeddings == true
        return .wrapped(
            textDefaults: defaults, prefixes: wrapper.prefixes, tiedEmbeddings: keys.tieWordEmbeddings ?? wrapper.tiedByDefault || textTies)
    }
}

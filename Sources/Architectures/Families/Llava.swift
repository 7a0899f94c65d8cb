import CheckpointIO
import DroptraceSupport

/// The LLaVA vision-language models, read as their language model (the
/// vision tower and projector are never read: scoring runs on text):
/// `llava` (LlavaForConditionalGeneration: LLaVA-1.5), `llava_next`
/// (LLaVA-NeXT) and `llava_onevision` (LLaVA-OneVision; transformers'
/// models/llava*/), whose `text_config` is built by its own `model_type`
/// (an AutoConfig: `llama` by default, `qwen2` for LLaVA-OneVision) and
/// read here by the Llama family (`llama`, `mistral`, `qwen2`); weights under
/// `model.language_model.` (transformers 5) or `language_model.model.` (as
/// the llava-hf releases store them), the head `lm_head` or
/// `language_model.lm_head`, tied by the top-level `tie_word_embeddings`
/// (default false) or, for `llava` and `llava_onevision`, by the text config's
/// (which their config classes forward).
enum Llava {
    /// The wrappers, with the text model type each takes when `text_config` names none.
    static let defaultTextTypes = ["llava": "llama", "llava_next": "llama", "llava_onevision": "qwen2"]

    /// The text model types read here (by `LlamaModel`).
    static let textTypes = ["llama", "mistral", "qwen2"]

    /// Where a LLaVA checkpoint keeps its language model.
    /// - Throws: `DroptraceError` naming config.json for a text model type
    ///   other than `textTypes`.
    static func placement(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        let keys = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
        let textType = keys.textConfig?.modelType ?? defaultTextTypes[checkpoint.modelType] ?? "llama"
        guard textTypes.contains(textType) else {
            throw DroptraceError(
                "\"text_config.model_type\" is \"\(textType.forErrorMessage)\": droptrace reads \(checkpoint.modelType) checkpoints "
                    + "with a \(textTypes.joined(separator: ", ")) language model",
                path: checkpoint.configURL.path)
        }
        var defaults = ConfigValueKinds.omittedDefaultValues(of: textType)
        defaults["model_type"] = .string(textType)
        let textTies = checkpoint.modelType != "llava_next" && keys.textConfig?.tieWordEmbeddings == true
        return .wrapped(textDefaults: defaults, tiedEmbeddings: keys.tieWordEmbeddings ?? false || textTies)
    }
}

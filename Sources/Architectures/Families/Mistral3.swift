import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// Where a Llama-family checkpoint keeps its language model: config.json's
/// top level and `model.` weights, Qwen2-VL's (`QwenVL.placement`), LLaVA's
/// (`Llava.placement`), or, for `mistral3`
/// (`Mistral3ForConditionalGeneration`, transformers'
/// models/mistral3/modeling_mistral3.py: Mistral-Small-3.1/3.2 and the
/// Ministral 3 releases), the `text_config` whose `model_type` picks the
/// language model (`mistral`, the class's default, or `ministral3`; the
/// Mistral Small 4 releases' `mistral4` is read by `Mistral4Model`),
/// weights under `model.language_model.` (as transformers 5 names its
/// modules) or `language_model.model.` (as 4.x saved them), the head
/// `lm_head` or `language_model.lm_head`, tied by the top-level
/// `tie_word_embeddings` (Mistral3Config's, default true: the text
/// config's own is not read).
extension TextModelPlacement {
    /// The text models `Mistral3ForConditionalGeneration` is read with here:
    /// these by the Llama family, `mistral4` by its own (`ModelRegistry.textConfigFamilies`).
    static let mistral3TextTypes = ["mistral", "ministral3"]

    static func llama(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        switch checkpoint.modelType {
        case "mistral3":
            let wrapper = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
            let textType = wrapper.textConfig?.modelType ?? "mistral"
            guard Self.mistral3TextTypes.contains(textType) else {
                throw DroptraceError(
                    "\"text_config.model_type\" is \"\(textType.forErrorMessage)\": droptrace reads Mistral3ForConditionalGeneration "
                        + "with a \((Self.mistral3TextTypes + ["mistral4"]).joined(separator: ", ")) language model",
                    path: checkpoint.configURL.path)
            }
            return try mistral3(checkpoint, textDefaults: Ministral3Rope.classDefaults(textType))
        case _ where Llava.wrappers[checkpoint.modelType] != nil:
            return try Llava.placement(checkpoint)
        case _ where QwenVL.qwen2Types.contains(checkpoint.modelType):
            return try QwenVL.placement(checkpoint, defaults: ["model_type": "qwen2", "max_window_layers": 80])
        case "ministral3":
            return TextModelPlacement(section: ConfigSection(defaults: Ministral3Rope.classDefaults("ministral3")))
        case "cwm":
            return TextModelPlacement(section: ConfigSection(defaults: Cwm.classDefaults))
        default:
            return .topLevel
        }
    }

    /// The language model of a `mistral3` checkpoint: `text_config`, which
    /// takes its model_type's config class defaults (and `textDefaults`)
    /// for the keys it omits, the head tied by the top-level
    /// `tie_word_embeddings` (Mistral3Config's, default true).
    static func mistral3(_ checkpoint: Checkpoint, textDefaults: [String: ConfigDefault] = [:]) throws -> TextModelPlacement {
        let wrapper = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
        let textType = wrapper.textConfig?.modelType ?? "mistral"
        var defaults = ConfigValueKinds.omittedDefaultValues(of: textType).merging(textDefaults, uniquingKeysWith: { $1 })
        defaults["model_type"] = .string(textType)
        return .wrapped(textDefaults: defaults, tiedEmbeddings: wrapper.tieWordEmbeddings ?? true)
    }
}

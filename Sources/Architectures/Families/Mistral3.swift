import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// Where a Llama-family checkpoint keeps its language model: config.json's
/// top level and `model.` weights (Ministral 3's with its class's
/// defaults), Qwen2-VL's (`QwenVL.placement`), or the LLaVA-style
/// wrappers', `mistral3` among them (`Llava.placement`).
extension TextModelPlacement {
    static func llama(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        switch checkpoint.modelType {
        case _ where Llava.wrappers[checkpoint.modelType] != nil:
            return try .topLevelOrWrapped(checkpoint)
        case _ where QwenVL.qwen2_5OmniTypes.contains(checkpoint.modelType):
            // Qwen2_5OmniTextConfig's defaults that LlamaConfiguration's for qwen2 lack.
            return QwenVL.omniPlacement(checkpoint, defaults: ["model_type": "qwen2", "max_window_layers": 28, "sliding_window": 32768])
        case _ where QwenVL.qwen2Types.contains(checkpoint.modelType):
            return try QwenVL.placement(checkpoint, defaults: ["model_type": "qwen2", "max_window_layers": 80])
        case "ministral3":
            return TextModelPlacement(section: ConfigSection(defaults: Ministral3Rope.classDefaults("ministral3")))
        default:
            return .topLevel
        }
    }
}

import CheckpointIO
import DroptraceSupport
import TensorEngine

/// A decoder-only transformer read from a checkpoint one block at a time.
///
/// `block(_:)` expands only that block's weights to Float32, so a scorer
/// that walks the layers in order holds one layer of weights at a time.
public protocol LanguageModel: Sendable {
    var checkpoint: Checkpoint { get }
    var modelType: String { get }
    var layerCount: Int { get }
    var hiddenSize: Int { get }
    var vocabularySize: Int { get }
    /// Longest sequence the model's positions allow (learned positions or
    /// the configured maximum for rotary models).
    var maxPositions: Int { get }

    /// The residual stream entering block 0.
    func embed(_ batch: TokenBatch) throws -> Matrix
    func block(_ index: Int) throws -> TransformerBlock
}

/// The architectures droptrace reads, by config.json `model_type`.
public enum ModelRegistry {
    public static let supportedModelTypes = ["gpt2", "gpt_neox", "llama", "mistral", "qwen2"]

    public static func load(_ checkpoint: Checkpoint) throws -> any LanguageModel {
        switch checkpoint.modelType {
        case "llama", "mistral", "qwen2": return try LlamaModel(checkpoint)
        case "gpt_neox": return try GPTNeoXModel(checkpoint)
        case "gpt2": return try GPT2Model(checkpoint)
        default:
            throw DroptraceError(
                "unsupported model_type \"\(checkpoint.modelType)\" (supported: \(supportedModelTypes.joined(separator: ", ")))",
                path: checkpoint.configURL.path)
        }
    }
}

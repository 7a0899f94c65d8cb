import DroptraceSupport
import Foundation

/// A GGUF file seen as a Hugging Face checkpoint: tensors under Hugging Face
/// names, a config.json synthesised from the GGUF metadata.
public final class GGUFCheckpoint: @unchecked Sendable {
    public let path: String
    public let tensors: [String: TensorSlice]
    /// config.json equivalent of the metadata (JSON object bytes).
    public let configData: Data

    public init(path: String) throws {
        throw DroptraceError("GGUF checkpoints are not supported yet", path: path)
    }
}

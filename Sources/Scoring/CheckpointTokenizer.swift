import CheckpointIO
import DroptraceSupport
import Foundation
import Tokenization

/// The tokenizer a checkpoint comes with: tokenizer.json beside the weights,
/// else the vocabulary a GGUF file carries.
public enum CheckpointTokenizer {
    public static func load(for checkpoint: Checkpoint, purpose: String, requestedBy path: String) throws -> Tokenizer {
        let file = checkpoint.directory.appendingPathComponent("tokenizer.json")
        if FileManager.default.fileExists(atPath: file.path) {
            return try Tokenizer(contentsOf: file)
        }
        if let gguf = checkpoint.gguf {
            return try Tokenizer(vocabulary: VocabularySpec(gguf: gguf))
        }
        throw DroptraceError(
            "\(purpose) needs the checkpoint's tokenizer.json (missing: \(file.path)); or pass pre-tokenised JSONL",
            path: path)
    }
}

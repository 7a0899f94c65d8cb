import CheckpointIO
import DroptraceSupport
import Foundation
import Tokenization

/// The tokenizer a checkpoint comes with: the vocabulary a GGUF file carries
/// (it belongs to those weights, whatever else lies in the folder), else
/// tokenizer.json beside the weights.
public enum CheckpointTokenizer {
    public static func load(for checkpoint: Checkpoint, purpose: String, requestedBy path: String) throws -> Tokenizer {
        if let gguf = checkpoint.gguf {
            return try Tokenizer(vocabulary: VocabularySpec(gguf: gguf), source: gguf.path)
        }
        let file = checkpoint.directory.appendingPathComponent("tokenizer.json")
        if FileManager.default.fileExists(atPath: file.path) {
            return try Tokenizer(contentsOf: file)
        }
        throw DroptraceError(
            "\(purpose) needs the checkpoint's tokenizer.json (missing: \(file.path)); or pass pre-tokenised JSONL",
            path: path)
    }
}

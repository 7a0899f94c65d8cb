import CheckpointIO
import DroptraceSupport
import Foundation
import Tokenization

/// The tokenizer a checkpoint comes with: the vocabulary a GGUF file carries
/// (it belongs to those weights, whatever else lies in the folder), else
/// tokenizer.json beside the weights.
public enum CheckpointTokenizer {
    /// `warn` hears of a byte-level GGUF vocabulary without
    /// `tokenizer.ggml.pre`, which gets llama.cpp's default pre-tokenizer.
    /// `acceptsTokenIDs`: the purpose could take pre-tokenised JSONL instead
    /// (calibration), which the missing-tokenizer error then suggests.
    public static func load(
        for checkpoint: Checkpoint, purpose: String, requestedBy path: String, acceptsTokenIDs: Bool = true,
        warn: (String) -> Void = { _ in }
    ) throws -> Tokenizer {
        if let gguf = checkpoint.gguf {
            let spec = try VocabularySpec(gguf: gguf)
            if spec.model == .byteLevelBPE && spec.preTokenizer == nil {
                warn("\(gguf.path): no tokenizer.ggml.pre; splitting text with llama.cpp's default pre-tokenizer, "
                    + "as llama.cpp does (re-convert the model to record the right one)")
            }
            return try Tokenizer(vocabulary: spec, source: gguf.path)
        }
        let file = checkpoint.directory.appendingPathComponent("tokenizer.json")
        if FileManager.default.fileExists(atPath: file.path) {
            return try Tokenizer(contentsOf: file)
        }
        throw DroptraceError(
            "\(purpose) needs the checkpoint's tokenizer.json (missing: \(file.path))"
                + (acceptsTokenIDs ? "; or pass pre-tokenised JSONL" : ""),
            path: path)
    }

    /// lm-evaluation-harness's prefix token for `tokenizer` (loaded by `load`):
    /// a GGUF vocabulary's BOS, else its EOS (the file's ids, else llama.cpp's
    /// defaults: `VocabularySpec(gguf:)`); beside
    /// tokenizer.json, what transformers reads (`SpecialTokenSettings`).
    /// - Throws: `DroptraceError` naming the file for malformed settings
    ///   (ids outside a GGUF vocabulary among them).
    public static func prefixToken(for checkpoint: Checkpoint, tokenizer: Tokenizer) throws -> PrefixToken {
        if let gguf = checkpoint.gguf {
            let spec = try VocabularySpec(gguf: gguf)
            guard let id = spec.bosID ?? spec.eosID else {
                return .none(reason: "\(gguf.path) has no BOS or EOS token (no tokenizer.ggml.bos_token_id or "
                    + "eos_token_id, and llama.cpp's default ids are outside its vocabulary)")
            }
            return .token(id: id, text: tokenizer.decode([id]))
        }
        return try SpecialTokenSettings(
            directory: checkpoint.directory, modelType: checkpoint.modelType, tokenizer: tokenizer)
            .prefixToken(in: tokenizer)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import Tokenization

/// The tokenizer a checkpoint comes with: the vocabulary a GGUF file carries
/// (it belongs to those weights, whatever else lies in the folder), else
/// tokenizer.json beside the weights — or, where the user names one
/// (`--tokenizer DIR`: checkpoints saved without their tokenizer), the
/// tokenizer.json and tokenizer_config.json in that directory, as
/// `AutoTokenizer.from_pretrained(DIR)` reads them, for every checkpoint.
public enum CheckpointTokenizer {
    /// Reads a GGUF file's tokenizer metadata as llama.cpp's loader does,
    /// where the tokens are not needed (pre-tokenised calibration; text
    /// reads them through `load`): llama.cpp refuses the whole file for a key
    /// of another type.
    /// - Throws: `DroptraceError` naming the file and the key.
    public static func checkVocabulary(of checkpoint: Checkpoint) throws {
        if let gguf = checkpoint.gguf { _ = try VocabularySpec(gguf: gguf) }
    }

    /// `warn` hears of a byte-level GGUF vocabulary without
    /// `tokenizer.ggml.pre`, which gets llama.cpp's default pre-tokenizer,
    /// of special-token ids outside the vocabulary, which get llama.cpp's
    /// defaults, and of bytes a byte-level vocabulary has no token for.
    /// `acceptsTokenIDs`: the purpose could take pre-tokenised JSONL instead
    /// (calibration), which the missing-tokenizer error then suggests.
    /// `directory`: the user's tokenizer directory, read instead of the checkpoint's.
    public static func load(
        for checkpoint: Checkpoint, from directory: URL? = nil, purpose: String, requestedBy path: String,
        acceptsTokenIDs: Bool = true, warn: (String) -> Void = { _ in }
    ) throws -> Tokenizer {
        if directory == nil, let gguf = checkpoint.gguf { return try vocabularyTokenizer(gguf, warn: warn).tokenizer }
        return try Tokenizer(contentsOf: tokenizerFile(
            of: checkpoint, in: directory, purpose: purpose, requestedBy: path, acceptsTokenIDs: acceptsTokenIDs))
    }

    /// `load`, with lm-evaluation-harness's prefix token for the tokenizer:
    /// a GGUF vocabulary's BOS, else its EOS (the file's ids, else llama.cpp's
    /// defaults: `VocabularySpec(gguf:)`); beside tokenizer.json, what
    /// transformers reads (`SpecialTokenSettings`).
    /// - Throws: what `load` throws, and `DroptraceError` naming the file for
    ///   malformed special-token settings.
    public static func loadWithPrefixToken(
        for checkpoint: Checkpoint, from directory: URL? = nil, purpose: String, requestedBy path: String,
        warn: (String) -> Void = { _ in }
    ) throws -> (tokenizer: Tokenizer, prefix: PrefixToken) {
        if directory == nil, let gguf = checkpoint.gguf {
            let (tokenizer, spec) = try vocabularyTokenizer(gguf, warn: warn)
            guard let id = spec.bosID ?? spec.eosID else {
                return (tokenizer, .none(reason: "\(gguf.path) has no BOS or EOS token (no tokenizer.ggml.bos_token_id or "
                    + "eos_token_id, and llama.cpp's default ids are outside its vocabulary)"))
            }
            return (tokenizer, .token(id: id, text: tokenizer.decode([id])))
        }
        let tokenizer = try Tokenizer(contentsOf: tokenizerFile(
            of: checkpoint, in: directory, purpose: purpose, requestedBy: path, acceptsTokenIDs: false))
        let settings = try SpecialTokenSettings(
            directory: directory ?? checkpoint.directory, modelType: checkpoint.modelType, tokenizer: tokenizer)
        return (tokenizer, settings.prefixToken(in: tokenizer))
    }

    private static func vocabularyTokenizer(
        _ gguf: GGUFCheckpoint, warn: (String) -> Void
    ) throws -> (tokenizer: Tokenizer, spec: VocabularySpec) {
        let spec = try VocabularySpec(gguf: gguf)
        spec.ignoredSpecialTokens.forEach { warn("\(gguf.path): \($0)") }
        let missing = spec.bytesWithoutToken
        if !missing.isEmpty {
            let named = missing.prefix(8).map { String(format: "0x%02X", $0) }.joined(separator: ", ")
            warn("\(gguf.path): the byte-level vocabulary has no token for \(missing.count) of the 256 bytes (\(named)"
                + "\(missing.count > 8 ? ", ..." : "")); text holding them loses them, as in llama.cpp (a token renamed or duplicated?)")
        }
        if spec.model == .byteLevelBPE && spec.preTokenizer == nil {
            warn("\(gguf.path): no tokenizer.ggml.pre; splitting text with llama.cpp's default pre-tokenizer, "
                + "as llama.cpp does (re-convert the model to record the right one)")
        }
        return (try Tokenizer(vocabulary: spec, source: gguf.path), spec)
    }

    /// Throws unless `directory` (the user's `--tokenizer`) holds a
    /// tokenizer.json: checked before a run, even one whose calibration is
    /// token ids, so a mistyped path is said at once.
    /// - Throws: `DroptraceError` naming the directory.
    public static func checkDirectory(_ directory: URL) throws {
        _ = try tokenizerFile(in: directory)
    }

    private static func tokenizerFile(in directory: URL) throws -> URL {
        let kind = PathKind.of(directory)
        guard kind == .directory else {
            let what = kind == .missing ? "does not exist" : "is not a directory"
            throw DroptraceError(
                "the tokenizer directory given (--tokenizer) \(what): give the directory holding \(fileName)", path: directory.path)
        }
        let file = directory.appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw DroptraceError("the tokenizer directory given (--tokenizer) holds no \(fileName)", path: directory.path)
        }
        return file
    }

    private static func tokenizerFile(
        of checkpoint: Checkpoint, in directory: URL?, purpose: String, requestedBy path: String, acceptsTokenIDs: Bool
    ) throws -> URL {
        if let directory { return try tokenizerFile(in: directory) }
        let file = checkpoint.directory.appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: file.path) else {
            // A SentencePiece model alone is what transformers converts on loading (with sentencepiece installed).
            let sentencePiece = FileManager.default.fileExists(atPath: checkpoint.directory.appendingPathComponent("tokenizer.model").path)
                ? " (its tokenizer.model, a SentencePiece model, is not read: saving the tokenizer with transformers, "
                    + "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR), writes the tokenizer.json it converts it to)"
                : ""
            throw DroptraceError(
                "\(purpose) needs the checkpoint's tokenizer.json (missing: \(file.path))\(sentencePiece); pass --tokenizer DIR "
                    + "(the base model's directory, say) for checkpoints saved without one"
                    + (acceptsTokenIDs ? ", or pre-tokenised JSONL" : ""),
                path: path)
        }
        return file
    }

    static let fileName = "tokenizer.json"
}

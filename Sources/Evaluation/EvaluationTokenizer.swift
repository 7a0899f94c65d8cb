import CheckpointIO
import Foundation
import Scoring
import Tokenization

/// A checkpoint's tokenizer as lm-evaluation-harness uses it: the ids, and
/// the prefix token (`prefix_token_id`) of empty contexts and BOS-led prompts.
public struct EvaluationTokenizer: Sendable {
    public let tokenizer: Tokenizer
    public let prefix: PrefixToken

    public init(tokenizer: Tokenizer, prefix: PrefixToken) {
        self.tokenizer = tokenizer
        self.prefix = prefix
    }

    /// `CheckpointTokenizer.loadWithPrefixToken`; `directory`: the user's
    /// tokenizer directory (`--tokenizer`), read instead of the checkpoint's.
    /// - Throws: what it throws, naming the file.
    public static func load(
        for checkpoint: Checkpoint, from directory: URL? = nil, purpose: String, requestedBy path: String,
        warn: (String) -> Void = { _ in }
    ) throws -> EvaluationTokenizer {
        let (tokenizer, prefix) = try CheckpointTokenizer.loadWithPrefixToken(
            for: checkpoint, from: directory, purpose: purpose, requestedBy: path, warn: warn)
        return EvaluationTokenizer(tokenizer: tokenizer, prefix: prefix)
    }
}

import Architectures
import DroptraceSupport
import TensorEngine
import Tokenization

/// A log-likelihood request as token ids: context and continuation.
struct TokenRequest: Sendable, Equatable {
    var context: [Int]
    var continuation: [Int]
}

/// The harness's `loglikelihood` tokenisation (`TemplateLM.loglikelihood`,
/// `_encode_pair`, `HFLM.tok_encode`): trailing whitespace of the context
/// moves to the continuation; the continuation is what encoding the whole
/// string adds past the context's own encoding. Special tokens as the
/// tokenizer adds them by default (`add_special_tokens=True`; the harness
/// leaves `add_bos_token` unset): a BOS where tokenizer.json's
/// post-processor prepends one (Llama, Gemma), none otherwise (GPT-2, Qwen),
/// and none for text that already starts with the prefix token's text.
/// An empty context is the prefix token alone, unless the continuation
/// (encoded without special tokens) starts with it.
struct PairEncoder {
    let tokenizer: Tokenizer
    let prefix: PrefixToken
    /// The choices of a document share its context: encode it once.
    private var lastContext: (text: String, tokens: [Int])?

    init(tokenizer: Tokenizer, prefix: PrefixToken) {
        self.tokenizer = tokenizer
        self.prefix = prefix
    }

    /// - Throws: `PrefixToken.Unusable` when the request depends on a prefix
    ///   token that cannot be placed; what the tokenizer throws.
    mutating func encode(context: String, continuation: String) throws -> TokenRequest {
        if context.isEmpty {
            let continuationTokens = try tokenizer.encode(continuation, addSpecialTokens: false)
            let id: Int
            switch prefix {
            case .token(let prefixID, _): id = prefixID
            case .none(let reason), .unknown(_, let reason): throw PrefixToken.Unusable(reason: reason)
            }
            guard continuationTokens.first != id else {
                return TokenRequest(context: [id], continuation: Array(continuationTokens.dropFirst()))
            }
            return TokenRequest(context: [id], continuation: continuationTokens)
        }
        let trimmed = PythonText.rstrip(context)
        let contextTokens: [Int]
        if let last = lastContext, PythonText.equal(last.text, trimmed) {
            contextTokens = last.tokens
        } else {
            contextTokens = try encode(trimmed)
            lastContext = (trimmed, contextTokens)
        }
        let whole = try encode(context + continuation)
        return TokenRequest(context: contextTokens, continuation: Array(whole.dropFirst(contextTokens.count)))
    }

    /// `tok_encode`: without special tokens when `text` starts with the prefix token's text.
    private func encode(_ text: String) throws -> [Int] {
        let startsWithPrefix: Bool
        switch prefix {
        case .token(_, let prefixText):
            startsWithPrefix = text.unicodeScalars.starts(with: prefixText.unicodeScalars)
        case .none:
            startsWithPrefix = false
        case .unknown(let prefixText, let reason):
            guard let prefixText, !text.unicodeScalars.starts(with: prefixText.unicodeScalars) else {
                throw PrefixToken.Unusable(reason: reason)
            }
            startsWithPrefix = false
        }
        return try tokenizer.encode(text, addSpecialTokens: !startsWithPrefix)
    }
}

extension PrefixToken {
    /// A request that depends on a prefix token droptrace cannot place.
    struct Unusable: Error {
        /// Why the token cannot be placed.
        let reason: String

        var problem: String {
            "lm-evaluation-harness conditions an empty prompt on the tokenizer's BOS (else EOS) token, "
                + "and encodes a prompt starting with that token's text without special tokens; \(reason)"
        }
    }
}

/// Summed continuation log-likelihoods as lm-evaluation-harness's HFLM
/// computes them (`_loglikelihood_tokens`): the input is
/// (context + continuation)[-(max_length + 1):][:-1], left-truncated to the
/// model's positions, and the last len(continuation) rows predict the
/// continuation. Requests with the same input run once (the harness's
/// one-token-continuation cache: MMLU's four answers share one pass).
struct LoglikelihoodScorer {
    let model: any LanguageModel
    let plan: DropPlan
    let head: OutputHead
    /// The harness's `max_length`: the model's positions.
    let maxLength: Int
    /// Tokens per forward pass (at least one sequence per pass).
    let tokensPerPass: Int

    /// One log-likelihood (natural log, summed over the continuation) per request.
    /// - Precondition: every request has a non-empty context and a
    ///   continuation of 1...maxLength tokens (checked where requests are made).
    func score(_ requests: [TokenRequest]) throws -> [Double] {
        var inputIndex: [[Int]: Int] = [:]
        var inputs: [[Int]] = []
        var requestsOfInput: [[Int]] = []
        for (number, request) in requests.enumerated() {
            let input = Array((request.context + request.continuation).suffix(maxLength + 1).dropLast())
            if let index = inputIndex[input] {
                requestsOfInput[index].append(number)
            } else {
                inputIndex[input] = inputs.count
                inputs.append(input)
                requestsOfInput.append([number])
            }
        }
        var results = [Double](repeating: 0, count: requests.count)
        let forward = LayerwiseForward(model: model, plan: plan)
        var start = 0
        while start < inputs.count {
            var end = start, tokens = 0
            while end < inputs.count && (end == start || tokens + inputs[end].count <= tokensPerPass) {
                tokens += inputs[end].count
                end += 1
            }
            let batch = TokenBatch(sequences: Array(inputs[start..<end]))
            let hidden = try forward.run(batch)
            // Only the continuation rows go through the LM head.
            var rows: [Int] = [], targets: [Int] = []
            var spans: [(request: Int, rows: Range<Int>)] = []
            for input in start..<end {
                let sequence = batch.sequences[input - start]
                for number in requestsOfInput[input] {
                    let continuation = requests[number].continuation
                    let first = rows.count
                    for (offset, token) in continuation.enumerated() {
                        rows.append(sequence.upperBound - continuation.count + offset)
                        targets.append(token)
                    }
                    spans.append((number, first..<rows.count))
                }
            }
            var gathered = [Float](repeating: 0, count: rows.count * hidden.cols)
            for (index, row) in rows.enumerated() {
                gathered[(index * hidden.cols)..<((index + 1) * hidden.cols)] =
                    hidden.data[(row * hidden.cols)..<((row + 1) * hidden.cols)]
            }
            let logProbabilities = head.logProbabilities(
                Matrix(rows: rows.count, cols: hidden.cols, data: gathered), targets: targets)
            for span in spans {
                results[span.request] = span.rows.reduce(0.0) { $0 + logProbabilities[$1] }
            }
            start = end
        }
        return results
    }
}

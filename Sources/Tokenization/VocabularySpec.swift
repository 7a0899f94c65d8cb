/// A tokenizer described by its vocabulary rather than by tokenizer.json:
/// what a GGUF file's `tokenizer.ggml.*` metadata holds.
public struct VocabularySpec: Sendable {
    public enum Model: String, Sendable {
        /// `tokenizer.ggml.model = "llama"`: SentencePiece-style BPE over `▁`-marked text, pieces merged by score, byte fallback.
        case sentencePiece = "llama"
        /// `tokenizer.ggml.model = "gpt2"`: byte-level BPE with ranked merges.
        case byteLevelBPE = "gpt2"
    }

    /// llama.cpp's token types (`tokenizer.ggml.token_type`).
    public enum TokenType: Int, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    public var model: Model
    public var tokens: [String]
    public var scores: [Float]?
    public var tokenTypes: [TokenType]?
    /// "a b" merge strings, highest priority first (byte-level BPE).
    public var merges: [String]?
    public var bosID: Int?
    public var eosID: Int?
    public var unknownID: Int?
    public var addBOS: Bool
    public var addEOS: Bool
    /// `tokenizer.ggml.pre`: the pre-tokenizer llama.cpp names ("default", "llama-bpe", "qwen2", "gpt-2", ...).
    public var preTokenizer: String?
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece models; default true).
    public var addSpacePrefix: Bool
    /// Special-token ids the file gave outside its vocabulary, which llama.cpp
    /// replaces by its defaults ("bad special token"): one line each, for a warning.
    public var ignoredSpecialTokens: [String] = []

    /// The bytes a byte-level vocabulary has no single-character token for
    /// (GPT-2's alphabet has one per byte): its tokenizer leaves them out of
    /// any text, as llama.cpp's does. Empty for SentencePiece vocabularies.
    public var bytesWithoutToken: [UInt8] {
        guard model == .byteLevelBPE else { return [] }
        let present = Set(tokens)
        return (0...255).filter { !present.contains(String(ByteLevelAlphabet.scalarForByte[$0])) }.map(UInt8.init)
    }

    /// llama.cpp's `add_bos` when `tokenizer.ggml.add_bos_token` is absent:
    /// SentencePiece vocabularies and the Llama-3 and Tekken byte-level
    /// pre-tokenizers add BOS, other byte-level vocabularies do not.
    public static func addsBOSByDefault(model: Model, preTokenizer: String?) -> Bool {
        switch model {
        case .sentencePiece: return true
        case .byteLevelBPE:
            return LlamaCppPreTokenizer.named(preTokenizer ?? LlamaCppPreTokenizer.defaultName)?.addsBOSByDefault ?? false
        }
    }

    public init(
        model: Model, tokens: [String], scores: [Float]? = nil, tokenTypes: [TokenType]? = nil, merges: [String]? = nil,
        bosID: Int? = nil, eosID: Int? = nil, unknownID: Int? = nil, addBOS: Bool = false, addEOS: Bool = false,
        preTokenizer: String? = nil, addSpacePrefix: Bool = true
    ) {
        self.model = model
        self.tokens = tokens
        self.scores = scores
        self.tokenTypes = tokenTypes
        self.merges = merges
        self.bosID = bosID
        self.eosID = eosID
        self.unknownID = unknownID
        self.addBOS = addBOS
        self.addEOS = addEOS
        self.preTokenizer = preTokenizer
        self.addSpacePrefix = addSpacePrefix
    }
}

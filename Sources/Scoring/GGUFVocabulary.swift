import CheckpointIO
import DroptraceSupport
import Tokenization

extension VocabularySpec {
    /// The tokenizer a GGUF file carries in its `tokenizer.ggml.*` metadata.
    public init(gguf: GGUFCheckpoint) throws {
        // Each key as llama.cpp's vocabulary loader reads it: token and merge
        // lists as STRING arrays, scores and token types as the raw float32 and
        // int32 data of their arrays, ids as UINT32, flags as BOOL.
        let metadata = GGUFMetadata(values: gguf.metadata, path: gguf.path)
        let path = gguf.path
        func key(_ name: String) -> String { "tokenizer.ggml." + name }
        func strings(_ name: String) throws -> [String]? {
            try metadata.optionalArray(key(name), of: [.string])?.map { $0.string! }
        }
        func id(_ name: String) throws -> Int? { try metadata.optionalUInt32(key(name)) }
        func flag(_ name: String) throws -> Bool? { try metadata.optionalBool(key(name)) }

        guard let modelName = try metadata.optionalString(key("model")) else {
            throw DroptraceError("the GGUF file carries no tokenizer (no '\(key("model"))' key)", path: path)
        }
        guard let model = Model(rawValue: modelName) else {
            throw DroptraceError(
                "GGUF tokenizer model '\(modelName)' is not supported (supported: llama, gpt2)", path: path)
        }
        guard let tokens = try strings("tokens"), !tokens.isEmpty else {
            throw DroptraceError("the GGUF tokenizer has no '\(key("tokens"))'", path: path)
        }
        var scores: [Float]?
        if let items = try metadata.optionalArray(key("scores"), of: [.float32]) {
            guard items.count == tokens.count else {
                throw DroptraceError("'\(key("scores"))' must hold one number per token", path: path)
            }
            scores = items.map { Float($0.double!) }
        }
        var tokenTypes: [TokenType]?
        if let items = try metadata.optionalArray(key("token_type"), of: [.int32, .uint32])?.map({ $0.int.flatMap(TokenType.init(rawValue:)) }) {
            // Every entry is checked before the count: dropping the types out of
            // range would pair the rest with the wrong tokens.
            guard items.count == tokens.count, !items.contains(nil) else {
                throw DroptraceError("'\(key("token_type"))' must hold one token type (1...6) per token", path: path)
            }
            tokenTypes = items.map { $0! }
        }
        let preTokenizer = try metadata.optionalString(key("pre"))
        // An id outside the vocabulary is llama.cpp's "bad special token": it keeps its default id, below.
        var ignored: [String] = []
        func special(_ name: String) throws -> Int? {
            guard let id = try id(name) else { return nil }
            guard id < tokens.count else {
                ignored.append("\(key(name)) \(id) is outside the vocabulary of \(tokens.count) tokens; "
                    + "using llama.cpp's default for it instead, as llama.cpp does (\"bad special token\")")
                return nil
            }
            return id
        }
        let given = (bos: try special("bos_token_id"), eos: try special("eos_token_id"), unknown: try special("unknown_token_id"))
        // llama.cpp's ids where the file names none (`llama_vocab::impl::load`),
        // where the vocabulary has them: SentencePiece BOS 1, EOS 2, UNK 0;
        // byte-level BOS and EOS 11 (GLM-4's pre-tokenizers: no BOS).
        func fallback(_ value: Int) -> Int? { value < tokens.count ? value : nil }
        let noBOS = ["glm4", "chatglm-bpe"].contains(preTokenizer ?? "")
        let ids = model == .sentencePiece
            ? (bos: given.bos ?? fallback(1), eos: given.eos ?? fallback(2), unknown: given.unknown ?? fallback(0))
            : (bos: given.bos ?? (noBOS ? nil : fallback(11)), eos: given.eos ?? fallback(11), unknown: given.unknown)
        self.init(
            model: model, tokens: tokens, scores: scores, tokenTypes: tokenTypes, merges: try strings("merges"),
            bosID: ids.bos, eosID: ids.eos, unknownID: ids.unknown,
            // llama.cpp's defaults when the keys are absent.
            addBOS: try flag("add_bos_token") ?? Self.addsBOSByDefault(model: model, preTokenizer: preTokenizer),
            addEOS: try flag("add_eos_token") ?? false,
            preTokenizer: preTokenizer,
            addSpacePrefix: try flag("add_space_prefix") ?? true)
        ignoredSpecialTokens = ignored
    }
}

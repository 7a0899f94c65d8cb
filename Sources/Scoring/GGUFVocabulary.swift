import CheckpointIO
import DroptraceSupport
import Tokenization

extension VocabularySpec {
    /// The tokenizer a GGUF file carries in its `tokenizer.ggml.*` metadata.
    public init(gguf: GGUFCheckpoint) throws {
        let metadata = gguf.metadata
        let path = gguf.path
        func key(_ name: String) -> String { "tokenizer.ggml." + name }
        func strings(_ name: String) throws -> [String]? {
            guard let value = metadata[key(name)] else { return nil }
            guard let items = value.array?.map(\.string), !items.contains(where: { $0 == nil }) else {
                throw DroptraceError("GGUF metadata key '\(key(name))' is not an array of strings", path: path)
            }
            return items.map { $0! }
        }
        func id(_ name: String) throws -> Int? {
            guard let value = metadata[key(name)] else { return nil }
            guard let number = value.int else {
                throw DroptraceError("GGUF metadata key '\(key(name))' is not an integer", path: path)
            }
            return number
        }
        func flag(_ name: String) throws -> Bool? {
            guard let value = metadata[key(name)] else { return nil }
            guard let flag = value.bool else {
                throw DroptraceError("GGUF metadata key '\(key(name))' is not a bool", path: path)
            }
            return flag
        }

        guard let modelName = metadata[key("model")]?.string else {
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
        if let value = metadata[key("scores")] {
            guard let items = value.array?.compactMap(\.double), items.count == tokens.count else {
                throw DroptraceError("'\(key("scores"))' must hold one number per token", path: path)
            }
            scores = items.map(Float.init)
        }
        var tokenTypes: [TokenType]?
        if let value = metadata[key("token_type")] {
            // Every entry is checked before the count: dropping the types out of
            // range would pair the rest with the wrong tokens.
            guard let items = value.array?.map({ $0.int.flatMap(TokenType.init(rawValue:)) }),
                  items.count == tokens.count, !items.contains(nil)
            else {
                throw DroptraceError("'\(key("token_type"))' must hold one token type (1...6) per token", path: path)
            }
            tokenTypes = items.map { $0! }
        }
        let preTokenizer = metadata[key("pre")]?.string
        let ids = (bos: try id("bos_token_id"), eos: try id("eos_token_id"), unknown: try id("unknown_token_id"))
        for (name, value) in [("bos_token_id", ids.bos), ("eos_token_id", ids.eos), ("unknown_token_id", ids.unknown)] {
            if let value, !(0..<tokens.count).contains(value) {
                throw DroptraceError("'\(key(name))' \(value) is outside the \(tokens.count) tokens", path: path)
            }
        }
        self.init(
            model: model, tokens: tokens, scores: scores, tokenTypes: tokenTypes, merges: try strings("merges"),
            bosID: ids.bos, eosID: ids.eos, unknownID: ids.unknown,
            // llama.cpp's defaults when the keys are absent.
            addBOS: try flag("add_bos_token") ?? Self.addsBOSByDefault(model: model, preTokenizer: preTokenizer),
            addEOS: try flag("add_eos_token") ?? false,
            preTokenizer: preTokenizer,
            addSpacePrefix: try flag("add_space_prefix") ?? true)
    }
}

import DroptraceSupport

// Placeholder: building a tokenizer from a GGUF vocabulary is implemented
// with the SentencePiece tokenizer work, which replaces this file.
extension Tokenizer {
    public convenience init(vocabulary: VocabularySpec) throws {
        throw DroptraceError("tokenizers from a GGUF vocabulary are not supported yet", path: "tokenizer.ggml.model")
    }
}

/// The `model` section of a tokenizer.json: what turns each pre-tokenized
/// word into ids, BPE (merges) or Unigram (scored pieces).
enum SubwordModel: Sendable {
    case bpe(BPEModel)
    case unigram(UnigramModel)

    /// Put in place of ids where the text needs an unknown token the model
    /// lacks (`missingUnknownMessage`); no id equals it (ids are below 2^31).
    static let missingUnknown = Int32.min

    /// The library's `token_to_id` on the model: the id of a token's text.
    func tokenId(_ text: TokenBytes) -> Int32? {
        switch self {
        case .bpe(let model): return model.tokenIds[text]
        case .unigram(let model): return model.tokenIds[text]
        }
    }

    /// The library's `get_vocab_size`, from which added tokens not in the
    /// vocabulary are numbered: BPE's distinct tokens, Unigram's pieces
    /// (a piece given twice counts twice).
    var vocabularyEntryCount: Int {
        switch self {
        case .bpe(let model): return model.vocabularyEntryCount
        case .unigram(let model): return model.pieces.count
        }
    }

    var largestId: Int {
        switch self {
        case .bpe(let model): return model.largestId
        case .unigram(let model): return model.pieces.count - 1
        }
    }

    /// The library's `id_to_token`.
    func tokenText(_ id: Int) -> String? {
        switch self {
        case .bpe(let model): return model.tokenTexts[id]
        case .unigram(let model): return model.pieces.indices.contains(id) ? model.pieces[id].text : nil
        }
    }

    /// UTF-8 length of the longest token's text.
    var longestTokenBytes: Int {
        switch self {
        case .bpe(let model): return model.longestTokenBytes
        case .unigram(let model): return model.longestTokenBytes
        }
    }

    /// Whether a token may join a line end with the text around it (a merge
    /// across "\n", a piece holding one), so that a word's ids may depend on
    /// text beyond its lines.
    var joinsAcrossLineEnds: Bool {
        switch self {
        case .bpe(let model): return model.mergesAcrossLineEnds
        case .unigram(let model): return model.joinsAcrossLineEnds
        }
    }

    /// Why `missingUnknown` was put in the ids, as the library's error says it.
    var missingUnknownMessage: String {
        switch self {
        case .bpe(let model):
            return "text holds a character outside the vocabulary, and model.unk_token \(quoted(model.missingUnknownToken ?? "")) "
                + "is not in it (the tokenizers library fails on such text too)"
        case .unigram:
            return "text holds a character that no piece of model.vocab covers, and model.unk_id is null "
                + "(the tokenizers library fails on such text too)"
        }
    }

    /// Appends the ids of one pre-tokenized word to `output`.
    func encode(_ piece: TextPiece, workspace: inout EncodingWorkspace, into output: inout [Int]) {
        switch self {
        case .bpe(let model): model.encode(piece, workspace: &workspace, into: &output)
        case .unigram(let model): model.encode(piece, workspace: &workspace, into: &output)
        }
    }

    var continuingSubwordPrefix: [UInt8]? {
        if case .bpe(let model) = self { return model.continuingSubwordPrefix }
        return nil
    }

    var endOfWordSuffix: [UInt8]? {
        if case .bpe(let model) = self { return model.endOfWordSuffix }
        return nil
    }
}

/// SentencePiece's byte pieces, which `byte_fallback` spells unknown text with.
enum ByteFallback {
    /// `<0x41>` for 0x41: two uppercase hexadecimal digits.
    static func tokenName(_ byte: Int) -> String {
        "<0x" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true) + ">"
    }

    /// The ids of `<0x00>` … `<0xFF>` in a vocabulary, -1 for one it lacks.
    static func tokenIds(in vocabulary: [TokenBytes: Int32]) -> [Int32] {
        (0..<256).map { vocabulary[TokenBytes(tokenName($0))] ?? -1 }
    }

    /// `bytes` spelt as byte pieces of `table` (`tokenIds(in:)`), nil when
    /// it lacks one of them: the library then falls back to the unknown token.
    static func ids(spelling bytes: some Sequence<UInt8>, table: [Int32]) -> [Int32]? {
        let ids = bytes.map { table[Int($0)] }
        return ids.contains(-1) ? nil : ids
    }
}

import DroptraceSupport

/// Tokenizers described by a GGUF file's `tokenizer.ggml.*` metadata rather
/// than by tokenizer.json. The vocabulary is mapped onto the same pipeline
/// the tokenizer.json of the model would describe, so both give the ids the
/// Python `tokenizers` library gives for that tokenizer.json.
extension Tokenizer {
    /// `source` names where the vocabulary came from (the GGUF file) in
    /// error messages.
    public convenience init(vocabulary spec: VocabularySpec, source: String = "GGUF vocabulary") throws {
        let reader = VocabularyReader(spec: spec, source: source)
        switch spec.model {
        case .sentencePiece: try self.init(sentencePiece: reader)
        case .byteLevelBPE: try self.init(byteLevel: reader)
        }
    }

    /// llama.cpp's "llama" vocabulary: SentencePiece BPE, written as the
    /// Llama-2 / Mistral tokenizer.json: Prepend("▁") (when
    /// add_space_prefix) and Replace(" " → "▁") on each stretch of text
    /// between special tokens, no pre-tokenizer, BPE with byte fallback and
    /// fused unknowns, BOS/EOS as the add flags say.
    ///
    /// Merges are not stored; they are derived from the scores. The
    /// SentencePiece encoder merges, at each step, the adjacent pair whose
    /// joined piece scores highest. tokenizer.json expresses that as ranked
    /// merges: every split of every piece into two pieces, pieces ordered by
    /// score (higher first; equal scores in id order), the splits of one
    /// piece by the ids of their parts — the list transformers' converter
    /// wrote into the Llama-2 and Mistral files. Building the same list and
    /// running the ranked-merge loop gives exactly the tokenizer.json's ids;
    /// merging by score with llama.cpp's leftmost tie-break could differ
    /// where two different splits of one piece, or pieces of equal score
    /// (Mistral's whitespace runs all score -1e9), compete.
    /// Bytes of piece halves a SentencePiece vocabulary may look up to
    /// derive its merges (see `init(sentencePiece:)`).
    static let mergeDerivationBudget = 1 << 28

    private convenience init(sentencePiece reader: VocabularyReader) throws {
        let spec = reader.spec
        let scores = try reader.scores()
        let types = try reader.types()
        let ids = reader.textIds()
        let byteTokenIds = try reader.byteTokenIds(types: types)

        // Every piece is merged and merged into, whatever its type, as the
        // converter's `generate_merges` takes the whole vocabulary (and as
        // llama.cpp looks pieces up by text): an UNUSED piece such as "▁the"
        // is still built from its halves. Control and user-defined pieces are
        // cut out of the text whole before (`addedTokens`).
        var pieceIds: [TokenBytes: Int] = [:]
        for (id, token) in spec.tokens.enumerated() where ids[TokenBytes(token)] == id {
            pieceIds[TokenBytes(token)] = id
        }
        let order = pieceIds.values.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        // Only cuts into two lengths some piece has can give two pieces: looking up the halves of every cut
        // costs the square of a piece's length (one of 300,000 bytes took half a minute). The lookups
        // left have a budget of bytes hashed, far above any real vocabulary's (pieces of tens of bytes).
        let lengths = Set(pieceIds.keys.map(\.bytes.count))
        var hashed = 0
        var merges: [(String, String)] = []
        for id in order {
            let piece = Array(spec.tokens[id].utf8)
            var splits: [(left: Int, right: Int)] = []
            // Cut between characters only.
            for cut in 1..<max(1, piece.count)
            where lengths.contains(cut) && lengths.contains(piece.count - cut) && piece[cut] & 0xC0 != 0x80 {
                hashed += piece.count
                guard hashed <= Self.mergeDerivationBudget else {
                    throw reader.failure(
                        "its pieces are too long to derive merges from (\(piece.count) bytes, \(spec.tokens.count) pieces): more "
                            + "than \(Self.mergeDerivationBudget) bytes to look up, where real vocabularies need thousands of times less")
                }
                if let left = pieceIds[TokenBytes(Array(piece[..<cut]))], let right = pieceIds[TokenBytes(Array(piece[cut...]))] {
                    splits.append((left, right))
                }
            }
            splits.sort { $0.left != $1.left ? $0.left < $1.left : $0.right < $1.right }
            merges.append(contentsOf: splits.map { (spec.tokens[$0.left], spec.tokens[$0.right]) })
        }

        let unknownId = spec.unknownID ?? types.firstIndex(of: .unknown)
        if let unknownId { try reader.check(unknownId, "unknown token") }
        if byteTokenIds == nil && unknownId == nil {
            throw reader.failure("has neither byte tokens (<0x00>…<0xFF>) nor an unknown token, so some text could not be encoded")
        }
        let model = try reader.model(
            merges: merges, unknownToken: unknownId.map { spec.tokens[$0] }, byteFallback: byteTokenIds != nil,
            ignoreMerges: false)

        let space = "\u{2581}"
        var steps: [TextNormalizer] = []
        if spec.addSpacePrefix { steps.append(PrependNormalizer(prefix: space)) }
        steps.append(ReplaceNormalizer(pattern: LiteralSplitPattern(needle: [0x20]), content: space, source: reader.source))
        var decoders: [TokenDecoder] = [ReplaceDecoder(pattern: space, content: " "), ByteFallbackDecoder(), FuseDecoder()]
        if spec.addSpacePrefix { decoders.append(StripDecoder(content: " ", start: 1, stop: 0)) }

        try self.init(
            model: .bpe(model), normalizer: SequenceNormalizer(steps: steps, source: reader.source), preTokenizer: nil,
            postProcessor: try reader.postProcessor(), addedTokens: reader.addedTokens(types: types),
            decodesByteLevel: false, tokenDecoder: SequenceDecoder(steps: decoders), source: reader.source)
    }

    /// llama.cpp's "gpt2" vocabulary: byte-level BPE with ranked merges and
    /// the pre-tokenizer `tokenizer.ggml.pre` names (llama.cpp's default
    /// when the key is absent; see `LlamaCppPreTokenizer`).
    private convenience init(byteLevel reader: VocabularyReader) throws {
        let spec = reader.spec
        let types = try reader.types()
        guard let mergeLines = spec.merges else { throw reader.failure("has no merges (tokenizer.ggml.merges)") }
        let merges = try mergeLines.enumerated().map { index, line -> (String, String) in
            let parts = line.utf8.split(separator: 0x20, omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw reader.failure("merges[\(index)] \(quoted(line)) is not two tokens separated by one space")
            }
            return (String(decoding: parts[0], as: UTF8.self), String(decoding: parts[1], as: UTF8.self))
        }
        let name = spec.preTokenizer ?? LlamaCppPreTokenizer.defaultName
        guard let flavour = LlamaCppPreTokenizer.named(name) else {
            throw reader.failure(
                "pre-tokenizer \(quoted(name)) (tokenizer.ggml.pre) is not supported; droptrace knows "
                    + LlamaCppPreTokenizer.knownNames.joined(separator: ", "))
        }
        let model = try reader.model(merges: merges, unknownToken: nil, byteFallback: false,
                                     ignoreMerges: flavour.ignoresMerges)
        try self.init(
            model: .bpe(model), normalizer: flavour.normalizesToNFC ? UnicodeFormNormalizer(form: .nfc) : nil,
            preTokenizer: try flavour.read(source: reader.source), postProcessor: try reader.postProcessor(),
            addedTokens: reader.addedTokens(types: types), decodesByteLevel: true, tokenDecoder: nil, source: reader.source)
    }
}

/// Checked access to a VocabularySpec; every complaint names the source.
private struct VocabularyReader {
    let spec: VocabularySpec
    let source: String

    func failure(_ message: String) -> DroptraceError {
        DroptraceError("tokenizer vocabulary \(message)", path: source)
    }

    func check(_ id: Int, _ role: String) throws {
        guard spec.tokens.indices.contains(id) else {
            throw failure("\(role) id \(id) is outside the \(spec.tokens.count) tokens")
        }
    }

    func scores() throws -> [Float] {
        guard let scores = spec.scores else { throw failure("has no scores (tokenizer.ggml.scores)") }
        guard scores.count == spec.tokens.count else {
            throw failure("has \(scores.count) scores for \(spec.tokens.count) tokens")
        }
        // The merges are ordered by score: NaN compares with nothing, and the order would be the sort's accident.
        if let bad = scores.firstIndex(where: \.isNaN) {
            throw failure("token \(bad)'s score (tokenizer.ggml.scores) is NaN, which gives the pieces no order to merge in")
        }
        return scores
    }

    /// Token types, all normal when the file gives none.
    func types() throws -> [VocabularySpec.TokenType] {
        guard !spec.tokens.isEmpty else { throw failure("has no tokens") }
        guard let types = spec.tokenTypes else { return Array(repeating: .normal, count: spec.tokens.count) }
        guard types.count == spec.tokens.count else {
            throw failure("has \(types.count) token types for \(spec.tokens.count) tokens")
        }
        return types
    }

    /// Each distinct token text's id: its last, as llama.cpp's vocabulary
    /// loader maps text to ids (`token_to_id[word] = i` over the list in
    /// order; GGUF vocabularies may repeat filler entries). The earlier ids
    /// of a repeated text are never produced.
    func textIds() -> [TokenBytes: Int] {
        var ids: [TokenBytes: Int] = [:]
        for (id, token) in spec.tokens.enumerated() { ids[TokenBytes(token)] = id }
        return ids
    }

    /// The ids of <0x00>…<0xFF>, or nil when the vocabulary has none; a
    /// vocabulary with some but not all of them is refused, since byte
    /// fallback would then turn some characters into nothing.
    func byteTokenIds(types: [VocabularySpec.TokenType]) throws -> [Int]? {
        let ids = textIds()
        let names = (0..<256).map(ByteFallback.tokenName)
        let found = names.map { ids[TokenBytes($0)] }
        let hasByteTypes = types.contains(.byte)
        if found.allSatisfy({ $0 == nil }) && !hasByteTypes { return nil }
        if let missing = found.firstIndex(where: { $0 == nil }) {
            throw failure("has byte tokens but lacks \(names[missing]); byte fallback needs all 256")
        }
        return found.map { $0! }
    }

    func model(merges: [(String, String)], unknownToken: String?, byteFallback: Bool, ignoreMerges: Bool) throws -> BPEModel {
        let ids = textIds()
        let vocabulary = spec.tokens.enumerated().compactMap { id, token in
            ids[TokenBytes(token)] == id ? (text: token, id: id) : nil
        }
        do {
            return try BPEModel(
                vocabulary: vocabulary, merges: merges, unknownToken: unknownToken, fuseUnknown: true,
                byteFallback: byteFallback, continuingSubwordPrefix: nil, endOfWordSuffix: nil,
                ignoreMerges: ignoreMerges)
        } catch {
            throw failure(error.message.replacingOccurrences(of: "model.", with: ""))
        }
    }

    /// Control, user-defined and unknown tokens are found in text whole, as
    /// llama.cpp does when parsing special tokens (and as tokenizer.json
    /// lists them among added_tokens); user-defined ones are not special.
    func addedTokens(types: [VocabularySpec.TokenType]) -> [AddedToken] {
        let ids = textIds()
        return spec.tokens.enumerated().compactMap { id, token in
            guard !token.isEmpty, ids[TokenBytes(token)] == id else { return nil }
            switch types[id] {
            case .control, .unknown, .userDefined:
                let special = types[id] != .userDefined
                return AddedToken(content: token, id: id, singleWord: false, leftStrip: false, rightStrip: false,
                                  normalized: false, special: special)
            default:
                return nil
            }
        }
    }

    func postProcessor() throws -> PostProcessor? {
        var pieces: [TemplatePostProcessor.Piece] = []
        if spec.addBOS {
            guard let bos = spec.bosID else { throw failure("adds BOS but names no BOS token") }
            try check(bos, "BOS")
            pieces.append(.specialTokens([bos]))
        }
        pieces.append(.sequence)
        if spec.addEOS {
            guard let eos = spec.eosID else { throw failure("adds EOS but names no EOS token") }
            try check(eos, "EOS")
            pieces.append(.specialTokens([eos]))
        }
        return pieces.count == 1 ? nil : TemplatePostProcessor(pieces: pieces)
    }
}

import DroptraceSupport

/// Reading the `model` and `added_tokens` sections.
extension JSONFields {
    func readModel() throws -> SubwordModel {
        // The library's model reader takes the last of any other field given twice, but not of `type`.
        try refuseRepeated("type")
        if values["type"] is JSONNull { throw DroptraceError("\(fieldName("type")) is null", path: file) }
        // Without a type the library tries each model's fields in turn: merges
        // make BPE, a list of [piece, score] pairs Unigram.
        let type = try string("type")
            ?? (try isGiven("merges") ? "BPE" : values["vocab"] is [Any] ? "Unigram" : "unknown")
        switch type {
        case "BPE": return .bpe(try readBPE())
        case "Unigram": return .unigram(try readUnigram())
        default:
            throw failure("model type \(quoted(type)) is not supported; droptrace reads BPE and Unigram tokenizers")
        }
    }

    private func readBPE() throws -> BPEModel {
        guard let vocabularyFields = try object("vocab") else { throw failure("has no \"vocab\"") }
        var vocabulary: [(text: String, id: Int)] = []
        vocabulary.reserveCapacity(vocabularyFields.values.members.count)
        for (token, value) in vocabularyFields.values.members {
            guard let id = JSONFields.integer(value) else {
                throw vocabularyFields.failure("token \(quoted(token)) has a non-integer id")
            }
            vocabulary.append((token, id))
        }
        let merges = try readMerges()
        let unknownToken = try string("unk_token")
        let fuseUnknown = try bool("fuse_unk", default: false)
        let byteFallback = try bool("byte_fallback", default: false)
        let prefix = try string("continuing_subword_prefix")
        let suffix = try string("end_of_word_suffix")
        let ignoreMerges = try bool("ignore_merges", default: false)
        try checkNoDropout()
        do {
            return try BPEModel(
                vocabulary: vocabulary, merges: merges, unknownToken: unknownToken,
                fuseUnknown: fuseUnknown, byteFallback: byteFallback,
                continuingSubwordPrefix: prefix, endOfWordSuffix: suffix, ignoreMerges: ignoreMerges)
        } catch {
            throw DroptraceError(error.message, path: file)
        }
    }

    /// `vocab` as `[[piece, score], ...]`, `unk_id` (null: none) and
    /// `byte_fallback`, as the library's Unigram reader takes them (other
    /// fields are ignored).
    private func readUnigram() throws -> UnigramModel {
        guard let items = try array("vocab") else { throw failure("has no \"vocab\"") }
        var pieces: [(text: String, score: Double)] = []
        pieces.reserveCapacity(items.count)
        for (index, item) in items.enumerated() {
            let pair = item as? [Any]
            guard let pair, pair.count == 2, let text = pair[0] as? String, let score = Self.number(pair[1]) else {
                throw failure("vocab[\(index)] should be [piece, score]")
            }
            pieces.append((text, score))
        }
        let unknownId = try int("unk_id")
        if let unknownId, unknownId < 0 { throw DroptraceError("\(fieldName("unk_id")) should not be negative", path: file) }
        let byteFallback = try nonNullBool("byte_fallback", default: false)
        do {
            return try UnigramModel(pieces: pieces, unknownId: unknownId, byteFallback: byteFallback)
        } catch {
            throw DroptraceError(error.message, path: file)
        }
    }

    /// A JSON number as serde reads it into f64.
    private static func number(_ value: Any) -> Double? {
        if let integer = JSONFields.integer(value) { return Double(integer) }
        return type(of: value) == Double.self ? value as? Double : nil
    }

    /// BPE dropout skips merges at random while encoding (all of them at
    /// 1.0): droptrace encodes deterministically, so only null or 0 is
    /// accepted (the library itself refuses values outside 0...1).
    private func checkNoDropout() throws {
        guard try isGiven("dropout") else { return }
        let value = values["dropout"]!
        let isZero = JSONFields.integer(value) == 0 || (type(of: value) == Double.self && value as? Double == 0)
        guard isZero else {
            throw DroptraceError(
                "\(fieldName("dropout")) should be null or 0: droptrace encodes without BPE dropout", path: file)
        }
    }

    /// Both serialisations: `["a b", ...]` (older files; "#version" lines
    /// skipped) and `[["a", "b"], ...]` (tokenizers ≥ 0.20, which allows
    /// spaces inside tokens).
    private func readMerges() throws -> [(String, String)] {
        guard let items = try array("merges") else { throw failure("has no \"merges\"") }
        var merges: [(String, String)] = []
        merges.reserveCapacity(items.count)
        for (index, item) in items.enumerated() {
            if let line = item as? String {
                if line.hasPrefix("#version") { continue }
                // Split on the space scalar: a Character split would keep a
                // space followed by a combining mark together.
                let parts = line.utf8.split(separator: 0x20, omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw failure("merges[\(index)] \(quoted(line)) is not two tokens separated by one space")
                }
                merges.append((String(decoding: parts[0], as: UTF8.self), String(decoding: parts[1], as: UTF8.self)))
            } else if let pair = item as? [Any], pair.count == 2, let left = pair[0] as? String, let right = pair[1] as? String {
                merges.append((left, right))
            } else {
                throw failure("merges[\(index)] should be \"a b\" or [\"a\", \"b\"]")
            }
        }
        return merges
    }
}

extension [JSONFields] {
    /// The added tokens with the ids the Rust library gives them: an
    /// existing id when the content is already a token, otherwise the next
    /// id after the vocabulary, in file order. For any file the library
    /// wrote, these equal the ids in the file.
    func readAddedTokens(model: SubwordModel) throws -> [AddedToken] {
        var idByContent: [TokenBytes: Int] = [:]
        var tokenById: [Int: AddedToken] = [:]
        var nextId = model.vocabularyEntryCount
        for fields in self {
            let content = try fields.requiredString("content")
            // The library reads ids as u32 and gives each token its own id
            // (below), as droptrace does, but refuses a file with another.
            _ = try fields.requiredCount("id", limit: Int(UInt32.max))
            // The library requires every flag (a missing one is a load error).
            var token = AddedToken(
                content: content, id: -1,
                singleWord: try fields.requiredBool("single_word"),
                leftStrip: try fields.requiredBool("lstrip"),
                rightStrip: try fields.requiredBool("rstrip"),
                normalized: try fields.requiredBool("normalized"),
                special: try fields.requiredBool("special"))
            guard !content.isEmpty else { continue }
            let key = TokenBytes(content)
            if let existing = idByContent[key] {
                token.id = existing
            } else if let inVocabulary = model.tokenId(key) {
                token.id = Int(inVocabulary)
            } else {
                token.id = nextId
                nextId += 1
            }
            idByContent[key] = token.id
            tokenById[token.id] = token
        }
        return tokenById.values.sorted { $0.id < $1.id }
    }
}

/// The `model` section of a tokenizer.json whose type is "BPE".
///
/// Everything the encoding loop touches is an integer: symbols are token
/// ids, merges are looked up by the pair of ids they join, so no strings
/// are built while merging.
struct BPEModel: Sendable {
    /// UTF-8 of each token's text → its id.
    let tokenIds: [TokenBytes: Int32]
    /// Number of entries in `vocab`; added tokens not in the vocabulary are
    /// numbered from here, as the Rust library numbers them.
    let vocabularyEntryCount: Int
    let largestId: Int
    let tokenTexts: [Int: String]
    /// UTF-8 length of the longest token's text.
    let longestTokenBytes: Int
    let merges: MergeTable
    /// Whether a merge joins a line end ("\n", or the byte-fallback token
    /// `<0x0A>`) with other text, so that a word's merges may chain across
    /// its lines.
    let mergesAcrossLineEnds: Bool

    /// `SubwordModel.missingUnknown` when `unk_token` names a token the
    /// vocabulary lacks: the library loads such a file and fails only on
    /// text that needs the token (`missingUnknownToken`); no merge involves it.
    let unknownTokenId: Int32?
    /// An `unk_token` that is not in the vocabulary.
    let missingUnknownToken: String?
    let fuseUnknown: Bool
    let byteFallback: Bool
    /// The ids of `<0x00>` … `<0xFF>`, -1 for one the vocabulary lacks.
    let byteTokenIds: [Int32]
    let continuingSubwordPrefix: [UInt8]?
    let endOfWordSuffix: [UInt8]?
    /// Words found whole in the vocabulary skip merging (Llama-3 sets this).
    let ignoreMerges: Bool

    /// The id of each byte's alphabet character, or -1 when the vocabulary
    /// lacks it; nil when prefixes or suffixes make symbols depend on
    /// position, and the general path is needed.
    let byteSymbolIds: [Int32]?
    /// Vocabulary keyed by the raw bytes a token stands for, for the
    /// ignore-merges look-up of byte-mapped words.
    let rawByteTokenIds: [TokenBytes: Int32]

    init(
        vocabulary: [(text: String, id: Int)], merges mergeList: [(String, String)], unknownToken: String?,
        fuseUnknown: Bool, byteFallback: Bool, continuingSubwordPrefix: String?,
        endOfWordSuffix: String?, ignoreMerges: Bool
    ) throws(ModelError) {
        var tokenIds: [TokenBytes: Int32] = [:]
        tokenIds.reserveCapacity(vocabulary.count)
        var tokenTexts: [Int: String] = [:]
        tokenTexts.reserveCapacity(vocabulary.count)
        var largestId = -1
        for (text, id) in vocabulary {
            guard id >= 0 && id <= Int(Int32.max) else { throw .badId(text, id) }
            // A key given twice keeps its last id, as the library's map does.
            tokenIds[TokenBytes(text)] = Int32(id)
        }
        var longestToken = 0
        for (text, id) in vocabulary where tokenIds[TokenBytes(text)] == Int32(id) {
            tokenTexts[id] = text
            largestId = max(largestId, id)
            longestToken = max(longestToken, text.utf8.count)
        }
        self.tokenIds = tokenIds
        self.tokenTexts = tokenTexts
        self.largestId = largestId
        longestTokenBytes = longestToken
        // Distinct keys: the library numbers added tokens from its map's size.
        vocabularyEntryCount = tokenIds.count

        let prefix = continuingSubwordPrefix.map { Array($0.utf8) }
        var table = MergeTable(capacity: mergeList.count)
        var mergesAcrossLineEnds = false
        for (rank, (left, right)) in mergeList.enumerated() {
            mergesAcrossLineEnds = mergesAcrossLineEnds || [left, right].contains { $0.utf8.contains(0x0A) || $0 == "<0x0A>" }
            let leftBytes = Array(left.utf8)
            let rightBytes = Array(right.utf8)
            guard let leftId = tokenIds[TokenBytes(leftBytes)] else { throw .mergeTokenMissing(rank, left) }
            guard let rightId = tokenIds[TokenBytes(rightBytes)] else { throw .mergeTokenMissing(rank, right) }
            // The prefix marks a token as word-internal; the merged token
            // carries it only once, at the front of the left part.
            // The library cuts the prefix's length off the right part
            // whatever it holds, and panics when that part is shorter or the
            // cut falls inside a character: such a file cannot be loaded.
            let cut = prefix?.count ?? 0
            if cut > rightBytes.count || (cut < rightBytes.count && rightBytes[cut] & 0xC0 == 0x80) {
                throw .prefixCutsMergePart(rank, right)
            }
            let rightStem = rightBytes.dropFirst(cut)
            let merged = leftBytes + rightStem
            guard let mergedId = tokenIds[TokenBytes(merged)] else {
                throw .mergeTokenMissing(rank, String(decoding: merged, as: UTF8.self))
            }
            table.insert(left: leftId, right: rightId, rank: UInt32(rank), merged: mergedId)
        }
        self.merges = table
        self.mergesAcrossLineEnds = mergesAcrossLineEnds

        unknownTokenId = unknownToken.map { tokenIds[TokenBytes($0)] ?? SubwordModel.missingUnknown }
        missingUnknownToken = unknownToken.flatMap { tokenIds[TokenBytes($0)] == nil ? $0 : nil }
        self.fuseUnknown = fuseUnknown
        self.byteFallback = byteFallback
        byteTokenIds = ByteFallback.tokenIds(in: tokenIds)
        self.continuingSubwordPrefix = prefix
        self.endOfWordSuffix = endOfWordSuffix.map { Array($0.utf8) }
        self.ignoreMerges = ignoreMerges

        if prefix == nil && endOfWordSuffix == nil {
            byteSymbolIds = ByteLevelAlphabet.utf8ForByte.map { tokenIds[TokenBytes($0)] ?? -1 }
        } else {
            byteSymbolIds = nil
        }
        var rawByteTokenIds: [TokenBytes: Int32] = [:]
        if ignoreMerges {
            rawByteTokenIds.reserveCapacity(vocabulary.count)
            for (text, id) in vocabulary {
                if let raw = ByteLevelAlphabet.decode(text) { rawByteTokenIds[TokenBytes(raw)] = Int32(id) }
            }
        }
        self.rawByteTokenIds = rawByteTokenIds
    }

    enum ModelError: Error {
        case badId(String, Int)
        case mergeTokenMissing(Int, String)
        case prefixCutsMergePart(Int, String)

        var message: String {
            switch self {
            case .prefixCutsMergePart(let rank, let token):
                return "model.merges[\(rank)]: token \(quoted(token)) is shorter than model.continuing_subword_prefix, "
                    + "or the prefix's length cuts one of its characters; the tokenizers library cannot load it"
            case .badId(let token, let id): return "model.vocab: token \(quoted(token)) has invalid id \(id)"
            case .mergeTokenMissing(let rank, let token):
                return "model.merges[\(rank)]: token \(quoted(token)) is not in the vocabulary"
            }
        }
    }
}

/// Token text as a dictionary key: compared byte for byte (String keys
/// would merge canonically equivalent tokens) and hashed in one call rather
/// than byte by byte as `[UInt8]` is.
struct TokenBytes: Hashable, Sendable {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }
    init(_ text: String) { bytes = Array(text.utf8) }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

func quoted(_ text: String) -> String {
    "\"" + text.unicodeScalars.map { $0.escaped(asASCII: false) }.joined() + "\""
}

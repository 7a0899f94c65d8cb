/// The `model` section of a tokenizer.json whose type is "Unigram":
/// SentencePiece's unigram language model (XGLM, mBART, T5, XLM-R and the
/// other tokenizers converted from a SentencePiece `model_type: unigram`),
/// encoded as the tokenizers library encodes it (models/unigram/model.rs,
/// `encode_optimized`, which follows SentencePiece's unigram_model.cc).
///
/// A word is cut into the pieces whose scores (log probabilities) sum
/// highest: Viterbi over the word's character boundaries, candidates taken
/// in the library's order (start left to right, shorter pieces first) and
/// replaced only by a strictly higher sum. A character that no one-character
/// piece covers is also an unknown piece scoring the lowest score minus 10;
/// unknown pieces next to each other on the best path are fused into one
/// text, which is then looked up whole (it may be a piece), else spelt as
/// `<0xXX>` byte tokens (`byte_fallback`, when each of its bytes has one), else `unk_id`.
struct UnigramModel: Sendable {
    /// `vocab` in file order: a piece's id is its index.
    let pieces: [(text: String, score: Double)]
    /// UTF-8 of a piece → its id (the last, for a piece given twice, as
    /// the library's map keeps it).
    let tokenIds: [TokenBytes: Int32]
    let unknownId: Int32?
    let byteFallback: Bool
    /// The score of an unknown piece: the lowest score minus 10 (`K_UNK_PENALTY`).
    let unknownScore: Double
    let trie: PieceTrie
    /// UTF-8 length of the longest piece.
    let longestTokenBytes: Int
    /// The ids of `<0x00>` … `<0xFF>`, -1 for one the vocabulary lacks.
    let byteTokenIds: [Int32]
    /// Whether a path may join a line feed with the text around it: false
    /// only when "\n" is a piece (not the unknown one) and no other piece
    /// holds a line feed, so every path cuts on both sides of it.
    let joinsAcrossLineEnds: Bool

    /// - Throws: `ModelError` where the library refuses to load the model.
    init(pieces: [(text: String, score: Double)], unknownId: Int?, byteFallback: Bool) throws(ModelError) {
        if let unknownId {
            guard !pieces.isEmpty else { throw .emptyVocabulary }
            guard unknownId < pieces.count else { throw .unknownIdOutside(unknownId, pieces.count) }
        }
        guard pieces.count <= Int(Int32.max) else { throw .tooManyPieces(pieces.count) }
        self.pieces = pieces
        self.unknownId = unknownId.map { Int32($0) }
        self.byteFallback = byteFallback
        var tokenIds: [TokenBytes: Int32] = [:]
        tokenIds.reserveCapacity(pieces.count)
        var lowest = Double.infinity
        var longest = 0
        for (id, piece) in pieces.enumerated() {
            tokenIds[TokenBytes(piece.text)] = Int32(id)
            if piece.score < lowest { lowest = piece.score }
            longest = max(longest, piece.text.utf8.count)
        }
        self.tokenIds = tokenIds
        unknownScore = lowest - 10
        longestTokenBytes = longest
        trie = PieceTrie(tokenIds)
        byteTokenIds = ByteFallback.tokenIds(in: tokenIds)
        let lineFeedPieces = tokenIds.keys.filter { $0.bytes.contains(0x0A) }
        let lineFeed = tokenIds[TokenBytes("\n")]
        joinsAcrossLineEnds = !(lineFeedPieces.count == 1 && lineFeed != nil && lineFeed != self.unknownId)
    }

    enum ModelError: Error {
        case emptyVocabulary
        case unknownIdOutside(Int, Int)
        case tooManyPieces(Int)

        var message: String {
            switch self {
            case .emptyVocabulary: return "model.vocab is empty but model.unk_id names a piece of it"
            case .unknownIdOutside(let id, let count):
                return "model.unk_id \(id) is outside model.vocab (\(count) pieces)"
            case .tooManyPieces(let count): return "model.vocab has \(count) pieces, more than token ids can number"
            }
        }
    }
}

/// Scratch arrays for the Viterbi pass over one word, kept in the
/// encoding workspace so that words reuse them.
struct UnigramLattice {
    /// Per byte position: the best sum of scores of a path ending there,
    /// where that path's last piece starts (-1: none yet) and its id.
    var bestScore: [Double] = []
    var pieceStart: [Int32] = []
    var pieceId: [Int32] = []
    /// The best path's pieces, last first, as (start, end, id).
    var path: [(start: Int, end: Int, id: Int32)] = []
    var ids: [Int32] = []
}

extension UnigramModel {
    /// Appends the ids of one pre-tokenized piece to `output`, or
    /// `SubwordModel.missingUnknown` where the text needs an unknown piece
    /// and there is no `unk_id` (the library fails on such text).
    func encode(_ piece: TextPiece, workspace: inout EncodingWorkspace, into output: inout [Int]) {
        piece.logicalText().bytes.withUnsafeBufferPointer { word in
            guard !word.isEmpty else { return }
            let hash = WordCache.hash(word)
            if workspace.textWordCache.appendIds(of: word, hash: hash, to: &output) { return }
            guard bestPath(word, lattice: &workspace.lattice) else {
                output.append(Int(SubwordModel.missingUnknown))
                return
            }
            workspace.lattice.ids.removeAll(keepingCapacity: true)
            appendIds(of: word, lattice: &workspace.lattice)
            workspace.textWordCache.insert(word, hash: hash, ids: workspace.lattice.ids[...])
            for id in workspace.lattice.ids { output.append(Int(id)) }
        }
    }

    /// Viterbi, as `encode_optimized`: `lattice.path` gets the best path's
    /// pieces, last first. False when an unknown piece would be taken into
    /// a best path so far and there is no `unk_id` (the library fails then,
    /// whichever path wins in the end).
    private func bestPath(_ word: UnsafeBufferPointer<UInt8>, lattice: inout UnigramLattice) -> Bool {
        let size = word.count
        lattice.bestScore.removeAll(keepingCapacity: true)
        lattice.bestScore.append(contentsOf: repeatElement(0, count: size + 1))
        lattice.pieceStart.removeAll(keepingCapacity: true)
        lattice.pieceStart.append(contentsOf: repeatElement(-1, count: size + 1))
        lattice.pieceId.removeAll(keepingCapacity: true)
        lattice.pieceId.append(contentsOf: repeatElement(0, count: size + 1))

        /// Takes the piece when it improves the best path ending where it
        /// ends; false when it would but is unknown and there is no `unk_id`
        /// (where the library fails).
        func offer(_ score: Double, from start: Int, to end: Int, id: Int32?) -> Bool {
            guard lattice.pieceStart[end] < 0 || score > lattice.bestScore[end] else { return true }
            guard let id else { return false }
            lattice.bestScore[end] = score
            lattice.pieceStart[end] = Int32(start)
            lattice.pieceId[end] = id
            return true
        }
        var start = 0
        while start < size {
            let scoreHere = lattice.bestScore[start]
            // The input is valid UTF-8; the clamp only keeps a stray byte in bounds.
            let characterLength = min(UTF8Scalars.decode(word, at: start).length, size - start)
            var coversCharacter = false
            var node = PieceTrie.root
            var end = start
            while end < size, let next = trie.child(of: node, byte: word[end]) {
                node = next
                end += 1
                guard let id = trie.piece(at: node) else { continue }
                _ = offer(pieces[Int(id)].score + scoreHere, from: start, to: end, id: id)
                if end - start == characterLength { coversCharacter = true }
            }
            if !coversCharacter,
               !offer(unknownScore + scoreHere, from: start, to: start + characterLength, id: unknownId) {
                return false
            }
            start += characterLength
        }
        lattice.path.removeAll(keepingCapacity: true)
        var end = size
        while end > 0 {
            let pieceStart = Int(lattice.pieceStart[end])
            lattice.path.append((pieceStart, end, lattice.pieceId[end]))
            end = pieceStart
        }
        return true
    }

    /// The best path's ids in text order, unknown pieces fused (`fuse_unk`
    /// is always on in the library's Unigram) and looked up as `tokenize` does.
    private func appendIds(of word: UnsafeBufferPointer<UInt8>, lattice: inout UnigramLattice) {
        var index = lattice.path.count - 1
        while index >= 0 {
            let (start, end, id) = lattice.path[index]
            index -= 1
            guard id == unknownId else {
                lattice.ids.append(id)
                continue
            }
            var fusedEnd = end
            while index >= 0, lattice.path[index].id == id {
                fusedEnd = lattice.path[index].end
                index -= 1
            }
            lattice.ids.append(contentsOf: idsOfFused(word[start..<fusedEnd], unknownId: id))
        }
    }

    /// A fused run of unknown pieces: the piece with its text, else its bytes
    /// as `<0xXX>` tokens when `byte_fallback` is on and each exists, else `unk_id`.
    private func idsOfFused(_ text: Slice<UnsafeBufferPointer<UInt8>>, unknownId: Int32) -> [Int32] {
        if let id = tokenIds[TokenBytes(Array(text))] { return [id] }
        if byteFallback, let ids = ByteFallback.ids(spelling: text, table: byteTokenIds) { return ids }
        return [unknownId]
    }
}

/// The pieces' texts as a byte trie, walked once per start position to
/// find every piece that begins there (the library's `common_prefix_search`).
struct PieceTrie: Sendable {
    static let root: Int32 = 0
    /// (node << 8 | byte) → child node.
    private var children: [UInt64: Int32] = [:]
    /// The root's children by byte, the one look-up every start makes.
    private var rootChildren = [Int32](repeating: -1, count: 256)
    /// Per node: the id of the piece ending there, or -1.
    private var pieceIds: [Int32] = [-1]

    init(_ tokenIds: [TokenBytes: Int32]) {
        children.reserveCapacity(tokenIds.count * 2)
        for (token, id) in tokenIds {
            var node = Self.root
            for byte in token.bytes {
                if let next = child(of: node, byte: byte) {
                    node = next
                    continue
                }
                let next = Int32(pieceIds.count)
                pieceIds.append(-1)
                if node == Self.root {
                    rootChildren[Int(byte)] = next
                } else {
                    children[UInt64(node) << 8 | UInt64(byte)] = next
                }
                node = next
            }
            // The empty piece is never found, as in the library.
            if node != Self.root { pieceIds[Int(node)] = id }
        }
    }

    @inline(__always)
    func child(of node: Int32, byte: UInt8) -> Int32? {
        if node == Self.root {
            let next = rootChildren[Int(byte)]
            return next < 0 ? nil : next
        }
        return children[UInt64(node) << 8 | UInt64(byte)]
    }

    @inline(__always)
    func piece(at node: Int32) -> Int32? {
        let id = pieceIds[Int(node)]
        return id < 0 ? nil : id
    }
}

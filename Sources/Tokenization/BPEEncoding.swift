/// Scratch space and word caches for one `encode` call.
///
/// Kept per call rather than in the tokenizer so that `Tokenizer` stays
/// immutable and safe to share between threads; one call over a calibration
/// file sees each distinct word thousands of times, so the cache pays off
/// within a call. A struct passed `inout`, so that the hot loop pays no
/// run-time exclusivity checks as class properties would.
struct EncodingWorkspace {
    /// Keyed by raw bytes, for byte-mapped pieces.
    var byteWordCache = WordCache()
    /// Keyed by the UTF-8 of the word's text, for everything else.
    var textWordCache = WordCache()
    var symbols: [Int32] = []
    var next: [Int32] = []
    var previous: [Int32] = []
    var queue = MergeQueue()
    var lattice = UnigramLattice()
}

/// A binary min-heap of merge candidates packed as rank << 32 | position,
/// so the lowest rank, then the leftmost position, comes out first — the
/// order the Rust library's merge queue uses.
struct MergeQueue {
    private var items: [UInt64] = []

    mutating func removeAll() { items.removeAll(keepingCapacity: true) }

    mutating func push(_ item: UInt64) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[parent] > item else { break }
            items[child] = items[parent]
            child = parent
        }
        items[child] = item
    }

    mutating func pop() -> UInt64? {
        guard let last = items.popLast() else { return nil }
        guard !items.isEmpty else { return last }
        let top = items[0]
        let count = items.count
        var parent = 0
        while true {
            var child = 2 * parent + 1
            if child >= count { break }
            if child + 1 < count && items[child + 1] < items[child] { child += 1 }
            guard items[child] < last else { break }
            items[parent] = items[child]
            parent = child
        }
        items[parent] = last
        return top
    }
}

extension BPEModel {
    /// Appends the ids of one pre-tokenized piece to `output`.
    func encode(_ piece: TextPiece, workspace: inout EncodingWorkspace, into output: inout [Int]) {
        guard piece.isByteMapped, let byteSymbolIds else {
            return encodeText(piece.logicalText().bytes, workspace: &workspace, into: &output)
        }
        let handled = piece.bytes.withUnsafeBufferPointer { word -> Bool in
            let hash = WordCache.hash(word)
            if workspace.byteWordCache.appendIds(of: word, hash: hash, to: &output) { return true }
            workspace.symbols.removeAll(keepingCapacity: true)
            if ignoreMerges, let id = rawByteTokenIds[TokenBytes(Array(word))] {
                workspace.symbols.append(id)
            } else {
                for byte in word {
                    let id = byteSymbolIds[Int(byte)]
                    // A byte missing from the vocabulary needs the
                    // unknown-token rules of the general path.
                    guard id >= 0 else { return false }
                    workspace.symbols.append(id)
                }
                mergeSymbols(&workspace)
            }
            workspace.byteWordCache.insert(word, hash: hash, ids: workspace.symbols[...])
            for id in workspace.symbols { output.append(Int(id)) }
            return true
        }
        if !handled { encodeText(piece.logicalText().bytes, workspace: &workspace, into: &output) }
    }

    /// The general path: one symbol per character, as `BPE::merge_word`.
    private func encodeText(_ text: ArraySlice<UInt8>, workspace: inout EncodingWorkspace, into output: inout [Int]) {
        text.withUnsafeBufferPointer { word in
            let hash = WordCache.hash(word)
            if workspace.textWordCache.appendIds(of: word, hash: hash, to: &output) { return }
            workspace.symbols.removeAll(keepingCapacity: true)
            if ignoreMerges, let id = tokenIds[TokenBytes(Array(word))] {
                workspace.symbols.append(id)
            } else {
                appendInitialSymbols(of: word, to: &workspace.symbols)
                mergeSymbols(&workspace)
            }
            workspace.textWordCache.insert(word, hash: hash, ids: workspace.symbols[...])
            for id in workspace.symbols { output.append(Int(id)) }
        }
    }

    private func appendInitialSymbols(of buffer: UnsafeBufferPointer<UInt8>, to symbols: inout [Int32]) {
        var pendingUnknown = false
        var start = 0
        while start < buffer.count {
            let end = start + UTF8Scalars.decode(buffer, at: start).length
            var symbol = Array(buffer[start..<end])
            if start > 0, let continuingSubwordPrefix { symbol = continuingSubwordPrefix + symbol }
            if end == buffer.count, let endOfWordSuffix { symbol += endOfWordSuffix }
            start = end

            if let id = tokenIds[TokenBytes(symbol)] {
                if pendingUnknown, let unknownTokenId { symbols.append(unknownTokenId) }
                pendingUnknown = false
                symbols.append(id)
                continue
            }
            if byteFallback, let byteIds = ByteFallback.ids(spelling: symbol, table: byteTokenIds) {
                // The library adds these without first flushing a pending
                // unknown token; the order is kept.
                symbols.append(contentsOf: byteIds)
                continue
            }
            guard let unknownTokenId else { continue }  // no unk_token: the character is dropped
            if pendingUnknown && !fuseUnknown { symbols.append(unknownTokenId) }
            pendingUnknown = true
        }
        if pendingUnknown, let unknownTokenId { symbols.append(unknownTokenId) }
    }

    /// Applies merges lowest rank first, leftmost first among equals, until
    /// none applies; `workspace.symbols` holds the result.
    private func mergeSymbols(_ workspace: inout EncodingWorkspace) {
        let count = workspace.symbols.count
        guard count > 1 else { return }
        let none = Int32(count)
        workspace.next.removeAll(keepingCapacity: true)
        workspace.previous.removeAll(keepingCapacity: true)
        for index in 0..<count {
            workspace.next.append(Int32(index + 1))
            workspace.previous.append(Int32(index - 1))
        }
        workspace.queue.removeAll()
        for index in 0..<(count - 1) {
            if let merge = merges.lookup(workspace.symbols[index], workspace.symbols[index + 1]) {
                workspace.queue.push(merge & 0xFFFF_FFFF_0000_0000 | UInt64(index))
            }
        }
        while let candidate = workspace.queue.pop() {
            let position = Int(candidate & 0xFFFF_FFFF)
            let rank = candidate >> 32
            let left = workspace.symbols[position]
            guard left >= 0 else { continue }  // absorbed by a neighbour meanwhile
            let rightPosition = workspace.next[position]
            guard rightPosition != none else { continue }
            let right = workspace.symbols[Int(rightPosition)]
            // Skip entries made stale by an earlier merge of either side.
            guard let merge = merges.lookup(left, right), merge >> 32 == rank else { continue }

            let merged = Int32(truncatingIfNeeded: merge & 0xFFFF_FFFF)
            workspace.symbols[position] = merged
            workspace.symbols[Int(rightPosition)] = -1
            let afterRight = workspace.next[Int(rightPosition)]
            workspace.next[position] = afterRight
            if afterRight != none { workspace.previous[Int(afterRight)] = Int32(position) }

            let before = workspace.previous[position]
            if before >= 0, let merge = merges.lookup(workspace.symbols[Int(before)], merged) {
                workspace.queue.push(merge & 0xFFFF_FFFF_0000_0000 | UInt64(before))
            }
            if afterRight != none, let merge = merges.lookup(merged, workspace.symbols[Int(afterRight)]) {
                workspace.queue.push(merge & 0xFFFF_FFFF_0000_0000 | UInt64(position))
            }
        }
        workspace.symbols.removeAll { $0 == -1 }  // absorbed
    }
}

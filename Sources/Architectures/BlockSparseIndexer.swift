import Foundation
import TensorEngine

/// MiniMax-M3's lightning indexer (transformers' `MiniMaxM3VLIndexer`):
/// which blocks of keys each query of a sparse-attention layer
/// ("minimax_m3_sparse") attends to, chosen for each indexer head apart.
///
/// From the attention's input x, `q_proj` gives `heads` query heads and
/// `k_proj` one key head of `dim`, each normalised by its (1 + w) RMS norm
/// (`q_norm`, `k_norm`) and rotated at its position by the attention's
/// rotary (its first `rotary.rotaryDim` columns, rotate-half). Query s of
/// a sequence of n keys scores each key t ≤ s by the float32 dot product
/// q_h(s) · k(t) (no scale, no ReLU, no head weights), and each of the
/// ⌈n / blockSize⌉ blocks of `blockSize` keys by its best visible key (−∞
/// where it has none); the `localBlocks` blocks ending at the query's own
/// (⌊s / blockSize⌋ − i, at least block 0) score +∞. Head h keeps the
/// blocks of its min(topKBlocks, ⌈n / blockSize⌉) best scores (ties as
/// torch.topk's CPU kernel: `TorchTopK`) but those at −∞, and query heads
/// h · (heads_q / heads) ..< (h + 1) · (heads_q / heads) attend to their
/// visible keys only (`KeySelection.groups`). Source: transformers'
/// `models/minimax_m3_vl/modeling_minimax_m3_vl.py`.
public struct BlockSparseIndexer: Sendable {
    /// `q_proj`: [heads · dim, hidden]; `k_proj`: [dim, hidden].
    public let query: Linear, key: Linear
    /// `q_norm`, `k_norm`: (1 + weight) RMS norms over dim.
    public let queryNorm: Normalization, keyNorm: Normalization
    /// `index_n_heads`, `index_head_dim`.
    public let heads: Int, dim: Int
    /// `index_block_size`, `index_topk_blocks`, `index_local_blocks` (at most 0: none).
    public let blockSize: Int, topKBlocks: Int, localBlocks: Int
    /// The attention's rotary table, sized to `dim` (rotaryDim ≤ dim).
    public let rotary: RotaryEmbedding

    public init(
        query: Linear, key: Linear, queryNorm: Normalization, keyNorm: Normalization, heads: Int, dim: Int, blockSize: Int,
        topKBlocks: Int, localBlocks: Int, rotary: RotaryEmbedding
    ) {
        precondition(heads >= 1 && dim >= 1 && blockSize >= 1 && topKBlocks >= 1)
        precondition(query.outFeatures == heads * dim && key.outFeatures == dim && rotary.rotaryDim <= dim && rotary.headDim == dim)
        self.query = query
        self.key = key
        self.queryNorm = queryNorm
        self.keyNorm = keyNorm
        self.heads = heads
        self.dim = dim
        self.blockSize = blockSize
        self.topKBlocks = topKBlocks
        self.localBlocks = localBlocks
        self.rotary = rotary
    }

    /// The indexer's queries [rows, heads · dim] and keys [rows, dim] of
    /// rows `x` at `positions`: normalised, rotated.
    public func project(_ x: Matrix, positions: [Int]) -> (queries: Matrix, keys: Matrix) {
        var queries = query(x)
        var keys = keyNorm(key(x))
        let (heads, dim) = (heads, dim)
        queryNorm.apply(inPlace: &queries, columns: 0..<(heads * dim), pieceWidth: dim)
        queries.data.withUnsafeMutableBufferPointer {
            rotary.apply(to: $0.baseAddress!, rowStride: heads * dim, headOffsets: (0..<heads).map { $0 * dim }, positions: positions)
        }
        keys.data.withUnsafeMutableBufferPointer {
            rotary.apply(to: $0.baseAddress!, rowStride: dim, headOffsets: [0], positions: positions)
        }
        return (queries, keys)
    }

    /// Whether a query at offset `s` sees every earlier key: it has no
    /// more blocks holding visible keys than each head keeps.
    public func seesAll(_ s: Int) -> Bool { s / blockSize + 1 <= topKBlocks }

    /// The keys each row of `x` [rows, hidden] may attend to, per indexer head, within its sequence of `batch`.
    public func select(_ x: Matrix, batch: TokenBatch) -> KeySelection {
        guard !seesAll(max(batch.longestSequence - 1, 0)) else { return KeySelection(rows: x.rows, groups: heads) }
        return selection(project(x, positions: batch.positions), sequences: batch.sequences)
    }

    /// The keys of each row of projected rows `rows` of `sequences`, per
    /// indexer head (each sequence's rows its keys), from the row at offset
    /// `fromRow` of each sequence on.
    public func selection(_ rows: (queries: Matrix, keys: Matrix), sequences: [Range<Int>], fromRow: Int = 0) -> KeySelection {
        var selection = KeySelection(rows: rows.queries.rows, groups: heads)
        for sequence in sequences {
            for s in fromRow..<sequence.count where !seesAll(s) {
                let row = sequence.lowerBound + s
                let chosen = chosenKeys(rows.queries, row: row, keys: rows.keys.data, keyRows: sequence, offset: s)
                for (h, keys) in chosen.enumerated() { selection.keep(row: row, group: h, keys: keys, length: s + 1) }
            }
        }
        return selection
    }

    /// For each indexer head, the offsets (within `keyRows`) of the keys
    /// that query row `row` of `queries`, at offset `offset` of its
    /// sequence, attends to, scored against the keys at `keyRows` of `keys`
    /// [.., dim] (all the sequence's keys so far: transformers blocks them all).
    public func chosenKeys(_ queries: Matrix, row: Int, keys: [Float], keyRows: Range<Int>, offset s: Int) -> [[Int]] {
        let count = keyRows.count, visible = s + 1, (heads, dim, size) = (heads, dim, blockSize)
        precondition(visible <= count)
        var products = [Float](repeating: 0, count: heads * visible)
        queries.data.withUnsafeBufferPointer { q in
            keys.withUnsafeBufferPointer { k in
                products.withUnsafeMutableBufferPointer { p in
                    BLAS.gemm(
                        m: heads, n: visible, k: dim, q.baseAddress! + row * heads * dim, lda: dim,
                        k.baseAddress! + keyRows.lowerBound * dim, ldb: dim, transposeB: true, p.baseAddress!, ldc: visible, alpha: 1)
                }
            }
        }
        let blocks = (count + size - 1) / size, ownBlock = s / size
        // The local blocks: the last `localBlocks` up to the query's own (none for 0 or fewer).
        let firstLocal = localBlocks > 0 ? max(ownBlock - localBlocks + 1, 0) : ownBlock + 1
        return (0..<heads).map { h in
            var scores = [Float](repeating: -.infinity, count: blocks)
            for b in 0...ownBlock {
                if b >= firstLocal { scores[b] = .infinity; continue }
                var best = -Float.infinity
                for t in (b * size)..<min((b + 1) * size, visible) {
                    let value = products[h * visible + t]
                    // torch's amax propagates a NaN.
                    if value.isNaN || best.isNaN { best = .nan } else if value > best { best = value }
                }
                scores[b] = best
            }
            let chosen = TorchTopK.indices(count: blocks, k: min(topKBlocks, blocks)) { scores[$0] }
            return chosen.filter { scores[$0] != -.infinity }.sorted().flatMap { b in (b * size)..<min((b + 1) * size, visible) }
        }
    }
}

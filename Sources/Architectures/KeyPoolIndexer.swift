import Foundation
import TensorEngine

/// Kolibri 1.1's weightless indexer (transformers' `Kolibri1_1Indexer`):
/// which keys each query of an indexed-attention layer attends to.
///
/// Queries and keys are scored by the attention's own heads, both rounded
/// to NVFP4 first (`NVFP4`): query row s against key t by
///
///     I(s, t) = head_dim^-1/2 / heads · Σ_{h < heads} ReLU(q_h(s) · k_0(t)),
///
/// the first `heads` query heads against key head 0. An indexer layer
/// (`selectsPool`) first chooses each query's pool of `poolSize` candidate
/// keys — all of them while the query sees no more, otherwise the blocks
/// of `compression` keys whose averaged (then rounded) keys score highest,
/// the query's incomplete newest block scoring 0 — and passes it on to the
/// reindexer layers after it (`SelfAttention.keySelectionSharing`). Every
/// indexed layer's query then attends to the `topK` highest scoring keys
/// of its pool besides the first `sinkTokens` and its last `localTokens`
/// keys (all keys while it sees no more than the three together), to keys
/// and values rounded to NVFP4. Ties go to the earlier key, as transformers'
/// `top_k_mask`. Scores are Float32 sums over the heads in order, as
/// transformers computes them.
public struct KeyPoolIndexer: Sendable {
    /// `index_num_heads`.
    public let heads: Int
    /// `index_topk`, `index_pool_size`, `index_compression`.
    public let topK: Int, poolSize: Int, compression: Int
    /// `index_num_local_tokens`, `index_num_sink_tokens`.
    public let localTokens: Int, sinkTokens: Int
    /// Whether the layer chooses a new pool (is in `index_layers`).
    public let selectsPool: Bool

    public init(heads: Int, topK: Int, poolSize: Int, compression: Int, localTokens: Int, sinkTokens: Int, selectsPool: Bool) {
        precondition(heads >= 1 && topK >= 1 && poolSize >= 1 && compression >= 1)
        self.heads = heads
        self.topK = topK
        self.poolSize = poolSize
        self.compression = compression
        self.localTokens = localTokens
        self.sinkTokens = sinkTokens
        self.selectsPool = selectsPool
    }

    /// Keys a query sees before selection applies: the top-k budget (the
    /// counts as configured; negative ones select no tokens, as in transformers),
    /// summed as Python sums them (past Int's range: no selection, or all).
    var budget: Int { Int(clamping: max(Int128(topK) + Int128(localTokens) + Int128(sinkTokens), 0)) }

    /// Rows `rows` of head `head`'s columns of `qkv` [.., layout.width]
    /// (`offset` its first column), rounded to NVFP4: [rows, headDim].
    private func rounded(_ qkv: Matrix, offset: Int, rows: Range<Int>, headDim: Int) -> [Float] {
        var values = [Float](repeating: 0, count: rows.count * headDim)
        qkv.data.withUnsafeBufferPointer { source in
            for (i, r) in rows.enumerated() {
                for j in 0..<headDim { values[i * headDim + j] = source[r * qkv.cols + offset + j] }
            }
        }
        return NVFP4.fakeQuantized(values)
    }

    /// I(s, t) of query rows `queryRows` (absolute) against `keys` [count, headDim]:
    /// [queryRows.count, count].
    private func scores(_ qkv: Matrix, layout: QKVLayout, queryRows: Range<Int>, keys: [Float], count: Int) -> [Float] {
        let d = layout.headDim, m = queryRows.count
        var total = [Float](repeating: 0, count: m * count)
        var products = [Float](repeating: 0, count: m * count)
        for h in 0..<heads {
            let queries = rounded(qkv, offset: layout.queryOffset(head: h), rows: queryRows, headDim: d)
            queries.withUnsafeBufferPointer { q in
                keys.withUnsafeBufferPointer { k in
                    products.withUnsafeMutableBufferPointer { p in
                        BLAS.gemm(
                            m: m, n: count, k: d, q.baseAddress!, lda: d, k.baseAddress!, ldb: d, transposeB: true,
                            p.baseAddress!, ldc: count, alpha: 1)
                    }
                }
            }
            for i in total.indices { total[i] += max(products[i], 0) }
        }
        let weight = Float(pow(Double(d), -0.5) / Double(heads))
        for i in total.indices { total[i] *= weight }
        return total
    }

    /// The first `k` of `candidates` by `score` (highest first, the earlier on ties).
    private static func top(_ k: Int, of candidates: [Int], score: (Int) -> Float) -> [Int] {
        guard candidates.count > k else { return candidates }
        return Array(candidates.sorted { score($0) > score($1) || (score($0) == score($1) && $0 < $1) }.prefix(k))
    }

    /// Rows of queries scored at once (bounds the [rows, keys] scores).
    private static let rowChunk = 256

    /// Each row's pool (nil entries: all its keys) in processed rows `qkv`
    /// [rows, layout.width] of `sequences`, from the row at offset `fromRow`
    /// of each sequence on (a decoding step's newest row; the earlier rows'
    /// entries nil, their queries not read).
    public func pool(_ qkv: Matrix, layout: QKVLayout, sequences: [Range<Int>], fromRow: Int = 0) -> KeySelection {
        var pool = KeySelection(rows: qkv.rows)
        let c = compression, d = layout.headDim
        for sequence in sequences where sequence.count > poolSize {
            let blocks = sequence.count / c
            // Each complete block's keys (head 0) averaged, then rounded.
            var summaries = [Float](repeating: 0, count: blocks * d)
            qkv.data.withUnsafeBufferPointer { source in
                for b in 0..<blocks {
                    for j in 0..<d {
                        var sum: Float = 0
                        for i in 0..<c { sum += source[(sequence.lowerBound + b * c + i) * qkv.cols + layout.keyOffset(kvHead: 0) + j] }
                        summaries[b * d + j] = sum / Float(c)
                    }
                }
            }
            summaries = NVFP4.fakeQuantized(summaries)
            for first in stride(from: max(poolSize, fromRow), to: sequence.count, by: Self.rowChunk) {
                let rows = (sequence.lowerBound + first)..<(sequence.lowerBound + min(first + Self.rowChunk, sequence.count))
                let scores = self.scores(qkv, layout: layout, queryRows: rows, keys: summaries, count: blocks)
                for (i, row) in rows.enumerated() {
                    let length = row - sequence.lowerBound + 1
                    // Complete blocks score, an incomplete newest one scores 0.
                    let visibleBlocks = (length + c - 1) / c, complete = length / c
                    let chosen = Self.top(poolSize / c, of: Array(0..<visibleBlocks)) { $0 < complete ? scores[i * blocks + $0] : 0 }
                    pool.keep(row: row, keys: chosen.flatMap { b in (b * c)..<min((b + 1) * c, length) }, length: length)
                }
            }
        }
        return pool
    }

    /// Each row's keys (nil entries: all of them) in processed rows `qkv`
    /// [rows, layout.width] of `sequences`, chosen from `pool`, from the row
    /// at offset `fromRow` of each sequence on (as `pool`).
    public func selection(_ qkv: Matrix, layout: QKVLayout, sequences: [Range<Int>], pool: KeySelection, fromRow: Int = 0) -> KeySelection {
        var selection = KeySelection(rows: qkv.rows)
        for sequence in sequences where sequence.count > budget {
            let keys = rounded(qkv, offset: layout.keyOffset(kvHead: 0), rows: sequence, headDim: layout.headDim)
            for first in stride(from: max(budget, fromRow), to: sequence.count, by: Self.rowChunk) {
                let rows = (sequence.lowerBound + first)..<(sequence.lowerBound + min(first + Self.rowChunk, sequence.count))
                let scores = self.scores(qkv, layout: layout, queryRows: rows, keys: keys, count: sequence.count)
                for (i, row) in rows.enumerated() {
                    let length = row - sequence.lowerBound + 1
                    // The sinks end and the local tokens start within the visible keys.
                    let sinkEnd = min(max(sinkTokens, 0), length), localStart = max(length - min(max(localTokens, 0), length), sinkEnd)
                    let candidates = (sinkEnd..<localStart).filter { pool.keeps(row: row, key: $0) }
                    let chosen = Self.top(topK, of: candidates) { scores[i * sequence.count + $0] }
                    selection.keep(row: row, keys: chosen + Array(0..<sinkEnd) + Array(localStart..<length), length: length)
                }
            }
        }
        return selection
    }

    /// The key and value columns of `qkv` [rows, layout.width] rounded to NVFP4.
    public static func roundingKeysValues(_ qkv: Matrix, layout: QKVLayout) -> Matrix {
        var qkv = qkv
        let (width, queryWidth) = (layout.width, layout.queryWidth)
        qkv.data.withUnsafeMutableBufferPointer { values in
            for r in 0..<qkv.rows { NVFP4.fakeQuantize(values.baseAddress! + r * width + queryWidth, count: width - queryWidth) }
        }
        return qkv
    }
}

extension SelfAttention {
    /// An indexed-attention layer's attention over the batch
    /// (`keyPool`): keys and values reused or stored as `keyValueSharing`
    /// says, the pool chosen (an indexer) or reused (a reindexer) and
    /// stored as `keySelectionSharing` says, then the selected keys attended
    /// to, rounded with the values to NVFP4.
    func pooledAttention(_ x: Matrix, _ batch: TokenBatch, shared: SharedAttentionState?, indexer: KeyPoolIndexer) -> Matrix {
        let qkv = projectedQKV(
            x, positions: batch.positions, sharedKeysValues: keyValueSharing?.reusedLayer.map { shared!.keysValues(of: $0) })
        if let layer = keyValueSharing?.storedLayer { shared!.store(keysValues(qkv), layer: layer) }
        return attendingPool(
            qkv, input: x, sequences: batch.sequences, indexer: indexer, reusedPool: { shared!.selection(of: $0) },
            storePool: { shared!.store($0, layer: $1) })
    }

    /// `pooledAttention` from projected rows `qkv` of `sequences` (keys
    /// and values reused or stored already): the pool chosen (an indexer)
    /// and stored by `storePool`, or read by `reusedPool` (a reindexer),
    /// then the selected keys attended to. A store-only layer returns no
    /// columns (`TransformerBlock.sharingProducer`). The key/value-cache
    /// decoder's prefill runs it too.
    public func attendingPool(
        _ qkv: Matrix, input x: Matrix, sequences: [Range<Int>], indexer: KeyPoolIndexer,
        reusedPool: (Int) -> KeySelection, storePool: (KeySelection, Int) -> Void
    ) -> Matrix {
        var pool: KeySelection?
        if indexer.selectsPool {
            pool = indexer.pool(qkv, layout: layout, sequences: sequences)
            if let layer = keySelectionSharing?.storedLayer { storePool(pool!, layer) }
        }
        if storesOnly { return Matrix(zeros: x.rows, 0) }
        let selection = indexer.selection(
            qkv, layout: layout, sequences: sequences, pool: pool ?? reusedPool(keySelectionSharing!.reusedLayer!))
        let attended = causalAttention(
            qkv: KeyPoolIndexer.roundingKeysValues(qkv, layout: layout), layout: layout, sequences: sequences,
            scale: scale, keySelection: selection)
        return finish(attended, input: x)
    }
}

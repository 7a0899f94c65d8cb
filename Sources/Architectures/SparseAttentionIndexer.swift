import CheckpointIO
import Foundation
import TensorEngine

/// DeepSeek Sparse Attention's lightning indexer (DeepSeek-V3.2's
/// `DeepseekV32Indexer`): for each query it chooses the `topK` earlier keys
/// the attention may read.
///
/// With the latent attention's query latent c = q_a_layernorm(q_a_proj(x))
/// [rows, q_lora_rank], per row
///
///     q = wq_b c  [heads × dim],   k = LayerNorm(wk x)  [dim],   w = weights_proj x · heads^-1/2  [heads]
///
/// `rotary.headDim` columns of each head of q and of k (the first, or the
/// last: `ropeStart`) rotated to the row's position, and query s scores key t ≤ s by
///
///     I(s, t) = Σ_h w_h(s) · ReLU(dim^-1/2 · q_h(s) · k(t)),
///
/// keeping the `topK` keys of highest score (all of them while the query
/// has no more than that many). The projections run in the run's matrix
/// arithmetic, like every `Linear`; the scores, as transformers computes
/// them, in float32. Keys of equal score at the boundary are kept as
/// torch.topk's CPU kernel keeps them (`TorchTopK`). Source:
/// transformers' `models/deepseek_v32/modeling_deepseek_v32.py`.
public struct SparseAttentionIndexer: Sendable {
    /// wq_b: [heads · dim, q_lora_rank].
    public let queryUp: Linear
    /// wk: [dim, hidden].
    public let key: Linear
    /// k_norm: LayerNorm over dim (eps 1e-6).
    public let keyNorm: Normalization
    /// weights_proj: [heads, hidden].
    public let headWeights: Linear
    public let heads: Int, dim: Int
    /// `index_topk`.
    public let topK: Int
    /// Rotates `rotary.headDim` columns of each head from `ropeStart`.
    public let rotary: RotaryEmbedding
    /// Where each head's rotated columns start: 0 (DeepSeek-V3.2, GLM-5), or
    /// dim − `rotary.headDim` where the last ones rotate (Hunyuan V4's "flipped" rope).
    public var ropeStart = 0
    /// Mistral Large 4's indexer (`MistralLarge4TextIndexer`) reads its
    /// queries from the layer input normalised by this LayerNorm
    /// (`q_input_norm`, eps 1e-6), wq_b then [heads · dim, hidden], not
    /// from the attention's query latent; nil: the query latent.
    public var queryInputNorm: Normalization? = nil
    /// Multiplies each query head by a factor of its head and position
    /// (Mistral Large 4's `softmax_scaling`); nil for none.
    public var queryScale: LogPositionQueryScale? = nil
    /// GLM-5-Next's key pools (`Glm5NextTextIndexer`); nil: keys chosen one by one.
    public var keyPools: KeyPools? = nil

    /// GLM-5-Next's pooled selection: a query scores pools of `size`
    /// consecutive keys (from the sequence's first), each complete pool
    /// it sees one key, per channel c the softmax over the pool's keys t
    /// (at offset i in it) of gate(x_t)[c] + positionBias[i, c] weighing
    /// their keys' channel c; it attends to the keys of the topK / size
    /// pools of highest score and always to those of its own incomplete pool
    /// (`index_kpool_always_select_tail`). Scores as the one-key indexer's.
    public struct KeyPools: Sendable {
        /// `index_kpool`.
        public let size: Int
        /// `index_kpool_compress_ape`: [size, dim].
        public let positionBias: [Float]
        /// `index_kpool_compress_gate`: [dim, hidden].
        public let gate: Linear

        public init(size: Int, positionBias: [Float], gate: Linear) {
            precondition(size >= 1 && positionBias.count == size * gate.outFeatures)
            self.size = size
            self.positionBias = positionBias
            self.gate = gate
        }
    }

    /// Columns of a row of `Rows.keys`: its key, then with key pools the
    /// row's gate scores (what a decoding cache keeps per key).
    public var keyWidth: Int { keyPools == nil ? dim : 2 * dim }

    /// Whether a query seeing `count` keys attends to fewer than all of them.
    public func selects(among count: Int) -> Bool {
        guard let keyPools else { return count > topK }
        return count / keyPools.size > topK / keyPools.size
    }

    public init(
        queryUp: Linear, key: Linear, keyNorm: Normalization, headWeights: Linear, heads: Int, dim: Int, topK: Int,
        rotary: RotaryEmbedding
    ) {
        precondition(queryUp.outFeatures == heads * dim && key.outFeatures == dim && headWeights.outFeatures == heads)
        precondition(topK >= 1 && rotary.headDim <= dim && key.inFeatures == headWeights.inFeatures)
        self.queryUp = queryUp
        self.key = key
        self.keyNorm = keyNorm
        self.headWeights = headWeights
        self.heads = heads
        self.dim = dim
        self.topK = topK
        self.rotary = rotary
    }

    /// The indexer's queries [rows, heads · dim] (rotated), head weights
    /// [rows, heads] (times heads^-1/2) and keys [rows, dim] (normalised,
    /// rotated) of some rows.
    public struct Rows {
        public let queries: Matrix, weights: Matrix, keys: Matrix
    }

    /// The indexer's rows of `x` [rows, hidden] with query latents
    /// `queryLatent` [rows, q_lora_rank] at `positions` (nil with a
    /// `queryInputNorm`, which gives them from `x`).
    public func project(_ x: Matrix, queryLatent: Matrix?, positions: [Int]) -> Rows {
        var queries = queryUp(queryInputNorm.map { $0(x) } ?? queryLatent!)
        if let queryScale {
            let (heads, dim) = (heads, dim)
            queries.data.withUnsafeMutableBufferPointer {
                queryScale.apply(to: $0.baseAddress!, rowStride: heads * dim, headOffsets: (0..<heads).map { $0 * dim }, width: dim, positions: positions)
            }
        }
        var keys = keyNorm(key(x))
        if let keyPools { keys = keys.concatenatingColumns(keyPools.gate(x)) }
        var weights = headWeights(x)
        let headScale = 1 / Float(heads).squareRoot()
        weights.data.withUnsafeMutableBufferPointer { w in
            for i in w.indices { w[i] *= headScale }
        }
        queries.data.withUnsafeMutableBufferPointer {
            rotary.apply(to: $0.baseAddress!, rowStride: heads * dim, headOffsets: (0..<heads).map { $0 * dim + ropeStart }, positions: positions)
        }
        keys.data.withUnsafeMutableBufferPointer {
            rotary.apply(to: $0.baseAddress!, rowStride: keyWidth, headOffsets: [ropeStart], positions: positions)
        }
        return Rows(queries: queries, weights: weights, keys: keys)
    }

    /// The keys each row of `x` may attend to, within its sequence of `batch`.
    public func select(_ x: Matrix, queryLatent: Matrix?, batch: TokenBatch) -> KeySelection {
        // Queries with no more keys than topK see them all: no scores needed.
        guard selects(among: batch.longestSequence) else { return KeySelection(rows: x.rows) }
        return selection(project(x, queryLatent: queryLatent, positions: batch.positions), sequences: batch.sequences)
    }

    /// The keys each of `rows` may attend to, within its sequence of `sequences`.
    public func selection(_ rows: Rows, sequences: [Range<Int>]) -> KeySelection {
        var selection = KeySelection(rows: rows.keys.rows)
        for sequence in sequences {
            for s in 0..<sequence.count where selects(among: s + 1) {
                let row = sequence.lowerBound + s
                let keys = chosenKeys(rows, row: row, keys: rows.keys.data, keyRows: sequence.lowerBound..<(row + 1), maskLength: sequence.count)
                selection.keep(row: row, keys: keys, length: s + 1)
            }
        }
        return selection
    }

    /// The offsets within `keyRows` of the keys row `row` of `rows` keeps:
    /// the `topK` of highest I(row, t) over the keys at `keyRows` of `keys`
    /// [.., dim] (all of them when there are no more). As transformers
    /// chooses them: torch.topk over the query's row of the causal mask,
    /// `maskLength` keys (the sequence's; nil: `keyRows.count`), those it may
    /// not see at the float32 minimum, keys of equal score taken in the
    /// order its CPU kernel takes them (`TorchTopK`).
    public func chosenKeys(_ rows: Rows, row: Int, keys: [Float], keyRows: Range<Int>, maskLength: Int? = nil) -> [Int] {
        let count = keyRows.count
        guard selects(among: count) else { return Array(0..<count) }
        if let keyPools { return pooledKeys(rows, row: row, keys: keys, keyRows: keyRows, maskLength: maskLength, pools: keyPools) }
        let scores = indexScores(rows, row: row, keys: keys, keyRows: keyRows, stride: keyWidth)
        var row = (0..<max(maskLength ?? count, count)).map { t in (value: t < count ? scores[t] : -Float.greatestFiniteMagnitude, index: t) }
        TorchTopK.select(&row, k: topK)
        // Scores of -inf rank below the masked later keys, which the causal mask hides anyway.
        return row.prefix(topK).map(\.index).filter { $0 < count }.sorted()
    }

    /// I(row, t) against the keys [count, dim] at `keys` (rows `stride` apart), in float32.
    private func indexScores(_ rows: Rows, row: Int, keys: UnsafePointer<Float>, count: Int, stride: Int) -> [Float] {
        let scale = 1 / Float(dim).squareRoot()
        var products = [Float](repeating: 0, count: heads * count)
        rows.queries.data.withUnsafeBufferPointer { q in
            products.withUnsafeMutableBufferPointer { p in
                BLAS.gemm(
                    m: heads, n: count, k: dim, q.baseAddress! + row * heads * dim, lda: dim, keys, ldb: stride, transposeB: true,
                    p.baseAddress!, ldc: count, alpha: scale)
            }
        }
        var scores = [Float](repeating: 0, count: count)
        for h in 0..<heads {
            let w = rows.weights.data[row * heads + h]
            for t in 0..<count { scores[t] += w * max(products[h * count + t], 0) }
        }
        return scores
    }

    private func indexScores(_ rows: Rows, row: Int, keys: [Float], keyRows: Range<Int>, stride: Int) -> [Float] {
        keys.withUnsafeBufferPointer { indexScores(rows, row: row, keys: $0.baseAddress! + keyRows.lowerBound * stride, count: keyRows.count, stride: stride) }
    }

    /// `chosenKeys` with key pools: the complete pools the query sees
    /// (torch.topk over the sequence's pools, `maskLength` keys' worth,
    /// those it does not see at the float32 minimum), then its own
    /// incomplete pool's keys, as `Glm5NextTextIndexer` with one sequence
    /// and no padding.
    private func pooledKeys(_ rows: Rows, row: Int, keys: [Float], keyRows: Range<Int>, maskLength: Int?, pools: KeyPools) -> [Int] {
        let count = keyRows.count, size = pools.size, width = keyWidth, visible = count / size
        // Each visible pool's key: per channel, the softmax of gate + position bias weighing the pool's keys.
        var pooled = [Float](repeating: 0, count: visible * dim)
        var logits = [Float](repeating: 0, count: size)
        keys.withUnsafeBufferPointer { k in
            let base = k.baseAddress! + keyRows.lowerBound * width
            for b in 0..<visible {
                for c in 0..<dim {
                    var largest = -Float.infinity
                    for i in 0..<size {
                        logits[i] = base[(b * size + i) * width + dim + c] + pools.positionBias[i * dim + c]
                        largest = max(largest, logits[i])
                    }
                    var sum: Float = 0
                    for i in 0..<size {
                        logits[i] = exp(logits[i] - largest)
                        sum += logits[i]
                    }
                    var value: Float = 0
                    for i in 0..<size { value += logits[i] / sum * base[(b * size + i) * width + c] }
                    pooled[b * dim + c] = value
                }
            }
        }
        let scores = pooled.withUnsafeBufferPointer { indexScores(rows, row: row, keys: $0.baseAddress!, count: visible, stride: dim) }
        let poolCount = max(maskLength ?? count, count) / size, k = topK / size
        var entries = (0..<poolCount).map { b in (value: b < visible ? scores[b] : -Float.greatestFiniteMagnitude, index: b) }
        TorchTopK.select(&entries, k: k)
        let chosen = entries.prefix(k).map(\.index).filter { $0 < visible }.sorted()
        return chosen.flatMap { ($0 * size)..<(($0 + 1) * size) } + Array((visible * size)..<count)
    }
}

extension SparseAttentionIndexer {
    /// The indexer stored under `prefix` (`wq_b` [heads · dim, queryRank],
    /// `wk` [dim, hidden], the LayerNorm `k_norm` [dim] of eps `keyNormEps`,
    /// `weights_proj` [heads, hidden]), rotating each head's first
    /// `rotary.headDim` columns, or its last when `ropeAtEnd`. Interleaved
    /// rope pairs (`interleaved`: GLM-5's, Hunyuan V4's) are de-interleaved in
    /// wq_b, wk and k_norm, as `LatentQKVProjection` does (dot products and the
    /// norm's statistics are the same in either order).
    /// - Throws: `DroptraceError` for a missing tensor or a shape the sizes contradict.
    init(
        _ weights: Weights, _ prefix: String, queryRank rank: Int, hidden d: Int, heads: Int, dim: Int, topK: Int,
        rotary: RotaryEmbedding, interleaved: Bool, ropeAtEnd: Bool = false, keyNormEps: Double = 1e-6
    ) throws {
        let ropeStart = ropeAtEnd ? dim - rotary.headDim : 0
        func deinterleaved(_ values: [Float], rowWidth: Int, ropeStarts: [Int]) -> [Float] {
            guard interleaved else { return values }
            return LatentQKVProjection.deinterleavingRope(values, rowWidth: rowWidth, ropeStarts: ropeStarts, ropeDim: rotary.headDim)
        }
        guard case .layer(let weight, let bias, let eps) = try weights.layerNorm(prefix + "k_norm", size: dim, eps: keyNormEps) else {
            preconditionFailure("layerNorm gives a LayerNorm")
        }
        self.init(
            queryUp: try weights.linear(prefix + "wq_b", in: rank, out: heads * dim, bias: false).rearrangingRows {
                deinterleaved($0, rowWidth: $1, ropeStarts: (0..<heads).map { $0 * dim + ropeStart })
            },
            key: try weights.linear(prefix + "wk", in: d, out: dim, bias: false).rearrangingRows {
                deinterleaved($0, rowWidth: $1, ropeStarts: [ropeStart])
            },
            keyNorm: .layer(
                weight: deinterleaved(weight, rowWidth: 1, ropeStarts: [ropeStart]),
                bias: deinterleaved(bias, rowWidth: 1, ropeStarts: [ropeStart]), eps: eps),
            headWeights: try weights.linear(prefix + "weights_proj", in: d, out: heads, bias: false),
            heads: heads, dim: dim, topK: topK, rotary: rotary)
        self.ropeStart = ropeStart
    }
}

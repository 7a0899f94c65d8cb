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
        var weights = headWeights(x)
        let headScale = 1 / Float(heads).squareRoot()
        weights.data.withUnsafeMutableBufferPointer { w in
            for i in w.indices { w[i] *= headScale }
        }
        queries.data.withUnsafeMutableBufferPointer {
            rotary.apply(to: $0.baseAddress!, rowStride: heads * dim, headOffsets: (0..<heads).map { $0 * dim + ropeStart }, positions: positions)
        }
        keys.data.withUnsafeMutableBufferPointer {
            rotary.apply(to: $0.baseAddress!, rowStride: dim, headOffsets: [ropeStart], positions: positions)
        }
        return Rows(queries: queries, weights: weights, keys: keys)
    }

    /// The keys each row of `x` may attend to, within its sequence of `batch`.
    public func select(_ x: Matrix, queryLatent: Matrix?, batch: TokenBatch) -> KeySelection {
        // Queries with no more keys than topK see them all: no scores needed.
        guard batch.longestSequence > topK else { return KeySelection(rows: x.rows) }
        return selection(project(x, queryLatent: queryLatent, positions: batch.positions), sequences: batch.sequences)
    }

    /// The keys each of `rows` may attend to, within its sequence of `sequences`.
    public func selection(_ rows: Rows, sequences: [Range<Int>]) -> KeySelection {
        var selection = KeySelection(rows: rows.keys.rows)
        for sequence in sequences {
            for s in 0..<sequence.count where s + 1 > topK {
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
        let count = keyRows.count, scale = 1 / Float(dim).squareRoot()
        guard count > topK else { return Array(0..<count) }
        var products = [Float](repeating: 0, count: heads * count)
        rows.queries.data.withUnsafeBufferPointer { q in
            keys.withUnsafeBufferPointer { k in
                products.withUnsafeMutableBufferPointer { p in
                    BLAS.gemm(
                        m: heads, n: count, k: dim, q.baseAddress! + row * heads * dim, lda: dim,
                        k.baseAddress! + keyRows.lowerBound * dim, ldb: dim, transposeB: true, p.baseAddress!, ldc: count,
                        alpha: scale)
                }
            }
        }
        var scores = [Float](repeating: 0, count: count)
        for h in 0..<heads {
            let w = rows.weights.data[row * heads + h]
            for t in 0..<count { scores[t] += w * max(products[h * count + t], 0) }
        }
        var row = (0..<max(maskLength ?? count, count)).map { t in (value: t < count ? scores[t] : -Float.greatestFiniteMagnitude, index: t) }
        TorchTopK.select(&row, k: topK)
        return row.prefix(topK).map(\.index).sorted()
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

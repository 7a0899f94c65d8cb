import Foundation
import TensorEngine

/// Qwen4-Exp's QSA indexer (transformers' `Qwen4ExpTextQSAIndexer`): which
/// keys each query of an indexed-attention layer attends to, chosen by
/// blocks of `compression` consecutive keys.
///
/// From the attention's input x, `index_qk_proj` gives `heads` query heads
/// and one key head of `dim`; each query head is normalised by the (1 + w)
/// RMS norm `q_layernorm` and rotated at its position (the attention's
/// rotary: its first `rotary.rotaryDim` columns, rotate-half). Query row s
/// of a sequence sees its B = (s + 1) / compression complete blocks; each
/// block's key is the float32 mean of its raw keys, normalised by
/// `k_layernorm` and rotated at the block's first position, and scores
///
///     I(s, b) = Σ_h ReLU(q_h(s) · k(b)) / √dim
///
/// in float32. The query keeps the keys of its min(budget / compression, B)
/// best blocks (ties as torch.topk's CPU kernel, `TorchTopK`) plus those
/// after its last complete block — not necessarily itself. Source:
/// transformers' `models/qwen4_exp/modeling_qwen4_exp.py`.
public struct QSAIndexer: Sendable {
    /// `index_qk_proj`: [(heads + 1) · dim, hidden].
    public let projection: Linear
    /// `q_layernorm`, `k_layernorm`: (1 + weight) over dim.
    public let queryNorm: Normalization, keyNorm: Normalization
    public let heads: Int, dim: Int
    /// `indexer_budget`, `indexer_compress_ratio`.
    public let budget: Int, compression: Int
    /// The attention's rotary table, sized to `dim` (rotaryDim ≤ dim).
    public let rotary: RotaryEmbedding

    public init(
        projection: Linear, queryNorm: Normalization, keyNorm: Normalization, heads: Int, dim: Int, budget: Int, compression: Int,
        rotary: RotaryEmbedding
    ) {
        precondition(heads >= 1 && dim >= 1 && compression >= 1 && budget >= compression && budget % compression == 0)
        precondition(projection.outFeatures == (heads + 1) * dim && rotary.rotaryDim <= dim && rotary.headDim == dim)
        self.projection = projection
        self.queryNorm = queryNorm
        self.keyNorm = keyNorm
        self.heads = heads
        self.dim = dim
        self.budget = budget
        self.compression = compression
        self.rotary = rotary
    }

    /// Blocks a query keeps.
    public var blocksKept: Int { budget / compression }

    /// The keys each row of `x` [rows, hidden] may attend to, within its sequence of `batch`.
    public func select(_ x: Matrix, batch: TokenBatch) -> KeySelection {
        var selection = KeySelection(rows: x.rows)
        // A query sees every key while it has no more complete blocks than it keeps.
        guard batch.longestSequence >= (blocksKept + 1) * compression else { return selection }
        let qk = projected(x, positions: batch.positions)
        let width = qk.cols
        for sequence in batch.sequences {
            let start = sequence.lowerBound, count = sequence.count
            let blocks = count / compression
            guard blocks > blocksKept else { continue }
            // Every complete block's key: the mean of its raw keys, normalised, rotated at its first position.
            let pooled = blockKeys(qk, firstRows: (0..<blocks).map { start + $0 * compression }, positions: batch.positions)
            for s in 0..<count {
                let seen = (s + 1) / compression
                guard seen > blocksKept else { continue }
                let row = start + s
                selection.keep(row: row, keys: chosenKeys(qk.data, queryOffset: row * width, pooled: pooled, seen: seen, length: s + 1), length: s + 1)
            }
        }
        return selection
    }

    /// The projected rows [rows, (heads + 1) · dim]: the query heads
    /// normalised and rotated at `positions`, the raw key after them.
    func projected(_ x: Matrix, positions: [Int]) -> Matrix {
        var qk = projection(x)
        let heads = heads, dim = dim, width = qk.cols
        queryNorm.apply(inPlace: &qk, columns: 0..<(heads * dim), pieceWidth: dim)
        qk.data.withUnsafeMutableBufferPointer {
            rotary.apply(to: $0.baseAddress!, rowStride: width, headOffsets: (0..<heads).map { $0 * dim }, positions: positions)
        }
        return qk
    }

    /// The keys [blocks · dim] of the blocks of projected rows `qk` starting
    /// at rows `firstRows`: each the float32 mean of its `compression` raw
    /// keys, normalised by `k_layernorm` and rotated at its first row's position.
    func blockKeys(_ qk: Matrix, firstRows: [Int], positions: [Int]) -> [Float] {
        let dim = dim, width = qk.cols, keyOffset = heads * dim, blocks = firstRows.count
        var pooled = Matrix(zeros: blocks, dim)
        for (b, first) in firstRows.enumerated() {
            for j in 0..<dim {
                var sum: Float = 0
                for t in 0..<compression { sum += qk.data[(first + t) * width + keyOffset + j] }
                pooled.data[b * dim + j] = sum / Float(compression)
            }
        }
        pooled = keyNorm(pooled)
        pooled.data.withUnsafeMutableBufferPointer {
            rotary.apply(to: $0.baseAddress!, rowStride: dim, headOffsets: [0], positions: firstRows.map { positions[$0] })
        }
        return pooled.data
    }

    /// The keys (offsets in its sequence) the query at `queryOffset` of
    /// `queries`, the sequence's row `length − 1`, keeps: those of the
    /// `blocksKept` of its `seen` complete blocks (keys `pooled`) it scores
    /// best, then those after its last complete block.
    func chosenKeys(_ queries: [Float], queryOffset: Int, pooled: [Float], seen: Int, length: Int) -> [Int] {
        let heads = heads, dim = dim, root = Float(dim).squareRoot()
        var scores = [Float](repeating: 0, count: seen)
        for b in 0..<seen {
            var total: Float = 0
            for h in 0..<heads {
                var dot: Float = 0
                for j in 0..<dim { dot += queries[queryOffset + h * dim + j] * pooled[b * dim + j] }
                total += max(dot, 0)
            }
            scores[b] = total / root
        }
        let chosen = TorchTopK.indices(count: seen, k: blocksKept) { scores[$0] }
        var keys = chosen.flatMap { b in (b * compression)..<((b + 1) * compression) }
        keys += (seen * compression)..<length
        return keys
    }

    /// What a decoder keeps of one sequence's indexer between tokens (as
    /// transformers' cache keeps the raw keys and pools them again at each
    /// step): the keys of its complete blocks, pooled, normalised and
    /// rotated, and the raw keys of its newest, incomplete block.
    public struct State: Sendable {
        /// [blocks · dim].
        fileprivate var pooled: [Float] = []
        /// The incomplete block's projected rows [rows, (heads + 1) · dim] (its queries unused) and their positions.
        fileprivate var pending: [Float] = []
        fileprivate var pendingPositions: [Int] = []
        /// The tokens seen.
        fileprivate var length = 0

        public init() {}
    }

    /// The keys each row of `x` keeps, the rows the sequence's next ones
    /// after those `state` has seen, at `positions`; updates `state`. Row r
    /// keeps the offsets `keys` of its sequence, nil for all of them.
    public func decode(_ x: Matrix, positions: [Int], state: inout State) -> [[Int]?] {
        let qk = projected(x, positions: positions)
        let width = qk.cols
        return (0..<x.rows).map { r in
            state.pending += qk.data[(r * width)..<((r + 1) * width)]
            state.pendingPositions.append(positions[r])
            state.length += 1
            if state.pendingPositions.count == compression {
                let block = Matrix(rows: compression, cols: width, data: state.pending)
                state.pooled += blockKeys(block, firstRows: [0], positions: state.pendingPositions)
                state.pending = []
                state.pendingPositions = []
            }
            let seen = state.pooled.count / dim
            guard seen > blocksKept else { return nil }
            return chosenKeys(qk.data, queryOffset: r * width, pooled: state.pooled, seen: seen, length: state.length)
        }
    }
}

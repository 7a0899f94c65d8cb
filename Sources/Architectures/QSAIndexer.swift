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
        var qk = projection(x)
        let heads = heads, dim = dim, width = qk.cols
        queryNorm.apply(inPlace: &qk, columns: 0..<(heads * dim), pieceWidth: dim)
        qk.data.withUnsafeMutableBufferPointer {
            rotary.apply(to: $0.baseAddress!, rowStride: width, headOffsets: (0..<heads).map { $0 * dim }, positions: batch.positions)
        }
        let root = Float(dim).squareRoot()
        for sequence in batch.sequences {
            let start = sequence.lowerBound, count = sequence.count
            let blocks = count / compression
            guard blocks > blocksKept else { continue }
            // Every complete block's key: the mean of its raw keys, normalised, rotated at its first position.
            var pooled = Matrix(zeros: blocks, dim)
            for b in 0..<blocks {
                for j in 0..<dim {
                    var sum: Float = 0
                    for t in 0..<compression { sum += qk.data[(start + b * compression + t) * width + heads * dim + j] }
                    pooled.data[b * dim + j] = sum / Float(compression)
                }
            }
            pooled = keyNorm(pooled)
            pooled.data.withUnsafeMutableBufferPointer {
                rotary.apply(
                    to: $0.baseAddress!, rowStride: dim, headOffsets: [0],
                    positions: (0..<blocks).map { batch.positions[start + $0 * compression] })
            }
            for s in 0..<count {
                let seen = (s + 1) / compression
                guard seen > blocksKept else { continue }
                let row = start + s
                var scores = [Float](repeating: 0, count: seen)
                for b in 0..<seen {
                    var total: Float = 0
                    for h in 0..<heads {
                        var dot: Float = 0
                        for j in 0..<dim { dot += qk.data[row * width + h * dim + j] * pooled.data[b * dim + j] }
                        total += max(dot, 0)
                    }
                    scores[b] = total / root
                }
                let chosen = TorchTopK.indices(count: seen, k: blocksKept) { scores[$0] }
                var keys = chosen.flatMap { b in (b * compression)..<((b + 1) * compression) }
                keys += (seen * compression)..<(s + 1)
                selection.keep(row: row, keys: keys, length: s + 1)
            }
        }
        return selection
    }
}

import Foundation

/// Where each head's query, key and value columns sit in the fused QKV
/// projection output.
public struct QKVLayout: Sendable {
    public enum Arrangement: Sendable {
        /// All query heads, then all key heads, then all value heads
        /// (stacked q/k/v projections, GPT-2's c_attn).
        case grouped
        /// For each head q, k, v side by side (GPT-NeoX's query_key_value).
        case interleavedPerHead
    }

    public let numHeads: Int
    public let numKVHeads: Int
    public let headDim: Int
    public let arrangement: Arrangement

    public init(numHeads: Int, numKVHeads: Int, headDim: Int, arrangement: Arrangement = .grouped) {
        precondition(numHeads % numKVHeads == 0, "query heads must be a multiple of key/value heads")
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim
        self.arrangement = arrangement
    }

    public var width: Int { (numHeads + 2 * numKVHeads) * headDim }
    /// Columns of all query heads (= of the attention output).
    public var queryWidth: Int { numHeads * headDim }
    /// Columns of all key heads (= of all value heads).
    public var keyWidth: Int { numKVHeads * headDim }

    public func queryOffset(head: Int) -> Int {
        switch arrangement {
        case .grouped: head * headDim
        case .interleavedPerHead: head * 3 * headDim
        }
    }

    public func keyOffset(kvHead: Int) -> Int {
        switch arrangement {
        case .grouped: (numHeads + kvHead) * headDim
        case .interleavedPerHead: kvHead * 3 * headDim + headDim
        }
    }

    public func valueOffset(kvHead: Int) -> Int {
        switch arrangement {
        case .grouped: (numHeads + numKVHeads + kvHead) * headDim
        case .interleavedPerHead: kvHead * 3 * headDim + 2 * headDim
        }
    }
}

/// Scaled dot-product attention with a causal (optionally sliding-window)
/// mask, run independently for every sequence and head.
///
/// Each (sequence, head) pair is processed in blocks of query rows; a block
/// only multiplies against the keys it can see, so the masked upper
/// triangle (about half the work) is never computed. The GEMMs read strided
/// views of the fused QKV matrix, so nothing is copied; pairs run in
/// parallel with OpenBLAS single-threaded inside them.
///
/// `sinkLogits` ([numHeads], optional) gives each head one extra logit that
/// joins its softmax but has no value: it takes probability mass away from
/// the keys (gpt-oss's learned attention sinks).
public func causalAttention(
    qkv: Matrix, layout: QKVLayout, sequences: [Range<Int>], scale: Float,
    slidingWindow: Int? = nil, logitSoftcap: Float? = nil, sinkLogits: [Float]? = nil
) -> Matrix {
    precondition(qkv.cols == layout.width)
    precondition(sinkLogits == nil || sinkLogits!.count == layout.numHeads)
    let headDim = layout.headDim
    let outWidth = layout.numHeads * headDim
    let groupSize = layout.numHeads / layout.numKVHeads
    let longest = sequences.map(\.count).max() ?? 0
    let blockRows = 64
    let workers = min(EngineThreads.count, max(1, sequences.count * layout.numHeads))
    var scratch = [[Float]](repeating: [Float](repeating: 0, count: blockRows * longest), count: workers)
    var output = Matrix(zeros: qkv.rows, outWidth)

    qkv.data.withUnsafeBufferPointer { qkvBuffer in
        output.data.withUnsafeMutableBufferPointer { outBuffer in
            let base = qkvBuffer.baseAddress!
            let out = outBuffer.baseAddress!
            let stride = layout.width
            scratch.withUnsafeMutableBufferPointer { scratchBuffers in
                parallelTasks(sequences.count * layout.numHeads) { task, worker in
                    let sequence = sequences[task / layout.numHeads]
                    let head = task % layout.numHeads
                    let kvHead = head / groupSize
                    let rowStart = base + sequence.lowerBound * stride
                    let queries = rowStart + layout.queryOffset(head: head)
                    let keys = rowStart + layout.keyOffset(kvHead: kvHead)
                    let values = rowStart + layout.valueOffset(kvHead: kvHead)
                    let outRows = out + sequence.lowerBound * outWidth + head * headDim
                    scratchBuffers[worker].withUnsafeMutableBufferPointer { scores in
                        for first in Swift.stride(from: 0, to: sequence.count, by: blockRows) {
                            let rows = min(blockRows, sequence.count - first)
                            // Keys visible to this block: [keyStart, first + rows).
                            let keyStart = slidingWindow.map { max(0, first - $0 + 1) } ?? 0
                            let keyCount = first + rows - keyStart
                            let s = scores.baseAddress!
                            BLAS.gemm(
                                m: rows, n: keyCount, k: headDim,
                                queries + first * stride, lda: stride,
                                keys + keyStart * stride, ldb: stride, transposeB: true,
                                s, ldc: keyCount, alpha: scale)
                            for r in 0..<rows {
                                let query = first + r
                                let visibleStart = (slidingWindow.map { max(0, query - $0 + 1) } ?? 0) - keyStart
                                maskedSoftmax(
                                    s + r * keyCount, count: keyCount, visible: visibleStart..<(query - keyStart + 1),
                                    softcap: logitSoftcap, sinkLogit: sinkLogits?[head])
                            }
                            BLAS.gemm(
                                m: rows, n: headDim, k: keyCount,
                                s, lda: keyCount,
                                values + keyStart * stride, ldb: stride,
                                outRows + first * outWidth, ldc: outWidth)
                        }
                    }
                }
            }
        }
    }
    return output
}

/// Softmax over the `visible` entries of one score row, zeroing the rest so
/// the following GEMM ignores them.
@inline(__always)
private func maskedSoftmax(
    _ row: UnsafeMutablePointer<Float>, count: Int, visible: Range<Int>, softcap: Float?, sinkLogit: Float? = nil
) {
    if let softcap {
        for j in visible { row[j] = tanh(row[j] / softcap) * softcap }
    }
    let first = row + visible.lowerBound
    let maximum = VectorMath.maximum(first, count: visible.count)
    if let sinkLogit {
        softmaxWithSink(first, count: visible.count, maximum: maximum, sinkLogit: sinkLogit)
    } else {
        let sum = VectorMath.expInPlace(first, count: visible.count, shift: maximum)
        VectorMath.scale(first, count: visible.count, by: 1 / sum)
    }
    row.update(repeating: 0, count: visible.lowerBound)
    (row + visible.upperBound).update(repeating: 0, count: count - visible.upperBound)
}

/// In place, p_j = exp(s_j − m) / (Σ_i exp(s_i − m) + exp(sink − m)) with m
/// the maximum over the scores and the sink: the softmax over the scores
/// with the sink logit appended, its own probability dropped (the sink
/// contributes no value). `maximum` is the scores' maximum.
@inline(__always)
public func softmaxWithSink(_ scores: UnsafeMutablePointer<Float>, count: Int, maximum: Float, sinkLogit: Float) {
    let shift = max(maximum, sinkLogit)
    let sum = VectorMath.expInPlace(scores, count: count, shift: shift) + exp(sinkLogit - shift)
    VectorMath.scale(scores, count: count, by: 1 / sum)
}

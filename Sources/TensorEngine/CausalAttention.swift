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
/// Each (sequence, head) pair is two GEMMs over strided views of the fused
/// QKV matrix, so nothing is copied; pairs run in parallel with OpenBLAS
/// single-threaded inside them.
public func causalAttention(
    qkv: Matrix, layout: QKVLayout, sequences: [Range<Int>], scale: Float,
    slidingWindow: Int? = nil, logitSoftcap: Float? = nil
) -> Matrix {
    precondition(qkv.cols == layout.width)
    let headDim = layout.headDim
    let outWidth = layout.numHeads * headDim
    let groupSize = layout.numHeads / layout.numKVHeads
    let longest = sequences.map(\.count).max() ?? 0
    let workers = min(EngineThreads.count, max(1, sequences.count * layout.numHeads))
    var scratch = [[Float]](repeating: [Float](repeating: 0, count: longest * longest), count: workers)
    var output = Matrix(zeros: qkv.rows, outWidth)

    qkv.data.withUnsafeBufferPointer { qkvBuffer in
        output.data.withUnsafeMutableBufferPointer { outBuffer in
            let base = qkvBuffer.baseAddress!
            let out = outBuffer.baseAddress!
            let stride = layout.width
            scratch.withUnsafeMutableBufferPointer { scratchBuffers in
                BLAS.singleThreaded {
                    parallelTasks(sequences.count * layout.numHeads) { task, worker in
                        let sequence = sequences[task / layout.numHeads]
                        let head = task % layout.numHeads
                        let kvHead = head / groupSize
                        let n = sequence.count
                        let rowStart = base + sequence.lowerBound * stride
                        scratchBuffers[worker].withUnsafeMutableBufferPointer { scores in
                            let s = scores.baseAddress!
                            BLAS.gemm(
                                m: n, n: n, k: headDim,
                                rowStart + layout.queryOffset(head: head), lda: stride,
                                rowStart + layout.keyOffset(kvHead: kvHead), ldb: stride, transposeB: true,
                                s, ldc: n, alpha: scale)
                            maskedSoftmax(s, n: n, slidingWindow: slidingWindow, softcap: logitSoftcap)
                            BLAS.gemm(
                                m: n, n: headDim, k: n,
                                s, lda: n,
                                rowStart + layout.valueOffset(kvHead: kvHead), ldb: stride,
                                out + sequence.lowerBound * outWidth + head * headDim, ldc: outWidth)
                        }
                    }
                }
            }
        }
    }
    return output
}

/// Row-wise softmax over the visible keys j ≤ i (and i − j < window), with
/// the masked entries set to zero so the following GEMM ignores them.
@inline(__always)
private func maskedSoftmax(_ s: UnsafeMutablePointer<Float>, n: Int, slidingWindow: Int?, softcap: Float?) {
    for i in 0..<n {
        let row = s + i * n
        let first = slidingWindow.map { max(0, i - $0 + 1) } ?? 0
        if let softcap {
            for j in first...i { row[j] = tanh(row[j] / softcap) * softcap }
        }
        var maximum = -Float.infinity
        for j in first...i { maximum = max(maximum, row[j]) }
        var sum: Float = 0
        for j in first...i {
            let e = exp(row[j] - maximum)
            row[j] = e
            sum += e
        }
        let inverse = 1 / sum
        for j in 0..<first { row[j] = 0 }
        for j in first...i { row[j] *= inverse }
        for j in (i + 1)..<n { row[j] = 0 }
    }
}

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
/// triangle (about half the work) is never computed. In float32 the GEMMs
/// read strided views of the fused QKV matrix, so nothing is copied; in
/// bfloat16 (`arithmetic`) each pair's Q, K, V and the probabilities are
/// rounded into the worker's buffers first. Pairs run in parallel with the
/// GEMMs single-threaded inside them.
///
/// `sinkLogits` ([numHeads], optional) gives each head one extra logit that
/// joins its softmax but has no value: it takes probability mass away from
/// the keys (gpt-oss's learned attention sinks).
public func causalAttention(
    qkv: Matrix, layout: QKVLayout, sequences: [Range<Int>], scale: Float,
    slidingWindow: Int? = nil, logitSoftcap: Float? = nil, sinkLogits: [Float]? = nil,
    arithmetic: MatrixArithmetic = .current
) -> Matrix {
    precondition(qkv.cols == layout.width)
    precondition(sinkLogits == nil || sinkLogits!.count == layout.numHeads)
    let headDim = layout.headDim
    let outWidth = layout.numHeads * headDim
    let groupSize = layout.numHeads / layout.numKVHeads
    let longest = sequences.map(\.count).max() ?? 0
    let blockRows = 64
    let workers = min(EngineThreads.count, max(1, sequences.count * layout.numHeads))
    var scratch = (0..<workers).map { _ in AttentionScratch(arithmetic, longest: longest, blockRows: blockRows, headDim: headDim) }
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
                    let outRows = out + sequence.lowerBound * outWidth + head * headDim
                    let buffers = scratchBuffers[worker]
                    // In bf16, this head's Q, K and V rounded into the worker's
                    // buffers (never in place: other heads read the same rows).
                    let (queries, keys, values, inputStride) = buffers.operands(
                        rowStart, stride: stride, rows: sequence.count, headDim: headDim,
                        offsets: (layout.queryOffset(head: head), layout.keyOffset(kvHead: kvHead),
                                  layout.valueOffset(kvHead: kvHead)))
                    let s = buffers.scores
                    for first in Swift.stride(from: 0, to: sequence.count, by: blockRows) {
                        let rows = min(blockRows, sequence.count - first)
                        // Keys visible to this block: [keyStart, first + rows).
                        let keyStart = slidingWindow.map { max(0, first - $0 + 1) } ?? 0
                        let keyCount = first + rows - keyStart
                        buffers.product(
                            m: rows, n: keyCount, k: headDim, queries, offset: first * inputStride, lda: inputStride,
                            keys, offset: keyStart * inputStride, ldb: inputStride, transposeB: true,
                            s, ldc: keyCount, alpha: scale)
                        for r in 0..<rows {
                            let query = first + r
                            let visibleStart = (slidingWindow.map { max(0, query - $0 + 1) } ?? 0) - keyStart
                            maskedSoftmax(
                                s + r * keyCount, count: keyCount, visible: visibleStart..<(query - keyStart + 1),
                                softcap: logitSoftcap, sinkLogit: sinkLogits?[head])
                        }
                        let probabilities = buffers.probabilities(rows * keyCount)
                        buffers.product(
                            m: rows, n: headDim, k: keyCount, probabilities, offset: 0, lda: keyCount,
                            values, offset: keyStart * inputStride, ldb: inputStride, transposeB: false,
                            outRows + first * outWidth, ldc: outWidth, alpha: 1)
                    }
                }
            }
        }
    }
    scratch.forEach { $0.release() }
    return output
}

/// One attention worker's buffers, and its products in the worker's
/// arithmetic: float32 reads Q, K, V in place; bf16 first rounds them (to
/// float32 values when emulated, to bf16 bits for oneDNN when native), and
/// rounds the probabilities before P·V.
private struct AttentionScratch {
    let arithmetic: MatrixArithmetic
    let scores: UnsafeMutablePointer<Float>
    /// Q, K, V of one head, rounded, dense (sequence × headDim each).
    let rounded: UnsafeMutablePointer<Float>?
    let bits: UnsafeMutablePointer<UInt16>?
    /// The probabilities as bf16 bits (native path).
    let probabilityBits: UnsafeMutablePointer<UInt16>?
    let longest: Int

    init(_ arithmetic: MatrixArithmetic, longest: Int, blockRows: Int, headDim: Int) {
        self.arithmetic = arithmetic
        self.longest = longest
        scores = .allocate(capacity: max(1, blockRows * longest))
        rounded = arithmetic == .bf16Emulated ? .allocate(capacity: max(1, 3 * longest * headDim)) : nil
        bits = arithmetic == .bf16Native ? .allocate(capacity: max(1, 3 * longest * headDim)) : nil
        probabilityBits = arithmetic == .bf16Native ? .allocate(capacity: max(1, blockRows * longest)) : nil
    }

    func release() {
        scores.deallocate()
        rounded?.deallocate()
        bits?.deallocate()
        probabilityBits?.deallocate()
    }

    /// An operand: float32 (in place or rounded) or bf16 bits.
    enum Operand {
        case float(UnsafePointer<Float>)
        case bits(UnsafePointer<UInt16>)
    }

    /// Q, K and V of one head (`offsets` into each row at `rowStart`) and the
    /// stride between their rows.
    func operands(
        _ rowStart: UnsafePointer<Float>, stride: Int, rows: Int, headDim: Int, offsets: (Int, Int, Int)
    ) -> (Operand, Operand, Operand, Int) {
        let sources = [offsets.0, offsets.1, offsets.2].map { rowStart + $0 }
        switch arithmetic {
        case .f32:
            return (.float(sources[0]), .float(sources[1]), .float(sources[2]), stride)
        case .bf16Emulated:
            let dense = (0..<3).map { rounded! + $0 * longest * headDim }
            for (source, target) in zip(sources, dense) {
                BFloat16.roundRows(source, stride: stride, rows: rows, width: headDim, into: target)
            }
            return (.float(dense[0]), .float(dense[1]), .float(dense[2]), headDim)
        case .bf16Native:
            let dense = (0..<3).map { bits! + $0 * longest * headDim }
            for (source, target) in zip(sources, dense) {
                BFloat16.convertRows(source, stride: stride, rows: rows, width: headDim, into: target)
            }
            return (.bits(dense[0]), .bits(dense[1]), .bits(dense[2]), headDim)
        }
    }

    /// The softmax output of the current block (`count` scores) as P·V's
    /// left operand, rounded in bf16.
    func probabilities(_ count: Int) -> Operand {
        switch arithmetic {
        case .f32: return .float(scores)
        case .bf16Emulated:
            BFloat16.round(scores, into: scores, count: count)
            return .float(scores)
        case .bf16Native:
            BFloat16.convert(scores, into: probabilityBits!, count: count)
            return .bits(probabilityBits!)
        }
    }

    /// C = alpha · A · op(B) (A, B at their offsets), one GEMM on the
    /// worker's thread.
    @inline(__always)
    func product(
        m: Int, n: Int, k: Int, _ a: Operand, offset aOffset: Int, lda: Int,
        _ b: Operand, offset bOffset: Int, ldb: Int, transposeB: Bool,
        _ c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float
    ) {
        switch (a, b) {
        case (.bits(let a), .bits(let b)):
            BLAS.gemmBF16(m: m, n: n, k: k, a + aOffset, lda: lda, b + bOffset, ldb: ldb, transposeB: transposeB,
                          c, ldc: ldc, alpha: alpha)
        case (.float(let a), .float(let b)):
            BLAS.gemm(m: m, n: n, k: k, a + aOffset, lda: lda, b + bOffset, ldb: ldb, transposeB: transposeB,
                      c, ldc: ldc, alpha: alpha)
        default:
            preconditionFailure("attention operands in one arithmetic")
        }
    }
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

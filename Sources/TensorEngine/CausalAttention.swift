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
/// Work is cut into tasks of one block of query rows of one sequence for
/// one key/value head: the block's rows of all query heads sharing that
/// key/value head (grouped-query attention) are gathered into one matrix,
/// so QKᵀ and P·V are each one GEMM of `group × 64` rows against the same
/// keys and values instead of `group` GEMMs of 64 rows. A block only
/// multiplies against the keys it can see, so the masked upper triangle
/// (about half the work) is never computed. In float32 the keys and values
/// are read in place from the fused QKV matrix; in bfloat16 (`arithmetic`)
/// queries, keys, values and the probabilities are rounded into the
/// worker's buffers first. Tasks run in parallel with the GEMMs
/// single-threaded inside them.
///
/// `sinkLogits` ([numHeads], optional) gives each head one extra logit that
/// joins its softmax but has no value: it takes probability mass away from
/// the keys (gpt-oss's learned attention sinks).
///
/// `alibi` (optional) adds each head's linear bias to the scaled score of
/// every key at position j of its sequence (0-based), before the softmax.
///
/// `chunkSize` (optional) cuts each sequence into chunks of that many
/// positions from 0: a query sees only the earlier keys of its own chunk
/// (Llama 4's chunked attention; see `firstVisibleKey`).
///
/// `keySelection` (optional, by row of `qkv`) limits a query to the keys
/// chosen for it (DeepSeek Sparse Attention): the others get no weight.
///
/// `keyBiases` (optional, by row of `qkv`) adds each key's bias for the
/// head's key/value head to its scaled score and keeps only the keys of
/// highest bias it allows (Doge's dynamic mask; see `KeyBiases`).
public func causalAttention(
    qkv: Matrix, layout: QKVLayout, sequences: [Range<Int>], scale: Float,
    slidingWindow: Int? = nil, logitSoftcap: Float? = nil, sinkLogits: [Float]? = nil,
    alibi: ALiBi? = nil, chunkSize: Int? = nil, keySelection: KeySelection? = nil, keyBiases: KeyBiases? = nil,
    arithmetic: MatrixArithmetic = .current
) -> Matrix {
    precondition(qkv.cols == layout.width)
    precondition(keyBiases == nil || (keyBiases!.kvHeads == layout.numKVHeads && keyBiases!.values.count == qkv.rows * layout.numKVHeads))
    precondition(chunkSize.map { $0 > 0 } ?? true)
    precondition(sinkLogits == nil || sinkLogits!.count == layout.numHeads)
    precondition(alibi == nil || alibi!.slopes.count == layout.numHeads)
    let headDim = layout.headDim
    let outWidth = layout.queryWidth
    let group = layout.numHeads / layout.numKVHeads
    let longest = sequences.map(\.count).max() ?? 0
    // Each head's biases by key position, shared by every query row.
    let alibiTable = alibi?.table(positions: longest)
    let blockRows = 64
    // (sequence, first row of the block, key/value head); the costlier later
    // blocks are spread over the workers by the round-robin deal.
    var tasks: [(sequence: Range<Int>, first: Int, kvHead: Int)] = []
    for sequence in sequences {
        for first in Swift.stride(from: 0, to: sequence.count, by: blockRows) {
            for kvHead in 0..<layout.numKVHeads { tasks.append((sequence, first, kvHead)) }
        }
    }
    let workers = min(EngineThreads.count, max(1, tasks.count))
    var scratch = (0..<workers).map { _ in
        AttentionScratch(arithmetic, queryRows: group * blockRows, longest: longest, headDim: headDim)
    }
    // Every row of a sequence is written by its blocks; zeros only for rows
    // outside all sequences (a zeroed 8k-row output is a serial 32 MB memset).
    let covered = sequences.first?.lowerBound == 0 && sequences.last?.upperBound == qkv.rows
        && zip(sequences, sequences.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound }
    var output = covered ? Matrix(uninitialized: qkv.rows, outWidth) { _ in } : Matrix(zeros: qkv.rows, outWidth)

    qkv.data.withUnsafeBufferPointer { qkvBuffer in
        output.data.withUnsafeMutableBufferPointer { outBuffer in
            let base = qkvBuffer.baseAddress!
            let out = outBuffer.baseAddress!
            let stride = layout.width
            scratch.withUnsafeMutableBufferPointer { scratchBuffers in
                parallelTasks(tasks.count) { index, worker in
                    let (sequence, first, kvHead) = tasks[index]
                    let rows = min(blockRows, sequence.count - first)
                    let heads = (kvHead * group)..<((kvHead + 1) * group)
                    let rowStart = base + sequence.lowerBound * stride
                    let buffers = scratchBuffers[worker]
                    // Keys visible to this block: [keyStart, first + rows) (the
                    // first visible key only moves forward with the query).
                    let keyStart = firstVisibleKey(query: first, slidingWindow: slidingWindow, chunkSize: chunkSize)
                    let keyCount = first + rows - keyStart
                    let m = group * rows
                    // Query rows of the group's heads one head after another: row g·rows + r
                    // is head heads[g]'s query at position first + r.
                    let queries = buffers.queries(
                        rowStart + first * stride, stride: stride, rows: rows, offsets: heads.map(layout.queryOffset(head:)))
                    let (keys, values, kvStride) = buffers.keysAndValues(
                        rowStart + keyStart * stride, stride: stride, rows: keyCount,
                        offsets: (layout.keyOffset(kvHead: kvHead), layout.valueOffset(kvHead: kvHead)))
                    let s = buffers.scores
                    BLAS.gemm(
                        m: m, n: keyCount, k: headDim, queries, lda: headDim, keys, ldb: kvStride, transposeB: true,
                        s, ldc: keyCount, alpha: scale)
                    for (g, head) in heads.enumerated() {
                        for r in 0..<rows {
                            let query = first + r
                            let visibleStart = firstVisibleKey(query: query, slidingWindow: slidingWindow, chunkSize: chunkSize) - keyStart
                            let row = s + (g * rows + r) * keyCount, visible = visibleStart..<(query - keyStart + 1)
                            if let alibiTable {
                                let biases = head * longest + keyStart + alibi!.tableOffset(length: sequence.count, longest: longest)
                                for j in visible { row[j] += alibiTable[biases + j] }
                            }
                            keySelection?.mask(
                                row: sequence.lowerBound + query, head: head, heads: layout.numHeads, scores: row + visible.lowerBound,
                                keys: (keyStart + visible.lowerBound)..<(keyStart + visible.upperBound))
                            keyBiases?.apply(
                                row + visible.lowerBound, kvHead: kvHead, start: sequence.lowerBound, length: sequence.count,
                                keys: (keyStart + visible.lowerBound)..<(keyStart + visible.upperBound))
                            maskedSoftmax(
                                row, count: keyCount, visible: visible, softcap: logitSoftcap, sinkLogit: sinkLogits?[head])
                        }
                    }
                    BLAS.gemm(
                        m: m, n: headDim, k: keyCount, buffers.probabilities(m * keyCount), lda: keyCount,
                        values, ldb: kvStride, transposeB: false, buffers.output, ldc: headDim, alpha: 1)
                    // Each head's rows back to its columns of the output.
                    for (g, head) in heads.enumerated() {
                        for r in 0..<rows {
                            (out + (sequence.lowerBound + first + r) * outWidth + head * headDim)
                                .update(from: buffers.output + (g * rows + r) * headDim, count: headDim)
                        }
                    }
                }
            }
        }
    }
    scratch.forEach { $0.release() }
    return output
}

/// The first key position (0-based, in the query's sequence) the query at
/// `query` attends to: 0, or within the last `slidingWindow` positions, or
/// the first position of its chunk of `chunkSize` positions (transformers'
/// `chunked_overlay`: key and query in the same ⌊position / chunk⌋),
/// whichever is latest.
@inline(__always)
public func firstVisibleKey(query: Int, slidingWindow: Int?, chunkSize: Int?) -> Int {
    var first = slidingWindow.map { max(0, query - $0 + 1) } ?? 0
    if let chunkSize { first = max(first, query / chunkSize * chunkSize) }
    return first
}

/// One attention worker's buffers, and the products' operands in the
/// worker's arithmetic: float32 gathers the queries and reads keys and values in
/// place; bf16 rounds all three (to float32 values when emulated, to bf16
/// bits for oneDNN when native) and the probabilities before P·V.
private struct AttentionScratch {
    let arithmetic: MatrixArithmetic
    /// One block's query rows of a head group.
    let queryRows: ProductRows
    /// Keys and values of one key/value head, rounded (bf16 only).
    let keyRows: ProductRows?
    let valueRows: ProductRows?
    let scores: UnsafeMutablePointer<Float>
    /// The probabilities as bf16 bits (native path).
    let probabilityBits: UnsafeMutablePointer<UInt16>?
    /// P·V of one block, [queryRows × headDim].
    let output: UnsafeMutablePointer<Float>

    init(_ arithmetic: MatrixArithmetic, queryRows: Int, longest: Int, headDim: Int) {
        self.arithmetic = arithmetic
        self.queryRows = ProductRows(rows: queryRows, width: headDim, arithmetic: arithmetic)
        keyRows = arithmetic == .f32 ? nil : ProductRows(rows: longest, width: headDim, arithmetic: arithmetic)
        valueRows = arithmetic == .f32 ? nil : ProductRows(rows: longest, width: headDim, arithmetic: arithmetic)
        scores = .allocate(capacity: max(1, queryRows * longest))
        probabilityBits = arithmetic == .bf16Native ? .allocate(capacity: max(1, queryRows * longest)) : nil
        output = .allocate(capacity: max(1, queryRows * headDim))
    }

    func release() {
        scores.deallocate()
        probabilityBits?.deallocate()
        output.deallocate()
    }

    typealias Operand = BLAS.Operand

    /// The query rows at `rowStart` of the heads at column `offsets`, one
    /// head after another, dense ([offsets.count · rows × headDim]).
    func queries(_ rowStart: UnsafePointer<Float>, stride: Int, rows: Int, offsets: [Int]) -> Operand {
        for (g, offset) in offsets.enumerated() {
            queryRows.set(rows: g * rows, count: rows, from: rowStart + offset, stride: stride)
        }
        return queryRows.operand
    }

    /// The key and value rows at `rowStart` (columns `offsets`) and the
    /// stride between their rows: in place in float32, rounded in bf16.
    func keysAndValues(_ rowStart: UnsafePointer<Float>, stride: Int, rows: Int, offsets: (Int, Int)) -> (Operand, Operand, Int) {
        guard let keyRows, let valueRows else {
            return (.float(rowStart + offsets.0), .float(rowStart + offsets.1), stride)
        }
        keyRows.set(rows: 0, count: rows, from: rowStart + offsets.0, stride: stride)
        valueRows.set(rows: 0, count: rows, from: rowStart + offsets.1, stride: stride)
        return (keyRows.operand, valueRows.operand, keyRows.width)
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
    let kernels = VectorKernels.active
    let maximum = kernels.maximum(first, count: visible.count)
    if let sinkLogit {
        softmaxWithSink(first, count: visible.count, maximum: maximum, sinkLogit: sinkLogit)
    } else {
        let sum = kernels.expShifted(first, count: visible.count, shift: maximum)
        kernels.scale(first, count: visible.count, by: 1 / sum)
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
    let kernels = VectorKernels.active
    let sum = kernels.expShifted(scores, count: count, shift: shift) + exp(sinkLogit - shift)
    kernels.scale(scores, count: count, by: 1 / sum)
}

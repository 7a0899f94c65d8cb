import Architectures
import Foundation
import TensorEngine

/// Token-by-token decoding with a key/value cache, to measure what dropping
/// saves at generation time. A dropped attention layer has no cache at all.
final class IncrementalDecoder {
    private let model: any LanguageModel
    private let blocks: [TransformerBlock?]
    private var caches: [KeyValueCache?]

    init(model: any LanguageModel, plan: DropPlan, capacity: Int) throws {
        self.model = model
        blocks = try (0..<model.layerCount).map { plan.blocks.contains($0) ? nil : try model.block($0, skipping: plan) }
        caches = blocks.map { block in
            block?.attention.map { KeyValueCache(layout: $0.attention.layout, capacity: capacity) }
        }
    }

    /// Bytes the caches hold per token (Float32, as this engine stores them).
    var cacheBytesPerToken: Int {
        caches.compactMap { $0 }.reduce(0) { $0 + 2 * $1.width * MemoryLayout<Float>.size }
    }

    /// Runs one token through every block; returns the final hidden state.
    /// (Single-row products stay on one thread: `Linear` splits only by rows.)
    func step(token: Int, position: Int) throws -> Matrix {
        let batch = TokenBatch(token: token, position: position)
        var x = try model.embed(batch)
        for (index, block) in blocks.enumerated() {
            guard let block else { continue }
            x = block(x, index: index) { attention, input in
                caches[index]!.attend(input, with: attention, position: position)
            }.output
        }
        return x
    }
}

/// Keys and values of one attention layer for every position so far.
///
/// In bfloat16 arithmetic the products' inputs are rounded as in
/// `causalAttention`: keys and values when they enter the cache, the query
/// and the probabilities before each product.
struct KeyValueCache {
    let layout: QKVLayout
    private var keys: [Float]
    private var values: [Float]
    private(set) var length = 0
    private let roundsToBF16 = MatrixArithmetic.current.roundsToBF16

    init(layout: QKVLayout, capacity: Int) {
        self.layout = layout
        keys = [Float](repeating: 0, count: capacity * layout.numKVHeads * layout.headDim)
        values = keys
    }

    var width: Int { layout.numKVHeads * layout.headDim }

    /// Attention of the new token over the cache (itself included), after
    /// appending its key and value; returns the output projection.
    mutating func attend(_ x: Matrix, with attention: SelfAttention, position: Int) -> Matrix {
        var qkv = attention.projectedQKV(x, positions: [position])
        // One row: rounding it whole rounds the query, key and value alike.
        if roundsToBF16 { qkv.data = BFloat16.rounded(qkv.data) }
        let layout = self.layout, headDim = layout.headDim, width = self.width
        for g in 0..<layout.numKVHeads {
            for j in 0..<headDim {
                keys[length * width + g * headDim + j] = qkv.data[layout.keyOffset(kvHead: g) + j]
                values[length * width + g * headDim + j] = qkv.data[layout.valueOffset(kvHead: g) + j]
            }
        }
        length += 1
        let first = attention.slidingWindow.map { max(0, length - $0) } ?? 0
        let visible = length - first
        var output = [Float](repeating: 0, count: layout.numHeads * headDim)
        var scores = [Float](repeating: 0, count: visible)
        let groupSize = layout.numHeads / layout.numKVHeads
        keys.withUnsafeBufferPointer { k in
            values.withUnsafeBufferPointer { v in
                qkv.data.withUnsafeBufferPointer { q in
                    for head in 0..<layout.numHeads {
                        let g = head / groupSize
                        let keyBase = k.baseAddress! + first * width + g * headDim
                        BLAS.gemv(m: visible, n: headDim, keyBase, lda: width, q.baseAddress! + layout.queryOffset(head: head),
                                  &scores, alpha: attention.scale)
                        if let cap = attention.logitSoftcap {
                            for j in 0..<visible { scores[j] = tanh(scores[j] / cap) * cap }
                        }
                        let maximum = scores.max() ?? 0
                        if let sink = attention.sinkLogits?[head] {
                            scores.withUnsafeMutableBufferPointer {
                                softmaxWithSink($0.baseAddress!, count: visible, maximum: maximum, sinkLogit: sink)
                            }
                        } else {
                            var sum: Float = 0
                            for j in 0..<visible { scores[j] = exp(scores[j] - maximum); sum += scores[j] }
                            for j in 0..<visible { scores[j] /= sum }
                        }
                        if roundsToBF16 { scores = BFloat16.rounded(scores) }
                        output.withUnsafeMutableBufferPointer { out in
                            BLAS.gemv(m: visible, n: headDim, v.baseAddress! + first * width + g * headDim, lda: width,
                                      transpose: true, scores, out.baseAddress! + head * headDim)
                        }
                    }
                }
            }
        }
        return attention.output(Matrix(rows: 1, cols: output.count, data: output))
    }
}

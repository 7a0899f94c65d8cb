import Foundation
import Testing
import TensorEngine

/// The blocked causal attention against a direct evaluation of the formula,
/// on sequences longer than one block of query rows.
@Suite struct CausalAttentionTests {
    /// `sinks`: per-head logits appended to each softmax, their probability dropped.
    func naive(
        _ qkv: Matrix, _ layout: QKVLayout, _ sequences: [Range<Int>], scale: Float, window: Int?, sinks: [Float]? = nil,
        chunk: Int? = nil
    ) -> Matrix {
        var out = Matrix(zeros: qkv.rows, layout.numHeads * layout.headDim)
        let group = layout.numHeads / layout.numKVHeads
        for sequence in sequences {
            for head in 0..<layout.numHeads {
                let kv = head / group
                for i in sequence {
                    var first = window.map { max(sequence.lowerBound, i - $0 + 1) } ?? sequence.lowerBound
                    // Chunks count from the sequence's first position.
                    if let chunk { first = max(first, sequence.lowerBound + (i - sequence.lowerBound) / chunk * chunk) }
                    var weights: [Double] = []
                    for j in first...i {
                        var dot = 0.0
                        for d in 0..<layout.headDim {
                            dot += Double(qkv[i, layout.queryOffset(head: head) + d]) * Double(qkv[j, layout.keyOffset(kvHead: kv) + d])
                        }
                        weights.append(dot * Double(scale))
                    }
                    let sink = sinks.map { Double($0[head]) }
                    let maximum = max(weights.max()!, sink ?? -.infinity)
                    let exps = weights.map { exp($0 - maximum) }
                    let total = exps.reduce(0, +) + (sink.map { exp($0 - maximum) } ?? 0)
                    for d in 0..<layout.headDim {
                        var value = 0.0
                        for (offset, j) in (first...i).enumerated() {
                            value += exps[offset] / total * Double(qkv[j, layout.valueOffset(kvHead: kv) + d])
                        }
                        out[i, head * layout.headDim + d] = Float(value)
                    }
                }
            }
        }
        return out
    }

    @Test(arguments: [nil, 37] as [Int?])
    func blockedMatchesDirect(window: Int?) {
        var generator = SystemRandomNumberGenerator()
        // Groups of 2 and 4 query heads per key/value head (one GEMM per group
        // and block) and one head per key/value head, interleaved.
        for layout in [
            QKVLayout(numHeads: 4, numKVHeads: 2, headDim: 8), QKVLayout(numHeads: 8, numKVHeads: 2, headDim: 8),
            QKVLayout(numHeads: 3, numKVHeads: 3, headDim: 8, arrangement: .interleavedPerHead),
        ] {
            let arrangement = layout.arrangement
            let sequences = [0..<150, 150..<213, 213..<214]
            let data = (0..<(214 * layout.width)).map { _ in Float.random(in: -1...1, using: &generator) }
            let qkv = Matrix(rows: 214, cols: layout.width, data: data)
            let fast = causalAttention(qkv: qkv, layout: layout, sequences: sequences, scale: 0.4, slidingWindow: window)
            let slow = naive(qkv, layout, sequences, scale: 0.4, window: window)
            let worst = zip(fast.data, slow.data).map { abs($0 - $1) }.max()!
            #expect(worst < 1e-5, "\(arrangement) \(layout.numHeads)/\(layout.numKVHeads), window \(String(describing: window)): \(worst)")
        }
    }

    /// Chunked attention (Llama 4): each query sees the earlier keys of its
    /// own chunk only, chunks counted from each sequence's start, alone and
    /// with a window; chunks that do and do not divide the 64-row blocks.
    @Test(arguments: [(7, nil), (64, nil), (100, nil), (7, 5), (30, 37)] as [(Int, Int?)])
    func chunkedMatchesDirect(chunk: Int, window: Int?) {
        var generator = SystemRandomNumberGenerator()
        let layout = QKVLayout(numHeads: 4, numKVHeads: 2, headDim: 8)
        let sequences = [0..<150, 150..<213, 213..<214]
        let data = (0..<(214 * layout.width)).map { _ in Float.random(in: -1...1, using: &generator) }
        let qkv = Matrix(rows: 214, cols: layout.width, data: data)
        let fast = causalAttention(qkv: qkv, layout: layout, sequences: sequences, scale: 0.4, slidingWindow: window, chunkSize: chunk)
        let slow = naive(qkv, layout, sequences, scale: 0.4, window: window, chunk: chunk)
        let worst = zip(fast.data, slow.data).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-5, "chunk \(chunk), window \(String(describing: window)): \(worst)")
        #expect(firstVisibleKey(query: 25, slidingWindow: nil, chunkSize: 10) == 20)
        #expect(firstVisibleKey(query: 25, slidingWindow: 3, chunkSize: 10) == 23)
    }
}

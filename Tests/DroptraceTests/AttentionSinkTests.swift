import Foundation
import TensorEngine
import Testing

/// Attention sinks (one learned logit per head that joins the softmax but
/// carries no value) in the blocked kernel, against the direct formula.
@Suite struct AttentionSinkTests {
    @Test(arguments: [nil, 37] as [Int?])
    func sinksMatchTheDirectSoftmaxWithAnExtraLogit(window: Int?) {
        var generator = SystemRandomNumberGenerator()
        let layout = QKVLayout(numHeads: 4, numKVHeads: 2, headDim: 8)
        let sequences = [0..<150, 150..<213, 213..<214]
        let data = (0..<(214 * layout.width)).map { _ in Float.random(in: -1...1, using: &generator) }
        let qkv = Matrix(rows: 214, cols: layout.width, data: data)
        // A sink far above the scores takes almost all the mass; one far below almost none.
        let sinks: [Float] = [0.3, -2, 6, -40]
        let fast = causalAttention(qkv: qkv, layout: layout, sequences: sequences, scale: 0.4, slidingWindow: window, sinkLogits: sinks)
        let slow = CausalAttentionTests().naive(qkv, layout, sequences, scale: 0.4, window: window, sinks: sinks)
        let worst = zip(fast.data, slow.data).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-5, "window \(String(describing: window)): \(worst)")
        // The sinks change the output: without them it is the plain softmax.
        let plain = causalAttention(qkv: qkv, layout: layout, sequences: sequences, scale: 0.4, slidingWindow: window)
        #expect(zip(fast.data, plain.data).map { abs($0 - $1) }.max()! > 1e-2)
    }

    @Test func aSinkOnlyRescalesTheProbabilities() {
        var scores: [Float] = [1, 2, 3]
        scores.withUnsafeMutableBufferPointer { softmaxWithSink($0.baseAddress!, count: 3, maximum: 3, sinkLogit: 4) }
        let denominator = exp(-3.0) + exp(-2.0) + exp(-1.0) + 1
        let expected = [exp(-3.0), exp(-2.0), exp(-1.0)].map { $0 / denominator }
        #expect(zip(scores, expected).allSatisfy { abs(Double($0) - $1) < 1e-7 })
    }
}

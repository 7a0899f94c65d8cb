import Testing
@testable import TensorEngine

/// A linear layer's product split across threads by rows (more rows than
/// outputs) or by output columns (more outputs than rows: MLP chunks, decode
/// steps), in every arithmetic and both weight layouts, against a Float64
/// reference of the same rounded operands.
@Suite struct LinearSplitTests {
    static let inFeatures = 37, outFeatures = 300  // 300: a ragged last block of 64 columns

    @Test(arguments: [MatrixArithmetic.f32, .bf16Emulated, .bf16Native], [Linear.Layout.outByIn, .inByOut])
    func bothSplitsGiveTheExactProduct(arithmetic: MatrixArithmetic, layout: Linear.Layout) {
        let (n, k) = (Self.outFeatures, Self.inFeatures)
        let weight = BF16ArithmeticTests.values(n * k, seed: 11)
        let bias = BF16ArithmeticTests.values(n, seed: 12)
        let layer = Linear(weight: weight, bias: bias, inFeatures: k, outFeatures: n, layout: layout, arithmetic: arithmetic)
        let rounding: (Float) -> Float = arithmetic == .f32 ? { $0 } : BFloat16.round
        for rows in [1, 5, 299, 700] {
            #expect(layer.splitsColumns(rows: rows) == (EngineThreads.count > 1 && rows < n))
            let x = BF16ArithmeticTests.values(rows * k, seed: UInt64(rows))
            let y = layer(Matrix(rows: rows, cols: k, data: x))
            var worst = 0.0
            for r in 0..<rows {
                for o in 0..<n {
                    var sum = Double(bias[o])
                    for i in 0..<k {
                        let w = layout == .outByIn ? weight[o * k + i] : weight[i * n + o]
                        sum += Double(rounding(x[r * k + i])) * Double(rounding(w))
                    }
                    worst = max(worst, abs(Double(y[r, o]) - sum))
                }
            }
            #expect(worst < 1e-5, "\(rows) rows, \(arithmetic), \(layout): \(worst)")
        }
    }
}

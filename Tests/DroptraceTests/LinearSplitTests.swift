import Testing
@testable import TensorEngine

/// A linear layer's product split across threads by rows (more rows than
/// outputs) or by output columns (more outputs than rows: MLP chunks, decode
/// steps), in every arithmetic and both weight layouts, with bf16 weights
/// packed for the kernel and as stored, against a Float64 reference of the
/// same rounded operands.
@Suite struct LinearSplitTests {
    static let inFeatures = 37, outFeatures = 300  // 300: a ragged last block of 64 columns

    @Test(arguments: [MatrixArithmetic.f32, .bf16Emulated, .bf16Native], [Linear.Layout.outByIn, .inByOut])
    func bothSplitsGiveTheExactProduct(arithmetic: MatrixArithmetic, layout: Linear.Layout) {
        for packs in arithmetic == .bf16Native ? [true, false] : [true] {
            checkProducts(arithmetic: arithmetic, layout: layout, packs: packs)
        }
    }

    func checkProducts(arithmetic: MatrixArithmetic, layout: Linear.Layout, packs: Bool) {
        let (n, k) = (Self.outFeatures, Self.inFeatures)
        let weight = BF16ArithmeticTests.values(n * k, seed: 11)
        let bias = BF16ArithmeticTests.values(n, seed: 12)
        let layer = Linear(
            weight: weight, bias: bias, inFeatures: k, outFeatures: n, layout: layout, arithmetic: arithmetic, packs: packs)
        let rounding: (Float) -> Float = arithmetic == .f32 ? { $0 } : BFloat16.round
        let threads = EngineThreads.count
        // Packed weights split rows once every thread gets a task's worth of them.
        if arithmetic == .bf16Native && packs && MatrixKernels.nativeBF16Works() { #expect(layer.weightsPacked) }
        #expect(layer.weight == weight.map(rounding), "\(arithmetic), \(layout), packed \(layer.weightsPacked): weights read back")
        for rows in [1, 5, 127, 299, 700] {
            let packedRows = layer.weightsPacked && rows >= threads * Linear.rowsPerTask
            #expect(layer.splitsColumns(rows: rows) == (threads > 1 && rows < n && !packedRows))
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
            #expect(worst < 1e-5, "\(rows) rows, \(arithmetic), \(layout), packed \(layer.weightsPacked): \(worst)")
        }
    }

    /// Packed weights' products of any column slice (at multiples of the
    /// column block) into a strided C, overwriting or accumulating, and the
    /// plain-copy path a slice the kernel refuses would take, all equal the
    /// product on the weights as stored. Where oneDNN has no bf16 matmul
    /// (AVX2 without AVX-512) it lays out no bf16 weights either, and the
    /// engine keeps them as stored.
    @Test(.enabled(if: MatrixKernels.nativeBF16Works(), "oneDNN has no bf16 matmul on this CPU, so no packed bf16 weights"))
    func packedSlicesEqualThePlainProduct() throws {
        let (n, k, m) = (300, 70, 9)
        let plain = BFloat16.bits(BF16ArithmeticTests.values(n * k, seed: 21))
        let packed = try #require(PackedBF16Weights(plain: plain, outFeatures: n, inFeatures: k, transposed: true, alignment: 64))
        #expect(packed.plain(columns: 0..<n, transposed: true) == plain)
        let a = BFloat16.bits(BF16ArithmeticTests.values(m * k, seed: 22))
        let seed = BF16ArithmeticTests.values(m * n, seed: 23)
        let block = packed.columnBlock
        for columns in [0..<n, block..<n, 0..<block, block..<min(n, 3 * block), (n - n % block)..<n] where !columns.isEmpty {
            for beta: Float in [0, 1] {
                var expected = seed, viaPacked = seed, viaCopy = seed
                BLAS.gemmBF16(
                    m: m, n: columns.count, k: k, a, lda: k, Array(plain[(columns.lowerBound * k)...]), ldb: k, transposeB: true,
                    &expected[columns.lowerBound], ldc: n, beta: beta)
                packed.product(m: m, columns: columns, a, lda: k, &viaPacked[columns.lowerBound], ldc: n, beta: beta)
                packed.unpackedProduct(m: m, columns: columns, a, lda: k, &viaCopy[columns.lowerBound], ldc: n, beta: beta)
                let worst = zip(expected, viaPacked).map { abs($0 - $1) }.max()!
                #expect(worst < 1e-5, "columns \(columns), beta \(beta): \(worst)")
                #expect(viaCopy == expected, "columns \(columns), beta \(beta): the plain copy's product")
            }
        }
    }
}

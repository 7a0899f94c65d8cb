import Architectures
import CheckpointIO
import Foundation
import Scoring
import Testing
@testable import TensorEngine

/// bfloat16 rounding, the float32 kernels against each other, and the bf16
/// arithmetic (emulated and on oneDNN's bf16 matmul) against exact references.
@Suite struct BF16ArithmeticTests {
    /// Deterministic values in [-1, 1) that are not bf16 values themselves.
    static func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Float(Double(state >> 11) / Double(1 << 53) * 2 - 1)
        }
    }

    static func bits(_ x: UInt32) -> Float { Float(bitPattern: x) }

    // MARK: rounding

    @Test func roundsToNearestWithTiesToEven() {
        let cases: [(UInt32, UInt16)] = [
            (0x3F80_0000, 0x3F80), // 1
            (0x3F80_8000, 0x3F80), // 1 + 2⁻⁸: tie, kept part even
            (0x3F81_8000, 0x3F82), // tie, kept part odd: up
            (0x3F80_8001, 0x3F81), // just above the tie
            (0x3F80_7FFF, 0x3F80), // just below
            (0xBF81_8000, 0xBF82), // negative tie
            (0x0000_8000, 0x0000), // subnormal tie to even zero
            (0x0001_8000, 0x0002), // subnormal tie up
            (0x0000_C000, 0x0001), // subnormal above the tie
            (0x807F_FFFF, 0x8080), // largest negative subnormal to smallest normal
            (0x7F80_0000, 0x7F80), // +inf
            (0xFF80_0000, 0xFF80), // −inf
            (0x7F7F_0000, 0x7F7F), // bf16's largest
            (0x7F7F_7FFF, 0x7F7F), // below its upper tie
            (0x7F7F_8000, 0x7F80), // the tie rounds to even: +inf
            (0x7F7F_FFFF, 0x7F80), // float32's largest: +inf
            (0xFF7F_FFFF, 0xFF80), // and its negative
        ]
        for (input, expected) in cases {
            #expect(BFloat16.bits(Self.bits(input)) == expected, "0x\(String(input, radix: 16))")
            #expect(BFloat16.round(Self.bits(input)).bitPattern == UInt32(expected) << 16)
        }
    }

    @Test func nanStaysNaN() {
        for nan: UInt32 in [0x7F80_0001, 0x7FC0_0000, 0xFF80_0001, 0x7FFF_FFFF, 0x7F80_FFFF] {
            #expect(BFloat16.round(Self.bits(nan)).isNaN)
            #expect(BFloat16.float(BFloat16.bits(Self.bits(nan))).isNaN)
        }
    }

    /// The vectorised array paths equal the scalar one, lane and tail alike,
    /// and each result is the nearer of the two bf16 neighbours.
    @Test func arraysRoundLikeScalarsToTheNearestNeighbour() {
        let inputs = Self.values(1003, seed: 7).map { $0 * 1e3 } + [0, -0.0, .infinity, -.infinity, .nan]
        let rounded = BFloat16.rounded(inputs)
        let bits = BFloat16.bits(inputs)
        #expect(BFloat16.floats(bits).map(\.bitPattern) == rounded.map(\.bitPattern))
        for (x, r) in zip(inputs, rounded) where x.isFinite {
            #expect(r.bitPattern == BFloat16.round(x).bitPattern)
            let down = Float(bitPattern: x.bitPattern & 0xFFFF_0000)
            let up = Float(bitPattern: (x.bitPattern & 0xFFFF_0000) + 0x1_0000)
            #expect(r == down || r == up)
            #expect(abs(Double(r) - Double(x)) <= abs(Double(down == r ? up : down) - Double(x)))
        }
    }

    // MARK: float32 kernels

    /// Double-precision C = alpha·op(A)·op(B) + beta·C and Σ|a||b| per element.
    static func reference(
        m: Int, n: Int, k: Int, _ a: [Float], lda: Int, transposeA: Bool, _ b: [Float], ldb: Int, transposeB: Bool,
        _ c: [Float], ldc: Int, alpha: Float, beta: Float
    ) -> (values: [Double], magnitudes: [Double]) {
        var values = [Double](repeating: 0, count: m * n), magnitudes = values
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0, magnitude = 0.0
                for p in 0..<k {
                    let x = Double(transposeA ? a[p * lda + i] : a[i * lda + p])
                    let y = Double(transposeB ? b[j * ldb + p] : b[p * ldb + j])
                    sum += x * y
                    magnitude += abs(x * y)
                }
                values[i * n + j] = Double(alpha) * sum + Double(beta) * Double(c[i * ldc + j])
                magnitudes[i * n + j] = abs(Double(alpha)) * magnitude + abs(Double(beta) * Double(c[i * ldc + j]))
            }
        }
        return (values, magnitudes)
    }

    struct Shape: CustomTestStringConvertible, Sendable {
        var m, n, k: Int
        var transposeA = false, transposeB = false
        /// Extra columns beyond the width (strided views, as attention reads).
        var pad = 0
        var alpha: Float = 1, beta: Float = 0
        var testDescription: String { "\(m)×\(n)×\(k) tA \(transposeA) tB \(transposeB) pad \(pad) β \(beta)" }
    }

    static let shapes: [Shape] = [
        Shape(m: 1, n: 37, k: 53),
        Shape(m: 1, n: 300, k: 64, transposeB: true, pad: 5),
        Shape(m: 17, n: 33, k: 129, transposeB: true),
        Shape(m: 64, n: 100, k: 64, transposeB: true, pad: 192, alpha: 0.125),
        Shape(m: 63, n: 64, k: 130, pad: 3, beta: 1),
        Shape(m: 5, n: 7, k: 9, transposeA: true, transposeB: true, pad: 2, alpha: -2, beta: 1),
        Shape(m: 300, n: 257, k: 96),
    ]

    @Test(arguments: shapes)
    func oneDNNAndOpenBLASAgree(shape: Shape) {
        let (m, n, k) = (shape.m, shape.n, shape.k)
        let lda = (shape.transposeA ? m : k) + shape.pad, ldb = (shape.transposeB ? k : n) + shape.pad
        let ldc = n + shape.pad
        let a = Self.values((shape.transposeA ? k : m) * lda, seed: 1)
        let b = Self.values((shape.transposeB ? n : k) * ldb, seed: 2)
        let c0 = Self.values(m * ldc, seed: 3)
        let exact = Self.reference(
            m: m, n: n, k: k, a, lda: lda, transposeA: shape.transposeA, b, ldb: ldb, transposeB: shape.transposeB,
            c0, ldc: ldc, alpha: shape.alpha, beta: shape.beta)
        var results: [[Float]] = []
        for kernel in F32Kernel.allCases {
            var c = c0
            BLAS.gemm(
                m: m, n: n, k: k, a, lda: lda, transposeA: shape.transposeA, b, ldb: ldb, transposeB: shape.transposeB,
                &c, ldc: ldc, alpha: shape.alpha, beta: shape.beta, kernel: kernel)
            for i in 0..<m {
                for j in 0..<n {
                    let error = abs(Double(c[i * ldc + j]) - exact.values[i * n + j])
                    #expect(error <= 1e-5 * max(exact.magnitudes[i * n + j], 1e-30), "\(kernel) (\(i), \(j))")
                }
                // Padding columns of C are never written.
                for j in n..<ldc { #expect(c[i * ldc + j] == c0[i * ldc + j]) }
            }
            results.append(c)
        }
        for index in results[0].indices {
            #expect(abs(results[0][index] - results[1][index]) <= 1e-5 * max(1, abs(results[0][index])))
        }
    }

    // MARK: bf16 products

    /// The float32 summation error bound of a k-term sum of magnitude `magnitude`.
    static func summationBound(_ k: Int, _ magnitude: Double) -> Double {
        Double(k + 2) * Double(Float.ulpOfOne) * magnitude
    }

    /// y = x·Wᵀ + b with the inputs rounded to bf16, in double.
    static func bf16Linear(_ x: Matrix, weight: [Float], bias: [Float]?, out: Int) -> (values: [Double], magnitudes: [Double]) {
        let xr = BFloat16.rounded(x.data), wr = BFloat16.rounded(weight)
        let c = bias.map { b in (0..<x.rows).flatMap { _ in b } } ?? [Float](repeating: 0, count: x.rows * out)
        return reference(
            m: x.rows, n: out, k: x.cols, xr, lda: x.cols, transposeA: false, wr, ldb: x.cols, transposeB: true,
            c, ldc: out, alpha: 1, beta: bias == nil ? 0 : 1)
    }

    @Test(arguments: [MatrixArithmetic.bf16Emulated, .bf16Native])
    func bf16LinearEqualsTheExactProductOfRoundedInputs(arithmetic: MatrixArithmetic) {
        let (rows, inFeatures, outFeatures) = (600, 96, 70)
        let x = Matrix(rows: rows, cols: inFeatures, data: Self.values(rows * inFeatures, seed: 11))
        let weight = Self.values(inFeatures * outFeatures, seed: 12), bias = Self.values(outFeatures, seed: 13)
        let layer = Linear(weight: weight, bias: bias, inFeatures: inFeatures, outFeatures: outFeatures, arithmetic: arithmetic)
        let y = layer(x)
        let exact = Self.bf16Linear(x, weight: weight, bias: bias, out: outFeatures)
        var worst = 0.0
        for index in y.data.indices {
            let error = abs(Double(y.data[index]) - exact.values[index])
            worst = max(worst, error / Self.summationBound(inFeatures, exact.magnitudes[index]))
        }
        #expect(worst <= 1, "worst error / summation bound \(worst)")
        // The input is untouched (it is the residual stream), the weights stored rounded.
        #expect(x.data == Self.values(rows * inFeatures, seed: 11))
        #expect(layer.weight == BFloat16.rounded(weight))
        // Rounding matters: the float32 layer differs by far more than summation error.
        let plain = Linear(weight: weight, bias: bias, inFeatures: inFeatures, outFeatures: outFeatures, arithmetic: .f32)(x)
        #expect(zip(plain.data, y.data).map { abs($0 - $1) }.max()! > 1e-4)
    }

    /// Rows are rounded block by block into a bounded buffer, ragged last block included.
    @Test func inputRowsAreRoundedInBoundedBlocks() {
        let x = Self.values(10 * 3, seed: 5)
        for (arithmetic, bytes) in [(MatrixArithmetic.bf16Emulated, 4), (.bf16Native, 2)] {
            var seen: [Float] = [], blocks: [Range<Int>] = []
            x.withUnsafeBufferPointer { xs in
                Linear.inRoundedBlocks(10, width: 3, of: xs.baseAddress!, arithmetic: arithmetic, budget: 4 * 3 * bytes) { first, count, block in
                    blocks.append(first..<(first + count))
                    switch block.operand {
                    case .float(let values): seen += UnsafeBufferPointer(start: values, count: count * 3)
                    case .bits(let bits): seen += UnsafeBufferPointer(start: bits, count: count * 3).map(BFloat16.float)
                    }
                }
            }
            #expect(blocks == [0..<4, 4..<8, 8..<10])
            #expect(seen == BFloat16.rounded(x))
        }
    }

    /// Rounding buffers come from fixed-size blocks that go back to their
    /// pool: the last block given back is the next one taken, and no more
    /// than the pool's limit are kept (the rest are freed).
    @Test func roundingBuffersReuseTheirPoolsBlocks() {
        let pool = ScratchBlocks(bytes: 4 * 3 * 4) { 2 }
        let blocks = (0..<3).map { _ in pool.take() }
        for block in blocks { pool.give(block) }
        #expect(pool.kept == 2)
        #expect(pool.take() == blocks[1])
        pool.give(blocks[1])
        let storage = { (rows: ProductRows) -> UnsafeRawPointer? in
            guard case .float(let values) = rows.operand else { return nil }
            return UnsafeRawPointer(values)
        }
        do {
            // Capped at what one block holds; a row wider than a block gets a buffer of its own.
            let rows = ProductRows.scratch(rows: 10, width: 3, arithmetic: .bf16Emulated, from: pool)
            #expect(rows.capacity == 4)
            #expect(storage(rows) == UnsafeRawPointer(blocks[1]))
            #expect(pool.kept == 1)
            let wide = ProductRows.scratch(rows: 10, width: 13, arithmetic: .bf16Emulated, from: pool)
            #expect(wide.capacity == 1 && wide.width == 13 && pool.kept == 1)
        }
        #expect(pool.kept == 2)
    }

    /// A fused QKV matrix with grouped-query heads, two sequences longer than
    /// one block of query rows.
    static func attentionInput() -> (Matrix, QKVLayout, [Range<Int>]) {
        let layout = QKVLayout(numHeads: 4, numKVHeads: 2, headDim: 32)
        let rows = 150 + 90
        return (Matrix(rows: rows, cols: layout.width, data: Self.values(rows * layout.width, seed: 31).map { $0 * 2 }),
                layout, [0..<150, 150..<240])
    }

    /// Emulated and native bf16 attention agree within summation error; a
    /// probability whose bf16 rounding flips between the two (summation order
    /// moves it across a rounding boundary) moves its output by at most one
    /// bf16 step of p·v.
    @Test func nativeBF16AttentionEqualsEmulated() {
        let (qkv, layout, sequences) = Self.attentionInput()
        let scale = 1 / Float(layout.headDim).squareRoot()
        let emulated = causalAttention(qkv: qkv, layout: layout, sequences: sequences, scale: scale, arithmetic: .bf16Emulated)
        let native = causalAttention(qkv: qkv, layout: layout, sequences: sequences, scale: scale, arithmetic: .bf16Native)
        let float32 = causalAttention(qkv: qkv, layout: layout, sequences: sequences, scale: scale, arithmetic: .f32)
        let differences = zip(emulated.data, native.data).map { Double(abs($0 - $1)) }
        let mean = differences.reduce(0, +) / Double(differences.count)
        #expect(differences.max()! <= 2e-2, "max |native − emulated| \(differences.max()!)")
        #expect(mean <= 2e-6, "mean |native − emulated| \(mean)")
        // …while bf16 itself moves the output well beyond that.
        let rounding = zip(emulated.data, float32.data).map { Double(abs($0 - $1)) }.reduce(0, +) / Double(differences.count)
        #expect(rounding > 10 * mean + 1e-5, "bf16 vs f32 mean \(rounding)")
        // The shared QKV matrix is not rounded in place.
        #expect(qkv.data == Self.attentionInput().0.data)
    }

    /// Emulated bf16 attention against a double evaluation with the same roundings.
    @Test func emulatedBF16AttentionRoundsQKVAndProbabilities() {
        let (qkv, layout, sequences) = Self.attentionInput()
        let scale = 1 / Float(layout.headDim).squareRoot()
        let out = causalAttention(qkv: qkv, layout: layout, sequences: sequences, scale: scale, arithmetic: .bf16Emulated)
        let r = Matrix(rows: qkv.rows, cols: qkv.cols, data: BFloat16.rounded(qkv.data))
        var worst = 0.0
        let group = layout.numHeads / layout.numKVHeads
        for sequence in sequences {
            for head in 0..<layout.numHeads {
                let kv = head / group
                for i in sequence {
                    let logits = (sequence.lowerBound...i).map { j in
                        (0..<layout.headDim).reduce(0.0) {
                            $0 + Double(r[i, layout.queryOffset(head: head) + $1]) * Double(r[j, layout.keyOffset(kvHead: kv) + $1])
                        } * Double(scale)
                    }
                    let top = logits.max()!
                    let exps = logits.map { Foundation.exp($0 - top) }
                    let total = exps.reduce(0, +)
                    let p = exps.map { Double(BFloat16.round(Float($0 / total))) }
                    for d in 0..<layout.headDim {
                        let exact = zip(p, sequence.lowerBound...i).reduce(0.0) {
                            $0 + $1.0 * Double(r[$1.1, layout.valueOffset(kvHead: kv) + d])
                        }
                        worst = max(worst, abs(exact - Double(out[i, head * layout.headDim + d])))
                    }
                }
            }
        }
        // Probabilities near a rounding boundary may round the other way after
        // float32 softmax: at most a bf16 step (2⁻⁸ relative) of one p·v term.
        #expect(worst <= 2e-2, "worst \(worst)")
    }

    // MARK: whole model

    func scores(_ model: String, _ arithmetic: MatrixArithmetic) throws -> ModuleScores {
        try MatrixKernels.withArithmetic(arithmetic) {
            let checkpoint = try Checkpoint(directory: FixtureFiles.model(model))
            let scorer = ImportanceScorer(model: try ModelRegistry.load(checkpoint))
            return try scorer.score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
        }
    }

    static func maxDifference(_ a: ModuleScores, _ b: ModuleScores) -> Double {
        zip(a.attention + a.mlp + a.block, b.attention + b.mlp + b.block).map { abs($0 - $1) }.max() ?? 0
    }

    /// Every way the families build their layers: GPT-2's Conv1D layout,
    /// layers built from another's weights (DeepSeek's latent attention,
    /// Cohere's q/k pairs), experts (Mixtral, Qwen2-MoE, gpt-oss's clamped
    /// SwiGLU), biases (Phi), parallel blocks (StableLM).
    @Test(arguments: [
        "llama-f32", "gpt2-f32", "deepseek_v3-f32", "cohere-f32", "mixtral-f32", "qwen2_moe-f32", "gpt_oss-f32",
        "phi-f32", "stablelm_parallel-f32",
    ])
    func bf16ScoresStayCloseToFloat32AndNativeEqualsEmulated(model: String) throws {
        let float32 = try scores(model, .f32)
        let emulated = try scores(model, .bf16Emulated)
        let native = try scores(model, .bf16Native)
        let drift = Self.maxDifference(float32, emulated)
        #expect(drift <= 5e-4, "\(model): max |bf16 − f32| = \(drift)")
        #expect(drift > 0, "\(model): bf16 scores identical to f32 (no rounding happened)")
        let paths = Self.maxDifference(native, emulated)
        #expect(paths <= 1e-5, "\(model): max |native − emulated| = \(paths)")
    }
}

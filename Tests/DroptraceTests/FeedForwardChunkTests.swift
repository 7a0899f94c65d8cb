@testable import Architectures
import Foundation
import Testing
import TensorEngine

/// The MLP runs over chunks of tokens to bound its intermediate; every output
/// row depends on its own input row alone, so the result changes at most by
/// the rounding of a GEMM kernel chosen for another row count.
@Suite struct FeedForwardChunkTests {
    static func values(_ count: Int, seed: Double) -> [Float] {
        (0..<count).map { Float(sin(Double($0) * 0.7311 + seed) * 0.5) }
    }

    static func linear(
        in inFeatures: Int, out outFeatures: Int, seed: Double, bias: Bool = false, arithmetic: MatrixArithmetic = .f32
    ) -> Linear {
        Linear(
            weight: values(inFeatures * outFeatures, seed: seed), bias: bias ? values(outFeatures, seed: seed + 1) : nil,
            inFeatures: inFeatures, outFeatures: outFeatures, arithmetic: arithmetic)
    }

    static let hidden = 40, inner = 72

    /// The three kinds of MLP that run in chunks and tiles, in `arithmetic`.
    static func feedForwards(_ arithmetic: MatrixArithmetic) -> [FeedForward] {
        func linear(in i: Int, out o: Int, seed: Double, bias: Bool = false) -> Linear {
            Self.linear(in: i, out: o, seed: seed, bias: bias, arithmetic: arithmetic)
        }
        return [
            .gated(gateUp: linear(in: hidden, out: 2 * inner, seed: 1), down: linear(in: inner, out: hidden, seed: 2), activation: .silu),
            .plain(up: linear(in: hidden, out: inner, seed: 3, bias: true), down: linear(in: inner, out: hidden, seed: 4, bias: true),
                   activation: .geluTanh),
            .clampedGated(
                gateUp: linear(in: hidden, out: 2 * inner, seed: 5, bias: true), down: linear(in: inner, out: hidden, seed: 6, bias: true),
                activation: ClampedSwiGLU(alpha: 1.702, limit: 7)),
        ]
    }

    static let feedForwards = feedForwards(.f32)

    @Test(arguments: feedForwards)
    func chunkedRowsGiveTheSameResult(_ feedForward: FeedForward) {
        let rows = 1000
        let x = Matrix(rows: rows, cols: Self.hidden, data: Self.values(rows * Self.hidden, seed: 9))
        let whole = feedForward(x, rowsPerChunk: rows)
        #expect(whole.rows == rows && whole.cols == Self.hidden)
        for chunk in [1, 63, 64, 300, 333, 999] {
            let chunked = feedForward(x, rowsPerChunk: chunk)
            #expect(chunked.rows == rows && chunked.cols == Self.hidden)
            let scale = whole.data.reduce(Float(0)) { max($0, abs($1)) }
            let worst = zip(chunked.data, whole.data).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
            #expect(worst <= 1e-5 * scale, "\(chunk) rows per chunk: max difference \(worst) of \(scale)")
        }
    }

    /// Tiles of rows, each on one thread with its activation rounded for
    /// down row by row, give what whole products do, ragged last tile and
    /// biases included, in every arithmetic. In bf16 a last-bit difference
    /// of gate|up (the kernel chosen for another row count) can move a
    /// hidden value to the neighbouring bfloat16 (2⁻⁸ apart): the bound is
    /// a fraction of that step, far below a wrong row or a skipped rounding.
    @Test(arguments: [MatrixArithmetic.f32, .bf16Emulated, .bf16Native])
    func tilesGiveTheSameResultAsWholeProducts(_ arithmetic: MatrixArithmetic) throws {
        let rows = 1000
        let x = Matrix(rows: rows, cols: Self.hidden, data: Self.values(rows * Self.hidden, seed: 9))
        for feedForward in Self.feedForwards(arithmetic) {
            let stages = try #require(feedForward.stages)
            let whole = feedForward(x, rowsPerChunk: rows)
            let scale = whole.data.reduce(Float(0)) { max($0, abs($1)) }
            let tolerance: Float = arithmetic.roundsToBF16 ? 1e-3 : 1e-5
            for tileRows in [1, 37, 256, 1000, 1024] {
                let tiled = feedForward.tiled(x, stages, tileRows: tileRows)
                #expect(tiled.rows == rows && tiled.cols == Self.hidden)
                let worst = zip(tiled.data, whole.data).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
                #expect(worst <= tolerance * scale, "\(arithmetic), \(tileRows) rows per tile: max difference \(worst) of \(scale)")
            }
        }
    }

    /// Tiles only where the weights are laid out once for the kernel, and
    /// only with a tile for every thread: a decoding step (one row) keeps
    /// its products split across the threads.
    @Test func tilesOnlyForPackedWeightsAndEnoughRows() throws {
        for arithmetic in [MatrixArithmetic.f32, .bf16Emulated, .bf16Native] {
            for feedForward in Self.feedForwards(arithmetic) {
                let stages = try #require(feedForward.stages)
                let packed = stages.first.runsRowTiles && stages.down.runsRowTiles
                #expect(packed == (arithmetic == .bf16Native && stages.first.runsRowTiles))
                #expect((stages.tileRows(for: 8192) != nil) == packed)
                #expect(stages.tileRows(for: 1) == nil)
                if let tileRows = stages.tileRows(for: 8192) {
                    #expect((FeedForward.minimumTileRows...FeedForward.maximumTileRows).contains(tileRows))
                    #expect(stages.tileRows(for: tileRows * EngineThreads.count - 1) == nil)
                }
            }
        }
        let expert = Self.feedForwards[0]
        let mixture = MixtureOfExperts(
            router: Self.linear(in: Self.hidden, out: 2, seed: 7), experts: [expert, expert], expertsPerToken: 1,
            rule: .topKThenSoftmax)
        #expect(FeedForward.mixture(mixture).stages == nil)
    }

    @Test func chunksBoundTheIntermediate() {
        // TinyLlama's gate|up width (2 × 5632) at 16 × 512 tokens; only the widths matter here.
        let mlp = FeedForward.gated(
            gateUp: Self.linear(in: 1, out: 11264, seed: 0), down: Self.linear(in: 5632, out: 1, seed: 0), activation: .silu)
        let rows = mlp.rowsPerChunk(8192)
        #expect(rows < 8192)
        #expect(rows * 11264 * MemoryLayout<Float>.size <= FeedForward.intermediateBudget)
        #expect(rows >= FeedForward.minimumRowsPerThread * EngineThreads.count)
        // Few tokens: one pass.
        #expect(mlp.rowsPerChunk(100) == 100)
        #expect(mlp.rowsPerChunk(0) == 0)
    }
}

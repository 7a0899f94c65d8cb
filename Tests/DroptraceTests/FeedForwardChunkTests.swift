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

    static func linear(in inFeatures: Int, out outFeatures: Int, seed: Double, bias: Bool = false) -> Linear {
        Linear(
            weight: values(inFeatures * outFeatures, seed: seed), bias: bias ? values(outFeatures, seed: seed + 1) : nil,
            inFeatures: inFeatures, outFeatures: outFeatures)
    }

    static let hidden = 40, inner = 72

    static let feedForwards: [FeedForward] = [
        .gated(gateUp: linear(in: hidden, out: 2 * inner, seed: 1), down: linear(in: inner, out: hidden, seed: 2), activation: .silu),
        .plain(up: linear(in: hidden, out: inner, seed: 3, bias: true), down: linear(in: inner, out: hidden, seed: 4, bias: true),
               activation: .geluTanh),
        .clampedGated(
            gateUp: linear(in: hidden, out: 2 * inner, seed: 5, bias: true), down: linear(in: inner, out: hidden, seed: 6, bias: true),
            activation: ClampedSwiGLU(alpha: 1.702, limit: 7)),
    ]

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

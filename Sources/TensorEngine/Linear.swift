/// y = x·Wᵀ + b for a batch of rows, through one SGEMM.
public struct Linear: Sendable {
    /// How the weight matrix is stored.
    public enum Layout: Sendable {
        /// torch.nn.Linear: [out, in].
        case outByIn
        /// GPT-2's Conv1D: [in, out].
        case inByOut
    }

    public let weight: [Float]
    public let bias: [Float]?
    public let inFeatures: Int
    public let outFeatures: Int
    public let layout: Layout

    public init(weight: [Float], bias: [Float]?, inFeatures: Int, outFeatures: Int, layout: Layout = .outByIn) {
        precondition(weight.count == inFeatures * outFeatures)
        precondition(bias == nil || bias!.count == outFeatures)
        self.weight = weight
        self.bias = bias
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.layout = layout
    }

    /// Stacks [out, in] projections that read the same input into one, so
    /// q, k and v (or gate and up) cost one GEMM instead of several.
    public static func stacking(_ parts: [Linear]) -> Linear {
        precondition(parts.allSatisfy { $0.layout == .outByIn && $0.inFeatures == parts[0].inFeatures })
        let hasBias = parts.contains { $0.bias != nil }
        return Linear(
            weight: parts.flatMap(\.weight),
            bias: hasBias ? parts.flatMap { $0.bias ?? [Float](repeating: 0, count: $0.outFeatures) } : nil,
            inFeatures: parts[0].inFeatures,
            outFeatures: parts.reduce(0) { $0 + $1.outFeatures })
    }

    /// Fewer rows than this per thread are not worth splitting.
    static let rowsPerTask = 64

    public func callAsFunction(_ x: Matrix) -> Matrix {
        precondition(x.cols == inFeatures, "linear layer expects \(inFeatures) inputs, got \(x.cols)")
        var y = Matrix(uninitialized: x.rows, outFeatures) { out in
            if let bias {
                // Seed every row with the bias and let GEMM accumulate onto it.
                for r in 0..<x.rows { (out + r * outFeatures).update(from: bias, count: outFeatures) }
            }
        }
        let beta: Float = bias == nil ? 0 : 1
        x.data.withUnsafeBufferPointer { xs in
            weight.withUnsafeBufferPointer { ws in
                y.data.withUnsafeMutableBufferPointer { ys in
                    // Rows split across the engine's threads, each a single-threaded
                    // GEMM over its own block of tokens (the weights are shared).
                    parallelFor(chunks: x.rows, minimumChunk: Self.rowsPerTask) { rows in
                        BLAS.gemm(
                            m: rows.count, n: outFeatures, k: inFeatures,
                            xs.baseAddress! + rows.lowerBound * inFeatures, lda: inFeatures,
                            ws.baseAddress!, ldb: layout == .outByIn ? inFeatures : outFeatures,
                            transposeB: layout == .outByIn,
                            ys.baseAddress! + rows.lowerBound * outFeatures, ldc: outFeatures, beta: beta)
                    }
                }
            }
        }
        return y
    }
}

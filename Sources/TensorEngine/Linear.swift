/// y = x·Wᵀ + b for a batch of rows, through one SGEMM.
///
/// In bfloat16 arithmetic (`EnginePrecision.current == .bf16` when the layer
/// is created) the weights are rounded to bfloat16 once, here (a no-op for
/// bfloat16 checkpoints), and each product's input rows are rounded as they
/// enter it (a rounded copy: x is usually the residual stream); accumulation
/// stays float32. On the bf16 units the weights are kept as bfloat16 bits.
public struct Linear: Sendable {
    /// How the weight matrix is stored.
    public enum Layout: Sendable {
        /// torch.nn.Linear: [out, in].
        case outByIn
        /// GPT-2's Conv1D: [in, out].
        case inByOut
    }

    /// The weights as float32 ([out, in] or [in, out] per `layout`); bf16
    /// rounded in bf16 arithmetic (widened from the stored bits on the
    /// native path, so read it only to build other layers).
    public var weight: [Float] {
        switch storage {
        case .float(let values): values
        case .bfloat16(let bits): BFloat16.floats(bits)
        }
    }

    public let bias: [Float]?
    public let inFeatures: Int
    public let outFeatures: Int
    public let layout: Layout
    /// The arithmetic of this layer's products, fixed at creation.
    public let arithmetic: MatrixArithmetic
    private let storage: Storage

    private enum Storage: Sendable {
        case float([Float])
        /// bfloat16 bits, for oneDNN's bf16 matmul, in the same layout.
        case bfloat16([UInt16])
    }

    public init(weight: [Float], bias: [Float]?, inFeatures: Int, outFeatures: Int, layout: Layout = .outByIn) {
        self.init(
            weight: weight, bias: bias, inFeatures: inFeatures, outFeatures: outFeatures, layout: layout,
            arithmetic: .current)
    }

    /// A layer computing in `arithmetic` whatever the engine's precision.
    public init(
        weight: [Float], bias: [Float]?, inFeatures: Int, outFeatures: Int, layout: Layout = .outByIn,
        arithmetic: MatrixArithmetic
    ) {
        precondition(weight.count == inFeatures * outFeatures)
        let stored: Storage =
            switch arithmetic {
            case .f32: .float(weight)
            case .bf16Emulated: .float(BFloat16.rounded(weight))
            case .bf16Native: .bfloat16(BFloat16.bits(weight))
            }
        self.init(storage: stored, bias: bias, inFeatures: inFeatures, outFeatures: outFeatures, layout: layout,
                  arithmetic: arithmetic)
    }

    private init(
        storage: Storage, bias: [Float]?, inFeatures: Int, outFeatures: Int, layout: Layout, arithmetic: MatrixArithmetic
    ) {
        precondition(bias == nil || bias!.count == outFeatures)
        self.storage = storage
        self.bias = bias
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.layout = layout
        self.arithmetic = arithmetic
    }

    /// Stacks [out, in] projections that read the same input into one, so
    /// q, k and v (or gate and up) cost one GEMM instead of several.
    public static func stacking(_ parts: [Linear]) -> Linear {
        precondition(parts.allSatisfy { $0.layout == .outByIn && $0.inFeatures == parts[0].inFeatures })
        let hasBias = parts.contains { $0.bias != nil }
        let bias = hasBias ? parts.flatMap { $0.bias ?? [Float](repeating: 0, count: $0.outFeatures) } : nil
        let outFeatures = parts.reduce(0) { $0 + $1.outFeatures }
        let arithmetic = parts[0].arithmetic
        guard parts.allSatisfy({ $0.arithmetic == arithmetic }) else {
            return Linear(
                weight: concatenated(parts.map(\.weight)), bias: bias, inFeatures: parts[0].inFeatures,
                outFeatures: outFeatures, arithmetic: arithmetic)
        }
        // The parts' storage is already in this arithmetic: concatenated as it
        // is, into one buffer of the final size (a growing copy would keep
        // about twice the stacked weights alive at once, the peak of a block's
        // expansion).
        let storage: Storage =
            if case .bfloat16 = parts[0].storage {
                .bfloat16(concatenated(parts.map { part in
                    if case .bfloat16(let bits) = part.storage { bits } else { [] }
                }))
            } else {
                .float(concatenated(parts.map(\.weight)))
            }
        return Linear(
            storage: storage, bias: bias, inFeatures: parts[0].inFeatures, outFeatures: outFeatures,
            layout: .outByIn, arithmetic: arithmetic)
    }

    /// Fewer rows than this per thread are not worth splitting.
    static let rowsPerTask = 64
    /// Bytes of rounded rows per worker at a time (a rounded copy of all of
    /// x would cost as much memory as x). Large enough that each GEMM's
    /// packing of the weights is amortised over many rows.
    static let roundedBytes = 16 << 20

    public func callAsFunction(_ x: Matrix) -> Matrix {
        precondition(x.cols == inFeatures, "linear layer expects \(inFeatures) inputs, got \(x.cols)")
        var y = Matrix(uninitialized: x.rows, outFeatures) { out in
            if let bias {
                // Seed every row with the bias and let GEMM accumulate onto it.
                for r in 0..<x.rows { (out + r * outFeatures).update(from: bias, count: outFeatures) }
            }
        }
        let beta: Float = bias == nil ? 0 : 1
        let ldb = layout == .outByIn ? inFeatures : outFeatures
        x.data.withUnsafeBufferPointer { xs in
            y.data.withUnsafeMutableBufferPointer { ys in
                // Rows split across the engine's threads, each a single-threaded
                // GEMM over its own block of tokens (the weights are shared).
                switch storage {
                case .float(let weight):
                    weight.withUnsafeBufferPointer { ws in
                        parallelFor(chunks: x.rows, minimumChunk: Self.rowsPerTask) { rows in
                            let a = xs.baseAddress! + rows.lowerBound * inFeatures
                            let c = ys.baseAddress! + rows.lowerBound * outFeatures
                            guard arithmetic == .bf16Emulated else {
                                BLAS.gemm(
                                    m: rows.count, n: outFeatures, k: inFeatures, a, lda: inFeatures,
                                    ws.baseAddress!, ldb: ldb, transposeB: layout == .outByIn,
                                    c, ldc: outFeatures, beta: beta)
                                return
                            }
                            Self.inRoundedBlocks(rows.count, width: inFeatures, of: a, as: Float.self) { first, count, rounded in
                                BLAS.gemm(
                                    m: count, n: outFeatures, k: inFeatures, rounded, lda: inFeatures,
                                    ws.baseAddress!, ldb: ldb, transposeB: layout == .outByIn,
                                    c + first * outFeatures, ldc: outFeatures, beta: beta)
                            }
                        }
                    }
                case .bfloat16(let weight):
                    weight.withUnsafeBufferPointer { ws in
                        parallelFor(chunks: x.rows, minimumChunk: Self.rowsPerTask) { rows in
                            let a = xs.baseAddress! + rows.lowerBound * inFeatures
                            let c = ys.baseAddress! + rows.lowerBound * outFeatures
                            Self.inRoundedBlocks(rows.count, width: inFeatures, of: a, as: UInt16.self) { first, count, rounded in
                                BLAS.gemmBF16(
                                    m: count, n: outFeatures, k: inFeatures, rounded, lda: inFeatures,
                                    ws.baseAddress!, ldb: ldb, transposeB: layout == .outByIn,
                                    c + first * outFeatures, ldc: outFeatures, beta: beta)
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// Calls `body(first, count, rounded)` for blocks (`budget` bytes each)
    /// of the `rows` rows at `x` (`width` wide), each rounded to bfloat16
    /// into a buffer (float32 values or bfloat16 bits per `Element`).
    @inline(__always)
    static func inRoundedBlocks<Element>(
        _ rows: Int, width: Int, of x: UnsafePointer<Float>, as: Element.Type, budget: Int = roundedBytes,
        _ body: (Int, Int, UnsafeMutablePointer<Element>) -> Void
    ) {
        guard rows > 0 else { return }
        let blockRows = min(rows, max(1, budget / (MemoryLayout<Element>.size * max(1, width))))
        let buffer = UnsafeMutablePointer<Element>.allocate(capacity: blockRows * width)
        defer { buffer.deallocate() }
        for first in stride(from: 0, to: rows, by: blockRows) {
            let count = min(blockRows, rows - first)
            let source = x + first * width
            if Element.self == Float.self {
                BFloat16.round(source, into: UnsafeMutableRawPointer(buffer).assumingMemoryBound(to: Float.self),
                               count: count * width)
            } else {
                BFloat16.convert(source, into: UnsafeMutableRawPointer(buffer).assumingMemoryBound(to: UInt16.self),
                                 count: count * width)
            }
            body(first, count, buffer)
        }
    }
}

/// The arrays one after another, in a buffer allocated once at its final size.
private func concatenated<Element>(_ arrays: [[Element]]) -> [Element] {
    var result: [Element] = []
    result.reserveCapacity(arrays.reduce(0) { $0 + $1.count })
    for array in arrays { result.append(contentsOf: array) }
    return result
}

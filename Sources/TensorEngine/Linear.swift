/// y = x·Wᵀ + b for a batch of rows, through one SGEMM.
///
/// In bfloat16 arithmetic (`EnginePrecision.current == .bf16` when the layer
/// is created) the weights are rounded to bfloat16 once, here (a no-op for
/// bfloat16 checkpoints), and each product's input rows are rounded as they
/// enter it (a rounded copy: x is usually the residual stream); accumulation
/// stays float32. On the bf16 units the weights are kept as bfloat16 bits,
/// laid out as the kernel reads them (`PackedBF16Weights`).
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
        case .packed(let packed): BFloat16.floats(packed.plain(columns: 0..<outFeatures, transposed: layout == .outByIn))
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
        /// bfloat16 bits in the layout oneDNN's bf16 matmul prefers.
        case packed(PackedBF16Weights)
    }

    public init(weight: consuming [Float], bias: [Float]?, inFeatures: Int, outFeatures: Int, layout: Layout = .outByIn) {
        self.init(
            weight: consume weight, bias: bias, inFeatures: inFeatures, outFeatures: outFeatures, layout: layout,
            arithmetic: .current)
    }

    /// A layer computing in `arithmetic` whatever the engine's precision.
    /// `weight` is taken over: emulated bf16 rounds it in place when the
    /// caller hands over its only reference (a second copy of TinyLlama's
    /// gate | up would add 92 MB at the peak of a block's expansion).
    ///
    /// `packs` (bf16 units only): lays the weights out as the kernel reads
    /// them, when it has such a layout; false keeps them as stored (tests).
    public init(
        weight: consuming [Float], bias: [Float]?, inFeatures: Int, outFeatures: Int, layout: Layout = .outByIn,
        arithmetic: MatrixArithmetic, packs: Bool = true
    ) {
        precondition(weight.count == inFeatures * outFeatures)
        let stored: Storage
        switch arithmetic {
        case .f32:
            stored = .float(weight)
        case .bf16Emulated:
            var values = consume weight
            values.withUnsafeMutableBufferPointer { if let base = $0.baseAddress { BFloat16.round(base, into: base, count: $0.count) } }
            stored = .float(values)
        case .bf16Native:
            let bits = BFloat16.bits(weight)
            let packed = packs ? PackedBF16Weights(
                plain: bits, outFeatures: outFeatures, inFeatures: inFeatures, transposed: layout == .outByIn,
                alignment: Self.columnsPerBlock) : nil
            stored = packed.map(Storage.packed) ?? .bfloat16(bits)
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

    /// Fewer rows than this per thread are not worth splitting.
    static let rowsPerTask = 64
    /// Output columns are split across threads in multiples of this.
    static let columnsPerBlock = 64

    /// y = x·Wᵀ + b: [rows, inFeatures] → [rows, outFeatures].
    public func callAsFunction(_ x: Matrix) -> Matrix {
        precondition(x.cols == inFeatures, "linear layer expects \(inFeatures) inputs, got \(x.cols)")
        return x.data.withUnsafeBufferPointer { xs in
            Matrix(uninitialized: x.rows, outFeatures) { apply(rows: x.rows, xs.baseAddress!, into: $0) }
        }
    }

    /// The same for `rows` rows at `x` (`inFeatures` apart), written to `y`
    /// (`outFeatures` apart): so that a caller can run a block of a larger
    /// matrix's rows without copying them out and back.
    public func apply(rows: Int, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        let beta = seedBias(rows: rows, y)
        if splitsColumns(rows: rows) {
            // More outputs than rows (an MLP chunk, a decode step): each
            // thread computes all rows for a slice of the outputs, so
            // each packs only its slice of the weights, the larger
            // operand, and one row still uses every thread.
            inputRounded(rows, of: x) { first, rows, input in
                let blocks = (outFeatures + Self.columnsPerBlock - 1) / Self.columnsPerBlock
                parallelFor(chunks: blocks) { range in
                    let columns = (range.lowerBound * Self.columnsPerBlock)..<min(outFeatures, range.upperBound * Self.columnsPerBlock)
                    product(input, rows: rows, columns: columns, y + first * outFeatures + columns.lowerBound, beta: beta)
                }
            }
        } else {
            // Rows split across the engine's threads, each a single-threaded
            // GEMM over its own block of tokens (the weights are shared).
            parallelFor(chunks: rows, minimumChunk: Self.rowsPerTask) { part in
                let start = y + part.lowerBound * outFeatures
                inputRounded(part.count, of: x + part.lowerBound * inFeatures) { first, count, input in
                    product(input, rows: count, columns: 0..<outFeatures, start + first * outFeatures, beta: beta)
                }
            }
        }
    }

    /// y = x·Wᵀ + b for the first `rows` rows of `input` (in this layer's
    /// arithmetic, `inFeatures` wide), on the calling thread: a worker's
    /// tile of a larger batch. y's rows are `outFeatures` apart.
    public func applyOnThisThread(_ input: ProductRows, rows: Int, into y: UnsafeMutablePointer<Float>) {
        precondition(input.arithmetic == arithmetic && input.width == inFeatures && rows <= input.capacity)
        let beta = seedBias(rows: rows, y)
        product(input.operand, rows: rows, columns: 0..<outFeatures, y, beta: beta)
    }

    /// Whether products over tiles of a few dozen rows, one per thread, run
    /// as fast per row as larger ones: the weights are laid out for the
    /// kernel once (`PackedBF16Weights`), so no product lays them out again.
    public var runsRowTiles: Bool { weightsPacked }

    /// Seeds every row of y with the bias for the GEMM to accumulate onto;
    /// the GEMM's beta (1 with a bias, else 0).
    private func seedBias(rows: Int, _ y: UnsafeMutablePointer<Float>) -> Float {
        guard let bias else { return 0 }
        for r in 0..<rows { (y + r * outFeatures).update(from: bias, count: outFeatures) }
        return 1
    }

    /// Whether the weights are laid out as the bf16 kernel reads them.
    var weightsPacked: Bool {
        if case .packed = storage { return true }
        return false
    }

    /// Whether a product over `rows` rows splits the output columns across
    /// threads (rather than the rows): when there are more outputs than rows
    /// and enough of them for every thread. Packed weights need no packing
    /// per product to amortise, and their kernel wants C dense: they split
    /// the rows whenever each thread gets `rowsPerTask` of them.
    func splitsColumns(rows: Int) -> Bool {
        let threads = EngineThreads.count
        if weightsPacked && rows >= threads * Self.rowsPerTask { return false }
        return threads > 1 && outFeatures > rows && outFeatures >= 2 * threads * Self.columnsPerBlock
    }

    /// Calls `body(first, count, input)` with the `rows` rows at `x` as this
    /// layer's products read them: as they are in float32, rounded to
    /// bfloat16 a scratch block at a time otherwise (a rounded copy of all
    /// of x would cost as much memory as x; a block, 16 MB, is large enough
    /// that each GEMM's packing of the weights is amortised over many rows).
    private func inputRounded(_ rows: Int, of x: UnsafePointer<Float>, _ body: (Int, Int, BLAS.Operand) -> Void) {
        guard arithmetic.roundsToBF16 else { return body(0, rows, .float(x)) }
        Self.inRoundedBlocks(rows, width: inFeatures, of: x, arithmetic: arithmetic) { body($0, $1, $2.operand) }
    }

    /// C[rows × columns] = input · W[columns]ᵀ (+ C when `beta` is 1), one
    /// single-threaded GEMM; C's rows are `outFeatures` apart.
    private func product(_ input: BLAS.Operand, rows: Int, columns: Range<Int>, _ c: UnsafeMutablePointer<Float>, beta: Float) {
        // The weights of outputs `columns`: rows of [out, in], columns of [in, out].
        let (offset, ldb) = layout == .outByIn ? (columns.lowerBound * inFeatures, inFeatures) : (columns.lowerBound, outFeatures)
        let multiply = { (weights: BLAS.Operand) in
            BLAS.gemm(
                m: rows, n: columns.count, k: inFeatures, input, lda: inFeatures, weights, ldb: ldb,
                transposeB: layout == .outByIn, c, ldc: outFeatures, beta: beta)
        }
        switch (storage, input) {
        case (.float(let weight), _): weight.withUnsafeBufferPointer { multiply(.float($0.baseAddress! + offset)) }
        case (.bfloat16(let weight), _): weight.withUnsafeBufferPointer { multiply(.bits($0.baseAddress! + offset)) }
        case (.packed(let weights), .bits(let bits)):
            weights.product(m: rows, columns: columns, bits, lda: inFeatures, c, ldc: outFeatures, beta: beta)
        case (.packed, .float):
            preconditionFailure("packed bf16 weights take bf16 inputs")
        }
    }

    /// Calls `body(first, count, rounded)` for blocks (`budget` bytes each,
    /// at most a scratch block's, at least one row) of the `rows` rows at
    /// `x` (`width` wide), each rounded as `arithmetic`'s products read them
    /// into one buffer, a block of `ScratchBlocks.shared`.
    static func inRoundedBlocks(
        _ rows: Int, width: Int, of x: UnsafePointer<Float>, arithmetic: MatrixArithmetic,
        budget: Int = ScratchBlocks.shared.bytes, _ body: (Int, Int, ProductRows) -> Void
    ) {
        guard rows > 0 else { return }
        let rowsInBudget = max(1, budget / ProductRows.bytesPerRow(width: width, arithmetic))
        let buffer = ProductRows.scratch(rows: min(rows, rowsInBudget), width: width, arithmetic: arithmetic)
        for first in stride(from: 0, to: rows, by: buffer.capacity) {
            let count = min(buffer.capacity, rows - first)
            buffer.set(rows: 0, count: count, from: x + first * width, stride: width)
            body(first, count, buffer)
        }
    }
}

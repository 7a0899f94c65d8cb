import CDNNLMatmul

/// A bfloat16 weight matrix laid out once, when its layer is built, the way
/// oneDNN's bf16 matmul wants it: blocked by columns and rows, pairs of rows
/// interleaved (the VNNI order the AVX512-BF16 and AMX instructions read),
/// padded to whole blocks (`BA16a64b2a` on AVX512-BF16).
///
/// From plain weights the kernel lays each block of B out again inside every
/// product; packed once, it reads them as they are (on AVX512-BF16, Zen 5:
/// products of the mid bench model's shapes 2–7% faster on one thread, its
/// whole bf16 score 2.5%; the re-layout weighs more against AMX's tiles).
/// Packing happens where the layer is built: on the block prefetch's
/// thread for blocks it expands, else when the block is reached (a block's
/// whole expansion, packing included, is about 1% of a mid-model bf16
/// score run, on one thread, at the block boundaries).
///
/// The layout is stored column block after column block, so the columns
/// of whole blocks from any block on form a packed matrix of their own:
/// `Linear` splits the outputs across threads at multiples of the block.
struct PackedBF16Weights: Sendable {
    /// The packed elements (bfloat16 bits), padding included.
    let bits: [UInt16]
    /// Outputs (columns of B = x·Wᵀ's right operand) and inputs.
    let outFeatures: Int
    let inFeatures: Int
    /// Columns per column block of the layout.
    let columnBlock: Int

    /// Packs `plain` ([out, in] when `transposed`, as torch.nn.Linear stores
    /// it, else [in, out]); nil when the kernel prefers the weights plain or
    /// in blocks that `alignment` (the column split's granularity) is not a
    /// multiple of.
    init?(plain: [UInt16], outFeatures: Int, inFeatures: Int, transposed: Bool, alignment: Int) {
        _ = MatrixKernels.active  // oneDNN's ISA ceiling (AMX) raised before its first primitive
        var block = 0
        let count = droptrace_dnnl_bf16_packed_size(outFeatures, inFeatures, &block)
        guard count > 0, block > 0, alignment % block == 0 else { return nil }
        var status: Int32 = 0
        let packed = [UInt16](unsafeUninitializedCapacity: count) { buffer, initialized in
            status = droptrace_dnnl_bf16_pack(
                outFeatures, inFeatures, plain, transposed ? inFeatures : outFeatures, transposed ? 1 : 0, buffer.baseAddress)
            initialized = count
        }
        guard status == 0 else { return nil }
        bits = packed
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        columnBlock = block
    }

    /// Columns `columns` back in the plain layout: [columns.count, in] when
    /// `transposed`, else [in, columns.count].
    func plain(columns: Range<Int>, transposed: Bool) -> [UInt16] {
        let count = columns.count * inFeatures
        return [UInt16](unsafeUninitializedCapacity: count) { buffer, initialized in
            let status = droptrace_dnnl_bf16_unpack(
                outFeatures, inFeatures, bits, columns.lowerBound, columns.count, buffer.baseAddress,
                transposed ? inFeatures : columns.count, transposed ? 1 : 0)
            // Only out of memory for a reorder primitive (a few kB) fails here.
            precondition(status == 0, "oneDNN could not lay packed weights out plainly (status \(status))")
            initialized = count
        }
    }

    /// C[m × columns] = A · W[columns]ᵀ (+ C when `beta` is 1), A [m × in]
    /// in bfloat16 bits (`lda` apart), C rows `ldc` apart; `columns` starts
    /// at a multiple of `columnBlock`.
    ///
    /// oneDNN runs packed weights on its fast kernel only into a dense C: a
    /// slice of C's columns is computed in a dense buffer and copied out. A
    /// slice the kernel would rather have laid out otherwise runs on a plain
    /// copy of its weights.
    func product(
        m: Int, columns: Range<Int>, _ a: UnsafePointer<UInt16>, lda: Int,
        _ c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float
    ) {
        precondition(beta == 0 || beta == 1, "bf16 products accumulate onto C or overwrite it")
        let width = columns.count
        guard m > 0, width > 0 else { return }
        guard ldc != width else { return product(m: m, columns: columns, a, lda: lda, denseC: c, beta: beta) }
        let dense = UnsafeMutablePointer<Float>.allocate(capacity: m * width)
        defer { dense.deallocate() }
        if beta == 1 { for r in 0..<m { (dense + r * width).update(from: c + r * ldc, count: width) } }
        product(m: m, columns: columns, a, lda: lda, denseC: dense, beta: beta)
        for r in 0..<m { (c + r * ldc).update(from: dense + r * width, count: width) }
    }

    private func product(
        m: Int, columns: Range<Int>, _ a: UnsafePointer<UInt16>, lda: Int, denseC c: UnsafeMutablePointer<Float>, beta: Float
    ) {
        let status = droptrace_dnnl_bf16_matmul_packed(
            m, columns.count, inFeatures, a, lda, bits, outFeatures, columns.lowerBound, c, columns.count, 1, beta == 1 ? 1 : 0)
        if status != 0 { unpackedProduct(m: m, columns: columns, a, lda: lda, c, ldc: columns.count, beta: beta) }
    }

    /// The same product on a plain copy of the columns' weights.
    func unpackedProduct(
        m: Int, columns: Range<Int>, _ a: UnsafePointer<UInt16>, lda: Int,
        _ c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float
    ) {
        let weights = plain(columns: columns, transposed: true)
        BLAS.gemmBF16(
            m: m, n: columns.count, k: inFeatures, a, lda: lda, weights, ldb: inFeatures, transposeB: true,
            c, ldc: ldc, beta: beta)
    }
}

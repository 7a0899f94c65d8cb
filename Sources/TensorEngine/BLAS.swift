import CBLAS

/// The few BLAS entry points the engine needs, with Swift-friendly arguments.
public enum BLAS {
    public static func setThreads(_ count: Int) {
        openblas_set_num_threads(Int32(count))
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// C[m×n] = alpha · op(A) · op(B) + beta · C, all row-major.
    /// op(A) is m×k and op(B) is k×n; `transposeA/B` select Aᵀ / Bᵀ.
    @inline(__always)
    public static func gemm(
        m: Int, n: Int, k: Int,
        _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
        _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
        _ c: UnsafeMutablePointer<Float>, ldc: Int,
        alpha: Float = 1, beta: Float = 0
    ) {
        cblas_sgemm(
            CblasRowMajor,
            transposeA ? CblasTrans : CblasNoTrans,
            transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// y[m] = alpha · op(A) · x + beta · y, A row-major m×n (op: A or Aᵀ).
    @inline(__always)
    public static func gemv(
        m: Int, n: Int, _ a: UnsafePointer<Float>, lda: Int, transpose: Bool = false,
        _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, alpha: Float = 1, beta: Float = 0
    ) {
        cblas_sgemv(
            CblasRowMajor, transpose ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), alpha, a, Int32(lda), x, 1, beta, y, 1)
    }

}

/// The matrix kernels the engine runs on this CPU.
public enum MatrixKernels {
    /// One line naming the library, kernel and instruction set used for
    /// matrix products in `precision` (recorded in stores as `matrix_kernel`).
    public static func description(for precision: Precision) -> String {
        "OpenBLAS \(String(cString: openblas_get_corename())) sgemm"
    }
}

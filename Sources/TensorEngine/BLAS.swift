import CBLAS
import CDNNLMatmul
import Foundation

/// The few BLAS entry points the engine needs, with Swift-friendly arguments.
public enum BLAS {
    public static func setThreads(_ count: Int) {
        openblas_set_num_threads(Int32(count))
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// Whether this OpenBLAS is its sequential build (Debian's
    /// libopenblas0-serial, where update-alternatives selects it), which
    /// keeps one set of work buffers for the whole process: products on two
    /// threads at once corrupt each other (scores off by 1e-3, differing from
    /// run to run). Its products then run one at a time.
    public static let isSequentialBuild = openblas_get_parallel() == 0
    private static let sequentialBuildLock = NSLock()
    public static let sequentialBuildWarning = "OpenBLAS here is its sequential build (libopenblas0-serial), which two threads "
        + "cannot call at once: its products run one at a time; select the threaded build (libopenblas0-pthread, "
        + "update-alternatives) for speed"

    /// Runs `body` (an OpenBLAS call) at once, or alone on a sequential build.
    @inline(__always)
    private static func openBLAS(_ body: () -> Void) {
        guard isSequentialBuild else { return body() }
        sequentialBuildLock.withLock(body)
    }

    /// C[m×n] = alpha · op(A) · op(B) + beta · C, all row-major.
    /// op(A) is m×k and op(B) is k×n; `transposeA/B` select Aᵀ / Bᵀ.
    /// Runs single-threaded on the calling thread, on `kernel` (by default
    /// the one `MatrixKernels` chose for this CPU).
    @inline(__always)
    public static func gemm(
        m: Int, n: Int, k: Int,
        _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
        _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
        _ c: UnsafeMutablePointer<Float>, ldc: Int,
        alpha: Float = 1, beta: Float = 0, kernel: F32Kernel = MatrixKernels.active.f32
    ) {
        // oneDNN fails only on arguments OpenBLAS would reject as well; the
        // call then goes to OpenBLAS, whose error handler reports them.
        if kernel == .oneDNN, m > 0, n > 0,
           droptrace_dnnl_sgemm(
               transposeA ? 1 : 0, transposeB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) == 0 {
            return
        }
        openBLAS {
            cblas_sgemm(
                CblasRowMajor,
                transposeA ? CblasTrans : CblasNoTrans,
                transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        }
    }

    /// y[m] = alpha · op(A) · x + beta · y, A row-major m×n (op: A or Aᵀ).
    @inline(__always)
    public static func gemv(
        m: Int, n: Int, _ a: UnsafePointer<Float>, lda: Int, transpose: Bool = false,
        _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, alpha: Float = 1, beta: Float = 0
    ) {
        _ = MatrixKernels.active // OpenBLAS steered before its first product
        openBLAS {
            cblas_sgemv(
                CblasRowMajor, transpose ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), alpha, a, Int32(lda), x, 1, beta, y, 1)
        }
    }

    /// C[m×n] (float32) = alpha · A · op(B) + beta · C with A [m×k] and B
    /// ([k×n], or [n×k] read transposed) in bfloat16 bits, row-major, on
    /// oneDNN's bf16 matmul (the AMX / AVX512-BF16 units where the CPU has
    /// them), single-threaded on the calling thread. `beta` is 0 or 1.
    /// Should oneDNN fail (out of memory), the same arithmetic runs on the
    /// float32 kernel: bf16 products are exact in float32.
    public static func gemmBF16(
        m: Int, n: Int, k: Int,
        _ a: UnsafePointer<UInt16>, lda: Int,
        _ b: UnsafePointer<UInt16>, ldb: Int, transposeB: Bool = false,
        _ c: UnsafeMutablePointer<Float>, ldc: Int,
        alpha: Float = 1, beta: Float = 0
    ) {
        precondition(beta == 0 || beta == 1, "bf16 products accumulate onto C or overwrite it")
        guard m > 0, n > 0 else { return }
        _ = MatrixKernels.active // oneDNN's ISA ceiling raised before its first primitive
        if k > 0, droptrace_dnnl_bf16_matmul(
            m, n, k, a, lda, b, ldb, transposeB ? 1 : 0, c, ldc, alpha, beta == 1 ? 1 : 0) == 0 {
            return
        }
        // Through the last element read: rows are `ld` apart, the last one only as wide as needed.
        let aCount = (m - 1) * lda + k
        let bCount = transposeB ? (n - 1) * ldb + k : max(0, k - 1) * ldb + n
        let widenedA = UnsafeMutablePointer<Float>.allocate(capacity: aCount)
        let widenedB = UnsafeMutablePointer<Float>.allocate(capacity: bCount)
        defer {
            widenedA.deallocate()
            widenedB.deallocate()
        }
        BFloat16.widen(a, into: widenedA, count: aCount)
        BFloat16.widen(b, into: widenedB, count: bCount)
        gemm(m: m, n: n, k: k, widenedA, lda: lda, widenedB, ldb: ldb, transposeB: transposeB,
             c, ldc: ldc, alpha: alpha, beta: beta)
    }

    /// A GEMM operand: float32 values or bfloat16 bits.
    enum Operand {
        case float(UnsafePointer<Float>)
        case bits(UnsafePointer<UInt16>)
    }

    /// C[m×n] = alpha · A · op(B) + beta · C on the kernel of the operands'
    /// type: `gemm` for two float32 operands, `gemmBF16` for two bf16 ones.
    @inline(__always)
    static func gemm(
        m: Int, n: Int, k: Int, _ a: Operand, lda: Int, _ b: Operand, ldb: Int, transposeB: Bool,
        _ c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float = 1, beta: Float = 0
    ) {
        switch (a, b) {
        case (.float(let a), .float(let b)):
            gemm(m: m, n: n, k: k, a, lda: lda, b, ldb: ldb, transposeB: transposeB, c, ldc: ldc, alpha: alpha, beta: beta)
        case (.bits(let a), .bits(let b)):
            gemmBF16(m: m, n: n, k: k, a, lda: lda, b, ldb: ldb, transposeB: transposeB, c, ldc: ldc, alpha: alpha, beta: beta)
        default:
            preconditionFailure("both operands of a product in one arithmetic")
        }
    }
}

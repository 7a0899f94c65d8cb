import CDNNLMatmul
import Foundation

/// oneDNN's bf16 matmul against the float32 kernel on bf16-rounded inputs,
/// timed once per process on this CPU: which one `--precision bf16` runs on.
///
/// AVX512-BF16's dot products (`vdpbf16ps`) run at twice float32's rate on
/// some cores and at about half of it on others — 398 against 204 GFLOP/s
/// on two threads of a Zen 4 EPYC, 186 against 373 on two of an Emerald
/// Rapids Xeon whose AMX the hypervisor hides (bench/results) — and no
/// CPUID bit tells them apart. Both paths compute the same products of the
/// same bf16-rounded inputs in float32 (`MatrixArithmetic`), so the faster
/// one is taken. CPUs with AMX are not timed: its tiles outrun float32
/// several times over.
public struct BF16Race: Sendable, Equatable {
    /// Single-thread rates on the timed product, GFLOP/s.
    public var native: Double
    public var emulated: Double

    /// The timed product: 256 tokens through a 1024 → 1024 projection
    /// (weights [out, in], as `torch.nn.Linear` stores them); 0.5 GFLOP,
    /// a few milliseconds on either path.
    static let shape = (m: 256, n: 1024, k: 1024)

    /// Whether the native bf16 path is at least as fast as emulation.
    public var nativeWins: Bool { native >= emulated }

    /// Times both paths on the calling thread (best of 3 after a warm-up
    /// each); nil when oneDNN's bf16 matmul fails here.
    static func run(f32: F32Kernel) -> BF16Race? {
        let (m, n, k) = shape
        // Values of a trained layer's order, exact in bf16 so both paths multiply the same numbers.
        let a = (0..<(m * k)).map { Float(($0 * 7919) % 61 - 30) / 64 }
        let b = (0..<(n * k)).map { Float(($0 * 104_729) % 53 - 26) / 256 }
        let a16 = a.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
        let b16 = b.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
        var c = [Float](repeating: 0, count: m * n)
        droptrace_omp_single_thread()
        let native = bestRate { c.withUnsafeMutableBufferPointer { c in
            droptrace_dnnl_bf16_matmul(m, n, k, a16, k, b16, k, 1, c.baseAddress, n, 1, 0) == 0
        } }
        guard let native else { return nil }
        let emulated = bestRate { c.withUnsafeMutableBufferPointer { c in
            BLAS.gemm(m: m, n: n, k: k, a, lda: k, b, ldb: k, transposeB: true, c.baseAddress!, ldc: n, kernel: f32)
            return true
        } }
        return emulated.map { BF16Race(native: native, emulated: $0) }
    }

    /// GFLOP/s of the best of 3 runs of `product` after one warm-up (which
    /// builds oneDNN's kernel); nil when it reports failure.
    private static func bestRate(_ product: () -> Bool) -> Double? {
        guard product() else { return nil }
        var best = Double.infinity
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            guard product() else { return nil }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        let (m, n, k) = shape
        return 2 * Double(m * n * k) / max(best, 1e-9) / 1e9
    }
}

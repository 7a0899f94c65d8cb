import CVectorKernels

/// The engine's elementwise and reduction loops (softmax, activations,
/// norms, residual sums, cosines, bfloat16 rounding): C kernels compiled
/// once per instruction-set level (`Sources/CVectorKernels`), used at the
/// widest level this CPU and its OS support. Swift itself is compiled for
/// baseline x86-64, where these loops ran four lanes wide.
///
/// Every level computes the same formulas; results differ between levels
/// only in summation order and FMA rounding (a few ulp).
public struct VectorKernels: @unchecked Sendable {
    public enum Level: Int32, Sendable, CaseIterable, CustomStringConvertible {
        case baseline = 0, avx2 = 1, avx512 = 2
        public var description: String {
            switch self {
            case .baseline: "baseline"
            case .avx2: "avx2+fma"
            case .avx512: "avx512"
            }
        }
    }

    public let level: Level
    private let table: droptrace_vector_kernels

    public init(_ level: Level) {
        self.level = level
        table = droptrace_vector_kernels_for(level.rawValue).pointee
    }

    /// The widest level `cpu` runs (AVX-512 F/DQ/BW/VL; AVX2 with FMA).
    public static func level(for cpu: CPUFeatures) -> Level {
        #if arch(x86_64)
            cpu.avx512 ? .avx512 : cpu.avx2 && cpu.fma ? .avx2 : .baseline
        #else
            .baseline
        #endif
    }

    /// This machine's kernels.
    public static let active = VectorKernels(level(for: .current))

    /// Every level this machine can run, for tests comparing them.
    public static var runnable: [Level] { Level.allCases.filter { $0.rawValue <= active.level.rawValue } }

    // MARK: softmax pieces

    /// x[i] = e^(x[i] − shift) for i < count; returns their Float32 sum.
    /// Cephes' single-precision exp, within ~2 ulp; e^(−87.3) below that.
    @inline(__always)
    public func expShifted(_ x: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
        table.exp_shifted(x, count, shift)
    }

    /// The largest of x[i] for i < count (count > 0); NaNs are skipped.
    @inline(__always)
    public func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float { table.maximum(x, count) }

    /// x[i] *= factor for i < count.
    @inline(__always)
    public func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by factor: Float) { table.scale(x, count, factor) }

    // MARK: activations

    /// The activations with vector kernels: SiLU and the tanh GELU.
    public enum VectorActivation: Int32, Sendable { case silu = 0, geluTanh = 1 }

    /// out[i] = act(gate[i]) · up[i] for i < count.
    @inline(__always)
    public func gated(
        _ activation: VectorActivation, gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
        into out: UnsafeMutablePointer<Float>, count: Int
    ) {
        table.gated(activation.rawValue, gate, up, out, count)
    }

    /// x[i] = act(x[i]) for i < count.
    @inline(__always)
    public func activate(_ activation: VectorActivation, _ x: UnsafeMutablePointer<Float>, count: Int) {
        table.activate(activation.rawValue, x, count)
    }

    // MARK: reductions

    /// (x·y, x·x, y·y) over `n` elements: Float32 lanes over blocks of 64
    /// elements, each block's partial sums carried in Float64, so a long
    /// vector keeps Float64-level accuracy at Float32 speed.
    @inline(__always)
    public func dotAndNorms(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> (Double, Double, Double) {
        var out = (0.0, 0.0, 0.0)
        withUnsafeMutablePointer(to: &out) {
            $0.withMemoryRebound(to: Double.self, capacity: 3) { table.dot_norms(x, y, n, $0) }
        }
        return out
    }

    /// x·y over `n` elements, accumulated as `dotAndNorms`.
    @inline(__always)
    public func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Double { table.dot(x, y, n) }

    // MARK: rows

    /// y = x / sqrt(mean(x²) + eps) · weight over `n` elements (RMSNorm;
    /// the sum of squares in Float32). `y` may be `x`.
    @inline(__always)
    public func rmsNorm(
        _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ n: Int, eps: Float
    ) {
        table.rms_norm(x, weight, y, n, eps)
    }

    /// out[i] = a[i] + b[i] for i < count.
    @inline(__always)
    public func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
        table.add(a, b, out, count)
    }

    /// dst[i] = src[i] rounded to bfloat16 (float32 values); `dst` may be `src`.
    @inline(__always)
    public func bf16Round(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count: Int) {
        table.bf16_round(src, dst, count)
    }

    /// dst[i] = the bfloat16 bits of src[i], rounded as `bf16Round`.
    @inline(__always)
    public func bf16Convert(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<UInt16>, count: Int) {
        table.bf16_convert(src, dst, count)
    }
}

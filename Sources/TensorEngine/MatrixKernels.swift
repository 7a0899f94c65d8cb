import CBLAS
import CDNNL
import CDNNLMatmul
import Foundation

/// The float32 matrix-product library.
public enum F32Kernel: String, Sendable, CaseIterable {
    /// oneDNN's `dnnl_sgemm` (its own ISA dispatch).
    case oneDNN = "onednn"
    /// OpenBLAS's `cblas_sgemm`, its core type steered from CPUID.
    case openBLAS = "openblas"
}

/// How bfloat16 products run.
public enum BF16Kernel: String, Sendable, CaseIterable {
    /// oneDNN's matmul primitive on bfloat16 operands (AMX / AVX512-BF16).
    case native
    /// bfloat16-rounded operands through the float32 kernel: the product of
    /// two bfloat16 values is exact in float32, so this is the bf16 units'
    /// arithmetic up to summation order.
    case emulated
}

/// The arithmetic one matrix product runs in.
public enum MatrixArithmetic: String, Sendable {
    case f32
    /// bfloat16-rounded inputs through the float32 kernel.
    case bf16Emulated
    /// bfloat16 inputs on oneDNN's bf16 matmul.
    case bf16Native

    public var roundsToBF16: Bool { self != .f32 }

    /// The arithmetic for `EnginePrecision.current` on this machine's
    /// kernels (or what `MatrixKernels.withArithmetic` set on this thread).
    public static var current: MatrixArithmetic {
        if let name = Thread.current.threadDictionary[MatrixKernels.overrideKey] as? String,
           let forced = MatrixArithmetic(rawValue: name) {
            return forced
        }
        switch EnginePrecision.current {
        case .f32: return .f32
        case .bf16: return MatrixKernels.bf16.kernel == .native ? .bf16Native : .bf16Emulated
        }
    }
}

/// What the engine runs its matrix products on, for one CPU.
public struct MatrixKernelChoice: Sendable, Equatable {
    public var f32: F32Kernel
    public var bf16: BF16Kernel
    /// The OpenBLAS core type this CPU's features allow (`OPENBLAS_CORETYPE`
    /// spelling), nil below AVX: OpenBLAS is steered to it when its own pick
    /// is weaker (it still serves matrix-vector products).
    public var openBLASCore: String?
    /// Whether oneDNN may use AMX (raised with `dnnl_set_max_cpu_isa`).
    public var amx: Bool
    /// False when the CPU has no AVX2: no fast kernel exists for it.
    public var fast: Bool
    /// Whether `DROPTRACE_BF16_KERNEL` set `bf16` (then it is never timed).
    public var bf16Forced = false
}

/// The matrix kernels the engine runs on this CPU, chosen once per process
/// from CPUID (never from a table of CPU models):
///
/// - float32: oneDNN's sgemm on AVX-512 CPUs (faster than OpenBLAS there:
///   255 vs 179 GFLOP/s on 2 threads, 2048³, Ice Lake), else OpenBLAS with
///   its core type steered to what the CPU supports.
/// - bfloat16: oneDNN's bf16 matmul where the CPU has AMX, or AVX512-BF16
///   and the matmul outruns the float32 kernel there (`BF16Race`, timed once
///   per process when a bf16 product is first set up: `bf16`), and oneDNN builds one (checked with a small product);
///   else emulated on the float32 kernel.
///
/// `DROPTRACE_MATRIX_KERNEL=openblas|onednn` forces the float32 kernel and
/// `DROPTRACE_BF16_KERNEL=native|emulated` the bfloat16 one (benchmarks,
/// tests; other values are ignored, and listed in `ignoredSettings`). A
/// user's `OPENBLAS_CORETYPE` and `ONEDNN_MAX_CPU_ISA` are respected: a
/// ceiling below oneDNN's bf16 instructions makes bf16 emulated (oneDNN's
/// own bf16 matmul without them converts inside, slower than emulation).
public enum MatrixKernels {
    /// The choice for a CPU with `cpu`'s features (pure).
    public static func choice(for cpu: CPUFeatures) -> MatrixKernelChoice {
        let core: String? =
            if cpu.avx512 { cpu.avx512BF16 ? "Cooperlake" : "SkylakeX" }
            else if cpu.avx2 && cpu.fma { ["AuthenticAMD", "HygonGenuine"].contains(cpu.vendor) ? "Zen" : "Haswell" }
            else if cpu.avx { "Sandybridge" }
            else { nil }
        return MatrixKernelChoice(
            f32: cpu.avx512 ? .oneDNN : .openBLAS,
            bf16: cpu.amxBF16 || cpu.avx512BF16 ? .native : .emulated,
            openBLASCore: core, amx: cpu.amxBF16, fast: cpu.avx2)
    }

    /// This process's choice: made once, on first use, before any product
    /// runs (it re-initialises OpenBLAS and sets oneDNN's ISA ceiling).
    public static let active: MatrixKernelChoice = {
        var choice = MatrixKernels.choice(for: CPUFeatures.current)
        let environment = ProcessInfo.processInfo.environment
        let forcedF32 = environment[f32Setting].flatMap(F32Kernel.init(rawValue:))
        let forcedBF16 = environment[bf16Setting].flatMap(BF16Kernel.init(rawValue:))
        if let forcedF32 { choice.f32 = forcedF32 }
        if let forcedBF16 {
            choice.bf16 = forcedBF16
            choice.bf16Forced = true
        }
        // A user's ceiling (oneDNN's ONEDNN_MAX_CPU_ISA, or its older DNNL_ spelling) is respected.
        if choice.amx && environment["ONEDNN_MAX_CPU_ISA"] == nil && environment["DNNL_MAX_CPU_ISA"] == nil {
            _ = dnnl_set_max_cpu_isa(dnnl_cpu_isa_avx512_core_amx)
        }
        // Under a ceiling below its bf16 instructions oneDNN still builds a bf16 matmul, converting inside
        // (2.4× slower than emulation on Zen 5): the units are not there for it, so bf16 is emulated unless forced.
        let bf16Instructions = dnnl_cpu_isa_avx512_core_bf16.rawValue
        if forcedBF16 == nil && dnnl_get_effective_cpu_isa().rawValue & bf16Instructions != bf16Instructions {
            choice.bf16 = .emulated
        }
        // oneDNN may have no bf16 matmul here (its ISA capped by ONEDNN_MAX_CPU_ISA, or forced native on a CPU
        // without bf16 units): then every product would fall back to the float32 kernel under a native label.
        if choice.bf16 == .native && !nativeBF16Works() { choice.bf16 = .emulated }
        if environment["OPENBLAS_CORETYPE"] == nil, let core = choice.openBLASCore {
            OpenBLASCore.steer(to: core)
        }
        return choice
    }()

    /// The kernel bf16 products run on: `active.bf16`, except on a CPU with
    /// AVX512-BF16 and no AMX, whose dot products outrun float32 on some
    /// cores and not on others: there the two paths are timed (`race`) the
    /// first time a bf16 product is set up, so float32 runs never pay for it.
    public static let bf16: (kernel: BF16Kernel, race: BF16Race?) = {
        let choice = active
        guard !choice.bf16Forced, choice.bf16 == .native, !choice.amx else { return (choice.bf16, nil) }
        let race = BF16Race.run(f32: choice.f32)
        return (race?.nativeWins == true ? .native : .emulated, race)
    }()

    static let f32Setting = "DROPTRACE_MATRIX_KERNEL", bf16Setting = "DROPTRACE_BF16_KERNEL"

    /// The kernel settings in the environment whose values are not ones
    /// this process takes (and so were ignored), one line each, for a warning.
    public static var ignoredSettings: [String] {
        let environment = ProcessInfo.processInfo.environment
        let settings: [(String, [String])] = [
            (f32Setting, F32Kernel.allCases.map(\.rawValue)), (bf16Setting, BF16Kernel.allCases.map(\.rawValue)),
        ]
        return settings.compactMap { name, values in
            guard let value = environment[name], !values.contains(value) else { return nil }
            return "\(name)=\(value) ignored: it takes \(values.joined(separator: " or "))"
        }
    }

    /// Whether oneDNN builds and runs a bf16 matmul on this thread (a small
    /// product checked against its exact value).
    static func nativeBF16Works() -> Bool {
        let size = 16
        let one: UInt16 = 0x3F80  // 1.0 in bfloat16
        let a = [UInt16](repeating: one, count: size * size), b = a
        var c = [Float](repeating: 0, count: size * size)
        let status = droptrace_dnnl_bf16_matmul(size, size, size, a, size, b, size, 0, &c, size, 1, 0)
        return status == 0 && c.allSatisfy { $0 == Float(size) }
    }

    /// One line naming the library, kernel and instruction set used for
    /// matrix products in `precision` (recorded in stores as `matrix_kernel`),
    /// e.g. `oneDNN 2.6.3 sgemm (avx512_core_vnni)`.
    public static func description(for precision: Precision) -> String {
        let choice = active
        switch precision {
        case .f32: return description(of: choice.f32, fast: choice.fast)
        case .bf16:
            switch bf16.kernel {
            case .native:
                let units = CPUFeatures.current.amxBF16 || CPUFeatures.current.avx512BF16
                return "oneDNN \(oneDNNVersion) matmul bf16 (\(oneDNNISA)\(units ? "" : ", no bf16 units: forced"))"
            case .emulated:
                return "bf16 emulated: bf16-rounded inputs on " + description(of: choice.f32, fast: choice.fast)
                    + (bf16.race == nil ? "" : ", timed faster here than oneDNN's bf16 matmul")
            }
        }
    }

    /// The float32 kernel's line; says plainly when the CPU has no fast kernel.
    static func description(of kernel: F32Kernel, fast: Bool) -> String {
        let slow = fast ? "" : " (no AVX2 on this CPU: no fast kernel, generic code)"
        switch kernel {
        case .oneDNN: return "oneDNN \(oneDNNVersion) sgemm (\(oneDNNISA))" + slow
        case .openBLAS: return "\(OpenBLASCore.version) \(OpenBLASCore.current) sgemm" + slow
        }
    }

    /// CPU, flags and choice, for a debug log line.
    public static var selectionSummary: String {
        let cpu = CPUFeatures.current
        let race = bf16.race.map { race in
            String(format: " (timed on one thread: bf16 matmul %.0f GFLOP/s, float32 kernel %.0f)", race.native, race.emulated)
        } ?? ""
        return "\(cpu.summary), flags \(cpu.flags.joined(separator: " ")); f32: \(description(for: .f32)); "
            + "bf16: \(description(for: .bf16))" + race
    }

    static var oneDNNVersion: String {
        guard let version = dnnl_version()?.pointee else { return "?" }
        return "\(version.major).\(version.minor).\(version.patch)"
    }

    /// The instruction set oneDNN dispatches to (after the AMX ceiling).
    static var oneDNNISA: String {
        let names: [UInt32: String] = [
            dnnl_cpu_isa_sse41.rawValue: "sse41", dnnl_cpu_isa_avx.rawValue: "avx", dnnl_cpu_isa_avx2.rawValue: "avx2",
            dnnl_cpu_isa_avx2_vnni.rawValue: "avx2_vnni", dnnl_cpu_isa_avx512_core.rawValue: "avx512_core",
            dnnl_cpu_isa_avx512_core_vnni.rawValue: "avx512_core_vnni",
            dnnl_cpu_isa_avx512_core_bf16.rawValue: "avx512_core_bf16",
            dnnl_cpu_isa_avx512_core_amx.rawValue: "avx512_core_amx",
        ]
        let isa = dnnl_get_effective_cpu_isa().rawValue
        return names[isa] ?? "isa 0x\(String(isa, radix: 16))"
    }

    static let overrideKey = "droptrace.matrixArithmetic"

    /// Runs `body` with the matrix arithmetic forced on the calling thread
    /// only (tests comparing the native and emulated bf16 paths, which must
    /// not disturb products on other threads). `Linear` fixes its arithmetic
    /// when it is created; attention reads it when called.
    public static func withArithmetic<T>(_ arithmetic: MatrixArithmetic, _ body: () throws -> T) rethrows -> T {
        let dictionary = Thread.current.threadDictionary
        let previous = dictionary[overrideKey]
        dictionary[overrideKey] = arithmetic.rawValue
        defer { dictionary[overrideKey] = previous }
        return try body()
    }
}

/// OpenBLAS's kernel set (DYNAMIC_ARCH builds pick one at load time from
/// their own CPU table, falling back to generic Prescott kernels on CPUs
/// newer than the table).
public enum OpenBLASCore {
    /// The core type OpenBLAS runs, e.g. "SkylakeX".
    public static var current: String { String(cString: openblas_get_corename()) }

    /// "OpenBLAS 0.3.21".
    public static var version: String {
        String(cString: openblas_get_config()).split(separator: " ").prefix(2).joined(separator: " ")
    }

    /// How capable a core type's kernels are (SSE-era kernels 1).
    static func rank(_ core: String) -> Int {
        switch core.lowercased() {
        case "sapphirerapids": 6
        case "cooperlake": 5
        case "skylakex": 4
        case "haswell", "zen", "excavator": 3
        case "sandybridge", "bulldozer", "piledriver", "steamroller": 2
        default: 1
        }
    }

    /// Re-initialises OpenBLAS with core type `core` when that is stronger
    /// than what it picked itself; call before its first product. Keeps the
    /// stronger of the two when OpenBLAS cannot run `core`.
    public static func steer(to core: String) {
        let before = current
        guard rank(core) > rank(before) else { return }
        select(core)
        if rank(current) < rank(before) { select(before) }
    }

    /// Makes OpenBLAS run core type `core` (OPENBLAS_CORETYPE spelling) now,
    /// through its exported re-initialisation; unknown names leave it on its
    /// own pick. Not thread-safe: only before any product runs (and in tests).
    public static func select(_ core: String) {
        let previous = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
        setenv("OPENBLAS_CORETYPE", core, 1)
        gotoblas_dynamic_quit()
        gotoblas_dynamic_init()
        if let previous { setenv("OPENBLAS_CORETYPE", previous, 1) } else { unsetenv("OPENBLAS_CORETYPE") }
    }
}

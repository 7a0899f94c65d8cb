import Foundation
import Testing
@testable import TensorEngine

/// Kernel choice by CPU features: synthetic CPUs (raw CPUID registers) for
/// every class, and this machine against /proc/cpuinfo.
@Suite struct MatrixKernelSelectionTests {
    /// CPUID registers of a synthetic CPU.
    static func cpu(
        vendor: String = "GenuineIntel", family: UInt32 = 6, model: UInt32 = 0x6A,
        avx: Bool = true, fma: Bool = true, avx2: Bool = true, avx512: Bool = false, vnni: Bool = false,
        bf16: Bool = false, amx: Bool = false, xcr0: UInt64? = nil, amxPermitted: Bool = true
    ) -> CPUFeatures.Registers {
        func word(_ text: Substring) -> UInt32 {
            text.utf8.enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        }
        let name = Array(vendor)
        var registers = CPUFeatures.Registers()
        registers.leaf0 = .init(
            eax: 0x1F, ebx: word(Substring(String(name[0..<4]))), ecx: word(Substring(String(name[8..<12]))),
            edx: word(Substring(String(name[4..<8]))))
        let eax = (model >> 4) << 16 | min(family, 0xF) << 8 | (model & 0xF) << 4 | 2
            | (family > 0xF ? (family - 0xF) << 20 : 0)
        registers.leaf1 = .init(eax: eax, ecx: 1 << 27 | (avx ? 1 << 28 : 0) | (fma ? 1 << 12 : 0))
        registers.leaf7 = .init(
            ebx: (avx2 ? 1 << 5 : 0) | (avx512 ? 1 << 16 | 1 << 17 | 1 << 30 | 1 << 31 : 0),
            ecx: vnni ? 1 << 11 : 0, edx: amx ? 1 << 24 | 1 << 22 : 0)
        registers.leaf7Subleaf1 = .init(eax: bf16 ? 1 << 5 : 0)
        registers.xcr0 = xcr0 ?? (0x7 | (avx512 ? 0xE0 : 0) | (amx ? 0x60000 : 0))
        registers.amxPermitted = amx && amxPermitted
        return registers
    }

    func choice(_ registers: CPUFeatures.Registers) -> MatrixKernelChoice {
        MatrixKernels.choice(for: CPUFeatures(registers))
    }

    @Test func amxCPUGetsOneDNNEverywhereAndTheTiles() {
        let sapphireRapids = Self.cpu(model: 207, avx512: true, vnni: true, bf16: true, amx: true)
        let features = CPUFeatures(sapphireRapids)
        #expect(features.family == 6 && features.model == 207 && features.vendor == "GenuineIntel")
        #expect(features.amxBF16 && features.avx512BF16)
        #expect(choice(sapphireRapids) == MatrixKernelChoice(
            f32: .oneDNN, bf16: .native, openBLASCore: "Cooperlake", amx: true, fast: true))
    }

    @Test func avx512BF16CPUGetsTheNativeBF16Path() {
        #expect(choice(Self.cpu(model: 85, avx512: true, vnni: true, bf16: true)) == MatrixKernelChoice(
            f32: .oneDNN, bf16: .native, openBLASCore: "Cooperlake", amx: false, fast: true))
    }

    @Test func avx512OnlyCPUEmulatesBF16OnOneDNN() {
        #expect(choice(Self.cpu(avx512: true, vnni: true)) == MatrixKernelChoice(
            f32: .oneDNN, bf16: .emulated, openBLASCore: "SkylakeX", amx: false, fast: true))
    }

    @Test func avx2CPUsGetOpenBLASWithTheirVendorsCore() {
        #expect(choice(Self.cpu(model: 0x9E)) == MatrixKernelChoice(
            f32: .openBLAS, bf16: .emulated, openBLASCore: "Haswell", amx: false, fast: true))
        let zen = Self.cpu(vendor: "AuthenticAMD", family: 0x17, model: 0x31)
        #expect(CPUFeatures(zen).family == 0x17 && CPUFeatures(zen).vendor == "AuthenticAMD")
        #expect(choice(zen) == MatrixKernelChoice(
            f32: .openBLAS, bf16: .emulated, openBLASCore: "Zen", amx: false, fast: true))
    }

    @Test func sseOnlyCPUIsToldItHasNoFastKernel() {
        let old = choice(Self.cpu(model: 0x17, avx: false, fma: false, avx2: false))
        #expect(old == MatrixKernelChoice(f32: .openBLAS, bf16: .emulated, openBLASCore: nil, amx: false, fast: false))
        #expect(MatrixKernels.description(of: .openBLAS, fast: false).contains("no fast kernel"))
    }

    /// Instruction sets whose register state the OS does not save are unusable.
    @Test func featuresTheOSDoesNotEnableAreNotUsed() {
        // AVX-512 CPU, OS saving only SSE/AVX state: AVX2 kernels.
        #expect(choice(Self.cpu(avx512: true, bf16: true, xcr0: 0x7)).f32 == .openBLAS)
        #expect(choice(Self.cpu(avx512: true, bf16: true, xcr0: 0x7)).openBLASCore == "Haswell")
        // AMX tiles without Linux's permission: the AVX512-BF16 path, no tiles.
        let unpermitted = choice(Self.cpu(avx512: true, bf16: true, amx: true, amxPermitted: false))
        #expect(unpermitted.amx == false && unpermitted.bf16 == .native)
        // No XSAVE at all: nothing beyond SSE.
        var noXSAVE = Self.cpu(avx512: true)
        noXSAVE.leaf1.ecx &= ~(1 << 27)
        #expect(CPUFeatures(noXSAVE).flags.isEmpty)
    }

    /// This machine's CPUID reading against the kernel's /proc/cpuinfo.
    @Test func currentCPUAgreesWithProcCpuinfo() throws {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return }
        let fields = Dictionary(
            text.split(separator: "\n").prefix { !$0.isEmpty }.compactMap { line -> (String, String)? in
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2 else { return nil }
                return (parts[0].trimmingCharacters(in: .whitespaces), parts[1].trimmingCharacters(in: .whitespaces))
            }, uniquingKeysWith: { first, _ in first })
        let flags = Set((fields["flags"] ?? "").split(separator: " ").map(String.init))
        let cpu = CPUFeatures.current
        #expect(cpu.vendor == fields["vendor_id"])
        #expect(String(cpu.family) == fields["cpu family"] && String(cpu.model) == fields["model"])
        #expect(String(cpu.stepping) == fields["stepping"])
        #expect(cpu.brand == fields["model name"])
        #expect(cpu.avx == flags.contains("avx"))
        #expect(cpu.avx2 == flags.contains("avx2"))
        #expect(cpu.fma == flags.contains("fma"))
        #expect(cpu.avx512 == ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains))
        #expect(cpu.avx512VNNI == (cpu.avx512 && flags.contains("avx512_vnni")))
        #expect(cpu.avx512BF16 == (cpu.avx512 && flags.contains("avx512_bf16")))
        #expect(cpu.amxBF16 == (flags.contains("amx_bf16") && flags.contains("amx_tile")))
    }

    /// The description names the library and what it runs, never a bare "generic".
    @Test func descriptionNamesLibraryKernelAndISA() {
        let f32 = MatrixKernels.description(for: .f32)
        let bf16 = MatrixKernels.description(for: .bf16)
        switch MatrixKernels.active.f32 {
        case .oneDNN: #expect(f32.hasPrefix("oneDNN ") && f32.contains(" sgemm ("))
        case .openBLAS: #expect(f32.hasPrefix("OpenBLAS ") && f32.contains(OpenBLASCore.current))
        }
        switch MatrixKernels.bf16.kernel {
        case .native: #expect(bf16.hasPrefix("oneDNN ") && bf16.contains("matmul bf16"))
        case .emulated:
            let timed = MatrixKernels.bf16.race == nil ? "" : ", timed faster here than oneDNN's bf16 matmul"
            #expect(bf16 == "bf16 emulated: bf16-rounded inputs on " + f32 + timed)
        }
    }

    /// The race decides bf16 on a CPU with AVX512-BF16 and no AMX, and its
    /// rates are rates; a CPU with AMX, or without AVX512-BF16, is not timed.
    @Test func theBF16RaceDecidesBetweenTheUnitsWhereCPUIDCannot() {
        let active = MatrixKernels.active
        let environment = ProcessInfo.processInfo.environment
        if let race = MatrixKernels.bf16.race {
            #expect(race.native.isFinite && race.native > 0 && race.emulated.isFinite && race.emulated > 0)
            #expect(MatrixKernels.bf16.kernel == (race.nativeWins ? .native : .emulated))
            #expect(MatrixKernels.selectionSummary.contains("timed on one thread: bf16 matmul"))
        } else if environment[MatrixKernels.bf16Setting] == nil {
            #expect(active.amx || !CPUFeatures.current.avx512BF16 || MatrixKernels.bf16.kernel == .emulated)
        }
        #expect(BF16Race(native: 2, emulated: 1).nativeWins && !BF16Race(native: 1, emulated: 2).nativeWins)
        // Timed again here wherever the CPU has the instructions.
        if CPUFeatures.current.avx512BF16, MatrixKernels.nativeBF16Works(), let again = BF16Race.run(f32: active.f32) {
            #expect(again.native > 0 && again.emulated > 0)
        }
    }

    /// OpenBLAS forced back to its generic Prescott kernels (what it picks on
    /// CPUs newer than its table), then steered from CPUID. OpenBLAS's choice
    /// is process-wide, so this runs in a child process of the test binary.
    @Test func openBLASIsSteeredFromGenericKernelsToTheCPUsCore() throws {
        guard let core = MatrixKernels.active.openBLASCore, ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil
        else { return }
        let result = try ChildProcess.run(
            "/usr/bin/env",
            ["DROPTRACE_STEERING_CHILD=\(core)", CommandLine.arguments[0],
             "--testing-library", "swift-testing", "--filter", "OpenBLASSteeringChild"])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("steered Prescott → \(core)") || result.stderr.contains("steered Prescott → \(core)"),
                "\(result.stdout)\n\(result.stderr)")
    }
}

/// Runs only as the child of `openBLASIsSteeredFromGenericKernelsToTheCPUsCore`.
@Suite struct OpenBLASSteeringChild {
    @Test func steer() {
        guard let core = ProcessInfo.processInfo.environment["DROPTRACE_STEERING_CHILD"] else { return }
        let original = OpenBLASCore.current
        OpenBLASCore.select("Prescott")
        #expect(OpenBLASCore.current == "Prescott")
        OpenBLASCore.steer(to: core)
        let steered = OpenBLASCore.current
        #expect(steered == core)
        print("steered Prescott → \(steered)")
        OpenBLASCore.select(original)
        #expect(OpenBLASCore.current == original)
    }
}

/// OpenBLAS's sequential build (Debian's libopenblas0-serial, where
/// update-alternatives selects it) keeps one set of work buffers for the
/// process: the engine's threads in its products at once gave scores off by
/// 1e-3 on the bench model, different from run to run. droptrace finds that
/// build, runs its products one at a time and says so.
@Suite struct SequentialOpenBLASTests {
    static let library: String? = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .map { "/usr/lib/\($0)/openblas-serial" }
        .first { FileManager.default.fileExists(atPath: $0 + "/libopenblas.so.0") }

    @Test(.enabled(if: library != nil, "needs libopenblas0-serial (scripts/ensure-deps.sh --tests)"))
    func itsProductsRunOneAtATimeAndItIsSaid() throws {
        let scratch = try ScratchDirectory()
        func score(_ environment: [String: String], _ name: String) throws -> DroptraceCommand.Result {
            try DroptraceCommand.run(
                ["score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
                 "--output", scratch.path(name).path, "--threads", "2", "--json"],
                environment: environment.merging(["DROPTRACE_MATRIX_KERNEL": "openblas"]) { $1 })
        }
        let threaded = try score([:], "threaded.h5")
        let sequential = try score(["LD_LIBRARY_PATH": try #require(Self.library)], "sequential.h5")
        #expect(threaded.status == 0 && sequential.status == 0, "\(threaded.stderr)\n\(sequential.stderr)")
        #expect(!threaded.stderr.contains("sequential build"))
        #expect(sequential.stderr.contains("warning: \(BLAS.sequentialBuildWarning)"), "\(sequential.stderr)")
        #expect(sequential.stdout == threaded.stdout)
    }
}

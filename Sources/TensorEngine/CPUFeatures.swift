import CCPUFeatures

/// What this CPU can do for matrix products, read from CPUID and XCR0:
/// the instruction sets the matrix kernels are chosen by (never by a table
/// of CPU models), each counted only when the operating system also saves
/// its register state.
public struct CPUFeatures: Sendable, Equatable {
    /// CPUID leaf 0's vendor string: "GenuineIntel", "AuthenticAMD", ….
    public let vendor: String
    /// Display family, model and stepping (leaf 1, extended fields folded in).
    public let family: Int
    public let model: Int
    public let stepping: Int
    /// The processor brand string (leaves 0x80000002–4), trimmed; empty when absent.
    public let brand: String

    public let avx: Bool
    public let avx2: Bool
    public let fma: Bool
    /// AVX-512 foundation with the BW, VL and DQ subsets (what Skylake-SP
    /// class kernels need), usable only when all four are present.
    public let avx512: Bool
    public let avx512VNNI: Bool
    /// AVX512-BF16 (leaf 7 subleaf 1 EAX bit 5): bfloat16 dot products.
    public let avx512BF16: Bool
    /// AMX tiles with bfloat16 (leaf 7 EDX bits 24 and 22), the OS saving the
    /// tile state (XCR0 bits 17 and 18) and, on Linux, the process allowed
    /// to use it (arch_prctl).
    public let amxBF16: Bool

    /// The raw registers this description is computed from, so selection can
    /// be tested with synthetic CPUs.
    public struct Registers: Sendable, Equatable {
        /// CPUID leaf 0: EBX, EDX, ECX hold the vendor string.
        public var leaf0 = CPUIDRegisters()
        /// Leaf 1: family/model/stepping in EAX, AVX/FMA/OSXSAVE in ECX.
        public var leaf1 = CPUIDRegisters()
        /// Leaf 7 subleaf 0: AVX2, AVX-512, AMX bits.
        public var leaf7 = CPUIDRegisters()
        /// Leaf 7 subleaf 1: AVX512-BF16 in EAX.
        public var leaf7Subleaf1 = CPUIDRegisters()
        /// Leaves 0x80000002–4: the brand string, 48 bytes.
        public var brand: [CPUIDRegisters] = []
        /// XCR0 (0 when the OS has not enabled XSAVE).
        public var xcr0: UInt64 = 0
        /// Whether the OS lets this process use AMX tile data.
        public var amxPermitted = false

        public init() {}
    }

    public struct CPUIDRegisters: Sendable, Equatable {
        public var eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32
        public init(eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
            (self.eax, self.ebx, self.ecx, self.edx) = (eax, ebx, ecx, edx)
        }
    }

    /// Decodes `registers` (pure: no instruction is executed).
    public init(_ registers: Registers) {
        func bit(_ value: UInt32, _ index: UInt32) -> Bool { value >> index & 1 == 1 }
        func text(_ words: [UInt32]) -> String {
            let bytes = words.flatMap { word in (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) } }
            return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self).trimmingSpaces()
        }
        let l0 = registers.leaf0, l1 = registers.leaf1, l7 = registers.leaf7
        vendor = text([l0.ebx, l0.edx, l0.ecx])
        brand = text(registers.brand.flatMap { [$0.eax, $0.ebx, $0.ecx, $0.edx] })
        let baseFamily = Int(l1.eax >> 8 & 0xF), baseModel = Int(l1.eax >> 4 & 0xF)
        family = baseFamily == 0xF ? baseFamily + Int(l1.eax >> 20 & 0xFF) : baseFamily
        model = baseFamily == 0x6 || baseFamily == 0xF ? baseModel | Int(l1.eax >> 16 & 0xF) << 4 : baseModel
        stepping = Int(l1.eax & 0xF)

        // XCR0: 1|2 SSE, 4 AVX (YMM upper halves), 32|64|128 AVX-512
        // (opmask, ZMM upper halves, ZMM16–31), 2¹⁷|2¹⁸ AMX tile config and data.
        let osXSAVE = bit(l1.ecx, 27)
        let xcr0 = osXSAVE ? registers.xcr0 : 0
        let osAVX = xcr0 & 0x6 == 0x6
        let osAVX512 = osAVX && xcr0 & 0xE0 == 0xE0
        let osAMX = xcr0 & 0x60000 == 0x60000
        avx = osAVX && bit(l1.ecx, 28)
        fma = avx && bit(l1.ecx, 12)
        avx2 = avx && bit(l7.ebx, 5)
        avx512 = osAVX512 && bit(l7.ebx, 16) && bit(l7.ebx, 17) && bit(l7.ebx, 30) && bit(l7.ebx, 31)
        avx512VNNI = avx512 && bit(l7.ecx, 11)
        avx512BF16 = avx512 && bit(registers.leaf7Subleaf1.eax, 5)
        amxBF16 = osAMX && registers.amxPermitted && bit(l7.edx, 24) && bit(l7.edx, 22)
    }

    /// This machine, read once (asking Linux for AMX permission on the way
    /// when the CPU has AMX tiles).
    public static let current: CPUFeatures = CPUFeatures(currentRegisters)

    /// The raw registers of this machine.
    public static var currentRegisters: Registers {
        func cpuid(_ leaf: UInt32, _ subleaf: UInt32 = 0) -> CPUIDRegisters {
            var out = droptrace_cpuid_registers()
            _ = droptrace_cpuid(leaf, subleaf, &out)
            return CPUIDRegisters(eax: out.eax, ebx: out.ebx, ecx: out.ecx, edx: out.edx)
        }
        var registers = Registers()
        registers.leaf0 = cpuid(0)
        let highest = registers.leaf0.eax
        registers.leaf1 = highest >= 1 ? cpuid(1) : CPUIDRegisters()
        if highest >= 7 {
            registers.leaf7 = cpuid(7)
            if registers.leaf7.eax >= 1 { registers.leaf7Subleaf1 = cpuid(7, 1) }
        }
        if cpuid(0x8000_0000).eax >= 0x8000_0004 {
            registers.brand = (0x8000_0002...0x8000_0004).map { cpuid($0) }
        }
        registers.xcr0 = droptrace_xcr0()
        let hasTiles = registers.leaf7.edx >> 24 & 1 == 1
        registers.amxPermitted = hasTiles && droptrace_request_amx_permission() != 0
        return registers
    }

    /// The instruction sets found, in /proc/cpuinfo's spelling.
    public var flags: [String] {
        [("avx", avx), ("avx2", avx2), ("fma", fma), ("avx512f+bw+vl+dq", avx512), ("avx512_vnni", avx512VNNI),
         ("avx512_bf16", avx512BF16), ("amx_bf16", amxBF16)].filter(\.1).map(\.0)
    }

    /// "Intel(R) Xeon(R) … (family 6 model 106 stepping 6)".
    public var summary: String {
        "\(brand.isEmpty ? vendor : brand) (family \(family) model \(model) stepping \(stepping))"
    }
}

private extension String {
    /// Without leading and trailing spaces (brand strings are padded).
    func trimmingSpaces() -> String {
        var text = Substring(self)
        while text.first == " " { text.removeFirst() }
        while text.last == " " { text.removeLast() }
        return String(text)
    }
}

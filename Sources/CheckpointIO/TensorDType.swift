import DroptraceSupport

/// The element types droptrace expands to Float32.
public enum TensorDType: String, Sendable {
    case float32 = "F32"
    case float16 = "F16"
    case bfloat16 = "BF16"

    public var byteSize: Int {
        switch self {
        case .float32: 4
        case .float16, .bfloat16: 2
        }
    }
}

/// Expands `count` elements of `dtype` at `source` into Float32.
///
/// bfloat16 is the top half of a float32, so it widens exactly by a shift;
/// float16 goes through Swift's Float16, which the compiler lowers to F16C.
public func expandToFloat32(
    _ source: UnsafeRawPointer, dtype: TensorDType, count: Int, into destination: UnsafeMutablePointer<Float>
) {
    switch dtype {
    case .float32:
        // Safetensors data is only guaranteed byte-aligned, so copy bytes.
        UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count * 4)
    case .bfloat16:
        for i in 0..<count {
            let bits = UInt32(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16
            destination[i] = Float(bitPattern: bits)
        }
    case .float16:
        #if arch(x86_64) || arch(arm64)
        for i in 0..<count {
            let bits = source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
            destination[i] = Float(Float16(bitPattern: bits))
        }
        #else
        fatalError("float16 needs Swift's Float16, unavailable on this architecture")
        #endif
    }
}

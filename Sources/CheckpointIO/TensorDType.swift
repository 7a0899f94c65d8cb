import DroptraceSupport

/// The element types droptrace expands to Float32: plain floats (safetensors,
/// PyTorch, GGUF) and ggml's block-quantised types (GGUF only).
public enum TensorDType: String, Sendable {
    case float32 = "F32"
    case float16 = "F16"
    case bfloat16 = "BF16"
    case q8_0 = "Q8_0"
    case q4_0 = "Q4_0"
    case q4_1 = "Q4_1"
    case q5_0 = "Q5_0"
    case q5_1 = "Q5_1"
    case q4_K = "Q4_K"
    case q6_K = "Q6_K"

    /// Elements stored together with their shared scales; 1 for plain floats.
    /// A tensor's rows are whole blocks, so row and chunk boundaries never
    /// split one.
    public var blockSize: Int {
        switch self {
        case .float32, .float16, .bfloat16: 1
        case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1: 32
        case .q4_K, .q6_K: 256
        }
    }

    /// Bytes of one block (for plain floats: of one element).
    public var byteSize: Int {
        switch self {
        case .float32: 4
        case .float16, .bfloat16: 2
        case .q8_0: 34
        case .q4_0: 18
        case .q4_1: 20
        case .q5_0: 22
        case .q5_1: 24
        case .q4_K: 144
        case .q6_K: 210
        }
    }

    public var isBlockQuantized: Bool { blockSize > 1 }

    /// Bytes holding `elements` elements; `elements` must be whole blocks.
    public func byteCount(elements: Int) -> Int {
        elements / blockSize * byteSize
    }
}

/// Expands `count` elements of `dtype` at `source` into Float32. For block
/// types `source` must start a block and `count` be whole blocks.
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
        for i in 0..<count {
            destination[i] = halfToFloat(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        }
    case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q6_K:
        GGMLQuantization.dequantize(source, dtype: dtype, blocks: count / dtype.blockSize, into: destination)
    }
}

/// An IEEE half (little-endian bits) widened exactly to Float.
@inline(__always)
func halfToFloat(_ bits: UInt16) -> Float {
    #if arch(x86_64) || arch(arm64)
    return Float(Float16(bitPattern: bits))
    #else
    fatalError("float16 needs Swift's Float16, unavailable on this architecture")
    #endif
}

import DroptraceSupport

/// The element types droptrace expands to Float32: plain floats (safetensors,
/// PyTorch, GGUF; float64 rounded), ggml's block-quantised types (GGUF only), and the
/// safetensors dtypes of scaled checkpoints (U8 MXFP4 blocks and scales,
/// FP8 weights), which only a dequantiser reads (`readsAsWeights`).
public enum TensorDType: String, Sendable {
    case float32 = "F32"
    case float16 = "F16"
    case bfloat16 = "BF16"
    /// Double precision (rare: a model saved in float64); rounded to nearest
    /// float32 as torch's `.float()` rounds it.
    case float64 = "F64"
    case q8_0 = "Q8_0"
    case q4_0 = "Q4_0"
    case q4_1 = "Q4_1"
    case q5_0 = "Q5_0"
    case q5_1 = "Q5_1"
    case q2_K = "Q2_K"
    case q3_K = "Q3_K"
    case q4_K = "Q4_K"
    case q5_K = "Q5_K"
    case q6_K = "Q6_K"
    case iq4_NL = "IQ4_NL"
    case iq4_XS = "IQ4_XS"
    case mxfp4 = "MXFP4"
    /// Raw bytes (MXFP4 `_blocks` and `_scales`); expands to the byte values.
    case uint8 = "U8"
    /// torch's float8_e4m3fn and float8_e5m2; expand exactly as torch's `.float()`.
    case float8_e4m3 = "F8_E4M3"
    case float8_e5m2 = "F8_E5M2"
    /// torch's float8_e8m0fnu: an exponent alone, 2^(byte − 127) (0xFF NaN),
    /// as FP8 weights' scales are stored with `scale_fmt: "ue8m0"`.
    case float8_e8m0 = "F8_E8M0"
    /// Integer buffers (DeepSeek-V4's `tid2eid` token-to-expert table):
    /// never weights; expand to their values, exact below 2^24.
    case int64 = "I64"
    case int32 = "I32"

    /// Elements stored together with their shared scales; 1 for plain floats.
    /// A tensor's rows are whole blocks, so row and chunk boundaries never
    /// split one.
    public var blockSize: Int {
        switch self {
        case .float32, .float16, .bfloat16, .float64, .uint8, .float8_e4m3, .float8_e5m2, .float8_e8m0, .int64, .int32: 1
        case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_NL, .mxfp4: 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_XS: 256
        }
    }

    /// Bytes of one block (for plain floats: of one element).
    public var byteSize: Int {
        switch self {
        case .float64, .int64: 8
        case .float32, .int32: 4
        case .float16, .bfloat16: 2
        case .uint8, .float8_e4m3, .float8_e5m2, .float8_e8m0: 1
        case .q8_0: 34
        case .q4_0: 18
        case .q4_1: 20
        case .q5_0: 22
        case .q5_1: 24
        case .q2_K: 84
        case .q3_K: 110
        case .q4_K: 144
        case .q5_K: 176
        case .q6_K: 210
        case .iq4_NL: 18
        case .iq4_XS: 136
        case .mxfp4: 17
        }
    }

    public var isBlockQuantized: Bool { blockSize > 1 }

    /// Whether a tensor of this dtype holds weights by itself. U8 and FP8
    /// tensors do not: their values mean something only together with their
    /// scales (or, E8M0, as the scales of others), so checkpoints list them apart (`Checkpoint.storedTensor`) and
    /// a model reading one as a plain weight gets an error.
    public var readsAsWeights: Bool {
        switch self {
        case .uint8, .float8_e4m3, .float8_e5m2, .float8_e8m0, .int64, .int32: false
        default: true
        }
    }

    /// Bytes holding `elements` elements; `elements` must be whole blocks.
    public func byteCount(elements: Int) -> Int {
        elements / blockSize * byteSize
    }
}

/// Expands `count` elements of `dtype` at `source` into Float32. For block
/// types `source` must start a block and `count` be whole blocks.
///
/// bfloat16 is the top half of a float32, so it widens exactly by a shift;
/// float16 goes through Swift's Float16, which the compiler lowers to F16C;
/// FP8 goes through a table of torch's values.
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
    case .float64:
        for i in 0..<count {
            destination[i] = Float(Double(bitPattern: source.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))
        }
    case .uint8:
        for i in 0..<count { destination[i] = Float(source.load(fromByteOffset: i, as: UInt8.self)) }
    case .int64:
        for i in 0..<count { destination[i] = Float(Int64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
    case .int32:
        for i in 0..<count { destination[i] = Float(Int32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
    case .float8_e4m3, .float8_e5m2, .float8_e8m0:
        FP8.expand(source, dtype: dtype, count: count, into: destination)
    case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_NL, .iq4_XS, .mxfp4:
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

/// ggml's block quantisation formats, dequantised exactly as ggml's reference
/// `dequantize_row_*` (ggml-quants.c) defines them: same bit layout, same
/// Float32 operations in the same order, so every value is bit-identical.
///
/// Block layouts (little-endian, `d`/`m`/`dmin` are IEEE halves):
/// - Q8_0 (32): d, 32 × int8 q; y = q·d
/// - Q4_0 (32): d, 16 bytes of nibbles; y = (nibble − 8)·d
/// - Q4_1 (32): d, m, 16 bytes of nibbles; y = nibble·d + m
/// - Q5_0 (32): d, 32 high bits (uint32), 16 bytes of nibbles; y = (q5 − 16)·d
/// - Q5_1 (32): d, m, 32 high bits, 16 bytes of nibbles; y = q5·d + m
/// - Q4_K (256): d, dmin, 12 bytes of packed 6-bit scales and mins, 128 bytes
///   of nibbles; eight sub-blocks of 32 with y = (d·scale)·nibble − dmin·min
/// - Q6_K (256): 128 bytes of low nibbles, 64 bytes of high 2-bit pairs,
///   16 int8 scales, d; sixteen sub-blocks of 16 with y = (d·scale)·(q6 − 32)
/// In every format the first half of a 32-run comes from the low nibbles and
/// the second half from the high nibbles of the same bytes.
enum GGMLQuantization {
    static func dequantize(
        _ source: UnsafeRawPointer, dtype: TensorDType, blocks: Int, into destination: UnsafeMutablePointer<Float>
    ) {
        let stride = dtype.byteSize, width = dtype.blockSize
        for b in 0..<blocks {
            let block = source + b * stride
            let y = destination + b * width
            switch dtype {
            case .q8_0: q8_0(block, y)
            case .q4_0: q4_0(block, y)
            case .q4_1: q4_1(block, y)
            case .q5_0: q5_0(block, y)
            case .q5_1: q5_1(block, y)
            case .q4_K: q4_K(block, y)
            case .q6_K: q6_K(block, y)
            case .float32, .float16, .bfloat16: preconditionFailure("\(dtype) is not a block type")
            }
        }
    }

    @inline(__always)
    private static func half(_ block: UnsafeRawPointer, at offset: Int) -> Float {
        halfToFloat(block.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    private static func byte(_ block: UnsafeRawPointer, at offset: Int) -> Int {
        Int(block.load(fromByteOffset: offset, as: UInt8.self))
    }

    private static func q8_0(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, at: 0)
        for j in 0..<32 {
            y[j] = Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) * d
        }
    }

    private static func q4_0(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, at: 0)
        for j in 0..<16 {
            let q = byte(block, at: 2 + j)
            y[j] = Float((q & 0x0F) - 8) * d
            y[j + 16] = Float((q >> 4) - 8) * d
        }
    }

    private static func q4_1(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, at: 0), m = half(block, at: 2)
        for j in 0..<16 {
            let q = byte(block, at: 4 + j)
            y[j] = Float(q & 0x0F) * d + m
            y[j + 16] = Float(q >> 4) * d + m
        }
    }

    /// Element j's fifth bit is bit j of `high` (j < 16 low nibbles, j ≥ 16 high nibbles).
    private static func q5_0(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, at: 0)
        let high = Int(UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 2, as: UInt32.self)))
        for j in 0..<16 {
            let q = byte(block, at: 6 + j)
            let low = (q & 0x0F) | (((high >> j) << 4) & 0x10)
            let upper = (q >> 4) | ((high >> (j + 12)) & 0x10)
            y[j] = Float(low - 16) * d
            y[j + 16] = Float(upper - 16) * d
        }
    }

    private static func q5_1(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, at: 0), m = half(block, at: 2)
        let high = Int(UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        for j in 0..<16 {
            let q = byte(block, at: 8 + j)
            let low = (q & 0x0F) | (((high >> j) << 4) & 0x10)
            let upper = (q >> 4) | ((high >> (j + 12)) & 0x10)
            y[j] = Float(low) * d + m
            y[j + 16] = Float(upper) * d + m
        }
    }

    /// Scale and min of Q4_K sub-block `j` (0..<8) from the 12 packed bytes:
    /// the first four keep 6 bits each in bytes 0–7, the last four split
    /// their bits between the top of bytes 0–7 and the nibbles of bytes 8–11.
    @inline(__always)
    private static func scaleAndMin(_ packed: UnsafeRawPointer, _ j: Int) -> (scale: Int, min: Int) {
        func q(_ i: Int) -> Int { byte(packed, at: i) }
        if j < 4 { return (q(j) & 63, q(j + 4) & 63) }
        return ((q(j + 4) & 0x0F) | ((q(j - 4) >> 6) << 4), (q(j + 4) >> 4) | ((q(j) >> 6) << 4))
    }

    private static func q4_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, at: 0), dmin = half(block, at: 2)
        let packed = block + 4
        let quants = block + 16
        for pair in 0..<4 {
            let (scale1, min1) = scaleAndMin(packed, 2 * pair)
            let (scale2, min2) = scaleAndMin(packed, 2 * pair + 1)
            let d1 = d * Float(scale1), m1 = dmin * Float(min1)
            let d2 = d * Float(scale2), m2 = dmin * Float(min2)
            let out = y + 64 * pair
            for l in 0..<32 {
                let q = byte(quants, at: 32 * pair + l)
                out[l] = d1 * Float(q & 0x0F) - m1
                out[l + 32] = d2 * Float(q >> 4) - m2
            }
        }
    }

    private static func q6_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, at: 208)
        for half in 0..<2 {
            let low = block + 64 * half
            let high = block + 128 + 32 * half
            let scales = block + 192 + 8 * half
            func scale(_ i: Int) -> Float { Float(scales.load(fromByteOffset: i, as: Int8.self)) }
            let out = y + 128 * half
            for l in 0..<32 {
                let s = l / 16
                let h = byte(high, at: l)
                let q1 = ((byte(low, at: l) & 0x0F) | (((h >> 0) & 3) << 4)) - 32
                let q2 = ((byte(low, at: l + 32) & 0x0F) | (((h >> 2) & 3) << 4)) - 32
                let q3 = ((byte(low, at: l) >> 4) | (((h >> 4) & 3) << 4)) - 32
                let q4 = ((byte(low, at: l + 32) >> 4) | (((h >> 6) & 3) << 4)) - 32
                out[l] = d * scale(s) * Float(q1)
                out[l + 32] = d * scale(s + 2) * Float(q2)
                out[l + 64] = d * scale(s + 4) * Float(q3)
                out[l + 96] = d * scale(s + 6) * Float(q4)
            }
        }
    }
}

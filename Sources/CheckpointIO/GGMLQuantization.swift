/// ggml's block quantisation formats, dequantised bit-identically to gguf-py's
/// numpy `dequantize` (gguf/quants.py), which follows ggml's reference
/// `dequantize_row_*` (ggml-quants.c): same bit layout, same Float32
/// operations in the same order (a sub-block's `d·scale` is formed in Float32
/// first, then multiplied by the quant; `− min` last).
///
/// Block layouts (little-endian, `d`/`m`/`dmin` are IEEE halves):
/// - Q8_0 (32): d, 32 × int8 q; y = q·d
/// - Q4_0 (32): d, 16 bytes of nibbles; y = (nibble − 8)·d
/// - Q4_1 (32): d, m, 16 bytes of nibbles; y = nibble·d + m
/// - Q5_0 (32): d, 32 high bits (uint32), 16 bytes of nibbles; y = (q5 − 16)·d
/// - Q5_1 (32): d, m, 32 high bits, 16 bytes of nibbles; y = q5·d + m
/// - IQ4_NL (32): d, 16 bytes of nibbles; y = d·kvalues[nibble] (a non-linear
///   table of 16 int8 values)
/// - MXFP4 (32): an E8M0 exponent byte, 16 bytes of E2M1 nibbles (`MXFP4`)
/// - Q2_K (256): 16 bytes of 4-bit scale/min pairs, 64 bytes of 2-bit quants,
///   d, dmin; sixteen sub-blocks of 16 with y = (d·scale)·q2 − dmin·min
/// - Q3_K (256): 32 bytes of high-bit masks, 64 bytes of 2-bit quants, 12
///   bytes of packed 6-bit scales, d; sixteen sub-blocks of 16 with
///   y = (d·(scale − 32))·(q2 − 4·(1 − high bit))
/// - Q4_K (256): d, dmin, 12 bytes of packed 6-bit scales and mins, 128 bytes
///   of nibbles; eight sub-blocks of 32 with y = (d·scale)·nibble − dmin·min
/// - Q5_K (256): as Q4_K plus 32 bytes of fifth bits before the nibbles
/// - Q6_K (256): 128 bytes of low nibbles, 64 bytes of high 2-bit pairs,
///   16 int8 scales, d; sixteen sub-blocks of 16 with y = (d·scale)·(q6 − 32)
/// - IQ4_XS (256): d, 16 bits of high scale pairs, 4 bytes of low scale
///   nibbles, 128 bytes of nibbles; eight sub-blocks of 32 with
///   y = (d·(scale − 32))·kvalues[nibble]
/// In every format with nibbles the first half of a run comes from the low
/// nibbles and the second half from the high nibbles of the same bytes.
enum GGMLQuantization {
    static func dequantize(
        _ source: UnsafeRawPointer, dtype: TensorDType, blocks: Int, into destination: UnsafeMutablePointer<Float>
    ) {
        let stride = dtype.byteSize, width = dtype.blockSize
        // One switch per call, not per block: the 32-element formats are short.
        @inline(__always)
        func each(_ body: (UnsafeRawPointer, UnsafeMutablePointer<Float>) -> Void) {
            for b in 0..<blocks { body(source + b * stride, destination + b * width) }
        }
        switch dtype {
        case .q8_0: each(q8_0)
        case .q4_0: each(q4_0)
        case .q4_1: each(q4_1)
        case .q5_0: each(q5_0)
        case .q5_1: each(q5_1)
        case .q2_K: each(q2_K)
        case .q3_K: each(q3_K)
        case .q4_K: each(q4_K)
        case .q5_K: each(q5_K)
        case .q6_K: each(q6_K)
        case .iq4_NL: iq4Values.withUnsafeBufferPointer { k in each { iq4_NL($0, $1, k) } }
        case .iq4_XS: iq4Values.withUnsafeBufferPointer { k in each { iq4_XS($0, $1, k) } }
        case .mxfp4: MXFP4.ggmlValues.withUnsafeBufferPointer { k in each { mxfp4($0, $1, k) } }
        case .float32, .float16, .bfloat16, .float64, .uint8, .float8_e4m3, .float8_e5m2, .float8_e8m0, .int64, .int32:
            preconditionFailure("\(dtype) is not a block type")
        }
    }

    /// ggml's kvalues_iq4nl: the 16 levels of IQ4_NL and IQ4_XS nibbles.
    static let iq4Values: [Float] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]

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

    /// Sub-block k (0..<16) of 16 elements: element 128·part + 32·shift + 16·sub + l
    /// is bits 2·shift of quant byte 32·part + 16·sub + l; scale byte k = 8·part + 2·shift + sub
    /// holds the scale (low nibble) and the min (high nibble).
    private static func q2_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, at: 80), dmin = half(block, at: 82)
        for part in 0..<2 {
            let quants = block + 16 + 32 * part
            for shift in 0..<4 {
                for sub in 0..<2 {
                    let packed = byte(block, at: 8 * part + 2 * shift + sub)
                    let dl = d * Float(packed & 0x0F), ml = dmin * Float(packed >> 4)
                    let out = y + 128 * part + 32 * shift + 16 * sub
                    for l in 0..<16 {
                        out[l] = dl * Float((byte(quants, at: 16 * sub + l) >> (2 * shift)) & 3) - ml
                    }
                }
            }
        }
    }

    /// Element 128·part + 32·shift + l: two low bits from quant byte 32·part + l,
    /// the third from bit 4·part + shift of mask byte l (a clear bit subtracts 4).
    /// Scale k (0..<16) keeps its low nibble in byte k (k < 8) or the high nibble
    /// of byte k − 8, and its top two bits at bit 2·(k / 4) of byte 8 + k % 4.
    private static func q3_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, at: 108)
        let mask = block, quants = block + 32, scales = block + 96
        for part in 0..<2 {
            for shift in 0..<4 {
                let bit = 4 * part + shift
                for sub in 0..<2 {
                    let k = 8 * part + 2 * shift + sub
                    let low = k < 8 ? byte(scales, at: k) & 0x0F : byte(scales, at: k - 8) >> 4
                    let high = (byte(scales, at: 8 + k % 4) >> (2 * (k / 4))) & 3
                    let dl = d * Float((low | (high << 4)) - 32)
                    let out = y + 128 * part + 32 * shift + 16 * sub
                    for l in 0..<16 {
                        let i = 16 * sub + l
                        let q = (byte(quants, at: 32 * part + i) >> (2 * shift)) & 3
                        let offset = (byte(mask, at: i) >> bit) & 1 == 0 ? 4 : 0
                        out[l] = dl * Float(q - offset)
                    }
                }
            }
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

    /// Q4_K with a fifth bit: bit j of byte l of the 32 high-bit bytes belongs to
    /// element 32·j + l.
    private static func q5_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, at: 0), dmin = half(block, at: 2)
        let packed = block + 4
        let high = block + 16
        let quants = block + 48
        for pair in 0..<4 {
            let (scale1, min1) = scaleAndMin(packed, 2 * pair)
            let (scale2, min2) = scaleAndMin(packed, 2 * pair + 1)
            let d1 = d * Float(scale1), m1 = dmin * Float(min1)
            let d2 = d * Float(scale2), m2 = dmin * Float(min2)
            let out = y + 64 * pair
            for l in 0..<32 {
                let q = byte(quants, at: 32 * pair + l), h = byte(high, at: l) >> (2 * pair)
                out[l] = d1 * Float((q & 0x0F) | ((h & 1) << 4)) - m1
                out[l + 32] = d2 * Float((q >> 4) | ((h & 2) << 3)) - m2
            }
        }
    }

    private static func iq4_NL(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ k: UnsafeBufferPointer<Float>) {
        let d = half(block, at: 0)
        for j in 0..<16 {
            let q = byte(block, at: 2 + j)
            y[j] = d * k[q & 0x0F]
            y[j + 16] = d * k[q >> 4]
        }
    }

    private static func iq4_XS(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ k: UnsafeBufferPointer<Float>) {
        let d = half(block, at: 0)
        let high = Int(UInt16(littleEndian: block.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
        for sub in 0..<8 {
            let low = (byte(block, at: 4 + sub / 2) >> (4 * (sub % 2))) & 0x0F
            let dl = d * Float((low | (((high >> (2 * sub)) & 3) << 4)) - 32)
            let quants = block + 8 + 16 * sub
            let out = y + 32 * sub
            for j in 0..<16 {
                let q = byte(quants, at: j)
                out[j] = dl * k[q & 0x0F]
                out[j + 16] = dl * k[q >> 4]
            }
        }
    }

    /// Half the E8M0 scale times the doubled E2M1 value, as ggml does (`MXFP4`).
    private static func mxfp4(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ k: UnsafeBufferPointer<Float>) {
        let d = MXFP4.halfScale(block.load(as: UInt8.self))
        for j in 0..<16 {
            let q = byte(block, at: 1 + j)
            y[j] = d * k[q & 0x0F]
            y[j + 16] = d * k[q >> 4]
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

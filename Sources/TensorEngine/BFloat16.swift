/// Rounding float32 to bfloat16 (the upper 16 bits of a float32), round to
/// nearest with ties to even as the bf16 matrix units and torch's `.to(torch.bfloat16)`
/// do; NaN stays NaN (made quiet), ±inf stays ±inf, finite values beyond
/// bf16's largest round to ±inf.
public enum BFloat16 {
    /// The bfloat16 bits of `x`.
    @inline(__always)
    public static func bits(_ x: Float) -> UInt16 {
        UInt16(truncatingIfNeeded: roundedBits(x.bitPattern) &>> 16)
    }

    /// `x` rounded to the nearest bfloat16, as a float32.
    @inline(__always)
    public static func round(_ x: Float) -> Float {
        Float(bitPattern: roundedBits(x.bitPattern))
    }

    /// The float32 value of bfloat16 `bits` (exact).
    @inline(__always)
    public static func float(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// The rounded float32 bits of `u` (low half zero). The array functions
    /// below use `VectorKernels`' `bf16_bits`, the same rule lane-wise.
    @inline(__always)
    static func roundedBits(_ u: UInt32) -> UInt32 {
        let rounded = (u &+ 0x7FFF &+ ((u &>> 16) & 1)) & 0xFFFF_0000
        return u & 0x7FFF_FFFF > 0x7F80_0000 ? (u | 0x0040_0000) & 0xFFFF_0000 : rounded
    }

    /// dst[i] = round(src[i]) for i < count; `dst` may be `src` (in place).
    public static func round(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count: Int) {
        VectorKernels.active.bf16Round(src, into: dst, count: max(0, count))
    }

    /// dst[i] = bits(src[i]) for i < count.
    public static func convert(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<UInt16>, count: Int) {
        VectorKernels.active.bf16Convert(src, into: dst, count: max(0, count))
    }

    /// dst[i] = float(src[i]) for i < count.
    public static func widen(_ src: UnsafePointer<UInt16>, into dst: UnsafeMutablePointer<Float>, count: Int) {
        let to = UnsafeMutableRawPointer(dst)
        for i in 0..<max(0, count) { to.storeBytes(of: UInt32(src[i]) &<< 16, toByteOffset: 4 * i, as: UInt32.self) }
    }

    /// `values` rounded to bfloat16 (as float32).
    public static func rounded(_ values: [Float]) -> [Float] {
        values.withUnsafeBufferPointer { src in
            [Float](unsafeUninitializedCapacity: src.count) { dst, count in
                if let from = src.baseAddress, let to = dst.baseAddress { round(from, into: to, count: src.count) }
                count = src.count
            }
        }
    }

    /// The bfloat16 bits of `values`.
    public static func bits(_ values: [Float]) -> [UInt16] {
        values.withUnsafeBufferPointer { src in
            [UInt16](unsafeUninitializedCapacity: src.count) { dst, count in
                if let from = src.baseAddress, let to = dst.baseAddress { convert(from, into: to, count: src.count) }
                count = src.count
            }
        }
    }

    /// The float32 values of bfloat16 `bits`.
    public static func floats(_ bits: [UInt16]) -> [Float] {
        bits.withUnsafeBufferPointer { src in
            [Float](unsafeUninitializedCapacity: src.count) { dst, count in
                if let from = src.baseAddress, let to = dst.baseAddress { widen(from, into: to, count: src.count) }
                count = src.count
            }
        }
    }
}

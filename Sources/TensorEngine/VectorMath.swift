/// exp and the activations built on it, eight lanes at a time.
///
/// The scalar `exp` from libm was the largest cost outside GEMM (softmax over
/// every attention score, SiLU over every MLP activation). This is the
/// classic Cephes single-precision scheme: x = n·ln 2 + r with |r| ≤ ln 2 / 2,
/// a degree-6 polynomial for eʳ, and 2ⁿ put straight into the exponent bits.
/// Relative error stays within about 2 ulp over the whole range, far below
/// the float32 noise of the GEMMs around it.
public enum VectorMath {
    public typealias Lanes = SIMD8<Float>
    public static let width = Lanes.scalarCount

    @inline(__always)
    public static func exp(_ x: Lanes) -> Lanes {
        // Below −87.3 the result would be subnormal; 0 and e^−87.3 are the same to us.
        var clamped = x
        clamped.replace(with: -87.33654, where: clamped .< -87.33654)
        clamped.replace(with: 88.37626, where: clamped .> 88.37626)
        // Round x·log2(e) to the nearest integer with the 1.5·2²³ trick: after
        // the add, the integer sits in the low mantissa bits.
        let magic = Lanes(repeating: 12_582_912)
        let shifted = clamped * Lanes(repeating: 1.442_695_04) + magic
        let n = shifted - magic
        // r = x − n·ln 2, with ln 2 split in two for precision.
        var r = clamped - n * Lanes(repeating: 0.693_359_375)
        r = r - n * Lanes(repeating: -2.121_944_4e-4)
        var p = Lanes(repeating: 1.987_569_1e-4)
        p = p * r + Lanes(repeating: 1.398_199_9e-3)
        p = p * r + Lanes(repeating: 8.333_452e-3)
        p = p * r + Lanes(repeating: 4.166_579_6e-2)
        p = p * r + Lanes(repeating: 1.666_666_5e-1)
        p = p * r + Lanes(repeating: 5e-1)
        let er = p * (r * r) + r + Lanes(repeating: 1)
        // 2ⁿ: n is an integer in [−126, 127], so (n + 127) << 23 is its float bits.
        let integer = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
        let scale = unsafeBitCast((integer &+ 127) &<< 23, to: Lanes.self)
        return er * scale
    }

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> Lanes {
        UnsafeRawPointer(p).loadUnaligned(as: Lanes.self)
    }

    @inline(__always)
    static func store(_ v: Lanes, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Lanes.self)
    }

    /// x[i] = e^(x[i] − shift) for i < count; returns their sum (Float32, as softmax sums).
    @inline(__always)
    public static func expInPlace(_ x: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
        var sums = Lanes()
        var i = 0
        let s = Lanes(repeating: shift)
        while i + width <= count {
            let e = exp(load(x + i) - s)
            store(e, x + i)
            sums += e
            i += width
        }
        var sum = sums.sum()
        while i < count {
            let e = exp(x[i] - shift)
            x[i] = e
            sum += e
            i += 1
        }
        return sum
    }

    /// The largest of x[i] for i < count (count > 0).
    @inline(__always)
    public static func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var lanes = Lanes(repeating: -.infinity)
        var i = 0
        while i + width <= count {
            let v = load(x + i)
            lanes.replace(with: v, where: v .> lanes)
            i += width
        }
        var result = lanes.max()
        while i < count {
            result = Swift.max(result, x[i])
            i += 1
        }
        return result
    }

    /// x[i] *= factor for i < count.
    @inline(__always)
    public static func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        var i = 0
        while i + width <= count {
            store(load(x + i) * factor, x + i)
            i += width
        }
        while i < count {
            x[i] *= factor
            i += 1
        }
    }

    /// The same approximation for one value, so a row's tail matches its body.
    @inline(__always)
    public static func exp(_ x: Float) -> Float {
        exp(Lanes(repeating: x))[0]
    }
}

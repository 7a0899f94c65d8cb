/// Dot products for the similarity measurements: SIMD Float32 arithmetic in
/// blocks of 64 elements, each block's partial sum carried in Float64, so a
/// long vector keeps Float64-level accuracy at nearly Float32 speed.
public enum Reductions {
    /// (x·y, x·x, y·y) over `n` elements.
    @inline(__always)
    public static func dotAndNorms(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> (Double, Double, Double) {
        var dot = 0.0, xx = 0.0, yy = 0.0
        var i = 0
        while i + 64 <= n {
            var d = SIMD8<Float>(), a = SIMD8<Float>(), b = SIMD8<Float>()
            for k in Swift.stride(from: i, to: i + 64, by: 8) {
                let u = UnsafeRawPointer(x + k).loadUnaligned(as: SIMD8<Float>.self)
                let v = UnsafeRawPointer(y + k).loadUnaligned(as: SIMD8<Float>.self)
                d += u * v
                a += u * u
                b += v * v
            }
            dot += Double(d.sum())
            xx += Double(a.sum())
            yy += Double(b.sum())
            i += 64
        }
        while i < n {
            let u = Double(x[i]), v = Double(y[i])
            dot += u * v
            xx += u * u
            yy += v * v
            i += 1
        }
        return (dot, xx, yy)
    }

    /// x·y over `n` elements.
    @inline(__always)
    public static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Double {
        var total = 0.0
        var i = 0
        while i + 64 <= n {
            var d = SIMD8<Float>()
            for k in Swift.stride(from: i, to: i + 64, by: 8) {
                d += UnsafeRawPointer(x + k).loadUnaligned(as: SIMD8<Float>.self)
                    * UnsafeRawPointer(y + k).loadUnaligned(as: SIMD8<Float>.self)
            }
            total += Double(d.sum())
            i += 64
        }
        while i < n {
            total += Double(x[i]) * Double(y[i])
            i += 1
        }
        return total
    }
}

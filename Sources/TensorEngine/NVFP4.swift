/// NVFP4 rounding in Float32, as transformers' `nvfp4_fake_quantize`
/// (Kolibri 1.1's sparse-attention keys and values, routing queries and
/// keys): every 16 consecutive values share one scale, their largest
/// magnitude / 6 clamped to [2⁻⁹, 448] and rounded to float8 E4M3; each
/// value divided by it is clamped to ±6 and rounded to E2M1 (steps of 0.5
/// below 2, of 1 below 4, of 2 up to 6), ties to even, then multiplied back.
public enum NVFP4 {
    public static let blockSize = 16

    /// `x` (finite, in [2⁻⁹, 448]) rounded to the nearest float8 E4M3
    /// (`torch.float8_e4m3fn`) value, ties to even: 3 mantissa bits from
    /// 2⁻⁶ up, steps of 2⁻⁹ below it.
    public static func e4m3(_ x: Float) -> Float {
        guard x.isFinite, x > 0 else { return x }
        // The quantum of x's binade (2^(exponent − 3)), at least the subnormal step.
        let quantum = max(Float(sign: .plus, exponent: x.exponent - 3, significand: 1), Float(sign: .plus, exponent: -9, significand: 1))
        // Division and multiplication by a power of two are exact.
        return (x / quantum).rounded(.toNearestOrEven) * quantum
    }

    /// `magnitude` (non-negative, at most 6) rounded to the nearest E2M1 value, ties to even.
    static func e2m1(_ magnitude: Float) -> Float {
        let step: Float = magnitude < 2 ? 0.5 : magnitude < 4 ? 1 : 2
        return (magnitude / step).rounded(.toNearestOrEven) * step
    }

    /// Rounds `count` values at `values` (a multiple of 16) in place, block by block.
    public static func fakeQuantize(_ values: UnsafeMutablePointer<Float>, count: Int) {
        precondition(count % blockSize == 0)
        for start in stride(from: 0, to: count, by: blockSize) {
            let block = values + start
            var largest: Float = 0
            for i in 0..<blockSize { largest = Swift.max(largest, Swift.abs(block[i])) }
            let scale = e4m3(Swift.min(Swift.max(largest / 6, Float(sign: .plus, exponent: -9, significand: 1)), 448))
            for i in 0..<blockSize {
                let scaled = block[i] / scale
                let rounded = e2m1(Swift.min(Swift.abs(scaled), 6))
                block[i] = Float(sign: scaled.sign, exponent: 0, significand: rounded) * scale
            }
        }
    }

    /// `values` (a multiple of 16 of them) rounded block by block.
    public static func fakeQuantized(_ values: [Float]) -> [Float] {
        var values = values
        values.withUnsafeMutableBufferPointer { fakeQuantize($0.baseAddress!, count: $0.count) }
        return values
    }
}

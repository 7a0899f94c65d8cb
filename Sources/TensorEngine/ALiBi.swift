import Foundation

/// Attention with linear biases (Press et al., "Train Short, Test Long",
/// 2022): each head's score of the key at position j of its sequence
/// (0-based) gains slope · j before the softmax. This differs from the
/// paper's slope · (j − i) by a constant per query row, so the softmax is
/// the same; it is the form transformers builds.
public struct ALiBi: Sendable, Equatable {
    /// [numHeads] slopes.
    public let slopes: [Float]
    /// The bias is rounded as Falcon builds it: bf16(bf16(slope) · bf16(j)),
    /// then divided by `divisor` (its √head_dim) in float32.
    public let bfloat16Bias: Bool
    public let divisor: Float

    /// BLOOM's bias: slope · j in float32, added to the scaled scores.
    public init(slopes: [Float]) {
        self.init(slopes: slopes, bfloat16Bias: false, divisor: 1)
    }

    public init(slopes: [Float], bfloat16Bias: Bool, divisor: Float) {
        self.slopes = slopes
        self.bfloat16Bias = bfloat16Bias
        self.divisor = divisor
    }

    /// The bias of `head` for the key at `position`.
    @inline(__always)
    public func bias(head: Int, position: Int) -> Float {
        guard bfloat16Bias else { return slopes[head] * Float(position) }
        return BFloat16.round(BFloat16.round(slopes[head]) * BFloat16.round(Float(position))) / divisor
    }

    /// row[j] += bias(head, firstPosition + j) over the `visible` entries of
    /// one score row whose entry 0 is the key at `firstPosition`.
    @inline(__always)
    public func add(to row: UnsafeMutablePointer<Float>, visible: Range<Int>, head: Int, firstPosition: Int) {
        for j in visible { row[j] += bias(head: head, position: firstPosition + j) }
    }

    /// [heads × positions]: row h holds bias(h, 0..<positions). The bias
    /// depends on the key alone, so a batch computes it once for all its
    /// query rows (Falcon's rounds three times per entry).
    public func table(positions: Int) -> [Float] {
        (0..<slopes.count).flatMap { head in (0..<positions).map { bias(head: head, position: $0) } }
    }

    /// The slopes of `heads` heads as transformers' `_get_alibi_slopes`
    /// computes them (BLOOM, Falcon): for the largest power of two n ≤ heads,
    /// base¹ … baseⁿ with base = 2^(−8/n); the remaining heads take every
    /// other power of the 2n-head series, (2^(−4/n))¹, ³, ⁵, …; float32
    /// powers of a float32 base, as torch computes them.
    public static func slopes(heads: Int) -> [Float] {
        precondition(heads >= 1)
        let closest = 1 << (Int.bitWidth - 1 - heads.leadingZeroBitCount)
        func powers(of base: Double, _ exponents: StrideTo<Int>) -> [Float] {
            exponents.map { powf(Float(base), Float($0)) }
        }
        let base = pow(2, -pow(2, -(log2(Double(closest)) - 3)))
        var slopes = powers(of: base, stride(from: 1, to: closest + 1, by: 1))
        if closest != heads {
            let extraBase = pow(2, -pow(2, -(log2(Double(2 * closest)) - 3)))
            let remaining = min(closest, heads - closest)
            slopes += powers(of: extraBase, stride(from: 1, to: 1 + 2 * remaining, by: 2))
        }
        return slopes
    }
}

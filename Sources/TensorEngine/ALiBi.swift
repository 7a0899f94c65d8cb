import Foundation

/// Attention with linear biases (Press et al., "Train Short, Test Long",
/// 2022): each head's score of the key at position j of its sequence
/// (0-based) gains slope · j before the softmax. This differs from the
/// paper's slope · (j − i) by a constant per query row, so the softmax is
/// the same; it is the form transformers builds for BLOOM and Falcon. MPT's
/// is slope · (j − last), `last` the position of the sequence's last key
/// (`fromLastKey`): another constant per row, rounded as MPT rounds it.
public struct ALiBi: Sendable, Equatable {
    /// [numHeads] slopes.
    public let slopes: [Float]
    /// The bias is rounded as Falcon builds it: bf16(bf16(slope) · bf16(j)),
    /// then divided by `divisor` (its √head_dim) in float32.
    public let bfloat16Bias: Bool
    public let divisor: Float
    /// The key at position j of a sequence whose last key is at `last` gains
    /// slope · (j − last), not slope · j (MPT's table, sliced to the keys).
    public let fromLastKey: Bool

    /// BLOOM's bias: slope · j in float32, added to the scaled scores.
    public init(slopes: [Float]) {
        self.init(slopes: slopes, bfloat16Bias: false, divisor: 1)
    }

    public init(slopes: [Float], bfloat16Bias: Bool, divisor: Float, fromLastKey: Bool = false) {
        precondition(!(bfloat16Bias && fromLastKey))
        self.slopes = slopes
        self.bfloat16Bias = bfloat16Bias
        self.divisor = divisor
        self.fromLastKey = fromLastKey
    }

    /// MPT's bias: slope · (j − last) in float32.
    public init(slopesFromLastKey slopes: [Float]) {
        self.init(slopes: slopes, bfloat16Bias: false, divisor: 1, fromLastKey: true)
    }

    /// The bias of `head` for the key at `position` (with `fromLastKey`, the
    /// key's position minus the last key's, at most 0).
    @inline(__always)
    public func bias(head: Int, position: Int) -> Float {
        guard bfloat16Bias else { return slopes[head] * Float(position) }
        return BFloat16.round(BFloat16.round(slopes[head]) * BFloat16.round(Float(position))) / divisor
    }

    /// row[j] += the bias of the key at firstPosition + j over the `visible`
    /// entries of one score row whose entry 0 is the key at `firstPosition`
    /// and whose last key is at `lastPosition`.
    @inline(__always)
    public func add(to row: UnsafeMutablePointer<Float>, visible: Range<Int>, head: Int, firstPosition: Int, lastPosition: Int) {
        let shift = fromLastKey ? firstPosition - lastPosition : firstPosition
        for j in visible { row[j] += bias(head: head, position: shift + j) }
    }

    /// [heads × positions]: row h holds bias(h, 0..<positions), or with
    /// `fromLastKey` bias(h, −(positions − 1) ... 0). The bias depends on the
    /// key alone, so a batch computes it once for all its query rows
    /// (Falcon's rounds three times per entry).
    public func table(positions: Int) -> [Float] {
        let first = fromLastKey ? 1 - positions : 0
        return (0..<slopes.count).flatMap { head in (0..<positions).map { bias(head: head, position: first + $0) } }
    }

    /// Where the biases of a sequence of `length` keys start in a row of
    /// `table(positions: longest)`.
    @inline(__always)
    public func tableOffset(length: Int, longest: Int) -> Int {
        fromLastKey ? longest - length : 0
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

    /// MPT's slopes as transformers' `build_mpt_alibi_tensor` computes them:
    /// for n = the smallest power of two ≥ heads, 1 / 2^(i · maxBias / n),
    /// i = 1 … n, in float32; with fewer heads than n, the odd-numbered of
    /// them (i = 2, 4, …) first, then the others, cut to `heads`.
    public static func mptSlopes(heads: Int, maxBias: Double) -> [Float] {
        precondition(heads >= 1)
        let n = heads == 1 ? 1 : 1 << (Int.bitWidth - (heads - 1).leadingZeroBitCount)
        let step = Float(maxBias / Double(n))
        let all = (1...n).map { 1 / powf(2, Float($0) * step) }
        guard n != heads else { return all }
        let reordered = stride(from: 1, to: n, by: 2).map { all[$0] } + stride(from: 0, to: n, by: 2).map { all[$0] }
        return Array(reordered.prefix(heads))
    }
}

/// Rank orders and rank correlations of importance vectors.
///
/// Everything works in Double: scores are stored as Float, but sums of
/// squared rank differences over ~100 layers should not lose digits.
public enum RankStatistics {
    /// Layer indices sorted by ascending importance: most redundant (most
    /// droppable) first. Ties go to the lower layer index so the order is
    /// deterministic. NaN (an undefined score) sorts last: a layer whose
    /// importance is unknown is never proposed for dropping.
    public static func ranking(_ importance: [Double]) -> [Int] {
        var order = [Int](repeating: 0, count: importance.count)
        importance.withUnsafeBufferPointer { values in
            order.withUnsafeMutableBufferPointer { ranking(values, into: $0) }
        }
        return order
    }

    /// `ranking` into `order` (of the same count), allocating nothing: the
    /// bootstrap ranks every replicate of every checkpoint.
    static func ranking(_ importance: UnsafeBufferPointer<Double>, into order: UnsafeMutableBufferPointer<Int>) {
        var order = order  // a view of the caller's storage: sorting it sorts theirs
        for index in order.indices { order[index] = index }
        order.sort { lhs, rhs in
            let a = importance[lhs], b = importance[rhs]
            if a.isNaN || b.isNaN {
                if a.isNaN != b.isNaN { return b.isNaN }
                return lhs < rhs
            }
            return a != b ? a < b : lhs < rhs
        }
    }

    /// 1-based ranks with ties sharing the average of the ranks they span
    /// (the "fractional" ranking Spearman's ρ needs to stay exact with ties).
    /// NaN values get NaN ranks.
    public static func averageRanks(_ values: [Double]) -> [Double] {
        averageRanks(values, order: ranking(values))
    }

    /// The same with `order` = `ranking(values)` already at hand (the
    /// bootstrap needs both for every replicate).
    static func averageRanks(_ values: [Double], order: [Int]) -> [Double] {
        var ranks = [Double](repeating: .nan, count: values.count)
        values.withUnsafeBufferPointer { values in
            order.withUnsafeBufferPointer { order in
                ranks.withUnsafeMutableBufferPointer { averageRanks(values, order: order, into: $0) }
            }
        }
        return ranks
    }

    /// `averageRanks` into `ranks` (of the same count), allocating nothing.
    static func averageRanks(
        _ values: UnsafeBufferPointer<Double>, order: UnsafeBufferPointer<Int>, into ranks: UnsafeMutableBufferPointer<Double>
    ) {
        for index in ranks.indices { ranks[index] = .nan }
        var start = 0
        while start < order.count {
            let value = values[order[start]]
            if value.isNaN { break }  // NaNs are all at the end of `order`.
            var end = start + 1
            while end < order.count && values[order[end]] == value { end += 1 }
            // Positions start..<end hold ranks start+1 ... end; their mean:
            let shared = Double(start + 1 + end) / 2
            for position in start..<end { ranks[order[position]] = shared }
            start = end
        }
    }

    /// Spearman's ρ: the Pearson correlation of the average ranks, which is
    /// the textbook definition that stays correct under ties (the shortcut
    /// 1 − 6Σd²/(n(n²−1)) does not). NaN when the lengths differ, there are
    /// fewer than two values, any value is NaN, or either vector is constant
    /// (a correlation with a constant is undefined, not zero).
    public static func spearman(_ x: [Double], _ y: [Double]) -> Double {
        let comparable = x.withUnsafeBufferPointer { x in y.withUnsafeBufferPointer { y in isComparable(x, y) } }
        guard comparable else { return .nan }
        return pearson(averageRanks(x), averageRanks(y))
    }

    /// Kendall's τ-b: (concordant − discordant) / √((n₀ − n₁)(n₀ − n₂)),
    /// with n₀ = n(n−1)/2 pairs, n₁ pairs tied in x and n₂ pairs tied in y
    /// (a pair tied in both counts in both). τ-b rather than τ-a because
    /// importance vectors can tie. O(n²), which is nothing for n ≤ ~100 layers.
    /// NaN in the same cases as `spearman`.
    public static func kendallTauB(_ x: [Double], _ y: [Double]) -> Double {
        x.withUnsafeBufferPointer { x in y.withUnsafeBufferPointer { y in kendallTauB(x, y) } }
    }

    static func kendallTauB(_ x: UnsafeBufferPointer<Double>, _ y: UnsafeBufferPointer<Double>) -> Double {
        guard isComparable(x, y) else { return .nan }
        let n = x.count
        // Branch-free: sign(dx)·sign(dy) is +1 for a concordant pair, −1 for
        // a discordant one and 0 for a tie; the bootstrap calls this for
        // every replicate, so the loop should vectorise.
        var score = 0, tiedX = 0, tiedY = 0
        for i in 0..<n {
            let xi = x[i], yi = y[i]
            for j in (i + 1)..<n {
                let dx = xi - x[j], dy = yi - y[j]
                let signX = (dx > 0 ? 1 : 0) - (dx < 0 ? 1 : 0), signY = (dy > 0 ? 1 : 0) - (dy < 0 ? 1 : 0)
                score += signX * signY
                tiedX += dx == 0 ? 1 : 0
                tiedY += dy == 0 ? 1 : 0
            }
        }
        let pairs = n * (n - 1) / 2
        let denominator = (Double(pairs - tiedX) * Double(pairs - tiedY)).squareRoot()
        guard denominator > 0 else { return .nan }
        return Double(score) / denominator
    }

    /// Pearson correlation; NaN when either side has zero variance.
    static func pearson(_ x: [Double], _ y: [Double]) -> Double {
        x.withUnsafeBufferPointer { x in y.withUnsafeBufferPointer { y in pearson(x, y) } }
    }

    static func pearson(_ x: UnsafeBufferPointer<Double>, _ y: UnsafeBufferPointer<Double>) -> Double {
        let n = Double(x.count)
        let meanX = x.reduce(0, +) / n, meanY = y.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for (a, b) in zip(x, y) {
            sxy += (a - meanX) * (b - meanY)
            sxx += (a - meanX) * (a - meanX)
            syy += (b - meanY) * (b - meanY)
        }
        guard sxx > 0, syy > 0 else { return .nan }
        // Rounding can push a perfect correlation a hair past ±1.
        return min(1, max(-1, sxy / (sxx * syy).squareRoot()))
    }

    private static func isComparable(_ x: UnsafeBufferPointer<Double>, _ y: UnsafeBufferPointer<Double>) -> Bool {
        x.count == y.count && x.count >= 2 && !x.contains(where: \.isNaN) && !y.contains(where: \.isNaN)
    }
}

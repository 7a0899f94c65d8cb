/// Drop-k sets (the k least important layers), their overlap, and when a
/// series of them stops changing.
public enum DropSets {
    /// The default k values for a model with `layers` layers: 25% and 50% of
    /// the layers, rounded half away from zero (so 2.5 → 3), at least 1, at
    /// most `layers`, ascending, without duplicates. The paper drops a
    /// quarter to a half of the attention layers, hence those fractions.
    public static func defaultDropK(layers: Int) -> [Int] {
        guard layers > 0 else { return [] }
        let ks = [0.25, 0.5].map { fraction in
            min(layers, max(1, Int((Double(layers) * fraction).rounded(.toNearestOrAwayFromZero))))
        }
        return Array(Set(ks)).sorted()
    }

    /// The default k values of a model whose modules are in `moduleLayers`
    /// layers each (attention, MLP, block): each one's defaults, together,
    /// ascending, so a module in few layers (Nemotron-H's attention) gets
    /// drop-k sets of its own size.
    public static func defaultDropK(moduleLayers: [Int]) -> [Int] {
        Array(Set(moduleLayers.flatMap { defaultDropK(layers: $0) })).sorted()
    }

    /// The first `k` layers of `ranking` (most redundant first), sorted by
    /// layer index for display and comparison.
    public static func dropSet(ranking: [Int], k: Int) -> [Int] {
        Array(ranking.prefix(k)).sorted()
    }

    /// |a ∩ b| / |a ∪ b|; 1 for two empty sets (they agree perfectly).
    public static func jaccard(_ a: [Int], _ b: [Int]) -> Double {
        let setA = Set(a), setB = Set(b)
        let union = setA.union(setB).count
        guard union > 0 else { return 1 }
        return Double(setA.intersection(setB).count) / Double(union)
    }

    /// The index of the earliest checkpoint i such that sets i, i+1, …, C−1
    /// are all identical: from i on, the drop set no longer changes. A set
    /// that changes and later changes back does not count as settled before
    /// its last change, because every later set must match. nil for an empty
    /// series; 0 for a single checkpoint.
    public static func stabilisationIndex(_ sets: [[Int]]) -> Int? {
        guard let last = sets.last else { return nil }
        return stabilisationIndex(matchingFinal: sets.map { Set($0) == Set(last) })
    }

    /// The same from whether each checkpoint's set equals the final one
    /// ([C], the last entry true): what a bootstrap replicate records
    /// instead of the sets. nil for an empty series.
    public static func stabilisationIndex(matchingFinal: [Bool]) -> Int? {
        guard !matchingFinal.isEmpty else { return nil }
        var index = matchingFinal.count - 1
        while index > 0 && matchingFinal[index - 1] { index -= 1 }
        return index
    }
}

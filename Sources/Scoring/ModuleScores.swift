import DroptraceSupport

/// The LLM-Drop importance of every module of one checkpoint.
public struct ModuleScores: Sendable, Equatable, Codable {
    /// 1 − mean cos(input, output) on the residual stream, per layer.
    public var attention: [Double]
    public var mlp: [Double]
    public var block: [Double]
    /// blockGap[i][n − 1] = mean cos(h_i, h_{i+n}) between block-boundary
    /// hidden states, NaN where i + n > L. Used for contiguous block dropping.
    public var blockGap: [[Double]]
    /// The float64 sums these means come from (per calibration sequence, and
    /// block-gap totals); nil for scores built from means alone.
    public var sums: SequenceSums?

    public var layerCount: Int { attention.count }

    public init(attention: [Double], mlp: [Double], block: [Double], blockGap: [[Double]]) {
        self.attention = attention
        self.mlp = mlp
        self.block = block
        self.blockGap = blockGap
    }

    /// The means of `sums`: importance = 1 − Σ cos / Σ tokens per layer,
    /// block gap = Σ cos / Σ tokens.
    public init(sums: SequenceSums) {
        func importance(_ module: ModuleSequenceSums) -> [Double] { sums.meanCosine(module).map { 1 - $0 } }
        self.init(
            attention: importance(sums.attention), mlp: importance(sums.mlp), block: importance(sums.block),
            blockGap: sums.blockGapMeanCosine)
        self.sums = sums
    }

    /// The scores of one pass over the sequences of `shards`, in the order
    /// given (calibration shards scored apart): their sums merged, means
    /// derived from them — equal to scoring all sequences at once up to the
    /// order of float64 additions.
    /// - Throws: `DroptraceError` when a shard carries no sums, or they do
    ///   not fit together (`SequenceSums.merged`).
    public static func merged(_ shards: [ModuleScores]) throws -> ModuleScores {
        let sums = try shards.enumerated().map { index, shard in
            guard let sums = shard.sums else {
                throw DroptraceError("shard \(index) carries no per-sequence sums to merge")
            }
            return sums
        }
        return ModuleScores(sums: try SequenceSums.merged(sums))
    }

    // Means NaN where a module is dropped would make plain `==` false for
    // equal scores; NaNs in the same places count as equal.
    public static func == (lhs: ModuleScores, rhs: ModuleScores) -> Bool {
        func same(_ a: [Double], _ b: [Double]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) }
        }
        return same(lhs.attention, rhs.attention) && same(lhs.mlp, rhs.mlp) && same(lhs.block, rhs.block)
            && lhs.blockGap.count == rhs.blockGap.count && zip(lhs.blockGap, rhs.blockGap).allSatisfy { same($0, $1) }
            && lhs.sums == rhs.sums
    }
}

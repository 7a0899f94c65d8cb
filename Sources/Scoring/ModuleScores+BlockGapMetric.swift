import DroptraceSupport

extension ModuleScores {
    /// The [L][L] n-gap matrix by `metric` (`[i][n − 1]` for h_i vs h_{i+n},
    /// NaN where i + n > L): the means for cosine, the sums' angular
    /// distances otherwise; nil for those when the scores carry no sums.
    public func blockGap(_ metric: BlockGapMetric) -> [[Double]]? {
        switch metric {
        case .cosine:
            return blockGap
        case .angularDistance:
            guard let sums else { return nil }
            let tokens = sums.totalTokens
            return sums.blockGap.angularDistanceSum.map { row in row.map { $0 / tokens } }
        case .angularDistanceLastToken:
            guard let sums else { return nil }
            let sequences = Double(sums.sequenceCount)
            return sums.blockGap.lastTokenAngularDistanceSum.map { row in row.map { $0 / sequences } }
        }
    }
}

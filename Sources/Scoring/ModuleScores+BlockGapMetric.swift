import DroptraceSupport

extension ModuleScores {
    /// The [L][L] n-gap matrix by `metric` (`[i][n − 1]` for h_i vs h_{i+n},
    /// NaN where i + n > L): the means for cosine, the sums' angular
    /// distances otherwise; nil for those when the scores carry no sums.
    public func blockGap(_ metric: BlockGapMetric) -> [[Double]]? {
        metric == .cosine ? blockGap : sums?.blockGapMean(metric)
    }
}

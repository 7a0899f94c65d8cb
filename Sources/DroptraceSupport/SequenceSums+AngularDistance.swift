extension SequenceSums {
    /// Per layer, the angular distance arccos(cos)/π averaged over every
    /// token: Σ_s angularDistanceSum[s][l] / Σ_s tokens[s], [L].
    public func meanAngularDistance(_ module: ModuleSequenceSums) -> [Double] {
        let total = totalTokens
        return (0..<layerCount).map { layer in module.angularDistanceSum.reduce(0.0) { $0 + $1[layer] } / total }
    }

    /// Per layer, the angular distance at each sequence's last token averaged
    /// over the sequences (PruneMe's choice), [L].
    public func meanLastTokenAngularDistance(_ module: ModuleSequenceSums) -> [Double] {
        let sequences = Double(sequenceCount)
        return (0..<layerCount).map { layer in
            module.lastTokenCosine.reduce(0.0) { $0 + Self.angularDistance($1[layer]) } / sequences
        }
    }

    /// The [L][L] n-gap matrix of means by `metric`, `[i][n − 1]` for h_i vs
    /// h_{i+n}, NaN where i + n > L.
    public func blockGapMean(_ metric: BlockGapMetric) -> [[Double]] {
        switch metric {
        case .cosine: blockGapMeanCosine
        case .angularDistance: blockGap.angularDistanceSum.map { row in row.map { $0 / totalTokens } }
        case .angularDistanceLastToken:
            blockGap.lastTokenAngularDistanceSum.map { row in row.map { $0 / Double(sequenceCount) } }
        }
    }
}

import DroptraceSupport

extension AngularDistanceScores {
    /// The angular distances a pass's float64 sums give (`SequenceSums`'
    /// means), rounded to float32 as stored; NaN where the sums are (a
    /// dropped module, an undefined gap).
    public init(sums: SequenceSums) {
        func stored(_ values: [Double]) -> [Float] { values.map(Float.init) }
        func stored(_ matrix: [[Double]]) -> [[Float]] { matrix.map(stored) }
        self.init(
            attention: stored(sums.meanAngularDistance(sums.attention)),
            mlp: stored(sums.meanAngularDistance(sums.mlp)),
            block: stored(sums.meanAngularDistance(sums.block)),
            attentionLastToken: stored(sums.meanLastTokenAngularDistance(sums.attention)),
            mlpLastToken: stored(sums.meanLastTokenAngularDistance(sums.mlp)),
            blockLastToken: stored(sums.meanLastTokenAngularDistance(sums.block)),
            blockGap: stored(sums.blockGapMean(.angularDistance)),
            blockGapLastToken: stored(sums.blockGapMean(.angularDistanceLastToken)))
    }
}

import DroptraceSupport

extension AngularDistanceScores {
    /// The angular distances a pass's float64 sums give, rounded to float32
    /// as stored: per module Σ_s angular distance sum / Σ_s tokens and the
    /// mean over sequences of arccos(last-token cos)/π; per gap the totals
    /// over Σ_s tokens and over S sequences. NaN where the sums are (a
    /// dropped module, an undefined gap).
    public init(sums: SequenceSums) {
        let tokens = sums.totalTokens
        let sequences = Double(sums.sequenceCount)
        let layers = sums.layerCount
        func overTokens(_ module: ModuleSequenceSums) -> [Float] {
            (0..<layers).map { layer in Float(module.angularDistanceSum.reduce(0.0) { $0 + $1[layer] } / tokens) }
        }
        func atLastToken(_ module: ModuleSequenceSums) -> [Float] {
            (0..<layers).map { layer in
                Float(module.lastTokenCosine.reduce(0.0) { $0 + SequenceSums.angularDistance($1[layer]) } / sequences)
            }
        }
        func divided(_ matrix: [[Double]], by count: Double) -> [[Float]] {
            matrix.map { row in row.map { Float($0 / count) } }
        }
        self.init(
            attention: overTokens(sums.attention), mlp: overTokens(sums.mlp), block: overTokens(sums.block),
            attentionLastToken: atLastToken(sums.attention), mlpLastToken: atLastToken(sums.mlp),
            blockLastToken: atLastToken(sums.block),
            blockGap: divided(sums.blockGap.angularDistanceSum, by: tokens),
            blockGapLastToken: divided(sums.blockGap.lastTokenAngularDistanceSum, by: sequences))
    }
}

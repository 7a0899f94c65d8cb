/// The LLM-Drop importance of every module of one checkpoint.
public struct ModuleScores: Sendable, Equatable, Codable {
    /// 1 − mean cos(input, output) on the residual stream, per layer.
    public var attention: [Double]
    public var mlp: [Double]
    public var block: [Double]
    /// blockGap[i][n − 1] = mean cos(h_i, h_{i+n}) between block-boundary
    /// hidden states, NaN where i + n > L. Used for contiguous block dropping.
    public var blockGap: [[Double]]

    public var layerCount: Int { attention.count }

    public init(attention: [Double], mlp: [Double], block: [Double], blockGap: [[Double]]) {
        self.attention = attention
        self.mlp = mlp
        self.block = block
        self.blockGap = blockGap
    }
}

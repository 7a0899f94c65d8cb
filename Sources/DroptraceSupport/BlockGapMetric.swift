/// How similar the block-boundary states h_i and h_{i+n} are, i.e. how
/// little the n contiguous blocks i..i+n−1 (0-based) change the residual
/// stream: the metrics of the n-gap matrix, shared by the analysis (which
/// reads them from the store) and `drop --consecutive` (from a pass).
public enum BlockGapMetric: String, CaseIterable, Sendable, Codable {
    /// Mean over tokens of cos(h_i, h_{i+n}) (LLM-Drop's consecutive block
    /// drop); higher is more redundant.
    case cosine
    /// arccos(cos)/π mean over tokens (Gromov et al.); lower is more redundant.
    case angularDistance = "angular_distance"
    /// The same at each sequence's last token, mean over sequences (PruneMe,
    /// short-transformers' default); lower is more redundant.
    case angularDistanceLastToken = "angular_distance_last_token"

    public var displayName: String {
        switch self {
        case .cosine: "Cosine (LLM-Drop)"
        case .angularDistance: "Angular distance"
        case .angularDistanceLastToken: "Angular distance, last token (PruneMe)"
        }
    }

    /// Whether a lower value marks a more droppable block.
    public var lowerIsMoreRedundant: Bool { self != .cosine }

    /// The start i in 0...L−size whose value `matrix[i][size − 1]` is the
    /// most redundant by this metric (ties: the lower start, as numpy's argmin
    /// picks), with that value; nil when every candidate is NaN or `size` is
    /// out of 1...L. `matrix` is [L][L], NaN where i + n > L.
    public func best(in matrix: [[Double]], size: Int) -> (start: Int, value: Double)? {
        let layers = matrix.count
        guard size >= 1, size <= layers else { return nil }
        var best: (start: Int, value: Double)?
        for start in 0...(layers - size) where matrix[start].count >= size {
            let value = matrix[start][size - 1]
            guard !value.isNaN else { continue }
            if let current = best?.value, lowerIsMoreRedundant ? value >= current : value <= current { continue }
            best = (start, value)
        }
        return best
    }
}

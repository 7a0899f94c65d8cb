import DroptraceSupport
import ScoreStore

extension BlockGapMetric {
    /// The row's [L][L] matrix, `[i][n − 1]` for h_i vs h_{i+n}, NaN where
    /// i + n > L; nil when the row does not record it.
    public func matrix(in row: CheckpointRow) -> [[Float]]? {
        switch self {
        case .cosine: row.blockGap
        case .angularDistance: row.angularDistance?.blockGap
        case .angularDistanceLastToken: row.angularDistance?.blockGapLastToken
        }
    }
}

/// A contiguous run of blocks to drop: layers start..<start + size, 0-based.
public struct BlockRange: Sendable, Equatable, Codable {
    /// First dropped layer (0-based).
    public var start: Int
    /// Number of dropped layers, n ≥ 1.
    public var size: Int

    public init(start: Int, size: Int) {
        self.start = start
        self.size = size
    }

    /// One past the last dropped layer: the range is [start, end).
    public var end: Int { start + size }
    /// The last dropped layer (0-based, inclusive).
    public var last: Int { start + size - 1 }
}

/// For every block size n (1 ≤ n < L), the best contiguous block [i, i+n)
/// to drop by each metric of the n-gap matrix, as short-transformers'
/// `get_scored_blocks` and PruneMe's `layer_similarity.py` report it but
/// with 0-based layer indices throughout.
public struct BlockGapTable: Sendable, Equatable {
    public struct Choice: Sendable, Equatable {
        public var metric: BlockGapMetric
        public var block: BlockRange
        /// The metric's value between h_start and h_end.
        public var value: Double
    }

    public struct Row: Sendable, Equatable {
        /// n, the number of contiguous layers dropped.
        public var size: Int
        /// The best block by each metric the row records, in `BlockGapMetric` order.
        public var choices: [Choice]
        /// Whether every metric picks the same block.
        public var agrees: Bool { Set(choices.map(\.block.start)).count <= 1 }
    }

    /// The metrics present (cosine always; angular distances when recorded).
    public var metrics: [BlockGapMetric]
    /// One row per n = 1 … L − 1, ascending.
    public var rows: [Row]

    public init(row: CheckpointRow) {
        let layers = row.blockGap.count
        // Each matrix in Double once, not once per block size (L sizes × L² values).
        let matrices = BlockGapMetric.allCases.compactMap { metric -> (BlockGapMetric, [[Double]])? in
            guard let matrix = metric.matrix(in: row), matrix.count == layers,
                  matrix.allSatisfy({ $0.count == layers }) else { return nil }
            return (metric, matrix.map { $0.map(Double.init) })
        }
        metrics = matrices.map(\.0)
        rows = layers < 2 ? [] : (1..<layers).map { size in
            Row(size: size, choices: matrices.compactMap { metric, matrix in
                Self.best(matrix, size: size, metric: metric).map { Choice(metric: metric, block: $0.block, value: $0.value) }
            })
        }
    }

    /// The most redundant block of `size` layers in `matrix` by `metric`
    /// (`BlockGapMetric.best`), nil when there is none.
    public static func best(_ matrix: [[Float]], size: Int, metric: BlockGapMetric) -> (block: BlockRange, value: Double)? {
        best(matrix.map { $0.map(Double.init) }, size: size, metric: metric)
    }

    static func best(_ matrix: [[Double]], size: Int, metric: BlockGapMetric) -> (block: BlockRange, value: Double)? {
        metric.best(in: matrix, size: size).map { (BlockRange(start: $0.start, size: size), $0.value) }
    }
}

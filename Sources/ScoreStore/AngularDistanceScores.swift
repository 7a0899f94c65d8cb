import DroptraceSupport

/// The angular distance arccos(cos)/π of Gromov et al., *The Unreasonable
/// Ineffectiveness of the Deeper Layers* (2024), as PruneMe computes it
/// (cos clamped to [−1, 1]), of one checkpoint: from the same pass and the
/// same pairs of hidden states as the cosine importances. 0 = same
/// direction, 1 = opposite; low = redundant.
///
/// "Last token" is PruneMe's and Gromov et al.'s choice: the distance at
/// each calibration sequence's last token, averaged over sequences; the
/// other arrays average over every token, like the LLM-Drop importances.
public struct AngularDistanceScores: Sendable, Equatable {
    /// Per layer [L]: between a module's input and output on the residual
    /// stream (the pairs of `/scores/<module>`), NaN where not measured.
    public var attention: [Float]
    public var mlp: [Float]
    public var block: [Float]
    public var attentionLastToken: [Float]
    public var mlpLastToken: [Float]
    public var blockLastToken: [Float]
    /// [L][L]: `[i][n − 1]` between the block-boundary states h_i and
    /// h_{i+n} (dropping layers i..i+n−1, 0-based), NaN where i + n > L.
    public var blockGap: [[Float]]
    public var blockGapLastToken: [[Float]]

    public init(
        attention: [Float], mlp: [Float], block: [Float],
        attentionLastToken: [Float], mlpLastToken: [Float], blockLastToken: [Float],
        blockGap: [[Float]], blockGapLastToken: [[Float]]
    ) {
        self.attention = attention
        self.mlp = mlp
        self.block = block
        self.attentionLastToken = attentionLastToken
        self.mlpLastToken = mlpLastToken
        self.blockLastToken = blockLastToken
        self.blockGap = blockGap
        self.blockGapLastToken = blockGapLastToken
    }

    /// Every value NaN, [L] and [L][L]: a row of a store whose other rows
    /// have angular distances while this one was scored before they existed.
    public static func undefined(layers: Int) -> AngularDistanceScores {
        let row = [Float](repeating: .nan, count: layers)
        let matrix = [[Float]](repeating: row, count: layers)
        return AngularDistanceScores(
            attention: row, mlp: row, block: row, attentionLastToken: row, mlpLastToken: row, blockLastToken: row,
            blockGap: matrix, blockGapLastToken: matrix)
    }

    /// The per-layer arrays under their dataset paths, in layout order.
    var perLayer: [(path: String, values: [Float])] {
        typealias Names = ScoreFileLayout.AngularDistance
        return [
            (Names.attention, attention), (Names.attentionLastToken, attentionLastToken),
            (Names.mlp, mlp), (Names.mlpLastToken, mlpLastToken),
            (Names.block, block), (Names.blockLastToken, blockLastToken),
        ]
    }

    /// The [L][L] arrays under their dataset paths.
    var perGap: [(path: String, values: [[Float]])] {
        [(ScoreFileLayout.AngularDistance.blockGap, blockGap),
         (ScoreFileLayout.AngularDistance.blockGapLastToken, blockGapLastToken)]
    }

    /// Whether any value is defined (a row filled by `undefined` has none).
    var isDefined: Bool {
        perLayer.contains { $0.values.contains { !$0.isNaN } }
    }

    // NaNs in the same places count as equal (see `CheckpointRow.==`).
    public static func == (lhs: AngularDistanceScores, rhs: AngularDistanceScores) -> Bool {
        func same(_ a: [Float], _ b: [Float]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) }
        }
        return zip(lhs.perLayer, rhs.perLayer).allSatisfy { same($0.values, $1.values) }
            && zip(lhs.perGap, rhs.perGap).allSatisfy { a, b in
                a.values.count == b.values.count && zip(a.values, b.values).allSatisfy { same($0, $1) }
            }
    }
}

extension ScoreFileLayout {
    /// The angular distances (`AngularDistanceScores`), next to the cosine
    /// arrays with the metric in the name. Optional as a whole: files
    /// written before they existed have none of them; a file has all or none.
    public enum AngularDistance {
        /// float32 [C, L], arccos(cos)/π mean over tokens.
        public static let attention = "scores/attention_angular_distance"
        public static let mlp = "scores/mlp_angular_distance"
        public static let block = "scores/block_angular_distance"
        /// float32 [C, L], at each sequence's last token, mean over sequences.
        public static let attentionLastToken = "scores/attention_angular_distance_last_token"
        public static let mlpLastToken = "scores/mlp_angular_distance_last_token"
        public static let blockLastToken = "scores/block_angular_distance_last_token"
        /// float32 [C, L, L], `[c, i, n−1]` between h_i and h_{i+n}, NaN where i + n > L.
        public static let blockGap = "similarity/block_gap_angular_distance"
        public static let blockGapLastToken = "similarity/block_gap_angular_distance_last_token"

        static let perLayer = [attention, attentionLastToken, mlp, mlpLastToken, block, blockLastToken]
        static let perGap = [blockGap, blockGapLastToken]
    }
}

/// Reading and writing the `ScoreFileLayout.AngularDistance` datasets.
enum AngularDistanceColumns {
    /// Shapes of one row's arrays, naming the first that is wrong.
    static func problem(in scores: AngularDistanceScores, layers: Int) -> String? {
        for (path, values) in scores.perLayer where values.count != layers {
            return "\(path) has \(values.count) entries, expected \(layers) (num_layers)"
        }
        for (path, matrix) in scores.perGap {
            if matrix.count != layers { return "\(path) has \(matrix.count) rows, expected \(layers) (num_layers)" }
            if let bad = matrix.firstIndex(where: { $0.count != layers }) {
                return "\(path) row \(bad) has \(matrix[bad].count) entries, expected \(layers) (num_layers)"
            }
        }
        return nil
    }

    /// Writes the datasets when any row has angular distances; rows without
    /// them are stored as NaN.
    static func write(_ rows: [CheckpointRow], layers: Int, into file: HDF5File) throws {
        guard rows.contains(where: { $0.angularDistance != nil }) else { return }
        let filled = rows.map { $0.angularDistance ?? .undefined(layers: layers) }
        let storage = ScoreFileLayout.storage
        for (index, path) in ScoreFileLayout.AngularDistance.perLayer.enumerated() {
            try file.createDataset(path, values: filled.flatMap { $0.perLayer[index].values },
                                   shape: [rows.count, layers], storage: storage)
        }
        for (index, path) in ScoreFileLayout.AngularDistance.perGap.enumerated() {
            try file.createDataset(path, values: filled.flatMap { $0.perGap[index].values.joined() },
                                   shape: [rows.count, layers, layers], storage: storage)
        }
    }

    /// Each row's angular distances; nil for every row when the file has
    /// none, and for rows stored as all NaN.
    /// - Throws: `DroptraceError` when only some datasets exist, or one holds
    ///   other than floats of shape [C, L] / [C, L, L].
    static func read(from file: HDF5File, count: Int, layers: Int) throws -> [AngularDistanceScores?] {
        let names = ScoreFileLayout.AngularDistance.perLayer + ScoreFileLayout.AngularDistance.perGap
        let present = try names.filter { try file.kind(of: $0) != nil }
        guard !present.isEmpty else { return Array(repeating: nil, count: count) }
        if let missing = names.first(where: { !present.contains($0) }) {
            throw DroptraceError(
                "missing dataset /\(missing): the angular distances are stored together, and /\(present[0]) exists",
                path: file.filePath)
        }
        func values(_ path: String, shape: [Int]) throws -> [Float] {
            try ScoreFileReader.dataset(path, in: file, holding: .floats, shape: shape).read(as: Float.self)
        }
        let perLayer = try ScoreFileLayout.AngularDistance.perLayer.map { try values($0, shape: [count, layers]) }
        let perGap = try ScoreFileLayout.AngularDistance.perGap.map { try values($0, shape: [count, layers, layers]) }
        return (0..<count).map { row in
            let slice = { (flat: [Float]) in Array(flat[(row * layers)..<((row + 1) * layers)]) }
            let matrix = { (flat: [Float]) in
                (0..<layers).map { i in
                    Array(flat[((row * layers + i) * layers)..<((row * layers + i + 1) * layers)])
                }
            }
            let scores = AngularDistanceScores(
                attention: slice(perLayer[0]), mlp: slice(perLayer[2]), block: slice(perLayer[4]),
                attentionLastToken: slice(perLayer[1]), mlpLastToken: slice(perLayer[3]),
                blockLastToken: slice(perLayer[5]), blockGap: matrix(perGap[0]), blockGapLastToken: matrix(perGap[1]))
            return scores.isDefined ? scores : nil
        }
    }
}

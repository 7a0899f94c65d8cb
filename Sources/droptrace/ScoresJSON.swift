import Analysis
import DroptraceSupport
import Foundation
import ScoreStore
import Scoring

/// The `--json` output of `score`: NaN as null (undefined block gaps, and
/// the modules a checkpoint's own drop lists removed, which have no score).
struct ScoresJSON: Encodable {
    struct Scores: Encodable {
        var attention: [Double?]
        var mlp: [Double?]
        var block: [Double?]
    }

    var checkpoint: String
    var modelType: String
    var numLayers: Int
    var calibrationTokens: Int
    var calibrationSHA256: String
    /// The arithmetic of the matrix products ("f32", "bf16") and the kernel that ran them.
    var precision: String
    var matrixKernel: String?
    var scores: Scores
    var blockGap: [[Double?]]
    /// arccos(cos)/π of the same pairs, mean over tokens and at the last token.
    var angularDistance: AngularDistances?
    /// k → which layers each method drops, and where they disagree.
    var dropSetsByMethod: [MethodDropSetsJSON]
    /// For every block size n below the layer count, the best contiguous block by each metric.
    var bestBlocks: [BestBlockJSON]

    enum CodingKeys: String, CodingKey {
        case checkpoint, scores
        case modelType = "model_type"
        case numLayers = "num_layers"
        case calibrationTokens = "calibration_tokens"
        case calibrationSHA256 = "calibration_sha256"
        case matrixKernel = "matrix_kernel"
        case precision
        case blockGap = "block_gap"
        case angularDistance = "angular_distance"
        case dropSetsByMethod = "drop_sets_by_method"
        case bestBlocks = "best_blocks"
    }

    /// - Parameter row: the stored row of these scores, which the method
    ///   comparisons are read from (as the report reads them).
    ///   `metadata`: the stored file's, whose precision and kernel are shown.
    init(checkpoint: String, scored: ScoredCheckpoint, row: CheckpointRow, metadata: ScoreFileMetadata) {
        self.checkpoint = checkpoint
        modelType = scored.modelType
        numLayers = scored.layerCount
        calibrationTokens = scored.calibration.tokenCount
        calibrationSHA256 = scored.calibration.sha256
        precision = metadata.precision
        matrixKernel = metadata.matrixKernel
        func defined(_ values: [Double]) -> [Double?] { values.map { $0.isNaN ? nil : $0 } }
        scores = Scores(
            attention: defined(scored.scores.attention), mlp: defined(scored.scores.mlp), block: defined(scored.scores.block))
        blockGap = scored.scores.blockGap.map(defined)
        angularDistance = row.angularDistance.map(AngularDistances.init)
        dropSetsByMethod = MethodDropSets(row: row, dropK: MethodDropSets.defaultDropK(row: row))
            .entries.map(MethodDropSetsJSON.init)
        bestBlocks = BlockGapTable(row: row).rows.map(BestBlockJSON.init)
    }

    func encoded() throws -> String { try encodeJSON(self) }
}

/// `angular_distance` in `score --json`: the store's arrays, NaN as null.
struct AngularDistances: Encodable {
    var attention, mlp, block, attentionLastToken, mlpLastToken, blockLastToken: [Double?]
    var blockGap, blockGapLastToken: [[Double?]]

    enum CodingKeys: String, CodingKey {
        case attention, mlp, block
        case attentionLastToken = "attention_last_token"
        case mlpLastToken = "mlp_last_token"
        case blockLastToken = "block_last_token"
        case blockGap = "block_gap"
        case blockGapLastToken = "block_gap_last_token"
    }

    init(_ scores: AngularDistanceScores) {
        func values(_ row: [Float]) -> [Double?] { row.map { $0.isNaN ? nil : Double($0) } }
        attention = values(scores.attention)
        mlp = values(scores.mlp)
        block = values(scores.block)
        attentionLastToken = values(scores.attentionLastToken)
        mlpLastToken = values(scores.mlpLastToken)
        blockLastToken = values(scores.blockLastToken)
        blockGap = scores.blockGap.map(values)
        blockGapLastToken = scores.blockGapLastToken.map(values)
    }
}

/// One module type and k: each method's drop set (0-based layers).
struct MethodDropSetsJSON: Encodable {
    var module: String
    var k: Int
    /// method name (`RedundancyMethod` raw value) → layers.
    var methods: [String: [Int]]
    var disagreeOn: [Int]

    enum CodingKeys: String, CodingKey {
        case module, k, methods
        case disagreeOn = "disagree_on"
    }

    init(_ entry: MethodDropSets.Entry) {
        module = entry.module.rawValue
        k = entry.k
        methods = Dictionary(uniqueKeysWithValues: entry.sets.map { ($0.method.rawValue, $0.layers) })
        disagreeOn = entry.disagreement
    }
}

/// One block size n: the best block by each metric, as its 0-based layers,
/// `start` and `end` (exclusive: mergekit's layer_range convention) and value.
struct BestBlockJSON: Encodable {
    struct Choice: Encodable {
        var layers: [Int]
        var start: Int
        var end: Int
        var value: Double
    }

    var n: Int
    var agree: Bool
    /// metric name (`BlockGapMetric` raw value) → its choice.
    var metrics: [String: Choice]

    init(_ row: BlockGapTable.Row) {
        n = row.size
        agree = row.agrees
        metrics = Dictionary(uniqueKeysWithValues: row.choices.map { choice in
            (choice.metric.rawValue, Choice(layers: Array(choice.block.start..<choice.block.end),
                                            start: choice.block.start, end: choice.block.end, value: choice.value))
        })
    }
}

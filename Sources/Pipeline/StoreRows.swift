import DroptraceSupport
import Scoring
import ScoreStore
import TensorEngine

extension CheckpointRow {
    /// A store row from a checkpoint's scores (stored as float32), with the
    /// fingerprint of the files they came from ("" when not known) and the
    /// angular distances their sums give (none without sums).
    public init(scores: ModuleScores, name: String, step: Int64, tokens: Int64, fingerprint: String = "") {
        self.init(
            name: name, step: step, tokens: tokens,
            attention: scores.attention.map(Float.init), mlp: scores.mlp.map(Float.init),
            block: scores.block.map(Float.init), blockGap: scores.blockGap.map { $0.map(Float.init) },
            fingerprint: fingerprint, sums: scores.sums, angularDistance: scores.sums.map(AngularDistanceScores.init(sums:)))
    }
}

extension ScoreFileMetadata {
    /// The metadata of a checkpoint scored in `precision`, with the engine's
    /// matrix kernel for it.
    public init(_ scored: ScoredCheckpoint, precision: Precision) {
        self.init(
            modelType: scored.modelType, numLayers: scored.layerCount, hiddenSize: scored.hiddenSize,
            layerShapesSHA256: Self.layerShapesSHA256(of: scored.layerTensorShapes), metric: "cosine",
            calibrationSHA256: scored.calibration.sha256, calibrationTokens: Int64(scored.calibration.tokenCount),
            droptraceVersion: DroptraceVersion.string)
        record(precision)
    }
}

import Foundation
import Scoring

/// The `--json` output of `score`: NaN (undefined block gaps) as null.
struct ScoresJSON: Encodable {
    struct Scores: Encodable {
        var attention: [Double]
        var mlp: [Double]
        var block: [Double]
    }

    var checkpoint: String
    var modelType: String
    var numLayers: Int
    var calibrationTokens: Int
    var calibrationSHA256: String
    var scores: Scores
    var blockGap: [[Double?]]

    enum CodingKeys: String, CodingKey {
        case checkpoint, scores
        case modelType = "model_type"
        case numLayers = "num_layers"
        case calibrationTokens = "calibration_tokens"
        case calibrationSHA256 = "calibration_sha256"
        case blockGap = "block_gap"
    }

    init(checkpoint: String, scored: ScoredCheckpoint) {
        self.checkpoint = checkpoint
        modelType = scored.modelType
        numLayers = scored.layerCount
        calibrationTokens = scored.calibration.tokenCount
        calibrationSHA256 = scored.calibration.sha256
        scores = Scores(attention: scored.scores.attention, mlp: scored.scores.mlp, block: scored.scores.block)
        blockGap = scored.scores.blockGap.map { $0.map { $0.isNaN ? nil : $0 } }
    }

    func encoded() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}

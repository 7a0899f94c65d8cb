import Architectures
import CheckpointIO
import Foundation
import Scoring
import Testing

/// Fixtures/gguf/`file` (written by gguf-py from a safetensors fixture's
/// float32 weights) scores as the safetensors checkpoint in `directory`
/// does, to float32 rounding, and reads as `modelType`.
func expectGGUFScoresLike(_ file: String, safetensors directory: URL, modelType: String) throws {
    let sequences = FixtureFiles.jsonlSequences()
    let expected = try ImportanceScorer(model: ModelRegistry.load(try Checkpoint(directory: directory)))
        .score(sequences, calibrationPath: "calib")
    let gguf = try ModelRegistry.load(try Checkpoint(location: FixtureFiles.root.appendingPathComponent("gguf/\(file)")))
    #expect(gguf.modelType == modelType)
    let scores = try ImportanceScorer(model: gguf).score(sequences, calibrationPath: "calib")
    let difference = ReferenceScores(
        attention: expected.attention, mlp: expected.mlp, block: expected.block, blockGap: expected.blockGap
    ).maxDifference(attention: scores.attention, mlp: scores.mlp, block: scores.block, blockGap: scores.blockGap)
    #expect(difference < 1e-6, "\(file): max |gguf − safetensors| = \(difference)")
}

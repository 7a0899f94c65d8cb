import Architectures
import CheckpointIO
import Foundation
import Scoring
import Testing

/// Fixtures/gguf/`file` (written by gguf-py from a safetensors fixture's
/// float32 weights) scores as the safetensors checkpoint in `directory`
/// does, to float32 rounding, and reads as `modelType`.
func expectGGUFScoresLike(_ file: String, safetensors directory: URL, modelType: String) throws {
    let gguf = try ModelRegistry.load(try Checkpoint(location: FixtureFiles.root.appendingPathComponent("gguf/\(file)")))
    #expect(gguf.modelType == modelType)
    let difference = try scoreDifference(gguf, safetensors: directory)
    #expect(difference < 1e-6, "\(file): max |gguf − safetensors| = \(difference)")
}

/// The largest difference between the scores of `model` and of the
/// safetensors checkpoint in `directory`, on the fixture's JSONL sequences.
func scoreDifference(_ model: any LanguageModel, safetensors directory: URL) throws -> Double {
    let sequences = FixtureFiles.jsonlSequences()
    let expected = try ImportanceScorer(model: ModelRegistry.load(try Checkpoint(directory: directory)))
        .score(sequences, calibrationPath: "calib")
    let scores = try ImportanceScorer(model: model).score(sequences, calibrationPath: "calib")
    return ReferenceScores(
        attention: expected.attention, mlp: expected.mlp, block: expected.block, blockGap: expected.blockGap
    ).maxDifference(attention: scores.attention, mlp: scores.mlp, block: scores.block, blockGap: scores.blockGap)
}

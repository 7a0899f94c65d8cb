import Architectures
import CheckpointIO
import Foundation
import Scoring
import Testing

/// droptrace's scores against transformers' own forward pass (hooks), for
/// every fixture architecture, in float32 and bfloat16.
@Suite struct ScoringReferenceTests {
    static let float32Tolerance = 1e-4
    static let bfloat16Tolerance = 2e-3

    func score(_ model: String, _ sequences: [[Int]]) throws -> ModuleScores {
        let checkpoint = try Checkpoint(directory: FixtureFiles.model(model))
        let scorer = ImportanceScorer(model: try ModelRegistry.load(checkpoint))
        return try scorer.score(sequences, calibrationPath: "fixture")
    }

    func check(_ model: String, _ scores: ModuleScores, against reference: ReferenceScores, tolerance: Double) {
        let difference = reference.maxDifference(
            attention: scores.attention, mlp: scores.mlp, block: scores.block, blockGap: scores.blockGap)
        #expect(difference <= tolerance, "\(model): max |droptrace − transformers| = \(difference)")
        // The scores must be informative, not all equal: a broken layer would flatten them.
        #expect(Set(scores.attention.map { ($0 * 1e6).rounded() }).count > 1, "\(model): attention scores all equal")
    }

    @Test(arguments: FixtureFiles.modelNames)
    func jsonlCalibrationMatchesTransformers(model: String) throws {
        let scores = try score(model, FixtureFiles.jsonlSequences())
        let exact = try #require(FixtureFiles.scores(model, "jsonl", "float32_compute"))
        check(model, scores, against: exact, tolerance: Self.float32Tolerance)
        if let bf16 = FixtureFiles.scores(model, "jsonl", "bfloat16_compute") {
            check(model, scores, against: bf16, tolerance: Self.bfloat16Tolerance)
        }
    }

    @Test(arguments: FixtureFiles.modelNames)
    func textCalibrationMatchesTransformers(model: String) throws {
        let scores = try score(model, FixtureFiles.textInputIDs(model))
        let exact = try #require(FixtureFiles.scores(model, "text", "float32_compute"))
        check(model, scores, against: exact, tolerance: Self.float32Tolerance)
        if let bf16 = FixtureFiles.scores(model, "text", "bfloat16_compute") {
            check(model, scores, against: bf16, tolerance: Self.bfloat16Tolerance)
        }
    }

    @Test func hiddenStatesSpilledToDiskGiveTheSameScores() throws {
        let checkpoint = try Checkpoint(directory: FixtureFiles.model("gpt_neox-f32"))
        let model = try ModelRegistry.load(checkpoint)
        let sequences = FixtureFiles.jsonlSequences()
        let inMemory = try ImportanceScorer(model: model).score(sequences, calibrationPath: "fixture")
        let onDisk = try ImportanceScorer(model: model, stateMemoryBudget: 0).score(sequences, calibrationPath: "fixture")
        #expect(inMemory == onDisk || zip(inMemory.blockGap.joined(), onDisk.blockGap.joined()).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) })
        #expect(inMemory.attention == onDisk.attention)
    }

    /// All calibration tokens go through each layer at once: a set whose
    /// activations cannot fit is refused naming the file, not allocated until
    /// the process dies (80,000 lines of 256 tokens aborted on 3.9 GB).
    @Test func calibrationBeyondMemoryIsRefusedNamingTheFile() throws {
        let model = try ModelRegistry.load(try Checkpoint(location: FixtureFiles.model("llama-f32")))
        let sequences = FixtureFiles.jsonlSequences()
        var scorer = ImportanceScorer(model: model)
        let tokens = sequences.reduce(0) { $0 + $1.count }
        scorer.memoryLimit = tokens * model.hiddenSize * 48 - 1
        #expect {
            try scorer.validate(sequences, calibrationPath: "calib.jsonl")
        } throws: { error in
            "\(error)".hasPrefix("calib.jsonl: \(tokens) calibration tokens need about ") && "\(error)".hasSuffix("score fewer (--samples, --seq-len)")
        }
        scorer.memoryLimit += 1
        try scorer.validate(sequences, calibrationPath: "calib.jsonl")
    }
}

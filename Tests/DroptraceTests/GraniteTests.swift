import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Granite's four multipliers: each is read (the fixture's values are far
/// from 1, and setting one to 1 changes what it governs), and values no
/// model can run with are refused.
@Suite struct GraniteTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("granite-f32", "logits_scaling", "0"),
        Mutant("granite-f32", "residual_multiplier", "1e39"),
        Mutant("granite-f32", "embedding_multiplier", "-1e300"),
        Mutant("granite-f32", "attention_multiplier", "1e40"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    func attentionScores(_ fixture: EditedFixture) throws -> [Double] {
        try ImportanceScorer(model: try fixture.load()).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib").attention
    }

    /// Setting a multiplier to GraniteConfig's default 1 changes the scores:
    /// droptrace reads each one (the reference tests then check it reads
    /// it as transformers does).
    @Test(arguments: ["embedding_multiplier", "residual_multiplier", "attention_multiplier"])
    func multiplierChangesTheScores(key: String) throws {
        let plain = try attentionScores(try EditedFixture("granite-f32"))
        let neutral = try attentionScores(try EditedFixture("granite-f32") { $0[key] = 1.0 })
        let moved = zip(plain, neutral).map { abs($0 - $1) }.max()!
        #expect(moved > 1e-3, "\(key) moves the attention scores by \(moved)")
    }

    /// The residual multiplier scales the branch as it joins the stream, so
    /// the attention branch output is m · o_proj(...) and the block's input
    /// plus it is what the MLP branch reads.
    @Test func residualMultiplierScalesTheBranchOutputs() throws {
        let model = try EditedFixture("granite-f32").load()
        let block = try model.block(1)
        #expect(block.attention?.outputScale == 0.22 && block.mlp?.outputScale == 0.22)
        #expect(block.attention?.attention.scale == 0.15)
    }

    /// Logits are divided by logits_scaling: with 1 instead of 8 they are
    /// 8 times larger (up to rounding), so perplexity depends on it.
    @Test func logitsAreDividedByLogitsScaling() throws {
        let scaled = try EditedFixture("granite-f32").load(), raw = try EditedFixture("granite-f32") { $0["logits_scaling"] = 1.0 }.load()
        let ids = Array(FixtureFiles.jsonlSequences()[0].prefix(12))
        func lastLogits(_ model: any LanguageModel) throws -> [Float] {
            let hidden = try LayerwiseForward(model: model).run(TokenBatch(sequences: [ids]))
            return try model.head().logits(Matrix(rows: 1, cols: hidden.cols, data: Array(hidden.data.suffix(hidden.cols)))).data
        }
        let a = try lastLogits(scaled), b = try lastLogits(raw)
        #expect(a.count == b.count && zip(a, b).allSatisfy { abs($0 * 8 - $1) <= 1e-5 * max(1, abs($1)) })
        #expect(zip(a, b).contains { abs($0 - $1) > 0.1 })
    }
}

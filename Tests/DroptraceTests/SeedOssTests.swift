import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Seed-OSS's defaults as SeedOssConfig has them and the keys its
/// transformers classes read; the scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`).
@Suite struct SeedOssTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("seed_oss-f32", "rms_norm_eps", "0"),
        Mutant("seed_oss-f32", "head_dim", "0"),
        Mutant("seed_oss-f32", "attention_out_bias", "\"yes\""),
        // SeedOssAttention and SeedOssMLP call dropout with it even in inference.
        Mutant("seed_oss-f32", "residual_dropout", "1.5"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Without the switches q/k/v have biases (`attention_bias` true),
    /// o_proj and the MLP none (`attention_out_bias`, `mlp_bias` false); an
    /// o_proj bias is read when `attention_out_bias` asks for one.
    @Test func biasesFollowSeedOssConfigsSwitches() throws {
        #expect(try blockZeroBiases(EditedFixture("seed_oss-f32")) == (true, false, true))
        let defaults = try EditedFixture("seed_oss-f32") {
            $0["attention_bias"] = nil
            $0["attention_out_bias"] = nil
            $0["mlp_bias"] = nil
        }
        #expect(try blockZeroBiases(defaults) == (true, false, false))
        #expect(try blockZeroBiases(EditedFixture("seed_oss-f32") { $0["attention_bias"] = false }) == (false, false, true))
        let error = #expect(throws: DroptraceError.self) {
            try EditedFixture("seed_oss-f32") { $0["attention_out_bias"] = true }.load().block(0)
        }
        #expect(error?.message.contains("o_proj.bias") == true, "\(String(describing: error))")
    }

    /// Without `head_dim` a head is 128 wide (which the fixture's 12-wide
    /// projections contradict); a null one is hidden_size /
    /// num_attention_heads; the head is untied unless config.json ties it.
    @Test func headWidthAndHeadDefaultAsSeedOssConfigs() throws {
        let error = #expect(throws: DroptraceError.self) { try EditedFixture("seed_oss-f32") { $0["head_dim"] = nil }.load() }
        #expect(error?.message.contains("head_dim") == true, "\(String(describing: error))")
        let null = try EditedFixture("seed_oss-f32") { $0["head_dim"] = NSNull() }.load()
        #expect(try null.block(0).attention?.attention.layout.headDim == 48 / 4)
        let untied = try EditedFixture("seed_oss-f32") { $0["tie_word_embeddings"] = nil }.load()
        #expect(try untied.head().vocabularySize == 512)
    }
}

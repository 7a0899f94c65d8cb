@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// HyperCLOVA X SEED (`hyperclovax`): Granite's multipliers (the logits
/// multiplied) and Peri-LN output norms, with HyperCLOVAXConfig's defaults
/// and refusals. The scores themselves are checked against transformers
/// with every other family (`DropTests` and the reference suites).
@Suite struct HyperCLOVAXTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "hyperclovax-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "embedding_multiplier", "null"), Mutant(name, "residual_multiplier", "1e39"),
        Mutant(name, "attention_multiplier", "1e39"), Mutant(name, "logits_scaling", "null"),
        Mutant(name, "use_post_norm", "1"), Mutant(name, "rms_norm_eps", "0"),
        Mutant(name, "head_dim", "16"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Each branch ends at its own output norm, then × 0.3; the softmax
    /// scale is 0.2; the head multiplies the logits by 0.5.
    @Test func layersAsHyperCLOVAXBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        let block = try model.block(0)
        let attention = try #require(block.attention)
        let mlp = try #require(block.mlp)
        #expect(attention.outputNorm != nil && mlp.outputNorm != nil)
        #expect(attention.outputScale == 0.3 && mlp.outputScale == 0.3)
        #expect(attention.attention?.scale == 0.2)
        #expect(try model.head().logitScale == 0.5)
    }

    /// What config.json leaves out takes HyperCLOVAXConfig's defaults:
    /// Peri-LN on; a null or absent attention_multiplier is 1/√head_dim;
    /// without Peri-LN the output norms are not read.
    @Test func omittedKeysTakeHyperCLOVAXConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["use_post_norm"] = nil }.attentionScores() == base)
        let unscaled = try EditedFixture(Self.name) { $0["attention_multiplier"] = nil }
        let null = try EditedFixture(Self.name) { $0["attention_multiplier"] = NSNull() }
        #expect(try unscaled.load().block(0).attention?.attention?.scale == 1 / Float(12).squareRoot())
        #expect(try null.attentionScores() == unscaled.attentionScores())
        let plain = try EditedFixture(Self.name) { $0["use_post_norm"] = false }
        #expect(try plain.load().block(0).attention?.outputNorm == nil)
        #expect(try plain.attentionScores() != base)
    }
}

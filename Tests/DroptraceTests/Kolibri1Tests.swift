@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Kolibri-1 (`kolibri1`): sandwich blocks, NoPE full layers, routing by
/// biased logits weighted by sigmoids, Kolibri1Config's defaults and
/// refusals, and the saved tensor names. The scores themselves are checked
/// against transformers with every other family (`DropTests` and the
/// reference suites).
@Suite struct Kolibri1Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "kolibri1-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "num_local_experts", "9"), Mutant(name, "num_experts_per_tok", "9"),
        Mutant(name, "moe_intermediate_size", "0"), Mutant(name, "shared_expert_intermediate_size", "0"),
        Mutant(name, "layer_types", "[\"full_attention\"]"), Mutant(name, "head_dim", "12"),
        Mutant(name, "norm_topk_prob", "1"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Sliding layers rotate within 8 tokens, full layers (1 and 4) have no
    /// rotary; each branch ends at its own norm; the router ranks biased
    /// logits and weighs by sigmoids, renormalised.
    @Test func layersAsKolibri1Builds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<5 {
            let block = try model.block(index)
            let attention = try #require(block.attention?.attention)
            let full = [1, 4].contains(index)
            #expect((attention.rotary == nil) == full && attention.slidingWindow == (full ? nil : 8))
            #expect(block.attention?.outputNorm != nil && block.mlp?.outputNorm != nil)
            guard case .mixture(let mixture)? = block.mlp?.feedForward, case .groupLimited(let routing) = mixture.rule else {
                Issue.record("not Kolibri-1's mixture")
                return
            }
            #expect(routing.scoring == .sigmoidRankedByLogits && routing.selectionBias != nil && routing.normalizesWeights)
            #expect(mixture.sharedExperts.count == 1 && mixture.experts.count == 8)
        }
    }

    /// Without a window every layer rotates (sliding layers then refused, as
    /// Kolibri1Config refuses them); without layer_types only every fifth
    /// layer is full; absent expert keys take Kolibri1Config's values, which
    /// the fixture's tensors refuse.
    @Test func omittedKeysTakeKolibri1ConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let unwindowed = try EditedFixture(Self.name) {
            $0["sliding_window"] = NSNull()
            $0["layer_types"] = Array(repeating: "full_attention", count: 5)
        }.load()
        #expect(try (0..<5).allSatisfy { try unwindowed.block($0).attention?.attention?.rotary != nil })
        try EditedFixture(Self.name) { $0["sliding_window"] = NSNull() }.expectRefused(naming: "sliding_window")
        let ruled = try EditedFixture(Self.name) { $0["layer_types"] = nil }
        #expect(try ruled.load().block(1).attention?.attention?.slidingWindow == 8)
        #expect(try ruled.attentionScores() != base)
        try EditedFixture(Self.name) { $0["num_local_experts"] = nil }.expectRefused(naming: "num_experts")
    }

    /// The fixture holds the names transformers saves; the correction bias
    /// under both its names is refused.
    @Test func bothNamesOfTheCorrectionBiasAreRefused() throws {
        let fixture = try EditedFixture(Self.name)
        #expect(try Checkpoint(directory: fixture.model).hasTensor("model.layers.0.moe.router.expert_bias"))
        try BadInputTests().rewriteWeights(fixture.model) { entries in
            var copy = entries.first { $0.name == "model.layers.0.moe.router.expert_bias" }!
            copy.name = "model.layers.0.mlp.gate.e_score_correction_bias"
            entries.append(copy)
        }
        #expect(throws: DroptraceError.self) { _ = try fixture.load().block(0) }
    }
}

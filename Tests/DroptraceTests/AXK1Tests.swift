@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// A.X K1 (`axk1`): glm4_moe_lite's layout with AXK1Config's defaults and
/// the routed MLPs' output norm. The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct AXK1Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "axk1-f32"

    static let mutants: [Mutant] = [
        // AXK1Attention always builds the low-rank query path.
        Mutant(name, "q_lora_rank", "null"),
        Mutant(name, "n_group", "3"), Mutant(name, "num_experts_per_tok", "9"),
        Mutant(name, "mlp_layer_types", "[\"dense\", \"routed\", \"sparse\", \"sparse\"]"),
        Mutant(name, "kv_lora_rank", "12"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Routed layers end at their output norm; the dense layer 0 has none.
    @Test func routedMLPsEndAtTheirNorm() throws {
        let model = try EditedFixture(Self.name).load()
        guard case .gated? = try model.block(0).mlp?.feedForward else {
            Issue.record("layer 0 is not dense")
            return
        }
        guard case .parallel(let parts)? = try model.block(1).mlp?.feedForward, let part = parts.first,
              case .mixture = part.feedForward else {
            Issue.record("layer 1 is not a normalised mixture")
            return
        }
        #expect(parts.count == 1 && part.outputNorm != nil && part.inputNorm == nil)
    }

    /// Without mlp_layer_types the legacy keys decide (first_k_dense_replace
    /// 1, moe_layer_freq 1: the fixture's types); a frequency of 2 makes
    /// layers 1 and 3 dense, which the fixture's tensors refuse; 0 is refused.
    @Test func legacyKeysGiveTheMLPTypes() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["mlp_layer_types"] = nil }.attentionScores() == base)
        let everyOther = try EditedFixture(Self.name) { $0["mlp_layer_types"] = nil; $0["moe_layer_freq"] = 2 }.load()
        #expect(throws: DroptraceError.self) { _ = try everyOther.block(1) }
        try EditedFixture(Self.name) { $0["mlp_layer_types"] = nil; $0["moe_layer_freq"] = 0 }.expectRefused(naming: "moe_layer_freq")
        // AXK1Config sets head_dim to qk_rope_head_dim: a written one is not read.
        #expect(try EditedFixture(Self.name) { $0["head_dim"] = 99 }.attentionScores() == base)
    }
}

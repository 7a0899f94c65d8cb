import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Qwen3-Next: its mixture-of-experts keys as Qwen3NextConfig reads them,
/// the fused linear-attention projections and the sparse and dense layers;
/// the scores themselves are checked against transformers with every other
/// family, and key/value-cache decoding against the batched forward.
@Suite struct Qwen3NextTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("qwen3_next-f32", "num_experts", "-1"),
        Mutant("qwen3_next-f32", "num_experts_per_tok", "5"),
        Mutant("qwen3_next-f32", "decoder_sparse_step", "0"),
        Mutant("qwen3_next-f32", "moe_intermediate_size", "0"),
        Mutant("qwen3_next-f32", "linear_num_key_heads", "null"),
        Mutant("qwen3_next-f32", "linear_num_value_heads", "3"),
        Mutant("qwen3_next-f32", "layer_types", "[\"full_attention\"]"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score of the fixture, JSONL and text calibration, close to transformers'.
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers("qwen3_next-f32")
    }

    /// Sparse layers route over the experts with a gated shared expert;
    /// `mlp_only_layers` are dense; linear layers are Gated DeltaNets.
    @Test func layersAsQwen3NextBuildsThem() throws {
        let model = try EditedFixture("qwen3_next-f32").load()
        guard case .mixture(let moe)? = try model.block(0).mlp?.feedForward else {
            Issue.record("layer 0 is not sparse")
            return
        }
        #expect(moe.experts.count == 4 && moe.expertsPerToken == 2 && moe.sharedExpertGate != nil)
        guard case .gated? = try model.block(1).mlp?.feedForward else {
            Issue.record("layer 1 is not dense")
            return
        }
        guard case .gatedDeltaNet? = try model.block(2).attention?.mixer else {
            Issue.record("layer 2 is not linear attention")
            return
        }
    }
}

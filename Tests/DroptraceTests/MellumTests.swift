@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Mellum (`mellum`): qwen3_moe's block with per-type windows and rotary
/// bases and dense or routed MLPs by `mlp_layer_types`, MellumConfig's
/// defaults and refusals. The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct MellumTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "mellum-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "mlp_layer_types", "[\"dense\", \"sparse\"]"),
        Mutant(name, "mlp_layer_types", "[\"dense\", \"moe\", \"sparse\", \"sparse\"]"),
        Mutant(name, "sliding_window", "null"), Mutant(name, "num_local_experts", "9"),
        // MellumRotaryEmbedding reads each layer type's entry, and rope_theta in it.
        Mutant(name, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 10000.0}", key: "rope_parameters.full_attention"),
        Mutant(name, "rope_parameters.sliding_attention.rope_theta", "null", key: "rope_parameters.sliding_attention.rope_theta"),
        Mutant(name, "rope_parameters.full_attention.partial_rotary_factor", "0.5", key: "partial_rotary_factor"),
        Mutant(name, "head_dim", "12"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers 0 and 2 slide within 8 tokens at base 1e4, 1 and 3 attend
    /// fully at 5e5; layer 0's MLP is dense, the others routed.
    @Test func layersAsMellumBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            let attention = try #require(block.attention?.attention)
            let sliding = index % 2 == 0
            #expect(attention.slidingWindow == (sliding ? 8 : nil) && attention.layout.headDim == 16)
            let frequency = try #require(attention.rotary?.inverseFrequencies[1])
            #expect(abs(Double(frequency) / (1 / pow(sliding ? 10_000.0 : 500_000.0, 2.0 / 16)) - 1) < 1e-6)
            guard case .mixture? = block.mlp?.feedForward else {
                #expect(index == 0)
                continue
            }
            #expect(index > 0)
        }
    }

    /// What config.json leaves out takes MellumConfig's values: its rope
    /// parameters (the fixture's), heads of 128 (which the tensors refuse),
    /// every MLP routed (layer 0 has no router: refused).
    @Test func omittedKeysTakeMellumConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["rope_parameters"] = nil }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["rope_parameters"] = NSNull() }.attentionScores() == base)
        try EditedFixture(Self.name) { $0["head_dim"] = nil }.expectRefused(naming: "head_dim")
        #expect(throws: DroptraceError.self) { _ = try EditedFixture(Self.name) { $0["mlp_layer_types"] = nil }.load() }
    }

    /// MellumConfig has no decoder_sparse_step or mlp_only_layers: its model
    /// never reads them, whatever they hold.
    @Test func keysMellumConfigDoesNotHaveAreNotRead() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) {
            $0["decoder_sparse_step"] = "x"
            $0["mlp_only_layers"] = [0, 1, 2, 3]
        }.attentionScores() == base)
    }
}

@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Nemotron-4 and Minitron (`nemotron`): LayerNorm1P norms, half-rotated
/// heads of their own width and a ReLU² MLP, with NemotronConfig's
/// defaults and refusals. The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct NemotronTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "nemotron-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "norm_eps", "0"), Mutant(name, "norm_eps", "-1e-5"),
        // NemotronAttention divides by num_key_value_heads: null cannot build it.
        Mutant(name, "num_key_value_heads", "null"), Mutant(name, "num_key_value_heads", "3"),
        Mutant(name, "rope_parameters.partial_rotary_factor", "1.5", key: "partial_rotary_factor"),
        Mutant(name, "rope_parameters.partial_rotary_factor", "null", key: "partial_rotary_factor"),
        Mutant(name, "hidden_act", "\"swish2\""),
        // A head width the tensors contradict.
        Mutant(name, "head_dim", "12"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Norms scale by 1 + the stored weight and add their bias; each head of
    /// head_dim 16 (not hidden_size / heads, 12) rotates its first 8
    /// dimensions; the MLP is down(relu(up x)²).
    @Test func layersAsNemotronBuilds() throws {
        let fixture = try EditedFixture(Self.name)
        let model = try fixture.load()
        let block = try model.block(0)
        let stored = try Checkpoint(directory: fixture.model).storedTensor("model.layers.0.input_layernorm.weight").floats()
        guard case .layer(let weight, let bias, _)? = block.attention?.inputNorm else {
            Issue.record("not a LayerNorm")
            return
        }
        #expect(weight == stored.map { 1 + $0 } && bias.count == 48)
        let attention = try #require(block.attention?.attention)
        #expect(attention.layout.headDim == 16 && attention.layout.numKVHeads == 2 && attention.rotary?.rotaryDim == 8)
        guard case .plain(_, _, let activation)? = block.mlp?.feedForward else {
            Issue.record("not a non-gated MLP")
            return
        }
        #expect(activation == .reluSquared)
    }

    /// What config.json leaves out takes NemotronConfig's defaults: half of
    /// each head rotates; heads hidden_size / num_attention_heads wide; a
    /// key/value head count, which the class leaves None, must be given.
    @Test func omittedKeysTakeNemotronConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let rope = try EditedFixture(Self.name) { $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 10000.0] }
        #expect(try rope.attentionScores() == base)
        let unsized = try EditedFixture(Self.name) { $0["head_dim"] = nil }
        #expect(throws: DroptraceError.self) { _ = try unsized.load() }
        try EditedFixture(Self.name) { $0["num_key_value_heads"] = nil }.expectRefused(naming: "num_key_value_heads")
    }
}

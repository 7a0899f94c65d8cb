import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Jais 2: arcee's model with LayerNorms and Jais2Config's defaults (biases
/// on); the scores themselves are checked against transformers with every
/// other family (`ScoringReferenceTests`).
@Suite struct Jais2Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("jais2-f32", "layer_norm_eps", "0.0"),
        Mutant("jais2-f32", "layer_norm_eps", "null"),
        Mutant("jais2-f32", "mlp_bias", "\"yes\""),
        Mutant("jais2-f32", "head_dim", "0"),
        // Jais2Config's validate_architecture: heads must split hidden_size.
        Mutant("jais2-f32", "num_attention_heads", "5"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every norm is a LayerNorm with its bias, epsilon layer_norm_eps (an
    /// rms_norm_eps is not read); without attention_bias and mlp_bias the
    /// biases are on, as Jais2Config has them; the MLP is arcee's.
    @Test func blockAsJais2Builds() throws {
        let model = try EditedFixture("jais2-f32") {
            $0["attention_bias"] = nil
            $0["mlp_bias"] = nil
            $0["layer_norm_eps"] = 1e-3
            $0["rms_norm_eps"] = 0.5
        }.load()
        let block = try model.block(0)
        guard case .layer(_, _, let eps)? = block.attention?.inputNorm, case .layer? = block.mlp?.inputNorm,
              case .layer? = try model.head().norm,
              case .fused(let qkv)? = block.attention?.attention.projection,
              case .plain(let up, let down, let activation)? = block.mlp?.feedForward
        else {
            Issue.record("not LayerNorms around a fused attention and a plain MLP")
            return
        }
        #expect(eps == Float(1e-3))
        #expect(qkv.bias != nil && block.attention?.attention.output.bias != nil && up.bias != nil && down.bias != nil)
        #expect(activation == .reluSquared)
        let unbiased = try EditedFixture("jais2-f32") {
            $0["attention_bias"] = false
            $0["mlp_bias"] = false
        }
        #expect(try blockZeroBiasesOfPlainMLP(unbiased) == (false, false, false))
    }

    func blockZeroBiasesOfPlainMLP(_ fixture: EditedFixture) throws -> (Bool, Bool, Bool) {
        let block = try fixture.load().block(0)
        guard case .fused(let qkv)? = block.attention?.attention.projection, let output = block.attention?.attention.output,
              case .plain(_, let down, _)? = block.mlp?.feedForward
        else { return (true, true, true) }
        return (qkv.bias != nil, output.bias != nil, down.bias != nil)
    }
}

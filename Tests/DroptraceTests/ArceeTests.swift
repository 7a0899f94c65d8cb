import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Arcee's defaults as ArceeConfig has them and the keys its transformers
/// classes read; the scores themselves are checked against transformers
/// with every other family (`ScoringReferenceTests`).
@Suite struct ArceeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("arcee-f32", "rms_norm_eps", "0"),
        Mutant("arcee-f32", "mlp_bias", "\"yes\""),
        Mutant("arcee-f32", "head_dim", "0"),
        // ArceeConfig's validate_architecture: heads must split hidden_size, whatever head_dim says.
        Mutant("arcee-f32", "num_attention_heads", "5"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The MLP of block 0: whether it is plain (no gate), its activation, and
    /// the bias vectors of q/k/v, o_proj and down_proj.
    func parts(_ fixture: EditedFixture) throws -> (plain: Activation?, qkv: Bool, output: Bool, mlp: Bool) {
        let block = try fixture.load().block(0)
        guard case .fused(let qkv)? = block.attention?.attention.projection, let output = block.attention?.attention.output,
              case .plain(_, let down, let activation)? = block.mlp?.feedForward
        else {
            Issue.record("not a fused q/k/v attention with a plain MLP")
            return (nil, false, false, false)
        }
        return (activation, qkv.bias != nil, output.bias != nil, down.bias != nil)
    }

    /// A non-gated ReLU² MLP unless `hidden_act` says otherwise; biases on
    /// all four attention projections by `attention_bias` and on the MLP by
    /// `mlp_bias`, none without them.
    @Test func plainReluSquaredMLPAndBiasesAsArceeConfigs() throws {
        let fixture = try parts(EditedFixture("arcee-f32"))
        #expect(fixture.plain == .reluSquared && fixture.qkv && fixture.output && fixture.mlp)
        let defaults = try parts(EditedFixture("arcee-f32") {
            $0["hidden_act"] = nil
            $0["attention_bias"] = nil
            $0["mlp_bias"] = nil
        })
        #expect(defaults.plain == .reluSquared && !defaults.qkv && !defaults.output && !defaults.mlp)
        #expect(try parts(EditedFixture("arcee-f32") { $0["hidden_act"] = "silu" }).plain == .silu)
    }

    /// Without `head_dim` a head is hidden_size / num_attention_heads wide;
    /// the head is untied unless config.json ties it.
    @Test func headWidthAndHeadDefaultAsArceeConfigs() throws {
        let model = try EditedFixture("arcee-f32") {
            $0["head_dim"] = nil
            $0["tie_word_embeddings"] = nil
        }.load()
        #expect(try model.block(0).attention?.attention.layout.headDim == 48 / 4)
        #expect(try model.head().vocabularySize == 512)
    }
}

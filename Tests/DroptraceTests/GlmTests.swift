import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// GLM-4's defaults (half of each head rotates, q/k/v biases, 128-wide
/// heads) and glm4's branch output norms. The scores themselves are checked
/// against transformers with every other family (`ScoringReferenceTests`).
@Suite struct GlmTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("glm-f32", "rms_norm_eps", "0"),
        // Glm4Config types head_dim as int; GlmConfig lets null through, and its model cannot be built from it.
        Mutant("glm4-f32", "head_dim", "null"),
        Mutant("glm-f32", "head_dim", "null"),
        // 2 · ceil(13 / 2) = 14 rotated dimensions do not fit a 12-wide head.
        Mutant("glm4-f32", "rope_parameters.partial_rotary_factor", "1.1"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Without `partial_rotary_factor` half of each head rotates (GlmConfig's
    /// default); the fixture's odd width, int(12 · 0.75) = 9, rotates 10
    /// dimensions as transformers does.
    @Test func halfOfEachHeadRotatesByDefault() throws {
        #expect(try EditedFixture("glm4-f32").load().block(0).attention?.attention.rotary?.rotaryDim == 10)
        let defaulted = try EditedFixture("glm4-f32", rope: "partial_rotary_factor", nil).load()
        #expect(try defaulted.block(0).attention?.attention.rotary?.rotaryDim == 6)
    }

    /// Without `attention_bias` q/k/v have biases (GlmConfig's default true);
    /// without `head_dim` a head is 128 wide, which the fixture's 12-wide
    /// projections contradict.
    @Test func biasesAndHeadWidthDefaultAsGlmConfigs() throws {
        let model = try EditedFixture("glm-f32") { $0["attention_bias"] = nil }.load()
        guard case .fused(let qkv)? = try model.block(0).attention?.attention.projection else {
            Issue.record("no fused q/k/v projection")
            return
        }
        #expect(qkv.bias?.count == (4 + 2 + 2) * 16)
        let error = #expect(throws: DroptraceError.self) { try EditedFixture("glm-f32") { $0["head_dim"] = nil }.load() }
        #expect(error?.message.contains("q_proj") == true && error?.message.contains("head_dim") == true, "\(String(describing: error))")
    }

    /// glm4's branches end in their own RMSNorms, which go with the branch
    /// when it is dropped; glm's do not have them.
    @Test func glm4NormsEachBranchOutput() throws {
        let glm4 = try EditedFixture("glm4-f32").load()
        let block = try glm4.block(1)
        #expect(block.attention?.outputNorm != nil && block.mlp?.outputNorm != nil)
        #expect(glm4.layerNaming.attention.contains("post_self_attn_layernorm.") && glm4.layerNaming.mlp.contains("post_mlp_layernorm."))
        let glm = try EditedFixture("glm-f32").load()
        #expect(try glm.block(1).attention?.outputNorm == nil && glm.layerNaming.mlp == ["mlp.", "post_attention_layernorm."])
    }
}

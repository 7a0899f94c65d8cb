import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// VaultGemma: Gemma-2's model without the branches' output norms, with
/// Gemma2Config's defaults; the scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`).
@Suite struct VaultGemmaTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("vaultgemma-f32", "rms_norm_eps", "0.0"),
        Mutant("vaultgemma-f32", "query_pre_attn_scalar", "0"),
        Mutant("vaultgemma-f32", "attn_logit_softcapping", "-1.0"),
        Mutant("vaultgemma-f32", "sliding_window", "0"),
        Mutant("vaultgemma-f32", "layer_types", "[\"sliding_attention\"]"),
        Mutant("vaultgemma-f32", "head_dim", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Each branch has its input norm only; the layer naming owns no
    /// post-branch norm; Gemma-2's soft caps and windows stay.
    @Test func blockHasNoOutputNorms() throws {
        let model = try EditedFixture("vaultgemma-f32").load()
        #expect(model.modelType == "vaultgemma")
        let block = try model.block(0)
        #expect(block.attention?.inputNorm != nil && block.attention?.outputNorm == nil)
        #expect(block.mlp?.inputNorm != nil && block.mlp?.outputNorm == nil)
        #expect(block.attention?.attention.slidingWindow == 8 && block.attention?.attention.logitSoftcap == 2)
        #expect(try model.block(1).attention?.attention.slidingWindow == nil)
        #expect(model.layerNaming.attention == ["self_attn.", "input_layernorm."])
        #expect(model.layerNaming.mlp == ["mlp.", "pre_feedforward_layernorm."])
        #expect(try model.head().logitSoftcap == 8)

        let gemma2 = try EditedFixture("gemma2-f32").load()
        #expect(try gemma2.block(0).attention?.outputNorm != nil)
    }

    /// Without layer_types the even layers slide, as VaultGemmaConfig
    /// derives them; a block-drop export spells the kept layers' types out.
    @Test func defaultLayerTypesAndExport() throws {
        let model = try EditedFixture("vaultgemma-f32") { $0["layer_types"] = nil }.load()
        #expect(try (0..<4).map { try model.block($0).attention?.attention.slidingWindow } == [8, nil, 8, nil])
        let config = try EditedFixture("vaultgemma-f32").exportedConfig(droppingBlocks: [0])
        #expect(config["layer_types"] as? [String] == ["full_attention", "sliding_attention", "full_attention"])
        #expect(config["num_hidden_layers"] as? Int == 3)
    }
}

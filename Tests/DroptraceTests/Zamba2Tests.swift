import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Zamba2 (`zamba2`): Mamba-2 layers and hybrid layers running one of
/// `num_mem_blocks` shared transformer blocks (reading the stream with the
/// embeddings, with per-invocation LoRA adapters, then the layer's
/// `linear`) before their Mamba-2 mixer. The scores themselves are checked
/// against transformers with every other family (`zamba2-f32`: one block at
/// hybrid layers 1 and 3; `zamba2_blocks-f32`: two blocks at 1, 2 and 4).
@Suite struct Zamba2Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "zamba2-f32"
    static let blocks = "zamba2_blocks-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "n_mamba_heads", "3"),
        Mutant(name, "n_mamba_heads", "null"),
        Mutant(name, "mamba_ngroups", "3"),
        Mutant(name, "mamba_d_conv", "0"),
        Mutant(name, "mamba_expand", "-1"),
        Mutant(name, "num_mem_blocks", "0"),
        Mutant(name, "num_hidden_layers", "5"),
        Mutant(name, "layers_block_type", "[\"linear_attention\", \"hybrid\", \"full_attention\", \"hybrid\"]"),
        Mutant(name, "layers_block_type", "[]"),
        Mutant(name, "adapter_rank", "-1"),
        // Zamba2Config keeps a written list, and the hybrid layers take the adapters of their places in it.
        Mutant(name, "hybrid_layer_ids", "[3, 1]"),
        Mutant(name, "hybrid_layer_ids", "[1]"),
        Mutant(name, "hybrid_layer_ids", "null"),
        Mutant(name, "rms_norm_eps", "0"),
        Mutant(name, "hidden_act", "\"nope\""),
        // The key adapters' 2 × hidden_size outputs cannot be added to one key/value head.
        Mutant(blocks, "use_shared_attention_adapter", "true"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Mamba layers hold their mixer as their one module; hybrid layers the
    /// shared block (reading [x | x₀]) as their attention and the Mamba-2
    /// mixer after it as their MLP module, Δ clamped below at time_step_min.
    @Test func layersFollowLayersBlockType() throws {
        let model = try EditedFixture(Self.blocks).load()
        #expect(model.absentModules == DropPlan(mlp: [0, 3]))
        for index in [0, 3] {
            let block = try model.block(index)
            guard case .mamba2(let mixer)? = block.attention?.mixer else {
                Issue.record("layer \(index) is not a Mamba layer")
                continue
            }
            #expect(mixer.heads == Mamba2Heads(heads: 4, headDim: 16, groups: 1, stateSize: 8, convolutionKernel: 4))
            #expect(mixer.timeStepLimit.lower == 1 && mixer.timeStepLimit.upper == .infinity)
            #expect(block.mixerAfterAttention == nil && !block.attentionFeedsMixer)
        }
        for index in [1, 2, 4] {
            let block = try model.block(index)
            let shared = try #require(block.attention)
            #expect(shared.appendsLayerInput && shared.feedForward != nil)
            #expect(shared.attention?.layout.numHeads == 2 && shared.attention?.layout.numKVHeads == 1)
            #expect(shared.attention?.layout.headDim == 32 && shared.attention?.rotary == nil)
            #expect(block.attentionFeedsMixer)
            guard case .mamba2? = block.mixerAfterAttention?.mixer else {
                Issue.record("layer \(index) has no Mamba-2 mixer after its shared block")
                continue
            }
        }
        #expect(model.perLayerEmbedding != nil)
        // The one-block fixture rotates its heads (use_mem_rope).
        #expect(try EditedFixture(Self.name).load().block(1).attention?.attention?.rotary != nil)
    }

    /// A layer list that contradicts the weights names its key.
    @Test func layerListContradictingTheWeightsIsRefused() throws {
        try EditedFixture(Self.name) { $0["layers_block_type"] = ["hybrid", "hybrid", "linear_attention", "hybrid"] }
            .expectRefused(naming: "layers_block_type")
        // The attribute map's alias is read too, and the legacy name "mamba".
        let legacy = try EditedFixture(Self.name) {
            $0["layers_block_type"] = nil
            $0["layer_types"] = ["mamba", "hybrid", "mamba", "hybrid"]
        }
        #expect(try legacy.load().layerCount == 4)
    }

    /// The hybrid layers' list written as Zamba2Config derives it is
    /// accepted; adapters stored for another rank than `adapter_rank` (0
    /// included) are refused, as transformers' shape check refuses them.
    @Test func adaptersFollowTheirRank() throws {
        #expect(try EditedFixture(Self.name) { $0["hybrid_layer_ids"] = [1, 3] }.load().layerCount == 4)
        for rank in [0, 2] {
            let fixture = try EditedFixture(Self.name) { $0["adapter_rank"] = rank }
            #expect(throws: DroptraceError.self) { try fixture.attentionScores() }
        }
    }

    /// Block-drop exports remove Mamba layers and the last hybrid layers
    /// (the layer list renumbered); removing a hybrid layer before a kept
    /// one, or a module of one, is refused: transformers would give the
    /// later hybrid layers other blocks' or adapters' weights.
    @Test func exportsRemoveMambaLayersOnly() throws {
        let fixture = try EditedFixture(Self.blocks)
        let exported = try fixture.exportedConfig(droppingBlocks: [3])
        #expect((exported["layers_block_type"] as? [String]) == ["linear_attention", "hybrid", "hybrid", "hybrid"])
        #expect((exported["num_hidden_layers"] as? Int) == 4)
        let model = try fixture.load()
        #expect(model.exportProblem(DropPlan(blocks: [0, 3])) == nil)
        // A Mamba layer's mixer is the whole layer.
        #expect(model.exportProblem(DropPlan(attention: [0])) == nil)
        #expect(model.exportProblem(DropPlan(blocks: [2]))?.contains("hybrid layer 2") == true)
        // The last hybrid layers move none that is kept: hybrid_layer_ids is renumbered with the list.
        #expect(model.exportProblem(DropPlan(blocks: [4])) == nil && model.exportProblem(DropPlan(blocks: [2, 4])) == nil)
        let lastRemoved = try EditedFixture(Self.blocks).exportedConfig(droppingBlocks: [4])
        #expect((lastRemoved["hybrid_layer_ids"] as? [Int]) == [1, 2])
        #expect(model.exportProblem(DropPlan(attention: [2]))?.contains("drop_attn_list") == true)
        #expect(model.exportProblem(DropPlan(mlp: [1]))?.contains("drop_attn_list") == true)
    }
}

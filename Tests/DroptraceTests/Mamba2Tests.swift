import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Mamba-2 (`mamba2`): a stack of x + mixer(norm(x)) blocks whose mixer is
/// Mamba-2 (heads sharing B and C in groups, Δ clamped to
/// `time_step_limit`, the gated RMSNorm per group). The fixture's scores
/// are checked against transformers with every other family; here: the
/// layers' one module, Mamba2Config's checks and the weights' refusals,
/// the export.
@Suite struct Mamba2Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "mamba2-f32"

    static let mutants: [Mutant] = [
        // transformers divides out_proj by √num_hidden_layers as it loads such a checkpoint.
        Mutant(name, "rescale_prenorm_residual", "true"),
        // Mamba2Config's validate_architecture: num_heads × head_dim = expand × hidden_size.
        Mutant(name, "num_heads", "4"),
        Mutant(name, "head_dim", "8"),
        Mutant(name, "expand", "1"),
        Mutant(name, "num_heads", "0"),
        Mutant(name, "head_dim", "9223372036854775807"),
        // n_groups must divide num_heads (the scan repeats B and C per group), and the weights give it.
        Mutant(name, "n_groups", "4"),
        Mutant(name, "n_groups", "1"),
        Mutant(name, "n_groups", "0"),
        Mutant(name, "state_size", "4"),
        Mutant(name, "state_size", "null"),
        Mutant(name, "conv_kernel", "3"),
        Mutant(name, "conv_kernel", "0"),
        Mutant(name, "chunk_size", "0"),
        Mutant(name, "time_step_limit", "null"),
        Mutant(name, "time_step_limit", "[0.0]"),
        Mutant(name, "time_step_limit", "[0.0, 1e39]"),
        Mutant(name, "time_step_rank", "\"big\""),
        Mutant(name, "layer_norm_epsilon", "0"),
        Mutant(name, "hidden_act", "\"x\""),
        Mutant(name, "expand", "2.0"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every layer is one Mamba-2 mixer of the fixture's sizes (6 heads of
    /// 16 in 2 groups) without an MLP, Δ clamped to [0.2, 1.0], the gated
    /// norm after the gate; intermediate_size, which Mamba2Mixer does not
    /// read, changes nothing.
    @Test func everyLayerIsOneMixer() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.absentModules == DropPlan(mlp: [0, 1, 2, 3]))
        for index in 0..<model.layerCount {
            let block = try model.block(index)
            #expect(block.mlp == nil)
            guard case .mamba2(let mixer)? = block.attention?.mixer else {
                Issue.record("layer \(index) is not a Mamba-2 layer")
                continue
            }
            #expect(mixer.heads == Mamba2Heads(heads: 6, headDim: 16, groups: 2, stateSize: 8, convolutionKernel: 4))
            #expect(mixer.timeStepLimit.lower == 0.2 && mixer.timeStepLimit.upper == 1.0)
            #expect(mixer.norm != nil && !mixer.normalisesBeforeGate && mixer.convolutionBias != nil)
            #expect(mixer.projection.bias == nil && mixer.output.bias == nil)
        }
        let scores = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["intermediate_size"] = 7 }.attentionScores() == scores)
        // Mamba-Codestral's norm_before_gate and rms_norm are not read by transformers either.
        #expect(try EditedFixture(Self.name) { $0["norm_before_gate"] = true; $0["rms_norm"] = false }.attentionScores() == scores)
        // Mamba2Config's default time_step_limit (0, ∞) when config.json omits it.
        let unclamped = try EditedFixture(Self.name) { $0["time_step_limit"] = nil }.load()
        guard case .mamba2(let mixer)? = try unclamped.block(0).attention?.mixer else {
            Issue.record("layer 0 is not a Mamba-2 layer")
            return
        }
        #expect(mixer.timeStepLimit.lower == 0 && mixer.timeStepLimit.upper == .infinity)
    }

    /// Biases the config switches on must be stored: a missing one is
    /// refused naming the tensor when the layer is read.
    @Test func missingBiasesAreRefused() throws {
        let error = #expect(throws: DroptraceError.self) { try EditedFixture(Self.name) { $0["use_bias"] = true }.load().block(0) }
        #expect(error?.message.contains("in_proj.bias") == true, "\(String(describing: error))")
    }

    /// A block-drop export removes the layers and loads as the model
    /// without them; a drop of a layer's mixer is the drop of the layer.
    @Test func exportRemovesTheLayers() throws {
        let edited = try EditedFixture(Self.name)
        #expect(try edited.load().exportedPlan(DropPlan(attention: [3])) == DropPlan(blocks: [3]))
        let config = try edited.exportedConfig(droppingBlocks: [0])
        #expect((config["num_hidden_layers"] as? Int) == 3)
        #expect(config[DropPlan.attentionKey] == nil && config[DropPlan.mlpKey] == nil)
        #expect(try ModelRegistry.load(try Checkpoint(directory: edited.scratch.path("export"))).layerCount == 3)
    }

    /// Prefill then one token at a time carries each layer's convolution
    /// and scan state, also with layers dropped.
    @Test func cachedDecodingMatchesTheForward() throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(Self.name)))
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12, plans: [.none, DropPlan(attention: [2]), DropPlan(blocks: [0, 3])], label: Self.name)
    }

    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.name)
    }
}

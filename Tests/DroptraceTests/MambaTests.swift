import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Mamba (`mamba`) and Falcon Mamba (`falcon_mamba`): stacks of
/// x + mixer(norm(x)) blocks whose mixer is Mamba-1, Falcon Mamba's with
/// weightless RMSNorms on dt, B and C. The fixtures' scores are checked
/// against transformers with every other family; here: the layers' one
/// module, the sizes config.json gives (intermediate_size over expand),
/// the refusals and the export.
@Suite struct MambaTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "mamba-f32"
    static let falconName = "falcon_mamba-f32"

    static let mutants: [Mutant] = [
        // transformers divides out_proj by √num_hidden_layers as it loads such a checkpoint.
        Mutant(name, "rescale_prenorm_residual", "true"), Mutant("falcon_mamba-f32", "rescale_prenorm_residual", "true"),
        Mutant(name, "state_size", "0"),
        Mutant(name, "state_size", "4"),
        Mutant(name, "state_size", "9223372036854775807"),
        Mutant(name, "conv_kernel", "0"),
        Mutant(name, "conv_kernel", "3"),
        Mutant(name, "intermediate_size", "64"),
        Mutant(name, "intermediate_size", "null"),
        Mutant(name, "intermediate_size", "9223372036854775807"),
        Mutant(name, "time_step_rank", "0"),
        Mutant(name, "time_step_rank", "4"),
        Mutant(name, "time_step_rank", "\"big\""),
        Mutant(name, "time_step_rank", "null"),
        Mutant(name, "time_step_rank", "9223372036854775807"),
        Mutant(name, "layer_norm_epsilon", "0"),
        Mutant(name, "expand", "2.5"),
        Mutant(name, "hidden_act", "\"x\""),
        Mutant(name, "hidden_size", "32"),
        Mutant(name, "num_hidden_layers", "5"),
        Mutant(falconName, "mixer_rms_eps", "0.0"),
        Mutant(falconName, "mixer_rms_eps", "1"),
        Mutant(falconName, "state_size", "16"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every layer is one Mamba-1 mixer (the attention module) without an
    /// MLP; Falcon Mamba's normalise dt, B and C with all-one weights and
    /// mixer_rms_eps, Mamba's have no such norms; the fixture's sizes (dt
    /// rank "auto": ⌈48 / 16⌉) and biases.
    @Test(arguments: [name, falconName])
    func everyLayerIsOneMixer(_ fixture: String) throws {
        let model = try EditedFixture(fixture).load()
        #expect(model.absentModules == DropPlan(mlp: [0, 1, 2, 3]))
        for index in 0..<model.layerCount {
            let block = try model.block(index)
            #expect(block.mlp == nil)
            guard case .mamba(let mixer)? = block.attention?.mixer else {
                Issue.record("layer \(index) is not a Mamba layer")
                continue
            }
            #expect(mixer.sizes == MambaSizes(innerWidth: 96, stateSize: 8, convolutionKernel: 4, timeStepRank: 3))
            #expect(mixer.convolutionBias != nil)
            #expect((mixer.projection.bias != nil) == (fixture == Self.name) && (mixer.output.bias != nil) == (fixture == Self.name))
            if fixture == Self.falconName {
                for norm in [mixer.timeStepNorm, mixer.inputNorm, mixer.outputNorm] {
                    guard case .rms(let weight, let eps)? = norm else {
                        Issue.record("layer \(index) lacks a weightless norm")
                        continue
                    }
                    #expect(weight.allSatisfy { $0 == 1 } && eps == Float(1e-6))
                }
            } else {
                #expect(mixer.timeStepNorm == nil && mixer.inputNorm == nil && mixer.outputNorm == nil)
            }
        }
    }

    /// MambaConfig keeps a written intermediate_size over expand ×
    /// hidden_size: expand then changes nothing; without intermediate_size,
    /// expand gives the width and a wrong one is refused naming it. A
    /// mixer_rms_eps in a Mamba config is not read (MambaConfig has none).
    @Test func intermediateSizeIsTheWidthWhereWritten() throws {
        let scores = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["expand"] = 3 }.attentionScores() == scores)
        #expect(try EditedFixture(Self.name) { $0["intermediate_size"] = nil }.attentionScores() == scores)
        #expect(try EditedFixture(Self.name) { $0["mixer_rms_eps"] = 0.0 }.attentionScores() == scores)
        try EditedFixture(Self.name) { $0["intermediate_size"] = nil; $0["expand"] = 3 }.expectRefused(naming: "expand")
        // Weights stored without the backbone. prefix (a base model) read alike.
        let bare = try EditedFixture(Self.name)
        try BadInputTests().renameWeights(bare.model, prefix: "backbone.", to: "")
        #expect(try bare.attentionScores() == scores)
    }

    /// The bias switches read as transformers reads them: biases the
    /// config switches off are not read (transformers leaves them
    /// unexpected), biases it switches on must be stored (a missing one is
    /// refused naming the tensor when the layer is read).
    @Test func biasSwitchesAsTransformersReadsThem() throws {
        let model = try EditedFixture(Self.name) { $0["use_bias"] = false; $0["use_conv_bias"] = false }.load()
        guard case .mamba(let mixer)? = try model.block(0).attention?.mixer else {
            Issue.record("layer 0 is not a Mamba layer")
            return
        }
        #expect(mixer.projection.bias == nil && mixer.output.bias == nil && mixer.convolutionBias == nil)
        let error = #expect(throws: DroptraceError.self) { try EditedFixture(Self.falconName) { $0["use_bias"] = true }.load().block(0) }
        #expect(error?.message.contains("in_proj.bias") == true, "\(String(describing: error))")
    }

    /// Falcon Mamba's norms change the numbers: the same weights read as
    /// Mamba score otherwise.
    @Test func falconMambasNormsAct() throws {
        let falcon = try EditedFixture(Self.falconName).attentionScores()
        let plain = try EditedFixture(Self.falconName) { $0["model_type"] = "mamba"; $0["architectures"] = ["MambaForCausalLM"] }
            .attentionScores()
        #expect(zip(falcon, plain).contains { abs($0 - $1) > 1e-4 })
    }

    /// A block-drop export removes the layers, num_hidden_layers counting
    /// the kept ones, and loads as the model without them; a drop of a
    /// layer's mixer is the drop of the layer.
    @Test(arguments: [name, falconName])
    func exportRemovesTheLayers(_ fixture: String) throws {
        let edited = try EditedFixture(fixture)
        let model = try edited.load()
        #expect(model.exportedPlan(DropPlan(attention: [1])) == DropPlan(blocks: [1]))
        let config = try edited.exportedConfig(droppingBlocks: [1, 2])
        #expect((config["num_hidden_layers"] as? Int) == 2)
        #expect(config[DropPlan.attentionKey] == nil && config[DropPlan.mlpKey] == nil)
        let reloaded = try ModelRegistry.load(try Checkpoint(directory: edited.scratch.path("export")))
        #expect(reloaded.layerCount == 2)
    }

    /// Prefill then one token at a time carries each layer's convolution
    /// and scan state, also with layers dropped.
    @Test(arguments: [name, falconName])
    func cachedDecodingMatchesTheForward(_ fixture: String) throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(fixture)))
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12, plans: [.none, DropPlan(attention: [0]), DropPlan(blocks: [1, 3])], label: fixture)
    }

    @Test(arguments: [name, falconName])
    func scoresMatchTransformersClosely(_ fixture: String) throws {
        try expectScoresMatchTransformers(fixture)
    }
}

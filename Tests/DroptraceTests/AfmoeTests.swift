@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// AFMoE (`afmoe`, Arcee Trinity): config refusals and AfmoeConfig's
/// defaults, the norms at both ends of each branch, the gated attention
/// rotating on its sliding layers only, the dense layers below
/// `num_dense_layers` and the sigmoid routing with the expert bias,
/// `route_scale` and shared experts on the others, muP's input scaling, and
/// what an export renumbers. The scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`, `DropTests`).
@Suite struct AfmoeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("afmoe-f32", "rms_norm_eps", "0"), Mutant("afmoe-f32", "num_dense_layers", "null"),
        Mutant("afmoe-f32", "num_experts", "0"), Mutant("afmoe-f32", "num_experts", "null"),
        Mutant("afmoe-f32", "num_experts", "4611686018427387904"),
        Mutant("afmoe-f32", "num_experts_per_tok", "0"), Mutant("afmoe-f32", "num_experts_per_tok", "9"),
        Mutant("afmoe-f32", "num_experts_per_tok", "null"),
        Mutant("afmoe-f32", "num_shared_experts", "-1"), Mutant("afmoe-f32", "num_shared_experts", "null"),
        Mutant("afmoe-f32", "moe_intermediate_size", "0"),
        Mutant("afmoe-f32", "route_scale", "null"), Mutant("afmoe-f32", "route_scale", "0.0"),
        Mutant("afmoe-f32", "route_scale", "-2.5"),
        Mutant("afmoe-f32", "sliding_window", "0"),
        // AfmoeModel builds a sliding-window mask for every model.
        Mutant("afmoe-f32", "sliding_window", "null"),
        // Sizes the tensors contradict.
        Mutant("afmoe-f32", "num_experts", "16"), Mutant("afmoe-f32", "moe_intermediate_size", "32"),
        Mutant("afmoe-f32", "num_shared_experts", "2"), Mutant("afmoe-f32", "head_dim", "16"),
        // AfmoeAttention reads head_dim with getattr: a null one cannot build it.
        Mutant("afmoe-f32", "head_dim", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every branch has its input and output RMSNorms; the attention has
    /// per-head q/k norms before rotary and an output gate, rotary and the
    /// window on the sliding layers only; layers below `num_dense_layers`
    /// have the dense MLP, the others route by sigmoid plus the stored
    /// expert bias, one group, renormalised and scaled by `route_scale`,
    /// with the shared expert.
    @Test func sandwichedGatedAttentionThenSigmoidExperts() throws {
        let model = try EditedFixture("afmoe-f32").load(), config = try FixtureFiles.config("afmoe-f32")
        let dense = config["num_dense_layers"] as! Int, types = config["layer_types"] as! [String]
        #expect(dense >= 1 && dense < model.layerCount)
        #expect(types.contains("sliding_attention") && types.contains("full_attention"))
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            let branch = try #require(block.attention), mlp = try #require(block.mlp)
            #expect(branch.inputNorm != nil && branch.outputNorm != nil && mlp.inputNorm != nil && mlp.outputNorm != nil)
            let attention = branch.attention!
            guard case .perHead? = attention.queryKeyNorm, case .fused(let qkv) = attention.projection else {
                Issue.record("layer \(layer): no per-head q/k norms")
                continue
            }
            #expect(!attention.queryKeyNormAfterRotary && qkv.bias == nil && attention.output.bias == nil)
            #expect(attention.outputGate?.outFeatures == attention.layout.queryWidth && attention.outputGate?.bias == nil)
            let sliding = types[layer] == "sliding_attention"
            #expect(attention.slidingWindow == (sliding ? config["sliding_window"] as? Int : nil))
            #expect((attention.rotary != nil) == sliding, "layer \(layer): only sliding layers rotate")
            let moe = try mlpMixture(model, layer: layer)
            guard layer >= dense else {
                #expect(moe == nil, "layer \(layer) is dense")
                continue
            }
            let rule = try #require(groupLimitedRule(moe), "layer \(layer) routes")
            #expect(moe?.experts.count == config["num_experts"] as? Int && moe?.expertsPerToken == config["num_experts_per_tok"] as? Int)
            #expect(moe?.sharedExperts.count == 1)
            #expect(rule.scoring == .sigmoid && rule.groups == 1 && rule.groupsPerToken == 1 && rule.normalizesWeights)
            #expect(Double(rule.scalingFactor) == config["route_scale"] as? Double)
            #expect(rule.selectionBias?.contains { $0 != 0 } == true, "the fixture's expert bias is not zero")
        }
    }

    /// `mup_enabled` scales the embeddings by √hidden_size.
    @Test func mupScalesTheEmbeddings() throws {
        let batch = TokenBatch(sequences: [[1, 2, 3]])
        let scaled = try EditedFixture("afmoe-f32").load().embed(batch)
        let plain = try EditedFixture("afmoe-f32") { $0["mup_enabled"] = false }.load().embed(batch)
        let factor = Float(Double(48).squareRoot())
        #expect(scaled.data == plain.data.map { $0 * factor })
        // A null flag is None, which the model's `if` reads as false; absent is AfmoeConfig's False.
        #expect(try EditedFixture("afmoe-f32") { $0["mup_enabled"] = NSNull() }.load().embed(batch).data == plain.data)
        #expect(try EditedFixture("afmoe-f32") { $0["mup_enabled"] = nil }.load().embed(batch).data == plain.data)
    }

    /// What config.json leaves out takes AfmoeConfig's defaults: one dense
    /// layer, route_scale 1, a window of 1024, no attention biases, every
    /// fourth layer full when `layer_types` is absent (every
    /// `global_attn_every_n_layers`-th otherwise), 6 experts per token, 64
    /// experts and 2 shared experts (which the fixture's tensors
    /// contradict), heads 128 wide (likewise).
    @Test func omittedKeysTakeAfmoeConfigDefaults() throws {
        let model = try EditedFixture("afmoe-f32") {
            for key in ["num_dense_layers", "route_scale", "attention_bias", "sliding_window"] { $0[key] = nil }
        }.load() as! AfmoeModel
        #expect(model.config.numDenseLayers == 1 && model.config.routeScale == 1)
        #expect(model.windows.compactMap { $0 }.allSatisfy { $0 == 1024 })
        let rule = try #require(groupLimitedRule(try mlpMixture(model, layer: model.layerCount - 1)))
        #expect(rule.scalingFactor == 1)
        let everyFourth = try EditedFixture("afmoe-f32") { $0["layer_types"] = nil; $0["global_attn_every_n_layers"] = nil }
            .load() as! AfmoeModel
        #expect(everyFourth.windows.map { $0 != nil } == [true, true, true, false])
        let everySecond = try EditedFixture("afmoe-f32") { $0["layer_types"] = nil }.load() as! AfmoeModel
        #expect(everySecond.layerTypes == (try FixtureFiles.config("afmoe-f32")["layer_types"] as! [String]))
        for value in [0, NSNull()] as [Any] {
            try EditedFixture("afmoe-f32") { $0["layer_types"] = nil; $0["global_attn_every_n_layers"] = value }
                .expectRefused(naming: "global_attn_every_n_layers")
        }
        for key in ["num_experts", "num_shared_experts", "head_dim"] {
            try EditedFixture("afmoe-f32") { $0[key] = nil }.expectRefused(naming: key)
        }
        let six = try EditedFixture("afmoe-f32") { $0["num_experts_per_tok"] = nil }.load()
        #expect(try mlpMixture(six, layer: six.layerCount - 1)?.expertsPerToken == 6)
    }

    /// Without a stored expert bias the router chooses by the sigmoids
    /// alone, as transformers' zero buffer does.
    @Test func absentExpertBiasIsZero() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("afmoe-f32")
        let original = try Checkpoint(directory: directory)
        let entries = try original.tensorNames.filter { !$0.hasSuffix("expert_bias") }.map { SafetensorsWriter.Entry(try original.tensor($0)) }
        try FileManager.default.removeItem(at: directory.appendingPathComponent(Checkpoint.singleFileName))
        try SafetensorsWriter.write(entries, to: directory.appendingPathComponent(Checkpoint.singleFileName))
        let model = try ModelRegistry.load(try Checkpoint(directory: directory))
        let rule = try #require(groupLimitedRule(try mlpMixture(model, layer: model.layerCount - 1)))
        #expect(rule.selectionBias == nil)
    }

    /// An export without the dense block renumbers `num_dense_layers` and
    /// keeps the kept layers' types, spelled out where config.json leaves
    /// them to `global_attn_every_n_layers`.
    @Test func blockDropRenumbersTheDenseLayersAndTypes() throws {
        let config = try EditedFixture("afmoe-f32").exportedConfig(droppingBlocks: [0])
        #expect((config["num_dense_layers"] as? NSNumber)?.intValue == 0)
        let types = try FixtureFiles.config("afmoe-f32")["layer_types"] as! [String]
        #expect(config["layer_types"] as? [String] == Array(types.dropFirst()))
        let ruled = try EditedFixture("afmoe-f32") { $0["layer_types"] = nil; $0["global_attn_every_n_layers"] = nil }
        let exported = try ruled.exportedConfig(droppingBlocks: [1])
        #expect(exported["layer_types"] as? [String] == ["sliding_attention", "sliding_attention", "full_attention"])
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("afmoe-f32", unordered: true)
    }

    /// Fused 3-D experts score exactly as the per-expert tensors `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike("afmoe-f32", router: "mlp.router.gate", fusedRouter: "mlp.router.gate")
    }
}

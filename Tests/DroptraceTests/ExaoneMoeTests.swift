@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// EXAONE MoE (`exaone_moe`): its config refusals and ExaoneMoeConfig's
/// defaults, EXAONE 4's attention in pre-norm blocks, the dense and routed
/// layers `mlp_layer_types` (or `first_k_dense_replace`) names, the
/// correction bias under either name, and the lists an export keeps. The
/// scores themselves are checked against transformers with every other
/// family (`DropTests` and the reference suites).
@Suite struct ExaoneMoeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("exaone_moe-f32", "rms_norm_eps", "0"),
        Mutant("exaone_moe-f32", "num_experts", "0"), Mutant("exaone_moe-f32", "num_experts", "4611686018427387904"),
        Mutant("exaone_moe-f32", "num_experts", "[8, 8]"),
        Mutant("exaone_moe-f32", "num_experts_per_tok", "0"), Mutant("exaone_moe-f32", "num_experts_per_tok", "9"),
        Mutant("exaone_moe-f32", "num_shared_experts", "-1"), Mutant("exaone_moe-f32", "moe_intermediate_size", "0"),
        Mutant("exaone_moe-f32", "routed_scaling_factor", "0"), Mutant("exaone_moe-f32", "routed_scaling_factor", "null"),
        Mutant("exaone_moe-f32", "n_group", "3"), Mutant("exaone_moe-f32", "n_group", "0"),
        // Groups of one expert cannot be scored by their best two.
        Mutant("exaone_moe-f32", "n_group", "8"),
        Mutant("exaone_moe-f32", "topk_group", "0"), Mutant("exaone_moe-f32", "topk_group", "5"),
        // Two kept groups of 2 experts cannot give each token 5.
        Mutant("exaone_moe-f32", "num_experts_per_tok", "5", key: "topk_group"),
        Mutant("exaone_moe-f32", "mlp_layer_types", "[\"dense\", \"moe\", \"sparse\", \"sparse\"]"),
        Mutant("exaone_moe-f32", "mlp_layer_types", "[\"dense\", \"sparse\"]"),
        Mutant("exaone_moe-f32", "first_k_dense_replace", "\"1\""),
        // ExaoneMoeConfig's window is an integer; its layer types only the two.
        Mutant("exaone_moe-f32", "sliding_window", "null"), Mutant("exaone_moe-f32", "sliding_window", "0"),
        Mutant("exaone_moe-f32", "layer_types", "[\"sliding_attention\", \"chunked_attention\", \"full_attention\", \"full_attention\"]"),
        // Sizes the tensors contradict.
        Mutant("exaone_moe-f32", "num_experts", "16"), Mutant("exaone_moe-f32", "moe_intermediate_size", "32"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The layers `mlp_layer_types` marks dense have the dense MLP; the
    /// others route as DeepSeek-V3 with the shared experts and the stored
    /// correction bias; blocks are pre-norm; sliding layers rotate within
    /// the window, the full layer attends without positions, and every
    /// layer normalises each query and key head.
    @Test func mlpLayerTypesChooseDenseAndSigmoidRoutedLayers() throws {
        let model = try EditedFixture("exaone_moe-f32").load()
        let config = try FixtureFiles.config("exaone_moe-f32")
        let types = config["mlp_layer_types"] as! [String], experts = config["num_experts"] as! Int
        let attentionTypes = config["layer_types"] as! [String]
        #expect(types == ["dense", "sparse", "sparse", "sparse"])
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            #expect(block.attention?.inputNorm != nil && block.attention?.outputNorm == nil)
            let attention = try #require(block.attention?.attention)
            guard case .perHead? = attention.queryKeyNorm else {
                Issue.record("layer \(layer) has no per-head q/k norms")
                continue
            }
            #expect(!attention.queryKeyNormAfterRotary)
            let slides = attentionTypes[layer] == "sliding_attention"
            #expect((attention.rotary != nil) == slides && (attention.slidingWindow == 8) == slides)
            let moe = try mlpMixture(model, layer: layer)
            guard types[layer] == "sparse" else {
                #expect(moe == nil, "layer \(layer) is dense")
                continue
            }
            let rule = try #require(groupLimitedRule(moe), "layer \(layer) routes")
            #expect(moe?.experts.count == experts && moe?.sharedExperts.count == 1)
            if case .gated(let gateUp, _, _)? = moe?.sharedExperts.first {
                // num_shared_experts 2 of moe_intermediate_size 16: one MLP of 32.
                #expect(gateUp.outFeatures == 2 * 32)
            }
            #expect(rule.scoring == .sigmoid && rule.groupScore == .sumOfBestTwo)
            #expect(rule.groups == config["n_group"] as? Int && rule.groupsPerToken == config["topk_group"] as? Int)
            #expect(rule.scalingFactor == Float(config["routed_scaling_factor"] as! Double))
            #expect(rule.selectionBias?.contains { $0 != 0 } == true, "the fixture's bias is not zero")
        }
    }

    /// What config.json leaves out takes ExaoneMoeConfig's defaults: the
    /// first `first_k_dense_replace` layers dense (1 by default), one group,
    /// routed_scaling_factor 2.5, renormalised weights.
    @Test func omittedKeysTakeExaoneMoeConfigDefaults() throws {
        let defaulted = try EditedFixture("exaone_moe-f32") {
            $0["mlp_layer_types"] = nil
            $0["first_k_dense_replace"] = nil
        }.load()
        #expect(defaulted.layerNaming.perLayerLists["mlp_layer_types"] == ["dense", "sparse", "sparse", "sparse"])
        let two = try EditedFixture("exaone_moe-f32") {
            $0["mlp_layer_types"] = nil
            $0["first_k_dense_replace"] = 2
        }.load()
        #expect(two.layerNaming.perLayerLists["mlp_layer_types"] == ["dense", "dense", "sparse", "sparse"])
        // The fixture's layer 1 is routed: as a dense layer its MLP is missing.
        #expect(throws: (any Error).self) { _ = try two.block(1) }
        let routed = try EditedFixture("exaone_moe-f32") {
            for key in ["n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob"] { $0[key] = nil }
        }.load()
        let rule = try #require(groupLimitedRule(try mlpMixture(routed, layer: 1)))
        #expect(rule.groups == 1 && rule.groupsPerToken == 1 && rule.scalingFactor == 2.5 && rule.normalizesWeights)
        // Without sliding_window_pattern every 4th layer is full: the fixture's own layout.
        let pattern = try EditedFixture("exaone_moe-f32") {
            $0["layer_types"] = nil
            $0["sliding_window_pattern"] = nil
        }.load()
        #expect(pattern.layerNaming.layerTypes == (try FixtureFiles.config("exaone_moe-f32")["layer_types"] as! [String]))
    }

    /// The correction bias is read under the name the checkpoints store
    /// (`mlp.e_score_correction_bias`) or the router's own; both at once are refused.
    @Test func correctionBiasUnderEitherName() throws {
        let base = try EditedFixture("exaone_moe-f32").attentionScores()
        let fixture = try EditedFixture("exaone_moe-f32")
        let stored = "model.layers.1.mlp.e_score_correction_bias"
        try SavedLayoutTests().renameTensor(stored, to: "model.layers.1.mlp.gate.e_score_correction_bias", in: fixture.model)
        #expect(try fixture.attentionScores() == base)
        let plain = try EditedFixture("exaone_moe-f32")
        let rule = try #require(groupLimitedRule(try mlpMixture(try fixture.load(), layer: 1)))
        let original = try #require(groupLimitedRule(try mlpMixture(try plain.load(), layer: 1)))
        #expect(rule.selectionBias == original.selectionBias && rule.selectionBias != nil)

        let both = try EditedFixture("exaone_moe-f32")
        try BadInputTests().rewriteWeights(both.model) { entries in
            var copy = try! #require(entries.first { $0.name == stored })
            copy.name = "model.layers.1.mlp.gate.e_score_correction_bias"
            entries.append(copy)
        }
        let error = #expect(throws: DroptraceError.self) { _ = try both.load().block(1) }
        #expect(error?.message.contains("e_score_correction_bias") == true && error?.message.contains("\n") == false)
    }

    /// An export keeps the kept layers' `mlp_layer_types` and `layer_types`.
    @Test func blockDropKeepsTheKeptLayersTypes() throws {
        let exported = try EditedFixture("exaone_moe-f32").exportedConfig(droppingBlocks: [0])
        #expect(exported["mlp_layer_types"] as? [String] == ["sparse", "sparse", "sparse"])
        #expect(exported["layer_types"] as? [String] == ["sliding_attention", "sliding_attention", "full_attention"])
        let ruled = try EditedFixture("exaone_moe-f32") { $0["mlp_layer_types"] = nil }.exportedConfig(droppingBlocks: [1])
        #expect(ruled["mlp_layer_types"] as? [String] == ["dense", "sparse", "sparse"])
    }

    /// Router and experts of one layer against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("exaone_moe-f32", unordered: true)
    }

    /// Fused 3-D experts (`mlp.experts.gate_up_proj` / `down_proj`) score
    /// exactly as the per-expert tensors `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike("exaone_moe-f32")
    }
}

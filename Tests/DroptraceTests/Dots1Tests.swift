@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// dots.llm1 (`dots1`): config refusals and Dots1Config's defaults (the
/// expert counts None), Qwen3's attention with its sliding layers, the dense
/// layers below `first_k_dense_replace` and DeepSeek-V3's routing on the
/// others, and the threshold an export renumbers. The scores themselves are
/// checked against transformers with every other family
/// (`ScoringReferenceTests`, `DropTests`).
@Suite struct Dots1Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("dots1-f32", "rms_norm_eps", "0"), Mutant("dots1-f32", "first_k_dense_replace", "null"),
        Mutant("dots1-f32", "n_routed_experts", "0"), Mutant("dots1-f32", "n_routed_experts", "null"),
        Mutant("dots1-f32", "n_routed_experts", "4611686018427387904"),
        Mutant("dots1-f32", "num_experts_per_tok", "0"), Mutant("dots1-f32", "num_experts_per_tok", "9"),
        Mutant("dots1-f32", "num_experts_per_tok", "null"),
        Mutant("dots1-f32", "n_shared_experts", "-1"), Mutant("dots1-f32", "n_shared_experts", "null"),
        Mutant("dots1-f32", "moe_intermediate_size", "0"),
        Mutant("dots1-f32", "routed_scaling_factor", "0"), Mutant("dots1-f32", "routed_scaling_factor", "-2.5"),
        // 3 groups do not split 8 experts; 8 groups of 1 cannot be scored by their best two.
        Mutant("dots1-f32", "n_group", "3"), Mutant("dots1-f32", "n_group", "8"), Mutant("dots1-f32", "n_group", "0"),
        Mutant("dots1-f32", "n_group", "null"), Mutant("dots1-f32", "topk_group", "0"), Mutant("dots1-f32", "topk_group", "3"),
        Mutant("dots1-f32", "topk_group", "null"),
        // One kept group of 4 experts cannot give each token 5.
        Mutant("dots1-f32", "num_experts_per_tok", "5", key: "topk_group"),
        Mutant("dots1-f32", "sliding_window", "0"),
        // Two spellings of one setting that disagree.
        Mutant("dots1-f32", "num_local_experts", "4", key: "n_routed_experts"),
        // Sizes the tensors contradict.
        Mutant("dots1-f32", "n_routed_experts", "16"), Mutant("dots1-f32", "moe_intermediate_size", "32"),
        Mutant("dots1-f32", "head_dim", "16"),
        // Dots1Attention reads head_dim with getattr: a null one cannot build it.
        Mutant("dots1-f32", "head_dim", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers below `first_k_dense_replace` have the dense MLP; the others
    /// route as config.json says, with the shared expert and the stored
    /// correction bias; the attention has q/k/v/o biases, per-head q/k norms
    /// before rotary, the whole head rotating, and the window on the sliding layers.
    @Test func qwen3AttentionThenSigmoidGroupLimitedExperts() throws {
        let model = try EditedFixture("dots1-f32").load(), config = try FixtureFiles.config("dots1-f32")
        let dense = config["first_k_dense_replace"] as! Int, experts = config["n_routed_experts"] as! Int
        #expect(dense >= 1 && dense < model.layerCount)
        for layer in 0..<model.layerCount {
            let moe = try mlpMixture(model, layer: layer)
            guard layer >= dense else {
                #expect(moe == nil, "layer \(layer) is dense")
                continue
            }
            let rule = try #require(groupLimitedRule(moe), "layer \(layer) routes")
            #expect(moe?.experts.count == experts && moe?.expertsPerToken == config["num_experts_per_tok"] as? Int)
            #expect(moe?.sharedExperts.count == 1)
            #expect(rule.scoring == .sigmoid && rule.groupScore == .sumOfBestTwo && rule.denominatorFloor == nil)
            #expect(rule.groups == config["n_group"] as? Int && rule.groupsPerToken == config["topk_group"] as? Int)
            #expect(rule.normalizesWeights == config["norm_topk_prob"] as? Bool)
            #expect(Double(rule.scalingFactor) == config["routed_scaling_factor"] as? Double)
            #expect(rule.selectionBias?.contains { $0 != 0 } == true, "the fixture's bias is not zero")
        }
        let types = config["layer_types"] as! [String]
        for layer in 0..<model.layerCount {
            let attention = try #require(try model.block(layer).attention?.attention)
            guard case .perHead? = attention.queryKeyNorm, case .fused(let qkv) = attention.projection else {
                Issue.record("no per-head q/k norms")
                return
            }
            #expect(!attention.queryKeyNormAfterRotary && qkv.bias != nil && attention.output.bias != nil)
            #expect(attention.rotary?.rotaryDim == attention.layout.headDim)
            #expect(attention.slidingWindow == (types[layer] == "sliding_attention" ? config["sliding_window"] as? Int : nil))
        }
    }

    /// What config.json leaves out takes Dots1Config's defaults: one group
    /// (of which one is kept), routed_scaling_factor 1.0, weights not
    /// renormalised, no attention biases, every layer routed
    /// (`first_k_dense_replace` 0, which the fixture's dense layer 0
    /// contradicts), no expert counts (refused), layers from
    /// `max_window_layers` 62 on sliding when `layer_types` is absent, heads
    /// hidden_size / num_attention_heads wide.
    @Test func omittedKeysTakeDots1ConfigDefaults() throws {
        let routed = try EditedFixture("dots1-f32") {
            for key in ["n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob", "attention_bias"] { $0[key] = nil }
        }.load()
        let rule = try #require(groupLimitedRule(try mlpMixture(routed, layer: routed.layerCount - 1)))
        #expect(rule.groups == 1 && rule.groupsPerToken == 1 && rule.scalingFactor == 1 && !rule.normalizesWeights)
        guard case .fused(let qkv)? = try routed.block(0).attention?.attention.projection else { return }
        #expect(qkv.bias == nil)
        // Layer 0 routed by default: the fixture has no router there.
        do {
            _ = try EditedFixture("dots1-f32") { $0["first_k_dense_replace"] = nil }.load()
            Issue.record("layer 0 read as dense")
        } catch let error as DroptraceError {
            #expect(error.message.contains("layers.0.mlp.gate"), "\(error)")
        }
        for key in ["n_routed_experts", "num_experts_per_tok", "n_shared_experts"] {
            try EditedFixture("dots1-f32") { $0[key] = nil }.expectRefused(naming: key)
        }
        // Without layer_types: 62 full layers by default, then the rule with max_window_layers.
        let full = try EditedFixture("dots1-f32") { $0["layer_types"] = nil; $0["max_window_layers"] = nil }.load() as! Dots1Model
        #expect(full.windows.allSatisfy { $0 == nil })
        let ruled = try EditedFixture("dots1-f32") { $0["layer_types"] = nil; $0["max_window_layers"] = 2 }.load() as! Dots1Model
        #expect(ruled.windows.map { $0 != nil } == [false, false, true, true])
        try EditedFixture("dots1-f32") { $0["layer_types"] = nil; $0["max_window_layers"] = NSNull() }
            .expectRefused(naming: "max_window_layers")
        // No window: no layer slides (null), or transformers' 4096 (absent).
        let unwindowed = try EditedFixture("dots1-f32") { $0["layer_types"] = nil; $0["sliding_window"] = NSNull(); $0["max_window_layers"] = 0 }
        #expect((try unwindowed.load() as! Dots1Model).windows.allSatisfy { $0 == nil })
        let defaultWindow = try EditedFixture("dots1-f32") { $0["sliding_window"] = nil }.load() as! Dots1Model
        #expect(defaultWindow.windows.compactMap { $0 }.allSatisfy { $0 == 4096 })
        // use_sliding_window (Qwen3's switch) is not read.
        let switched = try EditedFixture("dots1-f32") { $0["use_sliding_window"] = false }.load() as! Dots1Model
        #expect(switched.windows == (try EditedFixture("dots1-f32").load() as! Dots1Model).windows)
        let width = try EditedFixture("dots1-f32") { $0["head_dim"] = nil }
        let config = try FixtureFiles.config("dots1-f32")
        // 48 / 4 = 12, the fixture's head_dim: absent, the same model.
        #expect(config["head_dim"] as? Int == (config["hidden_size"] as! Int) / (config["num_attention_heads"] as! Int))
        #expect(try width.attentionScores() == EditedFixture("dots1-f32").attentionScores())
    }

    /// `num_local_experts`, given alone, is the key it stands for.
    @Test func aliasGivenAloneIsReadAsItsKey() throws {
        #expect(ConfigValueKinds.transformers["dots1"]?.aliases["num_local_experts"] == "n_routed_experts")
        let renamed = try EditedFixture("dots1-f32") { $0["num_local_experts"] = $0.removeValue(forKey: "n_routed_experts") }
        #expect(try scores(renamed) == scores(EditedFixture("dots1-f32")))
    }

    /// An export without the dense block renumbers `first_k_dense_replace`
    /// and keeps the kept layers' types.
    @Test func blockDropRenumbersFirstKDenseReplace() throws {
        let config = try EditedFixture("dots1-f32").exportedConfig(droppingBlocks: [0])
        #expect((config["first_k_dense_replace"] as? NSNumber)?.intValue == 0)
        let types = try FixtureFiles.config("dots1-f32")["layer_types"] as! [String]
        #expect(config["layer_types"] as? [String] == Array(types.dropFirst()))
        let ruled = try EditedFixture("dots1-f32") { $0["layer_types"] = nil; $0["max_window_layers"] = 2 }
        let exported = try ruled.exportedConfig(droppingBlocks: [1])
        #expect(exported["layer_types"] as? [String] == ["full_attention", "sliding_attention", "sliding_attention"])
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("dots1-f32", unordered: true)
    }

    /// Fused 3-D experts score exactly as the per-expert tensors `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike("dots1-f32")
    }
}

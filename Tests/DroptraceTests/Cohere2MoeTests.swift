@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Cohere2-MoE (`cohere2_moe`): config refusals and Cohere2MoeConfig's
/// defaults, cohere2's parallel block with its norm chosen by
/// `rms_norm_eps`, the rotary on sliding and dense-prefix layers, the layer
/// rules when `layer_types` / `mlp_layer_types` are absent, the routing
/// rules of `expert_selection_fn` and the shared experts' combination. The
/// scores themselves are checked against transformers with every other
/// family (`ScoringReferenceTests`, `DropTests`).
@Suite struct Cohere2MoeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("cohere2_moe-f32", "rms_norm_eps", "0.0"), Mutant("cohere2_moe-f32", "layer_norm_eps", "0.0"),
        Mutant("cohere2_moe-f32", "num_experts", "0"), Mutant("cohere2_moe-f32", "num_experts", "4611686018427387904"),
        Mutant("cohere2_moe-f32", "num_experts_per_tok", "0"), Mutant("cohere2_moe-f32", "num_experts_per_tok", "9"),
        Mutant("cohere2_moe-f32", "num_shared_experts", "-1"),
        Mutant("cohere2_moe-f32", "expert_selection_fn", "\"relu\""),
        Mutant("cohere2_moe-f32", "shared_expert_combination_strategy", "\"max\""),
        Mutant("cohere2_moe-f32", "prefix_dense_intermediate_size", "0"),
        Mutant("cohere2_moe-f32", "mlp_layer_types", #"["dense", "moe", "sparse", "sparse"]"#),
        Mutant("cohere2_moe-f32", "mlp_layer_types", #"["dense"]"#),
        Mutant("cohere2_moe-f32", "sliding_window", "0"),
        // Cohere2MoeModel builds a sliding-window mask for every model.
        Mutant("cohere2_moe-f32", "sliding_window", "null"),
        Mutant("cohere2_moe-f32", "head_dim", "null"), Mutant("cohere2_moe-f32", "logit_scale", "null"),
        // Sizes the tensors contradict.
        Mutant("cohere2_moe-f32", "num_experts", "16"), Mutant("cohere2_moe-f32", "intermediate_size", "32"),
        Mutant("cohere2_moe-f32", "head_dim", "16"), Mutant("cohere2_moe-f32", "prefix_dense_intermediate_size", "32"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// One RMSNorm feeds both branches of a parallel block; sliding layers
    /// and the dense prefix layer rotate, the other full layers do not; the
    /// dense layer is prefix_dense_intermediate_size wide; the others route
    /// by the renormalised sigmoids of the top logits, averaged with the
    /// shared expert.
    @Test func parallelBlocksWithSigmoidRoutedExperts() throws {
        let model = try EditedFixture("cohere2_moe-f32").load(), config = try FixtureFiles.config("cohere2_moe-f32")
        let types = config["layer_types"] as! [String], mlps = config["mlp_layer_types"] as! [String]
        #expect(mlps.contains("dense") && mlps.contains("sparse") && types.contains("full_attention"))
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            #expect(block.residual == .parallel)
            guard case .rms? = block.attention?.inputNorm else {
                Issue.record("layer \(layer): not an RMSNorm")
                continue
            }
            let attention = try #require(block.attention?.attention)
            let sliding = types[layer] == "sliding_attention", dense = mlps[layer] == "dense"
            #expect(attention.slidingWindow == (sliding ? config["sliding_window"] as? Int : nil))
            #expect((attention.rotary != nil) == (sliding || dense), "layer \(layer)")
            #expect(attention.queryKeyNorm == nil)
            let moe = try mlpMixture(model, layer: layer)
            guard !dense else {
                guard case .gated(let gateUp, _, _)? = block.mlp?.feedForward else {
                    Issue.record("layer \(layer) is not a dense SwiGLU")
                    continue
                }
                #expect(gateUp.outFeatures == 2 * (config["prefix_dense_intermediate_size"] as! Int))
                continue
            }
            let mixture = try #require(moe)
            guard case .normalizedSigmoidOfTopK = mixture.rule else {
                Issue.record("layer \(layer): not the renormalised sigmoid routing")
                continue
            }
            #expect(mixture.experts.count == config["num_experts"] as? Int && mixture.sharedExperts.count == 1 && mixture.averagesShared)
        }
    }

    /// `rms_norm_eps` null: Cohere's mean-centred LayerNorm of
    /// `layer_norm_eps`, the final norm too.
    @Test func layerNormWithoutRMSNormEpsilon() throws {
        let model = try EditedFixture("cohere2_moe-f32") { $0["rms_norm_eps"] = NSNull() }.load()
        guard case .layer? = try model.block(0).attention?.inputNorm, case .layer = try model.head().norm else {
            Issue.record("not CohereLayerNorms")
            return
        }
    }

    /// The routing rules: softmax over the top logits, sigmoids without
    /// renormalisation; the shared expert summed.
    @Test func expertSelectionAndCombination() throws {
        func moe(_ change: @escaping (inout [String: Any]) -> Void) throws -> MixtureOfExperts {
            let model = try EditedFixture("cohere2_moe-f32", change).load()
            return try #require(try mlpMixture(model, layer: model.layerCount - 1))
        }
        guard case .topKThenSoftmax = try moe({ $0["expert_selection_fn"] = "softmax" }).rule else {
            Issue.record("softmax selection")
            return
        }
        guard case .sigmoidOfTopK = try moe({ $0["norm_topk_prob"] = false }).rule else {
            Issue.record("unnormalised sigmoids")
            return
        }
        #expect(try !moe { $0["shared_expert_combination_strategy"] = "sum" }.averagesShared)
        // Without shared experts the strategy is not read.
        let none = try moe { $0["num_shared_experts"] = 0; $0["shared_expert_combination_strategy"] = "max" }
        #expect(none.sharedExperts.isEmpty)
    }

    /// What config.json leaves out takes Cohere2MoeConfig's defaults:
    /// softmax routing, averaging, heads 128 wide (which the tensors
    /// contradict), a rotary base of 10000 from `rope_theta`; `rope_scaling`
    /// is not read; without `layer_types` the prefix of `first_k_dense_replace`
    /// layers follows `prefix_dense_sliding_window_pattern` and the rest
    /// `sliding_window_pattern` counted afresh; without `mlp_layer_types`
    /// the first `first_k_dense_replace` layers are dense.
    @Test func omittedKeysTakeCohere2MoeConfigDefaults() throws {
        let model = try EditedFixture("cohere2_moe-f32") {
            $0["expert_selection_fn"] = nil
            $0["shared_expert_combination_strategy"] = nil
        }.load()
        let moe = try #require(try mlpMixture(model, layer: 1))
        guard case .topKThenSoftmax = moe.rule else {
            Issue.record("not softmax routing by default")
            return
        }
        #expect(moe.averagesShared)
        try EditedFixture("cohere2_moe-f32") { $0["head_dim"] = nil }.expectRefused(naming: "head_dim")
        func rotary(_ change: @escaping (inout [String: Any]) -> Void) throws -> RotaryEmbedding {
            try #require(try EditedFixture("cohere2_moe-f32", change).load().block(1).attention?.attention.rotary)
        }
        let base = try rotary { $0["rope_parameters"] = nil; $0["rope_theta"] = nil }
        #expect(base.inverseFrequencies == (try rotary { _ in }).inverseFrequencies)
        #expect(try rotary { $0["rope_scaling"] = ["rope_type": "linear", "factor": 4.0] }.inverseFrequencies == base.inverseFrequencies)
        #expect(try rotary { $0["rope_parameters"] = nil; $0["rope_theta"] = 500.0 }.inverseFrequencies != base.inverseFrequencies)
        // The layer rules, as the fixture was built.
        let config = try FixtureFiles.config("cohere2_moe-f32")
        let ruled = try EditedFixture("cohere2_moe-f32") {
            $0["layer_types"] = nil
            $0["mlp_layer_types"] = nil
            $0["first_k_dense_replace"] = 1
        }.load() as! Cohere2MoeModel
        #expect(ruled.layerTypes == config["layer_types"] as? [String] && ruled.mlpTypes == config["mlp_layer_types"] as? [String])
        let everyFourth = try EditedFixture("cohere2_moe-f32") {
            $0["layer_types"] = nil
            $0["sliding_window_pattern"] = nil
            $0["first_k_dense_replace"] = 1
        }.load() as! Cohere2MoeModel
        #expect(everyFourth.layerTypes == ["full_attention", "sliding_attention", "sliding_attention", "sliding_attention"])
        for (key, value) in [("sliding_window_pattern", 0), ("prefix_dense_sliding_window_pattern", 0), ("first_k_dense_replace", 5)] {
            try EditedFixture("cohere2_moe-f32") {
                $0["layer_types"] = nil
                $0["first_k_dense_replace"] = 1
                $0[key] = value
            }.expectRefused(naming: key)
        }
    }

    /// An export keeps the kept layers' attention and MLP types.
    @Test func blockDropKeepsTheLayerTypes() throws {
        let config = try EditedFixture("cohere2_moe-f32").exportedConfig(droppingBlocks: [0])
        let original = try FixtureFiles.config("cohere2_moe-f32")
        #expect(config["layer_types"] as? [String] == Array((original["layer_types"] as! [String]).dropFirst()))
        #expect(config["mlp_layer_types"] as? [String] == Array((original["mlp_layer_types"] as! [String]).dropFirst()))
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("cohere2_moe-f32")
    }

    /// Fused 3-D experts score exactly as the per-expert tensors `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike("cohere2_moe-f32")
    }
}

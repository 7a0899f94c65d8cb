@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// GLM-4.5 (`glm4_moe`): its config refusals and Glm4MoeConfig's defaults,
/// the dense layers below `first_k_dense_replace`, DeepSeek-V3's routing on
/// the routed ones, and the threshold an export renumbers. The scores
/// themselves are checked against transformers with every other family
/// (`ScoringReferenceTests`, `DropTests`).
@Suite struct Glm4MoeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("glm4_moe-f32", "rms_norm_eps", "0"), Mutant("glm4_moe-f32", "first_k_dense_replace", "-1"),
        Mutant("glm4_moe-f32", "n_routed_experts", "0"), Mutant("glm4_moe-f32", "n_routed_experts", "4611686018427387904"),
        Mutant("glm4_moe-f32", "num_experts_per_tok", "0"), Mutant("glm4_moe-f32", "num_experts_per_tok", "9"),
        Mutant("glm4_moe-f32", "n_shared_experts", "-1"), Mutant("glm4_moe-f32", "moe_intermediate_size", "0"),
        Mutant("glm4_moe-f32", "routed_scaling_factor", "0"), Mutant("glm4_moe-f32", "routed_scaling_factor", "-2.5"),
        // 3 groups do not split 8 experts; 8 groups of 1 cannot be scored by their best two.
        Mutant("glm4_moe-f32", "n_group", "3"), Mutant("glm4_moe-f32", "n_group", "8"), Mutant("glm4_moe-f32", "n_group", "0"),
        Mutant("glm4_moe-f32", "n_group", "null"),
        Mutant("glm4_moe-f32", "topk_group", "0"), Mutant("glm4_moe-f32", "topk_group", "3"),
        // One kept group of 4 experts cannot give each token 5.
        Mutant("glm4_moe-f32", "num_experts_per_tok", "5", key: "topk_group"),
        Mutant("glm4_moe-f32", "num_nextn_predict_layers", "-1"),
        // Two spellings of one setting that disagree.
        Mutant("glm4_moe-f32", "num_local_experts", "4", key: "n_routed_experts"),
        // Sizes the tensors contradict.
        Mutant("glm4_moe-f32", "n_routed_experts", "16"), Mutant("glm4_moe-f32", "moe_intermediate_size", "32"),
        Mutant("glm4_moe-f32", "head_dim", "16"),
        // Glm4MoeAttention reads head_dim with getattr: a null one cannot build it.
        Mutant("glm4_moe-f32", "head_dim", "null"),
        // 2 · ceil(13 / 2) = 14 rotated dimensions do not fit a 12-wide head.
        Mutant("glm4_moe-f32", "rope_parameters.partial_rotary_factor", "1.1"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers below `first_k_dense_replace` have the dense MLP; the others
    /// route as config.json says, with the shared expert and the stored
    /// correction bias; the attention has per-head q/k norms and rotates
    /// half of each head.
    @Test func denseLayersThenSigmoidGroupLimitedExperts() throws {
        let model = try EditedFixture("glm4_moe-f32").load()
        let config = try FixtureFiles.config("glm4_moe-f32")
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
            #expect(rule.scoring == .sigmoid && rule.groupScore == .sumOfBestTwo)
            #expect(rule.groups == config["n_group"] as? Int && rule.groupsPerToken == config["topk_group"] as? Int)
            #expect(rule.normalizesWeights == config["norm_topk_prob"] as? Bool)
            #expect(Double(rule.scalingFactor) == config["routed_scaling_factor"] as? Double)
            #expect(rule.selectionBias?.count == experts)
        }
        let attention = try #require(try model.block(0).attention?.attention)
        guard case .perHead? = attention.queryKeyNorm else {
            Issue.record("no per-head q/k norms")
            return
        }
        #expect(attention.rotary?.rotaryDim == attention.layout.headDim / 2)
    }

    /// What config.json leaves out takes Glm4MoeConfig's defaults: one
    /// group (of which one is kept), routed_scaling_factor 1.0, renormalised
    /// weights, no q/k norms, half of each head rotating, one dense layer;
    /// 128 experts contradict the fixture's router, and 8 experts per token
    /// do not fit in its kept group.
    @Test func omittedKeysTakeGlm4MoeConfigDefaults() throws {
        let routed = try EditedFixture("glm4_moe-f32") {
            for key in ["n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob", "use_qk_norm"] { $0[key] = nil }
        }.load()
        let rule = try #require(groupLimitedRule(try mlpMixture(routed, layer: routed.layerCount - 1)))
        #expect(rule.groups == 1 && rule.groupsPerToken == 1 && rule.scalingFactor == 1 && rule.normalizesWeights)
        #expect(try routed.block(0).attention?.attention.queryKeyNorm == nil)
        let rotary = try EditedFixture("glm4_moe-f32", rope: "partial_rotary_factor", nil).load()
        let attention = try #require(try rotary.block(0).attention?.attention)
        #expect(attention.rotary?.rotaryDim == attention.layout.headDim / 2)
        // first_k_dense_replace 1 by default: the fixture's dense layer 0.
        let dense = try EditedFixture("glm4_moe-f32") { $0["first_k_dense_replace"] = nil }.load()
        #expect(try mlpMixture(dense, layer: 0) == nil && mlpMixture(dense, layer: 1) != nil)
        try EditedFixture("glm4_moe-f32") { $0["n_routed_experts"] = nil }.expectRefused(naming: "n_routed_experts")
        try EditedFixture("glm4_moe-f32") { $0["num_experts_per_tok"] = nil }.expectRefused(naming: "num_experts_per_tok")
    }

    /// The stored `gate.e_score_correction_bias` chooses the experts.
    @Test func storedCorrectionBiasIsRead() throws {
        let model = try EditedFixture("glm4_moe-f32").load()
        let layer = model.layerCount - 1
        let rule = try #require(groupLimitedRule(try mlpMixture(model, layer: layer)))
        #expect(rule.selectionBias?.contains { $0 != 0 } == true, "the fixture's bias is not zero")
    }

    /// `num_local_experts` and `num_mtp_layers`, given alone, are the keys
    /// they stand for.
    @Test(arguments: [("num_local_experts", "n_routed_experts"), ("num_mtp_layers", "num_nextn_predict_layers")])
    func aliasGivenAloneIsReadAsItsKey(_ alias: String, _ key: String) throws {
        #expect(ConfigValueKinds.transformers["glm4_moe"]?.aliases[alias] == key)
        let renamed = try EditedFixture("glm4_moe-f32") { $0[alias] = $0.removeValue(forKey: key) }
        #expect(try String(contentsOfFile: renamed.configPath, encoding: .utf8).contains("\"\(alias)\""))
        #expect(try scores(renamed) == scores(EditedFixture("glm4_moe-f32")))
    }

    /// An export without the dense block renumbers `first_k_dense_replace`
    /// (also when config.json leaves it to its default), so the kept layers
    /// keep their MLPs in transformers.
    @Test func blockDropRenumbersFirstKDenseReplace() throws {
        let model = try EditedFixture("glm4_moe-f32").load()
        #expect(model.layerNaming.layerThresholds["first_k_dense_replace"] == 1)
        let defaulted = try EditedFixture("glm4_moe-f32") { $0["first_k_dense_replace"] = nil }
        let config = try defaulted.exportedConfig(droppingBlocks: [0])
        #expect((config["first_k_dense_replace"] as? NSNumber)?.intValue == 0)
        #expect((config["num_hidden_layers"] as? NSNumber)?.intValue == model.layerCount - 1)
        let kept = try EditedFixture("glm4_moe-f32").exportedConfig(droppingBlocks: [model.layerCount - 1])
        #expect((kept["first_k_dense_replace"] as? NSNumber)?.intValue == 1)
    }

    /// Router and experts against transformers' MoE block (`routing_check`):
    /// the same experts per token with the same weights (transformers' top-k
    /// is unsorted and the reference orders it by weight, droptrace by the
    /// biased score that chose it), and the block's output (shared expert
    /// included) within 1e-5.
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("glm4_moe-f32", unordered: true)
    }

    /// Fused 3-D experts (`mlp.experts.gate_up_proj` / `down_proj`) score
    /// exactly as the per-expert tensors `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike("glm4_moe-f32")
    }
}

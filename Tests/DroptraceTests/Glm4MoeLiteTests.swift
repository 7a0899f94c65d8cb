@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// GLM-4.7-Flash (`glm4_moe_lite`): its config refusals and
/// Glm4MoeLiteConfig's defaults, DeepSeek's latent attention, the dense and
/// routed layers `mlp_layer_types` names and the list an export keeps. The
/// scores themselves are checked against transformers with every other
/// family (`DropTests` and the reference suites).
@Suite struct Glm4MoeLiteTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("glm4_moe_lite-f32", "rms_norm_eps", "0"),
        Mutant("glm4_moe_lite-f32", "n_routed_experts", "0"), Mutant("glm4_moe_lite-f32", "n_routed_experts", "4611686018427387904"),
        Mutant("glm4_moe_lite-f32", "num_experts_per_tok", "0"), Mutant("glm4_moe_lite-f32", "num_experts_per_tok", "9"),
        Mutant("glm4_moe_lite-f32", "n_shared_experts", "-1"), Mutant("glm4_moe_lite-f32", "moe_intermediate_size", "0"),
        Mutant("glm4_moe_lite-f32", "routed_scaling_factor", "0"),
        Mutant("glm4_moe_lite-f32", "n_group", "3"), Mutant("glm4_moe_lite-f32", "n_group", "8"), Mutant("glm4_moe_lite-f32", "n_group", "0"),
        Mutant("glm4_moe_lite-f32", "topk_group", "0"), Mutant("glm4_moe_lite-f32", "topk_group", "3"),
        // One kept group of 4 experts cannot give each token 5.
        Mutant("glm4_moe_lite-f32", "num_experts_per_tok", "5", key: "topk_group"),
        Mutant("glm4_moe_lite-f32", "num_nextn_predict_layers", "-1"),
        // mlp_layer_types: an entry transformers does not know, a list shorter than the layers.
        Mutant("glm4_moe_lite-f32", "mlp_layer_types", "[\"dense\", \"moe\", \"dense\", \"sparse\"]"),
        Mutant("glm4_moe_lite-f32", "mlp_layer_types", "[\"dense\", \"sparse\"]"),
        // Latent attention's widths.
        Mutant("glm4_moe_lite-f32", "kv_lora_rank", "0"), Mutant("glm4_moe_lite-f32", "qk_rope_head_dim", "7"),
        Mutant("glm4_moe_lite-f32", "v_head_dim", "0"), Mutant("glm4_moe_lite-f32", "q_lora_rank", "0"),
        Mutant("glm4_moe_lite-f32", "num_key_value_heads", "2"),
        // head_dim names qk_rope_head_dim: two values for one setting.
        Mutant("glm4_moe_lite-f32", "head_dim", "16"),
        Mutant("glm4_moe_lite-f32", "num_local_experts", "4", key: "n_routed_experts"),
        // Sizes the tensors contradict.
        Mutant("glm4_moe_lite-f32", "n_routed_experts", "16"), Mutant("glm4_moe_lite-f32", "moe_intermediate_size", "32"),
        Mutant("glm4_moe_lite-f32", "kv_lora_rank", "8"),
        // A rotary table narrower than the 8 rope columns.
        Mutant("glm4_moe_lite-f32", "rope_parameters.partial_rotary_factor", "0.5"),
        Mutant("glm4_moe_lite-f32", "rope_parameters.partial_rotary_factor", "-9223372036854775808"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The layers `mlp_layer_types` marks dense have the dense MLP; the
    /// others route as config.json says, with the shared expert and the
    /// stored correction bias; the attention is latent.
    @Test func mlpLayerTypesChooseDenseAndSigmoidRoutedLayers() throws {
        let model = try EditedFixture("glm4_moe_lite-f32").load()
        let config = try FixtureFiles.config("glm4_moe_lite-f32")
        let types = config["mlp_layer_types"] as! [String], experts = config["n_routed_experts"] as! Int
        #expect(types.contains("dense") && types.contains("sparse") && types.first == "dense")
        for layer in 0..<model.layerCount {
            let moe = try mlpMixture(model, layer: layer)
            guard types[layer] == "sparse" else {
                #expect(moe == nil, "layer \(layer) is dense")
                continue
            }
            let rule = try #require(groupLimitedRule(moe), "layer \(layer) routes")
            #expect(moe?.experts.count == experts && moe?.sharedExperts.count == 1)
            #expect(rule.scoring == .sigmoid && rule.groupScore == .sumOfBestTwo)
            #expect(rule.groups == config["n_group"] as? Int && rule.groupsPerToken == config["topk_group"] as? Int)
            #expect(rule.scalingFactor == Float(config["routed_scaling_factor"] as! Double))
            #expect(rule.selectionBias?.contains { $0 != 0 } == true, "the fixture's bias is not zero")
        }
        let attention = try #require(try model.block(0).attention?.attention)
        guard case .latent(let latent) = attention.projection else {
            Issue.record("not latent attention")
            return
        }
        #expect(latent.rotary?.rotaryDim == config["qk_rope_head_dim"] as? Int && attention.queryTemperature == nil)
    }

    /// What config.json leaves out takes Glm4MoeLiteConfig's defaults: layer
    /// 0 dense and the others routed, one group, routed_scaling_factor 1.8;
    /// head_dim, given alone, is qk_rope_head_dim.
    @Test func omittedKeysTakeGlm4MoeLiteConfigDefaults() throws {
        let defaulted = try EditedFixture("glm4_moe_lite-f32") { $0["mlp_layer_types"] = nil }.load()
        #expect(defaulted.layerNaming.perLayerLists["mlp_layer_types"] == ["dense", "sparse", "sparse", "sparse"])
        // The fixture's layer 2 is dense: the default rule routes it, and its router is missing.
        #expect(throws: (any Error).self) { _ = try defaulted.block(2) }
        let routed = try EditedFixture("glm4_moe_lite-f32") {
            for key in ["n_group", "topk_group", "routed_scaling_factor"] { $0[key] = nil }
        }.load()
        let rule = try #require(groupLimitedRule(try mlpMixture(routed, layer: 1)))
        #expect(rule.groups == 1 && rule.groupsPerToken == 1 && abs(rule.scalingFactor - 1.8) < 1e-6 && rule.normalizesWeights)
        let base = try EditedFixture("glm4_moe_lite-f32").attentionScores()
        let renamed = try EditedFixture("glm4_moe_lite-f32") { $0["head_dim"] = $0.removeValue(forKey: "qk_rope_head_dim") }
        #expect(try renamed.attentionScores() == base)
    }

    /// An export keeps the kept layers' `mlp_layer_types`, and spells them
    /// out where config.json leaves them to the class's rule.
    @Test func blockDropKeepsTheKeptLayersMlpTypes() throws {
        let config = try FixtureFiles.config("glm4_moe_lite-f32")
        let types = config["mlp_layer_types"] as! [String]
        let exported = try EditedFixture("glm4_moe_lite-f32").exportedConfig(droppingBlocks: [0])
        #expect(exported["mlp_layer_types"] as? [String] == Array(types.dropFirst()))
        let model = try EditedFixture("glm4_moe_lite-f32").load()
        #expect(model.layerNaming.perLayerLists["mlp_layer_types"] == types)
    }

    /// Fused 3-D experts (`mlp.experts.gate_up_proj` / `down_proj`) score
    /// exactly as the per-expert tensors `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike("glm4_moe_lite-f32")
    }
}

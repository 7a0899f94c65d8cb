@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Mistral Small 4 (`mistral4`): its config refusals and Mistral4Config's
/// defaults, DeepSeek's latent attention with Llama 4's query temperature,
/// the dense layers below `first_k_dense_replace` and the softmax
/// group-limited routing on the others. The scores themselves are checked
/// against transformers with every other family (`DropTests` and the
/// reference suites).
@Suite struct Mistral4Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("mistral4-f32", "rms_norm_eps", "0"), Mutant("mistral4-f32", "first_k_dense_replace", "-1"),
        // Mistral4DecoderLayer compares each layer's index with it.
        Mutant("mistral4-f32", "first_k_dense_replace", "null"),
        Mutant("mistral4-f32", "n_routed_experts", "0"), Mutant("mistral4-f32", "n_routed_experts", "4611686018427387904"),
        Mutant("mistral4-f32", "num_experts_per_tok", "0"), Mutant("mistral4-f32", "num_experts_per_tok", "9"),
        Mutant("mistral4-f32", "num_experts_per_tok", "null"),
        Mutant("mistral4-f32", "n_shared_experts", "-1"), Mutant("mistral4-f32", "moe_intermediate_size", "0"),
        Mutant("mistral4-f32", "routed_scaling_factor", "0"), Mutant("mistral4-f32", "routed_scaling_factor", "-1.5"),
        // 3 groups do not split 8 experts; 8 groups of 1 cannot be scored by their best two.
        Mutant("mistral4-f32", "n_group", "3"), Mutant("mistral4-f32", "n_group", "8"), Mutant("mistral4-f32", "n_group", "0"),
        Mutant("mistral4-f32", "n_group", "null"),
        Mutant("mistral4-f32", "topk_group", "0"), Mutant("mistral4-f32", "topk_group", "5"), Mutant("mistral4-f32", "topk_group", "null"),
        // Two kept groups of 2 experts cannot give each token 5.
        Mutant("mistral4-f32", "num_experts_per_tok", "5", key: "topk_group"),
        // Latent attention's widths.
        Mutant("mistral4-f32", "kv_lora_rank", "0"), Mutant("mistral4-f32", "qk_rope_head_dim", "7"),
        Mutant("mistral4-f32", "qk_nope_head_dim", "-1"), Mutant("mistral4-f32", "v_head_dim", "0"),
        Mutant("mistral4-f32", "v_head_dim", "null"), Mutant("mistral4-f32", "q_lora_rank", "0"),
        Mutant("mistral4-f32", "num_key_value_heads", "2"),
        Mutant("mistral4-f32", "qk_nope_head_dim", "9223372036854775800"),
        // Two spellings of one setting that disagree.
        Mutant("mistral4-f32", "num_local_experts", "4", key: "n_routed_experts"),
        // Sizes the tensors contradict.
        Mutant("mistral4-f32", "n_routed_experts", "16"), Mutant("mistral4-f32", "moe_intermediate_size", "32"),
        Mutant("mistral4-f32", "kv_lora_rank", "8"),
        // The query temperature needs both of its parameters.
        Mutant("mistral4-f32", "rope_parameters.llama_4_scaling_beta", "null"),
        Mutant("mistral4-f32", "rope_parameters.original_max_position_embeddings", "null"),
        // A rotary table that does not rotate the 8 rope columns: 16 × 0.25 = 4, 16 × 0.75 = 12.
        Mutant("mistral4-f32", "rope_parameters.partial_rotary_factor", "0.25"),
        Mutant("mistral4-f32", "rope_parameters.partial_rotary_factor", "0.75"),
        Mutant("mistral4-f32", "rope_parameters.partial_rotary_factor", "null"),
        Mutant("mistral4-f32", "rope_parameters.partial_rotary_factor", "-9223372036854775808"),
        // head_dim sizes the table too (a written one overrides qk_nope_head_dim + qk_rope_head_dim).
        Mutant("mistral4-f32", "head_dim", "32", key: "partial_rotary_factor"),
        // Mistral4RotaryEmbedding makes the "default" type's table head_dim (16) wide, whatever
        // partial_rotary_factor says: not the 8 rope columns (transformers fails in the forward pass).
        Mutant("mistral4-f32", "rope_parameters.rope_type", "\"default\""),
        Mutant("mistral4-f32", "rope_parameters", "{\"rope_theta\": 10000.0, \"llama_4_scaling_beta\": 0.1, \"original_max_position_embeddings\": 2}", key: "rope_type"),
        Mutant("mistral3_mistral4-f32", "text_config.rope_parameters.rope_type", "\"default\"", key: "text_config.rope_parameters.rope_type"),
        // The Mistral Small 4 releases: the same keys under mistral3's text_config.
        Mutant("mistral3_mistral4-f32", "text_config.n_group", "3"),
        Mutant("mistral3_mistral4-f32", "text_config.kv_lora_rank", "8"),
        Mutant("mistral3_mistral4-f32", "text_config.first_k_dense_replace", "null"),
        Mutant("mistral3_mistral4-f32", "text_config.num_experts_per_tok", "9"),
        Mutant("mistral3_mistral4-f32", "text_config.rope_parameters.llama_4_scaling_beta", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers below `first_k_dense_replace` have the dense MLP; the others
    /// route by softmax scores within the best groups, without a correction
    /// bias, plus the shared expert; the attention is latent, with the query
    /// temperature of the rope parameters.
    @Test func latentAttentionWithTemperatureAndSoftmaxGroupRouting() throws {
        let model = try EditedFixture("mistral4-f32").load()
        let config = try FixtureFiles.config("mistral4-f32")
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
            #expect(rule.scoring == .softmax && rule.groupScore == .sumOfBestTwo && rule.selectionBias == nil)
            #expect(rule.groups == config["n_group"] as? Int && rule.groupsPerToken == config["topk_group"] as? Int)
            #expect(rule.normalizesWeights == config["norm_topk_prob"] as? Bool)
            #expect(Double(rule.scalingFactor) == config["routed_scaling_factor"] as? Double)
        }
        let attention = try #require(try model.block(0).attention?.attention)
        guard case .latent(let latent) = attention.projection else {
            Issue.record("not latent attention")
            return
        }
        #expect(latent.ropeDim == config["qk_rope_head_dim"] as? Int && latent.rotary?.rotaryDim == latent.ropeDim)
        let rope = config["rope_parameters"] as! [String: Any]
        #expect(attention.queryTemperature == QueryTemperature(
            beta: Float(rope["llama_4_scaling_beta"] as! Double), originalMaxPositions: rope["original_max_position_embeddings"] as! Int))
    }

    /// What config.json leaves out takes Mistral4Config's defaults: one group
    /// (of which one is kept), routed_scaling_factor 1.0, renormalised
    /// weights, no dense layer (the fixture's dense layer 0 then lacks a
    /// router), 128 experts (which contradict the fixture's router); without
    /// rope parameters YaRN with factor 128 over 8192 positions and β 0.1.
    @Test func omittedKeysTakeMistral4ConfigDefaults() throws {
        let routed = try EditedFixture("mistral4-f32") {
            for key in ["n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob"] { $0[key] = nil }
        }.load()
        let rule = try #require(groupLimitedRule(try mlpMixture(routed, layer: routed.layerCount - 1)))
        #expect(rule.groups == 1 && rule.groupsPerToken == 1 && rule.scalingFactor == 1 && rule.normalizesWeights)
        let allSparse = try EditedFixture("mistral4-f32") { $0["first_k_dense_replace"] = nil }
        #expect(throws: (any Error).self) { _ = try allSparse.load() }
        do { _ = try allSparse.load() } catch { #expect("\(error)".contains("layers.0.mlp.gate"), "\(error)") }
        try EditedFixture("mistral4-f32") { $0["n_routed_experts"] = nil }.expectRefused(naming: "n_routed_experts")
        let defaults = try EditedFixture("mistral4-f32") { $0["rope_parameters"] = nil }.load()
        let attention = try #require(try defaults.block(0).attention?.attention)
        #expect(attention.queryTemperature == QueryTemperature(beta: 0.1, originalMaxPositions: 8192))
        // The softmax scale grows by YaRN's mscale of factor 128 and mscale_all_dim 1, squared.
        let config = try FixtureFiles.config("mistral4-f32")
        let width = Double((config["qk_nope_head_dim"] as! Int) + (config["qk_rope_head_dim"] as! Int))
        let magnitude = 0.1 * log(128.0) + 1
        #expect(abs(Double(attention.scale) - pow(width, -0.5) * magnitude * magnitude) < 1e-6)
        // A null rope_interleave is None, which the attention's `if` reads as false: other scores.
        let base = try EditedFixture("mistral4-f32").attentionScores()
        #expect(try EditedFixture("mistral4-f32") { $0["rope_interleave"] = NSNull() }.attentionScores() != base)
        #expect(try EditedFixture("mistral4-f32") { $0["rope_interleave"] = nil }.attentionScores() == base)
    }

    /// The query temperature acts: β 0 (no temperature) changes the scores.
    @Test func queryTemperatureMovesTheScores() throws {
        let base = try EditedFixture("mistral4-f32").attentionScores()
        let cold = try EditedFixture("mistral4-f32", rope: "llama_4_scaling_beta", 0.0).attentionScores()
        #expect(cold != base)
    }

    /// Mistral4RotaryEmbedding computes the "default" type's table itself:
    /// head_dim wide, partial_rotary_factor unread. With head_dim 8, the
    /// rope columns' width, it rotates all 8 by 1/θ^(2i/8) (transformers
    /// 5.23 runs this config and gives the same scores); the factor 0.5 the
    /// fixture's parameters keep would have made a table 4 wide.
    @Test func defaultRopeTypeTableIsHeadDimWide() throws {
        let model = try EditedFixture("mistral4-f32") { config in
            config["head_dim"] = 8
            var rope = config["rope_parameters"] as! [String: Any]
            rope["rope_type"] = "default"
            config["rope_parameters"] = rope
        }.load()
        let attention = try #require(try model.block(0).attention?.attention)
        guard case .latent(let latent) = attention.projection, let rotary = latent.rotary else {
            Issue.record("not latent attention with a rotary table")
            return
        }
        #expect(rotary.rotaryDim == 8)
        let expected = (0..<4).map { 1 / pow(Float(10000), Float(2 * $0) / 8) }
        #expect(zip(rotary.inverseFrequencies, expected).allSatisfy { abs($0 - $1) <= 1e-6 * $1 } && rotary.inverseFrequencies.count == 4)
    }

    /// A `mistral3` checkpoint whose text_config is mistral4's (the Mistral
    /// Small 4 releases) is read by this family from `text_config`, its head
    /// `lm_head`; a block-drop export edits `text_config`.
    @Test func mistral3WithAMistral4TextConfig() throws {
        let fixture = try EditedFixture("mistral3_mistral4-f32")
        let model = try fixture.load()
        #expect(model is Mistral4Model)
        #expect(model.layerNaming.layerThresholds["first_k_dense_replace"] == 1)
        #expect(try model.head().vocabularySize == 512)
        let text = try #require(try fixture.exportedConfig(droppingBlocks: [0])["text_config"] as? [String: Any])
        #expect((text["first_k_dense_replace"] as? NSNumber)?.intValue == 0)
        #expect((text["num_hidden_layers"] as? NSNumber)?.intValue == model.layerCount - 1)
    }

    /// An export without the dense block renumbers `first_k_dense_replace`.
    @Test func blockDropRenumbersFirstKDenseReplace() throws {
        let model = try EditedFixture("mistral4-f32").load()
        #expect(model.layerNaming.layerThresholds["first_k_dense_replace"] == 1)
        let config = try EditedFixture("mistral4-f32").exportedConfig(droppingBlocks: [0])
        #expect((config["first_k_dense_replace"] as? NSNumber)?.intValue == 0)
        #expect((config["num_hidden_layers"] as? NSNumber)?.intValue == model.layerCount - 1)
    }

    /// Router and experts against transformers' MoE block (`routing_check`):
    /// the same experts per token with the same weights, and the block's
    /// output (shared expert included) within 1e-5.
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("mistral4-f32", unordered: true)
    }
}

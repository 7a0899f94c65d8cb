@testable import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// LFM2-MoE: its config keys as Lfm2MoeConfig reads them, the dense and
/// routed layers and the expert bias; the scores themselves are checked
/// against transformers with every other family, and step-by-step decoding
/// against the batched forward (`DropTests.incrementalDecodingMatchesTheFullForward`).
@Suite struct Lfm2MoeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("lfm2_moe-f32", "num_experts", "0"),
        Mutant("lfm2_moe-f32", "num_experts", "9"),
        Mutant("lfm2_moe-f32", "num_experts", "1000000000000000000"),
        Mutant("lfm2_moe-f32", "num_experts_per_tok", "0"),
        Mutant("lfm2_moe-f32", "num_experts_per_tok", "9"),
        Mutant("lfm2_moe-f32", "num_experts_per_tok", "null"),
        Mutant("lfm2_moe-f32", "num_dense_layers", "-1"),
        Mutant("lfm2_moe-f32", "num_dense_layers", "0"),
        Mutant("lfm2_moe-f32", "num_dense_layers", "2"),
        Mutant("lfm2_moe-f32", "num_dense_layers", "99"),
        Mutant("lfm2_moe-f32", "moe_intermediate_size", "0"),
        Mutant("lfm2_moe-f32", "moe_intermediate_size", "15"),
        Mutant("lfm2_moe-f32", "intermediate_size", "95"),
        Mutant("lfm2_moe-f32", "routed_scaling_factor", "0.0"),
        Mutant("lfm2_moe-f32", "routed_scaling_factor", "-1.5"),
        Mutant("lfm2_moe-f32", "use_expert_bias", "1"),
        Mutant("lfm2_moe-f32", "layer_types", "null"),
        Mutant("lfm2_moe-f32", "layer_types", "[\"conv\", \"full_attention\", \"conv\", \"mamba\"]"),
        Mutant("lfm2_moe-f32", "conv_L_cache", "0"),
        Mutant("lfm2_moe-f32", "norm_eps", "0.0"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Lfm2MoeConfig has no rule for absent layer types either.
    @Test func layerTypesAreRequired() throws {
        try EditedFixture("lfm2_moe-f32") { $0["layer_types"] = nil }.expectRefused(naming: "layer_types")
    }

    /// Layer 0 is a dense SwiGLU (num_dense_layers 1), the others route to
    /// 2 of 8 experts by sigmoid scores plus the stored expert_bias, weights
    /// over their sum + 1e-6, times routed_scaling_factor; without
    /// use_expert_bias the bias is not read.
    @Test func denseThenRoutedLayers() throws {
        let model = try EditedFixture("lfm2_moe-f32").load()
        guard case .gated? = try model.block(0).mlp?.feedForward else {
            Issue.record("layer 0 is not dense")
            return
        }
        guard case .mixture(let moe)? = try model.block(1).mlp?.feedForward, case .groupLimited(let rule) = moe.rule else {
            Issue.record("layer 1 is not routed")
            return
        }
        #expect(moe.experts.count == 8 && moe.expertsPerToken == 2 && moe.sharedExperts.isEmpty)
        #expect(rule.selectionBias?.count == 8 && rule.normalizesWeights && rule.scalingFactor == 1.5 && rule.denominatorEpsilon == 1e-6)
        guard case .sigmoid = rule.scoring else {
            Issue.record("not sigmoid scores")
            return
        }
        let unbiased = try EditedFixture("lfm2_moe-f32") { $0["use_expert_bias"] = false }.load()
        guard case .mixture(let plain)? = try unbiased.block(1).mlp?.feedForward, case .groupLimited(let plainRule) = plain.rule else {
            Issue.record("layer 1 is not routed")
            return
        }
        #expect(plainRule.selectionBias == nil)
    }

    /// A block-drop export renumbers num_dense_layers, also when config.json
    /// leaves it to its default (2), which it then writes.
    @Test func exportRenumbersTheDenseLayers() throws {
        let exported = try EditedFixture("lfm2_moe-f32").exportedConfig(droppingBlocks: [0])
        #expect((exported["num_dense_layers"] as? NSNumber)?.intValue == 0)
        #expect(exported["layer_types"] as? [String] == ["full_attention", "conv", "full_attention"])
        // By default layers 0 and 1 are dense: the config drops layer 1's MLP, whose weights are routed.
        let byDefault = try EditedFixture("lfm2_moe-f32") {
            $0["num_dense_layers"] = nil
            $0["drop_mlp_list"] = [1]
        }
        let renumbered = try byDefault.exportedConfig(droppingBlocks: [0])
        #expect((renumbered["num_dense_layers"] as? NSNumber)?.intValue == 1)
    }

    /// Every score of the fixture close to transformers'.
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers("lfm2_moe-f32")
    }
}

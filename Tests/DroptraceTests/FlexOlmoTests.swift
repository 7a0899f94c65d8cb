@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// FlexOlmo (`flex_olmo`): its config refusals and FlexOlmoConfig's
/// defaults, OLMo-2's post-norm block and whole-projection q/k norms around
/// OLMoE's mixture, `clip_qkv` not read. The scores themselves are checked
/// against transformers with every other family (`ScoringReferenceTests`,
/// `DropTests`).
@Suite struct FlexOlmoTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("flex_olmo-f32", "rms_norm_eps", "0"), Mutant("flex_olmo-f32", "rms_norm_eps", "-1e-6"),
        Mutant("flex_olmo-f32", "num_experts", "0"), Mutant("flex_olmo-f32", "num_experts", "-1"),
        Mutant("flex_olmo-f32", "num_experts", "1152921504606846976"), Mutant("flex_olmo-f32", "num_experts", "null"),
        Mutant("flex_olmo-f32", "num_experts_per_tok", "0"), Mutant("flex_olmo-f32", "num_experts_per_tok", "5"),
        Mutant("flex_olmo-f32", "num_experts_per_tok", "null"), Mutant("flex_olmo-f32", "norm_topk_prob", "null"),
        // Two spellings of one setting that disagree.
        Mutant("flex_olmo-f32", "num_local_experts", "3", key: "num_experts"),
        // Sizes the tensors contradict.
        Mutant("flex_olmo-f32", "num_experts", "8"), Mutant("flex_olmo-f32", "intermediate_size", "32"),
        Mutant("flex_olmo-f32", "head_dim", "16"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Each branch ends at its RMSNorm and none normalises its input; the
    /// q/k norms span the whole projections ([heads · head_dim],
    /// [kv_heads · head_dim]) before rotary, without a clamp; every MLP is a
    /// softmax top-k mixture, renormalised as config.json says.
    @Test func olmo2BlockAroundOlmoeExperts() throws {
        let model = try EditedFixture("flex_olmo-f32").load(), config = try FixtureFiles.config("flex_olmo-f32")
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            let attention = try #require(block.attention), mlp = try #require(block.mlp)
            #expect(attention.inputNorm == nil && attention.outputNorm != nil)
            #expect(mlp.inputNorm == nil && mlp.outputNorm != nil)
            guard case .acrossHeads(.rms(let query, _), .rms(let key, _))? = attention.attention.queryKeyNorm else {
                Issue.record("layer \(layer): no q/k RMSNorms across heads")
                continue
            }
            #expect(query.count == attention.attention.layout.queryWidth && key.count == attention.attention.layout.keyWidth)
            #expect(attention.attention.clip == nil && !attention.attention.queryKeyNormAfterRotary)
            let moe = try #require(try mlpMixture(model, layer: layer))
            #expect(moe.experts.count == config["num_experts"] as? Int && moe.expertsPerToken == config["num_experts_per_tok"] as? Int)
            guard case .softmaxTopK(let renormalize) = moe.rule else {
                Issue.record("layer \(layer): not softmax top-k")
                continue
            }
            #expect(renormalize == config["norm_topk_prob"] as? Bool && moe.sharedExperts.isEmpty)
        }
    }

    /// `clip_qkv` is not a FlexOlmoConfig key and its attention does not
    /// clamp: a value in config.json, even one OLMoE refuses, changes nothing.
    @Test func clipQKVIsNotRead() throws {
        let plain = try EditedFixture("flex_olmo-f32").attentionScores()
        #expect(try EditedFixture("flex_olmo-f32") { $0["clip_qkv"] = 0.01 }.attentionScores() == plain)
        #expect(try EditedFixture("flex_olmo-f32") { $0["clip_qkv"] = -1.5 }.attentionScores() == plain)
    }

    /// What config.json leaves out takes FlexOlmoConfig's defaults: the
    /// rotary base 500000, 7 experts (which the tensors contradict), 5 per
    /// token (more than the fixture's 4), weights not renormalised,
    /// epsilon 1e-6.
    @Test func omittedKeysTakeFlexOlmoConfigDefaults() throws {
        func rotary(_ change: @escaping (inout [String: Any]) -> Void) throws -> RotaryEmbedding {
            try #require(try EditedFixture("flex_olmo-f32", change).load().block(0).attention?.attention.rotary)
        }
        let base = try rotary { $0["rope_parameters"] = nil }
        #expect(base.inverseFrequencies == (try rotary { _ in }).inverseFrequencies)
        #expect(base.inverseFrequencies != (try rotary { $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 10_000.0] })
            .inverseFrequencies)
        try EditedFixture("flex_olmo-f32") { $0["num_experts"] = nil }.expectRefused(naming: "num_experts")
        try EditedFixture("flex_olmo-f32") { $0["num_experts_per_tok"] = nil }.expectRefused(naming: "num_experts_per_tok")
        let unnormalised = try EditedFixture("flex_olmo-f32") { $0["norm_topk_prob"] = nil }.load()
        guard case .softmaxTopK(let renormalize)? = try mlpMixture(unnormalised, layer: 0)?.rule else {
            Issue.record("not softmax top-k")
            return
        }
        #expect(!renormalize)
        let eps = try EditedFixture("flex_olmo-f32") { $0["rms_norm_eps"] = nil }.attentionScores()
        #expect(eps == (try EditedFixture("flex_olmo-f32") { $0["rms_norm_eps"] = 1e-6 }.attentionScores()))
        // The alias alone is the expert count.
        let aliased = try EditedFixture("flex_olmo-f32") { $0["num_local_experts"] = $0.removeValue(forKey: "num_experts") }.load()
        #expect(try mlpMixture(aliased, layer: 0)?.experts.count == 4)
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("flex_olmo-f32")
    }

    /// Fused 3-D experts score exactly as the per-expert tensors `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike("flex_olmo-f32")
    }
}

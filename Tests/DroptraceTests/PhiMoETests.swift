@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// PhiMoE (`phimoe`): its config refusals and PhimoeConfig's defaults, the
/// LayerNorms and biases, LongRoPE with PhiMoE's mscales, and the
/// sparsemixer's routing. The scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`, `DropTests`).
@Suite struct PhiMoETests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("phimoe-f32", "rms_norm_eps", "0"), Mutant("phimoe-f32", "rms_norm_eps", "-1e-5"),
        Mutant("phimoe-f32", "num_local_experts", "0"), Mutant("phimoe-f32", "num_local_experts", "-1"),
        Mutant("phimoe-f32", "num_local_experts", "1"), Mutant("phimoe-f32", "num_local_experts", "4611686018427387904"),
        Mutant("phimoe-f32", "router_jitter_noise", "-0.1"), Mutant("phimoe-f32", "router_jitter_noise", "1e39"),
        Mutant("phimoe-f32", "router_jitter_noise", "null"), Mutant("phimoe-f32", "router_jitter_noise", "\"0.3\""),
        Mutant("phimoe-f32", "attention_bias", "1"), Mutant("phimoe-f32", "lm_head_bias", "null"),
        // Sizes the tensors contradict.
        Mutant("phimoe-f32", "num_local_experts", "16"), Mutant("phimoe-f32", "intermediate_size", "32"),
        Mutant("phimoe-f32", "num_attention_heads", "8"),
        // LongRoPE as PhimoeConfig validates it: both mscales numbers, factors per rotated pair.
        Mutant("phimoe-f32", "rope_parameters.short_mscale", "null"), Mutant("phimoe-f32", "rope_parameters.long_mscale", "\"1\""),
        Mutant("phimoe-f32", "rope_parameters.long_mscale", "1e39"),
        Mutant("phimoe-f32", "rope_parameters.short_factor", "[1.0, 1.0]"), Mutant("phimoe-f32", "rope_parameters.short_factor", "null"),
        Mutant("phimoe-f32", "rope_parameters.rope_theta", "0"),
        Mutant("phimoe-f32", "rope_parameters.original_max_position_embeddings", "0"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// LayerNorms with biases before both branches, q/k/v and o_proj biases,
    /// every MLP the sparsemixer over the configured experts, two per token.
    @Test func blockAsPhiMoEBuilds() throws {
        let model = try EditedFixture("phimoe-f32").load()
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            guard case .layer(_, let bias, _)? = block.attention?.inputNorm, case .layer? = block.mlp?.inputNorm,
                  case .fused(let qkv)? = block.attention?.attention.projection
            else {
                Issue.record("layer \(layer): not LayerNorms around a fused q/k/v attention")
                continue
            }
            #expect(bias.contains { $0 != 0 })
            #expect(qkv.bias != nil && block.attention?.attention.output.bias != nil)
            let moe = try #require(try mlpMixture(model, layer: layer))
            guard case .sparseMixer(let eps) = moe.rule else {
                Issue.record("layer \(layer): not routed by the sparsemixer")
                continue
            }
            #expect(eps == 0.3 && moe.expertsPerToken == 2 && moe.experts.count == 8 && moe.sharedExperts.isEmpty)
        }
        // Without attention_bias the projections have none.
        let plain = try EditedFixture("phimoe-f32") { $0["attention_bias"] = false }.load().block(0)
        guard case .fused(let qkv)? = plain.attention?.attention.projection else { return }
        #expect(qkv.bias == nil && plain.attention?.attention.output.bias == nil)
    }

    /// The sparsemixer on hand-made logits: the first expert weighted over
    /// the logits within its band, the second over the rest within the
    /// second's band, the first left out; no band keeps only the chosen one.
    @Test func sparseMixerMasksOutsideTheJitterBand() throws {
        let experts = (0..<4).map { _ in FeedForward.gated(
            gateUp: Linear(weight: [Float](repeating: 0, count: 2), bias: nil, inFeatures: 1, outFeatures: 2),
            down: Linear(weight: [0], bias: nil, inFeatures: 1, outFeatures: 1), activation: .silu) }
        func route(_ logits: [Float], eps: Double) -> MixtureOfExperts.Routing {
            let router = Linear(weight: [Float](repeating: 0, count: 4), bias: nil, inFeatures: 1, outFeatures: 4)
            return MixtureOfExperts(router: router, experts: experts, expertsPerToken: 2, rule: .sparseMixer(jitterEps: eps))
                .sparseMixer(Matrix(rows: 1, cols: 4, data: logits), jitterEps: eps)
        }
        // Band 2·0.1: (4 − 3.5) / 4 = 0.125 keeps 3.5, (4 − 1) / 4 = 0.75 drops 1; for the second pick
        // (3.5 − 3) / 3.5 keeps 3, (3.5 − 1) / 3.5 drops 1, the first is out.
        let routing = route([1, 4, 3.5, 3], eps: 0.1)
        #expect(routing.experts == [1, 2])
        let first = exp(Float(0)) / (exp(Float(0)) + exp(Float(-0.5)))
        let second = exp(Float(0)) / (exp(Float(0)) + exp(Float(-0.5)))
        #expect(abs(routing.weights[0] - first) < 1e-6 && abs(routing.weights[1] - second) < 1e-6)
        // No band: each pick alone, weight 1.
        let narrow = route([1, 4, 3.5, 3], eps: 0)
        #expect(narrow.experts == [1, 2] && narrow.weights == [1, 1])
        // Equal logits: the lower index first.
        #expect(route([2, 2, 2, 0], eps: 0).experts == [0, 1])
    }

    /// The rotary table of the fixture with config.json changed by `change`.
    func rotary(_ change: @escaping (inout [String: Any]) -> Void) throws -> RotaryEmbedding {
        try #require(try EditedFixture("phimoe-f32", change).load().block(0).attention?.attention.rotary)
    }

    /// LongRoPE as PhiMoE runs it: the short frequencies at every length,
    /// cos and sin times short_mscale, or long_mscale past the original
    /// length; the default rotation has neither.
    @Test func longRoPEScalesByTheMscales() throws {
        let fixture = try rotary { _ in }
        let long = try #require(fixture.longContext)
        #expect(fixture.attentionScaling == 1.1 && long.attentionScaling == 1.3)
        #expect(long.inverseFrequencies == fixture.inverseFrequencies && long.beyondLength == 24)
        let other = try rotary {
            var rope = $0["rope_parameters"] as! [String: Any]
            rope["long_factor"] = [Double](repeating: 7, count: 6)
            rope["attention_factor"] = 3.0
            $0["rope_parameters"] = rope
        }
        #expect(other.inverseFrequencies == fixture.inverseFrequencies && other.attentionScaling == 1.1)
        let plain = try rotary { $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 10_000.0] }
        #expect(plain.attentionScaling == 1 && plain.longContext == nil && plain.inverseFrequencies != fixture.inverseFrequencies)
        try EditedFixture("phimoe-f32", rope: "long_mscale", nil).expectRefused(naming: "long_mscale")
        try EditedFixture("phimoe-f32", rope: "rope_type", "linear").expectRefused(naming: "rope type")
    }

    /// What config.json leaves out takes PhimoeConfig's defaults: the rotary
    /// base 1e6, router_jitter_noise 0.01, no biases (which the fixture's
    /// tensors then leave unread), 16 experts (which they contradict); the
    /// router picks two experts whatever num_experts_per_tok says.
    @Test func omittedKeysTakePhimoeConfigDefaults() throws {
        func rope(_ theta: Double?) -> (inout [String: Any]) -> Void {
            { $0["rope_parameters"] = theta.map { ["rope_type": "default", "rope_theta": $0] } ?? ["rope_type": "default"] }
        }
        #expect(try rotary(rope(nil)).inverseFrequencies == (try rotary(rope(1_000_000))).inverseFrequencies)
        #expect(try rotary(rope(nil)).inverseFrequencies != (try rotary(rope(10_000))).inverseFrequencies)
        let defaults = try EditedFixture("phimoe-f32") {
            $0["router_jitter_noise"] = nil
            $0["attention_bias"] = nil
            $0["num_experts_per_tok"] = 1
        }.load()
        let moe = try #require(try mlpMixture(defaults, layer: 0))
        guard case .sparseMixer(let eps) = moe.rule else {
            Issue.record("not routed by the sparsemixer")
            return
        }
        #expect(eps == 0.01 && moe.expertsPerToken == 2)
        guard case .fused(let qkv)? = try defaults.block(0).attention?.attention.projection else { return }
        #expect(qkv.bias == nil)
        try EditedFixture("phimoe-f32") { $0["num_local_experts"] = nil }.expectRefused(naming: "num_local_experts")
    }

    /// Router and experts against transformers' MoE block (`routing_check`);
    /// the sparsemixer's second pick may outweigh its first.
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("phimoe-f32", unordered: true)
    }

    /// Fused 3-D experts (`mlp.experts.gate_up_proj` / `down_proj`, the
    /// router under `mlp.`) score exactly as the per-expert tensors
    /// `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike(
            "phimoe-f32", from: "block_sparse_moe.experts.", router: "block_sparse_moe.gate", names: ("w1", "w3", "w2"))
    }
}

@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// DBRX's defaults as DbrxConfig, DbrxAttentionConfig and DbrxFFNConfig have
/// them, its refusals named under their sections, and its routing (the top-k
/// weights divided by their p-norm); the scores themselves are checked
/// against transformers with every other family (`ScoringReferenceTests`).
@Suite struct DbrxTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("dbrx-f32", "d_model", "0"),
        Mutant("dbrx-f32", "n_heads", "5"),
        Mutant("dbrx-f32", "n_layers", "null"),
        Mutant("dbrx-f32", "vocab_size", "-1"),
        Mutant("dbrx-f32", "max_seq_len", "\"x\""),
        Mutant("dbrx-f32", "tie_word_embeddings", "true"),
        Mutant("dbrx-f32", "head_dim", "-3"),
        Mutant("dbrx-f32", "head_dim", "16"),
        Mutant("dbrx-f32", "ffn_config", "[1]", key: "ffn_config"),
        Mutant("dbrx-f32", "ffn_config.moe_top_k", "null", key: "ffn_config.moe_top_k"),
        Mutant("dbrx-f32", "attn_config.kv_n_heads", "3", key: "attn_config.kv_n_heads"),
        Mutant("dbrx-f32", "attn_config.kv_n_heads", "null", key: "attn_config.kv_n_heads"),
        Mutant("dbrx-f32", "attn_config.clip_qkv", "-1.0", key: "attn_config.clip_qkv"),
        Mutant("dbrx-f32", "attn_config.clip_qkv", "null", key: "attn_config.clip_qkv"),
        Mutant("dbrx-f32", "attn_config.rope_theta", "null", key: "attn_config.rope_theta"),
        Mutant("dbrx-f32", "attn_config.rope_theta", "10000.0", key: "attn_config.rope_theta"),
        Mutant("dbrx-f32", "ffn_config.moe_top_k", "0", key: "ffn_config.moe_top_k"),
        Mutant("dbrx-f32", "ffn_config.moe_top_k", "5", key: "ffn_config.moe_top_k"),
        Mutant("dbrx-f32", "ffn_config.moe_num_experts", "0", key: "ffn_config.moe_num_experts"),
        Mutant("dbrx-f32", "ffn_config.moe_num_experts", "8", key: "ffn_config.moe_num_experts"),
        Mutant("dbrx-f32", "ffn_config.ffn_hidden_size", "-1", key: "ffn_config.ffn_hidden_size"),
        Mutant("dbrx-f32", "ffn_config.ffn_hidden_size", "64", key: "ffn_config.ffn_hidden_size"),
        Mutant("dbrx-f32", "ffn_config.moe_normalize_expert_weights", "0.0", key: "ffn_config.moe_normalize_expert_weights"),
        Mutant("dbrx-f32", "ffn_config.moe_normalize_expert_weights", "-2.0", key: "ffn_config.moe_normalize_expert_weights"),
        Mutant("dbrx-f32", "ffn_config.ffn_act_fn.name", "\"nonesuch\"", key: "ffn_config.ffn_act_fn.name"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// A fused bias-free Wqkv with grouped-query heads clamped by clip_qkv,
    /// rotary, bias-free LayerNorms, and the mixture's experts cut from the
    /// fused w1 / v1 / w2 routed by the p-norm rule of the config's p.
    @Test func blockAsDbrxBuilds() throws {
        let model = try EditedFixture("dbrx-f32").load()
        let block = try model.block(0)
        let attention = try #require(block.attention?.attention)
        guard case .fused(let qkv) = attention.projection, case .mixture(let moe)? = block.mlp?.feedForward else {
            Issue.record("not a fused Wqkv and a mixture")
            return
        }
        #expect(qkv.bias == nil && qkv.outFeatures == 48 + 2 * 2 * 12 && attention.output.bias == nil)
        #expect(attention.clip == 0.5 && attention.rotary != nil)
        #expect(moe.experts.count == 4 && moe.expertsPerToken == 2)
        guard case .softmaxTopKOverPNorm(let p) = moe.rule else {
            Issue.record("not the p-norm rule")
            return
        }
        #expect(p == 2)
        guard case .gated(let gateUp, let down, let activation) = moe.experts[1] else {
            Issue.record("not a GLU expert")
            return
        }
        #expect(gateUp.outFeatures == 64 && down.inFeatures == 32 && down.outFeatures == 48 && activation == .silu)
        guard case .layer(_, let bias, _)? = block.attention?.inputNorm else {
            Issue.record("not a LayerNorm")
            return
        }
        #expect(bias.allSatisfy { $0 == 0 })
        #expect(model.layerNaming.attention == ["norm_attn_norm.attn.", "norm_attn_norm.norm_1."])
        #expect(model.maxPositions == 256)
    }

    /// DbrxFFNConfig's defaults: a null moe_normalize_expert_weights leaves
    /// the top-k probabilities as they are; a null ffn_act_fn is silu.
    @Test func unnormalisedWeightsAndDefaultActivation() throws {
        let model = try EditedFixture("dbrx-f32") { config in
            var ffn = config["ffn_config"] as! [String: Any]
            ffn["moe_normalize_expert_weights"] = NSNull()
            ffn["ffn_act_fn"] = NSNull()
            config["ffn_config"] = ffn
        }.load()
        guard case .mixture(let moe)? = try model.block(0).mlp?.feedForward,
              case .softmaxTopK(let renormalize) = moe.rule, case .gated(_, _, let activation) = moe.experts[0]
        else {
            Issue.record("not the unnormalised softmax rule")
            return
        }
        #expect(!renormalize && activation == .silu)
    }

    /// Key/value-cache decoding (the clamped q/k/v cached after rotary)
    /// equals the batched forward, also with modules dropped.
    @Test func cachedDecodingMatchesTheForward() throws {
        let model = try EditedFixture("dbrx-f32").load()
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12,
            plans: [.none, DropPlan(attention: [1]), DropPlan(blocks: [0]), DropPlan(mlp: [3])], label: "dbrx-f32")
    }

    /// The top-k weights divided by their p-norm: p = 1 is their sum, p = 2
    /// the root of their squares' sum.
    @Test func topKWeightsAreDividedByTheirPNorm() throws {
        let router = Linear(weight: [1, 0, 0, 1, 0, 0], bias: nil, inFeatures: 2, outFeatures: 3)
        let identity = FeedForward.plain(
            up: Linear(weight: [1, 0, 0, 1], bias: nil, inFeatures: 2, outFeatures: 2),
            down: Linear(weight: [1, 0, 0, 1], bias: nil, inFeatures: 2, outFeatures: 2), activation: .relu)
        let x = Matrix(rows: 1, cols: 2, data: [1.0, 0.5])
        for p in [1.0, 2.0, 3.0] {
            let moe = MixtureOfExperts(
                router: router, experts: Array(repeating: identity, count: 3), expertsPerToken: 2, rule: .softmaxTopKOverPNorm(p: p))
            let weights = moe.route(x).weights.map(Double.init)
            let norm = pow(weights.map { pow($0, p) }.reduce(0, +), 1 / p)
            #expect(abs(norm - 1) < 1e-6, "p = \(p)")
            #expect(moe.route(x).experts == [0, 1])
        }
    }
}

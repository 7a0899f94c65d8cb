@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// A.X K2 (`axk2`): DeepSeek-V3.2's model with AXK2Config's defaults, the
/// queries and output gate fused in `q_gate_proj`, gated norms and A.X K2's
/// router, without expert groups (`axk2-f32`, A.X-K2-Light's layout) and
/// with them (`axk2_grouped-f32`). The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct AXK2Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "axk2-f32", grouped = "axk2_grouped-f32"
    static let fixtures = [name, grouped]

    static let mutants: [Mutant] = [
        // AXK2Config requires a positive q_lora_rank (the indexer and gate read the latent).
        Mutant(name, "q_lora_rank", "null"), Mutant(name, "q_lora_rank", "0"),
        // Groups are set together, and split the experts evenly, keeping at most all.
        Mutant(name, "n_group", "2"), Mutant(name, "topk_group", "1"),
        Mutant(grouped, "n_group", "3"), Mutant(grouped, "n_group", "0"), Mutant(grouped, "topk_group", "5"),
        Mutant(grouped, "n_group", "null", key: "topk_group"), Mutant(grouped, "topk_group", "null", key: "n_group"),
        // Two experts per group are summed: one is too few.
        Mutant(grouped, "n_group", "8"),
        // The gates' width: none, or one the tensors contradict.
        Mutant(name, "gated_norm_rank", "0"), Mutant(name, "gated_norm_rank", "null"), Mutant(name, "gated_norm_rank", "8"),
        // q_gate_proj's rows are each head's query and its value-wide gate.
        Mutant(name, "v_head_dim", "16"), Mutant(name, "qk_nope_head_dim", "4"),
        Mutant(name, "kv_lora_rank", "8"), Mutant(name, "index_topk", "0"), Mutant(name, "index_n_heads", "16"),
        Mutant(name, "mlp_layer_types", "[\"dense\", \"routed\", \"sparse\", \"sparse\"]"),
        Mutant(name, "num_experts_per_tok", "9"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every input norm is gated, the post-attention norm on the routed
    /// layers only; the attention's output gate reads the query latent
    /// beside q_a_proj's output, as its queries do.
    @Test func gatedNormsAndTheFusedQueryGate() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            guard case .sigmoidGated(.rms, let down, let up)? = block.attention?.inputNorm else {
                Issue.record("layer \(index): input norm not gated")
                continue
            }
            #expect(down.outFeatures == 4 && up.inFeatures == 4)
            switch block.mlp?.inputNorm {
            case .sigmoidGated?: #expect(index > 0, "dense layer \(index) gated")
            case .rms?: #expect(index == 0, "routed layer \(index) not gated")
            default: Issue.record("layer \(index): no post-attention norm")
            }
            let attention = try #require(block.attention?.attention)
            #expect(attention.outputGateReadsQueryUpInput && attention.indexer != nil)
            guard case .latent(let latent) = attention.projection, case .lowRankBesideRaw(let qDown, _, let qUp) = latent.query else {
                Issue.record("layer \(index): not the fused query path")
                continue
            }
            #expect(qUp.inFeatures == 2 * qDown.outFeatures && attention.outputGate?.inFeatures == 2 * qDown.outFeatures)
        }
    }

    /// DeepSeek-V3.2's rotary embedding (A.X K1/K2's, GLM-5's) rotates the
    /// whole rope part whatever `partial_rotary_factor` says: 0.5 scores as
    /// without it (transformers 5.25 runs it so), where Glm4MoeLite's reads it.
    @Test(arguments: [Self.name, "deepseek_v32-f32", "glm_moe_dsa-f32"])
    func partialRotaryFactorIsNotRead(fixture: String) throws {
        #expect(try scores(EditedFixture(fixture, rope: "partial_rotary_factor", 0.5)) == scores(EditedFixture(fixture)))
        // Past Int too (a trap on the unread width before).
        #expect(try scores(EditedFixture(fixture, rope: "partial_rotary_factor", -9.2e18)) == scores(EditedFixture(fixture)))
    }

    /// Without mlp_layer_types the legacy keys decide (first_k_dense_replace
    /// 1, moe_layer_freq 1: the fixture's types); moe_layer_freq 0 is
    /// refused; head_dim and rope_interleave are not read.
    @Test func legacyKeysGiveTheMLPTypes() throws {
        let base = try scores(EditedFixture(Self.name))
        #expect(try scores(EditedFixture(Self.name) { $0["mlp_layer_types"] = nil }) == base)
        let everyOther = try EditedFixture(Self.name) { $0["mlp_layer_types"] = nil; $0["moe_layer_freq"] = 2 }.load()
        #expect(throws: DroptraceError.self) { _ = try everyOther.block(1) }
        try EditedFixture(Self.name) { $0["mlp_layer_types"] = nil; $0["moe_layer_freq"] = 0 }.expectRefused(naming: "moe_layer_freq")
        #expect(try scores(EditedFixture(Self.name) { $0["head_dim"] = 99; $0["rope_interleave"] = false }) == base)
    }

    /// Null groups (AXK2Config's default) route over all experts, as one
    /// group kept of one does; the grouped fixture's groups move its scores.
    @Test func groupsAreOptional() throws {
        let base = try scores(EditedFixture(Self.name))
        #expect(try scores(EditedFixture(Self.name) { $0["n_group"] = nil; $0["topk_group"] = nil }) == base)
        #expect(try scores(EditedFixture(Self.name) { $0["n_group"] = 1; $0["topk_group"] = 1 }) == base)
        let grouped = try scores(EditedFixture(Self.grouped))
        let ungrouped = try scores(EditedFixture(Self.grouped) { $0["n_group"] = NSNull(); $0["topk_group"] = NSNull() })
        #expect(zip(grouped, ungrouped).map { abs($0 - $1) }.max()! > 1e-4)
    }

    /// The other groups' experts rank at 0.0: a kept group of one expert
    /// still gives each token its two, one of them from another group.
    @Test func expertsOutsideTheKeptGroupsRankAtZero() throws {
        let routing = GroupLimitedTopK(
            scoring: .sigmoid, groupScore: .best, groups: 4, groupsPerToken: 1, selectionBias: [0, -0.9, 0, 0, 0, 0, 0, 0],
            normalizesWeights: false, scalingFactor: 1)
        var zeroed = routing
        zeroed.excludedGroupScore = 0
        // Expert 0 (group 0) leads; expert 1's biased score is below zero.
        let logits = Matrix(rows: 1, cols: 8, data: [3, 0, -1, -1, -2, -2, -3, -3])
        #expect(Set(routing.route(logits, expertsPerToken: 2).experts) == [0, 1])
        let chosen = zeroed.route(logits, expertsPerToken: 2).experts
        #expect(chosen.contains(0) && !chosen.contains(1) && chosen.count == 2)
    }

    /// Prefill longer than index_topk, then key/value-cache decoding: both
    /// equal the full forward (the output gate read from the cached rows' latent).
    @Test(arguments: fixtures)
    func prefillAndDecodingMatchTheForward(_ fixture: String) throws {
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture(fixture).load(), tokens: 30, prefill: 20, plans: [.none, DropPlan(attention: [2]), DropPlan(mlp: [1])],
            label: fixture)
    }

    /// A block-dropped export keeps the kept layers' MLP and indexed layer types.
    @Test func blockDropRewritesLayerTypes() throws {
        let exported = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0])
        #expect(exported["layer_types"] as? [String] == Array(repeating: "indexed_attention", count: 3))
        #expect(exported["mlp_layer_types"] as? [String] == ["sparse", "sparse", "sparse"])
    }

    /// The released names (q_gate_proj as `self_attn.q_b_proj`, the gates
    /// as `W_down` / `W_up`), which transformers saves, are read as it renames them.
    @Test func releasedNamesAreRead() throws {
        let checkpoint = try Checkpoint(directory: FixtureFiles.model(Self.name))
        let p = "model.layers.1."
        for (read, stored) in [
            ("self_attn.q_gate_proj", "self_attn.q_b_proj"), ("input_layernorm.mlp.fc1", "input_layernorm.W_down"),
            ("post_attention_layernorm.mlp.fc2", "post_attention_layernorm.W_up"),
        ] {
            #expect(checkpoint.quotedName(p + read + ".weight") == "'\(p)\(stored).weight' (read as '\(p)\(read).weight')")
        }
    }
}

@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// DeepSeek Sparse Attention's families, DeepSeek-V3.2 (`deepseek_v32`) and
/// GLM-5 (`glm_moe_dsa`): their config refusals and their config classes'
/// defaults, and each query attending only to the `index_topk` keys its
/// indexer chooses, in the full forward, in prefill and in key/value-cache
/// decoding. The scores themselves are checked against transformers with
/// every other family (`DropTests` and the reference suites).
@Suite struct SparseAttentionTests {
    static let fixtures = ["deepseek_v32-f32", "glm_moe_dsa-f32"]
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        // No key kept leaves a query nothing to attend to.
        Mutant("deepseek_v32-f32", "index_topk", "0"), Mutant("deepseek_v32-f32", "index_topk", "-1"),
        Mutant("deepseek_v32-f32", "index_topk", "null"), Mutant("deepseek_v32-f32", "index_n_heads", "0"),
        Mutant("deepseek_v32-f32", "index_head_dim", "0"),
        // The indexer rotates qk_rope_head_dim (8) columns of each head.
        Mutant("deepseek_v32-f32", "index_head_dim", "4"),
        Mutant("deepseek_v32-f32", "index_n_heads", "4611686018427387904"),
        // Sizes the indexer's tensors contradict.
        Mutant("deepseek_v32-f32", "index_n_heads", "16"), Mutant("deepseek_v32-f32", "index_head_dim", "32"),
        // The attention and its indexer read the query latent.
        Mutant("deepseek_v32-f32", "q_lora_rank", "null"), Mutant("deepseek_v32-f32", "q_lora_rank", "0"),
        // transformers' cache builds an indexed layer per entry.
        Mutant("deepseek_v32-f32", "layer_types", #"["full_attention", "indexed_attention", "indexed_attention", "indexed_attention"]"#),
        Mutant("deepseek_v32-f32", "layer_types", #"["indexed_attention"]"#),
        Mutant("deepseek_v32-f32", "first_k_dense_replace", "-1"), Mutant("deepseek_v32-f32", "first_k_dense_replace", "null"),
        Mutant("deepseek_v32-f32", "n_group", "3"), Mutant("deepseek_v32-f32", "num_experts_per_tok", "9"),
        Mutant("deepseek_v32-f32", "kv_lora_rank", "8"),
        Mutant("glm_moe_dsa-f32", "index_topk", "0"), Mutant("glm_moe_dsa-f32", "index_head_dim", "4"),
        Mutant("glm_moe_dsa-f32", "q_lora_rank", "null"),
        // A shared indexer layer reuses an earlier full layer's top-k: layer 0 has none.
        Mutant("glm_moe_dsa-f32", "indexer_types", #"["shared", "full", "full", "full"]"#),
        Mutant("glm_moe_dsa-f32", "indexer_types", #"["full", "full"]"#),
        Mutant("glm_moe_dsa-f32", "indexer_types", #"["full", "skip", "full", "full"]"#),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// GlmMoeDsaConfig's rule without `indexer_types` (absent or null):
    /// `index_topk_pattern` ("F" full, "S" shared, or the names), else every
    /// `index_topk_freq`-th layer from `index_skip_topk_offset` (2) runs its
    /// indexer and the others share; a frequency of 1 (the default) or less
    /// makes every layer full. (The fixture's shared layers keep their
    /// indexer tensors, which transformers leaves unread, as droptrace does.)
    @Test func indexerTypesFollowGlmMoeDsaConfig() throws {
        func edited(_ values: [String: Any]) throws -> EditedFixture {
            try EditedFixture("glm_moe_dsa-f32") { config in
                config["indexer_types"] = nil
                for (key, value) in values { config[key] = value }
            }
        }
        let base = try scores(EditedFixture("glm_moe_dsa-f32"))
        for values: [String: Any] in [
            [:], ["indexer_types": NSNull()], ["index_topk_freq": 1], ["index_topk_freq": 0],
            ["index_topk_freq": 3, "index_skip_topk_offset": 9], ["index_topk_pattern": "FFFF"],
        ] {
            #expect(try scores(edited(values)) == base, "\(values)")
        }
        // Layer 2 of 4 shares with a frequency of 2 from offset 2.
        let sharing = try scores(edited(["indexer_types": ["full", "full", "shared", "full"]]))
        #expect(sharing != base)
        for values: [String: Any] in [
            ["index_topk_pattern": "FFSF"], ["index_topk_pattern": ["full", "full", "shared", "full"]], ["index_topk_freq": 2],
        ] {
            #expect(try scores(edited(values)) == sharing, "\(values)")
        }
        try edited(["index_topk_pattern": "SFFF"]).expectRefused(naming: "index_topk_pattern")
        // GlmMoeDsaConfig maps every character (KeyError past the layers too) and computes with a null (TypeError).
        try edited(["index_topk_pattern": "FFFFX"]).expectRefused(naming: "index_topk_pattern")
        try edited(["index_topk_freq": NSNull()]).expectRefused(naming: "index_topk_freq")
        try edited(["index_skip_topk_offset": NSNull()]).expectRefused(naming: "index_skip_topk_offset")
        // Layer 0 shares with an offset of -1, and has no full layer before it.
        try edited(["index_topk_freq": 3, "index_skip_topk_offset": -1]).expectRefused(naming: "index_topk_freq")
        try edited(["index_topk_freq": 2, "index_skip_topk_offset": Int.min]).expectRefused(naming: "index_topk_freq")
    }

    /// The fixture's index_topk (12) is shorter than its sequences: the
    /// indexer's choice moves the scores, and a top-k as long as the
    /// longest sequence is dense attention.
    @Test(arguments: fixtures)
    func indexerChoosesTheKeys(_ fixture: String) throws {
        let config = try FixtureFiles.config(fixture)
        let topK = config["index_topk"] as! Int, longest = FixtureFiles.jsonlSequences().map(\.count).max()!
        #expect(topK < longest)
        let sparse = try scores(EditedFixture(fixture))
        let dense = try scores(EditedFixture(fixture) { $0["index_topk"] = longest })
        #expect(zip(sparse, dense).map { abs($0 - $1) }.max()! > 1e-4)
        #expect(try scores(EditedFixture(fixture) { $0["index_topk"] = 1_000_000 }) == dense)
    }

    /// What config.json leaves out takes DeepseekV32Config's defaults:
    /// index_topk 2048 (every key of the fixture's sequences), three dense
    /// layers (the fixture's router on layer 1 contradicts them); head_dim
    /// and rope_interleave are not read (the pairs always interleave).
    @Test func omittedKeysTakeDeepseekV32ConfigDefaults() throws {
        let longest = FixtureFiles.jsonlSequences().map(\.count).max()!
        let dense = try scores(EditedFixture("deepseek_v32-f32") { $0["index_topk"] = longest })
        #expect(try scores(EditedFixture("deepseek_v32-f32") { $0["index_topk"] = nil }) == dense)
        do {
            let model = try EditedFixture("deepseek_v32-f32") { $0["first_k_dense_replace"] = nil; $0["mlp_layer_types"] = nil }.load()
            _ = try model.block(1)
            Issue.record("layer 1 read as routed")
        } catch let error as DroptraceError {
            #expect(error.message.contains("layers.1.mlp"), "\(error)")
        }
        let base = try scores(EditedFixture("deepseek_v32-f32"))
        #expect(try scores(EditedFixture("deepseek_v32-f32") { $0["rope_interleave"] = false; $0["head_dim"] = 32 }) == base)
    }

    /// GlmMoeDsaConfig's defaults differ from DeepseekV32Config's: one
    /// group of experts (DeepSeek-V3.2's 8 groups cannot split the
    /// fixture's 8 experts to be scored by their best two), the indexer's
    /// index_topk 2048 and first_k_dense_replace 3 alike.
    @Test func omittedKeysTakeGlmMoeDsaConfigDefaults() throws {
        let ungrouped = try EditedFixture("glm_moe_dsa-f32") { $0["n_group"] = nil; $0["topk_group"] = nil }.load()
        #expect(ungrouped.layerCount == 4)
        try EditedFixture("deepseek_v32-f32") { $0["n_group"] = nil; $0["topk_group"] = nil }.expectRefused(naming: "n_group")
        let longest = FixtureFiles.jsonlSequences().map(\.count).max()!
        let dense = try scores(EditedFixture("glm_moe_dsa-f32") { $0["index_topk"] = longest })
        #expect(try scores(EditedFixture("glm_moe_dsa-f32") { $0["index_topk"] = nil }) == dense)
    }

    /// Keys of equal score at the top-k boundary are those torch.topk keeps
    /// on CPU: its nth_element for k · 64 > n, its partial_sort's heap
    /// beyond (torch 2.x: `torch.zeros(40).topk(5)` → 28, 26, 27, 25, 29;
    /// `torch.zeros(400).topk(5)` → 3, 4, 1, 0, 2; `x = [i % 3 for i in 0..<300]`,
    /// `x.topk(4)` → 8, 5, 11, 2; `[(7 i) % 5 for i in 0..<50]`, `topk(6)` →
    /// 12, 7, 42, 37, 32, 17), not the lowest positions.
    @Test func tiesAreBrokenAsTorchTopKBreaksThem() {
        func kept(_ values: [Float], _ k: Int) -> [Int] {
            var entries = values.enumerated().map { (value: $1, index: $0) }
            TorchTopK.select(&entries, k: k)
            return entries.prefix(k).map(\.index).sorted()
        }
        #expect(kept([Float](repeating: 0, count: 40), 5) == [25, 26, 27, 28, 29])
        #expect(kept([Float](repeating: 0, count: 400), 5) == [0, 1, 2, 3, 4])
        #expect(kept((0..<300).map { Float($0 % 3) }, 4) == [2, 5, 8, 11])
        #expect(kept((0..<50).map { Float(($0 * 7) % 5) }, 6) == [7, 12, 17, 32, 37, 42])
    }

    /// Prefill longer than index_topk, then key/value-cache decoding with
    /// the indexer's keys cached: both equal the full forward.
    @Test(arguments: fixtures)
    func prefillAndDecodingChooseTheForwardsKeys(_ fixture: String) throws {
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture(fixture).load(), tokens: 30, prefill: 20, plans: [.none, DropPlan(attention: [2])], label: fixture)
    }

    /// A block-dropped export keeps one indexed layer type (and GLM-5's
    /// indexer type) per kept layer.
    @Test(arguments: fixtures)
    func blockDropRewritesLayerTypes(_ fixture: String) throws {
        let exported = try EditedFixture(fixture).exportedConfig(droppingBlocks: [1])
        #expect(exported["layer_types"] as? [String] == Array(repeating: "indexed_attention", count: 3))
        #expect(exported["mlp_layer_types"] as? [String] == ["dense", "sparse", "sparse"])
        if fixture.hasPrefix("glm_moe_dsa") { #expect(exported["indexer_types"] as? [String] == ["full", "full", "full"]) }
    }
}

/// GLM-5's shared indexer layers (`glm_moe_dsa_shared-f32`: layers 1 and 3
/// reuse the top-k of layers 0 and 2). Scores, drops and decoding are checked
/// against transformers with every other fixture.
extension SparseAttentionTests {
    /// Index scores of -inf (here from a YaRN attention_factor near 2^63)
    /// rank below the masked later keys in the top-k; the indexer keeps none
    /// of those (a trap on an index past the sequence before): the pass runs
    /// or is refused in one line.
    @Test func minusInfinityScoresChooseNoLaterKey() throws {
        let fixture = try EditedFixture("mistral_large4-f32") { config in
            var text = config["text_config"] as! [String: Any]
            var rope = text["rope_parameters"] as! [String: Any]
            rope["attention_factor"] = 9.2e18
            text["rope_parameters"] = rope
            config["text_config"] = text
        }
        do { _ = try scores(fixture) } catch let error as DroptraceError { #expect(!error.message.contains("\n")) }
    }
}

@Suite struct SharedIndexerTests {
    static let name = "glm_moe_dsa_shared-f32"

    /// Shared layers have no indexer and reuse the last full layer's choice,
    /// which that layer stores.
    @Test func sharedLayersReuseTheLastFullLayersChoice() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let attention = try #require(try model.block(index).attention?.attention)
            let full = index % 2 == 0
            #expect((attention.indexer != nil) == full)
            #expect(attention.keySelectionSharing == (full ? .store(layer: index) : .reuse(layer: index - 1)))
        }
    }

    /// With modules dropped, a full layer whose attention is dropped still
    /// chooses for the shared layer after it; a shared layer whose full layer's
    /// block is dropped reuses the one before; none before is refused.
    @Test func sharingWithModulesDropped() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(try model.attentionSharing(skipping: DropPlan(attention: [2])).keySelections
            == [.store(layer: 0), .reuse(layer: 0), .storeOnly(layer: 2), .reuse(layer: 2)])
        #expect(try model.attentionSharing(skipping: DropPlan(attention: [3])).keySelections
            == [.store(layer: 0), .reuse(layer: 0), nil, nil])
        #expect(try model.attentionSharing(skipping: DropPlan(blocks: [2])).keySelections
            == [.store(layer: 0), .reuse(layer: 0), nil, .reuse(layer: 0)])
        #expect(throws: DroptraceError.self) { _ = try model.attentionSharing(skipping: DropPlan(blocks: [0])) }
        #expect(model.planProblem(DropPlan(blocks: [0])) != nil)
        let dropped = try model.block(2, skipping: DropPlan(attention: [2]))
        #expect(dropped.attention == nil && dropped.sharingProducer?.attention?.keySelectionSharing == .storeOnly(layer: 2))
        #expect(model.exportProblem(DropPlan(attention: [2])) != nil && model.exportProblem(DropPlan(attention: [3])) == nil)
    }

    /// Cached decoding (as `drop` times it) gives the batched forward's
    /// states, also with a full layer's attention dropped (its indexer still
    /// choosing for layer 3) and with its block dropped (layer 3 reusing
    /// layer 0's choice); the prefill of 16 rows is longer than index_topk.
    @Test func cachedDecodingMatchesTheForward() throws {
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture(Self.name).load(), tokens: 24, prefill: 16,
            plans: [.none, DropPlan(attention: [2]), DropPlan(blocks: [2]), DropPlan(attention: [1, 2])], label: Self.name)
    }

    /// A checkpoint whose own drop lists drop a full layer's attention (LLM-Drop's
    /// `drop_attn_list`) keeps that attention dropped in the model `drop` times
    /// against it, its indexer still choosing for the shared layer after it (the
    /// dropped model's block held the store-only attention as its own and trapped).
    @Test func configuredDroppedFullLayerStaysAProducerWhenMoreIsDropped() throws {
        for name in [Self.name, "mistral_large4-f32"] {
            let fixture = try EditedFixture(name) { $0[DropPlan.attentionKey] = [2] }
            let model = try fixture.load()
            let plan = DropPlan(mlp: [1])
            let block = try model.block(2, skipping: .none).dropping(plan, at: 2, sharing: try model.attentionSharing(skipping: plan))
            try #require(block.attention == nil, "\(name): layer 2's attention is dropped by config.json")
            #expect(block.sharingProducer?.attention?.keySelectionSharing == .storeOnly(layer: 2), "\(name)")
            try expectCachedDecodingMatchesTheForward(model, tokens: 24, prefill: 16, plans: [.none, plan, DropPlan(attention: [3])], label: name)
        }
    }

    /// index_topk_freq and the offset give the fixture's types; a block-drop
    /// export of such a config writes the kept layers' types out.
    @Test func indexerTypesFromTheFrequency() throws {
        let base = try scores(EditedFixture(Self.name))
        let ruled = try EditedFixture(Self.name) {
            $0["indexer_types"] = nil
            $0["index_topk_freq"] = 2
            $0["index_skip_topk_offset"] = 1
        }
        #expect(try scores(ruled) == base)
        #expect(try ruled.exportedConfig(droppingBlocks: [1])["indexer_types"] as? [String] == ["full", "full", "shared"])
    }
}

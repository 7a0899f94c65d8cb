@testable import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// LFM2: its config keys as Lfm2Config reads them (the layer types, the
/// MLP width rule, the aliases), the short-convolution mixer and its
/// cached decoding; the scores themselves are checked against transformers
/// with every other family, and step-by-step decoding from position 0
/// against the batched forward (`DropTests.incrementalDecodingMatchesTheFullForward`).
@Suite struct Lfm2Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("lfm2-f32", "conv_L_cache", "0"),
        Mutant("lfm2-f32", "conv_L_cache", "-1"),
        Mutant("lfm2-f32", "conv_L_cache", "null"),
        Mutant("lfm2-f32", "conv_L_cache", "\"3\""),
        Mutant("lfm2-f32", "conv_L_cache", "4"),
        Mutant("lfm2-f32", "conv_L_cache", "1000000000000"),
        Mutant("lfm2-f32", "conv_L_cache", "4611686018427387904"),
        Mutant("lfm2-f32", "layer_types", "[\"conv\", \"full_attention\", \"conv\"]"),
        Mutant("lfm2-f32", "layer_types", "[\"conv\", \"sliding_attention\", \"conv\", \"full_attention\"]"),
        Mutant("lfm2-f32", "layer_types", "[\"conv\", \"linear_attention\", \"conv\", \"full_attention\"]"),
        Mutant("lfm2-f32", "layer_types", "[\"conv\", \"conv\", \"conv\", \"full_attention\"]"),
        Mutant("lfm2-f32", "layer_types", "[\"full_attention\", \"full_attention\", \"conv\", \"full_attention\"]"),
        Mutant("lfm2-f32", "full_attn_idxs", "[1, 4]"),
        Mutant("lfm2-f32", "full_attn_idxs", "[-1]"),
        Mutant("lfm2-f32", "full_attn_idxs", "[1.5]"),
        Mutant("lfm2-f32", "norm_eps", "0"),
        Mutant("lfm2-f32", "norm_eps", "-1e-5"),
        Mutant("lfm2-f32", "block_multiple_of", "0"),
        Mutant("lfm2-f32", "block_multiple_of", "-16"),
        Mutant("lfm2-f32", "block_multiple_of", "9223372036854775807"),
        Mutant("lfm2-f32", "block_ffn_dim_multiplier", "0"),
        Mutant("lfm2-f32", "block_ffn_dim_multiplier", "-1.5"),
        Mutant("lfm2-f32", "block_ffn_dim_multiplier", "1e300"),
        Mutant("lfm2-f32", "block_ffn_dim_multiplier", "null"),
        Mutant("lfm2-f32", "block_auto_adjust_ff_dim", "false", key: "intermediate_size"),
        Mutant("lfm2-f32", "intermediate_size", "1"),
        Mutant("lfm2-f32", "intermediate_size", "9223372036854775807"),
        Mutant("lfm2-f32", "block_ff_dim", "null"),
        Mutant("lfm2-f32", "block_ff_dim", "0"),
        Mutant("lfm2-f32", "block_ff_dim", "200"),
        Mutant("lfm2-f32", "tie_embedding", "null"),
        Mutant("lfm2-f32", "tie_embedding", "0"),
        Mutant("lfm2-f32", "num_key_value_heads", "3"),
        Mutant("lfm2-f32", "hidden_size", "47"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Conv layers get a short convolution of conv_L_cache taps with their
    /// biases (conv_bias), the others attention with per-head q/k norms; the
    /// MLP is 112 wide by the block_* rule (int(2 · 100 / 3) = 66, × 1.5 =
    /// 99, up to a multiple of 16).
    @Test func layersFollowLayerTypesAndTheWidthRule() throws {
        let model = try EditedFixture("lfm2-f32").load()
        for index in [0, 2] {
            guard case .shortConvolution(let convolution)? = try model.block(index).attention?.mixer else {
                Issue.record("layer \(index) is not a short convolution")
                continue
            }
            #expect(convolution.kernel == 3 && convolution.channels == 48)
            #expect(convolution.tapBias != nil && convolution.projection.bias != nil && convolution.output.bias != nil)
        }
        for index in [1, 3] {
            let attention = try #require(try model.block(index).attention?.attention, "layer \(index)")
            guard case .perHead? = attention.queryKeyNorm else {
                Issue.record("no per-head q/k norms")
                continue
            }
        }
        guard case .gated(let gateUp, _, _)? = try model.block(0).mlp?.feedForward else {
            Issue.record("not a gated MLP")
            return
        }
        #expect(gateUp.outFeatures == 2 * 112)
    }

    /// The width rule as Lfm2MLP has it: without block_auto_adjust_ff_dim the
    /// width is intermediate_size itself; block_ff_dim is read over
    /// intermediate_size; rounding to block_multiple_of comes with the
    /// multiplier.
    @Test func feedForwardWidthRule() throws {
        func width(_ config: [String: Any], intermediate: Int = 100) throws -> Int {
            let data = try JSONSerialization.data(withJSONObject: config)
            return try JSONDecoder().decode(Lfm2FeedForwardWidth.self, from: data).width(intermediateSize: intermediate)
        }
        let rule: [String: Any] = ["block_auto_adjust_ff_dim": true, "block_ffn_dim_multiplier": 1.5, "block_multiple_of": 16]
        #expect(try width(rule) == 112)
        #expect(try width(rule.merging(["block_auto_adjust_ff_dim": false]) { $1 }) == 100)
        #expect(try width(rule.merging(["block_ff_dim": 12288, "block_ffn_dim_multiplier": 1.0, "block_multiple_of": 256]) { $1 }) == 8192)
        // LFM2-2.6B: block_ff_dim 10752, multiplier 1.0, multiple of 256 → 7168.
        #expect(try width(["block_ff_dim": 10752]) == 7168)
        // No multiplier, no rounding: int(2 · 100 / 3).
        #expect(try width(rule.merging(["block_ffn_dim_multiplier": NSNull()]) { $1 }) == 66)
    }

    /// Without layer_types the attention layers are full_attn_idxs (all
    /// layers when it is null); a block-drop export keeps every kept
    /// layer's mixer, in layer_types and in full_attn_idxs alike.
    @Test func fullAttentionIndicesRuleAndExport() throws {
        func kinds(_ model: any LanguageModel) throws -> [Bool] {
            try (0..<model.layerCount).map { index in
                guard case .shortConvolution? = try model.block(index).attention?.mixer else { return false }
                return true
            }
        }
        let fixture = try EditedFixture("lfm2-f32") { $0["layer_types"] = nil }
        #expect(try kinds(fixture.load()) == [true, false, true, false])
        let exported = try fixture.exportedConfig(droppingBlocks: [0])
        #expect(exported["layer_types"] as? [String] == ["full_attention", "conv", "full_attention"])
        #expect(exported["full_attn_idxs"] as? [Int] == [0, 2])
        let original = try EditedFixture("lfm2-f32").exportedConfig(droppingBlocks: [1])
        #expect(original["layer_types"] as? [String] == ["conv", "conv", "full_attention"])
        #expect(original["full_attn_idxs"] as? [Int] == [2])
        // null: every layer attends, which the conv layers' weights contradict.
        try EditedFixture("lfm2-f32") {
            $0["layer_types"] = nil
            $0["full_attn_idxs"] = NSNull()
        }.expectRefused(naming: "full_attn_idxs")
    }

    /// `tie_embedding` is read over `tie_word_embeddings`, as Lfm2Config
    /// reads it: untied, the head is lm_head, which the fixture lacks.
    @Test func tieEmbeddingIsReadOverTieWordEmbeddings() throws {
        let tied = try EditedFixture("lfm2-f32") {
            $0["tie_word_embeddings"] = false
            $0["tie_embedding"] = true
        }
        _ = try tied.load().head()
        let untied = try EditedFixture("lfm2-f32") { $0["tie_embedding"] = false }
        #expect(throws: DroptraceError.self) { try untied.load().head() }
    }

    /// Prefill then one token at a time carries each conv layer's last
    /// inputs: the result is the batched forward's, also with a conv layer's
    /// or an attention layer's module dropped.
    @Test func cachedDecodingMatchesTheForward() throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model("lfm2-f32")))
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12, plans: [.none, DropPlan(attention: [0]), DropPlan(attention: [1]), DropPlan(blocks: [2])],
            label: "lfm2-f32")
    }

    /// Every score of the fixture close to transformers'.
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers("lfm2-f32")
    }
}

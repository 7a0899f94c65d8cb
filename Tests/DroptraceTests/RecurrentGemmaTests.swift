@testable import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Testing

/// RecurrentGemma (`recurrent_gemma-f32`): Griffin's recurrent blocks and
/// local attention by `block_types` repeated over six layers (2 and 5
/// attend), lru_width 64 beside the hidden 48, one key/value head, a
/// window of 6, logits soft-capped at 5.
@Suite struct RecurrentGemmaTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "recurrent_gemma-f32"

    static let mutants: [Mutant] = [
        // RecurrentGemmaConfig: layer_types cannot be set; block_types must cover the layers; the rotary is default only.
        Mutant(name, "layer_types", "[\"sliding_attention\"]", key: "layer_types"),
        Mutant(name, "block_types", "null", key: "block_types"),
        Mutant(name, "block_types", "[]", key: "block_types"),
        Mutant(name, "block_types", "[\"attention\", \"recurrent\", \"recurrent\"]", key: "block_types"),
        Mutant(name, "lru_width", "62", key: "lru_width"),
        Mutant(name, "logits_soft_cap", "0.0", key: "logits_soft_cap"),
        Mutant(name, "conv1d_width", "0", key: "conv1d_width"),
        Mutant(name, "attention_window_size", "6.0", key: "attention_window_size"),
        Mutant(name, "rope_parameters", "{\"rope_type\": \"linear\", \"factor\": 2.0, \"rope_theta\": 10000.0}", key: "rope type"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score within 1e-7 of transformers'.
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.name)
    }

    /// The temporal blocks follow `block_types`; `sliding_window`, the
    /// class's alias of `attention_window_size`, is read as it.
    @Test func temporalBlocksFollowTheRepeatedPattern() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<model.layerCount {
            let mixer = try #require(try model.block(index).attention?.mixer)
            if case .griffinRecurrent(let block) = mixer {
                #expect(![2, 5].contains(index) && block.width == 64 && block.heads == 4 && block.kernel == 4, "layer \(index)")
            } else {
                #expect([2, 5].contains(index) && mixer.softmaxAttention?.slidingWindow == 6, "layer \(index)")
            }
        }
        let base = try EditedFixture(Self.name).attentionScores()
        let aliased = try EditedFixture(Self.name) { $0["sliding_window"] = $0.removeValue(forKey: "attention_window_size") }
        #expect(try aliased.attentionScores() == base)
    }

    /// Decoding one token at a time carries the convolution's history and
    /// the recurrence's state (reset only at position 0) as the batched
    /// forward computes them, with layers dropped too.
    @Test func cachedDecodingMatchesTheForward() throws {
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture(Self.name).load(), tokens: 12, prefill: 5,
            plans: [.none, DropPlan(attention: [0, 2]), DropPlan(blocks: [1])], label: Self.name)
    }

    /// An odd rotary width w (int(head_dim · partial_rotary_factor): 3 of
    /// 12 here) rotates as RecurrentGemma's attention does, by its table's
    /// width: ceil(w/2) frequencies over exponent 2i/w, 2·ceil(w/2) dimensions
    /// turned (scores within 4e-9 of transformers 5.25's for this config).
    @Test func anOddRotaryWidthRotatesByTheTablesWidth() throws {
        let odd = try EditedFixture(Self.name, rope: "partial_rotary_factor", 0.25)
        let attention = try #require(try odd.load().block(2).attention?.mixer.softmaxAttention)
        let rotary = try #require(attention.rotary)
        #expect(rotary.rotaryDim == 4 && rotary.inverseFrequencies.count == 2)
        #expect(abs(rotary.inverseFrequencies[1] - Float(pow(10_000.0, -2.0 / 3.0))) < 1e-9)
        #expect(try odd.attentionScores() != EditedFixture(Self.name).attentionScores())
    }

    /// A block-drop export writes the kept layers' pattern, which the config
    /// class repeats from the start: dropping layer 0 keeps r a r r a.
    @Test func blockDropExportSpellsOutTheKeptPattern() throws {
        let exported = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0])
        #expect(exported["block_types"] as? [String] == ["recurrent", "attention", "recurrent", "recurrent", "attention"])
        #expect(exported["num_hidden_layers"] as? Int == 5)
    }
}

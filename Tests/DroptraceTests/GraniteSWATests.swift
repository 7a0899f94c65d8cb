import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Granite SWA: Granite with windows by layer_types, a rotary base per layer
/// and learned sinks, GraniteSWAConfig's defaults; the scores themselves are
/// checked against transformers with every other family (`ScoringReferenceTests`).
@Suite struct GraniteSWATests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("granite_swa-f32", "sliding_window", "0"),
        // GraniteSWAModel builds a sliding-window mask for every model.
        Mutant("granite_swa-f32", "sliding_window", "null"),
        Mutant("granite_swa-f32", "layer_types", "[\"sliding_attention\"]"),
        Mutant("granite_swa-f32", "layer_types", "[\"full_attention\", \"local\", \"full_attention\", \"full_attention\"]"),
        Mutant("granite_swa-f32", "layer_rope_theta", "[10000.0, 0]"),
        Mutant("granite_swa-f32", "layer_rope_theta", "[10000.0, -1.0, 10000.0, 10000.0]"),
        Mutant("granite_swa-f32", "layer_rope_theta", "[\"x\", 0, 0, 0]"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The fixture: layer 0 global, 1-3 sliding; bases 10000, none, 500000,
    /// 10000; a sink logit per head on every layer; Granite's multipliers.
    @Test func layersFollowTheirTypesAndBases() throws {
        let model = try EditedFixture("granite_swa-f32").load()
        let attentions = try (0..<4).map { try #require(try model.block($0).attention?.attention) }
        #expect(attentions.map(\.slidingWindow) == [nil, 8, 8, 8])
        #expect(attentions[1].rotary == nil && attentions.allSatisfy { $0.sinkLogits?.count == 4 })
        let base = RotaryEmbedding.defaultInverseFrequencies(base: 10000, rotaryDim: 12)
        #expect(attentions[0].rotary?.inverseFrequencies == base && attentions[3].rotary?.inverseFrequencies == base)
        #expect(attentions[2].rotary?.inverseFrequencies == RotaryEmbedding.defaultInverseFrequencies(base: 500000, rotaryDim: 12))
        #expect(attentions[0].scale == 0.15)
    }

    /// Absent, layer_types is every fourth layer from 0 global, the window
    /// 128, layer_rope_theta rope_theta on every layer; Granite itself reads
    /// none of these keys and has no sinks.
    @Test func defaultsAreGraniteSWAConfigs() throws {
        let model = try EditedFixture("granite_swa-f32") {
            $0["layer_types"] = nil
            $0["sliding_window"] = nil
            $0["layer_rope_theta"] = nil
        }.load()
        let attentions = try (0..<4).map { try #require(try model.block($0).attention?.attention) }
        #expect(attentions.map(\.slidingWindow) == [nil, 128, 128, 128])
        #expect(attentions.allSatisfy { $0.rotary?.inverseFrequencies == RotaryEmbedding.defaultInverseFrequencies(base: 10000, rotaryDim: 12) })
        let granite = try #require(try EditedFixture("granite-f32").load().block(1).attention?.attention)
        #expect(granite.sinkLogits == nil && granite.slidingWindow == nil)
    }

    /// GraniteSWAConfig ties the head when config.json omits
    /// `tie_word_embeddings`, GraniteConfig does not: without the flag (the
    /// fixtures store no lm_head) granite_swa's head is the embedding
    /// (perplexity checked against transformers 5.23), where droptrace took
    /// Granite's untied default, and granite's is missing.
    @Test func omittedTieWordEmbeddingsTiesAsTheConfigClassSays() throws {
        let fixture = try EditedFixture("granite_swa-f32") { $0["tie_word_embeddings"] = nil }
        let embedding = try Checkpoint(directory: fixture.model).tensor("model.embed_tokens.weight").floats()
        #expect(try fixture.load().head().projection.weight == embedding)
        #expect(throws: DroptraceError.self) { try EditedFixture("granite-f32") { $0["tie_word_embeddings"] = nil }.load().head() }
    }

    /// A block-drop export keeps each kept layer's type and base.
    @Test func blockDropExportKeepsTypesAndBases() throws {
        let config = try EditedFixture("granite_swa-f32").exportedConfig(droppingBlocks: [0])
        #expect(config["layer_types"] as? [String] == ["sliding_attention", "sliding_attention", "sliding_attention"])
        #expect((config["layer_rope_theta"] as? [NSNumber])?.map(\.doubleValue) == [0, 500000, 10000])
        #expect(config["num_hidden_layers"] as? Int == 3)
    }
}

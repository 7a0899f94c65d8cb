@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// ModernBERT's decoder (`modernbert-decoder`): config refusals, the layout
/// and rotary bases ModernBertDecoderConfig derives from its keywords, the
/// first layer without an attention norm, the prediction head, and the
/// block drops an export can carry. The scores and logits themselves are
/// checked against transformers with every other family
/// (`ScoringReferenceTests`, `DropTests`).
@Suite struct ModernBertDecoderTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "modernbert-decoder-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "norm_eps", "0"), Mutant(name, "norm_eps", "-1e-5"),
        // ModernBertDecoderConfig divides the layer index by it (layer_types absent).
        Mutant(name, "global_attn_every_n_layers", "0"),
        // The sliding layers' window is local_attention // 2 keys: none at all hides every key.
        Mutant(name, "local_attention", "null"), Mutant(name, "local_attention", "1"), Mutant(name, "local_attention", "-16"),
        Mutant(name, "local_attention", "16.5"),
        // A written sliding_window overrides the derived one; null cannot build the mask transformers always builds.
        Mutant(name, "sliding_window", "0"), Mutant(name, "sliding_window", "null"),
        // ModernBertDecoderAttention refuses hidden_size not a multiple of the heads.
        Mutant(name, "num_attention_heads", "5"),
        // Its rotary table would be head_dim wide, its heads 12.
        Mutant(name, "head_dim", "16"),
        Mutant(name, "layer_types", #"["full_attention", "sliding_attention"]"#),
        Mutant(name, "layer_types", #"["full_attention", "chunked_attention", "sliding_attention", "full_attention"]"#),
        Mutant(name, "embedding_dropout", "1.5"), Mutant(name, "mlp_dropout", "-0.1"),
        Mutant(name, "hidden_activation", "\"swish2\""), Mutant(name, "classifier_activation", "\"swish2\""),
        Mutant(name, "norm_bias", "1"),
        // Sizes the tensors contradict.
        Mutant(name, "hidden_size", "96"), Mutant(name, "num_hidden_layers", "3"), Mutant(name, "vocab_size", "500"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The released keywords (every third layer global from 0, bases by
    /// global_rope_theta / local_rope_theta, the window local_attention // 2)
    /// read as transformers lays them out; layer 0 attends without a norm.
    @Test func layoutFromTheReleasedKeywords() throws {
        let model = try EditedFixture(Self.name).load() as! ModernBertDecoderModel
        #expect(model.layerTypes == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"])
        let attentions = try (0..<4).map { try #require(try model.block($0).attention) }
        #expect(attentions.map(\.attention.slidingWindow) == [nil, 8, 8, nil])
        #expect(attentions[0].inputNorm == nil && attentions[1...].allSatisfy { $0.inputNorm != nil })
        #expect(attentions.allSatisfy { $0.attention.layout.numKVHeads == 4 && $0.attention.layout.headDim == 12 })
        // The second rotary pair turns by 1/base^(2/12) per position.
        #expect(Self.secondFrequencies(model).map { [$0.0, $0.1] } == [Self.rounded(pow(80_000, -2.0 / 12)), Self.rounded(pow(100, -2.0 / 12))])
        let head = try model.head()
        #expect(head.predictionHead?.dense.bias != nil && head.projection.bias != nil)
    }

    /// The file as transformers 5 saves it (layer_types, per-type
    /// rope_parameters, the derived sliding_window, which it ignores) is the
    /// same model; without any setting the bases are 160000 and 10000.
    @Test func savedSpellingIsTheSameModel() throws {
        let sequences = FixtureFiles.jsonlSequences()
        let released = try ImportanceScorer(model: try EditedFixture(Self.name).load()).score(sequences, calibrationPath: "calib")
        let saved = try EditedFixture(Self.name) {
            $0["layer_types"] = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
            $0["rope_parameters"] = [
                "full_attention": ["rope_type": "default", "rope_theta": 80_000.0],
                "sliding_attention": ["rope_type": "default", "rope_theta": 100.0],
            ]
            $0["global_attn_every_n_layers"] = nil
            $0["global_rope_theta"] = nil
            $0["local_rope_theta"] = nil
            $0["sliding_window"] = 8
        }
        let scores = try ImportanceScorer(model: try saved.load()).score(sequences, calibrationPath: "calib")
        #expect(scores.attention == released.attention && scores.mlp == released.mlp)
        let defaults = try EditedFixture(Self.name) {
            $0["global_rope_theta"] = nil
            $0["local_rope_theta"] = nil
        }.load() as! ModernBertDecoderModel
        #expect(Self.secondFrequencies(defaults).map { [$0.0, $0.1] } == [Self.rounded(pow(160_000, -2.0 / 12)), Self.rounded(pow(10_000, -2.0 / 12))])
    }

    /// The full and the sliding layers' second inverse frequency, rounded to 6 significant digits.
    static func secondFrequencies(_ model: ModernBertDecoderModel) -> (Float, Float)? {
        guard let full = model.rotary["full_attention"], let sliding = model.rotary["sliding_attention"] else { return nil }
        return (rounded(Double(full.inverseFrequencies[1])), rounded(Double(sliding.inverseFrequencies[1])))
    }

    static func rounded(_ x: Double) -> Float { Float(String(format: "%.5g", x))! }

    /// Without a window no layer may slide; full layers alone run (as in
    /// transformers), unless sliding_window is null: the mask transformers
    /// builds for every model needs one.
    @Test func noWindowWithFullLayersOnly() throws {
        let model = try EditedFixture(Self.name) {
            $0["local_attention"] = NSNull()
            $0["layer_types"] = Array(repeating: "full_attention", count: 4)
        }.load()
        #expect(try (0..<4).allSatisfy { try model.block($0).attention?.attention.slidingWindow == nil })
        try EditedFixture(Self.name) {
            $0["sliding_window"] = NSNull()
            $0["layer_types"] = Array(repeating: "full_attention", count: 4)
        }.expectRefused(naming: "sliding_window")
    }

    /// A sliding_window written in config.json is the window, whatever local_attention says.
    @Test func writtenWindowOverridesLocalAttention() throws {
        let written = try EditedFixture(Self.name) { $0["sliding_window"] = 4 }.attentionScores()
        let derived = try EditedFixture(Self.name) { $0["local_attention"] = 8 }.attentionScores()
        #expect(written == derived)
        #expect(written != (try EditedFixture(Self.name).attentionScores()))
    }

    /// A tied decoder keeps its own bias; decoder_bias asks for it.
    @Test func decoderBiasIsRead() throws {
        let error = #expect(throws: DroptraceError.self) {
            let fixture = try EditedFixture(Self.name)
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "decoder.bias" } }
            _ = try fixture.load()
        }
        #expect(error?.message.contains("decoder.bias") == true, "\(String(describing: error))")
        let unbiased = try EditedFixture(Self.name) { $0["decoder_bias"] = false }.load()
        #expect(try unbiased.head().projection.bias == nil)
    }

    /// The head is `decoder` (tied to the embedding here): a stray
    /// `lm_head.weight`, which ModernBertDecoderForCausalLM has no parameter
    /// for (transformers reports it unexpected and leaves it unread, the
    /// logits unchanged), is not read as the head.
    @Test func strayLmHeadWeightIsNotTheHead() throws {
        let plain = try EditedFixture(Self.name).load().head().projection.weight
        let fixture = try EditedFixture(Self.name)
        try BadInputTests().rewriteWeights(fixture.model) { entries in
            let embedding = entries.first { $0.name.hasSuffix("tok_embeddings.weight") }!
            entries.append(
                SafetensorsWriter.Entry(name: "lm_head.weight", dtype: embedding.dtype, shape: embedding.shape, bytes: Data(count: embedding.byteCount)))
        }
        #expect(try fixture.load().head().projection.weight == plain)
    }

    /// Layer 0 has no attention norm: a block-drop export that moves another
    /// layer's attention there is refused; other blocks export.
    @Test func exportsKeepTheFirstLayersAttentionUnnormed() throws {
        let model = try EditedFixture(Self.name).load()
        let problem = model.exportProblem(DropPlan(blocks: [0]))
        #expect(problem?.contains("attn_norm") == true, "\(String(describing: problem))")
        #expect(model.exportProblem(DropPlan(attention: [1], blocks: [0])) == nil)
        #expect(model.exportProblem(DropPlan(blocks: [1, 3])) == nil)
        #expect(model.exportProblem(DropPlan(attention: [0])) == nil)
    }
}

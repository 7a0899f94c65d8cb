@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Testing

/// PaliGemma and PaliGemma 2 (`paligemma`, PaliGemmaForConditionalGeneration)
/// read as their gemma or gemma2 language model: placed as LLaVA's (the
/// releases' `language_model.model.`, transformers 5's `model.language_model.`),
/// the head tied by the top-level `tie_word_embeddings` alone (default true),
/// the text config's `use_bidirectional_attention`, which PaliGemmaConfig
/// sets true where absent, not acting on text (the wrapper's model builds a
/// causal mask). The scores themselves are checked against transformers with
/// every other family (`DropTests` and the reference suites); the edited
/// configs below were checked against transformers 5.25.
@Suite struct PaliGemmaTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let paligemma = "paligemma-f32"
    static let paligemma2 = "paligemma2-f32"

    static let mutants: [Mutant] = [
        // Only gemma and gemma2 text models are read; AutoConfig cannot resolve null.
        Mutant(paligemma, "text_config.model_type", "\"qwen3\"", key: "text_config.model_type"),
        Mutant(paligemma2, "text_config.model_type", "\"gemma3_text\"", key: "text_config.model_type"),
        Mutant(paligemma, "text_config.model_type", "null", key: "text_config.model_type"),
        // The text config is checked as GemmaConfig / Gemma2Config check it; the wrapper's own keys as PaliGemmaConfig's.
        Mutant(paligemma, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(paligemma2, "text_config.sliding_window", "0", key: "text_config.sliding_window"),
        Mutant(paligemma, "tie_word_embeddings", "null"),
        Mutant(paligemma, "image_token_index", "1.5", key: "image_token_index"),
        // The weights contradict these sizes.
        Mutant(paligemma, "text_config.hidden_size", "48", key: "hidden_size"),
        Mutant(paligemma2, "text_config.num_key_value_heads", "1", key: "text_config.num_key_value_heads"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// PaliGemma's text model is gemma by default, PaliGemma 2's gemma2;
    /// the bidirectional flag PaliGemmaConfig writes is not read, and
    /// the same model under transformers 5's names scores the same.
    @Test func gemmaLanguageModels() throws {
        #expect(try EditedFixture(Self.paligemma).load() is GemmaModel)
        #expect(try EditedFixture(Self.paligemma2).load() is Gemma2Model)
        for name in [Self.paligemma, Self.paligemma2] {
            let scores = try EditedFixture(name).attentionScores()
            #expect(try EditedFixture(name).load().layerCount == 4)
            #expect(try EditedFixture(name) { EditedModel.set(false, at: "text_config.use_bidirectional_attention", in: &$0) }
                .attentionScores() == scores)
            let renamed = try EditedFixture(name)
            try BadInputTests().renameWeights(renamed.model, prefix: "language_model.model.", to: "model.language_model.")
            #expect(try renamed.attentionScores() == scores)
        }
        #expect(try EditedFixture(Self.paligemma) { EditedModel.set(nil, at: "text_config.model_type", in: &$0) }
            .attentionScores() == EditedFixture(Self.paligemma).attentionScores())
    }

    /// A text config naming no model_type is gemma's, as PaliGemmaConfig
    /// builds it whatever its keys (PaliGemma 2's too: GemmaModel, the gemma2
    /// tensors unread). With a `sliding_window` (PaliGemma 2's) the wrapper's
    /// model hands GemmaModel a mask per attention type, on which transformers
    /// fails: refused. Without one (nor sliding layer types), transformers 5.25's scores.
    @Test func textConfigNamingNoTypeIsGemma() throws {
        let untyped = try EditedFixture(Self.paligemma2) { EditedModel.set(nil, at: "text_config.model_type", in: &$0) }
        untyped.expectRefused(naming: "text_config.sliding_window")
        let gemma = try EditedFixture(Self.paligemma2) { EditedModel.set("gemma", at: "text_config.model_type", in: &$0) }
        gemma.expectRefused(naming: "text_config.sliding_window")
        // Its sliding layer_types left without a window fail transformers' cache.
        let listed = try EditedFixture(Self.paligemma2) {
            EditedModel.set(nil, at: "text_config.model_type", in: &$0)
            EditedModel.set(NSNull(), at: "text_config.sliding_window", in: &$0)
        }
        listed.expectRefused(naming: "text_config.layer_types")
        let windowless = try EditedFixture(Self.paligemma2) {
            EditedModel.set(nil, at: "text_config.model_type", in: &$0)
            EditedModel.set(NSNull(), at: "text_config.sliding_window", in: &$0)
            EditedModel.set(nil, at: "text_config.layer_types", in: &$0)
        }
        #expect(try windowless.load() is GemmaModel)
        let transformers = [0.013589014157736612, 0.029477792750147502, 0.06396496952861663, 0.06622005926874852]
        #expect(zip(try windowless.attentionScores(), transformers).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    /// PaliGemmaConfig ties unless its own flag says otherwise; the text
    /// config's flag is not read.
    @Test func theTopLevelFlagAloneTiesTheHead() throws {
        func tied(_ change: @escaping (inout [String: Any]) -> Void) throws -> Bool? {
            let fixture = try EditedFixture(Self.paligemma, change)
            return try Llava.placement(Checkpoint(directory: fixture.model)).tiedEmbeddings
        }
        #expect(try tied { $0["tie_word_embeddings"] = nil } == true)
        #expect(try tied { config in
            config["tie_word_embeddings"] = nil
            EditedModel.set(false, at: "text_config.tie_word_embeddings", in: &config)
        } == true)
        #expect(try tied { config in
            config["tie_word_embeddings"] = false
            EditedModel.set(true, at: "text_config.tie_word_embeddings", in: &config)
        } == false)
        // Untied, the fixture stores no head: refused naming it.
        #expect(throws: DroptraceError.self) { try EditedFixture(Self.paligemma) { $0["tie_word_embeddings"] = false }.load().head() }
    }
}

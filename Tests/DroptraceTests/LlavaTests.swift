@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Testing

/// The LLaVA-style models read as their language model (`llava`,
/// `llava_next`, `llava_onevision`, `internvl`, `idefics3`, `smolvlm`): the text model type each
/// reads, the head's tying (forwarded from the text config by two of the
/// config classes, InternVL's tied by default),
/// and a mistral text config's `layer_types`, which MistralConfig's model
/// ignores there. The scores themselves are checked against transformers
/// with every other family (`DropTests` and the reference suites); the
/// edited configs below were checked against transformers 5.23 too.
@Suite struct LlavaTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        // Only the Llama family's text models are read; a text config of another type is named.
        Mutant("llava-f32", "text_config.model_type", "\"gemma\"", key: "text_config.model_type"),
        Mutant("smolvlm-f32", "text_config.model_type", "\"qwen3\"", key: "text_config.model_type"),
        Mutant("idefics3-f32", "text_config.rms_norm_eps", "1", key: "text_config.rms_norm_eps"),
        // The text config is checked as its model_type's class checks it.
        Mutant("llava-f32", "text_config.attention_bias", "0", key: "text_config.attention_bias"),
        Mutant("llava_next-f32", "text_config.sliding_window", "0", key: "text_config.sliding_window"),
        Mutant("llava_onevision-f32", "text_config.use_sliding_window", "\"x\"", key: "text_config.use_sliding_window"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// LLaVA-OneVision's text model is qwen2 when its text_config names no
    /// model_type, LLaVA's llama; a mistral text model ignores
    /// `layer_types` and slides on every layer.
    @Test func textModelTypesAsTheConfigClassesBuildThem() throws {
        let onevision = try EditedFixture("llava_onevision-f32").attentionScores()
        #expect(try EditedFixture("llava_onevision-f32") { EditedModel.set(nil, at: "text_config.model_type", in: &$0) }
            .attentionScores() == onevision)
        let llava = try EditedFixture("llava-f32").attentionScores()
        #expect(try EditedFixture("llava-f32") { EditedModel.set(nil, at: "text_config.model_type", in: &$0) }
            .attentionScores() == llava)
        let next = try EditedFixture("llava_next-f32") {
            EditedModel.set(Array(repeating: "full_attention", count: 4), at: "text_config.layer_types", in: &$0)
        }
        #expect(try (0..<4).allSatisfy { try next.load().block($0).attention?.attention.slidingWindow == 8 })
    }

    /// Without a stored lm_head the head is the embedding where the config
    /// ties it: LLaVA's and LLaVA-OneVision's classes take the text config's
    /// flag, LLaVA-NeXT's only its own; InternVL's ties by default.
    @Test func theTextConfigTiesTheHeadOfLlavaAndOnevisionOnly() throws {
        func headless(_ name: String, textTies: Bool) throws -> EditedFixture {
            let fixture = try EditedFixture(name) { EditedModel.set(textTies, at: "text_config.tie_word_embeddings", in: &$0) }
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "language_model.lm_head.weight" } }
            return fixture
        }
        #expect(throws: Never.self) { try headless("llava-f32", textTies: true).load().head() }
        #expect(throws: DroptraceError.self) { try headless("llava-f32", textTies: false).load().head() }
        #expect(throws: DroptraceError.self) { try headless("llava_next-f32", textTies: true).load().head() }
        #expect(throws: Never.self) { try headless("llava_onevision-f32", textTies: true).load().head() }
        // InternVLConfig ties unless its own flag says otherwise (the fixture leaves it out).
        #expect(throws: Never.self) { try EditedFixture("internvl-f32").load().head() }
        #expect(throws: DroptraceError.self) { try EditedFixture("internvl-f32") { $0["tie_word_embeddings"] = false }.load().head() }
    }
}

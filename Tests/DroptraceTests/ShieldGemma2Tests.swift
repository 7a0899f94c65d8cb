@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// ShieldGemma 2 (`shieldgemma2`, ShieldGemma2ForImageClassification) read as
/// the language model of the Gemma3ForConditionalGeneration it holds under
/// `model.`: its weights one level deeper than `gemma3`'s, the head tied by
/// the top-level flag or the text config's (ShieldGemma2Config's
/// `__post_init__`), the logits not soft-capped (that model never applies
/// the text config's `final_logit_softcapping`), the perplexity over the
/// full vocabulary the class slices its yes and no logits from. The scores
/// themselves are checked against transformers with every other family
/// (`DropTests` and the reference suites).
@Suite struct ShieldGemma2Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "shieldgemma2-f32"

    /// Refused naming the key: as ShieldGemma2Config and Gemma3TextConfig
    /// refuse them; a text model droptrace does not read under it; yes/no
    /// indexes the class's forward cannot slice the logits at.
    static let mutants: [Mutant] = [
        Mutant(name, "tie_word_embeddings", "null"), Mutant(name, "mm_tokens_per_image", "null"),
        Mutant(name, "image_token_index", "5.0"), Mutant(name, "boi_token_index", "null"), Mutant(name, "initializer_range", "null"),
        Mutant(name, "text_config.tie_word_embeddings", "null", key: "text_config.tie_word_embeddings"),
        Mutant(name, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(name, "text_config.final_logit_softcapping", "\"x\"", key: "text_config.final_logit_softcapping"),
        Mutant(name, "text_config.query_pre_attn_scalar", "0", key: "text_config.query_pre_attn_scalar"),
        Mutant(name, "text_config.use_bidirectional_attention", "true", key: "text_config.use_bidirectional_attention"),
        Mutant(name, "text_config.model_type", "\"gemma2\"", key: "text_config.model_type"),
        Mutant(name, "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant(name, "yes_token_index", "512", key: "yes_token_index"), Mutant(name, "yes_token_index", "-513", key: "yes_token_index"),
        Mutant(name, "no_token_index", "null", key: "no_token_index"), Mutant(name, "no_token_index", "\"5\"", key: "no_token_index"),
        // A vocabulary of no tokens, the yes / no indices' bound: refused naming vocab_size (Int.min once trapped negating it).
        Mutant(name, "text_config.vocab_size", "-9223372036854775808", key: "text_config.vocab_size"),
        Mutant(name, "text_config.vocab_size", "0", key: "text_config.vocab_size"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The fixture stores the names save_pretrained writes
    /// (`model.model.language_model.model.`); transformers 5's module names
    /// and the release's (`model.language_model.model.`) score alike. Yes/no
    /// indexes torch takes (a float, a boolean, a negative index) load.
    @Test func readsTheLanguageModelOneLevelDeeper() throws {
        let fixture = try EditedFixture(Self.name)
        let model = try fixture.load()
        #expect(model is Gemma3Model && model.layerCount == 4)
        #expect(try model.head().logitSoftcap == nil)
        // As stored (Checkpoint names them as transformers renames them).
        let stored = Set(try SafetensorsFile(path: fixture.model.appendingPathComponent("model.safetensors").path).tensors.keys)
        #expect(stored.contains("model.model.language_model.model.layers.0.self_attn.q_norm.weight"))
        let base = try scores(fixture)
        for (from, to) in [
            ("model.model.language_model.model.", "model.model.language_model."),
            ("model.model.language_model.model.", "model.language_model.model."),
        ] {
            let renamed = try EditedFixture(Self.name)
            try BadInputTests().rewriteWeights(renamed.model) { entries in
                for index in entries.indices where entries[index].name.hasPrefix(from) {
                    entries[index].name = to + entries[index].name.dropFirst(from.count)
                }
            }
            #expect(try scores(renamed) == base, "\(to)")
        }
        let edits: [(inout [String: Any]) -> Void] = [
            { $0["vision_config"] = nil }, { EditedModel.set(nil, at: "text_config.model_type", in: &$0) },
            { $0["yes_token_index"] = 5.9 }, { $0["no_token_index"] = true }, { $0["yes_token_index"] = -512 },
        ]
        for edit in edits {
            #expect(try scores(EditedFixture(Self.name, edit)) == base)
        }
        // Absent: the class's 10784, past the fixture's 512 tokens.
        try EditedFixture(Self.name) { $0["yes_token_index"] = nil }.expectRefused(naming: "yes_token_index")
    }

    /// Tied by either flag (the fixture: the top level's false, the text
    /// config's true); untied by both, the head `model.lm_head` is read, a
    /// missing one refused; a top-level `lm_head`, which transformers does
    /// not read for this class, is not read either.
    @Test func tiesByEitherFlag() throws {
        let tiedAtTop = try EditedFixture(Self.name) {
            $0["tie_word_embeddings"] = true
            EditedModel.set(false, at: "text_config.tie_word_embeddings", in: &$0)
        }
        #expect(throws: Never.self) { _ = try tiedAtTop.load().head() }
        let untied: (inout [String: Any]) -> Void = { EditedModel.set(false, at: "text_config.tie_word_embeddings", in: &$0) }
        #expect(throws: DroptraceError.self) { _ = try EditedFixture(Self.name, untied).load().head() }
        let base = try EditedFixture(Self.name).load().head().projection.weight
        for names in [["model.lm_head.weight"], ["lm_head.weight"], ["model.lm_head.weight", "lm_head.weight"]] {
            let headed = try EditedFixture(Self.name, untied)
            let embedding = try Checkpoint(directory: headed.model).tensor("model.model.language_model.embed_tokens.weight")
            try BadInputTests().rewriteWeights(headed.model) { entries in
                for name in names {
                    entries.append(
                        name == "lm_head.weight"
                            ? SafetensorsWriter.Entry(name: name, dtype: embedding.dtype, shape: embedding.shape, bytes: Data(count: embedding.byteCount))
                            : SafetensorsWriter.Entry(embedding, renamedTo: name))
                }
            }
            if names.contains("model.lm_head.weight") {
                #expect(try headed.load().head().projection.weight == base)
            } else {
                let error = #expect(throws: DroptraceError.self) { _ = try headed.load().head() }
                #expect(error?.message.contains("'model.lm_head.weight'") == true)
            }
        }
    }

    /// A block-dropped export renumbers the text config (layer types spelled
    /// out), the top level as it was; decoding carries each layer's cache.
    @Test func exportsAndDecodes() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [1])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 3 && (text["layer_types"] as? [String])?.count == 3)
        #expect(config["tie_word_embeddings"] as? Bool == false && config["model_type"] as? String == "shieldgemma2")
        let model = try EditedFixture(Self.name).load()
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12, plans: [.none, DropPlan(attention: [1]), DropPlan(blocks: [2])], label: Self.name)
    }

    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.name)
    }
}

@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Testing

/// GLM's vision-language models read as their language model (`glm4v`:
/// GLM-4.1V, `glm4v_moe`: GLM-4.5V, `glm46v`: GLM-4.6V, `glm_ocr`: GLM-OCR): their text config classes' defaults
/// and the keys they do not read, the head's tying, the M-RoPE sections
/// transformers can or cannot split. The scores themselves are checked
/// against transformers with every other family (`DropTests` and the
/// reference suites); the edited configs below were checked against
/// transformers 5.23 too (scores within 1.5e-8).
@Suite struct GlmVTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let dense = "glm4v-f32"
    static let moe = "glm4v_moe-f32"
    static let glm46v = "glm46v-f32"
    static let ocr = "glm_ocr-f32"
    static let glmga = "glmga-f32"

    static let mutants: [Mutant] = [
        // The rotary embedding splits the 4 (3) rotated frequencies by the section; torch.split fails otherwise.
        Mutant(dense, "text_config.rope_parameters.mrope_section", "[1, 2, 2]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(dense, "text_config.rope_parameters.mrope_section", "[1.0, 2, 1]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(moe, "text_config.rope_parameters.mrope_section", "[1, 1]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(moe, "text_config.n_routed_experts", "8.0", key: "text_config.n_routed_experts"),
        Mutant(moe, "text_config.first_k_dense_replace", "-1", key: "text_config.first_k_dense_replace"),
        Mutant(dense, "text_config.rms_norm_eps", "null", key: "text_config.rms_norm_eps"),
        // Glm4vMoeTextConfig keeps a null head_dim, which its attention's scale is computed from (TypeError).
        Mutant(moe, "text_config.head_dim", "null", key: "text_config.head_dim"),
        // GLM-4.6V: only GLM-4.1V's text model is read (Glm46VModel would build glm4v_moe_text's too), its text config
        // checked as Glm4vTextConfig checks it; Glm46VConfig's own flag is a bool.
        Mutant(glm46v, "text_config.model_type", "\"glm4v_moe_text\"", key: "text_config.model_type"),
        Mutant(glm46v, "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant(glm46v, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(glm46v, "text_config.rms_norm_eps", "null", key: "text_config.rms_norm_eps"),
        Mutant(glm46v, "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant(glm46v, "image_token_id", "5.0", key: "image_token_id"),
        Mutant(glm46v, "text_config.rope_parameters.mrope_section", "[1, 2, 2]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(glm46v, "text_config.hidden_size", "48", key: "hidden_size"),
        // GLM-OCR: GlmOcrTextAttention sizes its heads by a written head_dim (its scale fails on null or 0), the
        // rotary embedding by it too; GlmOcrConfig's own keys as the class checks them.
        Mutant(ocr, "text_config.head_dim", "null", key: "text_config.head_dim"),
        Mutant(ocr, "text_config.head_dim", "0", key: "text_config.head_dim"),
        Mutant(ocr, "text_config.head_dim", "16", key: "head_dim"),
        Mutant(ocr, "text_config.head_dim", "\"24\"", key: "head_dim"),
        Mutant(ocr, "text_config.rope_parameters.mrope_section", "[1, 2, 1]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(ocr, "text_config.num_key_value_heads", "3", key: "num_key_value_heads"),
        Mutant(ocr, "text_config.rms_norm_eps", "null", key: "text_config.rms_norm_eps"),
        Mutant(ocr, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(ocr, "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant(ocr, "video_end_token_id", "5.0", key: "video_end_token_id"),
        Mutant(ocr, "text_config.hidden_size", "48", key: "hidden_size"),
        // glmga: GlmgaConfig is Glm46VConfig under another type, checked alike.
        Mutant(glmga, "text_config.model_type", "\"glm4v_moe_text\"", key: "text_config.model_type"),
        Mutant(glmga, "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant(glmga, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(glmga, "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant(glmga, "video_start_token_id", "\"x\"", key: "video_start_token_id"),
        Mutant(glmga, "text_config.rope_parameters.mrope_section", "[1, 2, 2]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(glmga, "text_config.hidden_size", "48", key: "hidden_size"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// GLM-4.1V: q/k/v biases whatever `attention_bias` says (Glm4vTextConfig
    /// has none); the head tied by the text config's flag alone (no lm_head
    /// saved), refused when neither ties it; without `partial_rotary_factor`
    /// the whole head rotates (then 8 frequencies, which the default section
    /// [8, 12, 12] does not split).
    @Test func glm4vReadsAsGlm4vTextConfigBuildsIt() throws {
        let base = try EditedFixture(Self.dense).attentionScores()
        // (A head_dim of 0 is none: the rotary embedding takes `head_dim or hidden_size // heads`.)
        #expect(try EditedFixture(Self.dense) { config in
            config["tie_word_embeddings"] = false
            EditedModel.set(false, at: "text_config.attention_bias", in: &config)
            EditedModel.set(0, at: "text_config.head_dim", in: &config)
        }.attentionScores() == base)
        #expect(throws: DroptraceError.self) {
            try EditedFixture(Self.dense) { config in
                config["tie_word_embeddings"] = false
                EditedModel.set(false, at: "text_config.tie_word_embeddings", in: &config)
            }.load().head()
        }
        let whole = try EditedFixture(Self.dense) { config in
            EditedModel.set(nil, at: "text_config.rope_parameters.partial_rotary_factor", in: &config)
            EditedModel.set([2, 3, 3], at: "text_config.rope_parameters.mrope_section", in: &config)
        }
        #expect(try whole.load().block(0).attention?.attention.rotary?.inverseFrequencies.count == 8)
        #expect(try whole.attentionScores() != base)
        try EditedFixture(Self.dense) { config in
            EditedModel.set(nil, at: "text_config.rope_parameters.mrope_section", in: &config)
        }.expectRefused(naming: "[8, 12, 12]")
    }

    /// GLM-4.6V: GLM-4.1V's language model (the same class, read alike: no
    /// `attention_bias` read, a head_dim of 0 as none), its head tied by
    /// Glm46VConfig's own flag alone (default false), never the text
    /// config's (the fixture's text config says true; lm_head is stored);
    /// a text config naming no model type is glm4v_text. Its image and video
    /// token ids are embedded from their rows on text (transformers 5.25:
    /// the same logits wherever they lie).
    @Test func glm46vReadsGlm4vTextModelTiedByItsOwnFlag() throws {
        let base = try EditedFixture(Self.glm46v).attentionScores()
        #expect(try EditedFixture(Self.glm46v) { config in
            EditedModel.set(nil, at: "text_config.model_type", in: &config)
            EditedModel.set(true, at: "text_config.attention_bias", in: &config)
            EditedModel.set(0, at: "text_config.head_dim", in: &config)
        }.attentionScores() == base)
        #expect(try EditedFixture(Self.glm46v).load() is GlmModel)
        func headless(tied: Bool?) throws -> EditedFixture {
            let fixture = try EditedFixture(Self.glm46v) { $0["tie_word_embeddings"] = tied }
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "lm_head.weight" } }
            return fixture
        }
        #expect(throws: DroptraceError.self) { try headless(tied: false).load().head() }
        #expect(throws: DroptraceError.self) { try headless(tied: nil).load().head() }
        #expect(try headless(tied: true).load().head().projection.weight
            == (try Checkpoint(directory: FixtureFiles.model(Self.glm46v)).tensor("model.language_model.embed_tokens.weight").floats()))
        let ids = FixtureFiles.jsonlSequences()[0]
        #expect(try EditedFixture(Self.glm46v) { config in
            for key in ["image_token_id", "video_token_id", "image_start_token_id", "image_end_token_id"] { config[key] = ids[3] }
        }.attentionScores() == base)
    }

    /// glmga: GLM-4.6V's model under GlmgaConfig (Glm46VConfig under another
    /// type), read as glm46v's: the head tied by the top-level flag alone
    /// (the fixture's true over its text config's false: no head stored;
    /// absent, false), the text config's flag never read (checked against
    /// transformers 5.25); its token ids embedded from their rows on text.
    @Test func glmgaReadsAsGlm46v() throws {
        #expect(try EditedFixture(Self.glmga).load() is GlmModel)
        let base = try EditedFixture(Self.glmga).attentionScores()
        #expect(try EditedFixture(Self.glmga) { config in
            EditedModel.set(nil, at: "text_config.model_type", in: &config)
            EditedModel.set(false, at: "text_config.attention_bias", in: &config)
        }.attentionScores() == base)
        func head(top: Bool?, text: Bool) throws -> OutputHead {
            try EditedFixture(Self.glmga) { config in
                config["tie_word_embeddings"] = top
                EditedModel.set(text, at: "text_config.tie_word_embeddings", in: &config)
            }.load().head()
        }
        #expect(throws: Never.self) { try head(top: true, text: false) }
        #expect(throws: DroptraceError.self) { try head(top: nil, text: true) }
        #expect(throws: DroptraceError.self) { try head(top: false, text: true) }
        let ids = FixtureFiles.jsonlSequences()[0]
        #expect(try EditedFixture(Self.glmga) { config in
            for key in ["image_token_id", "video_token_id", "video_start_token_id", "video_end_token_id"] { config[key] = ids[3] }
        }.attentionScores() == base)
    }

    /// GLM-OCR: GLM-4.1V's language model without q/k/v biases (whatever
    /// `attention_bias` says: GlmOcrTextConfig has none), its heads the
    /// written head_dim 24 wide (not hidden_size / heads), half rotating;
    /// the head tied by the top-level or the text config's flag, as
    /// Glm4vConfig forwards it (the fixture's both false: lm_head stored;
    /// checked against transformers 5.25 for every combination). Its image
    /// and video token ids are embedded from their rows on text.
    @Test func glmOcrReadsGlm4vTextModelWithoutBiases() throws {
        let model = try EditedFixture(Self.ocr).load()
        #expect(model is GlmModel)
        let attention = try #require(try model.block(0).attention?.attention)
        #expect(attention.layout.headDim == 24 && attention.rotary?.inverseFrequencies.count == 6)
        let base = try EditedFixture(Self.ocr).attentionScores()
        #expect(try EditedFixture(Self.ocr) { config in
            EditedModel.set(true, at: "text_config.attention_bias", in: &config)
            EditedModel.set(nil, at: "text_config.model_type", in: &config)
        }.attentionScores() == base)
        func head(top: Bool?, text: Bool?) throws -> OutputHead {
            let fixture = try EditedFixture(Self.ocr) { config in
                config["tie_word_embeddings"] = top
                EditedModel.set(text, at: "text_config.tie_word_embeddings", in: &config)
            }
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "lm_head.weight" } }
            return try fixture.load().head()
        }
        #expect(throws: Never.self) { try head(top: true, text: false) }
        #expect(throws: Never.self) { try head(top: false, text: true) }
        #expect(throws: Never.self) { try head(top: nil, text: true) }
        #expect(throws: DroptraceError.self) { try head(top: false, text: false) }
        #expect(throws: DroptraceError.self) { try head(top: nil, text: nil) }
        let ids = FixtureFiles.jsonlSequences()[0]
        #expect(try EditedFixture(Self.ocr) { config in
            for key in ["image_token_id", "video_token_id", "image_start_token_id", "image_end_token_id"] { config[key] = ids[3] }
        }.attentionScores() == base)
    }

    /// GLM-4.5V: no q/k norms whatever `use_qk_norm` says, half of each head
    /// rotating when the rope parameters give no fraction.
    @Test func glm4vMoeReadsAsGlm4vMoeTextConfigBuildsIt() throws {
        let base = try EditedFixture(Self.moe).attentionScores()
        #expect(try EditedFixture(Self.moe) { config in
            EditedModel.set(true, at: "text_config.use_qk_norm", in: &config)
            EditedModel.set(nil, at: "text_config.rope_parameters.partial_rotary_factor", in: &config)
        }.attentionScores() == base)
    }
}

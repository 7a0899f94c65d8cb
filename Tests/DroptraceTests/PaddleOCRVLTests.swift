@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// PaddleOCR-VL (`paddleocr_vl`) read as its language model: ERNIE 4.5's
/// block rotating halves by M-RoPE, its text config nested or at the top
/// level (as released), the head's tying, the sections and rope types
/// transformers can or cannot run. The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference
/// suites); the edited configs below were checked against transformers 5.25 too.
@Suite struct PaddleOCRVLTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let fixture = "paddleocr_vl-f32"

    static let mutants: [Mutant] = [
        // PaddleOCRRotaryEmbedding splits the heads' 8 frequencies by the section (torch.split fails otherwise).
        Mutant(fixture, "text_config.rope_parameters.mrope_section", "[2, 3, 4]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(fixture, "text_config.rope_parameters.mrope_section", "[2.0, 3, 3]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(fixture, "text_config.rope_parameters.mrope_section", "[10, -2]", key: "text_config.rope_parameters.mrope_section"),
        // "mrope" is no rope type of PaddleOCRRotaryEmbedding's (ROPE_INIT_FUNCTIONS has none: KeyError).
        Mutant(fixture, "text_config.rope_parameters.rope_type", "\"mrope\"", key: "mrope"),
        // PaddleOCRTextConfig's and PaddleOCRVLConfig's kinds.
        Mutant(fixture, "text_config.use_bias", "0", key: "text_config.use_bias"),
        Mutant(fixture, "text_config.head_dim", "16.0", key: "text_config.head_dim"),
        Mutant(fixture, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(fixture, "text_config.rms_norm_eps", "null", key: "text_config.rms_norm_eps"),
        Mutant(fixture, "text_config.tie_word_embeddings", "null", key: "text_config.tie_word_embeddings"),
        Mutant(fixture, "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant(fixture, "image_token_id", "5.0", key: "image_token_id"),
        Mutant(fixture, "vision_end_token_id", "\"x\"", key: "vision_end_token_id"),
        // validate_layer_type: one entry per layer.
        Mutant(fixture, "text_config.layer_types", #"["full_attention"]"#, key: "layer_types"),
        // The heads are head_dim wide (hidden_size / heads = 12 where null), as the stored q_proj is not.
        Mutant(fixture, "text_config.head_dim", "null", key: "q_proj"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// ERNIE's block with the written head_dim 16 (not hidden_size / heads),
    /// biases on every projection by `use_bias` (null: none), 8 frequencies
    /// at base 5e5 rotating halves; the text config's model_type is not
    /// read (PaddleOCRVLConfig builds PaddleOCRTextConfig whatever it says);
    /// any section that splits the 8 frequencies scores the same on text.
    @Test func readsErnieBlockRotatingHalves() throws {
        let model = try EditedFixture(Self.fixture).load()
        #expect(model is InterleavedLlamaModel)
        let attention = try #require(try model.block(0).attention?.attention)
        #expect(attention.layout.headDim == 16 && attention.layout.numHeads == 4 && attention.layout.numKVHeads == 2)
        let frequency = try #require(attention.rotary?.inverseFrequencies[1])
        #expect(attention.rotary?.inverseFrequencies.count == 8)
        #expect(abs(Double(frequency) / (1 / pow(500_000.0, 2.0 / 16)) - 1) < 1e-6)
        #expect(try blockZeroBiases(EditedFixture(Self.fixture)) == (true, true, true))
        let base = try EditedFixture(Self.fixture).attentionScores()
        #expect(try EditedFixture(Self.fixture) { EditedModel.set("llama", at: "text_config.model_type", in: &$0) }.attentionScores() == base)
        for section: Any in [[8, 0, 0], [4, 4], 4] {
            #expect(try EditedFixture(Self.fixture) {
                EditedModel.set(section, at: "text_config.rope_parameters.mrope_section", in: &$0)
            }.attentionScores() == base)
        }
        // Absent, the section is the class's [16, 24, 24]: 64 frequencies, not these heads' 8.
        try EditedFixture(Self.fixture) { EditedModel.set(nil, at: "text_config.rope_parameters.mrope_section", in: &$0) }
            .expectRefused(naming: "[16, 24, 24]")
        #expect(try EditedFixture(Self.fixture) { EditedModel.set(nil, at: "text_config.rope_parameters.rope_theta", in: &$0) }
            .attentionScores() == base)
        #expect(try EditedFixture(Self.fixture) { EditedModel.set(10_000.0, at: "text_config.rope_parameters.rope_theta", in: &$0) }
            .attentionScores() != base)
        // use_bias null builds no biases (transformers leaves the stored ones unread, as unexpected keys).
        let unbiased = try EditedFixture(Self.fixture) { EditedModel.set(NSNull(), at: "text_config.use_bias", in: &$0) }
        #expect(try blockZeroBiases(unbiased) == (false, false, false))
        #expect(try unbiased.attentionScores() != base)
    }

    /// The released form: no text_config, its keys at the top level (which
    /// PaddleOCRVLConfig moves into its text config), the rope parameters as
    /// rope_scaling with the base beside them; it scores as the nested
    /// config, weights under the released `model.` or transformers 5's
    /// `model.language_model.`; its keys are type-checked as
    /// PaddleOCRTextConfig's; there the text config always ties its head
    /// (its flag takes the class's true, which wins over a false top-level one).
    @Test func flatConfigReadsAsPaddleOCRVLConfigBuildsIt() throws {
        let base = try EditedFixture(Self.fixture).attentionScores()
        func flat(_ change: @escaping (inout [String: Any]) -> Void = { _ in }) throws -> EditedFixture {
            try EditedFixture(Self.fixture) { config in
                var text = config.removeValue(forKey: "text_config") as! [String: Any]
                text["model_type"] = nil
                var rope = text.removeValue(forKey: "rope_parameters") as! [String: Any]
                text["rope_theta"] = rope.removeValue(forKey: "rope_theta")
                rope["type"] = "default"
                text["rope_scaling"] = rope
                config.merge(text, uniquingKeysWith: { _, new in new })
                change(&config)
            }
        }
        #expect(try flat().attentionScores() == base)
        #expect(try flat { $0["tie_word_embeddings"] = false }.attentionScores() == base)
        try flat { $0["hidden_size"] = 48.0 }.expectRefused(naming: "hidden_size")
        try flat { $0["use_bias"] = "x" }.expectRefused(naming: "use_bias")
        let renamed = try flat()
        try BadInputTests().renameWeights(renamed.model, prefix: "model.", to: "model.language_model.")
        #expect(try renamed.attentionScores() == base)
    }

    /// Nested, the head is tied unless both flags are false (each true where absent).
    @Test func headTiedUnlessBothFlagsFalse() throws {
        try expectHeadTiedUnlessBothFlagsFalse(Self.fixture)
    }

    /// A block-drop export keeps the nested text config, its layer count renumbered.
    @Test func blockDropExportRenumbersTheTextConfig() throws {
        let config = try EditedFixture(Self.fixture).exportedConfig(droppingBlocks: [2])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 3)
        #expect(config["model_type"] as? String == "paddleocr_vl")
    }
}

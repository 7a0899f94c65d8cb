@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// HunYuanVL (`hunyuan_vl`) read as its language model: Hunyuan dense's
/// block rotating by M-RoPE, its text config nested or at the top level (as
/// released), the head's tying, the sections and rope types
/// HunYuanVLTextConfig and its rotary embedding take or refuse. The scores
/// themselves are checked against transformers with every other family
/// (`DropTests` and the reference suites); the edited configs below were
/// checked against transformers 5.25 too.
@Suite struct HunYuanVLTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let fixture = "hunyuan_vl-f32"
    static let rope = "text_config.rope_parameters"

    static let mutants: [Mutant] = [
        // _validate_mrope_section: integral sections summing to head_dim // 2 = 8.
        Mutant(fixture, rope + ".mrope_section", "[2, 2, 2, 3]", key: rope + ".mrope_section"),
        Mutant(fixture, rope + ".mrope_section", "[2.5, 1.5, 2, 2]", key: rope + ".mrope_section"),
        Mutant(fixture, rope + ".mrope_section", "8", key: rope + ".mrope_section"),
        // torch.split fails on a negative run.
        Mutant(fixture, rope + ".mrope_section", "[10, -2]", key: rope + ".mrope_section"),
        // HunYuanVLRotaryEmbedding counts the axes with len(mrope_section).
        Mutant(fixture, rope + ".mrope_section", "null", key: rope + ".mrope_section"),
        // Both names with different sections (_normalize_mrope_section_alias).
        Mutant(fixture, rope + ".xdrope_section", "[4, 4]", key: rope + ".xdrope_section"),
        Mutant(fixture, rope + ".rope_type", "\"mrope\"", key: "mrope"),
        Mutant(fixture, rope + ".alpha", "-1.0", key: "alpha"),
        // HunYuanVLTextConfig's and HunYuanVLConfig's kinds.
        Mutant(fixture, "text_config.attention_bias", "0", key: "text_config.attention_bias"),
        Mutant(fixture, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(fixture, "text_config.rms_norm_eps", "null", key: "text_config.rms_norm_eps"),
        Mutant(fixture, "text_config.tie_word_embeddings", "null", key: "text_config.tie_word_embeddings"),
        Mutant(fixture, "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant(fixture, "im_start_id", "5.0", key: "im_start_id"),
        Mutant(fixture, "text_config.layer_types", #"["full_attention"]"#, key: "layer_types"),
        // HunYuanVLDenseV1Attention sizes its heads by head_dim, which a null leaves None.
        Mutant(fixture, "text_config.head_dim", "null", key: "head_dim"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Hunyuan dense's block: the written head_dim 16, q/k/v/o biases, 8
    /// frequencies at the NTK-alpha base 1e4 · 100^(16/14); the text config's
    /// model_type is not read; any section HunYuanVLTextConfig accepts
    /// (integral floats, true for 1, under either name) scores the same on
    /// text, and "xdrope" is "dynamic".
    @Test func readsHunyuanDenseBlockWithItsSections() throws {
        let model = try EditedFixture(Self.fixture).load()
        #expect(model is HunYuanDenseV1Model)
        let attention = try #require(try model.block(0).attention?.attention)
        #expect(attention.layout.headDim == 16 && attention.layout.numHeads == 4 && attention.layout.numKVHeads == 2)
        #expect(attention.output.bias != nil)
        let frequency = try #require(attention.rotary?.inverseFrequencies[1])
        #expect(attention.rotary?.inverseFrequencies.count == 8)
        #expect(abs(Double(frequency) / (1 / pow(10_000.0 * pow(100.0, 16.0 / 14), 2.0 / 16)) - 1) < 1e-6)
        let base = try EditedFixture(Self.fixture).attentionScores()
        func edited(_ change: @escaping (inout [String: Any]) -> Void) throws -> [Double] {
            try EditedFixture(Self.fixture, change).attentionScores()
        }
        #expect(try edited { EditedModel.set("llama", at: "text_config.model_type", in: &$0) } == base)
        for section: Any in [[8, 0, 0, 0], [4, 4], [2.0, 2, 2, 2], [true, true, 3, 3]] {
            #expect(try edited { EditedModel.set(section, at: Self.rope + ".mrope_section", in: &$0) } == base)
        }
        #expect(try edited { config in
            EditedModel.set(nil, at: Self.rope + ".mrope_section", in: &config)
            EditedModel.set([2, 2, 2, 2], at: Self.rope + ".xdrope_section", in: &config)
        } == base)
        #expect(try edited { EditedModel.set([2.0, 2, 2, 2], at: Self.rope + ".xdrope_section", in: &$0) } == base)
        #expect(try edited { EditedModel.set("xdrope", at: Self.rope + ".rope_type", in: &$0) } == base)
        // Without the alpha, "dynamic" is the dynamic NTK rotation.
        #expect(try edited { EditedModel.set(nil, at: Self.rope + ".alpha", in: &$0) } != base)
        try EditedFixture(Self.fixture) { EditedModel.set(nil, at: Self.rope + ".mrope_section", in: &$0) }
            .expectRefused(naming: "mrope_section")
    }

    /// The released form: no text_config, its keys at the top level (which
    /// HunYuanVLConfig moves into its text config), rope_scaling of type
    /// "xdrope" with an xdrope_section and the base beside it; it scores as
    /// the nested config under the released `model.` or transformers 5's
    /// `model.language_model.`; its keys are type-checked as
    /// HunYuanVLTextConfig's; there the head always ties.
    @Test func flatConfigReadsAsHunYuanVLConfigBuildsIt() throws {
        let base = try EditedFixture(Self.fixture).attentionScores()
        func flat(_ change: @escaping (inout [String: Any]) -> Void = { _ in }) throws -> EditedFixture {
            try EditedFixture(Self.fixture) { config in
                var text = config.removeValue(forKey: "text_config") as! [String: Any]
                text["model_type"] = nil
                var rope = text.removeValue(forKey: "rope_parameters") as! [String: Any]
                text["rope_theta"] = rope.removeValue(forKey: "rope_theta")
                rope["rope_type"] = nil
                rope["type"] = "xdrope"
                rope["xdrope_section"] = rope.removeValue(forKey: "mrope_section")
                text["rope_scaling"] = rope
                config.merge(text, uniquingKeysWith: { _, new in new })
                change(&config)
            }
        }
        #expect(try flat().attentionScores() == base)
        // HunYuanVLTextConfig's aliases, which it reads from the top level's keys too.
        #expect(try flat {
            $0["attention_head_dim"] = $0.removeValue(forKey: "head_dim")
            $0["org_vocab_size"] = $0.removeValue(forKey: "vocab_size")
        }.attentionScores() == base)
        #expect(try flat { $0["tie_word_embeddings"] = false }.attentionScores() == base)
        try flat { $0["hidden_size"] = 48.0 }.expectRefused(naming: "hidden_size")
        try flat { $0["attention_bias"] = "x" }.expectRefused(naming: "attention_bias")
        try flat { EditedModel.set([2, 2, 2, 3], at: "rope_scaling.xdrope_section", in: &$0) }.expectRefused(naming: "rope_scaling.xdrope_section")
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
        let config = try EditedFixture(Self.fixture).exportedConfig(droppingBlocks: [1])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 3)
        #expect(config["model_type"] as? String == "hunyuan_vl")
    }
}

@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Qianfan-OCR (`qianfan_ocr`, QianfanOCRForConditionalGeneration): InternVL's
/// model around a qwen3 language model by default, read as that language
/// model; the head untied by QianfanOCRConfig's default false, whatever the
/// text config says; the names as released and as transformers saves them
/// (`language_model.model.`, its layers as `language_model.model.encoder.layers.`,
/// `language_model.lm_head`) read as transformers renames them. The scores
/// themselves are checked against transformers with every other family
/// (`DropTests` and the reference suites).
@Suite struct QianfanOCRTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "qianfan_ocr-f32"

    /// Refused naming the key, as QianfanOCRConfig (and the text config class it builds) refuses them.
    static let mutants: [Mutant] = [
        Mutant(name, "tie_word_embeddings", "null"), Mutant(name, "tie_word_embeddings", "1"),
        Mutant(name, "image_token_id", "5.0"), Mutant(name, "image_token_id", "null"),
        Mutant(name, "image_seq_length", "null"), Mutant(name, "downsample_ratio", "\"half\""),
        Mutant(name, "vision_feature_layer", "1.5"), Mutant(name, "vision_config", "5"),
        Mutant(name, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(name, "text_config.head_dim", "null", key: "text_config.head_dim"),
        Mutant(name, "text_config.model_type", "\"gemma\"", key: "text_config.model_type"),
        Mutant(name, "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant(name, "text_config.hidden_size", "64", key: "hidden_size"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The fixture stores the names save_pretrained writes (the released
    /// InternVL-chat ones); transformers 5's module names, and the release's
    /// `language_model.model.layers.`, score alike. Untied by the class's
    /// default (the fixture's text config says true): without a head it is
    /// refused; tied at the top level it reads the embedding.
    @Test func readsItsQwen3LanguageModelUnderEveryName() throws {
        let fixture = try EditedFixture(Self.name)
        #expect(try fixture.load() is Qwen3Model)
        // As stored (Checkpoint names them as transformers renames them).
        let stored = Set(try SafetensorsFile(path: fixture.model.appendingPathComponent("model.safetensors").path).tensors.keys)
        #expect(stored.contains("language_model.model.encoder.layers.0.self_attn.q_norm.weight"))
        #expect(stored.contains("language_model.lm_head.weight") && !stored.contains { $0.hasPrefix("model.language_model.") })
        let base = try scores(fixture)
        for (from, to) in [
            ("language_model.model.encoder.layers.", "model.language_model.layers."),
            ("language_model.model.encoder.layers.", "language_model.model.layers."),
        ] {
            let renamed = try EditedFixture(Self.name)
            try BadInputTests().rewriteWeights(renamed.model) { entries in
                for index in entries.indices where entries[index].name.hasPrefix(from) {
                    entries[index].name = to + entries[index].name.dropFirst(from.count)
                }
                if to.hasPrefix("model.") {
                    for index in entries.indices {
                        for (old, new) in [("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head.")]
                        where entries[index].name.hasPrefix(old) {
                            entries[index].name = new + entries[index].name.dropFirst(old.count)
                        }
                    }
                }
            }
            #expect(try scores(renamed) == base, "\(to)")
        }
        // Both names of the head stored: transformers would read one over the other.
        let twice = try EditedFixture(Self.name)
        let head = try Checkpoint(directory: twice.model).tensor("lm_head.weight")
        try BadInputTests().rewriteWeights(twice.model) { $0.append(SafetensorsWriter.Entry(head, renamedTo: "lm_head.weight")) }
        #expect(throws: DroptraceError.self) { _ = try twice.load() }

        let headless = try EditedFixture(Self.name)
        try BadInputTests().rewriteWeights(headless.model) { $0.removeAll { $0.name == "language_model.lm_head.weight" } }
        #expect(throws: DroptraceError.self) { _ = try headless.load().head() }
        let tied = try EditedFixture(Self.name) { $0["tie_word_embeddings"] = true }
        try BadInputTests().rewriteWeights(tied.model) { $0.removeAll { $0.name == "language_model.lm_head.weight" } }
        #expect(throws: Never.self) { _ = try tied.load().head() }
        // The vision tower is never read; a text config without model_type is qwen3's.
        let edits: [(inout [String: Any]) -> Void] = [
            { $0["vision_config"] = nil }, { EditedModel.set(nil, at: "text_config.model_type", in: &$0) },
            { EditedModel.set(false, at: "text_config.tie_word_embeddings", in: &$0) },
        ]
        for edit in edits {
            #expect(try scores(EditedFixture(Self.name, edit)) == base)
        }
    }

    /// A block-dropped export renumbers the text config and the stored
    /// layers under their stored names; decoding carries each layer's cache.
    @Test func exportsAndDecodes() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [1])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 3 && (text["layer_types"] as? [String])?.count == 3)
        #expect(config["tie_word_embeddings"] == nil && config["model_type"] as? String == "qianfan_ocr")
        let model = try EditedFixture(Self.name).load()
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12, plans: [.none, DropPlan(attention: [1]), DropPlan(blocks: [2])], label: Self.name)
    }

    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.name)
    }
}

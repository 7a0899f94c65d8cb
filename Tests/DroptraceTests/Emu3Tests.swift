@testable import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Testing

/// Emu3 (`emu3-f32`: `Emu3ForConditionalGeneration` under the released
/// names; `emu3_text_model-f32`: `Emu3ForCausalLM`): Llama's layers beside a
/// VQ-VAE never run on text.
@Suite struct Emu3Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let names = ["emu3-f32", "emu3_text_model-f32"]

    static let mutants: [Mutant] = [
        // Emu3Model is built from the vocabulary map; the text config's sizes and kinds.
        Mutant("emu3-f32", "vocabulary_map", "null", key: "vocabulary_map"),
        Mutant("emu3-f32", "text_config.num_key_value_heads", "3", key: "text_config.num_key_value_heads"),
        Mutant("emu3-f32", "text_config.attention_dropout", "\"x\"", key: "text_config.attention_dropout"),
        Mutant("emu3_text_model-f32", "hidden_size", "50", key: "hidden_size"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score within 1e-7 of transformers'.
    @Test(arguments: names)
    func scoresMatchTransformersClosely(name: String) throws {
        try expectScoresMatchTransformers(name)
    }

    /// The released names (`text_model.model.`, `text_model.lm_head`,
    /// `vqmodel.`) and the modules' own (`model.text_model.`, `lm_head`,
    /// `model.vqmodel.`), which transformers renames the released ones to,
    /// give the same model; the head is tied by the top-level flag alone.
    @Test func releasedAndModuleNamesReadAlike() throws {
        let base = try EditedFixture("emu3-f32").attentionScores()
        // The checkpoint's names as its modules have them (droptrace lists them so, as transformers renames them).
        let renamed = try EditedFixture("emu3-f32")
        func stores(_ name: String) throws -> Bool {
            try Data(contentsOf: renamed.model.appendingPathComponent(Checkpoint.singleFileName)).range(of: Data(name.utf8)) != nil
        }
        #expect(try stores("\"text_model.model.embed_tokens.weight\"") && !stores("\"model.text_model.embed_tokens.weight\""))
        let stored = try Checkpoint(directory: renamed.model)
        try rewriteTensors(renamed.model) { entries in
            entries = try stored.storedTensorNames.map { SafetensorsWriter.Entry(try stored.storedTensor($0), renamedTo: $0) }
        }
        #expect(try !stores("\"text_model.model.embed_tokens.weight\"") && stores("\"model.text_model.embed_tokens.weight\""))
        #expect(try renamed.attentionScores() == base)
        // Without a stored head: tied by the top-level flag, refused by the text config's alone.
        func headless(_ change: @escaping (inout [String: Any]) -> Void) throws -> EditedFixture {
            let fixture = try EditedFixture("emu3-f32", change)
            try rewriteTensors(fixture.model) { entries in entries.removeAll { $0.name.hasSuffix("lm_head.weight") } }
            return fixture
        }
        #expect(throws: Never.self) { try headless { $0["tie_word_embeddings"] = true }.load().head() }
        #expect(throws: DroptraceError.self) {
            try headless { config in
                var text = config["text_config"] as! [String: Any]
                text["tie_word_embeddings"] = true
                config["text_config"] = text
            }.load().head()
        }
    }
}

@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Kimi K2.5 (`kimi_k25`, Kimi_K25ForConditionalGeneration) read as its
/// deepseek_v3 language model: the text model type as the releases write it
/// (`kimi_k2`, which Kimi_K25Config renames to `deepseek_v3`), the released
/// tensor names (LLaVA's 4.x `language_model.model.`, `language_model.lm_head`)
/// and the modules' own (`model.language_model.`, `lm_head`), which
/// transformers' conversion mapping renames them to; the head tied by the
/// top-level `tie_word_embeddings` alone (default true). The scores
/// themselves are checked against transformers with every other family
/// (`DropTests` and the reference suites); the edited configs below were
/// checked against transformers 5.25.
@Suite struct KimiK25Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let kimi = "kimi_k25-f32"

    static let mutants: [Mutant] = [
        // Only a deepseek_v3 (kimi_k2 read as it) or deepseek_v2 text model is read; AutoConfig cannot resolve null.
        Mutant(kimi, "text_config.model_type", "\"qwen3\"", key: "text_config.model_type"),
        Mutant(kimi, "text_config.model_type", "\"llama\"", key: "text_config.model_type"),
        Mutant(kimi, "text_config.model_type", "null", key: "text_config.model_type"),
        // The text config is checked as DeepseekV3Config checks it; the wrapper's own keys as Kimi_K25Config's.
        Mutant(kimi, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(kimi, "text_config.n_routed_experts", "null", key: "text_config.n_routed_experts"),
        Mutant(kimi, "text_config.rms_norm_eps", "\"x\"", key: "text_config.rms_norm_eps"),
        Mutant(kimi, "tie_word_embeddings", "null"),
        Mutant(kimi, "tie_word_embeddings", "1"),
        // The weights contradict these sizes.
        Mutant(kimi, "text_config.hidden_size", "64", key: "hidden_size"),
        Mutant(kimi, "text_config.n_routed_experts", "4", key: "text_config.n_routed_experts"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// DeepSeekModel reads the wrapped text config whichever way it names
    /// its type: kimi_k2 (the fixture, as released), deepseek_v3, or none;
    /// a deepseek_v2 text config as DeepseekV2Config reads it (transformers
    /// builds DeepseekV2Model from it, on the same tensors).
    @Test func deepseekV3LanguageModel() throws {
        let scores = try EditedFixture(Self.kimi).attentionScores()
        #expect(try EditedFixture(Self.kimi).load() is DeepSeekModel)
        for type in ["deepseek_v3", nil] {
            #expect(try EditedFixture(Self.kimi) { EditedModel.set(type, at: "text_config.model_type", in: &$0) }
                .attentionScores() == scores)
        }
        let v2 = try EditedFixture(Self.kimi) { EditedModel.set("deepseek_v2", at: "text_config.model_type", in: &$0) }
        #expect(try v2.attentionScores() != scores)
    }

    /// Kimi_K25Config ties unless its own flag says otherwise (the releases
    /// write false); the text config's flag is not read.
    /// Image and video token ids in the text are embedded as token 0, as
    /// Kimi_K25Model's forward embeds them (the released image token lies
    /// inside the vocabulary, so calibration text may hold it).
    @Test func mediaTokensAreEmbeddedAsTokenZero() throws {
        let model = try EditedFixture(Self.kimi) {
            $0["image_token_id"] = 100
            $0["video_token_id"] = 101
        }.load()
        let embedded = try model.embed(TokenBatch(sequences: [[5, 100, 7, 101, 0, 99]]))
        func row(_ r: Int) -> ArraySlice<Float> { embedded.data[(r * embedded.cols)..<((r + 1) * embedded.cols)] }
        #expect(row(1) == row(4) && row(3) == row(4) && row(5) != row(4))
    }

    @Test func theTopLevelFlagAloneTiesTheHead() throws {
        func tied(_ change: @escaping (inout [String: Any]) -> Void) throws -> Bool? {
            let fixture = try EditedFixture(Self.kimi, change)
            return try Llava.placement(Checkpoint(directory: fixture.model)).tiedEmbeddings
        }
        #expect(try tied { _ in } == false)
        #expect(try tied { $0["tie_word_embeddings"] = nil } == true)
        #expect(try tied { config in
            config["tie_word_embeddings"] = nil
            EditedModel.set(false, at: "text_config.tie_word_embeddings", in: &config)
        } == true)
        #expect(try tied { EditedModel.set(true, at: "text_config.tie_word_embeddings", in: &$0) } == false)
    }

    /// The same model under each name transformers reads: the release's
    /// (the fixture), the modules' own names, and the layers as transformers
    /// 5.25's save_pretrained writes them (`language_model.model.blocks.`:
    /// the reverse of its vision tower's unscoped `blocks` → `layers` rename,
    /// which reads them back as the layers).
    @Test(arguments: [
        ("language_model.model.", "model.language_model."),
        ("language_model.lm_head.", "lm_head."),
        ("language_model.model.layers.", "language_model.model.blocks."),
        ("language_model.model.layers.", "model.language_model.blocks."),
    ])
    func everyNameTransformersReadsIsTheSameModel(_ prefix: String, _ replacement: String) throws {
        let scores = try EditedFixture(Self.kimi).attentionScores()
        let renamed = try EditedFixture(Self.kimi)
        try BadInputTests().renameWeights(renamed.model, prefix: prefix, to: replacement)
        #expect(try renamed.attentionScores() == scores)
    }

    /// A missing language-model tensor is refused, naming it; so is a layer stored under two names transformers reads as
    /// one (it would load one over the other).
    @Test func aMissingTensorIsRefused() throws {
        let fixture = try EditedFixture(Self.kimi)
        try BadInputTests().rewriteWeights(fixture.model) {
            $0.removeAll { $0.name == "language_model.model.layers.2.mlp.experts.3.up_proj.weight" }
        }
        let error = #expect(throws: DroptraceError.self) { _ = try fixture.attentionScores() }
        #expect(error?.message.contains("layers.2.mlp.experts.3.up_proj.weight") == true)
        let twice = try EditedFixture(Self.kimi)
        try BadInputTests().rewriteWeights(twice.model) { entries in
            entries += entries.filter { $0.name.hasPrefix("language_model.model.layers.0.") }.map {
                var copy = $0
                copy.name = "language_model.model.blocks." + $0.name.dropFirst("language_model.model.layers.".count)
                return copy
            }
        }
        let both = #expect(throws: DroptraceError.self) { _ = try twice.attentionScores() }
        #expect(both?.message.contains("are both read as 'model.language_model.layers.0.") == true)
    }

    /// transformers' renaming of the vision tower's norm0 → norm1, norm1 →
    /// norm2 pairs (a `GroupWeightRename`) acts only once a name has matched
    /// its first pattern: the released names all move up, norm1 and norm2
    /// stored without norm0 stay.
    @Test func groupedRenamingsActOnceTheirGuardMatched() throws {
        let block = "vision_tower.encoder.blocks.0."
        let renamed = try TensorRenamings.storedNames(
            of: [block + "norm0.weight", block + "norm1.weight"], modelType: "kimi_k25", path: "x")
        #expect(renamed?["model.vision_tower.layers.0.norm1.weight"] == block + "norm0.weight")
        #expect(renamed?["model.vision_tower.layers.0.norm2.weight"] == block + "norm1.weight")
        let converted = try TensorRenamings.storedNames(
            of: [block + "norm1.weight", block + "norm2.weight"], modelType: "kimi_k25", path: "x")
        #expect(converted?["model.vision_tower.layers.0.norm1.weight"] == block + "norm1.weight")
        #expect(converted?["model.vision_tower.layers.0.norm2.weight"] == block + "norm2.weight")
    }
}

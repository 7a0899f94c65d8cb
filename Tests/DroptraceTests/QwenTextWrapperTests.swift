@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Testing

/// LLaVA-OneVision-1.5 (`llava_onevision1_5`) and Ovis2.5 (`ovis2_5`), read
/// as their qwen3 language model: the released tensor names, which
/// transformers' conversion mapping renames on load (a class-keyed mapping,
/// a sub-model's rules scoped to its names, negative lookaheads, `\1`
/// replacements: `TensorRenamings`), read as transformers reads them and as
/// the modules' own names; the head tied by the top-level
/// `tie_word_embeddings` alone (default false); LlavaOnevision15Config's
/// vision width rules. The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference
/// suites); the edited configs below were checked against transformers 5.25.
@Suite struct QwenTextWrapperTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let onevision = "llava_onevision1_5-f32"
    static let ovis = "ovis2_5-f32"

    static let mutants: [Mutant] = [
        // Only a qwen3 text model is read (the releases' type).
        Mutant(onevision, "text_config.model_type", "\"qwen2\"", key: "text_config.model_type"),
        Mutant(ovis, "text_config.model_type", "\"llama\"", key: "text_config.model_type"),
        Mutant(ovis, "text_config.model_type", "null", key: "text_config.model_type"),
        // The text config is checked as Qwen3Config checks it; the wrappers' own keys as theirs.
        Mutant(onevision, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(ovis, "text_config.use_sliding_window", "\"x\"", key: "text_config.use_sliding_window"),
        Mutant(ovis, "tie_word_embeddings", "null"),
        Mutant(onevision, "tie_word_embeddings", "1"),
        // LlavaOnevision15Config: the vision output width must be the text model's hidden_size
        // (4096 when absent), the tower's width a multiple of 4 × its heads.
        Mutant(onevision, "vision_config.out_hidden_size", "64", key: "vision_config.out_hidden_size"),
        Mutant(onevision, "vision_config", "null", key: "vision_config.out_hidden_size"),
        Mutant(onevision, "vision_config", "{}", key: "vision_config.out_hidden_size"),
        Mutant(onevision, "vision_config.text_hidden_size", "64", key: "vision_config.out_hidden_size"),
        Mutant(onevision, "vision_config.num_heads", "3", key: "vision_config.hidden_size"),
        Mutant(onevision, "vision_config.num_heads", "0", key: "vision_config.hidden_size"),
        Mutant(onevision, "vision_config.out_hidden_size", "48.0", key: "vision_config.out_hidden_size"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Both wrappers build their language model as Qwen3Model (the default
    /// text model type); LLaVA-OneVision-1.5's fixture slides on layers 0 and 2.
    @Test func qwen3LanguageModels() throws {
        let model = try EditedFixture(Self.onevision).load()
        #expect(model is Qwen3Model)
        #expect(try (0..<4).map { try model.block($0).attention?.attention.slidingWindow } == [8, nil, 8, nil])
        #expect(try EditedFixture(Self.ovis).load() is Qwen3Model)
        for name in [Self.onevision, Self.ovis] {
            #expect(try EditedFixture(name) { EditedModel.set(nil, at: "text_config.model_type", in: &$0) }
                .attentionScores() == EditedFixture(name).attentionScores())
        }
        // The alias alone is read as the field, as LlavaOnevision15VisionConfig's attribute_map sets it;
        // beside the field with another value it is refused, as every alias is (which one wins depends on the class).
        #expect(throws: Never.self) {
            try EditedFixture(Self.onevision) { config in
                EditedModel.set(nil, at: "vision_config.out_hidden_size", in: &config)
                EditedModel.set(48, at: "vision_config.text_hidden_size", in: &config)
            }.load()
        }
        let both = #expect(throws: DroptraceError.self) {
            try EditedFixture(Self.onevision) { config in
                EditedModel.set(64, at: "vision_config.out_hidden_size", in: &config)
                EditedModel.set(48, at: "vision_config.text_hidden_size", in: &config)
            }.load()
        }
        #expect(both?.message.contains("keep one of them") == true)
    }

    /// transformers' renaming as the generated rules reproduce it (the
    /// expected names are transformers 5.25's `apply_renamings` of each):
    /// class-keyed rules with negative lookaheads, a scoped sub-model's
    /// rules (under `model.visual.` or `visual.`, `\1` put back), a pattern
    /// ending at a name boundary.
    @Test(arguments: [
        ("llava_onevision1_5", "model.layers.0.self_attn.q_proj.weight", "model.language_model.layers.0.self_attn.q_proj.weight"),
        ("llava_onevision1_5", "model.model.layers.0.mlp.up_proj.weight", "model.language_model.model.layers.0.mlp.up_proj.weight"),
        ("llava_onevision1_5", "model.language_model.norm.weight", "model.language_model.norm.weight"),
        ("llava_onevision1_5", "model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
        ("llava_onevision1_5", "lm_head.weight", "lm_head.weight"),
        ("llava_onevision1_5", "visual.merger.ln_q.weight", "model.visual.merger.norm.weight"),
        ("llava_onevision1_5", "visual.class_embedding", "model.visual.cls_embeddings.class_embedding"),
        ("llava_onevision1_5", "visual.class_embeddingx", "model.visual.class_embeddingx"),
        ("llava_onevision1_5", "model.visual.merger.mlp.0.bias", "model.visual.merger.linear_fc1.bias"),
        ("llava_onevision1_5", "visual.visual.blocks.0.attn.qkv.weight", "model.visual.blocks.0.attn.qkv.weight"),
        ("llava_onevision1_5", "model.visual.visual.patch_embed.proj.weight", "model.visual.patch_embed.proj.weight"),
        ("llava_onevision1_5", "model.visualize.weight", "model.visualize.weight"),
        ("llava_onevision1_5", "modelx.weight", "model.language_modelx.weight"),
        ("llava_onevision1_5", "language_model.layers.0.x", "language_model.layers.0.x"),
        ("ovis2_5", "llm.model.layers.0.self_attn.k_norm.weight", "model.language_model.layers.0.self_attn.k_norm.weight"),
        ("ovis2_5", "llm.lm_head.weight", "lm_head.weight"),
        ("ovis2_5", "vte.weight", "model.vte.weight"),
        ("ovis2_5", "visual_tokenizer.head.0.weight", "model.multi_modal_projector.visual_tokenizer.linear.weight"),
        ("ovis2_5", "model.language_model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
        ("ovis2_5", "xllm.model.norm.weight", "xllm.model.norm.weight"),
        ("ovis2_5", "llm.model.model.norm.weight", "model.language_model.model.norm.weight"),
    ])
    func namesAreRenamedAsTransformersRenamesThem(_ modelType: String, _ stored: String, _ renamed: String) throws {
        let names = try TensorRenamings.storedNames(of: [stored], modelType: modelType, path: "x")
        #expect((names?.first(where: { $0.value == stored })?.key ?? stored) == renamed)
    }

    /// The same model under each name transformers reads: the original
    /// releases' (the fixtures: `model.`, `visual.`; `llm.model.`,
    /// `visual_tokenizer.`, `vte.`), transformers 5.25's save of
    /// LLaVA-OneVision-1.5 (`model.model.`, read through its legacy renaming)
    /// and the modules' own names (`model.language_model.`); errors name the
    /// stored tensor and the name it is read as.
    @Test(arguments: [
        (onevision, "model.", "model.model."), (onevision, "model.", "model.language_model."),
        (ovis, "llm.model.", "model.language_model."),
    ])
    func everyNameTransformersReadsIsTheSameModel(_ name: String, _ prefix: String, _ replacement: String) throws {
        let scores = try EditedFixture(name).attentionScores()
        let renamed = try EditedFixture(name)
        try BadInputTests().renameWeights(renamed.model, prefix: prefix, to: replacement)
        #expect(try renamed.attentionScores() == scores)
    }

    @Test func errorsNameTheStoredTensor() throws {
        let fixture = try EditedFixture(Self.ovis)
        try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "llm.model.layers.1.self_attn.q_norm.weight" } }
        let error = #expect(throws: DroptraceError.self) { _ = try fixture.attentionScores() }
        #expect(error?.message.contains("missing tensor 'model.language_model.layers.1.self_attn.q_norm.weight'") == true)
        let checkpoint = try Checkpoint(directory: FixtureFiles.model(Self.ovis))
        #expect(checkpoint.hasTensor("model.language_model.layers.0.self_attn.q_proj.weight"))
        #expect(!checkpoint.hasTensor("llm.model.layers.0.self_attn.q_proj.weight"))
        #expect(checkpoint.quotedName("model.language_model.norm.weight") == "'llm.model.norm.weight' (read as 'model.language_model.norm.weight')")
    }

    /// A tensor stored under both a released name and the name transformers
    /// renames it to is refused, naming both (transformers would load one over the other).
    @Test(arguments: [
        (onevision, "model.norm.weight", "model.language_model.norm.weight"),
        (ovis, "llm.model.norm.weight", "model.language_model.norm.weight"),
    ])
    func bothNamesStoredAreRefused(_ name: String, _ stored: String, _ renamed: String) throws {
        let fixture = try EditedFixture(name)
        try BadInputTests().rewriteWeights(fixture.model) { entries in
            entries.append(SafetensorsWriter.Entry(name: renamed, shape: [48]) { [Float](repeating: 1, count: 48) })
        }
        let error = #expect(throws: DroptraceError.self) { _ = try Checkpoint(directory: fixture.model) }
        #expect(error?.message.contains("'\(renamed)' and '\(stored)' are both read as '\(renamed)'") == true)
    }

    /// The head is tied by the top-level tie_word_embeddings alone, false
    /// when absent (the text config's flag is not forwarded): Ovis2.5's
    /// fixture ties it and stores none, LLaVA-OneVision-1.5's stores its own,
    /// which the released `llm.lm_head` name also gives.
    @Test func theTopLevelFlagAloneTiesTheHead() throws {
        #expect(throws: Never.self) { try EditedFixture(Self.ovis).load().head() }
        let embedding = try Checkpoint(directory: FixtureFiles.model(Self.ovis)).tensor("model.language_model.embed_tokens.weight").floats()
        #expect(try EditedFixture(Self.ovis).load().head().projection.weight == embedding)
        #expect(throws: DroptraceError.self) { try EditedFixture(Self.ovis) { $0["tie_word_embeddings"] = nil }.load().head() }
        #expect(throws: DroptraceError.self) { try EditedFixture(Self.ovis) { $0["tie_word_embeddings"] = false }.load().head() }
        let untied = try EditedFixture(Self.ovis) { $0["tie_word_embeddings"] = false }
        try BadInputTests().rewriteWeights(untied.model) { entries in
            entries.append(SafetensorsWriter.Entry(name: "llm.lm_head.weight", shape: [512, 48]) { [Float](repeating: 0.5, count: 512 * 48) })
        }
        #expect(try untied.load().head().projection.weight == [Float](repeating: 0.5, count: 512 * 48))

        func headless(_ change: @escaping (inout [String: Any]) -> Void) throws -> EditedFixture {
            let fixture = try EditedFixture(Self.onevision, change)
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "lm_head.weight" } }
            return fixture
        }
        #expect(throws: DroptraceError.self) { try headless { EditedModel.set(true, at: "text_config.tie_word_embeddings", in: &$0) }.load().head() }
        #expect(throws: Never.self) { try headless { $0["tie_word_embeddings"] = true }.load().head() }
    }
}

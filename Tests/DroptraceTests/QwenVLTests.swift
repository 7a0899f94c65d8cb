@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Qwen's vision-language models read as their language model (`qwen2_vl`,
/// `qwen2_5_vl`, `qwen3_vl`, `qwen3_vl_moe`, and `cosmos3_omni`, Qwen3-VL
/// under Cosmos3's config class and unified checkpoint): the placements (flat or
/// nested configs, released or transformers 5 module names), the head's
/// tying, the M-RoPE sections transformers can or cannot index, and the
/// released, transposed experts. The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct QwenVLTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let qwen2 = "qwen2_vl-f32"
    static let qwen2_5 = "qwen2_5_vl-f32"
    static let qwen3 = "qwen3_vl-f32"
    static let qwen3Moe = "qwen3_vl_moe-f32"
    static let cosmos3 = "cosmos3_omni-f32"

    static let mutants: [Mutant] = [
        // Qwen2VLRotaryEmbedding splits the heads' 8 frequencies by the section (torch.split fails otherwise).
        // The vision tower's config, type-checked by Qwen2VLVisionConfig whenever transformers loads the model.
        Mutant(qwen2, "vision_config.depth", "1.5", key: "vision_config.depth"),
        Mutant(qwen2, "vision_config.embed_dim", "\"x\"", key: "vision_config.embed_dim"),
        Mutant(qwen2, "rope_scaling.mrope_section", "[2, 3, 4]", key: "rope_scaling.mrope_section"),
        Mutant(qwen2, "rope_scaling.mrope_section", "[2.0, 3, 3]", key: "rope_scaling.mrope_section"),
        Mutant(qwen2, "rope_scaling.mrope_section", "null", key: "rope_scaling.mrope_section"),
        Mutant(qwen2, "rope_scaling.mrope_section", "[10, -2]", key: "rope_scaling.mrope_section"),
        Mutant(qwen2_5, "text_config.rope_parameters.mrope_section", "[4, 2]", key: "text_config.rope_parameters.mrope_section"),
        // A flat config's text keys are type-checked as Qwen2VLTextConfig's fields.
        Mutant(qwen2, "hidden_size", "64.0"), Mutant(qwen2, "rms_norm_eps", "1"), Mutant(qwen2, "max_window_layers", "\"x\""),
        Mutant(qwen2_5, "text_config.use_sliding_window", "0", key: "text_config.use_sliding_window"),
        // Qwen3VLTextRotaryEmbedding reads items 1 and 2 of the section as column counts.
        Mutant(qwen3, "text_config.rope_parameters.mrope_section", "[2, 3]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(qwen3, "text_config.rope_parameters.mrope_section", "[2, 3.5, 3]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(qwen3Moe, "text_config.decoder_sparse_step", "0", key: "text_config.decoder_sparse_step"),
        // Rope type "mrope" is only Qwen2-VL's spelling of the default one (Qwen3-VL has no initialiser for it).
        Mutant(qwen3, "text_config.rope_parameters.rope_type", "\"mrope\"", key: "mrope"),
        Mutant(qwen3, "text_config.head_dim", "null", key: "text_config.head_dim"),
        Mutant(qwen3, "text_config.layer_types", #"["full_attention"]"#, key: "layer_types"),
        // Their text config classes have no layer_types to default a null, which each decoder layer indexes.
        Mutant(qwen3, "text_config.layer_types", "null", key: "text_config.layer_types"),
        Mutant(qwen3Moe, "text_config.layer_types", "null", key: "text_config.layer_types"),
        Mutant(qwen3Moe, "text_config.num_experts", "8.0", key: "text_config.num_experts"),
        Mutant(qwen3Moe, "text_config.num_experts_per_tok", "9", key: "text_config.num_experts_per_tok"),
        Mutant(qwen3Moe, "text_config.moe_intermediate_size", "32", key: "moe_intermediate_size"),
        // Cosmos3OmniConfig builds its text config by model type; droptrace reads Qwen3-VL's alone.
        Mutant(cosmos3, "text_config.model_type", "\"qwen3\"", key: "text_config.model_type"),
        Mutant(cosmos3, "text_config.head_dim", "null", key: "text_config.head_dim"),
        Mutant(cosmos3, "text_config.layer_types", "null", key: "text_config.layer_types"),
        Mutant(cosmos3, "text_config.rope_parameters.mrope_section", "[2, 3]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(cosmos3, "vision_start_token_id", "1.5", key: "vision_start_token_id"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Qwen2-VL's flat config: Qwen2VLConfig builds its text config from the
    /// top level's keys, among which `head_dim` is not (transformers ignores
    /// it there); rope type "mrope" is the default rotation, at the class's
    /// base 1e6 when none is given, and text takes the plain rotation
    /// whatever the (valid) section says.
    @Test func flatQwen2VLConfigReadsAsQwen2VLConfigBuildsIt() throws {
        let base = try EditedFixture(Self.qwen2).attentionScores()
        #expect(try EditedFixture(Self.qwen2) { $0["head_dim"] = 32 }.attentionScores() == base)
        func rope(_ key: String, _ value: Any?) throws -> EditedFixture {
            try EditedFixture(Self.qwen2) { EditedModel.set(value, at: "rope_scaling." + key, in: &$0) }
        }
        #expect(try rope("type", "default").attentionScores() == base)
        #expect(try rope("rope_theta", 1_000_000.0).attentionScores() == base)
        #expect(try rope("mrope_section", [8, 0, 0]).attentionScores() == base)
        #expect(try rope("mrope_section", 4).attentionScores() == base)
        #expect(try rope("rope_theta", 10_000.0).attentionScores() != base)
        // Absent, the section is the class's [16, 24, 24]: 64 frequencies, not these heads' 8.
        try rope("mrope_section", nil).expectRefused(naming: "[16, 24, 24]")
        let block = try #require(try EditedFixture(Self.qwen2).load().block(0).attention?.attention)
        let frequency = try #require(block.rotary?.inverseFrequencies[1])
        #expect(abs(Double(frequency) / (1 / pow(1_000_000.0, 2.0 / 16)) - 1) < 1e-6)
    }

    /// The same Qwen2-VL language model as a nested text_config under
    /// transformers 5's module names scores the same; a head_dim there is
    /// read (Qwen2VLTextConfig keeps it, and its rotary embedding then
    /// mismatches the heads), but 0 is none.
    @Test func nestedQwen2VLConfigAndModuleNamesScoreTheSame() throws {
        let base = try EditedFixture(Self.qwen2).attentionScores()
        let wrapped = try EditedFixture(Self.qwen2) { config in
            var text: [String: Any] = ["model_type": "qwen2_vl_text"]
            for key in ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                        "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_scaling"] {
                text[key] = config.removeValue(forKey: key)
            }
            config["text_config"] = text
        }
        try BadInputTests().renameWeights(wrapped.model, prefix: "model.", to: "model.language_model.")
        try BadInputTests().renameWeights(wrapped.model, prefix: "visual.", to: "model.visual.")
        #expect(try wrapped.attentionScores() == base)
        // There a head_dim of 0 is none (the rotary embedding takes `head_dim or hidden_size // heads`).
        #expect(try EditedFixture(Self.qwen2_5) { EditedModel.set(0, at: "text_config.head_dim", in: &$0) }.attentionScores()
            == (try EditedFixture(Self.qwen2_5).attentionScores()))
        try EditedFixture(Self.qwen2_5) { EditedModel.set(32, at: "text_config.head_dim", in: &$0) }.expectRefused(naming: "q_proj")
    }

    /// From a new user's tryout: Qwen2VLTextConfig fails on a null
    /// max_window_layers where it derives the layer types; a tensor stored
    /// under both the released and transformers 5's names (which transformers
    /// reads as one) is refused naming both; Qwen3-VL reads only items 1 and 2
    /// of its section; a negative decoder_sparse_step beats as its magnitude.
    @Test func tryoutFindings() throws {
        try EditedFixture(Self.qwen2_5) { config in
            EditedModel.set(NSNull(), at: "text_config.max_window_layers", in: &config)
            EditedModel.set(nil, at: "text_config.layer_types", in: &config)
        }.expectRefused(naming: "text_config.max_window_layers")
        let copied = try EditedFixture(Self.qwen2)
        try BadInputTests().rewriteWeights(copied.model) { entries in
            var copy = try! #require(entries.first { $0.name == "model.layers.0.input_layernorm.weight" })
            copy.name = "model.language_model.layers.0.input_layernorm.weight"
            entries.append(copy)
        }
        let error = #expect(throws: DroptraceError.self) { try copied.load() }
        #expect(error?.message.contains("model.language_model.layers.0.input_layernorm.weight") == true, "\(String(describing: error))")
        #expect(error?.message.contains("stored twice") == true)
        let base = try EditedFixture(Self.qwen3).attentionScores()
        for section: [Any] in [[1.5, 2, 3], [NSNull(), 1, 1], [true, true, false]] {
            #expect(try EditedFixture(Self.qwen3) {
                EditedModel.set(section, at: "text_config.rope_parameters.mrope_section", in: &$0)
            }.attentionScores() == base)
        }
        #expect(try EditedFixture(Self.qwen3Moe) { EditedModel.set(-1, at: "text_config.decoder_sparse_step", in: &$0) }
            .attentionScores() == (try EditedFixture(Self.qwen3Moe).attentionScores()))
    }

    /// Qwen2.5-VL: layers from max_window_layers (2) slide within 8 tokens,
    /// rotating at 5e5; without a stored lm_head, the head is the embedding
    /// when the top level or the text config ties them (Qwen2_5_VLConfig
    /// takes the text config's flag), else refused.
    @Test func qwen2_5VLLayersAndTying() throws {
        let model = try EditedFixture(Self.qwen2_5).load()
        for index in 0..<4 {
            let attention = try #require(try model.block(index).attention?.attention)
            #expect(attention.slidingWindow == (index >= 2 ? 8 : nil))
            let frequency = try #require(attention.rotary?.inverseFrequencies[1])
            #expect(abs(Double(frequency) / (1 / pow(500_000.0, 2.0 / 16)) - 1) < 1e-6)
        }
        func headless(_ change: @escaping (inout [String: Any]) -> Void) throws -> EditedFixture {
            let fixture = try EditedFixture(Self.qwen2_5, change)
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "lm_head.weight" } }
            return fixture
        }
        let embedding = try Checkpoint(directory: FixtureFiles.model(Self.qwen2_5))
            .tensor("model.language_model.embed_tokens.weight").floats()
        #expect(try headless { EditedModel.set(true, at: "text_config.tie_word_embeddings", in: &$0) }.load().head().projection.weight == embedding)
        #expect(try headless { $0["tie_word_embeddings"] = true }.load().head().projection.weight == embedding)
        #expect(throws: DroptraceError.self) { try headless { _ in }.load().head() }
    }

    /// Qwen3-VL: no windows (Qwen3VLTextConfig has none), the head tied by
    /// the top-level tie_word_embeddings alone: the fixture ties there and
    /// saves no lm_head, so untying it there asks for one; the text
    /// config's own flag is not read.
    @Test func qwen3VLIgnoresWindowsAndTheTextConfigsTying() throws {
        let base = try EditedFixture(Self.qwen3).attentionScores()
        let windowed = try EditedFixture(Self.qwen3) { config in
            EditedModel.set(true, at: "text_config.use_sliding_window", in: &config)
            EditedModel.set(2, at: "text_config.sliding_window", in: &config)
            EditedModel.set(false, at: "text_config.tie_word_embeddings", in: &config)
        }
        #expect(try windowed.attentionScores() == base)
        let model = try windowed.load()
        #expect(try (0..<4).allSatisfy { try model.block($0).attention?.attention.slidingWindow == nil })
        #expect(try EditedFixture(Self.qwen3) {
            EditedModel.set([1, 1, 1], at: "text_config.rope_parameters.mrope_section", in: &$0)
        }.attentionScores() == base)
        do {
            _ = try EditedFixture(Self.qwen3) { $0["tie_word_embeddings"] = false }.load().head()
            Issue.record("an untied head without lm_head loaded")
        } catch let error as DroptraceError {
            #expect(error.message.contains("lm_head"), "\(error)")
        }
    }

    /// Cosmos3's unified checkpoint (the language model's tensors at the
    /// top level, its attention under Diffusers' names, generation branches
    /// beside them) scores as transformers loads it; its head is untied by
    /// default and tied by the top-level flag alone, and without
    /// `text_config.model_type` the text model is Qwen3-VL's.
    @Test func cosmos3ReadsTheUnifiedCheckpointAsTransformersLoadsIt() throws {
        try expectScoresMatchTransformers(Self.cosmos3)
        let model = try EditedFixture(Self.cosmos3).load()
        #expect(model.layerNaming.prefix == "model.language_model.layers.")
        let stored = try Checkpoint(directory: FixtureFiles.model(Self.cosmos3))
        // Read under the names transformers gives them, the generation branch among them.
        #expect(stored.hasTensor("model.language_model.layers.2.mlp.moe_gen.gate.weight") && stored.hasTensor("model.language_model.layers.0.self_attn.q_proj.weight"))
        let base = try EditedFixture(Self.cosmos3).attentionScores()
        #expect(try EditedFixture(Self.cosmos3) { EditedModel.set(nil, at: "text_config.model_type", in: &$0) }.attentionScores() == base)
        func headless(_ change: @escaping (inout [String: Any]) -> Void) throws -> EditedFixture {
            let fixture = try EditedFixture(Self.cosmos3, change)
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "lm_head.weight" } }
            return fixture
        }
        let embedding = try stored.tensor("model.language_model.embed_tokens.weight").floats()
        #expect(try headless { $0["tie_word_embeddings"] = true }.load().head().projection.weight == embedding)
        #expect(throws: DroptraceError.self) { try headless { $0["tie_word_embeddings"] = nil }.load().head() }
        #expect(throws: DroptraceError.self) {
            try headless { EditedModel.set(true, at: "text_config.tie_word_embeddings", in: &$0) }.load().head()
        }
    }

    /// Qwen3-VL-MoE's experts as released ([experts, hidden, 2 · inner], the
    /// fixture's) and as transformers holds them ([experts, 2 · inner,
    /// hidden]) score the same; its router renormalises whatever
    /// `norm_topk_prob` says (the class has none); a head_dim of 0 is none.
    @Test func qwen3VLMoeReadsExpertsEitherWayAndAlwaysRenormalises() throws {
        let base = try EditedFixture(Self.qwen3Moe).attentionScores()
        let stored = try Checkpoint(directory: FixtureFiles.model(Self.qwen3Moe))
        let held = try EditedFixture(Self.qwen3Moe)
        try BadInputTests().rewriteWeights(held.model) { entries in
            for index in entries.indices where entries[index].name.contains(".mlp.experts.") {
                let (name, shape) = (entries[index].name, entries[index].shape)
                let values = try! stored.tensor(name).floats()
                var swapped = [Float](repeating: 0, count: values.count)
                let (rows, columns) = (shape[1], shape[2])
                for e in 0..<shape[0] {
                    for r in 0..<rows {
                        for c in 0..<columns { swapped[e * rows * columns + c * rows + r] = values[e * rows * columns + r * columns + c] }
                    }
                }
                entries[index] = SafetensorsWriter.Entry(
                    name: name, dtype: .float32, shape: [shape[0], columns, rows], bytes: swapped.withUnsafeBufferPointer { Data(buffer: $0) })
            }
        }
        #expect(try held.attentionScores() == base)
        // Qwen3VLMoeTextConfig has no norm_topk_prob (never read, whatever it holds), and takes a head_dim of 0 as none.
        #expect(try EditedFixture(Self.qwen3Moe) { config in
            EditedModel.set(false, at: "text_config.norm_topk_prob", in: &config)
        }.attentionScores() == base)
        #expect(try EditedFixture(Self.qwen3Moe) { config in
            EditedModel.set("x", at: "text_config.norm_topk_prob", in: &config)
            EditedModel.set(0, at: "text_config.head_dim", in: &config)
        }.attentionScores() == base)
    }
}

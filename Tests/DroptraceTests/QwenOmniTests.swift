@testable import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Testing

/// Qwen2.5-Omni (`qwen2_5_omni`, and its thinker saved alone,
/// `qwen2_5_omni_thinker`) read as its thinker's language model: Qwen2's
/// block from `thinker_config.text_config` (or `text_config`), the weights
/// as transformers renames them, the head tied by the thinker's own flag,
/// every nested sub-config type-checked as its class checks it; Qwen3-Omni
/// (`qwen3_omni_moe`, `qwen3_omni_moe_thinker`) alike, with Qwen3-MoE's
/// block. The scores
/// themselves are checked against transformers with every other family
/// (`DropTests` and the reference suites); the edited configs below were
/// checked against transformers 5.25 too.
@Suite struct QwenOmniTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let fixture = "qwen2_5_omni-f32"
    static let thinker = "qwen2_5_omni_thinker-f32"
    static let text = "thinker_config.text_config"
    static let qwen3 = "qwen3_omni_moe-f32"
    static let qwen3Thinker = "qwen3_omni_moe_thinker-f32"

    static let mutants: [Mutant] = [
        // Qwen2_5OmniTextConfig's kinds, nested in the thinker's config.
        Mutant(fixture, text + ".num_hidden_layers", "4.0", key: text + ".num_hidden_layers"),
        Mutant(fixture, text + ".use_sliding_window", "\"x\"", key: text + ".use_sliding_window"),
        Mutant(fixture, text + ".rms_norm_eps", "null", key: text + ".rms_norm_eps"),
        Mutant(fixture, text + ".max_window_layers", "null", key: text + ".max_window_layers"),
        // Qwen2_5OmniThinkerConfig's, and its encoders' classes.
        Mutant(fixture, "thinker_config.tie_word_embeddings", "null", key: "thinker_config.tie_word_embeddings"),
        Mutant(fixture, "thinker_config.audio_token_index", "5.0", key: "thinker_config.audio_token_index"),
        Mutant(fixture, "thinker_config.vision_config.depth", "1.5", key: "thinker_config.vision_config.depth"),
        Mutant(fixture, "thinker_config.audio_config.encoder_layers", "\"x\"", key: "thinker_config.audio_config.encoder_layers"),
        // The talker's and the token-to-wave model's, which transformers builds too.
        Mutant(fixture, "talker_config.hidden_size", "32.0", key: "talker_config.hidden_size"),
        Mutant(fixture, "token2wav_config.dit_config.num_hidden_layers", "1.5", key: "token2wav_config.dit_config.num_hidden_layers"),
        Mutant(fixture, "enable_audio_output", "1", key: "enable_audio_output"),
        Mutant(fixture, "thinker_config", "5", key: "thinker_config"),
        Mutant(fixture, "thinker_config.text_config", "[]", key: text),
        // _validate_mrope_section is not run (mrope_section is ignored at validation), but torch.split fails.
        Mutant(fixture, text + ".rope_parameters.mrope_section", "[2, 3, 4]", key: text + ".rope_parameters.mrope_section"),
        // Its rotary embedding has no "mrope" type (Qwen2-VL's config reads it as the default one).
        Mutant(fixture, text + ".rope_parameters.rope_type", "\"mrope\"", key: "mrope"),
        // Qwen2_5OmniAttention sizes its heads by a head_dim attribute, which a null leaves None.
        Mutant(fixture, text + ".head_dim", "null", key: "head_dim"),
        // Sizes the weights contradict.
        Mutant(fixture, text + ".hidden_size", "48", key: "hidden_size"),
        Mutant(thinker, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(thinker, "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant(thinker, "audio_config.d_model", "16.0", key: "audio_config.d_model"),
        // Qwen3-Omni: Qwen3OmniMoeTextConfig's kinds, nested in the thinker's config.
        Mutant(qwen3, text + ".num_hidden_layers", "4.0", key: text + ".num_hidden_layers"),
        Mutant(qwen3, text + ".norm_topk_prob", "\"x\"", key: text + ".norm_topk_prob"),
        Mutant(qwen3, text + ".rms_norm_eps", "null", key: text + ".rms_norm_eps"),
        Mutant(qwen3, text + ".decoder_sparse_step", "null", key: text + ".decoder_sparse_step"),
        Mutant(qwen3, text + ".decoder_sparse_step", "0", key: "decoder_sparse_step"),
        // The thinker's, its encoders', the talker's (its text model and code predictor) and code2wav's.
        Mutant(qwen3, "thinker_config.tie_word_embeddings", "null", key: "thinker_config.tie_word_embeddings"),
        Mutant(qwen3, "thinker_config.audio_token_id", "5.0", key: "thinker_config.audio_token_id"),
        Mutant(qwen3, "thinker_config.vision_config.depth", "1.5", key: "thinker_config.vision_config.depth"),
        Mutant(qwen3, "thinker_config.audio_config.encoder_layers", "\"x\"", key: "thinker_config.audio_config.encoder_layers"),
        Mutant(qwen3, "talker_config.thinker_hidden_size", "32.0", key: "talker_config.thinker_hidden_size"),
        Mutant(qwen3, "talker_config.text_config.hidden_size", "32.0", key: "talker_config.text_config.hidden_size"),
        Mutant(qwen3, "talker_config.code_predictor_config.num_hidden_layers", "1.5",
               key: "talker_config.code_predictor_config.num_hidden_layers"),
        Mutant(qwen3, "code2wav_config.num_hidden_layers", "\"x\"", key: "code2wav_config.num_hidden_layers"),
        Mutant(qwen3, "enable_audio_output", "1", key: "enable_audio_output"),
        Mutant(qwen3, "thinker_config", "5", key: "thinker_config"),
        Mutant(qwen3, "thinker_config.text_config", "[]", key: text),
        // The rotary embedding indexes items 1 and 2 (IndexError); it has no "mrope" type (KeyError).
        Mutant(qwen3, text + ".rope_parameters.mrope_section", "[2]", key: text + ".rope_parameters.mrope_section"),
        Mutant(qwen3, text + ".rope_parameters.rope_type", "\"mrope\"", key: "mrope"),
        // Its attention sizes its heads by a head_dim attribute, which a null leaves None.
        Mutant(qwen3, text + ".head_dim", "null", key: "head_dim"),
        Mutant(qwen3, text + ".hidden_size", "64", key: "hidden_size"),
        Mutant(qwen3Thinker, "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant(qwen3Thinker, "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant(qwen3Thinker, "audio_config.d_model", "16.0", key: "audio_config.d_model"),
        Mutant(qwen3Thinker, "text_config.head_dim", "null", key: "head_dim"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Qwen2's block (q/k/v biases, heads of 16, 8 frequencies at the
    /// written base 5e5) with layers 2 and 3 within 8 tokens; the thinker
    /// alone rotates at Qwen2_5OmniTextConfig's base 1e6. The text config's
    /// model_type is not read; any section torch.split takes scores the same.
    @Test func readsQwen2BlockOfTheThinker() throws {
        let model = try EditedFixture(Self.fixture).load()
        #expect(model is LlamaModel)
        let attention = try #require(try model.block(0).attention?.attention)
        #expect(attention.layout.headDim == 16 && attention.layout.numHeads == 4 && attention.layout.numKVHeads == 2)
        #expect(attention.output.bias == nil)
        let frequency = try #require(attention.rotary?.inverseFrequencies[1])
        #expect(abs(Double(frequency) / (1 / pow(500_000.0, 2.0 / 16)) - 1) < 1e-6)
        let windows = try (0..<4).map { try model.block($0).attention?.attention.slidingWindow }
        #expect(windows == [nil, nil, 8, 8])
        let thinker = try #require(try EditedFixture(Self.thinker).load().block(0).attention?.attention.rotary?.inverseFrequencies[1])
        #expect(abs(Double(thinker) / (1 / pow(1_000_000.0, 2.0 / 16)) - 1) < 1e-6)
        let base = try EditedFixture(Self.fixture).attentionScores()
        func edited(_ change: @escaping (inout [String: Any]) -> Void) throws -> [Double] {
            try EditedFixture(Self.fixture, change).attentionScores()
        }
        #expect(try edited { EditedModel.set("llama", at: Self.text + ".model_type", in: &$0) } == base)
        #expect(try edited { EditedModel.set([8, 0, 0], at: Self.text + ".rope_parameters.mrope_section", in: &$0) } == base)
        // Without its window, layers 2 and 3 attend to everything.
        #expect(try edited { config in
            EditedModel.set(false, at: Self.text + ".use_sliding_window", in: &config)
            EditedModel.set(nil, at: Self.text + ".layer_types", in: &config)
        } != base)
    }

    /// Qwen3-Omni's thinker: Qwen3-MoE's block, heads of the written
    /// head_dim 16 (not 48 / 4) at the written base 5e5, layer 0 dense and
    /// the others routed without renormalising (norm_topk_prob false,
    /// against the class's true); the thinker alone: heads of 48 / 4 at
    /// Qwen3OmniMoeTextConfig's base 1e6, every second layer routed and
    /// renormalised. No window, whatever `sliding_window` says; the text
    /// config's model_type is not read; any section whose items 1 and 2 are
    /// counts scores the same (all as in transformers 5.25).
    @Test func readsQwen3MoeBlockOfTheThinker() throws {
        func renormalises(_ model: some LanguageModel, _ layer: Int) throws -> Bool? {
            guard case .mixture(let experts)? = try model.block(layer).mlp?.feedForward else { return nil }
            guard case .softmaxTopK(let renormalize) = experts.rule else { return nil }
            return renormalize
        }
        let model = try EditedFixture(Self.qwen3).load()
        #expect(model is Qwen3MoeModel)
        let attention = try #require(try model.block(0).attention?.attention)
        #expect(attention.layout.headDim == 16 && attention.layout.numHeads == 4 && attention.layout.numKVHeads == 2)
        let frequency = try #require(attention.rotary?.inverseFrequencies[1])
        #expect(abs(Double(frequency) / (1 / pow(500_000.0, 2.0 / 16)) - 1) < 1e-6)
        #expect(try (0..<4).map { try renormalises(model, $0) } == [nil, false, false, false])
        let thinker = try EditedFixture(Self.qwen3Thinker).load()
        let thinkerAttention = try #require(try thinker.block(0).attention?.attention)
        #expect(thinkerAttention.layout.headDim == 12)
        let thinkerFrequency = try #require(thinkerAttention.rotary?.inverseFrequencies[1])
        #expect(abs(Double(thinkerFrequency) / (1 / pow(1_000_000.0, 2.0 / 12)) - 1) < 1e-6)
        #expect(try (0..<4).map { try renormalises(thinker, $0) } == [nil, true, nil, true])
        let base = try EditedFixture(Self.qwen3).attentionScores()
        func edited(_ change: @escaping (inout [String: Any]) -> Void) throws -> [Double] {
            try EditedFixture(Self.qwen3, change).attentionScores()
        }
        #expect(try (0..<4).map { try model.block($0).attention?.attention.slidingWindow } == [nil, nil, nil, nil])
        #expect(try edited { EditedModel.set(4, at: Self.text + ".sliding_window", in: &$0) } == base)
        #expect(try edited { EditedModel.set("llama", at: Self.text + ".model_type", in: &$0) } == base)
        #expect(try edited { EditedModel.set([8, 0, 0], at: Self.text + ".rope_parameters.mrope_section", in: &$0) } == base)
        #expect(try edited { EditedModel.set(true, at: Self.text + ".norm_topk_prob", in: &$0) } != base)
    }

    /// Qwen3OmniMoeForConditionalGeneration builds its talker on load unless
    /// enable_audio_output is false, and the talker reads two keys its config
    /// classes have no default for: without them transformers raises, and
    /// droptrace refuses naming the key; with audio output off, both are
    /// unread.
    @Test func talkerKeysTransformersReadsAreRequired() throws {
        for key in ["spatial_merge_size", "text_config.shared_expert_intermediate_size"] {
            let path = "talker_config." + key
            let error = try #require(throws: DroptraceError.self) {
                try EditedFixture(Self.qwen3) { EditedModel.set(nil, at: path, in: &$0) }.load()
            }
            #expect(error.description.contains(path), "\(error)")
            #expect(throws: Never.self) {
                try EditedFixture(Self.qwen3) { config in
                    EditedModel.set(nil, at: path, in: &config)
                    config["enable_audio_output"] = false
                }.load()
            }
        }
    }

    /// Weights under transformers 5's module names (`thinker.model.language_model.`), which it reads
    /// as it reads the released ones, score the same.
    @Test(arguments: [fixture, qwen3])
    func readsTheModuleNamesAsTheReleasedOnes(_ fixture: String) throws {
        let base = try EditedFixture(fixture).attentionScores()
        let renamed = try EditedFixture(fixture)
        try BadInputTests().renameWeights(renamed.model, prefix: "thinker.model.", to: "thinker.model.language_model.")
        #expect(try renamed.attentionScores() == base)
    }

    /// The head is tied by the thinker's own `tie_word_embeddings` alone:
    /// the top level's and the text config's are not read.
    @Test(arguments: [(fixture, thinker), (qwen3, qwen3Thinker)])
    func headTiedByTheThinkersFlag(_ fixture: String, _ thinker: String) throws {
        let base = try EditedFixture(fixture).attentionScores()
        let stored = try EditedFixture(fixture).load().head()
        for (top, text) in [(true, false), (false, false), (nil, nil)] as [(Bool?, Bool?)] {
            let head = try EditedFixture(fixture) { config in
                config["tie_word_embeddings"] = top
                EditedModel.set(text, at: Self.text + ".tie_word_embeddings", in: &config)
            }.load().head()
            #expect(head.projection.weight == stored.projection.weight)
        }
        // Without the stored head: tied only where the thinker's flag says so.
        func headless(_ tied: Bool?) throws -> EditedFixture {
            let fixture = try EditedFixture(fixture) { EditedModel.set(tied, at: "thinker_config.tie_word_embeddings", in: &$0) }
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "thinker.lm_head.weight" } }
            return fixture
        }
        #expect(throws: Never.self) { try headless(true).load().head() }
        #expect(throws: DroptraceError.self) { try headless(false).load().head() }
        #expect(throws: DroptraceError.self) { try headless(nil).load().head() }
        // The thinker alone: its top-level flag (stored no head).
        #expect(throws: DroptraceError.self) { try EditedFixture(thinker) { $0["tie_word_embeddings"] = false }.load().head() }
        #expect(throws: Never.self) {
            try EditedFixture(thinker) { EditedModel.set(false, at: "text_config.tie_word_embeddings", in: &$0) }.load().head()
        }
        #expect(!base.isEmpty)
    }

    /// A block-drop export renumbers the thinker's text config (its layer
    /// types spelled out) and keeps the rest: the talker and token-to-wave
    /// weights and the speaker table travel unchanged.
    @Test func blockDropExportRenumbersTheThinkersTextConfig() throws {
        let fixture = try EditedFixture(Self.fixture)
        let config = try fixture.exportedConfig(droppingBlocks: [1])
        let thinker = try #require(config["thinker_config"] as? [String: Any])
        let text = try #require(thinker["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 3)
        #expect(text["layer_types"] as? [String] == ["full_attention", "sliding_attention", "sliding_attention"])
        #expect(config["model_type"] as? String == "qwen2_5_omni")
        let export = fixture.scratch.path("export")
        #expect(FileManager.default.fileExists(atPath: export.appendingPathComponent("spk_dict.pt").path))
        let source = try Checkpoint(directory: fixture.model), exported = try Checkpoint(directory: export)
        // (Both read under transformers' names: the language model's under thinker.model.language_model.)
        let layers = "thinker.model.language_model.layers."
        let kept = source.tensorNames.filter { !$0.hasPrefix(layers) }
        #expect(kept.contains { $0.hasPrefix("talker.") } && kept.contains { $0.hasPrefix("token2wav.") })
        for name in kept { #expect(try exported.tensor(name).floats() == source.tensor(name).floats(), "\(name)") }
        #expect(exported.hasTensor(layers + "2.self_attn.q_proj.weight") && !exported.hasTensor(layers + "3.self_attn.q_proj.weight"))
    }
}

extension QwenOmniTests {
    /// Qwen3-Omni's exports: block 1 of the thinker saved alone (every
    /// second layer sparse, layer 0 dense by mlp_only_layers) leaves layers
    /// 0, 2 and 3, dense, dense and sparse: the export lists the dense ones
    /// (mlp_only_layers [0, 1], decoder_sparse_step 1), since the step would
    /// now fall on another layer; the whole model's thinker text config is
    /// renumbered in place, the talker and code2wav weights unchanged.
    @Test func qwen3BlockDropExportsRenumberTheSparseLayers() throws {
        let thinker = try EditedFixture(Self.qwen3Thinker)
        let text = try #require(try thinker.exportedConfig(droppingBlocks: [1])["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 3)
        #expect((text["mlp_only_layers"] as? [NSNumber])?.map(\.intValue) == [0, 1])
        #expect(text["decoder_sparse_step"] as? Int == 1)
        let exported = try Checkpoint(directory: thinker.scratch.path("export"))
        let experts = try ModelRegistry.load(exported)
        guard case .mixture? = try experts.block(2).mlp?.feedForward, case .gated? = try experts.block(1).mlp?.feedForward else {
            Issue.record("the exported layers are not dense, dense, sparse")
            return
        }
        let whole = try EditedFixture(Self.qwen3)
        let config = try whole.exportedConfig(droppingBlocks: [2])
        let wholeText = try #require((config["thinker_config"] as? [String: Any])?["text_config"] as? [String: Any])
        #expect(wholeText["num_hidden_layers"] as? Int == 3 && config["model_type"] as? String == "qwen3_omni_moe")
        let source = try Checkpoint(directory: whole.model), export = try Checkpoint(directory: whole.scratch.path("export"))
        let kept = source.tensorNames.filter { !$0.hasPrefix("thinker.model.language_model.layers.") }
        #expect(kept.contains { $0.hasPrefix("talker.") } && kept.contains { $0.hasPrefix("code2wav.") })
        for name in kept { #expect(try export.tensor(name).floats() == source.tensor(name).floats(), "\(name)") }
    }
}

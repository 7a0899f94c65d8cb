@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Testing
import TensorEngine

/// The LLaVA-style models read as their language model (`llava`,
/// `llava_next`, `llava_onevision`, `internvl`, `idefics3`, `smolvlm`,
/// `aya_vision`, `lfm2_vl`, `cohere2_vision`, `exaone4_5`, `lfm3_vl`,
/// `llava_next_video`, `minicpmv4_6`, `minicpmv4_7`, `ovis2`, `idefics2`, `vipllava`, `video_llava`,
/// `lighton_ocr`, `fast_vlm`, `perception_lm`, `deepseek_vl`, `janus`, `qianfan_ocr`, `video_llama_3`, `minicpm_ocr`, `granite_docling`): the text model type each reads and the family that
/// reads it, the head's tying (forwarded from the text config by three of
/// the config classes, tied by default by others, LFM2-VL's by
/// `tie_embedding` first), the Cohere wrappers' unscaled logits, EXAONE
/// 4.5's renamed text model type, and a mistral text config's
/// `layer_types`, which MistralConfig's model ignores there. The scores themselves are checked against transformers
/// with every other family (`DropTests` and the reference suites); the
/// edited configs below were checked against transformers 5.23 too.
@Suite struct LlavaTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        // Only the text model types each wrapper lists are read; a text config of another type is named.
        Mutant("llava-f32", "text_config.model_type", "\"gemma2\"", key: "text_config.model_type"),
        Mutant("smolvlm-f32", "text_config.model_type", "\"qwen3\"", key: "text_config.model_type"),
        Mutant("aya_vision-f32", "text_config.model_type", "\"qwen3\"", key: "text_config.model_type"),
        Mutant("internvl_qwen3-f32", "text_config.model_type", "\"gemma\"", key: "text_config.model_type"),
        Mutant("lfm2_vl-f32", "text_config.model_type", "\"lfm2_moe\"", key: "text_config.model_type"),
        // Lfm2VlConfig sets tie_word_embeddings to tie_embedding, and then refuses null.
        Mutant("lfm2_vl-f32", "tie_embedding", "null", key: "tie_embedding"),
        Mutant("lfm2_vl-f32", "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant("aya_vision-f32", "text_config.logit_scale", "null", key: "text_config.logit_scale"),
        Mutant("internvl_qwen3_moe-f32", "text_config.num_experts_per_tok", "0", key: "text_config.num_experts_per_tok"),
        Mutant("cohere2_vision-f32", "text_config.model_type", "\"llama\"", key: "text_config.model_type"),
        Mutant("lfm3_vl-f32", "text_config.model_type", "\"lfm2\"", key: "text_config.model_type"),
        Mutant("minicpmv4_6-f32", "text_config.model_type", "\"qwen3_next\"", key: "text_config.model_type"),
        Mutant("minicpmv4_7-f32", "text_config.num_experts_per_tok", "5", key: "text_config.num_experts_per_tok"),
        // AutoConfig cannot resolve a null text model type.
        Mutant("aya_vision-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("lfm2_vl-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("lfm3_vl-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("cohere2_vision-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        // EXAONE 4.5's renamed text model type is checked as exaone4's class checks it.
        Mutant("exaone4_5-f32", "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant("exaone4_5-f32", "text_config.hidden_act", "null", key: "text_config.hidden_act"),
        Mutant("exaone4_5-f32", "text_config.pad_token_id", "600", key: "text_config.pad_token_id"),
        // A null head_dim these text classes keep, whose models cannot be built from it.
        Mutant("aya_vision-f32", "text_config.head_dim", "null", key: "text_config.head_dim"),
        Mutant("cohere2_vision-f32", "text_config.head_dim", "null", key: "text_config.head_dim"),
        Mutant("lfm2_vl-f32", "text_config.head_dim", "null", key: "text_config.head_dim"),
        Mutant("exaone4_5-f32", "text_config.head_dim", "null", key: "text_config.head_dim"),
        // Lfm3Config turns a legacy rope_scaling into one flat set its model cannot index by layer type.
        Mutant("lfm3_vl-f32", "text_config.rope_scaling", #"{"type": "linear", "factor": 2.0}"#, key: "text_config.rope_scaling"),
        Mutant("lfm3-f32", "rope_scaling", #"{"type": "linear", "factor": 2.0}"#, key: "rope_scaling"),
        Mutant("exaone4_5-f32", "text_config.model_type", "\"exaone_moe\"", key: "text_config.model_type"),
        Mutant("idefics3-f32", "text_config.rms_norm_eps", "1", key: "text_config.rms_norm_eps"),
        Mutant("idefics3-f32", "vision_config.hidden_size", "\"x\"", key: "vision_config.hidden_size"),
        // Idefics2 reads a mistral text model by default, checked as MistralConfig checks it.
        Mutant("idefics2-f32", "text_config.model_type", "\"gemma2\"", key: "text_config.model_type"),
        Mutant("idefics2-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("idefics2-f32", "text_config.sliding_window", "0", key: "text_config.sliding_window"),
        Mutant("idefics2-f32", "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant("idefics2-f32", "text_config.hidden_size", "48", key: "hidden_size"),
        // ViP-LLaVA and Video-LLaVA read llama text models by default, LightOnOCR only qwen3.
        Mutant("vipllava-f32", "text_config.model_type", "\"qwen3\"", key: "text_config.model_type"),
        Mutant("vipllava-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("vipllava-f32", "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant("vipllava-f32", "text_config.hidden_size", "48", key: "hidden_size"),
        Mutant("video_llava-f32", "text_config.model_type", "\"gemma2\"", key: "text_config.model_type"),
        Mutant("video_llava-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("video_llava-f32", "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant("video_llava-f32", "text_config.hidden_size", "48", key: "hidden_size"),
        Mutant("lighton_ocr-f32", "text_config.model_type", "\"qwen2\"", key: "text_config.model_type"),
        Mutant("lighton_ocr-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("lighton_ocr-f32", "text_config.head_dim", "8", key: "text_config.head_dim"),
        Mutant("lighton_ocr-f32", "text_config.use_sliding_window", "\"x\"", key: "text_config.use_sliding_window"),
        // FastVLM reads a qwen2 text model only; FastVlmConfig's validation takes only the tower's last layer, all its features.
        Mutant("fast_vlm-f32", "text_config.model_type", "\"llama\"", key: "text_config.model_type"),
        Mutant("fast_vlm-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("fast_vlm-f32", "vision_feature_select_strategy", "\"default\"", key: "vision_feature_select_strategy"),
        Mutant("fast_vlm-f32", "vision_feature_layer", "-2", key: "vision_feature_layer"),
        Mutant("fast_vlm-f32", "vision_feature_layer", "[-1]", key: "vision_feature_layer"),
        Mutant("fast_vlm-f32", "image_token_index", "5.0", key: "image_token_index"),
        Mutant("fast_vlm-f32", "text_config.use_sliding_window", "\"x\"", key: "text_config.use_sliding_window"),
        // PerceptionLM reads a llama text model only.
        Mutant("perception_lm-f32", "text_config.model_type", "\"qwen2\"", key: "text_config.model_type"),
        Mutant("perception_lm-f32", "projector_pooling_ratio", "2.0", key: "projector_pooling_ratio"),
        Mutant("perception_lm-f32", "tie_word_embeddings", "1", key: "tie_word_embeddings"),
        Mutant("perception_lm-f32", "text_config.hidden_size", "48", key: "hidden_size"),
        // The text config is checked as its model_type's class checks it.
        // DeepSeek-VL and Janus: a llama text model only; their own keys as their classes check them.
        Mutant("deepseek_vl-f32", "text_config.model_type", "\"qwen2\"", key: "text_config.model_type"),
        Mutant("deepseek_vl-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("deepseek_vl-f32", "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant("deepseek_vl-f32", "image_token_id", "5.0", key: "image_token_id"),
        Mutant("deepseek_vl-f32", "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant("deepseek_vl-f32", "text_config.hidden_size", "48", key: "hidden_size"),
        Mutant("janus-f32", "text_config.model_type", "\"mistral\"", key: "text_config.model_type"),
        Mutant("janus-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("janus-f32", "tie_word_embeddings", "\"no\"", key: "tie_word_embeddings"),
        Mutant("janus-f32", "image_token_id", "null", key: "image_token_id"),
        Mutant("janus-f32", "vq_config", "5", key: "vq_config"),
        Mutant("janus-f32", "text_config.head_dim", "8", key: "text_config.head_dim"),
        Mutant("janus-f32", "vision_config.patch_size", "0", key: "vision_config.patch_size"),
        Mutant("janus-f32", "vision_config.patch_size", "[14, 14]", key: "vision_config.patch_size"),
        // The same sizes where transformers builds the vision embeddings from them (scored before).
        Mutant("deepseek_vl-f32", "vision_config.patch_size", "0", key: "vision_config.patch_size"),
        Mutant("deepseek_vl-f32", "vision_config.image_size", "28.5", key: "vision_config.image_size"),
        Mutant("glmga-f32", "vision_config.patch_size", "0", key: "vision_config.patch_size"),
        Mutant("glm46v-f32", "vision_config.image_size", "28.5", key: "vision_config.image_size"),
        Mutant("glm_ocr-f32", "vision_config.patch_size", "0", key: "vision_config.patch_size"),
        Mutant("glm4v-f32", "vision_config.image_size", "28.5", key: "vision_config.image_size"),
        Mutant("janus-f32", "vision_config.image_size", "28.0", key: "vision_config.image_size"),
        // VideoLLaMA3: a qwen2 text model only; VideoLlama3Config's keys and its vision config's as the classes check them.
        Mutant("video_llama_3-f32", "text_config.model_type", "\"llama\"", key: "text_config.model_type"),
        Mutant("video_llama_3-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("video_llama_3-f32", "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant("video_llama_3-f32", "image_token_id", "5.0", key: "image_token_id"),
        Mutant("video_llama_3-f32", "video_token_id", "null", key: "video_token_id"),
        Mutant("video_llama_3-f32", "vision_config.patch_size", "\"x\"", key: "vision_config.patch_size"),
        Mutant("video_llama_3-f32", "vision_config.rope_parameters", "5", key: "vision_config.rope_parameters"),
        Mutant("video_llama_3-f32", "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant("video_llama_3-f32", "text_config.use_sliding_window", "\"x\"", key: "text_config.use_sliding_window"),
        Mutant("video_llama_3-f32", "text_config.hidden_size", "48", key: "hidden_size"),
        // MiniCPM-OCR: a Qwen3.5 text model only; MiniCPMOcrConfig's keys as it checks them, and the vision
        // tower's sizes where its embeddings divide image_size by patch_size (transformers fails on them).
        Mutant("minicpm_ocr-f32", "text_config.model_type", "\"qwen3\"", key: "text_config.model_type"),
        Mutant("minicpm_ocr-f32", "text_config.model_type", "null", key: "text_config.model_type"),
        Mutant("minicpm_ocr-f32", "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant("minicpm_ocr-f32", "image_token_id", "5.0", key: "image_token_id"),
        Mutant("minicpm_ocr-f32", "downsample_mode", "4", key: "downsample_mode"),
        Mutant("minicpm_ocr-f32", "merge_kernel_size", "2", key: "merge_kernel_size"),
        Mutant("minicpm_ocr-f32", "insert_layer_id", "1.5", key: "insert_layer_id"),
        Mutant("minicpm_ocr-f32", "vision_config.patch_size", "0", key: "vision_config.patch_size"),
        Mutant("minicpm_ocr-f32", "vision_config.patch_size", "[14, 14]", key: "vision_config.patch_size"),
        Mutant("minicpm_ocr-f32", "vision_config.image_size", "[28, 28]", key: "vision_config.image_size"),
        Mutant("minicpm_ocr-f32", "vision_config.image_size", "28.0", key: "vision_config.image_size"),
        // MiniCPM-V 4.6 / 4.7's vision embeddings divide the same way (ZeroDivisionError, TypeError in transformers 5.25).
        Mutant("minicpmv4_6-f32", "vision_config.patch_size", "0", key: "vision_config.patch_size"),
        Mutant("minicpmv4_7-f32", "vision_config.image_size", "[28, 28]", key: "vision_config.image_size"),
        Mutant("minicpm_ocr-f32", "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant("minicpm_ocr-f32", "text_config.hidden_size", "40", key: "hidden_size"),
        // Granite-Docling: GraniteDoclingConfig's keys and validate_architecture, its text config as
        // GraniteDoclingTextConfig checks it (whatever its model_type says).
        Mutant("granite_docling-f32", "tie_word_embeddings", "null", key: "tie_word_embeddings"),
        Mutant("granite_docling-f32", "image_token_id", "5.0", key: "image_token_id"),
        Mutant("granite_docling-f32", "density_router_threshold", "\"x\"", key: "density_router_threshold"),
        Mutant("granite_docling-f32", "vision_config.out_hidden_size", "32", key: "vision_config.out_hidden_size"),
        Mutant("granite_docling-f32", "vision_config.out_hidden_size", "\"x\"", key: "vision_config.out_hidden_size"),
        Mutant("granite_docling-f32", "vision_config.use_fine_route", "0", key: "vision_config.use_fine_route"),
        Mutant("granite_docling-f32", "text_config.num_hidden_layers", "4.0", key: "text_config.num_hidden_layers"),
        Mutant("granite_docling-f32", "text_config.embedding_multiplier", "null", key: "text_config.embedding_multiplier"),
        Mutant("granite_docling-f32", "text_config.pad_token_id", "600", key: "text_config.pad_token_id"),
        Mutant("granite_docling-f32", "text_config.hidden_size", "48", key: "hidden_size"),
        Mutant("llava-f32", "text_config.attention_bias", "0", key: "text_config.attention_bias"),
        Mutant("llava_next-f32", "text_config.sliding_window", "0", key: "text_config.sliding_window"),
        Mutant("llava_onevision-f32", "text_config.use_sliding_window", "\"x\"", key: "text_config.use_sliding_window"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// LLaVA-OneVision's text model is qwen2 when its text_config names no
    /// model_type, LLaVA's llama; a mistral text model ignores
    /// `layer_types` and slides on every layer.
    @Test func textModelTypesAsTheConfigClassesBuildThem() throws {
        let onevision = try EditedFixture("llava_onevision-f32").attentionScores()
        #expect(try EditedFixture("llava_onevision-f32") { EditedModel.set(nil, at: "text_config.model_type", in: &$0) }
            .attentionScores() == onevision)
        let llava = try EditedFixture("llava-f32").attentionScores()
        #expect(try EditedFixture("llava-f32") { EditedModel.set(nil, at: "text_config.model_type", in: &$0) }
            .attentionScores() == llava)
        let next = try EditedFixture("llava_next-f32") {
            EditedModel.set(Array(repeating: "full_attention", count: 4), at: "text_config.layer_types", in: &$0)
        }
        #expect(try (0..<4).allSatisfy { try next.load().block($0).attention?.attention.slidingWindow == 8 })
    }

    /// AutoModel builds a wrapper's language model by its text config's
    /// model_type: the registry reads it with that type's family.
    @Test func theTextModelTypeChoosesTheFamily() throws {
        #expect(try EditedFixture("internvl-f32").load() is LlamaModel)
        #expect(try EditedFixture("internvl_qwen3-f32").load() is Qwen3Model)
        #expect(try EditedFixture("internvl_qwen3_moe-f32").load() is Qwen3MoeModel)
        #expect(try EditedFixture("aya_vision-f32").load() is CohereModel)
        #expect(try EditedFixture("lfm2_vl-f32").load() is Lfm2Model)
        #expect(try EditedFixture("mistral3_mistral4-f32").load() is Mistral4Model)
        #expect(try EditedFixture("cohere2_vision-f32").load() is CohereModel)
        #expect(try EditedFixture("exaone4_5-f32").load() is Exaone4Model)
        #expect(try EditedFixture("lfm3_vl-f32").load() is Lfm3Model)
        #expect(try EditedFixture("llava_next_video-f32").load() is LlamaModel)
        #expect(try EditedFixture("minicpmv4_6-f32").load() is Qwen3_5Model)
        #expect(try EditedFixture("minicpmv4_7-f32").load() is Qwen3_5Model)
        #expect(try EditedFixture("ovis2-f32").load() is LlamaModel)
        #expect(try EditedFixture("idefics2-f32").load() is LlamaModel)
        #expect(try EditedFixture("vipllava-f32").load() is LlamaModel)
        #expect(try EditedFixture("video_llava-f32").load() is LlamaModel)
        #expect(try EditedFixture("lighton_ocr-f32").load() is Qwen3Model)
        #expect(try EditedFixture("fast_vlm-f32").load() is LlamaModel)
        #expect(try EditedFixture("perception_lm-f32").load() is LlamaModel)
        #expect(try EditedFixture("deepseek_vl-f32").load() is LlamaModel)
        #expect(try EditedFixture("janus-f32").load() is LlamaModel)
        #expect(try EditedFixture("qianfan_ocr-f32").load() is Qwen3Model)
        #expect(try EditedFixture("video_llama_3-f32").load() is LlamaModel)
        #expect(try EditedFixture("minicpm_ocr-f32").load() is Qwen3_5Model)
        #expect(try EditedFixture("granite_docling-f32").load() is GraniteModel)
        // LightOnOcrConfig ties by default over its text config's false (the fixture stores no head).
        #expect(throws: Never.self) { try EditedFixture("lighton_ocr-f32").load().head() }
        #expect(throws: DroptraceError.self) { try EditedFixture("lighton_ocr-f32") { $0["tie_word_embeddings"] = false }.load().head() }
        // ViP-LLaVA's and Video-LLaVA's classes tie by their own flag alone (default false).
        for name in ["vipllava-f32", "video_llava-f32"] {
            let headless = try EditedFixture(name) { EditedModel.set(true, at: "text_config.tie_word_embeddings", in: &$0) }
            try BadInputTests().rewriteWeights(headless.model) { $0.removeAll { $0.name == "language_model.lm_head.weight" } }
            #expect(throws: DroptraceError.self) { try headless.load().head() }
        }
        #expect(try EditedFixture("llava_next_granite-f32").load() is GraniteModel)
        #expect(try EditedFixture("llava_phi3-f32").load() is Phi3Model)
        #expect(try EditedFixture("llava_gemma-f32").load() is GemmaModel)
        // EXAONE 4.5's first release names its text model exaone4_5_text (the fixture), the class's rename exaone4.
        #expect(try EditedFixture("exaone4_5-f32") { EditedModel.set("exaone4", at: "text_config.model_type", in: &$0) }
            .attentionScores() == EditedFixture("exaone4_5-f32").attentionScores())
        // Exaone4_5_Config reads text_config["model_type"]: a text config without one fails there.
        try EditedFixture("exaone4_5-f32") { EditedModel.set(nil, at: "text_config.model_type", in: &$0) }
            .expectRefused(naming: "model_type")
    }

    /// A block-dropped export renumbers the text config, where the wrapper's
    /// model reads the language model's layers, and leaves the top level as it was.
    @Test(arguments: [
        "llava-f32", "llava_next-f32", "llava_onevision-f32", "internvl-f32", "idefics3-f32", "smolvlm-f32", "mistral3-f32",
        "mistral3_mistral4-f32", "internvl_qwen3-f32", "internvl_qwen3_moe-f32", "aya_vision-f32", "lfm2_vl-f32",
        "cohere2_vision-f32", "exaone4_5-f32", "lfm3_vl-f32", "llava_next_video-f32", "minicpmv4_6-f32", "minicpmv4_7-f32",
        "ovis2-f32", "llava_next_granite-f32", "llava_phi3-f32", "llava_gemma-f32", "llava_onevision1_5-f32", "ovis2_5-f32",
        "kimi_k25-f32", "paligemma-f32", "paligemma2-f32", "idefics2-f32", "vipllava-f32", "video_llava-f32", "lighton_ocr-f32",
        "fast_vlm-f32", "perception_lm-f32", "glm46v-f32", "deepseek_vl-f32", "janus-f32", "glm_ocr-f32", "glmga-f32",
        "qianfan_ocr-f32",
        "video_llama_3-f32", "minicpm_ocr-f32", "granite_docling-f32",
    ])
    func blockDropExportsEditTheTextConfig(_ name: String) throws {
        let fixture = try EditedFixture(name)
        let layers = try fixture.load().layerCount
        let exported = try fixture.exportedConfig(droppingBlocks: [1])
        let text = try #require(exported["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == layers - 1)
        #expect((text["layer_types"] as? [String]).map(\.count) ?? layers - 1 == layers - 1)
        #expect(exported["num_hidden_layers"] == nil && exported["layer_types"] == nil)
    }

    /// Aya Vision reads a cohere2 text model when its text config names no
    /// model_type (layers 0 and 2 slide), and a cohere one as Cohere's
    /// family does (every layer full, rotating; scores checked against
    /// transformers 5.23: equal to 2e-9).
    @Test func ayaVisionReadsCohereAndCohere2TextModels() throws {
        func windows(_ fixture: EditedFixture) throws -> [Int?] {
            let model = try fixture.load()
            return try (0..<model.layerCount).map { try model.block($0).attention?.attention.slidingWindow }
        }
        let cohere2 = try EditedFixture("aya_vision-f32")
        #expect(try windows(cohere2) == [8, nil, 8, nil])
        #expect(try EditedFixture("aya_vision-f32") { EditedModel.set(nil, at: "text_config.model_type", in: &$0) }
            .attentionScores() == cohere2.attentionScores())
        let cohere = try EditedFixture("aya_vision-f32") { EditedModel.set("cohere", at: "text_config.model_type", in: &$0) }
        #expect(try windows(cohere) == [nil, nil, nil, nil])
        #expect(try cohere.attentionScores() != cohere2.attentionScores())
    }

    /// Cohere2Config's defaults under a wrapper: the window 4096 where the
    /// text config omits it, the rope base 10000 (CohereConfig's 500000)
    /// where it names none, as at the top level.
    @Test func cohere2TextConfigDefaults() throws {
        let unwindowed = try EditedFixture("aya_vision-f32") { EditedModel.set(nil, at: "text_config.sliding_window", in: &$0) }.load()
        #expect(try (0..<4).map { try unwindowed.block($0).attention?.attention.slidingWindow } == [4096, nil, 4096, nil])
        // The fixtures rotate at 10000, written out.
        for (name, key) in [("aya_vision-f32", "text_config.rope_parameters"), ("cohere2-f32", "rope_parameters")] {
            #expect(try EditedFixture(name) { EditedModel.set(nil, at: key, in: &$0) }.attentionScores()
                == EditedFixture(name).attentionScores())
        }
        let cohere = try EditedFixture("cohere-f32") { $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 500_000.0] }
        #expect(try EditedFixture("cohere-f32") { $0["rope_parameters"] = nil }.attentionScores() == cohere.attentionScores())
    }

    /// A wrapper's head is `lm_head`; `language_model.lm_head` only where
    /// transformers renames the 4.x names (and both stored are refused, as
    /// transformers reads them as one). Elsewhere that tensor is not read:
    /// a tied head is the embedding, an untied one missing.
    @Test func theHeadIsReadWhereTransformersReadsIt() throws {
        /// The fixture with a constant [vocab, hidden] tensor added as `head`, or `source` renamed to it.
        func withHead(_ name: String, _ head: String, renaming source: String? = nil) throws -> EditedFixture {
            let fixture = try EditedFixture(name)
            let model = try fixture.load()
            try BadInputTests().rewriteWeights(fixture.model) { entries in
                if let source, let index = entries.firstIndex(where: { $0.name == source }) {
                    entries[index].name = head
                } else {
                    let count = model.vocabularySize * model.hiddenSize
                    entries.append(.init(name: head, shape: [model.vocabularySize, model.hiddenSize]) { Array(repeating: 0.25, count: count) })
                }
            }
            return fixture
        }
        let ids = Array(FixtureFiles.jsonlSequences()[0].prefix(12))
        func lastLogits(_ fixture: EditedFixture) throws -> [Float] {
            let model = try fixture.load()
            let hidden = try LayerwiseForward(model: model).run(TokenBatch(sequences: [ids]))
            return try model.head().logits(Matrix(rows: 1, cols: hidden.cols, data: Array(hidden.data.suffix(hidden.cols)))).data
        }
        // lfm2_vl ties its head and has no 4.x names: the stray tensor is not the head.
        #expect(try lastLogits(withHead("lfm2_vl-f32", "language_model.lm_head.weight")) == lastLogits(EditedFixture("lfm2_vl-f32")))
        // exaone4_5's untied head under the 4.x name is not found, as transformers does not find it.
        #expect(throws: DroptraceError.self) {
            try withHead("exaone4_5-f32", "language_model.lm_head.weight", renaming: "lm_head.weight").load().head()
        }
        // internvl reads the 4.x names: its head stored under both names is refused.
        #expect(throws: DroptraceError.self) { try withHead("internvl_qwen3-f32", "lm_head.weight").load() }
    }

    /// Gemma3ForConditionalGeneration (whose 4.x names transformers converts
    /// as LLaVA's) ties its head by Gemma3Config's own tie_word_embeddings
    /// (true when absent, untied when null), never the text config's; the
    /// fixture stores no head (checked against transformers 5.23: untied, it
    /// initialises lm_head randomly).
    @Test func gemma3TiesByItsOwnKey() throws {
        func head(top: Any?, text: Bool?) throws -> OutputHead {
            try EditedFixture("gemma3-f32") { config in
                config["tie_word_embeddings"] = top
                EditedModel.set(text, at: "text_config.tie_word_embeddings", in: &config)
            }.load().head()
        }
        #expect(throws: Never.self) { try head(top: nil, text: false) }
        #expect(throws: Never.self) { try head(top: true, text: false) }
        #expect(throws: DroptraceError.self) { try head(top: false, text: true) }
        #expect(throws: DroptraceError.self) { try head(top: NSNull(), text: true) }
    }

    /// The text config's logit_scale (CohereForCausalLM's) multiplies the
    /// logits of AyaVisionForConditionalGeneration's head (transformers ≥
    /// 5.25; the fixture's reference logits check its 0.25), not those of
    /// Cohere2VisionForConditionalGeneration's, a plain projection.
    @Test(arguments: [("aya_vision-f32", true), ("cohere2_vision-f32", false)])
    func cohereWrappersScaleLogitsAsTheirHeads(_ name: String, scales: Bool) throws {
        let ids = Array(FixtureFiles.jsonlSequences()[0].prefix(12))
        func lastLogits(_ fixture: EditedFixture) throws -> [Float] {
            let model = try fixture.load()
            let hidden = try LayerwiseForward(model: model).run(TokenBatch(sequences: [ids]))
            return try model.head().logits(Matrix(rows: 1, cols: hidden.cols, data: Array(hidden.data.suffix(hidden.cols)))).data
        }
        let quartered = try lastLogits(EditedFixture(name) { EditedModel.set(0.25, at: "text_config.logit_scale", in: &$0) })
        let unit = try lastLogits(EditedFixture(name) { EditedModel.set(1.0, at: "text_config.logit_scale", in: &$0) })
        #expect(quartered == (scales ? unit.map { $0 * 0.25 } : unit))
    }

    /// Without a stored lm_head the head is the embedding where the config
    /// ties it: LLaVA's and LLaVA-OneVision's classes take the text config's
    /// flag, LLaVA-NeXT's only its own; InternVL's ties by default.
    @Test func theTextConfigTiesTheHeadOfLlavaAndOnevisionOnly() throws {
        func headless(_ name: String, textTies: Bool) throws -> EditedFixture {
            let fixture = try EditedFixture(name) { config in
                EditedModel.set(textTies, at: "text_config.tie_word_embeddings", in: &config)
                config["tie_word_embeddings"] = false
            }
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "language_model.lm_head.weight" } }
            return fixture
        }
        #expect(throws: Never.self) { try headless("llava-f32", textTies: true).load().head() }
        #expect(throws: DroptraceError.self) { try headless("llava-f32", textTies: false).load().head() }
        #expect(throws: DroptraceError.self) { try headless("llava_next-f32", textTies: true).load().head() }
        #expect(throws: Never.self) { try headless("llava_onevision-f32", textTies: true).load().head() }
        #expect(throws: Never.self) { try headless("llava_next_video-f32", textTies: true).load().head() }
        // LLaVA-Gemma's config omits the flag at both levels: LlavaConfig takes the built text config's,
        // GemmaConfig's default true (the fixture stores no lm_head); a text config saying false unties it.
        #expect(try EditedFixture("llava_gemma-f32").load().head().projection.weight
            == (try Checkpoint(directory: FixtureFiles.model("llava_gemma-f32")).tensor("language_model.model.embed_tokens.weight").floats()))
        #expect(throws: DroptraceError.self) {
            try EditedFixture("llava_gemma-f32") { EditedModel.set(false, at: "text_config.tie_word_embeddings", in: &$0) }.load().head()
        }
        #expect(throws: DroptraceError.self) { try headless("llava_next_video-f32", textTies: false).load().head() }
        // InternVLConfig ties unless its own flag says otherwise (the fixture leaves it out).
        #expect(throws: Never.self) { try EditedFixture("internvl-f32").load().head() }
        #expect(throws: DroptraceError.self) { try EditedFixture("internvl-f32") { $0["tie_word_embeddings"] = false }.load().head() }
        // Ovis2Config ties by default and does not forward the text config's flag.
        #expect(throws: Never.self) { try EditedFixture("ovis2-f32") { $0["tie_word_embeddings"] = nil }.load().head() }
        #expect(throws: DroptraceError.self) { try headless("ovis2-f32", textTies: true).load().head() }
        // Lfm2VlConfig ties by default, by tie_embedding over tie_word_embeddings (the fixture stores no lm_head).
        func lfm2VL(_ keys: [String: Bool]) throws -> EditedFixture {
            try EditedFixture("lfm2_vl-f32") { config in keys.forEach { config[$0.key] = $0.value } }
        }
        #expect(throws: Never.self) { try EditedFixture("lfm2_vl-f32") { $0["tie_word_embeddings"] = nil }.load().head() }
        #expect(throws: DroptraceError.self) { try lfm2VL(["tie_word_embeddings": false]).load().head() }
        #expect(throws: Never.self) { try lfm2VL(["tie_word_embeddings": false, "tie_embedding": true]).load().head() }
        #expect(throws: DroptraceError.self) { try lfm2VL(["tie_word_embeddings": true, "tie_embedding": false]).load().head() }
    }

    /// FastVlmConfig ties by its text config's flag over its own false (the
    /// fixture writes false at the top level and stores no head);
    /// PerceptionLMConfig takes the text config's flag only where its own is
    /// absent or null (default None: the fixture leaves it out). Checked
    /// against transformers 5.25 (tied or not as here).
    @Test func fastVlmAndPerceptionLmTieAsTheirConfigClasses() throws {
        func head(_ name: String, top: Any?, text: Bool) throws -> OutputHead {
            try EditedFixture(name) { config in
                config["tie_word_embeddings"] = top
                EditedModel.set(text, at: "text_config.tie_word_embeddings", in: &config)
            }.load().head()
        }
        #expect(throws: Never.self) { try head("fast_vlm-f32", top: false, text: true) }
        #expect(throws: Never.self) { try head("fast_vlm-f32", top: nil, text: true) }
        #expect(throws: Never.self) { try head("fast_vlm-f32", top: true, text: false) }
        #expect(throws: DroptraceError.self) { try head("fast_vlm-f32", top: false, text: false) }
        #expect(throws: Never.self) { try head("perception_lm-f32", top: nil, text: true) }
        #expect(throws: Never.self) { try head("perception_lm-f32", top: NSNull(), text: true) }
        #expect(throws: Never.self) { try head("perception_lm-f32", top: true, text: false) }
        #expect(throws: DroptraceError.self) { try head("perception_lm-f32", top: false, text: true) }
        #expect(throws: DroptraceError.self) { try head("perception_lm-f32", top: nil, text: false) }
        // The image (and video) token ids are embedded from their rows on text, as the wrappers' models embed them
        // without pixel values: where they lie inside the vocabulary the scores do not move.
        for (name, keys) in [("fast_vlm-f32", ["image_token_index"]), ("perception_lm-f32", ["image_token_id", "video_token_id"])] {
            let ids = FixtureFiles.jsonlSequences()[0]
            let base = try EditedFixture(name).attentionScores()
            #expect(try EditedFixture(name) { config in keys.forEach { config[$0] = ids[3] } }.attentionScores() == base)
        }
    }

    /// DeepseekVLConfig and JanusConfig tie by their own flag alone (default
    /// true), whatever the text config's says: DeepSeek-VL's fixture stores
    /// no head (its text config's flag false), Janus's stores one (top level
    /// false, its text config's true). Checked against transformers 5.25
    /// (tied or not as here, every combination of the two flags). The image
    /// token is embedded from its row on text; Janus's image-generation
    /// modules are never read; the vision tower's image_size and patch_size
    /// may be anything JanusConfig divides.
    @Test func deepseekVlAndJanusTieByTheirOwnFlagAlone() throws {
        func head(_ name: String, top: Any?, text: Bool, dropHead: Bool = false) throws -> OutputHead {
            let fixture = try EditedFixture(name) { config in
                config["tie_word_embeddings"] = top
                EditedModel.set(text, at: "text_config.tie_word_embeddings", in: &config)
            }
            if dropHead { try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "lm_head.weight" } } }
            return try fixture.load().head()
        }
        for name in ["deepseek_vl-f32", "janus-f32"] {
            #expect(throws: Never.self) { try head(name, top: nil, text: false, dropHead: true) }
            #expect(throws: Never.self) { try head(name, top: true, text: false, dropHead: true) }
            #expect(throws: DroptraceError.self) { try head(name, top: false, text: true, dropHead: true) }
            #expect(throws: DroptraceError.self) { try head(name, top: false, text: false, dropHead: true) }
        }
        // Janus untied reads its own head; tied, the embedding (another perplexity, the same scores).
        #expect(try head("janus-f32", top: true, text: false).vocabularySize == EditedFixture("janus-f32").load().head().vocabularySize)
        #expect(try EditedFixture("janus-f32").attentionScores() == EditedFixture("janus-f32") { $0["tie_word_embeddings"] = nil }.attentionScores())
        let ids = FixtureFiles.jsonlSequences()[0]
        for name in ["deepseek_vl-f32", "janus-f32"] {
            let base = try EditedFixture(name).attentionScores()
            #expect(try EditedFixture(name) { $0["image_token_id"] = ids[3] }.attentionScores() == base)
            #expect(try EditedFixture(name) { $0["vision_config"] = nil }.attentionScores() == base)
        }
        let janus = try EditedFixture("janus-f32").attentionScores()
        let generationFree = try EditedFixture("janus-f32")
        try BadInputTests().rewriteWeights(generationFree.model) { entries in
            entries.removeAll { $0.name.hasPrefix("model.generation_") || $0.name.hasPrefix("model.vqmodel.") }
        }
        #expect(try generationFree.attentionScores() == janus)
        for patch in [-3, 7] as [Any] {
            #expect(try EditedFixture("janus-f32") { EditedModel.set(patch, at: "vision_config.patch_size", in: &$0) }.attentionScores() == janus)
        }
    }

    /// VideoLlama3Config ties by its own flag (default false) or, over its
    /// false, by the text config's (VideoLlama3Config.__post_init__; the
    /// fixture writes false at the top level, true in its text config, and
    /// stores no head). Checked against transformers 5.25 for every
    /// combination of the two flags (absent, true, false). On text the image
    /// and video tokens are embedded from their rows; the vision tower and
    /// projector are never read.
    @Test func videoLlama3TiesByEitherFlag() throws {
        try expectTying("video_llama_3-f32") { top, text in top == true || text == true }
        try expectTextOnly("video_llama_3-f32", tokenKeys: ["image_token_id", "video_token_id"])
    }

    /// MiniCPMOcrConfig ties by its own flag alone (default true), whatever
    /// the text config's says (the fixture's text config writes false, no
    /// head stored). Checked against transformers 5.25 for every combination
    /// of the two flags (absent, true, false). On text the image and video
    /// tokens are embedded from their rows (both may be null, the class's
    /// default); the vision tower and merger are never read.
    @Test func miniCpmOcrTiesByItsOwnFlagAlone() throws {
        try expectTying("minicpm_ocr-f32") { top, _ in top != false }
        try expectTextOnly("minicpm_ocr-f32", tokenKeys: ["image_token_id", "video_token_id"])
        #expect(try EditedFixture("minicpm_ocr-f32") { $0["image_token_id"] = NSNull() }.attentionScores()
            == EditedFixture("minicpm_ocr-f32").attentionScores())
    }

    /// GraniteDoclingConfig builds GraniteDoclingTextConfig from text_config
    /// whatever its model_type says (null too), ties by its own flag alone
    /// (default true; the fixture's text config writes false, no head stored;
    /// checked against transformers 5.25 for every combination of the two
    /// flags), and the text config takes that class's multipliers where it
    /// omits them (not GraniteConfig's ones). It refuses a density router
    /// without the fine connector path (validate_architecture). On text the
    /// image token is embedded from its row; the vision tower, connector and
    /// DeepStack mergers are never read.
    @Test func graniteDoclingReadsItsOwnTextConfig() throws {
        try expectTying("granite_docling-f32") { top, _ in top != false }
        let name = "granite_docling-f32"
        let base = try EditedFixture(name).attentionScores()
        for type in ["llama", nil] as [String?] {
            #expect(try EditedFixture(name) { EditedModel.set(type.map { $0 as Any } ?? NSNull(), at: "text_config.model_type", in: &$0) }
                .attentionScores() == base)
        }
        let defaults: [String: Double] = [
            "embedding_multiplier": 12, "logits_scaling": 4, "residual_multiplier": 0.263, "attention_multiplier": 0.015625,
        ]
        let written = try EditedFixture(name) { config in
            for (key, value) in defaults { EditedModel.set(value, at: "text_config." + key, in: &config) }
        }
        let omitted = try EditedFixture(name) { config in
            for key in defaults.keys { EditedModel.set(nil, at: "text_config." + key, in: &config) }
        }
        #expect(try omitted.attentionScores() == written.attentionScores())
        #expect(try omitted.attentionScores() != base)
        try EditedFixture(name) { config in
            config["density_router_hidden_size"] = 8
            EditedModel.set(false, at: "vision_config.use_fine_route", in: &config)
        }.expectRefused(naming: "density_router_hidden_size")
        #expect(try EditedFixture(name) { $0["density_router_hidden_size"] = 8 }.attentionScores() == base)
        try expectTextOnly(name, tokenKeys: ["image_token_id"], prefix: "model.text_model.")
    }

    /// The head of `name` (which stores none) is read for every combination
    /// of the top-level and text config's `tie_word_embeddings` (absent, true,
    /// false) where `tied` says the config class ties it (the text classes
    /// read here leave it untied by default), and refused elsewhere.
    private func expectTying(_ name: String, _ tied: (Bool?, Bool?) -> Bool) throws {
        for top in [nil, true, false] as [Bool?] {
            for text in [nil, true, false] as [Bool?] {
                let fixture = try EditedFixture(name) { config in
                    config["tie_word_embeddings"] = top
                    EditedModel.set(text, at: "text_config.tie_word_embeddings", in: &config)
                }
                if tied(top, text) {
                    #expect(throws: Never.self) { try fixture.load().head() }
                } else {
                    #expect(throws: DroptraceError.self) { try fixture.load().head() }
                }
            }
        }
    }

    /// The scores of `name` are the same with its token-id keys inside the
    /// vocabulary (embedded from their rows on text) and without any tensor
    /// outside its language model.
    private func expectTextOnly(_ name: String, tokenKeys: [String], prefix: String = "model.language_model.") throws {
        let ids = FixtureFiles.jsonlSequences()[0]
        let base = try EditedFixture(name).attentionScores()
        #expect(try EditedFixture(name) { config in tokenKeys.forEach { config[$0] = ids[3] } }.attentionScores() == base)
        let textOnly = try EditedFixture(name)
        try BadInputTests().rewriteWeights(textOnly.model) { entries in
            entries.removeAll { !$0.name.hasPrefix(prefix) }
        }
        #expect(try textOnly.attentionScores() == base)
    }

    /// Ovis2ForConditionalGeneration builds lm_head [vocab_size, hidden_size]
    /// and its visual embedding table [rows, hidden_size] from Ovis2Config's
    /// own keys (151643 and 1536 when absent), not the text config's: a
    /// stored head loads only where they are the text model's (the fixture's
    /// 512 and 64), and the table only at that width, as transformers 5.23
    /// fails on any other shape (its perplexity agrees where they match); an
    /// unstored tied head is the embedding, whatever they say.
    @Test func ovis2SizesItsHeadAndVisualTableByItsOwnKeys() throws {
        let table = "model.visual_embeddings_table.weight"
        func edited(_ keys: [String: Any], head: Bool = true) throws -> EditedFixture {
            let fixture = try EditedFixture("ovis2-f32") { config in keys.forEach { config[$0.key] = $0.value } }
            let stored = try Checkpoint(directory: fixture.model)
            let embedding = try stored.tensor("model.language_model.embed_tokens.weight"), rows = try stored.tensor(table).shape[0]
            let width = keys["hidden_size"] as? Int ?? 1536
            try BadInputTests().rewriteWeights(fixture.model) { entries in
                if head { entries.append(SafetensorsWriter.Entry(embedding, renamedTo: "lm_head.weight")) }
                entries.removeAll { $0.name == table }
                entries.append(SafetensorsWriter.Entry(name: table, shape: [rows, width]) { [Float](repeating: 0.5, count: rows * width) })
            }
            return fixture
        }
        for keys in [["tie_word_embeddings": false], [:], ["tie_word_embeddings": false, "vocab_size": 600, "hidden_size": 64]] {
            let fixture = try edited(keys)
            let sizes = "hidden_size \(keys["hidden_size"] ?? 1536) and vocab_size \(keys["vocab_size"] ?? 151643)"
            #expect(ExpertTensorTests.loadError(fixture.model) == "\(fixture.configPath): the top level's \(sizes) (its config class's "
                + "defaults where absent) size ovis2's lm_head, which the weights store, but the text model's are 64 and 512")
        }
        #expect(try edited(["tie_word_embeddings": false, "vocab_size": 512, "hidden_size": 64]).load().head().vocabularySize == 512)
        #expect(throws: Never.self) { try edited(["hidden_size": 32], head: false).load().head() }
        let narrower = try EditedFixture("ovis2-f32") { $0["hidden_size"] = 32 }
        #expect(ExpertTensorTests.loadError(narrower.model) == "\(narrower.configPath): the top level's hidden_size 32 (its config class's "
            + "default where absent) sizes ovis2's '\(table)', which the weights store with another width: transformers cannot load it")
    }

    /// A wrapper builds its language model under the top level's dtype, not
    /// the text config's (transformers 5.23 loads and runs these with
    /// `text_config.dtype` "int8" or 3): only the top level's must be a
    /// torch floating-point type. The text config's class still converts a
    /// string by name and fails on one naming no torch dtype ("bf16",
    /// "auto") or on a list.
    @Test(arguments: ["llava-f32", "qwen3_5-f32", "gemma3-f32"])
    func onlyTheTopLevelDtypeBuildsTheModel(_ name: String) throws {
        let base = try EditedFixture(name).attentionScores()
        for value in ["int8", 3, ["a": 1]] as [Any] {
            #expect(try EditedFixture(name) { EditedModel.set(value, at: "text_config.dtype", in: &$0) }.attentionScores() == base)
        }
        for value in ["bf16", "auto", [1]] as [Any] {
            try EditedFixture(name) { EditedModel.set(value, at: "text_config.dtype", in: &$0) }.expectRefused(naming: "\"text_config.dtype\"")
        }
        try EditedFixture(name) { $0["dtype"] = "int8" }.expectRefused(naming: "\"dtype\"")
    }

    /// Granite Vision's language model (LLaVA-NeXT around granite): its
    /// multipliers act inside it, as GraniteModel applies them, but the
    /// wrapper's own lm_head does not divide the logits by logits_scaling as
    /// GraniteForCausalLM does (the fixture's perplexity agrees with
    /// transformers 5.23 with logits_scaling 8).
    @Test func wrappedGraniteLogitsAreNotScaled() throws {
        let config = try FixtureFiles.config("llava_next_granite-f32")
        #expect((config["text_config"] as? [String: Any])?["logits_scaling"] as? Double == 8)
        #expect(try EditedFixture("llava_next_granite-f32").load().head().logitDivisor == nil)
        #expect(try EditedFixture("granite-f32").load().head().logitDivisor == 8)
        // Unread there, it may even be 0, which GraniteForCausalLM would divide by.
        #expect(try EditedFixture("llava_next_granite-f32") { EditedModel.set(0, at: "text_config.logits_scaling", in: &$0) }
            .load().head().logitDivisor == nil)
        try EditedFixture("granite-f32") { $0["logits_scaling"] = 0 }.expectRefused(naming: "logits_scaling")
    }

    /// A language model saved inside its causal LM under a wrapper
    /// (`model.language_model.model.…`, `language_model.model.model.…`)
    /// is read as transformers' legacy conversion renames it onto
    /// `model.language_model.` (perplexity and block-drop exports checked
    /// against transformers 5.23).
    @Test(arguments: [
        ("llava-f32", "language_model.model."), ("qwen3_5-f32", "model.language_model."), ("gemma3-f32", "language_model.model."),
        ("gemma4-f32", "model.language_model."),
    ])
    func languageModelSavedInsideItsCausalLM(_ name: String, _ stored: String) throws {
        let base = try EditedFixture(name).attentionScores()
        for legacy in ["model.language_model.model.", "language_model.model.model."] {
            let fixture = try EditedFixture(name)
            try BadInputTests().renameWeights(fixture.model, prefix: stored, to: legacy)
            #expect(try fixture.attentionScores() == base, "\(legacy)")
        }
    }
}

import CheckpointIO
import DroptraceSupport

/// The LLaVA-style vision-language models, read as their language model
/// (the vision tower and projector are never read: scoring runs on text):
/// `llava` (LlavaForConditionalGeneration: LLaVA-1.5), `llava_next`
/// (LLaVA-NeXT), `llava_onevision` (LLaVA-OneVision), `internvl`
/// (InternVLForConditionalGeneration: InternVL3, InternVL3.5), `qianfan_ocr`
/// (QianfanOCRForConditionalGeneration: Qianfan-OCR, InternVL's model around
/// a qwen3 language model by default, untied by default; its released names
/// `language_model.model.`, `language_model.lm_head`, and the
/// `language_model.model.encoder.layers.` transformers saves, it renames on
/// load: `TensorRenamings`), `idefics2`
/// (Idefics2), `idefics3` (Idefics3), `smolvlm` (SmolVLM), `mistral3`
/// (Mistral3ForConditionalGeneration: Mistral-Small-3.1/3.2, the Ministral 3
/// and Mistral Small 4 releases, whose weights transformers converts as
/// LLaVA's), `aya_vision` (Aya Vision), `cohere2_vision` (Command A
/// Vision), `exaone4_5` (EXAONE 4.5), `lfm2_vl` (LFM2-VL), `lfm3_vl`
/// (LFM3-VL), `llava_next_video` (LLaVA-NeXT-Video), `vipllava` (ViP-LLaVA),
/// `video_llava` (Video-LLaVA), `lighton_ocr` (LightOnOCR, around a qwen3
/// language model), `fast_vlm` (FastVLM, around a qwen2 language model),
/// `perception_lm` (PerceptionLM, around a llama language model; its timm
/// vision tower's settings are never read), `glm46v` (GLM-4.6V, around
/// GLM-4.1V's language model, which `GlmModel` reads; `glmga` is its model
/// under another config type), `minimax_m3_vl`
/// (MiniMax-M3, around its own text model, which `MiniMaxM3Model` reads),
/// `deepseek_vl` (DeepSeek-VL) and `janus` (Janus, Janus-Pro: its image
/// generation heads never run on text), both around a llama language model,
/// `video_llama_3` (VideoLLaMA3, around a qwen2 language model),
/// `minicpm_ocr` (MiniCPM-OCR: MiniCPM-V 4.6's model around a Qwen3.5
/// language model, tied by default), `granite_docling` (Granite-Docling,
/// around its own granite text model, which `GraniteModel` reads),
/// `hyperclovax_vision_v2` (HyperCLOVA X SEED Think, around a hyperclovax
/// language model; its released head `model.language_model.lm_head`
/// transformers renames `lm_head`: `TensorRenamings`),
/// `paligemma`
/// (PaliGemma and PaliGemma 2, around a gemma or gemma2 language model) and `minicpmv4_6`,
/// `minicpmv4_7` (MiniCPM-V 4.6, 4.7), `ovis2` (Ovis2), `llava_onevision1_5`
/// (LLaVA-OneVision-1.5) and `ovis2_5` (Ovis2.5), whose released tensor names
/// transformers renames on load (`TensorRenamings`), and `kimi_k25` (Kimi
/// K2.5, around DeepSeek-V3's language model, whose names as released,
/// LLaVA's 4.x, and as transformers saves them, its layers as `blocks`,
/// transformers renames on load too); transformers'
/// models/<model_type>/. (Granite Vision is `llava_next` around a granite text model.)
/// Their model builds the language model with AutoModel from `text_config`,
/// whose class follows its own `model_type` (`Wrapper.textType` when it
/// names none) with that class's defaults; droptrace reads it with the
/// family the registry names for that model type (`textModelType`), placed
/// by `placement`: weights under `model.language_model.` (transformers 5)
/// or `language_model.model.` (as the -hf releases and transformers 4.x
/// store them; Idefics2's, Idefics3's and SmolVLM's under `model.text_model.`), the head
/// `lm_head` or `language_model.lm_head`, tied as each config class says.
enum Llava {
    /// What one wrapper's config class decides.
    struct Wrapper {
        /// The text model type when `text_config` names none.
        var textType: String
        /// Whether the class also ties when its text config does, whatever its own flag says
        /// (LlavaConfig, LlavaOnevisionConfig, FastVlmConfig).
        var textTiesToo = false
        /// Where the language model's weights may be, first match first.
        var prefixes = ["model.language_model.", "language_model.model."]
        /// The text model types droptrace reads under this wrapper, each by its own family.
        var textTypes = ["llama", "mistral", "qwen2", "granite", "phi3", "gemma"]
        /// Whether the class reads a top-level `tie_word_embeddings` that is absent or null as
        /// the text config's (PerceptionLMConfig, whose own default is None).
        var textTiesWhenUnset = false
        /// Whether the class reads a top-level `tie_embedding` over `tie_word_embeddings` (Lfm2VlConfig).
        var readsTieEmbedding = false
        /// Whether its text config must name its model type (Exaone4_5_Config
        /// reads `text_config["model_type"]`; the types classes rename: `ConfigValueKinds.renamedTextTypes`).
        var textConfigNamesItsType = false
        /// The top-level `hidden_size` and `vocab_size` when absent, where the
        /// class sizes `lm_head` by its own keys, not the text config's (Ovis2Config),
        /// and the other tensors its model sizes by that `hidden_size`, [rows, hidden_size].
        var headSizeDefaults: (hidden: Int, vocabulary: Int)?
        var widthTensors: [String] = []
        /// Whether the wrapper's own head multiplies the logits by the text
        /// config's `logit_scale` (AyaVisionForConditionalGeneration, transformers ≥ 5.25).
        var headAppliesLogitScale = false
        /// Whether the config class requires the vision tower's output width
        /// (`vision_config.out_hidden_size`, its alias `text_hidden_size`
        /// over it, 4096 when absent) to be the text model's hidden_size, and
        /// the tower's hidden_size (1024) a multiple of 4 · `num_heads`
        /// (alias `num_attention_heads`, 16) for its 2-D rotary embedding
        /// (LlavaOnevision15Config's validation).
        var visionMatchesText = false
        /// Whether the wrapper's model builds the text model's causal mask
        /// itself, so the text config's `use_bidirectional_attention`, which
        /// PaliGemmaConfig sets true where absent, does not act on text
        /// (PaliGemmaModel with eager attention; with sdpa transformers leaves
        /// the mask to the attention's `is_causal`, which that flag turns off).
        var masksCausally = false
        /// Where the wrapper's model hands the text model a mask per attention
        /// type whenever the text config has a `sliding_window` (PaliGemmaModel),
        /// the text model types that take them: another (GemmaModel) fails on them.
        var slidingMaskReaders: [String]?
        /// Top-level token-id keys (and their config class's defaults) whose
        /// tokens the wrapper's model embeds as token 0 (`Kimi_K25Model`'s
        /// image and video tokens).
        var tokensEmbeddedAsZero: [(key: String, default: Int)] = []
        /// Top-level keys the config class's validation holds to one value
        /// where written, and that value (FastVlmConfig's
        /// `validate_architecture`: the tower's last layer, all its features).
        var fixedValues: [(key: String, value: JSONValue)] = []
        /// Top-level objects the wrapper's model is built from, which it
        /// cannot be built without (Emu3Model's `vocabulary_map`).
        var requiredObjects: [String] = []
        /// Whether building the wrapper divides the vision tower's `image_size`
        /// by its `patch_size` (JanusConfig sizes its VQ-VAE's patch count so,
        /// with JanusVisionConfig's 384 and 16 where absent; DeepSeek-VL's
        /// and the MiniCPM-V / MiniCPM-OCR vision embeddings size their positions so), whose vision config
        /// classes take integers only. (`GlmModel` runs the same check for
        /// the GLM vision families, which it places itself.)
        var dividesImageByPatch = false
        /// Whether the config class builds its own text config class from
        /// `text_config` whatever its `model_type` says, null included
        /// (GraniteDoclingConfig's GraniteDoclingTextConfig): `textType` is read.
        var buildsItsTextConfig = false
        /// Top-level keys the config class moves into its text config when
        /// `text_config` is unset, building it from its legacy name
        /// (`ConfigValueKinds.legacyTextConfigKeys`; UnlimitedOcrConfig's
        /// `language_config` and `sliding_window`). Each takes an integer or null.
        var movedIntoTextConfig: [String] = []
        /// Whether the wrapper's model projects image patches into the text
        /// model with one linear layer sized by the top level's `patch_size`² ·
        /// `num_channels` (FuyuModel's `vision_embed_tokens`; FuyuConfig's 30 and 3 where absent).
        var projectsPatches = false
        /// The default of `vision_config.out_hidden_size` where the config
        /// class requires it to be the text model's hidden_size, and refuses
        /// a `density_router_hidden_size` without `vision_config.use_fine_route`
        /// (GraniteDoclingConfig's `validate_architecture`: 1024); nil: no such rules.
        var doclingVisionWidth: Int?
    }

    static let wrappers: [String: Wrapper] = [
        "llava": Wrapper(textType: "llama", textTiesToo: true),
        "llava_next": Wrapper(textType: "llama"),
        "llava_onevision": Wrapper(textType: "qwen2", textTiesToo: true),
        "internvl": Wrapper(textType: "qwen2", textTypes: ["llama", "mistral", "qwen2", "qwen3", "qwen3_moe"]),
        // QianfanOCRModel is InternVLModel (AutoModel's text model); QianfanOCRConfig defaults to a qwen3 text
        // model and an untied head. Its released InternVL-chat names transformers renames (TensorRenamings).
        "qianfan_ocr": Wrapper(
            textType: "qwen3", prefixes: ["model.language_model."], textTypes: ["llama", "mistral", "qwen2", "qwen3", "qwen3_moe"]),
        "idefics2": Wrapper(textType: "mistral", prefixes: ["model.text_model."]),
        "idefics3": Wrapper(textType: "llama", prefixes: ["model.text_model."]),
        "smolvlm": Wrapper(textType: "llama", prefixes: ["model.text_model."]),
        "mistral3": Wrapper(
            textType: "mistral", textTypes: ["mistral", "ministral3", "mistral4"]),
        "mistral_large4": Wrapper(textType: "mistral_large4_text", textTypes: ["mistral_large4_text"]),
        "aya_vision": Wrapper(textType: "cohere2", textTypes: ["cohere", "cohere2"], headAppliesLogitScale: true),
        "cohere2_vision": Wrapper(
            textType: "cohere2", prefixes: ["model.language_model."], textTypes: ["cohere", "cohere2"]),
        "exaone4_5": Wrapper(
            textType: "exaone4", prefixes: ["model.language_model."], textTypes: ["exaone4"],
            textConfigNamesItsType: true),
        "lfm3_vl": Wrapper(textType: "lfm3", prefixes: ["model.language_model."], textTypes: ["lfm3"]),
        "llava_next_video": Wrapper(textType: "llama", textTiesToo: true),
        "ovis2": Wrapper(
            textType: "qwen2", prefixes: ["model.language_model."], headSizeDefaults: (hidden: 1536, vocabulary: 151643),
            widthTensors: ["model.visual_embeddings_table.weight"]),
        "llava_onevision1_5": Wrapper(
            textType: "qwen3", prefixes: ["model.language_model."], textTypes: ["qwen3"], visionMatchesText: true),
        "ovis2_5": Wrapper(textType: "qwen3", prefixes: ["model.language_model."], textTypes: ["qwen3"]),
        // MiniCPM-V 4.6 / 4.7's vision embeddings size their positions by image_size // patch_size.
        "minicpmv4_6": Wrapper(
            textType: "qwen3_5_text", prefixes: ["model.language_model."], textTypes: ["qwen3_5_text", "qwen3_5_moe_text"],
            dividesImageByPatch: true),
        "minicpmv4_7": Wrapper(
            textType: "qwen3_5_text", prefixes: ["model.language_model."], textTypes: ["qwen3_5_text", "qwen3_5_moe_text"],
            dividesImageByPatch: true),
        // MiniCPMOcrConfig is MiniCPMV4_6Config tied by default (its own flag alone); the same vision embeddings.
        "minicpm_ocr": Wrapper(
            textType: "qwen3_5_text", prefixes: ["model.language_model."], textTypes: ["qwen3_5_text", "qwen3_5_moe_text"],
            dividesImageByPatch: true),
        "lfm2_vl": Wrapper(
            textType: "lfm2", prefixes: ["model.language_model."], textTypes: ["lfm2"], readsTieEmbedding: true),
        "vipllava": Wrapper(textType: "llama"),
        "video_llava": Wrapper(textType: "llama"),
        "lighton_ocr": Wrapper(textType: "qwen3", prefixes: ["model.language_model."], textTypes: ["qwen3"]),
        "paligemma": Wrapper(textType: "gemma", textTypes: ["gemma", "gemma2"], masksCausally: true, slidingMaskReaders: ["gemma2"]),
        "fast_vlm": Wrapper(
            textType: "qwen2", textTiesToo: true, prefixes: ["model.language_model."], textTypes: ["qwen2"],
            fixedValues: [("vision_feature_select_strategy", .string("full")), ("vision_feature_layer", .integer(-1))]),
        "perception_lm": Wrapper(textType: "llama", prefixes: ["model.language_model."], textTypes: ["llama"], textTiesWhenUnset: true),
        // GLM-4.6V's language model is GLM-4.1V's (Glm4vTextConfig), which `GlmModel` places itself.
        "glm46v": Wrapper(textType: "glm4v_text", prefixes: ["model.language_model."], textTypes: ["glm4v_text"]),
        // GlmgaConfig is Glm46VConfig under another model type (its defaults alike); its model is Glm46VForConditionalGeneration.
        "glmga": Wrapper(textType: "glm4v_text", prefixes: ["model.language_model."], textTypes: ["glm4v_text"]),
        // Cosmos3's language model is Qwen3-VL's (Qwen3VLTextConfig), which `QwenVL` places.
        "cosmos3_omni": Wrapper(textType: "qwen3_vl_text", prefixes: ["model.language_model."], textTypes: ["qwen3_vl_text"]),
        // MiniMaxM3VLConfig builds MiniMaxM3VLTextConfig whatever text_config names, and ties by its flag too.
        "minimax_m3_vl": Wrapper(
            textType: "minimax_m3_vl_text", textTiesToo: true, prefixes: ["model.language_model."], textTypes: ["minimax_m3_vl_text"]),
        // HyperCLOVAXVisionV2ForConditionalGeneration: AutoModel's HyperCLOVAXModel, its own lm_head
        // multiplying the logits by the text config's logits_scaling (as HyperCLOVAXForCausalLM does).
        "hyperclovax_vision_v2": Wrapper(textType: "hyperclovax", prefixes: ["model.language_model."], textTypes: ["hyperclovax"]),
        // DeepseekVLForConditionalGeneration and JanusForConditionalGeneration: AutoModel's LlamaModel
        // under model.language_model., the head tied by the top-level flag alone (default true). Janus's
        // image-generation embedding, aligner and head, and its VQ-VAE, never run on text.
        "deepseek_vl": Wrapper(textType: "llama", prefixes: ["model.language_model."], textTypes: ["llama"], dividesImageByPatch: true),
        "janus": Wrapper(textType: "llama", prefixes: ["model.language_model."], textTypes: ["llama"], dividesImageByPatch: true),
        // VideoLlama3ForConditionalGeneration: AutoModel's Qwen2Model under model.language_model., lm_head
        // tied by the top-level flag or, over its false (its default), by the text config's
        // (VideoLlama3Config's __post_init__); plain positions on text.
        "video_llama_3": Wrapper(textType: "qwen2", textTiesToo: true, prefixes: ["model.language_model."], textTypes: ["qwen2"]),
        // GraniteDoclingForConditionalGeneration: GraniteDoclingTextModel (granite's layers and multipliers)
        // under model.text_model., lm_head tied by the top-level flag alone (default true) and dividing the
        // logits by logits_scaling as GraniteForCausalLM's does (GraniteModel); the DeepStack features join
        // image tokens only, never on text.
        "granite_docling": Wrapper(
            textType: "granite_docling_text", prefixes: ["model.text_model."], textTypes: ["granite_docling_text"],
            buildsItsTextConfig: true, doclingVisionWidth: 1024),
        // DeepseekOcr2Config builds DeepseekOcr2TextConfig from text_config whatever it names; the head is
        // tied by the top-level flag alone (default false).
        "deepseek_ocr2": Wrapper(
            textType: "deepseek_ocr2_text", prefixes: ["model.language_model."], textTypes: ["deepseek_ocr2_text"],
            buildsItsTextConfig: true),
        "muse_glimmer": Wrapper(
            textType: "muse_glimmer_text", prefixes: ["model.language_model."], textTypes: ["muse_glimmer_text"],
            tokensEmbeddedAsZero: [("image_token_id", 200_092), ("video_token_id", 200_091)], buildsItsTextConfig: true),
        "muse_spark": Wrapper(
            textType: "muse_spark_text", prefixes: ["model.language_model."], textTypes: ["muse_spark_text"],
            tokensEmbeddedAsZero: [("image_token_id", 200_092), ("video_token_id", 200_091), ("audio_token_id", 200_038)],
            buildsItsTextConfig: true),
        "unlimited_ocr": Wrapper(
            textType: "unlimited_ocr_text", prefixes: ["model.language_model."], textTypes: ["unlimited_ocr_text"],
            buildsItsTextConfig: true, movedIntoTextConfig: ["sliding_window"]),
        // FuyuForCausalLM: AutoModel's PersimmonModel (its released names language_model.model., language_model.lm_head,
        // which transformers renames), the head tied by the top-level flag alone (default false); a config
        // without text_config has its text keys at the top level (ConfigValueKinds.flatTextConfigKeys).
        "fuyu": Wrapper(textType: "persimmon", textTypes: ["persimmon"], projectsPatches: true),
        // Emu3ForConditionalGeneration: Emu3TextModel (Llama's layers) under model.text_model. (its released names
        // text_model.model., text_model.lm_head, which transformers renames), the head tied by the top-level flag
        // alone (default false); the VQ-VAE never runs on text.
        "emu3": Wrapper(
            textType: "emu3_text_model", prefixes: ["model.text_model."], textTypes: ["emu3_text_model"], requiredObjects: ["vocabulary_map"]),
        "kimi_k25": Wrapper(
            textType: "deepseek_v3", textTypes: ["deepseek_v3", "deepseek_v2"],
            tokensEmbeddedAsZero: [("image_token_id", 163605), ("video_token_id", 163840)]),
    ]

    /// The model type of the language model of `checkpoint` when it is one
    /// of `wrappers` (nil otherwise): `text_config.model_type`, else the
    /// wrapper's default.
    /// - Throws: `DroptraceError` naming config.json for a text model type
    ///   droptrace does not read under this wrapper.
    static func textModelType(_ checkpoint: Checkpoint) throws -> String? {
        guard let wrapper = wrappers[checkpoint.modelType] else { return nil }
        return try textModelType(checkpoint, wrapper, keys: checkpoint.decodeConfig(MultimodalWrapperKeys.self))
    }

    /// The model type of the language model `checkpoint` holds: its
    /// wrapper's text model's (`textModelType`), else its own.
    static func languageModelType(_ checkpoint: Checkpoint) throws -> String {
        try textModelType(checkpoint) ?? checkpoint.modelType
    }

    private static func textModelType(_ checkpoint: Checkpoint, _ wrapper: Wrapper, keys: MultimodalWrapperKeys) throws -> String {
        // (Its class reads text_config as its own text config class, whatever the type written.)
        if wrapper.buildsItsTextConfig { return wrapper.textType }
        let textConfig = keys.textConfig
        if case .null? = checkpoint.configDocument.member("text_config")?.member("model_type") {
            // AutoConfig's sub-config resolution fails on it ("Cannot resolve text_config").
            throw DroptraceError("\"text_config.model_type\" is null: name the text model's type", path: checkpoint.configURL.path)
        }
        if wrapper.textConfigNamesItsType, textConfig != nil, textConfig?.modelType == nil {
            throw DroptraceError("\"text_config\" names no model_type, which \(checkpoint.modelType)'s config class reads", path: checkpoint.configURL.path)
        }
        let written = textConfig?.modelType ?? wrapper.textType
        let textType = ConfigValueKinds.renamedTextType(written, in: checkpoint.modelType)
        guard wrapper.textTypes.contains(textType) else {
            throw DroptraceError(
                "\"text_config.model_type\" is \"\(textType.forErrorMessage)\": droptrace reads \(checkpoint.modelType) checkpoints "
                    + "with a \(wrapper.textTypes.joined(separator: ", ")) language model",
                path: checkpoint.configURL.path)
        }
        if let readers = wrapper.slidingMaskReaders, !readers.contains(textType),
           let window = checkpoint.configDocument.member("text_config")?.member("sliding_window") {
            if case .null = window {} else {
                throw DroptraceError(
                    "\"text_config.sliding_window\" is set for a \(textType) text model (\(textConfig?.modelType == nil ? "text_config names no model_type, which " + checkpoint.modelType + "'s config class reads as " + textType : "its model_type")): "
                        + "\(checkpoint.modelType)'s model then hands it a mask per attention type, on which transformers fails; name its type (\(readers.joined(separator: ", "))) or remove the window",
                    path: checkpoint.configURL.path)
            }
        }
        return textType
    }

    /// `keys` of config.json's top level written over `section`'s where
    /// `text_config` is unset (absent or null), as the config class moves them.
    /// - Throws: `DroptraceError` naming config.json for a value other than an integer or null.
    private static func moveIntoTextConfig(_ keys: [String], _ checkpoint: Checkpoint, section: inout ConfigSection) throws {
        let document = checkpoint.configDocument
        switch document.member("text_config") {
        case nil, .null?: break
        default: return
        }
        for key in keys {
            switch document.member(key) {
            case nil: continue
            case .null?: section.overrides[key] = .null
            case .integer(let value)?: section.overrides[key] = .integer(value)
            case let value?:
                throw DroptraceError(
                    "\"\(key)\" holds \(ConfigValueKinds.spelled(value)), which \(checkpoint.modelType)'s config class moves into its text config, "
                        + "where it takes an integer or null", path: checkpoint.configURL.path)
            }
        }
    }

    /// Where a checkpoint of one of `wrappers` keeps its language model:
    /// `text_config` with its model_type's class defaults (Ministral 3's too:
    /// `Ministral3Rope.classDefaults`), the head tied by the top-level
    /// `tie_word_embeddings` (or the class's alias for it), else by the
    /// class's default (the text config's flag where that default is None:
    /// `textTiesWhenUnset`) or, where it forwards it, the text config's; the
    /// head's sizes where the class takes them from its own keys.
    /// - Throws: `DroptraceError` as `textModelType`.
    static func placement(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        guard let wrapper = wrappers[checkpoint.modelType] else { return .topLevel }
        let keys = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
        let textType = try textModelType(checkpoint, wrapper, keys: keys)
        for (key, value) in wrapper.fixedValues {
            guard let written = checkpoint.configDocument.member(key) else { continue }
            switch (written, value) {
            case (.string(let a), .string(let b)) where a == b: continue
            case (.integer(let a), .integer(let b)) where a == b: continue
            default:
                throw DroptraceError(
                    "\"\(key)\" is \(ConfigValueKinds.spelled(written)), which \(checkpoint.modelType)'s config class refuses: "
                        + "it takes only \(ConfigValueKinds.spelled(value))",
                    path: checkpoint.configURL.path)
            }
        }
        for key in wrapper.requiredObjects {
            guard case .object? = checkpoint.configDocument.member(key) else {
                throw DroptraceError(
                    "\"\(key)\" is absent or null: \(checkpoint.modelType)'s model is built from it", path: checkpoint.configURL.path)
            }
        }
        var defaults = ConfigValueKinds.omittedDefaultValues(of: textType).merging(
            Ministral3Rope.classDefaults(textType), uniquingKeysWith: { $1 })
        if textType == ConfigValueKinds.textModelType(of: checkpoint.modelType) {
            // A config class building its text config as a class of its own (MistralLarge4Config) has its defaults listed under its type.
            defaults.merge(ConfigValueKinds.omittedDefaultValues(of: checkpoint.modelType + ".text_config"), uniquingKeysWith: { current, _ in current })
        }
        defaults["model_type"] = .string(textType)
        // The class reads its built text config's flag: the text class's default where the text config omits it.
        let textFlag = keys.textConfig?.tieWordEmbeddings ?? ConfigValueKinds.tiesByDefault(textType)
        let textTies = wrapper.textTiesToo && textFlag
        if wrapper.readsTieEmbedding, case .null? = checkpoint.configDocument.member("tie_embedding") {
            // Lfm2VlConfig sets tie_word_embeddings to it, which then fails its validation.
            throw DroptraceError("\"tie_embedding\" is null: the head is tied or not (true or false)", path: checkpoint.configURL.path)
        }
        let tied = (wrapper.readsTieEmbedding ? keys.tieEmbedding : nil) ?? keys.tieWordEmbeddings
            ?? (wrapper.textTiesWhenUnset ? textFlag : ConfigValueKinds.tiesByDefault(checkpoint.modelType))
        // (The classes that also tie by the text config's flag do so over their own false.)
        var placement = TextModelPlacement.wrapped(textDefaults: defaults, prefixes: wrapper.prefixes, tiedEmbeddings: tied || textTies)
        if wrapper.masksCausally { placement.section.overrides["use_bidirectional_attention"] = .null }
        placement.section.name = ConfigValueKinds.textConfigKey(checkpoint.configDocument, modelType: checkpoint.modelType)
        try moveIntoTextConfig(wrapper.movedIntoTextConfig, checkpoint, section: &placement.section)
        if let flat = ConfigValueKinds.flatTextSection(checkpoint.configDocument, modelType: checkpoint.modelType) {
            // The class builds its text config from listed top-level keys: the top level, those keys alone.
            placement.section.name = nil
            placement.section.keys = flat.keys
            placement.section.overrides.merge(flat.overrides, uniquingKeysWith: { $1 })
        }
        if wrapper.buildsItsTextConfig || keys.textConfig?.modelType.map({ ConfigValueKinds.renamedTextType($0, in: checkpoint.modelType) != $0 }) == true {
            // The class builds its own text config class whatever text_config names (DeepseekOcr2Config), or renames
            // the type first (Kimi_K25Config's kimi_k2): read as the class reads it.
            placement.section.overrides["model_type"] = .string(textType)
        }
        if let sizes = wrapper.headSizeDefaults {
            placement.headSizes = (hidden: keys.hiddenSize ?? sizes.hidden, vocabulary: keys.vocabSize ?? sizes.vocabulary)
            placement.widthTensors = wrapper.widthTensors
        }
        for (key, value) in wrapper.tokensEmbeddedAsZero {
            switch checkpoint.configDocument.member(key) {
            case nil: placement.tokensEmbeddedAsRowZero.insert(value)
            case .integer(let id)?: placement.tokensEmbeddedAsRowZero.insert(id)
            default: throw DroptraceError("\"\(key)\" must be an integer token id", path: checkpoint.configURL.path)
            }
        }
        if wrapper.visionMatchesText {
            placement.visionOutputWidth = try visionOutputWidth(checkpoint)
        }
        if wrapper.dividesImageByPatch {
            try checkPatchDividesImage(checkpoint)
        }
        if wrapper.projectsPatches {
            try checkPatchProjection(checkpoint)
        }
        if let width = wrapper.doclingVisionWidth {
            placement.visionOutputWidth = try checkDoclingVision(checkpoint, defaultWidth: width)
        }
        return placement
    }

    /// `vision_config.image_size // vision_config.patch_size` as the config
    /// class computes it (`Wrapper.dividesImageByPatch`): integers where
    /// written, the patch size not 0.
    /// - Throws: `DroptraceError` naming config.json where the class fails on them.
    static func checkPatchDividesImage(_ checkpoint: Checkpoint) throws {
        let vision = checkpoint.configDocument.member("vision_config")
        for key in ["image_size", "patch_size"] {
            switch vision?.member(key) {
            case nil, .integer?, .bigInteger?: continue
            default:
                throw DroptraceError(
                    "\"vision_config.\(key)\" must be an integer: transformers builds \(checkpoint.modelType)'s vision tower from image_size // patch_size",
                    path: checkpoint.configURL.path)
            }
        }
        if case .integer(0)? = vision?.member("patch_size") {
            throw DroptraceError(
                "\"vision_config.patch_size\" is 0: transformers builds \(checkpoint.modelType)'s vision tower from image_size // patch_size",
                path: checkpoint.configURL.path)
        }
    }

    /// The input width of the patch projection (`Wrapper.projectsPatches`):
    /// `patch_size` and `num_channels` integers, not negative, where written
    /// (FuyuConfig takes null for them, on which FuyuModel fails).
    /// - Throws: `DroptraceError` naming config.json where transformers cannot build the layer.
    static func checkPatchProjection(_ checkpoint: Checkpoint) throws {
        func integer(_ key: String, default fallback: Int) throws -> Int {
            switch checkpoint.configDocument.member(key) {
            case nil: return fallback
            case .integer(let written)? where written >= 0: return written
            case let written?:
                throw DroptraceError(
                    "\"\(key)\" is \(ConfigValueKinds.spelled(written)): \(checkpoint.modelType)'s model sizes its patch projection "
                        + "by patch_size² · num_channels, integers not below 0", path: checkpoint.configURL.path)
            }
        }
        let patch = try integer("patch_size", default: 30), channels = try integer("num_channels", default: 3)
        _ = try ConfigRules.checks(path: checkpoint.configURL.path) {
            try ConfigRules.product([(patch, "patch_size"), (patch, "patch_size"), (channels, "num_channels")])
        }
    }

    /// GraniteDoclingConfig's `validate_architecture` (`Wrapper.doclingVisionWidth`):
    /// a density router needs the fine connector path; returns the vision
    /// tower's output width, which must be the text model's hidden_size.
    /// - Throws: `DroptraceError` naming config.json where the class refuses them.
    private static func checkDoclingVision(_ checkpoint: Checkpoint, defaultWidth: Int) throws -> Int {
        let vision = checkpoint.configDocument.member("vision_config")
        let router = checkpoint.configDocument.member("density_router_hidden_size")
        if let router, case .null = router {} else if router != nil, case .bool(false)? = vision?.member("use_fine_route") {
            throw DroptraceError(
                "\"density_router_hidden_size\" is set while \"vision_config.use_fine_route\" is false: "
                    + "\(checkpoint.modelType)'s config class refuses a density router without the fine connector path",
                path: checkpoint.configURL.path)
        }
        switch vision?.member("out_hidden_size") {
        case nil: return defaultWidth
        case .integer(let width)?: return width
        default: throw DroptraceError("\"vision_config.out_hidden_size\" must be an integer", path: checkpoint.configURL.path)
        }
    }

    /// LlavaOnevision15VisionConfig's output width (`Wrapper.visionMatchesText`),
    /// its heads checked against its width as the class checks them.
    /// - Throws: `DroptraceError` naming config.json where the class refuses them.
    private static func visionOutputWidth(_ checkpoint: Checkpoint) throws -> Int {
        let vision = checkpoint.configDocument.member("vision_config")
        /// The first of `names` given (an alias before its field, which it is set over).
        func integer(_ names: [String], default value: Int) throws -> Int {
            for name in names {
                guard let written = vision?.member(name) else { continue }
                guard case .integer(let number) = written else {
                    throw DroptraceError("\"vision_config.\(name)\" must be an integer", path: checkpoint.configURL.path)
                }
                return number
            }
            return value
        }
        let width = try integer(["hidden_size"], default: 1024)
        let heads = try integer(["num_attention_heads", "num_heads"], default: 16)
        guard heads != 0, width % (4 * heads) == 0 else {
            throw DroptraceError(
                "\"vision_config.hidden_size\" \(width) is not a multiple of 4 × num_heads \(heads) (its config class's defaults "
                    + "1024 and 16 where absent), which \(checkpoint.modelType)'s vision rotary embedding requires",
                path: checkpoint.configURL.path)
        }
        return try integer(["text_hidden_size", "out_hidden_size"], default: 4096)
    }
}

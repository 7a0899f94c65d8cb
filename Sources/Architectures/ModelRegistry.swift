import CheckpointIO
import DroptraceSupport

/// A family the registry can build from a checkpoint (its file's one entry point).
protocol RegisteredModel: LanguageModel {
    /// Reads config.json's sizes and confirms them against the tensors.
    /// - Throws: `DroptraceError` naming config.json or the weights.
    init(_ checkpoint: Checkpoint) throws

    /// Whether the family resolves config.json's `layer_types` itself for
    /// `modelType` (per-layer windows, with its config class's default
    /// window); for the others the registry checks the list as the cache
    /// transformers builds from it reads it (`ForwardPassKeys`).
    static func readsLayerTypes(_ modelType: String) -> Bool
}

extension RegisteredModel {
    static func readsLayerTypes(_ modelType: String) -> Bool { false }
}

/// The architectures droptrace reads, by config.json `model_type`: the one
/// list of them. `score --help`, the README's model list and the tests'
/// fixture list are checked against it; adding a family is its file plus
/// one line here.
public enum ModelRegistry {
    static let families: KeyValuePairs<String, any RegisteredModel.Type> = [
        "afmoe": AfmoeModel.self,
        "apertus": ApertusModel.self,
        "apertus1p5": ApertusModel.self,
        "apertus1p5_text": ApertusModel.self,
        "arcee": ArceeModel.self,
        "aria": AriaModel.self,
        "aria_text": AriaModel.self,
        "axk1": Glm4MoeLiteModel.self,
        "axk2": Glm4MoeLiteModel.self,
        "aya_vision": CohereModel.self,
        "bailing_hybrid": BailingHybridModel.self,
        "bamba": BambaModel.self,
        "beam": BeamModel.self,
        "bitnet": BitNetModel.self,
        "bloom": BloomModel.self,
        "chameleon": ChameleonModel.self,
        "codegen": GPTJModel.self,
        "cohere": CohereModel.self,
        "cohere2": CohereModel.self,
        "cohere2_moe": Cohere2MoeModel.self,
        "cohere2_vision": CohereModel.self,
        "cohere_compass": CohereCompassModel.self,
        "cohere_compass_text": CohereCompassModel.self,
        "cosmos3_edge": ArceeModel.self,
        "cosmos3_omni": Qwen3Model.self,
        "cwm": LlamaModel.self,
        "dbrx": DbrxModel.self,
        "deepseek_ocr2": DeepSeekModel.self,
        "deepseek_v2": DeepSeekModel.self,
        "deepseek_v3": DeepSeekModel.self,
        "deepseek_v32": Glm4MoeLiteModel.self,
        "deepseek_v4": DeepseekV4Model.self,
        "deepseek_vl": LlamaModel.self,
        "diffllama": DiffLlamaModel.self,
        "doge": DogeModel.self,
        "dory": DoryModel.self,
        "dots1": Dots1Model.self,
        "dots3_note": Dots3NoteModel.self,
        "dots3_note_text": Dots3NoteModel.self,
        "emu3": LlamaModel.self,
        "emu3_text_model": LlamaModel.self,
        "ernie4_5": InterleavedLlamaModel.self,
        "ernie4_5_moe": Ernie4_5MoeModel.self,
        "ernie4_5_vl_moe": Ernie4_5VLMoeModel.self,
        "ergo": ErgoModel.self,
        "exaone": LlamaModel.self,
        "exaone4": Exaone4Model.self,
        "exaone4_5": Exaone4Model.self,
        "exaone_moe": ExaoneMoeModel.self,
        "falcon": FalconModel.self,
        "falcon_h1": FalconH1Model.self,
        "falcon_mamba": MambaModel.self,
        "fast_vlm": LlamaModel.self,
        "flex_olmo": FlexOlmoModel.self,
        "flint": FlintModel.self,
        "fuyu": PersimmonModel.self,
        "gemma": GemmaModel.self,
        "gemma2": Gemma2Model.self,
        "gemma3": Gemma3Model.self,
        "gemma3_text": Gemma3Model.self,
        "gemma3n": Gemma3nModel.self,
        "gemma3n_text": Gemma3nModel.self,
        "gemma4": Gemma4Model.self,
        "gemma4_text": Gemma4Model.self,
        "gemma4_unified": Gemma4Model.self,
        "gemma4_unified_text": Gemma4Model.self,
        "glm": GlmModel.self,
        "glm4": GlmModel.self,
        "glm4_moe": Glm4MoeModel.self,
        "glm4_moe_lite": Glm4MoeLiteModel.self,
        "glm46v": GlmModel.self,
        "glm4v": GlmModel.self,
        "glm4v_moe": Glm4MoeModel.self,
        "glm5_next": Glm5NextModel.self,
        "glm_moe_dsa": Glm4MoeLiteModel.self,
        "glm_ocr": GlmModel.self,
        "glmga": GlmModel.self,
        "gpt2": GPT2Model.self,
        "gpt_bigcode": GPT2Model.self,
        "gpt_neo": GPTNeoModel.self,
        "gpt_oss": GptOssModel.self,
        "gpt_neox": GPTNeoXModel.self,
        "gptj": GPTJModel.self,
        "granite": GraniteModel.self,
        "granite_docling": GraniteModel.self,
        "granite_swa": GraniteModel.self,
        "granitemoe": GraniteModel.self,
        "granitemoe_swa": GraniteModel.self,
        "granitemoehybrid": GraniteMoeHybridModel.self,
        "granitemoeshared": GraniteModel.self,
        "helium": InterleavedLlamaModel.self,
        "hrm_text": HrmTextModel.self,
        "hunyuan_v1_dense": HunYuanDenseV1Model.self,
        "hunyuan_v1_moe": HunYuanMoEV1Model.self,
        "hunyuan_vl": HunYuanDenseV1Model.self,
        "hy_v3": HYV3Model.self,
        "hy_v4": HYV4Model.self,
        "hy_v4_vl": HYV4Model.self,
        "hyperclovax": HyperCLOVAXModel.self,
        "hyperclovax_vision_v2": HyperCLOVAXModel.self,
        "idefics2": LlamaModel.self,
        "idefics3": LlamaModel.self,
        "internlm3": LlamaModel.self,
        "internvl": LlamaModel.self,
        "iquestcoder": LlamaModel.self,
        "jais2": ArceeModel.self,
        "jamba": JambaModel.self,
        "janus": LlamaModel.self,
        "jetmoe": JetMoeModel.self,
        "kimi_k25": DeepSeekModel.self,
        "kimi_linear": KimiLinearModel.self,
        "kolibri1": Kolibri1Model.self,
        "kolibri1_1": Kolibri1_1Model.self,
        "laguna": LagunaModel.self,
        "lara_mini": LaraMiniModel.self,
        "lfm2": Lfm2Model.self,
        "lfm2_moe": Lfm2MoeModel.self,
        "lfm2_vl": Lfm2Model.self,
        "lfm3": Lfm3Model.self,
        "lfm3_vl": Lfm3Model.self,
        "lighton_ocr": Qwen3Model.self,
        "llama": LlamaModel.self,
        "llama4": Llama4Model.self,
        "llama4_text": Llama4Model.self,
        "llava": LlamaModel.self,
        "llava_next": LlamaModel.self,
        "llava_next_video": LlamaModel.self,
        "llava_onevision": LlamaModel.self,
        "llava_onevision1_5": Qwen3Model.self,
        "longcat_flash": LongcatFlashModel.self,
        "mamba": MambaModel.self,
        "mamba2": Mamba2Model.self,
        "mellum": MellumModel.self,
        "mimo_v2_flash": MiMoV2FlashModel.self,
        "minicpm3": MiniCPM3Model.self,
        "minicpm_ocr": Qwen3_5Model.self,
        "minicpmv4_6": Qwen3_5Model.self,
        "minicpmv4_7": Qwen3_5Model.self,
        "minicpm5_moe": MiniCPM5MoeModel.self,
        "minimax": MiniMaxModel.self,
        "minimax_m2": MiniMaxM2Model.self,
        "minimax_m3_vl": MiniMaxM3Model.self,
        "minimax_m3_vl_text": MiniMaxM3Model.self,
        "ministral": LlamaModel.self,
        "ministral3": LlamaModel.self,
        "mistral": LlamaModel.self,
        "mistral3": LlamaModel.self,
        "mistral4": Mistral4Model.self,
        "mistral_large4": MistralLarge4Model.self,
        "mixtral": MixtralModel.self,
        "mllama": MllamaModel.self,
        "mllama_text_model": MllamaModel.self,
        "molmo2": Molmo2Model.self,
        "modernbert-decoder": ModernBertDecoderModel.self,
        "mpt": MptModel.self,
        "muse_glimmer": MuseModel.self,
        "muse_spark": MuseModel.self,
        "nanochat": NanoChatModel.self,
        "nemotron": NemotronModel.self,
        "nemotron_h": NemotronHModel.self,
        "nemotron_h_omni": NemotronHModel.self,
        "olmo": OlmoModel.self,
        "olmo2": Olmo2Model.self,
        "olmo3": Olmo3Model.self,
        "olmo_hybrid": OlmoHybridModel.self,
        "olmoe": OlmoeModel.self,
        "opt": OptModel.self,
        "ovis2": LlamaModel.self,
        "ovis2_5": Qwen3Model.self,
        "paddleocr_vl": InterleavedLlamaModel.self,
        "paligemma": GemmaModel.self,
        "param2moe": Glm4MoeModel.self,
        "perception_lm": LlamaModel.self,
        "persimmon": PersimmonModel.self,
        "phi": PhiModel.self,
        "phi3": Phi3Model.self,
        // Phi-4-multimodal: Phi-3's language model; its image and audio encoders leave text's embedding as it is.
        "phi4_multimodal": Phi3Model.self,
        "phimoe": PhiMoEModel.self,
        "qianfan_ocr": LlamaModel.self,
        "qwen2": LlamaModel.self,
        "qwen2_5_omni": LlamaModel.self,
        "qwen2_5_omni_thinker": LlamaModel.self,
        "qwen2_5_vl": LlamaModel.self,
        "qwen2_moe": Qwen2MoeModel.self,
        "qwen2_vl": LlamaModel.self,
        "qwen3": Qwen3Model.self,
        "qwen3_moe": Qwen3MoeModel.self,
        "qwen3_omni_moe": Qwen3MoeModel.self,
        "qwen3_omni_moe_thinker": Qwen3MoeModel.self,
        "qwen3_5": Qwen3_5Model.self,
        "qwen3_5_moe": Qwen3_5Model.self,
        "qwen3_5_moe_text": Qwen3_5Model.self,
        "qwen3_5_text": Qwen3_5Model.self,
        "qwen3_next": Qwen3NextModel.self,
        "qwen3_vl": Qwen3Model.self,
        "qwen3_vl_moe": Qwen3MoeModel.self,
        "qwen4_exp": Qwen4ExpModel.self,
        "qwen4_exp_text": Qwen4ExpModel.self,
        "recurrent_gemma": RecurrentGemmaModel.self,
        "rwkv": RwkvModel.self,
        "sarvam_mla": DeepSeekModel.self,
        "sarvam_moe": Glm4MoeModel.self,
        "seed_oss": SeedOssModel.self,
        "shieldgemma2": Gemma3Model.self,
        "smollm3": SmolLM3Model.self,
        "smolvlm": LlamaModel.self,
        "solar_open": SolarOpenModel.self,
        "stablelm": StableLMModel.self,
        "starcoder2": Starcoder2Model.self,
        "step3p7": Step3p7Model.self,
        "unlimited_ocr": DeepSeekModel.self,
        "vaultgemma": Gemma2Model.self,
        "video_llama_3": LlamaModel.self,
        "video_llava": LlamaModel.self,
        "vipllava": LlamaModel.self,
        "xglm": XglmModel.self,
        "youtu": DeepSeekModel.self,
        "zamba": ZambaModel.self,
        "zamba2": Zamba2Model.self,
        "zaya": ZayaModel.self,
    ]

    /// Every `model_type` droptrace reads, in the registry's order.
    public static var supportedModelTypes: [String] { families.map(\.key) }

    /// The model of `checkpoint`, by its config's `model_type`.
    /// - Throws: `DroptraceError` naming config.json for an unsupported
    ///   `model_type`, a value of a kind the family's transformers config
    ///   class refuses or a pad_token_id outside the vocabulary where its model
    ///   pads the embedding (`ConfigValueKinds`), a key every family's
    ///   forward pass reads that droptrace does not run (`ForwardPassKeys`),
    ///   or whatever the family's checks refuse.
    public static func load(_ checkpoint: Checkpoint) throws -> any LanguageModel {
        guard var family = families.first(where: { $0.key == checkpoint.modelType })?.value else {
            throw DroptraceError(
                "unsupported model_type \"\(checkpoint.modelType)\" (supported: \(supportedModelTypes.joined(separator: ", ")))",
                path: checkpoint.configURL.path)
        }
        // A LLaVA-style wrapper's language model is read by its text model type's family.
        let textType = try Llava.textModelType(checkpoint)
        if let textType, let textFamily = families.first(where: { $0.key == textType })?.value {
            family = textFamily
        }
        if checkpoint.gguf == nil {
            // Values of a kind transformers' config class refuses (null for
            // an int, 48.0 for a count, 0 for a flag) are refused as it refuses
            // them, and a pad_token_id its model's embedding cannot take.
            let document = checkpoint.configDocument
            try ConfigValueKinds.check(document, modelType: checkpoint.modelType, path: checkpoint.configURL.path, textModelType: textType)
            try ForwardPassKeys.check(
                document, path: checkpoint.configURL.path, familyReadsLayerTypes: family.readsLayerTypes(textType ?? checkpoint.modelType))
        }
        do {
            return try family.init(checkpoint)
        } catch let error as DroptraceError where error.path == checkpoint.configURL.path {
            throw checkpoint.namingKeysAsWritten(error)
        }
    }
}

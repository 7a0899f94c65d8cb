import CheckpointIO
import TensorEngine

/// Qwen's vision-language models, read as their language model (the vision
/// tower is never read: scoring runs on text):
/// - `qwen2_vl`, `qwen2_5_vl` (transformers' models/qwen2_vl/ and
///   qwen2_5_vl/: Qwen2-VL, Qwen2.5-VL): Qwen2's block (`LlamaModel`) with
///   Qwen2VLTextConfig's defaults (rope_theta 1e6, max_window_layers 80),
///   from `text_config` or, in configs that have none (as the releases
///   wrote them), from the top level's keys; weights under
///   `model.language_model.` or, as released, `model.` (beside `visual.`);
///   the head tied by the top-level or the text config's `tie_word_embeddings`;
/// - `qwen3_vl` (Qwen3-VL): Qwen3's block (`Qwen3Model`) without windows;
/// - `qwen3_vl_moe` (Qwen3-VL-MoE): Qwen3-MoE's (`Qwen3MoeModel`), its
///   router always renormalising, its fused experts stored as transformers
///   holds them or as released (`gate_up_proj` [experts, hidden, 2 · inner]).
/// Both Qwen3 wrappers read `text_config`, weights under
/// `model.language_model.`, the head tied by the top-level `tie_word_embeddings` alone.
/// - `cosmos3_omni` (NVIDIA's Cosmos3, Cosmos3OmniForConditionalGeneration:
///   Cosmos3-Nano) is Qwen3-VL whose config class builds `text_config` by
///   its model type (an AutoConfig, `qwen3_vl_text` by default, the one
///   droptrace reads: `Llava.wrappers`); its released unified checkpoints
///   name the language model's tensors without `model.language_model.` and
///   its attention's as Diffusers does (`to_q`, `to_out`, `norm_q`), which
///   transformers renames (`TensorRenamings`); their generation branches
///   (`add_q_proj`, `moe_gen`, …), which transformers ignores on load, are not read.
///
/// - `qwen2_5_omni` (Qwen2.5-Omni, Qwen2_5OmniForConditionalGeneration),
///   read as the language model of its thinker, which runs text: Qwen2's
///   block with Qwen2_5OmniTextConfig's defaults (rope_theta 1e6,
///   max_window_layers 28, sliding_window 32768) from
///   `thinker_config.text_config`, weights under
///   `thinker.model.language_model.`, as transformers renames the released
///   `thinker.model.` (`TensorRenamings`), the head `thinker.lm_head` tied by
///   `thinker_config.tie_word_embeddings` alone (default false: the thinker's
///   own config decides its tying; the top level's and the text config's
///   flags are not read); `qwen2_5_omni_thinker`, the thinker saved alone
///   (Qwen2_5OmniThinkerForConditionalGeneration), the same from
///   `text_config`, weights under `model.language_model.`, the head
///   `lm_head` tied by the top-level flag. Unlike Qwen2-VL's, its attention
///   sizes its heads by a written `head_dim`, and a rope type "mrope" is
///   not read as the default one (its rotary embedding has no such type).
///   The talker, the token-to-wave model and the audio and vision encoders
///   never run on text and are not read.
/// - `qwen3_omni_moe` (Qwen3-Omni, Qwen3OmniMoeForConditionalGeneration)
///   and `qwen3_omni_moe_thinker`, laid out as Qwen2.5-Omni's: the
///   thinker's language model, Qwen3OmniMoeThinkerTextModel, is
///   Qwen3-MoE's block (`Qwen3MoeModel`) with Qwen3OmniMoeTextConfig's
///   defaults (rope_theta 1e6, `norm_topk_prob` true), no window (its
///   attention sets none, whatever `sliding_window` says), the heads sized
///   by a written `head_dim`, else hidden_size / heads; its rotary
///   embedding interleaves the M-RoPE axes as Qwen3-VL's.
///
/// Text has the same position on the three M-RoPE axes, so the multimodal
/// rotary embedding rotates as the plain one; its `mrope_section` is only
/// checked (`DecoderParts.mropeRotary`).
enum QwenVL {
    /// The wrappers of Qwen2's block.
    static let qwen2Types: Set<String> = ["qwen2_vl", "qwen2_5_vl"]

    /// The wrappers of Qwen3-VL's dense language model (Qwen3's block).
    static let qwen3Types: Set<String> = ["qwen3_vl", "cosmos3_omni"]

    /// Qwen2VLTextConfig's `default_theta` (Qwen2_5OmniTextConfig's too).
    static let qwen2DefaultTheta = 1_000_000.0

    /// Qwen2.5-Omni whole and its thinker saved alone, read by Qwen2's block as its language model.
    static let qwen2_5OmniTypes: Set<String> = ["qwen2_5_omni", "qwen2_5_omni_thinker"]

    /// Qwen3-Omni whole and its thinker saved alone, read by Qwen3-MoE's block as its language model.
    static let qwen3OmniTypes: Set<String> = ["qwen3_omni_moe", "qwen3_omni_moe_thinker"]

    /// Where an omni checkpoint (Qwen2.5-Omni's, Qwen3-Omni's) keeps its
    /// thinker's language model (see the type's doc); `defaults` the keys
    /// its text config class has and the block's reading lacks.
    static func omniPlacement(_ checkpoint: Checkpoint, defaults: [String: ConfigDefault] = [:]) -> TextModelPlacement {
        let whole = !checkpoint.modelType.hasSuffix("_thinker")
        let section = whole ? "thinker_config.text_config" : "text_config"
        let textDefaults = ConfigValueKinds.omittedDefaultValues(of: checkpoint.modelType + "." + section)
            .merging(defaults, uniquingKeysWith: { $1 })
        // The thinker's own tie_word_embeddings (default false; its kind is checked with its class's)
        // decides: the thinker (…ThinkerForConditionalGeneration) ties by its config's flag.
        let thinker = whole ? checkpoint.configDocument.member("thinker_config") : checkpoint.configDocument
        var tied = false
        if case .bool(let flag)? = thinker?.member("tie_word_embeddings") { tied = flag }
        return TextModelPlacement(
            section: ConfigSection(section, defaults: textDefaults), headNames: whole ? ["thinker.lm_head"] : ["lm_head"],
            prefixes: whole ? ["thinker.model.language_model."] : TextModelPlacement.withLegacyNames(["model.language_model."]),
            tiedEmbeddings: tied)
    }

    /// Refuses a Qwen3-Omni config (`qwen3_omni_moe`) whose talker, which
    /// transformers builds on load unless `enable_audio_output` is false,
    /// lacks a key its config classes have no default for and its modules
    /// read: `talker_config.spatial_merge_size`,
    /// `talker_config.text_config.shared_expert_intermediate_size` (the
    /// released configs write both). The talker never runs on text, but an
    /// export of such a checkpoint would not load.
    static func checkQwen3OmniTalker(_ checkpoint: Checkpoint, configPath: String) throws {
        guard checkpoint.modelType == "qwen3_omni_moe" else { return }
        let document = checkpoint.configDocument
        if case .bool(false)? = document.member("enable_audio_output") { return }
        let talker = document.member("talker_config")
        let required = [
            ("talker_config.spatial_merge_size", talker?.member("spatial_merge_size")),
            ("talker_config.text_config.shared_expert_intermediate_size", talker?.member("text_config")?.member("shared_expert_intermediate_size")),
        ]
        for (key, value) in required where value == nil {
            throw InvalidConfigValue(
                key: key,
                problem: "is absent, but Qwen3OmniMoeForConditionalGeneration builds its talker, which reads it, whenever "
                    + "enable_audio_output is not false (its config class has no default)")
            .error(path: configPath)
        }
    }

    /// Where a Qwen vision-language checkpoint keeps its language model,
    /// whose config class gives the keys it omits its defaults (and `defaults`).
    static func placement(_ checkpoint: Checkpoint, defaults: [String: ConfigDefault] = [:]) throws -> TextModelPlacement {
        if checkpoint.modelType == "cosmos3_omni" {
            // Cosmos3OmniConfig builds its text config by model type (an AutoConfig): Qwen3-VL's own text config class.
            var placement = try Llava.placement(checkpoint)
            placement.section.defaults.merge(
                ConfigValueKinds.omittedDefaultValues(of: "qwen3_vl.text_config").merging(defaults, uniquingKeysWith: { $1 }),
                uniquingKeysWith: { current, _ in current })
            return placement
        }
        let readsQwen2 = qwen2Types.contains(checkpoint.modelType)
        let prefixes = readsQwen2 ? ["model.language_model.", "model."] : ["model.language_model."]
        // Qwen2VLConfig also ties when its text config says so (as 4.x saved it there).
        var placement = try TextModelPlacement.ownTextConfig(checkpoint, defaults: defaults, prefixes: prefixes, textTiesToo: readsQwen2)
        // Qwen3VLTextConfig's head_dim sizes the heads; the others fall back on hidden_size / heads.
        if checkpoint.modelType != "qwen3_vl" { placement.readZeroHeadDimAsNone(checkpoint) }
        if readsQwen2, checkpoint.document(of: placement.section) == nil {
            // Qwen2VLConfig builds its text config from the top level's keys
            // when there is no text_config; head_dim is not one of them.
            placement.section = ConfigSection(defaults: placement.section.defaults, overrides: ["head_dim": .null])
        }
        return placement
    }

    /// Refuses a null `max_window_layers` where Qwen2VLTextConfig compares
    /// each layer's index with it: a window on (`use_sliding_window`,
    /// `sliding_window`) and no `layer_types`.
    static func checkWindowLayers(_ parts: DecoderParts, _ config: LlamaConfiguration) throws {
        guard config.useSlidingWindow == true, config.slidingWindow != nil, config.layerTypes == nil, config.maxWindowLayers == nil
        else { return }
        try parts.checks {
            throw InvalidConfigValue(
                key: "max_window_layers",
                problem: "is null, which Qwen2VLTextConfig compares with each layer's index when use_sliding_window is set "
                    + "and layer_types is not given")
        }
    }

    /// Refuses a null `text_config.layer_types`: Qwen3VLTextConfig and
    /// Qwen3VLMoeTextConfig have no such key to default it, and each decoder
    /// layer indexes the one the config carries (`config.layer_types[layer_idx]`).
    /// A list is checked as every family's (`DecoderDimensions`); its entries
    /// do not change the forward pass.
    static func checkIndexedLayerTypes(_ parts: DecoderParts) throws {
        guard case .null? = parts.sectionDocument?.member("layer_types") else { return }
        try parts.checks {
            throw InvalidConfigValue(key: "layer_types", problem: "is null, which Qwen3-VL's decoder layers index: list the layers or leave it out")
        }
    }

    /// Qwen2-VL's: the head's frequencies split by `mrope_section`, rope type "mrope" the default one
    /// (`readsMropeType`; Qwen2.5-Omni's text config does not read it so).
    static func qwen2Rotary(_ parts: DecoderParts, readsMropeType: Bool = true) throws -> RotaryEmbedding {
        try parts.mropeRotary(defaultSection: [16, 24, 24], defaultTheta: qwen2DefaultTheta, readsMropeType: readsMropeType)
    }

    /// Qwen3-VL's (and Qwen3-VL-MoE's): items 1 and 2 of `mrope_section` count interleaved columns.
    static func qwen3Rotary(_ parts: DecoderParts) throws -> RotaryEmbedding {
        try parts.mropeRotary(interleavedBy: "Qwen3VLTextRotaryEmbedding", defaultSection: [24, 20, 20], defaultTheta: 500_000)
    }

    /// Qwen3-Omni's thinker's: Qwen3-VL's interleaving, base 1e6 (Qwen3OmniMoeTextConfig's `default_theta`).
    static func qwen3OmniRotary(_ parts: DecoderParts) throws -> RotaryEmbedding {
        try parts.mropeRotary(
            interleavedBy: "Qwen3OmniMoeThinkerTextRotaryEmbedding", defaultSection: [24, 20, 20], defaultTheta: 1_000_000)
    }
}

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
///
/// Text has the same position on the three M-RoPE axes, so the multimodal
/// rotary embedding rotates as the plain one; its `mrope_section` is only
/// checked (`DecoderParts.mropeRotary`).
enum QwenVL {
    /// The wrappers of Qwen2's block.
    static let qwen2Types: Set<String> = ["qwen2_vl", "qwen2_5_vl"]

    /// Qwen2VLTextConfig's `default_theta` (Qwen2_5OmniTextConfig's too).
    static let qwen2DefaultTheta = 1_000_000.0

    /// Qwen2.5-Omni whole and its thinker saved alone, read by Qwen2's block as its language model.
    static let omniTypes: Set<String> = ["qwen2_5_omni", "qwen2_5_omni_thinker"]

    /// Where a Qwen2.5-Omni checkpoint keeps its thinker's language model (see the type's doc).
    static func omniPlacement(_ checkpoint: Checkpoint) -> TextModelPlacement {
        let whole = checkpoint.modelType == "qwen2_5_omni"
        let section = whole ? "thinker_config.text_config" : "text_config"
        // Qwen2_5OmniTextConfig's defaults that LlamaConfiguration's for qwen2 lack.
        let defaults = ConfigValueKinds.omittedDefaultValues(of: checkpoint.modelType + "." + section)
            .merging(["model_type": "qwen2", "max_window_layers": 28, "sliding_window": 32768], uniquingKeysWith: { $1 })
        // The thinker's own tie_word_embeddings (Qwen2_5OmniThinkerConfig's, default false; its kind is checked
        // with its class's) decides: Qwen2_5OmniThinkerForConditionalGeneration ties by its config's flag.
        let thinker = whole ? checkpoint.configDocument.member("thinker_config") : checkpoint.configDocument
        var tied = false
        if case .bool(let flag)? = thinker?.member("tie_word_embeddings") { tied = flag }
        return TextModelPlacement(
            section: ConfigSection(section, defaults: defaults), headNames: whole ? ["thinker.lm_head"] : ["lm_head"],
            prefixes: whole ? ["thinker.model.language_model."] : TextModelPlacement.withLegacyNames(["model.language_model."]),
            tiedEmbeddings: tied)
    }

    /// Where a Qwen vision-language checkpoint keeps its language model,
    /// whose config class gives the keys it omits its defaults (and `defaults`).
    static func placement(_ checkpoint: Checkpoint, defaults: [String: ConfigDefault] = [:]) throws -> TextModelPlacement {
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
}

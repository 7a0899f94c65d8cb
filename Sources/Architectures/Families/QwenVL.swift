import CheckpointIO
import DroptraceSupport
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
/// Text has the same position on the three M-RoPE axes, so the multimodal
/// rotary embedding rotates as the plain one; its `mrope_section` is only
/// checked (`MropeSection`).
enum QwenVL {
    /// The wrappers of Qwen2's block.
    static let qwen2Types: Set<String> = ["qwen2_vl", "qwen2_5_vl"]

    /// Qwen2VLTextConfig's `default_theta`.
    static let qwen2DefaultTheta = 1_000_000.0

    /// Where a Qwen vision-language checkpoint keeps its language model,
    /// whose config class gives the keys it omits its defaults (and `defaults`).
    static func placement(_ checkpoint: Checkpoint, defaults: [String: ConfigDefault] = [:]) throws -> TextModelPlacement {
        let keys = try checkpoint.decodeConfig(Keys.self)
        let textDefaults = ConfigValueKinds.omittedDefaultValues(of: checkpoint.modelType + ".text_config")
            .merging(defaults, uniquingKeysWith: { $1 })
        let readsQwen2 = qwen2Types.contains(checkpoint.modelType)
        let prefixes = readsQwen2 ? ["model.language_model.", "model."] : ["model.language_model."]
        let topTied = keys.tieWordEmbeddings ?? false
        guard keys.textConfig != nil || !readsQwen2 else {
            // Qwen2VLConfig builds its text config from the top level's keys
            // when there is no text_config; head_dim is not one of them.
            return TextModelPlacement(
                section: ConfigSection(defaults: textDefaults, overrides: ["head_dim": .null]), headName: "lm_head",
                prefixes: prefixes, tiedEmbeddings: topTied)
        }
        // Qwen2VLConfig also ties when its text config says so (as 4.x saved it there).
        let tied = topTied || (readsQwen2 && keys.textConfig?.tieWordEmbeddings == true)
        return .wrapped(textDefaults: textDefaults, prefixes: prefixes, headName: "lm_head", tiedEmbeddings: tied)
    }

    /// The rotary embedding of a Qwen vision-language model: rope
    /// parameters from a truthy `rope_scaling`, else `rope_parameters`, base
    /// `defaultTheta` when they name none; Qwen2-VL's (`.split`) read rope
    /// type "mrope" as the default one (`Qwen2VLTextConfig.convert_rope_params_to_dict`).
    /// Their `mrope_section` (`defaultSection` when absent) is checked by `rule`.
    static func rotary(
        _ parts: DecoderParts, rule: MropeSection, defaultSection: [Int], defaultTheta: Double
    ) throws -> RotaryEmbedding {
        try parts.confirmAttentionProjections()
        var (settings, key, _) = try parts.ropeSettings(defaults: [:])
        if case .split = rule, settings.type == "mrope" { settings.type = "default" }
        try parts.checks {
            try rule.check(
                parts.sectionDocument?.member(key)?.member("mrope_section"), defaultSection: defaultSection, key: key + ".mrope_section")
        }
        return try parts.rotary(defaultTheta: defaultTheta, confirmProjections: false, settings: settings)
    }

    /// Qwen2-VL's: the head's frequencies split by `mrope_section`.
    static func qwen2Rotary(_ parts: DecoderParts) throws -> RotaryEmbedding {
        try rotary(
            parts, rule: .split(halfWidth: (parts.dimensions.resolvedHeadDim + 1) / 2), defaultSection: [16, 24, 24],
            defaultTheta: qwen2DefaultTheta)
    }

    /// Qwen3-VL's (and Qwen3-VL-MoE's): items 1 and 2 of `mrope_section` count interleaved columns.
    static func qwen3Rotary(_ parts: DecoderParts) throws -> RotaryEmbedding {
        try rotary(
            parts, rule: .interleaved(className: "Qwen3VLTextRotaryEmbedding"), defaultSection: [24, 20, 20], defaultTheta: 500_000)
    }

    /// The wrapper's keys that place and tie its language model.
    private struct Keys: Decodable {
        struct Text: Decodable {
            var tieWordEmbeddings: Bool?
            enum CodingKeys: String, CodingKey { case tieWordEmbeddings = "tie_word_embeddings" }
        }

        var textConfig: Text?
        var tieWordEmbeddings: Bool?

        enum CodingKeys: String, CodingKey {
            case textConfig = "text_config"
            case tieWordEmbeddings = "tie_word_embeddings"
        }
    }
}

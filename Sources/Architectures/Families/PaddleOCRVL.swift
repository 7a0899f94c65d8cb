import CheckpointIO
import TensorEngine

/// PaddleOCR-VL (`paddleocr_vl`, transformers' models/paddleocr_vl/:
/// PaddleOCRVLForConditionalGeneration) read as its language model,
/// PaddleOCRTextModel: ERNIE 4.5's block (`InterleavedLlamaModel`: biases
/// on every projection by `use_bias`, head_dim 128 unless given, base 500000
/// unless given) whose M-RoPE rotates each head's halves. The vision tower
/// and projector are never read: scoring runs on text, where
/// PaddleOCRVLModel computes no 3-D positions (no image grid) and the text
/// model takes positions 0, 1, … on all three axes, so the multimodal
/// rotary embedding rotates as the plain one; its `mrope_section` (default
/// [16, 24, 24]) is only checked (`DecoderParts.mropeRotary`).
enum PaddleOCRVL {
    /// Where the language model is: `text_config` (PaddleOCRTextConfig), or,
    /// in configs without one (as the release writes them), the top level,
    /// whose text keys PaddleOCRVLConfig moves into its text config; weights
    /// under `model.language_model.` or, as released and as transformers
    /// saves them, `model.` (beside `visual.` and `mlp_AR.`). The head is tied
    /// unless both the top-level and the text config's
    /// `tie_word_embeddings` are false, each true where absent:
    /// PaddleOCRVLConfig forwards a true text flag over a false top-level
    /// one, so a config without text_config (whose text config then takes
    /// the class's true) always ties.
    static func placement(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        var placement = try TextModelPlacement.ownTextConfig(
            checkpoint, defaults: ["model_type": "paddleocr_vl_text"], prefixes: ["model.language_model.", "model."], textTiesToo: true)
        let keys = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
        placement.tiedEmbeddings = (keys.tieWordEmbeddings ?? true) || (keys.textConfig?.tieWordEmbeddings ?? true)
        if checkpoint.document(of: placement.section) == nil {
            placement.section = ConfigSection(defaults: placement.section.defaults)
        }
        return placement
    }

    /// PaddleOCRRotaryEmbedding: the head's frequencies split by
    /// `mrope_section` ([16, 24, 24] when absent), base 500000 unless given;
    /// rope type "mrope" is no type of its (transformers fails on it).
    static func rotary(_ parts: DecoderParts) throws -> RotaryEmbedding {
        try parts.mropeRotary(defaultSection: [16, 24, 24], defaultTheta: 500_000)
    }
}

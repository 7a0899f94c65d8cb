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
    /// Where the language model is: `text_config` (PaddleOCRTextConfig) or
    /// the top level, weights beside `visual.` and `mlp_AR.`
    /// (`TextModelPlacement.textConfigOrTopLevel`).
    static func placement(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        try .textConfigOrTopLevel(checkpoint, textModelType: "paddleocr_vl_text")
    }

    /// PaddleOCRRotaryEmbedding: the head's frequencies split by
    /// `mrope_section` ([16, 24, 24] when absent), base 500000 unless given;
    /// rope type "mrope" is no type of its (transformers fails on it).
    static func rotary(_ parts: DecoderParts) throws -> RotaryEmbedding {
        try parts.mropeRotary(defaultSection: [16, 24, 24], defaultTheta: 500_000)
    }
}

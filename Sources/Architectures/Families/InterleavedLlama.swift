import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `ernie4_5` (Ernie4_5Config), `helium` (HeliumConfig)
/// and PaddleOCR-VL's text config (PaddleOCRTextConfig, read as `paddleocr_vl`).
struct InterleavedLlamaConfiguration: Decodable {
    var modelType: String
    var rmsNormEps: Double
    var hiddenAct: String
    /// ERNIE (and PaddleOCR-VL): biases on every projection (null: none).
    var useBias: Bool?
    /// Helium: biases on q/k/v_proj, and on the MLP's projections.
    var attentionBias: Bool?
    var mlpBias: Bool?

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case useBias = "use_bias"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decode(String.self, forKey: .modelType)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        useBias = try c.decodeIfPresent(Bool.self, forKey: .useBias)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias)
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias)
    }

    /// The biases each class builds from its own keys (the other family's
    /// are not read); ERNIE 4.5's mixture-of-experts models and the language
    /// models of ERNIE 4.5 VL and PaddleOCR-VL read ERNIE's.
    var biases: (qkv: Bool, output: Bool, mlp: Bool) {
        if ["ernie4_5", "ernie4_5_moe", "ernie4_5_vl_moe", "paddleocr_vl"].contains(modelType) {
            let all = useBias == true
            return (all, all, all)
        }
        return (attentionBias == true, false, mlpBias == true)
    }
}

/// ERNIE 4.5 (dense, e.g. ERNIE-4.5-0.3B) and Helium (kyutai/helium-1):
/// Llama's pre-RMSNorm blocks and SwiGLU MLP with rotary on interleaved
/// pairs (dimensions 2i, 2i + 1) of each head, `head_dim` 128 unless given.
/// - ernie4_5: `use_bias` on every projection, rotary base 500000 unless
///   given, head tied to the embedding by default;
/// - helium: q/k/v biases by `attention_bias` (none on o_proj, which takes
///   hidden_size inputs: heads are hidden_size / num_attention_heads wide),
///   MLP biases by `mlp_bias`, base 100000 unless given, untied by default;
/// - paddleocr_vl (PaddleOCR-VL's language model, `PaddleOCRVL`): ERNIE's
///   block (PaddleOCRTextModel) rotating each head's halves (rotate_half),
///   not its interleaved pairs, by M-RoPE, which on text is the plain rotation.
struct InterleavedLlamaModel: DecoderFamily {
    let parts: DecoderParts
    let config: InterleavedLlamaConfiguration
    let rotary: RotaryEmbedding
    /// Whether the rotary embedding rotates interleaved pairs (false: halves, PaddleOCR-VL).
    let interleavedRotary: Bool

    init(_ checkpoint: Checkpoint) throws {
        if checkpoint.modelType == "paddleocr_vl" {
            parts = try DecoderParts(checkpoint, placement: try PaddleOCRVL.placement(checkpoint), naming: LlamaModel.naming)
            var config = try parts.config(InterleavedLlamaConfiguration.self)
            // PaddleOCRVLConfig builds PaddleOCRTextConfig whatever model_type its text_config names.
            config.modelType = checkpoint.modelType
            self.config = config
            rotary = try PaddleOCRVL.rotary(parts)
            interleavedRotary = false
            return
        }
        let ernie = checkpoint.modelType == "ernie4_5"
        parts = try DecoderParts(
            checkpoint, naming: LlamaModel.naming)
        if !ernie {
            try parts.confirmHeadDimIsHiddenOverHeads(": HeliumAttention's o_proj takes hidden_size inputs, so its heads are")
        }
        config = try parts.config(InterleavedLlamaConfiguration.self)
        rotary = try parts.rotary(defaultTheta: ernie ? 500_000 : 100_000)
        interleavedRotary = true
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index).", biases = config.biases
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try Self.attention(parts, layer: index, config: config, rotary: rotary, interleaved: interleavedRotary) },
            feedForward: {
                try parts.weights.gatedMLP(
                    p + "mlp.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.hiddenAct), bias: biases.mlp)
            })
    }

    /// Layer `index`'s attention as ERNIE 4.5 (dense and mixture-of-experts),
    /// Helium and PaddleOCR-VL build it: q/k/v/o projections biased as
    /// `config.biases` says, rotary on interleaved pairs (`interleaved`,
    /// else on halves), scale head_dim^-1/2.
    static func attention(
        _ parts: DecoderParts, layer index: Int, config: InterleavedLlamaConfiguration, rotary: RotaryEmbedding,
        interleaved: Bool = true
    ) throws -> SelfAttention {
        let biases = config.biases
        return try parts.attention(
            "layers.\(index).self_attn.", bias: biases.qkv, outputBias: biases.output, rotary: rotary, interleavedRotary: interleaved)
    }
}

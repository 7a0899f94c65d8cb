import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `ernie4_5` (Ernie4_5Config).
struct Ernie45Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on every projection, q/k/v/o and the MLP's (null: none).
    var useBias: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case useBias = "use_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        useBias = try c.decodeIfPresent(Bool.self, forKey: .useBias) ?? false
    }
}

/// ERNIE 4.5 (dense, e.g. ERNIE-4.5-0.3B): Llama's pre-RMSNorm blocks and
/// SwiGLU MLP, rotary on interleaved pairs (dimensions 2i, 2i + 1) of each
/// head, base 500000 unless given, `use_bias` on every projection,
/// `head_dim` 128 unless given, head tied to the embedding by default.
struct Ernie45Model: DecoderFamily {
    let parts: DecoderParts
    let config: Ernie45Configuration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(
            checkpoint, section: ConfigSection(defaults: ["head_dim": 128]), tiedByDefault: true, naming: LlamaModel.naming)
        config = try parts.config(Ernie45Configuration.self)
        rotary = try parts.rotary(defaultTheta: 500_000)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index)."
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try parts.attention(p + "self_attn.", bias: config.useBias, rotary: rotary, interleavedRotary: true) },
            feedForward: {
                try parts.weights.gatedMLP(
                    p + "mlp.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.hiddenAct), bias: config.useBias)
            })
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `starcoder2`, with Starcoder2Config's defaults.
struct Starcoder2Configuration: Decodable {
    /// The LayerNorms' epsilon (`norm_epsilon`, not `rms_norm_eps`).
    var normEpsilon: Double
    var hiddenAct: String
    /// Biases on every projection: q/k/v/o_proj, c_fc and c_proj.
    var useBias: Bool
    /// Every layer attends within this many tokens when set.
    var slidingWindow: Int?

    enum CodingKeys: String, CodingKey {
        case normEpsilon = "norm_epsilon"
        case hiddenAct = "hidden_act"
        case useBias = "use_bias"
        case slidingWindow = "sliding_window"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        normEpsilon = try c.decodeIfPresent(Double.self, forKey: .normEpsilon) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "gelu_pytorch_tanh"
        useBias = try c.decodeIfPresent(Bool.self, forKey: .useBias) ?? true
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        let normEpsilon = normEpsilon, slidingWindow = slidingWindow
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(normEpsilon, "norm_epsilon")
            try ConfigRules.countIfPresent(slidingWindow, "sliding_window")
        }
    }
}

/// StarCoder2: pre-LayerNorm blocks (weight and bias, `norm_epsilon`),
/// rotary grouped-query attention with biases on q/k/v/o when `use_bias`,
/// a plain MLP `c_proj(act(c_fc x))` (GELU-tanh by default), and a sliding
/// window on every layer when `sliding_window` is set; the head is tied to
/// the embedding unless config.json says otherwise.
struct Starcoder2Model: DecoderFamily {
    let parts: DecoderParts
    let config: Starcoder2Configuration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Starcoder2Config ties the head by default (StarCoder2-3B/7B/15B store none).
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming)
        config = try parts.config(Starcoder2Configuration.self)
        rotary = try parts.rotary()
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.layerNorm("norm", size: hiddenSize, eps: config.normEpsilon))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, inner = parts.dimensions.intermediateSize, eps = config.normEpsilon
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: config.useBias, rotary: rotary, slidingWindow: config.slidingWindow) }
        func feedForward() throws -> FeedForward { .plain(
            up: try weights.linear(p + "mlp.c_fc", in: d, out: inner, bias: config.useBias),
            down: try weights.linear(p + "mlp.c_proj", in: inner, out: d, bias: config.useBias),
            activation: try parts.activation(config.hiddenAct)) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil
                : AttentionBranch(inputNorm: try weights.layerNorm(p + "input_layernorm", size: d, eps: eps), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil
                : MLPBranch(inputNorm: try weights.layerNorm(p + "post_attention_layernorm", size: d, eps: eps), feedForward: try feedForward()),
            residual: .sequential)
    }
}

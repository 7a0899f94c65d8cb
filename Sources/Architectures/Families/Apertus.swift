import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `apertus`.
struct ApertusConfiguration: Decodable {
    /// transformers' rotary settings when config.json has neither
    /// `rope_parameters` nor `rope_scaling` (it then ignores `rope_theta`).
    static let defaultRope = #"""
        {"rope_parameters": {"rope_type": "llama3", "rope_theta": 12000000.0, "factor": 8.0,
         "original_max_position_embeddings": 8192, "low_freq_factor": 1.0, "high_freq_factor": 4.0}}
        """#
    /// transformers' rotary base when the rope settings name none.
    static let defaultTheta = 12_000_000.0

    var rmsNormEps: Double
    var hiddenAct: String?
    var attentionBias: Bool?
    /// config.json holds `rope_parameters` or `rope_scaling` (not null).
    var namesRope: Bool
    /// A top-level fraction, which transformers adds to the default rotary
    /// settings (where it keeps their base over a top-level `rope_theta`).
    var partialRotaryFactor: Double?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case ropeParameters = "rope_parameters"
        case ropeScaling = "rope_scaling"
        case partialRotaryFactor = "partial_rotary_factor"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias)
        namesRope = try [CodingKeys.ropeParameters, .ropeScaling].contains { try c.contains($0) && !c.decodeNil(forKey: $0) }
        partialRotaryFactor = try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor)
    }
}

/// Apertus: pre-RMSNorm blocks (`attention_layernorm`,
/// `feedforward_layernorm`), rotary attention with RMSNorm over each query
/// and key head (`q_norm` / `k_norm`, [head_dim]), and a non-gated MLP
/// down(act(up(x))) whose activation is xIELU with each layer's learned
/// parameters (`mlp.act_fn.alpha_p`, `alpha_n`, `beta`, `eps`).
struct ApertusModel: DecoderFamily {
    let parts: DecoderParts
    let config: ApertusConfiguration
    let rotary: RotaryEmbedding
    /// config.json's `hidden_act` when it is not xIELU (then a plain function).
    let namedActivation: Activation?

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint) { prefix in
            LayerNaming(
                prefix: prefix + "layers.", attention: ["self_attn.", "attention_layernorm."],
                mlp: ["mlp.", "feedforward_layernorm."], layerCountKeys: ["num_hidden_layers"])
        }
        config = try parts.config(ApertusConfiguration.self)
        var defaults = config.namesRope
            ? nil : try JSONDecoder().decode(RopeSettings.self, from: Data(ApertusConfiguration.defaultRope.utf8))
        defaults?.partialRotaryFactor = config.partialRotaryFactor
        rotary = try parts.rotary(defaultTheta: ApertusConfiguration.defaultTheta, settings: defaults)
        let act = config.hiddenAct ?? "xielu"
        namedActivation = act == "xielu" ? nil : try parts.activation(act)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    /// Layer `p`'s xIELU from its stored parameters.
    private func xIELU(_ p: String) throws -> Activation {
        let weights = parts.weights
        return .xIELU(XIELU(
            alphaP: try weights.floats(p + "mlp.act_fn.alpha_p", [1])[0],
            alphaN: try weights.floats(p + "mlp.act_fn.alpha_n", [1])[0],
            beta: try weights.floats(p + "mlp.act_fn.beta", [])[0],
            eps: try weights.floats(p + "mlp.act_fn.eps", [])[0]))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, layout = parts.attentionLayout, eps = config.rmsNormEps
        let bias = config.attentionBias == true
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: bias, rotary: rotary,
            queryKeyNorm: .perHead(
                query: try weights.rmsNorm(p + "self_attn.q_norm", size: layout.headDim, eps: eps),
                key: try weights.rmsNorm(p + "self_attn.k_norm", size: layout.headDim, eps: eps))) }
        func feedForward() throws -> FeedForward {
            let inner = parts.dimensions.intermediateSize
            return .plain(
                up: try weights.linear(p + "mlp.up_proj", in: d, out: inner, bias: false),
                down: try weights.linear(p + "mlp.down_proj", in: inner, out: d, bias: false),
                activation: try namedActivation ?? xIELU(p))
        }
        return try parts.preNormBlock(
            index, drops: drops, eps: eps, norms: ("attention_layernorm", "feedforward_layernorm"), attention: attention,
            feedForward: feedForward)
    }
}

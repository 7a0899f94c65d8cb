import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `hunyuan_v1_dense`, with HunYuanDenseV1Config's defaults
/// (transformers' `models/hunyuan_v1_dense/configuration_hunyuan_v1_dense.py`).
struct HunYuanDenseV1Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v_proj and o_proj alike (the MLP never has any).
    var attentionBias: Bool
    /// The rope settings' `alpha` (`rope_parameters` or 4.x `rope_scaling`)
    /// when it is given and not 0, and the key it was read from.
    var ropeAlpha: (value: Double, key: String)?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case ropeParameters = "rope_parameters"
        case ropeScaling = "rope_scaling"
    }

    enum RopeKeys: String, CodingKey {
        case alpha
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        // (RopeSettings refuses a config holding both.)
        for section in [CodingKeys.ropeParameters, .ropeScaling] where c.contains(section) {
            guard try !c.decodeNil(forKey: section) else { continue }
            let rope = try c.nestedContainer(keyedBy: RopeKeys.self, forKey: section)
            // transformers tests `rope_parameters.get("alpha")`: null and 0 are no alpha.
            if let alpha = try rope.decodeIfPresent(Double.self, forKey: .alpha), alpha != 0 {
                ropeAlpha = (alpha, "\(section.rawValue).alpha")
            }
        }
        let ropeAlpha = ropeAlpha
        try ConfigRules.decodingChecks {
            // A negative alpha raised to head_dim / (head_dim − 2) gives complex frequencies.
            if let ropeAlpha { try ConfigRules.positive(ropeAlpha.value, ropeAlpha.key) }
        }
    }
}

/// Hunyuan dense (tencent/Hunyuan-7B and its smaller siblings), as
/// transformers' `models/hunyuan_v1_dense/modeling_hunyuan_v1_dense.py` runs
/// it: Llama's pre-RMSNorm blocks and SwiGLU MLP (no biases), q/k/v/o
/// biases by `attention_bias`, and an RMSNorm over each head's head_dim
/// columns of the queries and of the keys (`query_layernorm`,
/// `key_layernorm`, weights [head_dim]) applied after rotary, not before.
/// The rope type `dynamic` with an `alpha` is HunYuan's NTK-alpha rotation:
/// the default rotation with base rope_theta · alpha^(head_dim / (head_dim − 2)).
/// Untied head by default; `head_dim` must be given (the model reads it as
/// the head width). Also HunYuanVL's language model (`HunYuanVL`).
struct HunYuanDenseV1Model: DecoderFamily {
    let parts: DecoderParts
    let config: HunYuanDenseV1Configuration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        if checkpoint.modelType == "hunyuan_vl" {
            parts = try DecoderParts(checkpoint, placement: try HunYuanVL.placement(checkpoint), naming: LlamaModel.naming)
            config = try parts.config(HunYuanDenseV1Configuration.self)
            rotary = try HunYuanVL.rotary(parts, config)
            return
        }
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming)
        config = try parts.config(HunYuanDenseV1Configuration.self)
        rotary = try Self.rotary(parts, config)
    }

    /// HunYuan's rotary table: the rope settings (`settings`, else the
    /// section's), with the type `dynamic` and an `alpha` read as the
    /// default rotation with base rope_theta · alpha^(head_dim / (head_dim − 2))
    /// (HunYuan MoE's and HunYuanVL's too).
    static func rotary(_ parts: DecoderParts, _ config: HunYuanDenseV1Configuration, settings: RopeSettings? = nil) throws -> RotaryEmbedding {
        var rope = try settings ?? parts.ropeSettings()
        if rope.type == "dynamic", let alpha = config.ropeAlpha {
            // HunYuanDenseV1RotaryEmbedding's compute_ntk_alpha_rope_parameters; "dynamic"
            // still asks transformers for a factor, which `rotary` checks.
            let headDim = Double(parts.dimensions.resolvedHeadDim)
            guard headDim > 2 else {
                throw DroptraceError(
                    "\(alpha.key) stretches the rope base by alpha^(head_dim / (head_dim - 2)), which a head_dim of \(Int(headDim)) divides by zero or below",
                    path: parts.configPath)
            }
            let base = rope.theta * pow(alpha.value, headDim / (headDim - 2))
            guard base.isFinite, Float(base).isFinite else {
                throw DroptraceError(
                    "\(alpha.key) \(alpha.value) stretches the rope base to \(base), beyond float32", path: parts.configPath)
            }
            rope.theta = base
            rope.thetaIsExplicit = true
        }
        return try parts.rotary(settings: rope)
    }

    /// Layer `index`'s attention: q/k/v/o biases by `attention_bias`, the
    /// per-head `query_layernorm` / `key_layernorm` after rotary (HunYuan MoE's too).
    static func attention(
        _ parts: DecoderParts, _ config: HunYuanDenseV1Configuration, rotary: RotaryEmbedding, layer index: Int
    ) throws -> SelfAttention {
        let weights = parts.weights, headDim = parts.attentionLayout.headDim, eps = config.rmsNormEps
        let p = "layers.\(index).self_attn."
        return try parts.attention(
            p, bias: config.attentionBias, rotary: rotary,
            queryKeyNorm: .perHead(
                query: try weights.rmsNorm(p + "query_layernorm", size: headDim, eps: eps),
                key: try weights.rmsNorm(p + "key_layernorm", size: headDim, eps: eps)),
            queryKeyNormAfterRotary: true)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try Self.attention(parts, config, rotary: rotary, layer: index) },
            feedForward: {
                try parts.weights.gatedMLP(
                    "layers.\(index).mlp.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.hiddenAct))
            })
    }
}

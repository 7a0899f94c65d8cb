import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `olmo2` (OLMo-2).
struct Olmo2Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    var attentionBias: Bool?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
    }
}

/// OLMo-2: the norms sit at the end of each branch, inside the residual
/// (post-norm):
///
///     H = X + RMSNorm(Attn(X)),   Y = H + RMSNorm(MLP(H))
///
/// (`post_attention_layernorm`, `post_feedforward_layernorm`; nothing
/// normalises a branch's input). The attention also RMS-normalises the whole
/// query and the whole key projection (all heads together) before rotary.
/// Importance is still measured on the residual stream, X against H and H
/// against Y.
struct Olmo2Model: DecoderFamily {
    let parts: DecoderParts
    let config: Olmo2Configuration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint) { Self.naming($0) }
        config = try parts.config(Olmo2Configuration.self)
        rotary = try parts.rotary()
    }

    /// The post-norm layer naming, shared with OLMo-3 (whose exports spell
    /// out `layerTypes`).
    static func naming(_ prefix: String, layerTypes: [String]? = nil) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "post_attention_layernorm."],
            mlp: ["mlp.", "post_feedforward_layernorm."], layerCountKeys: ["num_hidden_layers"], layerTypes: layerTypes)
    }

    func head() throws -> OutputHead { try Self.head(parts, config) }

    static func head(_ parts: DecoderParts, _ config: Olmo2Configuration) throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: parts.dimensions.hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try Self.block(index, skipping: plan, parts: parts, config: config, rotary: rotary)
    }

    /// Block `index` of the post-norm layout, rotating with `rotary` (nil:
    /// a NoPE layer) and attending within `slidingWindow` tokens when given
    /// (OLMo-3 and EXAONE 4 decide both per layer; OLMo-2 has one rotary and
    /// no windows). `perHeadQueryKeyNorm`: the q/k RMSNorms act on each head
    /// (weights [head_dim], EXAONE 4), not across all heads. `mlp` builds
    /// the MLP when it is not the dense SwiGLU `mlp.` (FlexOlmo's experts).
    static func block(
        _ index: Int, skipping plan: DropPlan, parts: DecoderParts, config: Olmo2Configuration, rotary: RotaryEmbedding?,
        slidingWindow: Int? = nil, perHeadQueryKeyNorm: Bool = false, mlp: (() throws -> FeedForward)? = nil
    ) throws -> TransformerBlock {
        let drops = plan.union(parts.configuredDrops), weights = parts.weights
        let d = parts.dimensions.hiddenSize, eps = config.rmsNormEps
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention {
            try Self.attention(
                index, parts: parts, config: config, rotary: rotary, slidingWindow: slidingWindow,
                perHeadQueryKeyNorm: perHeadQueryKeyNorm)
        }
        func feedForward() throws -> FeedForward {
            if let mlp { return try mlp() }
            return try weights.gatedMLP(
                p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize, activation: try parts.activation(config.hiddenAct ?? "silu"))
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: nil, attention: try attention(),
                outputNorm: try weights.rmsNorm(p + "post_attention_layernorm", size: d, eps: eps)),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: nil, feedForward: try feedForward(),
                outputNorm: try weights.rmsNorm(p + "post_feedforward_layernorm", size: d, eps: eps)),
            residual: .sequential)
    }

    /// Layer `index`'s attention: q/k/v/o projections (biases by
    /// `attention_bias`), q/k RMSNorms `q_norm` / `k_norm` before rotary —
    /// across all heads, or per head when `perHeadQueryKeyNorm` (EXAONE 4 and
    /// EXAONE MoE) — rotating with `rotary` (nil: NoPE) within `slidingWindow`.
    static func attention(
        _ index: Int, parts: DecoderParts, config: Olmo2Configuration, rotary: RotaryEmbedding?, slidingWindow: Int? = nil,
        perHeadQueryKeyNorm: Bool = false
    ) throws -> SelfAttention {
        let layout = parts.attentionLayout, eps = config.rmsNormEps, p = "layers.\(index).self_attn."
        let width = perHeadQueryKeyNorm ? (layout.headDim, layout.headDim) : (layout.queryWidth, layout.keyWidth)
        let query = try parts.weights.rmsNorm(p + "q_norm", size: width.0, eps: eps)
        let key = try parts.weights.rmsNorm(p + "k_norm", size: width.1, eps: eps)
        return try parts.attention(
            p, bias: config.attentionBias == true, rotary: rotary, slidingWindow: slidingWindow,
            queryKeyNorm: perHeadQueryKeyNorm ? .perHead(query: query, key: key) : .acrossHeads(query: query, key: key))
    }
}

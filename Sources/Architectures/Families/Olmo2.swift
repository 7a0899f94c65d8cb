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
        parts = try DecoderParts(checkpoint) { prefix in
            LayerNaming(
                prefix: prefix + "layers.", attention: ["self_attn.", "post_attention_layernorm."],
                mlp: ["mlp.", "post_feedforward_layernorm."], layerCountKeys: ["num_hidden_layers"])
        }
        config = try parts.config(Olmo2Configuration.self)
        rotary = try parts.rotary()
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps), tiedByDefault: false)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, layout = parts.attentionLayout, eps = config.rmsNormEps
        let bias = config.attentionBias == true
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { SelfAttention(
            qkv: try weights.stackedQKV(p + "self_attn.", hidden: d, layout: layout, bias: bias),
            layout: layout,
            rotary: rotary,
            output: try weights.linear(p + "self_attn.o_proj", in: layout.queryWidth, out: d, bias: bias),
            scale: 1 / Float(layout.headDim).squareRoot(),
            queryKeyNorm: .acrossHeads(
                query: try weights.rmsNorm(p + "self_attn.q_norm", size: layout.queryWidth, eps: eps),
                key: try weights.rmsNorm(p + "self_attn.k_norm", size: layout.keyWidth, eps: eps))) }
        func feedForward() throws -> FeedForward {
            try weights.gatedMLP(
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
}

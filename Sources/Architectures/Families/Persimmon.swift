import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// PersimmonConfig's defaults.
enum PersimmonDefaults: QueryKeyLayerNormDefaults {
    static let hiddenAct = "relu2"
    static let qkLayernorm = true
}

/// Persimmon (Adept's Persimmon-8B, transformers' models/persimmon):
/// pre-norm LayerNorm blocks (`input_layernorm`, `post_attention_layernorm`,
/// both with biases), multi-head attention from one `query_key_value`
/// projection whose rows are per head ([q_h, k_h, v_h] for each head h, as
/// GPT-NeoX's), LayerNorms over each head's queries and keys before rotary
/// (`qk_layernorm`, true unless given), rotary on the first
/// int(head_dim · `partial_rotary_factor`) dimensions (0.5 unless given;
/// base 10000), `dense` with a bias; an MLP `dense_h_to_4h` → relu² →
/// `dense_4h_to_h`, both with biases; `final_layernorm`, and a head without
/// a bias, untied by default. Also Fuyu's language model (`fuyu`, Adept's
/// Fuyu-8B, read as `Llava` places it).
struct PersimmonModel: DecoderFamily {
    let parts: DecoderParts
    let config: QueryKeyLayerNormConfiguration<PersimmonDefaults>
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, placement: try .topLevelOrWrapped(checkpoint), naming: Self.naming, finalNorm: "final_layernorm")
        config = try parts.config(QueryKeyLayerNormConfiguration<PersimmonDefaults>.self)
        // PersimmonAttention's heads are hidden_size / num_attention_heads wide whatever head_dim
        // says, while its rotary table reads head_dim: another width does not describe the model.
        try parts.confirmHeadDimIsHiddenOverHeads(": PersimmonAttention's heads are")
        rotary = try parts.rotary(partialRotary: .sliced(default: 0.5, attentionClass: "PersimmonAttention"), confirmProjections: false)
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."], mlp: ["mlp.", "post_attention_layernorm."],
            layerCountKeys: ["num_hidden_layers"])
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.layerNorm("final_layernorm", size: hiddenSize, eps: config.layerNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, inner = parts.dimensions.intermediateSize, eps = config.layerNormEps
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention {
            let heads = parts.dimensions.numAttentionHeads, headDim = d / heads
            let queryKeyNorm: QueryKeyNorm? = config.qkLayernorm
                ? .perHead(
                    query: try weights.layerNorm(p + "self_attn.q_layernorm", size: headDim, eps: eps),
                    key: try weights.layerNorm(p + "self_attn.k_layernorm", size: headDim, eps: eps))
                : nil
            // Rows per head as stored ([q_h, k_h, v_h]), grouped q | k | v, where the q/k norms act.
            let qkv = try weights.linear(p + "self_attn.query_key_value", in: d, out: 3 * d, bias: true)
            return SelfAttention(
                qkv: qkv.groupingHeadsByProjection(heads: heads, headDim: headDim),
                layout: QKVLayout(numHeads: heads, numKVHeads: heads, headDim: headDim, arrangement: .grouped),
                rotary: rotary,
                output: try weights.linear(p + "self_attn.dense", in: d, out: d, bias: true),
                scale: 1 / Float(headDim).squareRoot(),
                queryKeyNorm: queryKeyNorm)
        }
        func feedForward() throws -> FeedForward { .plain(
            up: try weights.linear(p + "mlp.dense_h_to_4h", in: d, out: inner, bias: true),
            down: try weights.linear(p + "mlp.dense_4h_to_h", in: inner, out: d, bias: true),
            activation: try parts.activation(config.hiddenAct)) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.layerNorm(p + "input_layernorm", size: d, eps: eps), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.layerNorm(p + "post_attention_layernorm", size: d, eps: eps), feedForward: try feedForward()),
            residual: .sequential)
    }
}

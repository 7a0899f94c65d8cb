import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `stablelm`, with StableLmConfig's defaults.
struct StableLMConfiguration: Decodable {
    /// Every LayerNorm's epsilon, the per-head q/k norms' too.
    var layerNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v_proj (o_proj has none).
    var useQKVBias: Bool
    /// LayerNorms without a bias on each head's queries and keys, one per
    /// head with weights of its own, before rotary.
    var qkLayernorm: Bool
    /// y = x + attn(ln x) + mlp(ln x) off the one `input_layernorm`; else
    /// pre-norm blocks with `post_attention_layernorm` before the MLP.
    var useParallelResidual: Bool

    enum CodingKeys: String, CodingKey {
        case layerNormEps = "layer_norm_eps"
        case hiddenAct = "hidden_act"
        case useQKVBias = "use_qkv_bias"
        case qkLayernorm = "qk_layernorm"
        case useParallelResidual = "use_parallel_residual"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layerNormEps = try c.decodeIfPresent(Double.self, forKey: .layerNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        useQKVBias = try c.decodeIfPresent(Bool.self, forKey: .useQKVBias) ?? false
        qkLayernorm = try c.decodeIfPresent(Bool.self, forKey: .qkLayernorm) ?? false
        useParallelResidual = try c.decodeIfPresent(Bool.self, forKey: .useParallelResidual) ?? false
        let layerNormEps = layerNormEps
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(layerNormEps, "layer_norm_eps")
        }
    }
}

/// StableLM (StableLM-3B-4E1T, StableLM-2 1.6B / 12B): LayerNorms with
/// biases, rotary on the first `partial_rotary_factor` of each head (0.25
/// unless given), optional q/k/v biases (`use_qkv_bias`), optional per-head
/// q/k LayerNorms with weights of their own per head and no bias
/// (`qk_layernorm`), a SwiGLU MLP without biases, the final `norm`, and a
/// head untied by default.
///
/// `use_parallel_residual` false (the default): pre-norm blocks as Llama's,
/// `input_layernorm` before attention and `post_attention_layernorm` before
/// the MLP. True: one `input_layernorm` whose output both branches read —
/// y = x + attn(ln x) + mlp(ln x) —, scored as Phi's parallel blocks.
struct StableLMModel: DecoderFamily {
    let parts: DecoderParts
    let config: StableLMConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // The naming depends on the block: a parallel block's one norm goes with neither branch.
        let config = try checkpoint.decodeConfig(StableLMConfiguration.self)
        self.config = config
        parts = try DecoderParts(checkpoint) { Self.naming($0, parallel: config.useParallelResidual) }
        // StableLmAttention's heads are hidden_size / num_attention_heads wide whatever head_dim
        // says, while its rotary table reads head_dim: another width does not describe the model.
        try parts.confirmHeadDimIsHiddenOverHeads(": StableLmAttention's heads are")
        rotary = try parts.rotary(partialRotary: .sliced(default: 0.25, attentionClass: "StableLmAttention"))
    }

    static func naming(_ prefix: String, parallel: Bool) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: parallel ? ["self_attn."] : ["self_attn.", "input_layernorm."],
            mlp: parallel ? ["mlp."] : ["mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.layerNorm("norm", size: hiddenSize, eps: config.layerNormEps))
    }

    /// The per-head q/k norms: `norms.<h>.weight` of each head side by side, no bias.
    func headNorms(_ prefix: String, heads: Int) throws -> Normalization {
        let headDim = parts.attentionLayout.headDim
        let weight = try (0..<heads).flatMap { try parts.weights.floats(prefix + ".norms.\($0).weight", [headDim]) }
        return .layer(weight: weight, bias: [Float](repeating: 0, count: heads * headDim), eps: Float(config.layerNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, eps = config.layerNormEps, p = "layers.\(index)."
        let mlpNorm = config.useParallelResidual ? "input_layernorm" : "post_attention_layernorm"
        func attention() throws -> SelfAttention {
            let layout = parts.attentionLayout
            let queryKeyNorm: QueryKeyNorm? = config.qkLayernorm
                ? .eachHead(
                    query: try headNorms(p + "self_attn.q_layernorm", heads: layout.numHeads),
                    key: try headNorms(p + "self_attn.k_layernorm", heads: layout.numKVHeads))
                : nil
            return try parts.attention(p + "self_attn.", bias: config.useQKVBias, outputBias: false, rotary: rotary, queryKeyNorm: queryKeyNorm)
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.layerNorm(p + "input_layernorm", size: d, eps: eps), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.layerNorm(p + mlpNorm, size: d, eps: eps),
                feedForward: try weights.gatedMLP(
                    p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.hiddenAct), bias: false)),
            residual: config.useParallelResidual ? .parallel : .sequential)
    }
}

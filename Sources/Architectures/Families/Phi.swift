import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The defaults of a config class read as `QueryKeyLayerNormConfiguration`.
protocol QueryKeyLayerNormDefaults {
    static var hiddenAct: String { get }
    static var qkLayernorm: Bool { get }
}

/// config.json of a family of LayerNorm blocks with optional LayerNorms on
/// each head's queries and keys (Phi, Persimmon), with its config class's
/// defaults (`Defaults`; `layer_norm_eps` 1e-5 for both).
struct QueryKeyLayerNormConfiguration<Defaults: QueryKeyLayerNormDefaults>: Decodable {
    /// Every LayerNorm's epsilon, the q/k norms' too.
    var layerNormEps: Double
    var hiddenAct: String
    /// LayerNorms (weight and bias, one width of hidden_size / heads, one
    /// for all heads) on each head's queries and keys before rotary.
    var qkLayernorm: Bool

    enum CodingKeys: String, CodingKey {
        case layerNormEps = "layer_norm_eps"
        case hiddenAct = "hidden_act"
        case qkLayernorm = "qk_layernorm"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layerNormEps = try c.decodeIfPresent(Double.self, forKey: .layerNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? Defaults.hiddenAct
        qkLayernorm = try c.decodeIfPresent(Bool.self, forKey: .qkLayernorm) ?? Defaults.qkLayernorm
        let layerNormEps = layerNormEps
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(layerNormEps, "layer_norm_eps")
        }
    }
}

/// PhiConfig's defaults.
enum PhiDefaults: QueryKeyLayerNormDefaults {
    static let hiddenAct = "gelu_new"
    static let qkLayernorm = false
}

/// Phi (phi-1, phi-1.5, phi-2): one LayerNorm `input_layernorm` whose
/// output both branches read, in parallel — y = x + dense(attn(ln x)) +
/// fc2(act(fc1(ln x))) —, biases on q/k/v, `dense` and both MLP
/// projections, rotary on the first `partial_rotary_factor` of each head
/// (0.5 unless given), optional per-head q/k LayerNorms (`qk_layernorm`),
/// `final_layernorm`, and a head with a bias, untied by default.
///
/// Both branches carry the shared norm: dropping one leaves the other
/// reading the same normalised input, as zeroing a branch in transformers does.
struct PhiModel: DecoderFamily {
    let parts: DecoderParts
    let config: QueryKeyLayerNormConfiguration<PhiDefaults>
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: Self.naming, finalNorm: "final_layernorm")
        let config = try parts.config(QueryKeyLayerNormConfiguration<PhiDefaults>.self)
        self.config = config
        // PhiAttention sizes its q/k norms hidden_size / heads wide and
        // applies them to heads of head_dim: with another head_dim transformers cannot run it.
        if config.qkLayernorm { try parts.confirmHeadDimIsHiddenOverHeads(" with qk_layernorm: the q/k norms are") }
        rotary = try parts.rotary(partialRotary: .sliced(default: 0.5, attentionClass: "PhiAttention"))
    }

    static func naming(_ prefix: String) -> LayerNaming {
        // input_layernorm serves both branches: it goes with neither.
        LayerNaming(prefix: prefix + "layers.", attention: ["self_attn."], mlp: ["mlp."], layerCountKeys: ["num_hidden_layers"])
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.layerNorm("final_layernorm", size: hiddenSize, eps: config.layerNormEps), bias: true)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, inner = parts.dimensions.intermediateSize, eps = config.layerNormEps
        let p = "layers.\(index)."
        func norm() throws -> Normalization { try weights.layerNorm(p + "input_layernorm", size: d, eps: eps) }
        func attention() throws -> SelfAttention {
            let headDim = parts.attentionLayout.headDim
            let queryKeyNorm: QueryKeyNorm? = config.qkLayernorm
                ? .perHead(
                    query: try weights.layerNorm(p + "self_attn.q_layernorm", size: headDim, eps: eps),
                    key: try weights.layerNorm(p + "self_attn.k_layernorm", size: headDim, eps: eps))
                : nil
            return try parts.attention(p + "self_attn.", bias: true, outputName: "dense", rotary: rotary, queryKeyNorm: queryKeyNorm)
        }
        func feedForward() throws -> FeedForward { .plain(
            up: try weights.linear(p + "mlp.fc1", in: d, out: inner, bias: true),
            down: try weights.linear(p + "mlp.fc2", in: inner, out: d, bias: true),
            activation: try parts.activation(config.hiddenAct)) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(inputNorm: try norm(), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(inputNorm: try norm(), feedForward: try feedForward()),
            residual: .parallel)
    }
}

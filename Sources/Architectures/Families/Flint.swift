import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `flint`, with FlintConfig's defaults.
struct FlintConfiguration: Decodable {

    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v/o_proj.
    var attentionBias: Bool
    var slidingWindow: Int
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow) ?? 513
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
    }

    /// FlintConfig's rule when `layer_types` is absent: layers 0 and 1, every
    /// fourth from 1 and the last attend fully, the others slide.
    static func defaultLayerType(_ layer: Int, layers: Int) -> String {
        layer < 2 || layer % 4 == 1 || layer == layers - 1 ? AttentionLayerType.full : AttentionLayerType.sliding
    }
}

/// Flint (RecursiveSI's, transformers' `models/flint/`): Llama's
/// pre-RMSNorm blocks whose attention has per-head q/k RMSNorms, heads of
/// `head_dim` (128), biases on q/k/v/o by `attention_bias` and a learned
/// sink logit per head on every layer (`self_attn.sinks`, saved as
/// `softmax_offset`). By `layer_types` (by default layers 0 and 1, every
/// fourth from 1 and the last full) sliding layers attend within
/// `sliding_window` (513) and rotate; full layers attend without
/// positions. The MLP (`QwenExperts`, FlintConfig's keys): on the layers
/// outside `mlp_only_layers` ([0, 1]) and on the `decoder_sparse_step` beat,
/// the router's top `num_experts_per_tok` sigmoids of `num_experts`
/// SwiGLU experts of `moe_intermediate_size` (divided by their sum when
/// `norm_topk_prob`), plus an ungated shared SwiGLU of
/// `shared_expert_intermediate_size`; elsewhere a dense SwiGLU of
/// `intermediate_size`.
struct FlintModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: FlintConfiguration
    let experts: QwenExperts
    let layerTypes: [String]
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        let section = ConfigSection.topLevel
        // Decoded first: the expert tensors are checked with the layers.
        let experts = try QwenExperts(checkpoint, section: section, configClass: .flint)
        self.experts = experts
        parts = try DecoderParts(checkpoint, section: section, naming: LlamaModel.naming, experts: experts.naming)
        let config = try parts.config(FlintConfiguration.self)
        self.config = config
        let layers = parts.dimensions.numHiddenLayers
        layerTypes = try parts.layerTypes(config.layerTypes, slidingWindow: config.slidingWindow) {
            FlintConfiguration.defaultLayerType($0, layers: layers)
        }
        try experts.confirm(parts)
        rotary = try parts.rotary()
    }

    /// Exports without some blocks spell out the kept layers' types and
    /// dense layers (FlintConfig's `mlp_only_layers` default is not empty).
    var layerNaming: LayerNaming {
        var naming = parts.naming(spellingOut: layerTypes)
        naming.layerIndexLists["mlp_only_layers"] = experts.mlpOnlyLayers
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let sliding = layerTypes[index] == AttentionLayerType.sliding, eps = config.rmsNormEps
        let p = "layers.\(index).self_attn.", weights = parts.weights, layout = parts.attentionLayout
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: eps,
            attention: {
                try parts.attention(
                    p, bias: config.attentionBias, rotary: sliding ? rotary : nil, slidingWindow: sliding ? config.slidingWindow : nil,
                    queryKeyNorm: .perHead(
                        query: try weights.rmsNorm(p + "q_norm", size: layout.headDim, eps: eps),
                        key: try weights.rmsNorm(p + "k_norm", size: layout.headDim, eps: eps)),
                    sinkLogits: try weights.floats(weights.storedName(saved: p + "softmax_offset", renamed: p + "sinks"), [layout.numHeads]))
            },
            feedForward: { try experts.feedForward(parts, layer: index, activation: try parts.activation(config.hiddenAct)) })
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `lara_mini`, with LaraMiniConfig's defaults
/// (transformers' `configuration_lara_mini.py`).
struct LaraMiniConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v/o_proj.
    var attentionBias: Bool
    /// The sliding layers' window (512).
    var slidingWindow: Int
    var layerTypes: [String]?
    /// The `linear_*` sizes as written (defaults: `deltaNetDefaults`).
    var deltaNet: GatedDeltaNetKeys

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
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow) ?? 512
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        deltaNet = try GatedDeltaNetKeys(from: decoder)
    }

    /// LaraMiniConfig's Gated DeltaNet defaults: 8 query/key heads and 16
    /// value heads of 128, a 4-tap convolution.
    static let deltaNetDefaults = GatedDeltaNetHeads(keyHeads: 8, valueHeads: 16, keyDim: 128, valueDim: 128, convolutionKernel: 4)

    /// The types a layer may have: LaraMiniModel's mask mapping has these
    /// only (and LaraMiniAttention fails on chunked_attention, which the
    /// config's validation allows).
    static let types = [HybridQwenConfiguration.linear, AttentionLayerType.sliding, AttentionLayerType.full]

    /// LaraMiniConfig's rule when `layer_types` is absent (its
    /// `__post_init__`), the released pattern of period 5: linear,
    /// sliding, linear, full, sliding.
    static func defaultLayerType(_ layer: Int) -> String {
        let (linear, sliding, full) = (HybridQwenConfiguration.linear, AttentionLayerType.sliding, AttentionLayerType.full)
        return [linear, sliding, linear, full, sliding][layer % 5]
    }
}

/// Lara Mini (Translated's Lara-4-Mini, transformers' `models/lara_mini/`,
/// LaraMiniForCausalLM): Llama's pre-norm blocks with plain RMSNorms
/// (`HeliumRMSNorm`) whose token mixer is, by `layer_types` (by default
/// linear, sliding, linear, full, sliding, repeated), Qwen3.5's Gated
/// DeltaNet (`linear_attention`: the `linear_*` sizes, a gated RMSNorm with
/// its plain weight) or Qwen3's attention with per-head q/k RMSNorms, heads
/// of `head_dim` (128), biases by `attention_bias`: sliding layers attend
/// within `sliding_window` (512) and rotate (Qwen3's rotary embedding, the
/// whole head), full layers attend without positions (LaraMiniModel.forward
/// hands position embeddings to the sliding layers only). Every layer's MLP
/// is Flint's sparse block under Qwen3-Next's router (`LaraMiniSparseMoeBlock`,
/// `LaraMiniTopKRouter`; `QwenExperts` with LaraMiniConfig's keys): the
/// softmax's top `num_experts_per_tok` (4) of
/// `num_experts` (128) SwiGLU experts of `moe_intermediate_size` (512),
/// renormalised when `norm_topk_prob`, plus an ungated shared SwiGLU of
/// `shared_expert_intermediate_size` (512). The head is tied by default.
///
/// The released checkpoints fuse each Gated DeltaNet's input projections
/// into `linear_attn.in_proj` (rows q | k | v | z | b | a, read as it is,
/// or transformers' four as stored) and name its norm `linear_attn.out_norm`
/// (read as `linear_attn.norm`, `TensorRenamings`), as transformers saves
/// them back: its conversion mapping (`conversion_mapping.py`, "lara_mini")
/// splits and renames them on load. Per-expert tensors are refused: that
/// mapping does not collect them into the fused experts.
struct LaraMiniModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: LaraMiniConfiguration
    let heads: GatedDeltaNetHeads
    let experts: QwenExperts
    let layerTypes: [String]
    /// The sliding layers' rotation.
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the expert tensors are checked with the layers.
        let experts = try QwenExperts(checkpoint, configClass: .laraMini)
        self.experts = experts
        // LaraMiniConfig has no dense MLP, and no intermediate_size (`AttributeError()` in its class): whatever
        // config.json holds under that key is not read; the placeholder is the experts' width.
        let section = ConfigSection(overrides: ["intermediate_size": .integer(experts.moeIntermediateSize)])
        parts = try DecoderParts(checkpoint, section: section, naming: { HybridQwenLayers.naming($0) }, experts: experts.naming)
        let config = try parts.config(LaraMiniConfiguration.self)
        self.config = config
        let parts = parts, layers = parts.dimensions.numHiddenLayers
        let types = config.layerTypes ?? (0..<layers).map(LaraMiniConfiguration.defaultLayerType)
        heads = try parts.checks {
            // (DecoderDimensions checked the list has one entry per layer and the window is at least 1.)
            if let other = types.first(where: { !LaraMiniConfiguration.types.contains($0) }) {
                throw InvalidConfigValue(
                    key: "layer_types",
                    problem: "names \"\(other.forErrorMessage)\": LaraMiniModel's layers are linear_attention, sliding_attention or full_attention")
            }
            return try config.deltaNet.heads(defaults: LaraMiniConfiguration.deltaNetDefaults, hidden: parts.dimensions.hiddenSize)
        }
        layerTypes = types
        let attention = ["self_attn.q_proj.weight"], linear = HybridQwenConfiguration.linear
        try parts.confirmLayerKinds(
            types, probes: [linear: ["linear_attn.conv1d.weight"], AttentionLayerType.sliding: attention, AttentionLayerType.full: attention])
        try parts.confirmGatedDeltaNet(heads, layers: types.indices.filter { types[$0] == linear })
        try experts.confirm(parts)
        try parts.confirmAttentionProjections(layers: types.indices.filter { types[$0] != linear })
        rotary = try parts.rotary(confirmProjections: false)
    }

    /// Exports without some blocks spell out the kept layers' types.
    var layerNaming: LayerNaming { parts.naming(spellingOut: layerTypes) }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let type = layerTypes[index], eps = config.rmsNormEps, weights = parts.weights
        let p = "layers.\(index).", layout = parts.attentionLayout
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: eps,
            mixer: {
                if type == HybridQwenConfiguration.linear {
                    let prefix = p + "linear_attn."
                    return .gatedDeltaNet(try parts.gatedDeltaNet(
                        prefix, heads: heads, projection: try weights.gatedDeltaNetProjection(prefix, heads: heads, hidden: hiddenSize, fused: "in_proj"),
                        eps: eps, activation: config.hiddenAct))
                }
                let sliding = type == AttentionLayerType.sliding, a = p + "self_attn."
                return .attention(try parts.attention(
                    a, bias: config.attentionBias, rotary: sliding ? rotary : nil, slidingWindow: sliding ? config.slidingWindow : nil,
                    queryKeyNorm: .perHead(
                        query: try weights.rmsNorm(a + "q_norm", size: layout.headDim, eps: eps),
                        key: try weights.rmsNorm(a + "k_norm", size: layout.headDim, eps: eps))))
            },
            feedForward: { try experts.feedForward(parts, layer: index, activation: try parts.activation(config.hiddenAct)) })
    }
}

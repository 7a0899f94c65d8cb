import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `bamba` beside the Mamba-2 keys (`Mamba2Configuration`),
/// with BambaConfig's defaults.
struct BambaConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var attentionBias: Bool
    var mlpBias: Bool
    /// The attention layers; every other layer is Mamba-2.
    var attentionLayerIndices: [Int]?
    /// `rope_parameters.partial_rotary_factor`; BambaConfig hands 0.5 to the
    /// rope set-up otherwise, over a top-level `partial_rotary_factor`.
    var partialRotaryFactor: Double?
    var partialRotaryFactorIsNull = false

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case attentionLayerIndices = "attn_layer_indices"
        case ropeParameters = "rope_parameters"
    }

    private enum RopeKeys: String, CodingKey {
        case partialRotaryFactor = "partial_rotary_factor"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        attentionLayerIndices = try c.decodeIfPresent([Int].self, forKey: .attentionLayerIndices)
        if c.contains(.ropeParameters), try !c.decodeNil(forKey: .ropeParameters) {
            let rope = try c.nestedContainer(keyedBy: RopeKeys.self, forKey: .ropeParameters)
            partialRotaryFactor = try rope.decodeIfPresent(Double.self, forKey: .partialRotaryFactor)
            partialRotaryFactorIsNull = try rope.contains(.partialRotaryFactor) && rope.decodeNil(forKey: .partialRotaryFactor)
        }
    }
}

/// IBM's Bamba (`bamba`, transformers' models/bamba): Llama's pre-RMSNorm
/// block whose token mixer, the layer's attention module, is attention on
/// the layers `attn_layer_indices` lists and a Mamba-2 mixer (`mamba`,
/// as granitemoehybrid's) on every other one; attention rotates
/// `partial_rotary_factor` of each head, 0.5 unless `rope_parameters` says
/// otherwise; a SwiGLU `feed_forward` (biases by `mlp_bias`) after
/// `pre_ff_layernorm`; the final norm `final_layernorm`.
struct BambaModel: DecoderFamily {
    let parts: DecoderParts
    let config: BambaConfiguration
    let mamba: Mamba2Configuration
    let heads: Mamba2Heads
    let attentionLayers: Set<Int>
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: Self.naming, finalNorm: "final_layernorm")
        config = try parts.config(BambaConfiguration.self)
        mamba = try parts.config(Mamba2Configuration.self)
        heads = try mamba.heads(parts)
        let layers = parts.dimensions.numHiddenLayers
        let attentionLayers = Set(config.attentionLayerIndices ?? []).filter { (0..<layers).contains($0) }
        self.attentionLayers = attentionLayers
        // The rotary table is sized from the first kept attention layer's projections.
        let drops = parts.configuredDrops
        if let first = attentionLayers.sorted().first(where: { !drops.dropsAttention($0) }) {
            let dims = parts.dimensions, d = dims.hiddenSize
            try parts.weights.confirmShape(
                "layers.\(first).self_attn.q_proj.weight", [dims.numAttentionHeads * dims.resolvedHeadDim, d],
                keys: "num_attention_heads × head_dim", configPath: parts.configPath)
            try parts.weights.confirmShape(
                "layers.\(first).self_attn.k_proj.weight", [dims.kvHeads * dims.resolvedHeadDim, d],
                keys: "num_key_value_heads × head_dim", configPath: parts.configPath)
        }
        var rope = try parts.ropeSettings()
        rope.partialRotaryFactor = config.partialRotaryFactor
        rope.partialRotaryFactorIsNull = config.partialRotaryFactorIsNull
        rotary = try parts.rotary(
            partialRotary: .honoured(default: 0.5), confirmProjections: false, settings: rope)
    }

    /// The hybrid Mamba families' layer naming (Bamba, Falcon-H1, Jamba): the
    /// token mixer (`self_attn` or `mamba`) and `input_layernorm` are the
    /// attention branch, `feed_forward` and `pre_ff_layernorm` the MLP.
    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "mamba.", "input_layernorm."],
            mlp: ["feed_forward.", "pre_ff_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    /// The norms before the token mixer and before the feed-forward.
    static let norms = (attention: "input_layernorm", mlp: "pre_ff_layernorm")

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("final_layernorm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), p = "layers.\(index).", d = hiddenSize, eps = config.rmsNormEps
        let weights = parts.weights, activation = try parts.activation(config.hiddenAct)
        func mixer() throws -> TokenMixer {
            if attentionLayers.contains(index) {
                return .attention(try parts.attention(p + "self_attn.", bias: config.attentionBias, rotary: rotary))
            }
            return .mamba2(try mamba.mixer(p + "mamba.", parts: parts, heads: heads, activation: activation, eps: eps))
        }
        return try parts.preNormBlock(index, drops: drops, eps: eps, norms: Self.norms, mixer: mixer) {
            try weights.gatedMLP(
                p + "feed_forward.", hidden: d, inner: parts.dimensions.intermediateSize, activation: activation, bias: config.mlpBias)
        }
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `minicpm5_moe`, with MiniCPM5MoeConfig's defaults
/// (transformers 5.25, models/minicpm5_moe/): Glm4MoeConfig's keys but
/// `use_qk_norm` and `num_mtp_layers`, which it removes, and
/// `first_k_dense_replace`, which only gives `mlp_layer_types` its default.
struct MiniCPM5MoeConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q_gate_proj, k_proj, v_proj and o_proj (LlamaAttention's).
    var attentionBias: Bool
    /// Each layer's MLP, "dense" or "sparse"; nil: the first
    /// `first_k_dense_replace` (1) dense, the others sparse.
    var mlpLayerTypes: [String]?
    var firstKDenseReplace: Int
    /// The routed layers' keys: DeepSeek-V3's router (`MiniCPM5MoeTopkRouter`).
    var experts: DeepSeekExperts

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpLayerTypes = "mlp_layer_types"
        case firstKDenseReplace = "first_k_dense_replace"
        case useGatedAttention = "use_gated_attention"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        firstKDenseReplace = try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? 1
        experts = try DeepSeekExperts(from: decoder, configClass: .miniCPM5Moe)
        let (types, ungated) = (mlpLayerTypes, try c.decodeIfPresent(Bool.self, forKey: .useGatedAttention) == false)
        try ConfigRules.decodingChecks {
            try MLPLayerTypes.checkEntries(types)
            // MiniCPM5MoeConfig.validate_architecture refuses it.
            if ungated {
                throw InvalidConfigValue(key: "use_gated_attention", problem: "is false, but MiniCPM5-MoE's attention is always gated")
            }
        }
    }
}

/// MiniCPM5-MoE (`minicpm5_moe`; OpenBMB's MiniCPM5, transformers'
/// models/minicpm5_moe/): pre-RMSNorm blocks whose attention is Llama's
/// with an output gate — `q_gate_proj` gives each head's queries then its
/// gate (`Weights.gatedQueryProjections`), the attention output is
/// multiplied by the gate's sigmoid before `o_proj` — rotating whole heads
/// (base 5e6 unless given), and whose MLP is, by `mlp_layer_types`, a dense
/// SwiGLU of `intermediate_size` or DeepSeek-V3's routed experts (sigmoid
/// scores plus `e_score_correction_bias` within the best `topk_group` of
/// `n_group` groups, renormalised, × `routed_scaling_factor`) beside
/// `n_shared_experts` shared ones. The released checkpoints name the
/// gated projection `q_proj`, which transformers renames (`TensorRenamings`).
struct MiniCPM5MoeModel: DecoderFamily {
    let parts: DecoderParts
    let config: MiniCPM5MoeConfiguration
    let mlpTypes: [String]
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the layer kinds decide which tensors the layers hold.
        let config = try checkpoint.decodeConfig(MiniCPM5MoeConfiguration.self)
        let d = try checkpoint.decodeConfig(DecoderDimensions.self)
        let mlpTypes = MLPLayerTypes.resolved(config.mlpLayerTypes, layers: d.numHiddenLayers, firstDense: config.firstKDenseReplace)
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        try ConfigRules.checks(path: checkpoint.configURL.path) {
            try MLPLayerTypes.checkCount(config.mlpLayerTypes, layers: d.numHiddenLayers)
            if mlpTypes.prefix(d.numHiddenLayers).contains("sparse") { try config.experts.check(hidden: d.hiddenSize) }
        }
        self.config = config
        self.mlpTypes = mlpTypes
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming, experts: config.experts.naming(isSparse: isSparse))
        try parts.confirmLayerKinds(
            mlpTypes, key: config.mlpLayerTypes == nil ? "first_k_dense_replace" : "mlp_layer_types", mlp: true,
            probes: ["dense": ["mlp.down_proj.weight"], "sparse": ["mlp.gate.weight"]])
        try config.experts.confirm(parts, isSparse: isSparse)
        if let layer = parts.firstKeptAttention {
            let dimensions = parts.dimensions, width = parts.attentionLayout.headDim
            try parts.confirmProjections(layer: layer, [
                ("q_gate_proj", 2 * dimensions.numAttentionHeads * width, "2 × num_attention_heads × head_dim"),
                ("k_proj", dimensions.kvHeads * width, "num_key_value_heads × head_dim"),
            ])
        }
        rotary = try parts.rotary(defaultTheta: 5_000_000, confirmProjections: false)
    }

    /// Exports without some blocks spell out the kept layers' MLP kinds.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: nil, mlpTypes: mlpTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try attention(layer: index) },
            feedForward: {
                try config.experts.feedForward(
                    parts, layer: index, sparse: mlpTypes[index] == "sparse", activation: try parts.activation(config.hiddenAct))
            })
    }

    /// Layer `index`'s MiniCPM5MoeAttention: scale head_dim^-1/2, the output times sigmoid(gate).
    func attention(layer index: Int) throws -> SelfAttention {
        let p = "layers.\(index).self_attn.", layout = parts.attentionLayout, d = hiddenSize, bias = config.attentionBias
        let (qkv, gate) = try parts.weights.gatedQueryProjections(p, queryGate: "q_gate_proj", layout: layout, hidden: d, bias: bias)
        return SelfAttention(
            qkv: qkv, layout: layout, rotary: rotary,
            output: try parts.weights.linear(p + "o_proj", in: layout.queryWidth, out: d, bias: bias),
            scale: 1 / Float(layout.headDim).squareRoot(), outputGate: gate)
    }
}

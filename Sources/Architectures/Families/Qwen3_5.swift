import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of config.json (or of its `text_config`) the hybrid Qwen
/// models share (Qwen3NextConfig's, which Qwen3_5TextConfig inherits), with
/// their defaults.
struct HybridQwenConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var attentionBias: Bool
    var layerTypes: [String]?
    var fullAttentionInterval: Int
    var convolutionKernel: Int
    var keyHeadDim: Int
    var valueHeadDim: Int
    var keyHeads: Int
    var valueHeads: Int

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case layerTypes = "layer_types"
        case fullAttentionInterval = "full_attention_interval"
        case convolutionKernel = "linear_conv_kernel_dim"
        case keyHeadDim = "linear_key_head_dim"
        case valueHeadDim = "linear_value_head_dim"
        case keyHeads = "linear_num_key_heads"
        case valueHeads = "linear_num_value_heads"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        fullAttentionInterval = try c.decodeIfPresent(Int.self, forKey: .fullAttentionInterval) ?? 4
        convolutionKernel = try c.decodeIfPresent(Int.self, forKey: .convolutionKernel) ?? 4
        keyHeadDim = try c.decodeIfPresent(Int.self, forKey: .keyHeadDim) ?? 128
        valueHeadDim = try c.decodeIfPresent(Int.self, forKey: .valueHeadDim) ?? 128
        keyHeads = try c.decodeIfPresent(Int.self, forKey: .keyHeads) ?? 16
        valueHeads = try c.decodeIfPresent(Int.self, forKey: .valueHeads) ?? 32
        try ConfigRules.decodingChecks {
            if layerTypes == nil { try ConfigRules.count(fullAttentionInterval, "full_attention_interval") }
            try ConfigRules.count(convolutionKernel, "linear_conv_kernel_dim")
            try ConfigRules.count(keyHeadDim, "linear_key_head_dim")
            try ConfigRules.count(valueHeadDim, "linear_value_head_dim")
            try ConfigRules.count(keyHeads, "linear_num_key_heads")
            try ConfigRules.count(valueHeads, "linear_num_value_heads")
        }
    }

    static let linear = "linear_attention"

    /// Each layer's token mixer: `layer_types`, else every
    /// `full_attention_interval`-th layer full attention, the others linear
    /// (Qwen3NextConfig's rule).
    func resolvedLayerTypes(layers: Int) -> [String] {
        layerTypes ?? (0..<layers).map { ($0 + 1) % fullAttentionInterval == 0 ? AttentionLayerType.full : Self.linear }
    }
}

/// What the hybrid Qwen families (Qwen3-Next, Qwen3.5) build the same way:
/// layer types, the gated softmax attention and the Gated DeltaNet layers.
struct HybridQwenLayers: Sendable {
    let parts: DecoderParts
    let config: HybridQwenConfiguration
    let layerTypes: [String]
    let rotary: RotaryEmbedding
    let heads: GatedDeltaNetHeads

    init(_ parts: DecoderParts) throws {
        self.parts = parts
        config = try parts.config(HybridQwenConfiguration.self)
        let config = config
        let layers = parts.dimensions.numHiddenLayers
        let layerTypes = config.resolvedLayerTypes(layers: layers)
        self.layerTypes = layerTypes
        try parts.checks {
            if layerTypes.count != layers {
                throw InvalidConfigValue(
                    key: "layer_types", problem: "has \(layerTypes.count) entries for \(layers) layers (num_hidden_layers)")
            }
            if let other = layerTypes.first(where: { $0 != AttentionLayerType.full && $0 != HybridQwenConfiguration.linear }) {
                throw InvalidConfigValue(
                    key: "layer_types", problem: "names \"\(other.forErrorMessage)\": the layers are full_attention or linear_attention")
            }
            if config.valueHeads % config.keyHeads != 0 {
                throw InvalidConfigValue(
                    key: "linear_num_value_heads",
                    problem: "\(config.valueHeads) is not a multiple of linear_num_key_heads \(config.keyHeads)")
            }
            _ = try ConfigRules.product([
                (config.keyHeads, "linear_num_key_heads"), (config.keyHeadDim, "linear_key_head_dim"),
                (parts.dimensions.hiddenSize, "hidden_size"), (4, "q, k, v and z"),
            ])
            _ = try ConfigRules.product([
                (config.valueHeads, "linear_num_value_heads"), (config.valueHeadDim, "linear_value_head_dim"),
                (parts.dimensions.hiddenSize, "hidden_size"), (4, "q, k, v and z"),
            ])
        }
        heads = GatedDeltaNetHeads(
            keyHeads: config.keyHeads, valueHeads: config.valueHeads, keyDim: config.keyHeadDim, valueDim: config.valueHeadDim,
            convolutionKernel: config.convolutionKernel)
        // The rotary table is sized from the first kept full-attention layer's q_proj.
        let firstFull = (0..<layers).first { layerTypes[$0] == AttentionLayerType.full && !parts.configuredDrops.dropsAttention($0) }
        if let firstFull {
            let d = parts.dimensions
            try parts.weights.confirmShape(
                "layers.\(firstFull).self_attn.q_proj.weight", [2 * d.numAttentionHeads * d.resolvedHeadDim, d.hiddenSize],
                keys: "2 × num_attention_heads × head_dim", configPath: parts.configPath)
            try parts.weights.confirmShape(
                "layers.\(firstFull).self_attn.k_proj.weight", [d.kvHeads * d.resolvedHeadDim, d.hiddenSize],
                keys: "num_key_value_heads × head_dim", configPath: parts.configPath)
        }
        // apply_rotary_pos_emb rotates as many dimensions as the table is wide (2·ceil(w/2) for an odd width w).
        rotary = try parts.rotary(partialRotary: .honoured(default: 0.25), confirmProjections: false)
    }

    func isLinear(_ index: Int) -> Bool { layerTypes[index] == HybridQwenConfiguration.linear }

    /// The layer naming: the token mixer (`self_attn` or `linear_attn`) and
    /// its norm are the attention branch.
    static func naming(_ prefix: String, layerTypes: [String]? = nil) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "linear_attn.", "input_layernorm."],
            mlp: ["mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"], layerTypes: layerTypes)
    }

    /// Layer `index`'s token mixer.
    func mixer(_ index: Int, linearProjection: (String) throws -> Linear) throws -> TokenMixer {
        let p = "layers.\(index)."
        if isLinear(index) {
            return .gatedDeltaNet(try gatedDeltaNet(p + "linear_attn.", projection: try linearProjection(p + "linear_attn.")))
        }
        return .attention(try gatedAttention(p + "self_attn."))
    }

    /// Qwen3NextAttention: q_proj gives each head's queries then its output
    /// gate ([heads · 2 · head_dim] rows, head by head), per-head q/k
    /// (1 + weight) RMSNorms before the partial rotary, scale head_dim^-1/2,
    /// the output times sigmoid(gate) before o_proj.
    func gatedAttention(_ prefix: String) throws -> SelfAttention {
        let weights = parts.weights, layout = parts.attentionLayout, d = parts.dimensions.hiddenSize
        let headDim = layout.headDim, bias = config.attentionBias
        let (qkv, gate) = try weights.gatedQueryProjections(prefix, queryGate: "q_proj", layout: layout, hidden: d, bias: bias)
        let eps = config.rmsNormEps
        return SelfAttention(
            qkv: qkv, layout: layout, rotary: rotary,
            output: try weights.linear(prefix + "o_proj", in: layout.queryWidth, out: d, bias: bias),
            scale: 1 / Float(headDim).squareRoot(),
            queryKeyNorm: .perHead(
                query: try weights.offsetRMSNorm(prefix + "q_norm", size: headDim, eps: eps),
                key: try weights.offsetRMSNorm(prefix + "k_norm", size: headDim, eps: eps)),
            outputGate: gate)
    }

    /// The Gated DeltaNet under `prefix` with its input `projection` (rows
    /// q | k | v | z | b | a, as the family stores or reorders them).
    func gatedDeltaNet(_ prefix: String, projection: Linear) throws -> GatedDeltaNet {
        let weights = parts.weights, h = heads
        return GatedDeltaNet(
            heads: h, projection: projection,
            convolution: try weights.floats(prefix + "conv1d.weight", [h.convolutionChannels, 1, h.convolutionKernel]),
            logDecayRates: try weights.floats(prefix + "A_log", [h.valueHeads]),
            timeStepBias: try weights.floats(prefix + "dt_bias", [h.valueHeads]),
            norm: try weights.rmsNorm(prefix + "norm", size: h.valueDim, eps: config.rmsNormEps),
            output: try weights.linear(prefix + "out_proj", in: h.valueWidth, out: parts.dimensions.hiddenSize, bias: false),
            // The convolution's activation is hidden_act (the gated norm's stays SiLU).
            convolutionActivation: try parts.activation(config.hiddenAct))
    }

    /// Block `index`: (1 + weight) RMSNorms before each branch, the token
    /// mixer, then `feedForward`.
    func block(
        _ index: Int, drops: DropPlan, linearProjection: (String) throws -> Linear, feedForward: () throws -> FeedForward
    ) throws -> TransformerBlock {
        let p = "layers.\(index).", d = parts.dimensions.hiddenSize, eps = config.rmsNormEps, weights = parts.weights
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.offsetRMSNorm(p + "input_layernorm", size: d, eps: eps),
                mixer: try mixer(index, linearProjection: linearProjection)),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.offsetRMSNorm(p + "post_attention_layernorm", size: d, eps: eps),
                feedForward: try feedForward()),
            residual: .sequential)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.offsetRMSNorm("norm", size: parts.dimensions.hiddenSize, eps: config.rmsNormEps))
    }
}

/// Qwen3.5: `qwen3_5_text` and `qwen3_5_moe_text` (Qwen3_5ForCausalLM,
/// Qwen3_5MoeForCausalLM: the keys at the top level, weights under
/// `model.`, or under `model.language_model.` as a wrapper stores them,
/// which their conversion mapping strips), and the released checkpoints `qwen3_5` and `qwen3_5_moe`
/// (Qwen3_5ForConditionalGeneration and its MoE twin: the keys under
/// `text_config`, weights under `model.language_model.`, the head `lm_head`
/// tied by the top-level `tie_word_embeddings`; the vision tower and the
/// multi-token-prediction layers `mtp.` are not read). Layers are
/// `linear_attention` (Gated DeltaNet with separate `in_proj_qkv`,
/// `in_proj_z`, `in_proj_b`, `in_proj_a`) or `full_attention` (gated
/// attention), with (1 + weight) RMSNorms and, in the dense models, a
/// SwiGLU MLP; in the MoE models every layer's MLP is `QwenExperts`' with
/// Qwen3_5MoeTextConfig's defaults (softmax top-k experts, always
/// renormalised, plus a shared expert behind a sigmoid gate). The
/// multimodal rope sections are the plain partial rotary on text, where
/// every position id of a token is the same.
struct Qwen3_5Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let layers: HybridQwenLayers
    /// nil in the dense models.
    let experts: QwenExperts?

    init(_ checkpoint: Checkpoint) throws {
        // Qwen3.5's own wrappers, or another's language model (MiniCPM-V 4.6's: `Llava`).
        let multimodal = ["qwen3_5", "qwen3_5_moe"].contains(checkpoint.modelType)
        let moe = try Llava.languageModelType(checkpoint).hasPrefix("qwen3_5_moe")
        var defaults = ConfigValueKinds.omittedDefaultValues(of: moe ? "qwen3_5_moe_text" : "qwen3_5_text")
        defaults["head_dim"] = .integer(256)
        var placement: TextModelPlacement = multimodal
            ? .wrapped(
                textDefaults: defaults, prefixes: ["model.language_model."],
                tiedEmbeddings: try checkpoint.decodeConfig(MultimodalWrapperKeys.self).tieWordEmbeddings ?? false)
            : try .topLevelOrWrapped(checkpoint, defaults: defaults)
        if placement.section.name == nil {
            // The text model's conversion mapping strips a wrapper's `model.language_model.` (PrefixChange).
            placement.prefixes.append("model.language_model.")
        }
        let experts = moe ? try QwenExperts(checkpoint, section: placement.section, configClass: .qwen3_5Moe) : nil
        if let experts {
            // Qwen3_5MoeTextConfig has no dense MLP width: every layer is sparse.
            placement.section.defaults["intermediate_size"] = .integer(experts.moeIntermediateSize)
        }
        self.experts = experts
        parts = try DecoderParts(checkpoint, placement: placement, naming: { HybridQwenLayers.naming($0) }, experts: experts?.naming)
        layers = try HybridQwenLayers(parts)
        try experts?.confirm(parts)
        // Qwen3_5TextRotaryEmbedding indexes mrope_section's items 1 and 2 on text too.
        let rope = parts.sectionDocument?.member("rope_parameters")
        if case .object? = rope {
            try parts.checks {
                try MropeSection.interleaved(className: "Qwen3_5TextRotaryEmbedding").check(
                    rope?.member("mrope_section"), defaultSection: [11, 11, 10], key: "rope_parameters.mrope_section")
            }
        }
    }

    /// An export without some blocks spells out the remaining layers' types.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.layerTypes = layers.layerTypes
        return naming
    }

    func head() throws -> OutputHead { try layers.head() }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let h = layers.heads, d = hiddenSize, weights = parts.weights
        return try layers.block(index, drops: plan.union(configuredDrops)) { prefix in
            try weights.stackedLinear(
                [prefix + "in_proj_qkv", prefix + "in_proj_z", prefix + "in_proj_b", prefix + "in_proj_a"], in: d,
                outs: [h.convolutionChannels, h.valueWidth, h.valueHeads, h.valueHeads], bias: false)
        } feedForward: {
            let activation = try parts.activation(layers.config.hiddenAct)
            if let experts { return try experts.feedForward(parts, layer: index, activation: activation) }
            return try weights.gatedMLP(
                "layers.\(index).mlp.", hidden: d, inner: parts.dimensions.intermediateSize, activation: activation)
        }
    }
}

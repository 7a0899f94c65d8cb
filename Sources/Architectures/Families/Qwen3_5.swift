import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The Gated DeltaNet sizes of config.json (or of its `text_config`):
/// Qwen3NextConfig's `linear_*` keys, which Qwen3_5TextConfig and
/// LaraMiniConfig inherit with their own defaults, as written (absent: nil).
struct GatedDeltaNetKeys: Decodable {
    var convolutionKernel: Int?
    var keyHeadDim: Int?
    var valueHeadDim: Int?
    var keyHeads: Int?
    var valueHeads: Int?

    enum CodingKeys: String, CodingKey {
        case convolutionKernel = "linear_conv_kernel_dim"
        case keyHeadDim = "linear_key_head_dim"
        case valueHeadDim = "linear_value_head_dim"
        case keyHeads = "linear_num_key_heads"
        case valueHeads = "linear_num_value_heads"
    }

    /// Qwen3NextConfig's and Qwen3_5TextConfig's defaults: 16 query/key
    /// heads and 32 value heads of 128, a 4-tap convolution.
    static let qwen3NextDefaults = GatedDeltaNetHeads(keyHeads: 16, valueHeads: 32, keyDim: 128, valueDim: 128, convolutionKernel: 4)

    /// The layers' sizes, the keys config.json omits taking `defaults`'.
    /// - Throws: `InvalidConfigValue` naming the key of a size below 1, of
    ///   value heads that are not a multiple of the key heads (the config
    ///   classes' `validate_architecture` refuses them; each key head serves
    ///   a group of value heads), or of projections whose element count
    ///   (4 × heads × width × `hidden`) would not fit.
    func heads(defaults: GatedDeltaNetHeads, hidden: Int) throws -> GatedDeltaNetHeads {
        let kernel = try ConfigRules.count(convolutionKernel ?? defaults.convolutionKernel, "linear_conv_kernel_dim")
        let keyDim = try ConfigRules.count(keyHeadDim ?? defaults.keyDim, "linear_key_head_dim")
        let valueDim = try ConfigRules.count(valueHeadDim ?? defaults.valueDim, "linear_value_head_dim")
        let keyHeads = try ConfigRules.count(keyHeads ?? defaults.keyHeads, "linear_num_key_heads")
        let valueHeads = try ConfigRules.count(valueHeads ?? defaults.valueHeads, "linear_num_value_heads")
        if valueHeads % keyHeads != 0 {
            throw InvalidConfigValue(
                key: "linear_num_value_heads", problem: "\(valueHeads) is not a multiple of linear_num_key_heads \(keyHeads)")
        }
        _ = try ConfigRules.product([
            (keyHeads, "linear_num_key_heads"), (keyDim, "linear_key_head_dim"), (hidden, "hidden_size"), (4, "q, k, v and z"),
        ])
        _ = try ConfigRules.product([
            (valueHeads, "linear_num_value_heads"), (valueDim, "linear_value_head_dim"), (hidden, "hidden_size"), (4, "q, k, v and z"),
        ])
        return GatedDeltaNetHeads(keyHeads: keyHeads, valueHeads: valueHeads, keyDim: keyDim, valueDim: valueDim, convolutionKernel: kernel)
    }
}

/// The keys of config.json (or of its `text_config`) the hybrid Qwen
/// models share (Qwen3NextConfig's, which Qwen3_5TextConfig inherits), with
/// their defaults.
struct HybridQwenConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var attentionBias: Bool
    var layerTypes: [String]?
    var fullAttentionInterval: Int
    /// The Gated DeltaNet sizes as written (defaults: `GatedDeltaNetKeys.qwen3NextDefaults`).
    var deltaNet: GatedDeltaNetKeys

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case layerTypes = "layer_types"
        case fullAttentionInterval = "full_attention_interval"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        fullAttentionInterval = try c.decodeIfPresent(Int.self, forKey: .fullAttentionInterval) ?? 4
        deltaNet = try GatedDeltaNetKeys(from: decoder)
        try ConfigRules.decodingChecks {
            if layerTypes == nil { try ConfigRules.count(fullAttentionInterval, "full_attention_interval") }
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

    /// `indexedSpelling`: another name config.json may give the full
    /// attention layers (Qwen4-Exp's "indexed_attention"), read as full_attention.
    /// `indexedSpelling`: the layer type read as "full_attention" (Qwen4-Exp's
    /// "indexed_attention"); `partialRotary`: the rotated fraction of a head
    /// where `partial_rotary_factor` is absent (Qwen3-Next's and Qwen3.5's 0.25;
    /// Qwen4-Exp's rotary embedding and config take 1.0).
    init(_ parts: DecoderParts, indexedSpelling: String? = nil, partialRotary: Double = 0.25) throws {
        self.parts = parts
        config = try parts.config(HybridQwenConfiguration.self)
        let config = config
        let layers = parts.dimensions.numHiddenLayers
        let layerTypes = config.resolvedLayerTypes(layers: layers).map { $0 == indexedSpelling ? AttentionLayerType.full : $0 }
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
        }
        heads = try parts.checks {
            try config.deltaNet.heads(defaults: GatedDeltaNetKeys.qwen3NextDefaults, hidden: parts.dimensions.hiddenSize)
        }
        try parts.confirmGatedDeltaNet(heads, layers: layerTypes.indices.filter { layerTypes[$0] == HybridQwenConfiguration.linear })
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
        rotary = try parts.rotary(partialRotary: .honoured(default: partialRotary), confirmProjections: false)
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
            let prefix = p + "linear_attn."
            return .gatedDeltaNet(try parts.gatedDeltaNet(
                prefix, heads: heads, projection: try linearProjection(prefix), eps: config.rmsNormEps, activation: config.hiddenAct))
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

extension DecoderParts {
    /// The Gated DeltaNet of `heads` under `prefix` as Qwen3NextGatedDeltaNet
    /// builds it (Qwen3.5's and LaraMini's too): `projection` its input
    /// projection (rows q | k | v | z | b | a, as the family stores or
    /// reorders them), `conv1d` taps [channels, 1, kernel] without a bias,
    /// `A_log` and `dt_bias` [valueHeads], the gated RMSNorm `norm`
    /// [valueDim] (its weight as stored, epsilon `eps`: rms_norm_eps),
    /// `out_proj` [hidden, valueWidth]; the convolution activated by
    /// `activation` (hidden_act; the gated norm's gate stays SiLU).
    func gatedDeltaNet(
        _ prefix: String, heads h: GatedDeltaNetHeads, projection: Linear, eps: Double, activation: String, outputGate: Activation = .silu
    ) throws -> GatedDeltaNet {
        GatedDeltaNet(
            heads: h, projection: projection,
            convolution: try weights.floats(prefix + "conv1d.weight", [h.convolutionChannels, 1, h.convolutionKernel]),
            logDecayRates: try weights.floats(prefix + "A_log", [h.valueHeads]),
            timeStepBias: try weights.floats(prefix + "dt_bias", [h.valueHeads]),
            norm: try weights.rmsNorm(prefix + "norm", size: h.valueDim, eps: eps),
            output: try weights.linear(prefix + "out_proj", in: h.valueWidth, out: dimensions.hiddenSize, bias: false),
            convolutionActivation: try self.activation(activation), outputGateActivation: outputGate)
    }

    /// Confirms the Gated DeltaNet sizes by the first of `layers` (the
    /// linear ones) whose mixer the config keeps, before anything is sized
    /// from them: its `conv1d` [2 · keyWidth + valueWidth, 1, kernel],
    /// `A_log` [valueHeads] and `out_proj` [hidden, valueWidth].
    /// - Throws: `DroptraceError` naming config.json, the keys and the tensor.
    func confirmGatedDeltaNet(_ h: GatedDeltaNetHeads, layers: [Int]) throws {
        guard let layer = layers.first(where: { !configuredDrops.dropsAttention($0) }) else { return }
        let p = "layers.\(layer).linear_attn.", key = section.qualified
        let values = "\(key("linear_num_value_heads")) × \(key("linear_value_head_dim"))"
        try weights.confirmShape(
            p + "conv1d.weight", [h.convolutionChannels, 1, h.convolutionKernel],
            keys: "2 × \(key("linear_num_key_heads")) × \(key("linear_key_head_dim")) + \(values), \(key("linear_conv_kernel_dim"))",
            configPath: configPath)
        try weights.confirmShape(p + "A_log", [h.valueHeads], keys: key("linear_num_value_heads"), configPath: configPath)
        try weights.confirmShape(
            p + "out_proj.weight", [dimensions.hiddenSize, h.valueWidth], keys: "\(key("hidden_size")), \(values)", configPath: configPath)
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
        let d = hiddenSize, weights = parts.weights
        return try layers.block(index, drops: plan.union(configuredDrops)) { prefix in
            try weights.gatedDeltaNetProjection(prefix, heads: layers.heads, hidden: d)
        } feedForward: {
            let activation = try parts.activation(layers.config.hiddenAct)
            if let experts { return try experts.feedForward(parts, layer: index, activation: activation) }
            return try weights.gatedMLP(
                "layers.\(index).mlp.", hidden: d, inner: parts.dimensions.intermediateSize, activation: activation)
        }
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `cohere_compass_text` (or the `text_config` of
/// `cohere_compass`), with CohereCompassTextConfig's defaults.
struct CohereCompassConfiguration: Decodable {
    /// The defaults of the text config class, for a `cohere_compass`
    /// checkpoint's `text_config` (CohereCompassConfig builds it as
    /// CohereCompassTextConfig whatever its `model_type` says).
    static var textDefaults: [String: ConfigDefault] {
        var defaults = ConfigValueKinds.omittedDefaultValues(of: "cohere_compass_text")
        defaults["model_type"] = .string("cohere_compass_text")
        return defaults
    }

    /// The epsilon of every CohereCompassLayerNorm.
    var layerNormEps: Double
    var hiddenAct: String
    /// Multiplies the logits; null (the default) none.
    var logitScale: Float?
    /// Biases on q/k/v_proj and o_proj alike.
    var attentionBias: Bool
    /// As written: absent is 4096, `null` none.
    var slidingWindow: Int?
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case layerNormEps = "layer_norm_eps"
        case hiddenAct = "hidden_act"
        case logitScale = "logit_scale"
        case attentionBias = "attention_bias"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layerNormEps = try c.decodeIfPresent(Double.self, forKey: .layerNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : 4096
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        let scale = try c.decodeIfPresent(Double.self, forKey: .logitScale)
        let layerNormEps = layerNormEps
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(layerNormEps, "layer_norm_eps")
            if let scale, !(scale.isFinite && Float(scale).isFinite) {
                throw InvalidConfigValue(key: "logit_scale", problem: "must be a finite number that float32 holds, got \(scale)")
            }
        }
        logitScale = scale.map(Float.init)
    }
}

/// CohereCompass (Cohere's North models; transformers' models/cohere_compass/):
/// Cohere's parallel block off one mean-centred LayerNorm without a bias —
/// y = x + o_proj(attn(ln x)) + down(act(gate(ln x)) · up(ln x)) —, with
/// the usual rotation of each head's halves (not Cohere's interleaved
/// pairs), layers of `layer_types` (all full by default; sliding ones within
/// `sliding_window`, 4096), each type rotating by its own entry of
/// `rope_parameters` (a null entry: no positions), q/k/v/o biases by
/// `attention_bias`, heads `head_dim` wide (by default hidden_size /
/// num_attention_heads, which CohereCompassTextConfig sets), a tied
/// head by default and logits multiplied by `logit_scale` when set.
///
/// `cohere_compass` is the vision-language wrapper: the language model's
/// keys under `text_config`, its weights under `model.language_model.`, the
/// head `lm_head`, tied only by the top-level `tie_word_embeddings`
/// (CohereCompassConfig's, default false). Its M-RoPE gives text tokens
/// the same position on every axis, which is the plain rotation; the
/// vision tower is never read.
struct CohereCompassModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: CohereCompassConfiguration
    let layerTypes: [String]
    /// The rotary embedding of each layer type that takes positions.
    let rotaries: [String: RotaryEmbedding]

    init(_ checkpoint: Checkpoint) throws {
        let placement = try Self.placement(checkpoint)
        // CohereCompassTextConfig declares no head_dim: a written one reaches the attention as it is.
        try checkpoint.requireIntegers(["head_dim"], section: placement.section, reader: "CohereCompassAttention")
        parts = try DecoderParts(checkpoint, placement: placement, naming: CohereModel.naming)
        let config = try parts.config(CohereCompassConfiguration.self)
        self.config = config
        // create_sliding_window_causal_mask fails without a window, whatever the layers' types.
        try parts.requireWindow(config.slidingWindow, builtBy: "CohereCompassTextModel")
        let types = try parts.layerTypes(config.layerTypes, slidingWindow: config.slidingWindow) { _ in AttentionLayerType.full }
        layerTypes = types
        try parts.confirmAttentionProjections()
        try Self.checkMropeSections(parts, types: Set(types))
        // compute_default_rope_parameters rotates whole heads, whatever the entry's partial_rotary_factor.
        rotaries = try parts.rotariesAsWritten(
            types: Set(types), defaults: [:], rotaryClass: "CohereCompassRotaryEmbedding", attentionClass: "CohereCompassAttention",
            partialRotary: { _ in .ignored }, nullIsNoPositions: true, inheritsPartialRotaryFactor: true)
    }

    /// Refuses an `mrope_section` in a used type's rope entry that
    /// CohereCompassRotaryEmbedding cannot index (`MropeSection.interleaved`).
    static func checkMropeSections(_ parts: DecoderParts, types: Set<String>) throws {
        let entries = parts.sectionDocument?.member("rope_parameters")
        for type in types.sorted() {
            guard let entry = entries?.member(type), case .object = entry else { continue }
            try parts.checks {
                try MropeSection.interleaved(className: "CohereCompassRotaryEmbedding").check(
                    entry.member("mrope_section"), defaultSection: [24, 20, 20],
                    key: "rope_parameters.\(type).mrope_section")
            }
        }
    }

    /// The top level for `cohere_compass_text`, the wrapper's language model for `cohere_compass`.
    static func placement(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        guard checkpoint.modelType == "cohere_compass" else { return .topLevel }
        let wrapper = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
        return .wrapped(
            textDefaults: CohereCompassConfiguration.textDefaults, prefixes: ["model.language_model."],
            tiedEmbeddings: wrapper.tieWordEmbeddings ?? false)
    }

    /// Exports without some blocks spell out the kept layers' types.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes)
    }

    func norm(_ name: String) throws -> Normalization {
        try CohereModel.layerNorm(parts.weights, name, size: hiddenSize, eps: config.layerNormEps)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: norm("norm"), logitScale: config.logitScale)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index).", type = layerTypes[index]
        return try CohereModel.parallelBlock(
            index, drops: plan.union(configuredDrops), norm: { try norm(p + "input_layernorm") },
            attention: {
                try parts.attention(
                    p + "self_attn.", bias: config.attentionBias, rotary: rotaries[type],
                    slidingWindow: type == AttentionLayerType.sliding ? config.slidingWindow : nil)
            },
            feedForward: {
                try parts.weights.gatedMLP(
                    p + "mlp.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.hiddenAct), bias: false)
            })
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `arcee`, with ArceeConfig's defaults
/// (transformers' `models/arcee/configuration_arcee.py`), or of `jais2`,
/// with Jais2Config's: LayerNorms (`layer_norm_eps`, default 1e-5) in place
/// of the RMSNorms, q/k/v/o and MLP biases on unless config.json says
/// otherwise; or the `text_config` of `cosmos3_edge` (Cosmos3EdgeTextConfig:
/// RMSNorms of `rms_norm_eps` 1e-5, no biases by default, the MLP's
/// projections named `fc1` and `fc2`).
struct ArceeConfiguration: Decodable {
    /// The norms' epsilon: `rms_norm_eps` (arcee) or `layer_norm_eps` (jais2).
    var normEps: Double
    /// Jais 2's LayerNorms with biases, not RMSNorms.
    var layerNorms: Bool
    /// The MLP's activation: ReLU² (`relu2`) unless given.
    var hiddenAct: String
    /// Biases on q/k/v_proj and o_proj alike.
    var attentionBias: Bool
    /// Biases on up_proj and down_proj.
    var mlpBias: Bool
    /// The MLP's two projections: `up_proj` and `down_proj`, or Cosmos3-Edge's `fc1` and `fc2`.
    var mlpNames: (up: String, down: String)

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case rmsNormEps = "rms_norm_eps"
        case layerNormEps = "layer_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let modelType = try c.decode(String.self, forKey: .modelType)
        layerNorms = modelType == "jais2"
        mlpNames = modelType == "cosmos3_edge_text" ? ("fc1", "fc2") : ("up_proj", "down_proj")
        normEps = layerNorms
            ? try c.decodeIfPresent(Double.self, forKey: .layerNormEps) ?? 1e-5 : try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "relu2"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? layerNorms
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? layerNorms
        let eps = normEps, key = layerNorms ? "layer_norm_eps" : "rms_norm_eps"
        try ConfigRules.decodingChecks { try ConfigRules.positive(eps, key) }
    }

    /// Every norm of the model: Jais 2's LayerNorms or Arcee's RMSNorms.
    var normKind: NormKind { layerNorms ? .layer : .rms }
}

/// Arcee (arcee-ai/AFM-4.5B), as transformers'
/// `models/arcee/modeling_arcee.py` runs it: Llama's pre-RMSNorm blocks and
/// rotary grouped-query attention (q/k/v/o biases by `attention_bias`), with
/// a non-gated MLP down(act(up(x))) whose activation is ReLU² unless
/// `hidden_act` says otherwise (biases by `mlp_bias`); untied head by default.
/// Jais 2 (`jais2`, transformers' models/jais2/modeling_jais2.py: inceptionai/Jais-2-8B)
/// is the same model with LayerNorms (weight and bias) for every norm and
/// its biases on by default.
///
/// Cosmos3-Edge (`cosmos3_edge`, NVIDIA's Cosmos3EdgeForConditionalGeneration;
/// transformers' models/cosmos3_edge/) holds the same block as its language
/// model (`text_config`, weights under `model.language_model.`; its unified
/// checkpoints' names, the attention's as Diffusers names them and the MLP's
/// `up_proj` / `down_proj`, read as transformers renames them, their
/// generation branches not read): RMSNorms, `head_dim` 128 by default,
/// rotation by interleaved M-RoPE at base 1e8 (the plain rotation on text;
/// only rope type "default", and an `mrope_section` of three integers
/// summing to head_dim / 2, as its config class validates). Its head is
/// never tied to the embedding (the class ties no weights, whatever
/// `tie_word_embeddings` says).
struct ArceeModel: DecoderFamily {
    let parts: DecoderParts
    let config: ArceeConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        guard checkpoint.modelType != "cosmos3_edge" else {
            parts = try DecoderParts(checkpoint, placement: try Self.cosmos3EdgePlacement(checkpoint), naming: LlamaModel.naming)
            config = try parts.config(ArceeConfiguration.self)
            rotary = try Self.cosmos3EdgeRotary(parts)
            return
        }
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming)
        // ArceeConfig's validate_architecture refuses heads that do not split
        // hidden_size, whatever head_dim says.
        let d = parts.dimensions
        try ConfigRules.checks(path: parts.configPath) {
            try ConfigRules.divides(d.numAttentionHeads, "num_attention_heads", d.hiddenSize, "hidden_size")
        }
        config = try parts.config(ArceeConfiguration.self)
        rotary = try parts.rotary()
    }

    /// Cosmos3-Edge's language model: `text_config` (Cosmos3EdgeTextConfig
    /// whatever its model_type says), under `model.language_model.`, untied.
    static func cosmos3EdgePlacement(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        var placement = try TextModelPlacement.ownTextConfig(checkpoint, prefixes: ["model.language_model."], textTiesToo: false)
        placement.tiedEmbeddings = false
        placement.section.overrides["model_type"] = .string("cosmos3_edge_text")
        return placement
    }

    /// Cosmos3EdgeTextRotaryEmbedding (Qwen3-VL's) as Cosmos3EdgeTextConfig
    /// validates its parameters: rope type "default", base 1e8 unless given,
    /// `mrope_section` [24, 20, 20] unless given.
    static func cosmos3EdgeRotary(_ parts: DecoderParts) throws -> RotaryEmbedding {
        let (settings, key, _) = try parts.ropeSettings(defaults: [:])
        guard settings.type == "default" else {
            throw InvalidConfigValue(key: parts.section.qualified(key + ".rope_type"), problem: "is \"\(settings.type)\": Cosmos3-Edge requires \"default\"")
                .error(path: parts.configPath)
        }
        return try parts.mropeRotary(
            interleavedBy: "Cosmos3EdgeTextRotaryEmbedding", runsSummingTo: parts.dimensions.resolvedHeadDim / 2,
            defaultSection: [24, 20, 20], defaultTheta: 100_000_000)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.norm(config.normKind, "norm", size: hiddenSize, eps: config.normEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let weights = parts.weights, d = hiddenSize, inner = parts.dimensions.intermediateSize
        let p = "layers.\(index)."
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.normEps, normKind: config.normKind,
            attention: { try parts.attention(p + "self_attn.", bias: config.attentionBias, rotary: rotary) },
            feedForward: {
                .plain(
                    up: try weights.linear(p + "mlp." + config.mlpNames.up, in: d, out: inner, bias: config.mlpBias),
                    down: try weights.linear(p + "mlp." + config.mlpNames.down, in: inner, out: d, bias: config.mlpBias),
                    activation: try parts.activation(config.hiddenAct))
            })
    }
}

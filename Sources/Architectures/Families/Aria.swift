import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `aria_text` (AriaTextConfig, also `aria`'s `text_config`)
/// with the class's defaults (transformers' `models/aria/configuration_aria.py`).
struct AriaConfiguration: Decodable {
    var rmsNormEps: Double
    /// The shared experts' activation (the routed experts always take SiLU).
    var hiddenAct: String
    var attentionBias: Bool
    /// Biases on the shared experts' projections.
    var mlpBias: Bool
    var experts: Int
    var expertsPerToken: Int
    var sharedExperts: Int

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case moeNumExperts = "moe_num_experts"
        case moeTopk = "moe_topk"
        case moeNumSharedExperts = "moe_num_shared_experts"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        experts = try c.decodeIfPresent(Int.self, forKey: .moeNumExperts) ?? 8
        expertsPerToken = try c.decodeIfPresent(Int.self, forKey: .moeTopk) ?? 2
        sharedExperts = try c.decodeIfPresent(Int.self, forKey: .moeNumSharedExperts) ?? 2
    }

    /// Refuses what AriaTextConfig's validation or the model's construction
    /// refuses, before anything is sized from it.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, CodingKeys.rmsNormEps.rawValue)
        // AriaTextConfig.validate_architecture, whatever head_dim says.
        guard d.hiddenSize % d.numAttentionHeads == 0 else {
            throw InvalidConfigValue(
                key: "num_attention_heads",
                problem: "is \(d.numAttentionHeads), which does not divide hidden_size \(d.hiddenSize): AriaTextConfig refuses it")
        }
        try ConfigRules.count(experts, CodingKeys.moeNumExperts.rawValue)
        try MixtureOfExperts.checkExpertsPerToken(expertsPerToken, of: experts, expertsKey: "moe_num_experts", key: "moe_topk")
        try ConfigRules.nonNegative(sharedExperts, CodingKeys.moeNumSharedExperts.rawValue)
        let (inner, hidden) = ((d.intermediateSize, "intermediate_size"), (d.hiddenSize, "hidden_size"))
        try ConfigRules.product([(experts, "moe_num_experts"), (2, "gate and up"), inner, hidden])
        try ConfigRules.product([(sharedExperts, "moe_num_shared_experts"), inner, (2, "gate and up"), hidden])
    }
}

/// Aria (`aria_text`: AriaTextForCausalLM; `aria`: rhymes-ai/Aria,
/// AriaForConditionalGeneration read as its language model under
/// `text_config`; transformers' `models/aria/modeling_aria.py`): Llama's
/// attention (biases by `attention_bias`) in pre-RMSNorm blocks whose MLP is,
/// on every layer, a mixture: the `moe_topk` largest of `moe_num_experts`
/// router logits (`mlp.router`), softmaxed among themselves, weigh
/// SiLU-gated experts `intermediate_size` wide, plus one shared SwiGLU MLP
/// `moe_num_shared_experts` × `intermediate_size` wide taking `hidden_act`
/// (biased by `mlp_bias`). The MLP module is router, routed and shared
/// experts together.
///
/// The experts are stored fused with their projections [in, out] (as grouped
/// matrix products take them): `mlp.experts.fc1.weight` [experts, hidden,
/// 2 · inner] (gate columns, then up) and `fc2.weight` [experts, inner,
/// hidden] as released and as `save_pretrained` writes them, or as
/// transformers renames them, `gate_up_proj` / `down_proj`. The wrapper's
/// weights are under `language_model.model.` (as released) or
/// `model.language_model.`, its head `language_model.lm_head` or `lm_head`,
/// tied only by the top level's `tie_word_embeddings` (default false); the
/// vision tower and projector are never read.
struct AriaModel: DecoderFamily {
    let parts: DecoderParts
    let config: AriaConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        var placement = TextModelPlacement.topLevel
        if checkpoint.modelType == "aria" {
            placement = try .ownTextConfig(
                checkpoint, defaults: ["model_type": .string("aria_text")], prefixes: ["model.language_model.", "language_model.model.", "language_model."],
                textTiesToo: false)
        }
        let config = try checkpoint.decodeConfig(AriaConfiguration.self, section: placement.section)
        let dimensions = try checkpoint.decodeConfig(DecoderDimensions.self, section: placement.section)
        try ConfigRules.checks(path: checkpoint.configURL.path, section: placement.section) { try config.check(dimensions) }
        self.config = config
        parts = try DecoderParts(checkpoint, placement: placement, naming: LlamaModel.naming)
        rotary = try parts.rotary()
        guard let layer = (0..<layerCount).first(where: { !configuredDrops.dropsMLP($0) }) else { return }
        let key = parts.section.qualified("moe_num_experts")
        try parts.weights.confirmShape(
            "layers.\(layer).mlp.router.weight", [config.experts, hiddenSize], keys: "\(key), hidden_size", configPath: parts.configPath)
        try parts.weights.confirmShape(
            try expertsName(layer: layer, "fc1", "gate_up_proj"), [config.experts, hiddenSize, 2 * parts.dimensions.intermediateSize],
            keys: "\(key), hidden_size, 2 × \(parts.section.qualified("intermediate_size"))", configPath: parts.configPath)
    }

    /// Layer `layer`'s fused expert tensor `released` (`fc1`, `fc2`) or its
    /// name in transformers' module (`renamed`), whichever is stored.
    /// - Throws: `DroptraceError` when both are.
    func expertsName(layer: Int, _ released: String, _ renamed: String) throws -> String {
        let p = "layers.\(layer).mlp.experts."
        return try parts.weights.storedName(saved: p + released + ".weight", renamed: p + renamed)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index)."
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try parts.attention(p + "self_attn.", bias: config.attentionBias, rotary: rotary) },
            feedForward: { .mixture(try mixture(layer: index)) })
    }

    /// Layer `index`'s router, routed experts and shared experts.
    func mixture(layer index: Int) throws -> MixtureOfExperts {
        let p = "layers.\(index).mlp.", weights = parts.weights, d = hiddenSize, inner = parts.dimensions.intermediateSize
        return MixtureOfExperts(
            router: try weights.linear(p + "router", in: d, out: config.experts, bias: false),
            experts: try weights.inByOutGatedExperts(
                gateUp: try expertsName(layer: index, "fc1", "gate_up_proj"), down: try expertsName(layer: index, "fc2", "down_proj"),
                count: config.experts, hidden: d, inner: inner, activation: .silu),
            expertsPerToken: config.expertsPerToken, rule: .topKThenSoftmax,
            sharedExperts: try weights.sharedExperts(
                p + "shared_experts.", hidden: d, inner: inner * config.sharedExperts, activation: try parts.activation(config.hiddenAct),
                bias: config.mlpBias, widthKeys: "intermediate_size × moe_num_shared_experts"))
    }
}

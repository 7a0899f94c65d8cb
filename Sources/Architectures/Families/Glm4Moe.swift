import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `glm4_moe`'s config.json besides the sizes, with
/// Glm4MoeConfig's defaults, or those of the subclasses Glm4MoeForCausalLM
/// also runs (`Glm4MoeConfiguration.subclasses`).
struct Glm4MoeConfiguration: Decodable {
    /// Glm4MoeConfig's subclasses (transformers 5.25) and what they change:
    /// the experts' defaults, q/k norms and a whole-head rotation by default,
    /// another rope base, and attention stored as the releases store it
    /// (`query_key_value`, which transformers splits, under names its
    /// renaming turns into Glm4MoeAttention's: `TensorRenamings`).
    static let subclasses: [String: (experts: DeepSeekExperts.ConfigClass, defaultTheta: Double)] = [
        "param2moe": (.param2Moe, 500_000), "sarvam_moe": (.sarvamMoe, 8_000_000),
    ]

    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v_proj (o_proj never has one).
    var attentionBias: Bool
    /// An RMSNorm over each head's head_dim columns of the queries and of
    /// the keys (`q_norm`, `k_norm`) before rotary.
    var useQKNorm: Bool
    var firstKDenseReplace: Int
    /// The routed layers' keys.
    var experts: DeepSeekExperts
    /// `num_nextn_predict_layers` (`num_mtp_layers`): multi-token-prediction
    /// layers stored after the decoder's (layer 92 of GLM-4.5, 46 of
    /// GLM-4.5-Air), which the causal LM does not run.
    var predictionLayers: Int
    /// The subclass's model type (`subclasses`), nil for glm4_moe's own.
    var subclass: String?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case useQKNorm = "use_qk_norm"
        case firstKDenseReplace = "first_k_dense_replace"
        case numNextnPredictLayers = "num_nextn_predict_layers"
        case numMtpLayers = "num_mtp_layers"
        case modelType = "model_type"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        let modelType = try c.decodeIfPresent(String.self, forKey: .modelType)
        let subclass = modelType.flatMap { Self.subclasses[$0] }
        self.subclass = subclass == nil ? nil : modelType
        useQKNorm = try c.decodeIfPresent(Bool.self, forKey: .useQKNorm) ?? (subclass != nil)
        firstKDenseReplace = try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? 1
        experts = try DeepSeekExperts(from: decoder, configClass: subclass?.experts ?? .glm4Moe)
        let nextn = try c.decodeIfPresent(Int.self, forKey: .numNextnPredictLayers)
        let mtp = try c.decodeIfPresent(Int.self, forKey: .numMtpLayers)
        predictionLayers = mtp ?? nextn ?? 1
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let nextn, let mtp, nextn != mtp {
                throw InvalidConfigValue(
                    key: "num_nextn_predict_layers", problem: "is \(nextn), but num_mtp_layers (the same setting) is \(mtp)")
            }
            try ConfigRules.nonNegative(predictionLayers, mtp == nil ? "num_nextn_predict_layers" : "num_mtp_layers")
        }
    }

    /// The q | k | v projection the subclasses' checkpoints store (transformers splits it), else none.
    var fusedQKV: String? { subclass == nil ? nil : "query_key_value" }

    /// Whether layer `index`'s MLP is the routed experts (Glm4MoeDecoderLayer's rule).
    func isSparse(_ index: Int) -> Bool { index >= firstKDenseReplace }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        try ConfigRules.nonNegative(firstKDenseReplace, "first_k_dense_replace")
        // Routed layers exist only past the dense ones.
        guard firstKDenseReplace < d.numHiddenLayers else { return }
        try experts.check(hidden: d.hiddenSize)
    }
}

/// GLM-4.5, GLM-4.5-Air and GLM-4.6 (`glm4_moe`; transformers'
/// `models/glm4_moe/modeling_glm4_moe.py`): Llama's pre-RMSNorm blocks
///
///     H = X + Attn(RMSNorm X),   Y = H + MLP(RMSNorm H)
///
/// whose attention has q/k/v biases when `attention_bias` (none on o_proj),
/// a per-head RMSNorm of queries and keys when `use_qk_norm`, and rotary
/// on the halves (not interleaved pairs) of the first
/// `partial_rotary_factor` (default 0.5) of each head. Layers below
/// `first_k_dense_replace` (default 1) have a dense SwiGLU MLP of width
/// `intermediate_size`; the others DeepSeek-V3's mixture of experts
/// (`GroupRoutedMixture`): a sigmoid router `mlp.gate` choosing
/// `num_experts_per_tok` of `n_routed_experts` within the best `topk_group`
/// of `n_group` groups, ranked with `gate.e_score_correction_bias`, plus
/// `n_shared_experts` always-on shared experts (`mlp.shared_experts`). The
/// MLP module is router, routed and shared experts together: dropping the
/// MLP drops all of it.
///
/// Routed experts are read per expert (`mlp.experts.<e>.gate_proj|up_proj|
/// down_proj`, as the released checkpoints and `save_pretrained` write
/// them) or fused (`mlp.experts.gate_up_proj` / `down_proj`).
///
/// Also the language model of `glm4v_moe` (Glm4vMoeForConditionalGeneration:
/// GLM-4.5V): this block under `text_config` with Glm4vMoeTextConfig's
/// defaults (q/k/v biases, no q/k norms: `use_qk_norm` is not read), M-RoPE
/// (the plain rotation on text), weights under `model.language_model.`,
/// the head tied by the top-level or the text config's `tie_word_embeddings`.
struct Glm4MoeModel: DecoderFamily {
    let parts: DecoderParts
    let config: Glm4MoeConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        let vision = checkpoint.modelType == "glm4v_moe"
        var placement = TextModelPlacement.topLevel
        if vision {
            // Glm4vMoeTextConfig: q/k/v biases by default, no q/k norms.
            placement = try .ownTextConfig(checkpoint, defaults: ["attention_bias": true], textTiesToo: true)
            placement.section.overrides["use_qk_norm"] = .null
        }
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(Glm4MoeConfiguration.self, section: placement.section)
        self.config = config
        parts = try DecoderParts(
            checkpoint, placement: placement, naming: LlamaModel.naming, extraLayers: config.predictionLayers,
            experts: config.experts.naming(isSparse: config.isSparse))
        let d = parts.dimensions
        try parts.checks { try config.check(d) }
        // The subclasses rotate whole heads unless partial_rotary_factor says otherwise.
        let subclass = config.subclass.flatMap { Glm4MoeConfiguration.subclasses[$0] }
        try parts.confirmAttentionProjections(fused: config.fusedQKV)
        rotary = vision
            ? try parts.mropeRotary(defaultSection: [8, 12, 12], defaultTheta: 10_000, partialRotary: .honoured(default: 0.5))
            : try parts.rotary(
                defaultTheta: subclass?.defaultTheta ?? 10_000, partialRotary: .honoured(default: subclass == nil ? 0.5 : 1),
                confirmProjections: false)
        try config.experts.confirm(parts, isSparse: config.isSparse)
    }

    /// An export without some blocks writes `first_k_dense_replace` for the
    /// kept layers also where config.json leaves it to its default.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.layerThresholds["first_k_dense_replace"] = config.firstKDenseReplace
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try attention(layer: index) }, feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s attention (Glm4MoeAttention): scale head_dim^-1/2.
    func attention(layer index: Int) throws -> SelfAttention {
        let p = "layers.\(index).self_attn.", width = parts.attentionLayout.headDim, eps = config.rmsNormEps
        let norms: QueryKeyNorm? =
            config.useQKNorm
            ? .perHead(
                query: try parts.weights.rmsNorm(p + "q_norm", size: width, eps: eps),
                key: try parts.weights.rmsNorm(p + "k_norm", size: width, eps: eps))
            : nil
        return try parts.attention(p, bias: config.attentionBias, outputBias: false, rotary: rotary, queryKeyNorm: norms, fusedQKV: config.fusedQKV)
    }

    /// Layer `index`'s MLP: dense below `first_k_dense_replace`, else router,
    /// routed experts and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        try config.experts.feedForward(parts, layer: index, sparse: config.isSparse(index), activation: try parts.activation(config.hiddenAct))
    }
}

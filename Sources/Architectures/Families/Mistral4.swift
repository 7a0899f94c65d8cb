import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `mistral4`'s config.json besides the sizes, with
/// Mistral4Config's defaults.
struct Mistral4Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var latent: LatentAttentionSettings
    /// nil when config.json writes null (transformers then cannot compare a layer index with it: refused).
    var firstKDenseReplace: Int?
    /// The routed layers' keys (softmax routing, no correction bias).
    var experts: DeepSeekExperts

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case firstKDenseReplace = "first_k_dense_replace"
    }

    /// Mistral4Config's latent attention defaults.
    static let latentDefaults = LatentAttentionSettings(
        qLoraRank: 1024, kvLoraRank: 256, qkNopeHeadDim: 64, qkRopeHeadDim: 64, vHeadDim: 128, ropeInterleave: true,
        attentionBias: false)

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        latent = try LatentAttentionSettings(from: decoder, defaults: Self.latentDefaults)
        // Only absence takes the default: transformers reads a written null as None.
        firstKDenseReplace = c.contains(.firstKDenseReplace) ? try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) : 0
        experts = try DeepSeekExperts(from: decoder, configClass: .mistral4)
    }

    /// Whether layer `index`'s MLP is the routed experts (Mistral4DecoderLayer's rule).
    func isSparse(_ index: Int) -> Bool { index >= (firstKDenseReplace ?? 0) }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        try latent.check(d)
        guard let firstKDenseReplace else {
            throw InvalidConfigValue(key: "first_k_dense_replace", problem: "is null; Mistral4DecoderLayer compares each layer's index with it")
        }
        try ConfigRules.nonNegative(firstKDenseReplace, "first_k_dense_replace")
        // Routed layers exist only past the dense ones.
        guard firstKDenseReplace < d.numHiddenLayers else { return }
        try experts.check(hidden: d.hiddenSize)
    }
}

/// Mistral Small 4 (`mistral4`; transformers' `models/mistral4/`, a
/// DeepSeek-V3 derivative): pre-RMSNorm blocks
///
///     H = X + Attn(RMSNorm X),   Y = H + MLP(RMSNorm H)
///
/// with DeepSeek's multi-head latent attention (`LatentAttentionSettings`:
/// q_a_proj / q_b_proj or q_proj, kv_a_proj_with_mqa, kv_b_proj, rotary on
/// each head's last `qk_rope_head_dim` columns, interleaved pairs by
/// `rope_interleave`; the softmax scale grown by YaRN's `mscale_all_dim`)
/// whose queries are then multiplied by Llama 4's temperature
/// 1 + β · ln(1 + ⌊p / original⌋) (`QueryTemperature`, β and the original
/// length from the rope parameters; without rope parameters
/// Mistral4Config's YaRN ones, factor 128 over 8192 positions, β 0.1). The
/// rotary table is Llama's, sized by head_dim = qk_nope_head_dim +
/// qk_rope_head_dim times `partial_rotary_factor` (qk_rope_head_dim /
/// head_dim unless given): a factor that does not give qk_rope_head_dim
/// columns is refused.
///
/// Layers below `first_k_dense_replace` (default 0) have a dense SwiGLU
/// MLP; the others a mixture of experts (`GroupRoutedMixture`): a softmax
/// router `mlp.gate` choosing `num_experts_per_tok` of `n_routed_experts`
/// within the best `topk_group` of `n_group` groups (scored by their best
/// two; no correction bias), plus `n_shared_experts` always-on shared
/// experts (`mlp.shared_experts`). The MLP module is router, routed and
/// shared experts together: dropping the MLP drops all of it.
///
/// Routed experts are read fused (`mlp.experts.gate_up_proj` / `down_proj`,
/// as `save_pretrained` writes them); transformers' conversion mapping
/// collects no per-expert tensors for mistral4, so those are refused
/// (`WeightConversions`).
///
/// The Mistral Small 4 releases save this model as the language model of a
/// `mistral3` checkpoint (`Mistral3ForConditionalGeneration`,
/// `text_config.model_type` "mistral4"), placed as
/// `TextModelPlacement.mistral3` says.
struct Mistral4Model: DecoderFamily {
    let parts: DecoderParts
    let config: Mistral4Configuration
    let rotary: RotaryEmbedding
    let scale: Float
    let temperature: QueryTemperature

    /// `Mistral4Config.__post_init__`'s rope parameters when config.json has none.
    static func defaultRopeParameters(maxPositions: Int, partialRotaryFactor: Double) -> [String: Any] {
        [
            "type": "yarn", "rope_theta": 10000.0, "factor": 128.0, "original_max_position_embeddings": 8192,
            "max_position_embeddings": maxPositions, "beta_fast": 32.0, "beta_slow": 1.0, "mscale_all_dim": 1.0,
            "mscale": 1.0, "llama_4_scaling_beta": 0.1, "partial_rotary_factor": partialRotaryFactor,
        ]
    }

    init(_ checkpoint: Checkpoint) throws {
        // Mistral Small 4's releases: Mistral3ForConditionalGeneration around this model.
        let placement = try TextModelPlacement.topLevelOrWrapped(checkpoint)
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(Mistral4Configuration.self, section: placement.section)
        self.config = config
        parts = try DecoderParts(
            checkpoint, placement: placement, naming: LlamaModel.naming,
            experts: config.experts.naming(isSparse: config.isSparse))
        let d = parts.dimensions, configPath = parts.configPath, latent = config.latent
        try parts.checks { try config.check(d) }
        try latent.confirmShapes(parts)
        try config.experts.confirm(parts, isSparse: config.isSparse)
        // Mistral4Config sets head_dim to qk_nope_head_dim + qk_rope_head_dim, and the
        // partial_rotary_factor it defaults by it; a head_dim config.json writes is set after both.
        let share = Double(latent.qkRopeHeadDim) / Double(latent.queryKeyDim), headDim = d.headDim ?? latent.queryKeyDim
        var (rope, temperature) = try Ministral3Rope.read(
            parts, defaults: Self.defaultRopeParameters(maxPositions: d.maxPositionEmbeddings, partialRotaryFactor: share),
            attentionClass: "Mistral4Attention")
        // Mistral4RotaryEmbedding computes the "default" type's table itself, head_dim wide:
        // it does not read partial_rotary_factor.
        let ownDefaultTable = rope.type == "default"
        if ownDefaultTable { (rope.partialRotaryFactor, rope.partialRotaryFactorIsNull) = (1, false) }
        // Llama's rotary table is int(head_dim · partial_rotary_factor) wide (an odd width w
        // rotating 2 · ceil(w / 2) columns): the rope parts must be exactly that wide.
        let factor = rope.partialRotaryFactor ?? share, tableWidth = RopeSettings.truncatedWidth(headDim, factor)
        if !rope.partialRotaryFactorIsNull, tableWidth + tableWidth % 2 != latent.qkRopeHeadDim {
            let rotated = "Mistral4Attention rotates qk_rope_head_dim \(latent.qkRopeHeadDim) columns"
            throw ownDefaultTable
                ? InvalidConfigValue(
                    key: parts.section.qualified("rope_parameters.rope_type"),
                    problem: "is \"default\" (or absent), whose table Mistral4RotaryEmbedding makes head_dim \(headDim) wide, but \(rotated)"
                ).error(path: configPath)
                : InvalidConfigValue(
                    key: rope.partialRotaryKey,
                    problem: "is \(factor): with head_dim \(headDim) a rotary table int(\(headDim) × \(factor)) = \(tableWidth) wide, but \(rotated)"
                ).error(path: configPath)
        }
        // No table when the config drops every attention layer: no tensor confirmed its width.
        let kept = parts.firstKeptAttention != nil
        rotary = try rope.embedding(
            headDim: kept ? latent.qkRopeHeadDim : 0, tableWidth: kept ? headDim : 0, partialRotary: .honoured(default: share),
            configPath: configPath)
        scale = try latent.scale(rope, configPath: configPath)
        self.temperature = temperature
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
            attention: { try config.latent.attention(parts, layer: index, rotary: rotary, scale: scale, queryTemperature: temperature) },
            feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s MLP: dense below `first_k_dense_replace`, else router,
    /// routed experts and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        try config.experts.feedForward(parts, layer: index, sparse: config.isSparse(index), activation: try parts.activation(config.hiddenAct))
    }
}

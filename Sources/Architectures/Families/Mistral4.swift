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
    /// `n_routed_experts`, which config.json may write as `num_local_experts`.
    var nRoutedExperts: Int
    /// The key config.json gives the expert count under, for errors.
    var nRoutedExpertsKey: String
    var numExpertsPerTok: Int?
    var nSharedExperts: Int
    var moeIntermediateSize: Int
    var routedScalingFactor: Double
    var nGroup: Int?
    var topkGroup: Int?
    var normTopkProb: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case firstKDenseReplace = "first_k_dense_replace"
        case nRoutedExperts = "n_routed_experts"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case nSharedExperts = "n_shared_experts"
        case moeIntermediateSize = "moe_intermediate_size"
        case routedScalingFactor = "routed_scaling_factor"
        case nGroup = "n_group"
        case topkGroup = "topk_group"
        case normTopkProb = "norm_topk_prob"
    }

    /// Mistral4Config's latent attention defaults.
    static let latentDefaults = LatentAttentionSettings(
        qLoraRank: 1024, kvLoraRank: 256, qkNopeHeadDim: 64, qkRopeHeadDim: 64, vHeadDim: 128, ropeInterleave: true,
        attentionBias: false)

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        /// A key only its absence defaults: transformers reads a written null as None.
        func written<T: Decodable>(_ key: CodingKeys, absent: T?) throws -> T? {
            c.contains(key) ? try c.decodeIfPresent(T.self, forKey: key) : absent
        }
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        latent = try LatentAttentionSettings(from: decoder, defaults: Self.latentDefaults)
        firstKDenseReplace = try written(.firstKDenseReplace, absent: 0)
        let routed = try c.decodeIfPresent(Int.self, forKey: .nRoutedExperts)
        let local = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts)
        nRoutedExperts = local ?? routed ?? 128
        nRoutedExpertsKey = local == nil ? "n_routed_experts" : "num_local_experts"
        numExpertsPerTok = try written(.numExpertsPerTok, absent: 4)
        nSharedExperts = try c.decodeIfPresent(Int.self, forKey: .nSharedExperts) ?? 1
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 2048
        routedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .routedScalingFactor) ?? 1.0
        nGroup = try written(.nGroup, absent: 1)
        topkGroup = try written(.topkGroup, absent: 1)
        // A null norm_topk_prob is None, which the router's `if` reads as false.
        normTopkProb = try written(.normTopkProb, absent: true) ?? false
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let routed, let local, routed != local {
                throw InvalidConfigValue(key: "n_routed_experts", problem: "is \(routed), but num_local_experts (the same setting) is \(local)")
            }
        }
    }

    /// Mistral4TopkRouter: softmax scores (no correction bias), the experts
    /// chosen within the best `topk_group` of `n_group` groups scored by
    /// their best two, weights renormalised when `norm_topk_prob` and
    /// scaled by `routed_scaling_factor`.
    var routedMixture: GroupRoutedMixture {
        GroupRoutedMixture(
            experts: nRoutedExperts, expertsKey: nRoutedExpertsKey, expertsPerToken: numExpertsPerTok, sharedExperts: nSharedExperts,
            inner: moeIntermediateSize, scoring: .softmax, groupScore: .sumOfBestTwo, groupLimited: true, groups: nGroup,
            groupsPerToken: topkGroup, correctsSelection: false, normalizesWeights: normTopkProb, scalingFactor: routedScalingFactor)
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
        let routed = routedMixture
        try routed.checkExperts(hidden: d.hiddenSize)
        try routed.checkGroups()
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
/// as `save_pretrained` writes them) or per expert
/// (`mlp.experts.<e>.gate_proj|up_proj|down_proj`).
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
        let placement: TextModelPlacement = checkpoint.modelType == "mistral3" ? try .mistral3(checkpoint) : .topLevel
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(Mistral4Configuration.self, section: placement.section)
        self.config = config
        parts = try DecoderParts(
            checkpoint, placement: placement, naming: LlamaModel.naming,
            experts: .gatedMLP(count: config.nRoutedExperts, countKey: config.nRoutedExpertsKey, isSparse: config.isSparse))
        let d = parts.dimensions, configPath = parts.configPath, latent = config.latent
        try ConfigRules.checks(path: configPath) { try config.check(d) }
        try latent.confirmShapes(parts)
        try parts.confirmRouter(
            "mlp.gate", experts: config.nRoutedExperts, expertsKey: config.nRoutedExpertsKey,
            layers: (0..<d.numHiddenLayers).filter(config.isSparse))
        // Mistral4Config sets head_dim to qk_nope_head_dim + qk_rope_head_dim, and the
        // partial_rotary_factor it defaults by it; a head_dim config.json writes is set after both.
        let share = Double(latent.qkRopeHeadDim) / Double(latent.queryKeyDim), headDim = d.headDim ?? latent.queryKeyDim
        let (rope, temperature) = try Ministral3Rope.read(
            parts, defaults: Self.defaultRopeParameters(maxPositions: d.maxPositionEmbeddings, partialRotaryFactor: share),
            attentionClass: "Mistral4Attention")
        // Llama's rotary table is int(head_dim · partial_rotary_factor) wide (an odd width w
        // rotating 2 · ceil(w / 2) columns): the rope parts must be exactly that wide.
        let factor = rope.partialRotaryFactor ?? share, tableWidth = Int(min(Double(headDim) * factor, Double(Int.max / 2)))
        if !rope.partialRotaryFactorIsNull, tableWidth + tableWidth % 2 != latent.qkRopeHeadDim {
            throw InvalidConfigValue(
                key: rope.partialRotaryKey,
                problem: "is \(factor): with head_dim \(headDim) a rotary table int(\(headDim) × \(factor)) = \(tableWidth) wide, but Mistral4Attention rotates qk_rope_head_dim \(latent.qkRopeHeadDim) columns"
            ).error(path: configPath)
        }
        // No table when the config drops every attention layer: no tensor confirmed its width.
        let kept = parts.firstKeptAttention != nil
        rotary = try rope.embedding(
            headDim: kept ? latent.qkRopeHeadDim : 0, tableWidth: kept ? headDim : 0, partialRotary: .honoured(default: share),
            configPath: configPath)
        scale = try latent.scale(rope, configPath: configPath)
        self.temperature = temperature
        try config.routedMixture.confirmExpertWidth(parts, isSparse: config.isSparse)
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
        let p = "layers.\(index).mlp.", activation = try parts.activation(config.hiddenAct)
        guard config.isSparse(index) else {
            return try parts.weights.gatedMLP(p, hidden: hiddenSize, inner: parts.dimensions.intermediateSize, activation: activation)
        }
        return try config.routedMixture.load(parts.weights, p, hidden: hiddenSize, activation: activation, sharedBias: false)
    }
}

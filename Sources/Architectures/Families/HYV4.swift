import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `hy_v4`'s config.json besides the sizes, with HYV4Config's defaults.
struct HYV4Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var latent: LatentAttentionSettings
    /// Each layer's MLP, "dense" or "sparse"; nil: layer 0 dense, the others sparse.
    var mlpLayerTypes: [String]?
    var experts: DeepSeekExperts
    /// DeepSeek Sparse Attention's indexer: `index_topk` keys per query,
    /// `index_n_heads` heads of `index_head_dim`.
    var indexTopk: Int
    var indexHeadDim: Int
    var indexNHeads: Int
    /// `indexer_types`, else HYV4Config's rule: "full" at layer 0 and where
    /// (i − 1) % 4 == 0, "shared" elsewhere.
    var indexerTypes: Glm4MoeLiteConfiguration.IndexerTypes
    /// `layer_types`: every layer "indexed_attention".
    var layerTypes: [String]?
    /// `hc_mult` streams, `hc_magnitude`, `hc_eps` (`HyperConnection`).
    var hcMult: Int
    var hcMagnitude: Double
    var hcEps: Double
    /// The routed experts' SwiGLU clamp (`Activation.clampedInput`).
    var swigluLimit: Double

    static let experts = DeepSeekExperts.ConfigClass(
        nRoutedExperts: 256, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 768, routedScalingFactor: 2.827,
        name: "HYV4Config")

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case mlpLayerTypes = "mlp_layer_types"
        case indexTopk = "index_topk"
        case indexHeadDim = "index_head_dim"
        case indexNHeads = "index_n_heads"
        case indexerTypes = "indexer_types"
        case layerTypes = "layer_types"
        case hcMult = "hc_mult"
        case hcMagnitude = "hc_magnitude"
        case hcEps = "hc_eps"
        case swigluLimit = "swiglu_limit"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        latent = try LatentAttentionSettings(
            from: decoder,
            defaults: LatentAttentionSettings(
                qLoraRank: 1536, kvLoraRank: 512, qkNopeHeadDim: 192, qkRopeHeadDim: 64, vHeadDim: 256, ropeInterleave: true,
                attentionBias: false))
        // HYV4Attention and its indexer rotate interleaved pairs whatever rope_interleave says.
        latent.ropeInterleave = true
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        experts = try DeepSeekExperts(from: decoder, configClass: Self.experts)
        indexTopk = try c.decodeIfPresent(Int.self, forKey: .indexTopk) ?? 2048
        indexHeadDim = try c.decodeIfPresent(Int.self, forKey: .indexHeadDim) ?? 128
        indexNHeads = try c.decodeIfPresent(Int.self, forKey: .indexNHeads) ?? 16
        indexerTypes = try c.decodeIfPresent([String].self, forKey: .indexerTypes).map { .listed($0, key: "indexer_types") }
            ?? .every(freq: 4, offset: 2)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        hcMult = try c.decodeIfPresent(Int.self, forKey: .hcMult) ?? 4
        hcMagnitude = try c.decodeIfPresent(Double.self, forKey: .hcMagnitude) ?? 2
        hcEps = try c.decodeIfPresent(Double.self, forKey: .hcEps) ?? 1e-6
        swigluLimit = try c.decodeIfPresent(Double.self, forKey: .swigluLimit) ?? 10
        let types = mlpLayerTypes
        try ConfigRules.decodingChecks { try MLPLayerTypes.checkEntries(types) }
    }

    /// Whether layer `index` reuses the last full layer's top-k instead of running an indexer.
    func sharesIndexer(_ index: Int) -> Bool { indexerTypes.type(index) == "shared" }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        // HYV4Config gives every head its own keys and values whatever num_key_value_heads says.
        var dimensions = d
        dimensions.numKeyValueHeads = nil
        try latent.check(dimensions)
        guard let rank = latent.qLoraRank else {
            throw InvalidConfigValue(key: "q_lora_rank", problem: "must be set: HYV4Attention and its indexer read the query latent")
        }
        try Glm4MoeLiteConfiguration.checkIndexer(
            topK: indexTopk, heads: indexNHeads, dim: indexHeadDim, ropeDim: latent.qkRopeHeadDim, queryRank: rank,
            types: indexerTypes, layerTypes: layerTypes, d)
        try ConfigRules.count(hcMult, "hc_mult")
        try ConfigRules.product([(hcMult, "hc_mult"), (hcMult, "hc_mult"), (d.hiddenSize, "hidden_size"), (2, "pre and post")])
        for (value, key) in [(hcMagnitude, "hc_magnitude"), (hcEps, "hc_eps")] where !Float(value).isFinite {
            throw InvalidConfigValue(key: key, problem: "must be a finite number that float32 holds, got \(value)")
        }
        // HYV4Config's docstring has a limit at or below zero disable the clamp; HYV4Experts clamps at it all the same.
        guard swigluLimit > 0, Float(swigluLimit).isFinite else {
            throw InvalidConfigValue(
                key: "swiglu_limit",
                problem: "is \(swigluLimit): HYV4Config documents a limit at or below zero as disabling the clamp, but HYV4Experts clamps at it; "
                    + "droptrace runs only a positive, finite limit, which both read alike")
        }
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers)
        guard MLPLayerTypes.resolved(mlpLayerTypes, layers: d.numHiddenLayers, firstDense: 1).contains("sparse") else { return }
        try experts.check(hidden: d.hiddenSize)
    }
}

/// Hunyuan V4 (`hy_v4`, Tencent's Hy4; transformers' `models/hy_v4/`):
/// DeepSeek-V3.2's blocks — multi-head latent attention with DeepSeek
/// Sparse Attention's indexer (`SparseAttentionIndexer`: each "shared"
/// `indexer_types` layer reuses the top-k of the last "full" layer before
/// it, as GLM-5's; the indexer's LayerNorm of eps `rms_norm_eps` and its
/// rope on each head's last `qk_rope_head_dim` columns), a learned sink
/// logit per head (`sinks`) and each output column gated by the sigmoid of
/// `gate_proj` of the layer input; a dense SwiGLU MLP on the
/// `mlp_layer_types` layers marked "dense" (layer 0 by default), else
/// DeepSeek-V3's sigmoid-routed experts (`gate.e_score_correction_bias`,
/// `routed_scaling_factor`) with SwiGLU inputs clamped at `swiglu_limit`,
/// plus `n_shared_experts` shared ones — joined to a residual stream of
/// `hc_mult` hyper-connected streams (`HyperConnection`: `attn_hc`,
/// `ffn_hc` per layer, `hc_head` before the final norm).
///
/// A module's importance compares the whole stream before and after its
/// branch (all streams at once, `LanguageModel.streamWidth` wide); a
/// dropped branch leaves the streams as they were. The released names
/// (`hc_attn_layer.hc_fn`, `learnable_sink_param`, `linear_gate`, …) are read
/// as transformers renames them on load (`TensorRenamings`).
///
/// Hy4-VL (`hy_v4_vl`, HYV4VLForConditionalGeneration) holds the same model
/// as its language model (`text_config`, HYV4VLTextConfig whatever its
/// model_type says, with that class's defaults; weights under
/// `model.language_model.`, as released under `model.`; the head untied
/// unless the top-level `tie_word_embeddings` says so), its latent norms at
/// `rms_norm_eps` (HY-V4's at 1e-6), rotated by interleaved M-RoPE (the
/// plain rotation on text) whose `mrope_section` its config class requires
/// to be three integers summing to qk_rope_head_dim / 2 ([12, 10, 10] when absent).
struct HYV4Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: HYV4Configuration
    let mlpTypes: [String]
    let rotary: RotaryEmbedding
    let scale: Float
    /// The epsilon of q_a_layernorm and kv_a_layernorm.
    let latentNormEps: Double

    init(_ checkpoint: Checkpoint) throws {
        let vision = checkpoint.modelType == "hy_v4_vl"
        let placement = vision ? try Self.visionPlacement(checkpoint) : .topLevel
        let config = try checkpoint.decodeConfig(HYV4Configuration.self, section: placement.section)
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self, section: placement.section).numHiddenLayers
        let types = MLPLayerTypes.resolved(config.mlpLayerTypes, layers: layers, firstDense: 1)
        self.config = config
        mlpTypes = types
        latentNormEps = vision ? config.rmsNormEps : 1e-6
        let isSparse: @Sendable (Int) -> Bool = { $0 < types.count && types[$0] == "sparse" }
        parts = try DecoderParts(checkpoint, placement: placement, naming: Self.naming, experts: config.experts.naming(isSparse: isSparse))
        let d = parts.dimensions, configPath = parts.configPath, latent = config.latent
        try parts.checks { try config.check(d) }
        try latent.confirmShapes(parts)
        try config.experts.confirm(parts, isSparse: isSparse)
        try Glm4MoeLiteConfiguration.confirmIndexerShapes(
            parts, sharesIndexer: config.sharesIndexer, heads: config.indexNHeads, dim: config.indexHeadDim, queryRank: latent.qLoraRank!)
        let rope = try parts.ropeSettings()
        if vision {
            // HYV4VLTextConfig.validate_architecture: three runs summing to qk_rope_head_dim / 2.
            let key = try parts.ropeSettings(defaults: [:]).key, written = parts.sectionDocument?.member(key)?.member("mrope_section")
            let rule = MropeSection.interleavedRuns(className: "HYV4VLTextConfig", frequencies: latent.qkRopeHeadDim / 2)
            try ConfigRules.checks(path: configPath, section: placement.section) {
                try rule.check(written, defaultSection: [12, 10, 10], key: key + ".mrope_section")
            }
        }
        let kept = parts.firstKeptAttention != nil
        // No table when the config drops every attention layer: no tensor confirmed its width.
        rotary = try rope.embedding(
            headDim: kept ? latent.qkRopeHeadDim : 0, partialRotary: .ignored, configPath: configPath)
        scale = try latent.scale(rope, configPath: configPath)
        try confirmHyperConnectionShapes()
    }

    /// Hy4-VL's language model: its text config with HYV4VLTextConfig's
    /// defaults of the keys HYV4Config defaults otherwise.
    static func visionPlacement(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        var placement = try TextModelPlacement.ownTextConfig(
            checkpoint, defaults: ["q_lora_rank": 2048, "moe_intermediate_size": 2048, "index_n_heads": 32],
            prefixes: ["model.language_model.", "model."], textTiesToo: false)
        placement.section.overrides["model_type"] = .string("hy_v4_vl_text")
        return placement
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm.", "attn_hc."],
            mlp: ["mlp.", "post_attention_layernorm.", "ffn_hc."], layerCountKeys: ["num_hidden_layers"])
    }

    var streamWidth: Int { hiddenSize * config.hcMult }

    /// An export without some blocks writes `mlp_layer_types` and
    /// `indexer_types` for the kept layers also where config.json leaves
    /// them to the class's rule.
    var layerNaming: LayerNaming {
        var naming = parts.naming(spellingOut: nil, mlpTypes: mlpTypes)
        naming.perLayerLists["indexer_types"] = (0..<layerCount).map { config.indexerTypes.type($0) ?? "full" }
        return naming
    }

    /// The embedding, entering every stream.
    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch).repeated(config.hcMult) }

    func head() throws -> OutputHead {
        var head = try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
        head.streamCollapse = try hyperConnections.head()
        return head
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), sharing = try attentionSharing(skipping: plan).keySelections
        let mine = sharing.isEmpty ? nil : sharing[index]
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention {
            let indexer = config.sharesIndexer(index) ? nil : try SparseAttentionIndexer(
                parts.weights, p + "self_attn.indexer.", queryRank: config.latent.qLoraRank!, hidden: hiddenSize,
                heads: config.indexNHeads, dim: config.indexHeadDim, topK: config.indexTopk, rotary: rotary, interleaved: true,
                ropeAtEnd: true, keyNormEps: config.rmsNormEps)
            return try config.latent.attention(
                parts, layer: index, rotary: rotary, scale: scale, indexer: indexer, channelGate: "gate_proj", sinks: "sinks",
                latentNormEps: latentNormEps
            ).sharingKeySelection(mine)
        }
        let block = try parts.preNormBlock(
            index, drops: drops, eps: config.rmsNormEps,
            residualJoins: ({ try hyperConnection(p + "attn_hc") }, { try hyperConnection(p + "ffn_hc") }),
            attention: attention, feedForward: { try feedForward(layer: index) })
        guard drops.dropsAttention(index), mine?.storesOnly == true else { return block }
        // A dropped attention whose top-k later layers reuse still runs its indexer on what it read.
        return TransformerBlock(
            attention: nil, mlp: block.mlp, residual: block.residual,
            sharingProducer: AttentionBranch(
                inputNorm: try parts.weights.rmsNorm(p + "input_layernorm", size: hiddenSize, eps: config.rmsNormEps),
                attention: try attention(), join: try hyperConnection(p + "attn_hc")))
    }

    /// The shared indexer layers with `plan`'s modules dropped (`LayerSharing.sharedIndexers`).
    func attentionSharing(skipping plan: DropPlan) throws -> LayerSharing {
        try LayerSharing.sharedIndexers(
            layers: layerCount, isShared: config.sharesIndexer, drops: plan.union(configuredDrops), key: "indexer_types",
            configPath: parts.configPath)
    }

    func exportProblem(_ plan: DropPlan) -> String? {
        (try? attentionSharing(skipping: plan))?.sharedIndexerExportProblem(key: "indexer_types")
    }

    /// The hyper-connection tensors (`hc_mult` streams).
    var hyperConnections: HyperConnectionTensors {
        HyperConnectionTensors(
            weights: parts.weights, streams: config.hcMult, hiddenSize: hiddenSize, gateEps: Float(config.hcEps),
            normEps: Float(config.rmsNormEps))
    }

    /// The hyper-connection stored under `name` (`fn`, `base`, `scale`).
    func hyperConnection(_ name: String) throws -> ResidualJoin {
        try hyperConnections.connection(name, postMagnitude: Float(config.hcMagnitude))
    }

    /// The head's and the first kept branch's hyper-connection tensors
    /// against `hc_mult` and `hidden_size` (a dropped branch's are not stored
    /// in LLM-Drop's exports).
    func confirmHyperConnectionShapes() throws {
        let n = config.hcMult, width = streamWidth, weights = parts.weights, configPath = parts.configPath
        var shapes = [
            ("hc_head.hc_fn", [n, width], "hc_mult, hc_mult × hidden_size"), ("hc_head.hc_base", [n], "hc_mult"),
            ("hc_head.hc_scale", [1], "HYV4HyperHead's one scale"),
        ]
        let branches = (0..<layerCount).flatMap { layer in
            [(layer, "attn_hc", configuredDrops.dropsAttention(layer)), (layer, "ffn_hc", configuredDrops.dropsMLP(layer))]
        }
        if let (layer, connection, _) = branches.first(where: { !$0.2 }) {
            let p = "layers.\(layer).\(connection)."
            shapes += [
                (p + "fn", [2 * n, width], "2 × hc_mult, hc_mult × hidden_size"), (p + "base", [2 * n], "2 × hc_mult"),
                (p + "scale", [2], "HYV4HyperConnection's pre and post scales"),
            ]
        }
        try weights.confirmShapes(shapes, configPath: configPath)
    }

    /// Layer `index`'s MLP: dense, or router, routed experts (their SwiGLU
    /// inputs clamped) and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        let activation = try parts.activation(config.hiddenAct), sparse = mlpTypes[index] == "sparse"
        // HYV4Experts applies F.silu whatever hidden_act says; the shared experts and dense MLPs use hidden_act.
        return try config.experts.feedForward(
            parts, layer: index, sparse: sparse,
            activation: sparse ? .clampedInput(.silu, limit: Float(config.swigluLimit)) : activation, sharedActivation: activation)
    }
}

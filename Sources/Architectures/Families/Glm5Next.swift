import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The text config of `glm5_next` (Glm5NextTextConfig, under
/// `text_config`) besides the sizes, with the class's defaults.
struct Glm5NextConfiguration: Decodable {
    static let latentDefaults = LatentAttentionSettings(
        qLoraRank: 1536, kvLoraRank: 512, qkNopeHeadDim: 256, qkRopeHeadDim: 0, vHeadDim: 256, ropeInterleave: false,
        attentionBias: false)
    static let experts = DeepSeekExperts.ConfigClass(
        nRoutedExperts: 288, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 2048, routedScalingFactor: 2.5,
        name: "Glm5NextTextConfig")
    static let linear = "linear_attention", indexed = "indexed_attention"

    var rmsNormEps: Double
    var hiddenAct: String
    var latent: LatentAttentionSettings
    var experts: DeepSeekExperts
    var layerTypes: [String]?
    var mlpLayerTypes: [String]?
    var indexerTypes: Glm4MoeLiteConfiguration.IndexerTypes
    var indexTopk: Int
    var indexHeadDim: Int
    var indexNHeads: Int
    var indexKpool: Int
    var selectsTail: Bool
    var swigluLimit: Double
    var linearHeads: Int
    var linearHeadDim: Int
    var convolutionKernel: Int
    /// The forget gate's lower bound; nil: the softplus decay.
    var lowerBound: Double?
    var hcMult: Int
    var hcEps: Double
    var hcSinkhornIters: Int

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case layerTypes = "layer_types"
        case mlpLayerTypes = "mlp_layer_types"
        case indexTopk = "index_topk"
        case indexHeadDim = "index_head_dim"
        case indexNHeads = "index_n_heads"
        case indexKpool = "index_kpool"
        case selectsTail = "index_kpool_always_select_tail"
        case swigluLimit = "swiglu_limit"
        case linearHeads = "linear_num_heads"
        case linearHeadDim = "linear_head_dim"
        case convolutionKernel = "linear_conv_kernel_dim"
        case lowerBound = "linear_lower_bound"
        case linearAttention = "linear_attn_config"
        case hcMult = "hc_mult"
        case hcEps = "hc_eps"
        case hcSinkhornIters = "hc_sinkhorn_iters"
    }

    /// The released `linear_attn_config`, read over the `linear_*` fields with dict.get.
    struct LinearAttentionConfig: Decodable {
        var headDim: Int??
        var heads: Int??
        var kernel: Int??
        var lowerBound: Double??
        var safeGate: Bool?

        enum CodingKeys: String, CodingKey {
            case headDim = "head_dim"
            case heads = "num_heads"
            case kernel = "short_conv_kernel_size"
            case lowerBound = "gate_lower_bound"
            case safeGate = "safe_gate"
        }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            func written<T: Decodable>(_ key: CodingKeys) throws -> T?? {
                c.contains(key) ? .some(try c.decodeIfPresent(T.self, forKey: key)) : nil
            }
            headDim = try written(.headDim)
            heads = try written(.heads)
            kernel = try written(.kernel)
            lowerBound = try written(.lowerBound)
            // A written null is falsy, as absent is true.
            safeGate = c.contains(.safeGate) ? try c.decodeIfPresent(Bool.self, forKey: .safeGate) ?? false : nil
        }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        latent = try LatentAttentionSettings(from: decoder, defaults: Self.latentDefaults)
        experts = try DeepSeekExperts(from: decoder, configClass: Self.experts)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        indexerTypes = try Glm4MoeLiteConfiguration.IndexerTypes(from: decoder)
        indexTopk = try c.decodeIfPresent(Int.self, forKey: .indexTopk) ?? 2048
        indexHeadDim = try c.decodeIfPresent(Int.self, forKey: .indexHeadDim) ?? 128
        indexNHeads = try c.decodeIfPresent(Int.self, forKey: .indexNHeads) ?? 32
        indexKpool = try c.decodeIfPresent(Int.self, forKey: .indexKpool) ?? 16
        selectsTail = try c.decodeIfPresent(Bool.self, forKey: .selectsTail) ?? true
        swigluLimit = try c.decodeIfPresent(Double.self, forKey: .swigluLimit) ?? 10
        linearHeads = try c.decodeIfPresent(Int.self, forKey: .linearHeads) ?? 64
        linearHeadDim = try c.decodeIfPresent(Int.self, forKey: .linearHeadDim) ?? 128
        convolutionKernel = try c.decodeIfPresent(Int.self, forKey: .convolutionKernel) ?? 4
        lowerBound = c.contains(.lowerBound) ? try c.decodeIfPresent(Double.self, forKey: .lowerBound) : -5
        hcMult = try c.decodeIfPresent(Int.self, forKey: .hcMult) ?? 4
        hcEps = try c.decodeIfPresent(Double.self, forKey: .hcEps) ?? 1e-6
        hcSinkhornIters = try c.decodeIfPresent(Int.self, forKey: .hcSinkhornIters) ?? 20
        if let dict = try c.decodeIfPresent(LinearAttentionConfig.self, forKey: .linearAttention) {
            // Glm5NextTextConfig's __post_init__: the dict's entries over the fields, a null
            // size kept (it sizes no projection: refused below), a null bound made -5 under safe_gate.
            func size(_ value: Int??, _ key: String, _ field: Int) throws -> Int {
                guard let value else { return field }
                guard let value else {
                    throw DecodingError.dataCorruptedError(
                        forKey: .linearAttention, in: c, debugDescription: "holds a null \(key), which Glm5NextTextConfig cannot size the linear attention by")
                }
                return value
            }
            linearHeadDim = try size(dict.headDim, "head_dim", linearHeadDim)
            linearHeads = try size(dict.heads, "num_heads", linearHeads)
            convolutionKernel = try size(dict.kernel, "short_conv_kernel_size", convolutionKernel)
            if let bound = dict.lowerBound { lowerBound = bound }
            if dict.safeGate ?? true, lowerBound == nil { lowerBound = -5 }
        }
        let (types, mlpTypes) = (layerTypes, mlpLayerTypes)
        try ConfigRules.decodingChecks {
            if let bad = types?.first(where: { ![Self.linear, Self.indexed, AttentionLayerType.full].contains($0) }) {
                throw InvalidConfigValue(
                    key: "layer_types", problem: "must list \"linear_attention\" or \"indexed_attention\" per layer, got \"\(bad.forErrorMessage)\"")
            }
            try MLPLayerTypes.checkEntries(mlpTypes)
        }
    }

    /// Each layer's mixer, as Glm5NextTextConfig resolves it: `layer_types`
    /// ("full_attention" read as "indexed_attention"), else every fourth layer from layer 3 indexed.
    func resolvedLayerTypes(_ layers: Int) -> [String] {
        layerTypes.map { $0.map { $0 == AttentionLayerType.full ? Self.indexed : $0 } }
            ?? (0..<layers).map { $0 % 4 == 3 ? Self.indexed : Self.linear }
    }

    /// Each layer's MLP: `mlp_layer_types`, else the first three dense.
    func resolvedMLPTypes(_ layers: Int) -> [String] {
        MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: 3)
    }

    /// Refuses what transformers could not build or run, and what droptrace
    /// cannot run exactly, before anything is sized from it.
    func check(_ d: DecoderDimensions, types: [String]) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        if types.count != d.numHiddenLayers {
            throw InvalidConfigValue(key: "layer_types", problem: "lists \(types.count) layers, but num_hidden_layers is \(d.numHiddenLayers)")
        }
        // validate_layer_type holds mlp_layer_types to num_hidden_layers entries.
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers, validated: true)
        if types.contains(Self.linear) { try linearSizes.check(hidden: d.hiddenSize) }
        for (value, key) in [(hcEps, "hc_eps"), (swigluLimit, "swiglu_limit"), (lowerBound ?? 0, "linear_lower_bound")] where !Float(value).isFinite {
            throw InvalidConfigValue(key: key, problem: "must be a finite number that float32 holds, got \(value)")
        }
        try HyperConnection.checkSizes(streams: hcMult, hidden: d.hiddenSize, sinkhornIterations: hcSinkhornIters)
        guard types.contains(Self.indexed) else { return }
        // Glm5NextTextConfig.validate_architecture: NoPE and the low-rank query path.
        guard latent.qkRopeHeadDim == 0 else {
            throw InvalidConfigValue(key: "qk_rope_head_dim", problem: "must be 0 (GLM-5-Next's indexed attention has no positions), got \(latent.qkRopeHeadDim)")
        }
        guard let rank = latent.qLoraRank else {
            throw InvalidConfigValue(key: "q_lora_rank", problem: "is null; Glm5NextTextConfig requires the low-rank query path")
        }
        try latent.check(d, ropeRequired: false)
        try ConfigRules.count(indexKpool, "index_kpool")
        try Glm4MoeLiteConfiguration.checkIndexer(
            topK: indexTopk, heads: indexNHeads, dim: indexHeadDim, ropeDim: 0, queryRank: rank, types: nil, layerTypes: nil, d)
        guard indexTopk % indexKpool == 0 else {
            throw InvalidConfigValue(key: "index_topk", problem: "(\(indexTopk)) must be a multiple of index_kpool (\(indexKpool))")
        }
        // Fewer than one pool, or no tail, leaves some query no key (transformers then attends to all, future ones too).
        guard indexTopk >= indexKpool else {
            throw InvalidConfigValue(key: "index_topk", problem: "is \(indexTopk), less than one pool of index_kpool \(indexKpool): a query would see no key")
        }
        guard selectsTail || indexKpool == 1 else {
            throw InvalidConfigValue(
                key: "index_kpool_always_select_tail", problem: "is false: a query before its first complete pool sees no key, which droptrace does not run")
        }
        try ConfigRules.product([(indexKpool, "index_kpool"), (indexHeadDim, "index_head_dim")])
        for layer in types.indices where types[layer] == Self.indexed {
            // Glm5NextTextAttention reads indexer_types[layer]; a shared layer takes the top-k of the layer before.
            guard let type = indexerTypes.type(layer) else {
                throw InvalidConfigValue(key: indexerTypes.key, problem: "gives layer \(layer) no type, but it is an indexed_attention layer")
            }
            if type == "shared" {
                throw InvalidConfigValue(
                    key: indexerTypes.key, problem: "makes indexed layer \(layer) \"shared\"; droptrace does not run GLM-5-Next's shared indexer layers")
            }
        }
    }

    var linearSizes: KimiDeltaAttentionSizes {
        KimiDeltaAttentionSizes(heads: linearHeads, headDim: linearHeadDim, kernel: convolutionKernel)
    }
}

/// GLM-5-Next (`glm5_next`, Glm5NextForConditionalGeneration; transformers'
/// models/glm5_next/), read as its language model (`text_config`, always
/// Glm5NextTextConfig; weights under `model.language_model.`, the head
/// `lm_head`, tied by the top level's `tie_word_embeddings` alone; the
/// vision tower never read). The residual stream is `hc_mult` streams
/// joined by DeepSeek-V4's manifold-constrained hyper-connections
/// (`attn_hc`, `ffn_hc`: `HyperConnection` with its Sinkhorn-normalised
/// mixing), collapsed by their plain mean before the final norm. Each
/// layer's token mixer is, by `layer_types` (else every fourth layer from
/// layer 3 indexed),
///
/// - "linear_attention": Kimi Delta Attention (`GatedDeltaNet`, one decay
///   per key channel, `linear_num_heads` heads of `linear_head_dim`, a fused
///   `conv1d`), its decay `linear_lower_bound` · σ(exp(A_log) · (f + dt_bias))
///   (the softplus one when the bound is null), the output RMS-normed per
///   head with `rms_norm_eps` times σ(g_b_proj(g_a_proj x));
/// - "indexed_attention": GLM-5's multi-head latent attention without
///   positions (qk_rope_head_dim 0; both latent norms with `rms_norm_eps`,
///   scale qk_nope_head_dim^-1/2) over the keys its DSA indexer keeps: pools
///   of `index_kpool` keys (`SparseAttentionIndexer.KeyPools`), the best
///   `index_topk` / `index_kpool` complete ones plus the query's own
///   incomplete pool;
///
/// and its MLP, by `mlp_layer_types` (else the first three dense), a
/// SwiGLU of `intermediate_size` or DeepSeek-V3's routed experts (fused
/// `gate_up_proj`, always SiLU) beside the shared ones, every SwiGLU's
/// gate clamped above and up clamped at ±`swiglu_limit`. A module is its
/// whole hyper-connected sublayer (as DeepSeek-V4's).
struct Glm5NextModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Glm5NextConfiguration
    let layerTypes: [String]
    let mlpTypes: [String]
    let indexerTypes: [String]

    init(_ checkpoint: Checkpoint) throws {
        let path = checkpoint.configURL.path
        let keys = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
        // Glm5NextConfig builds its text config from the top level's keys when text_config is absent.
        guard checkpoint.configDocument.member("text_config") != nil else {
            throw DroptraceError("\"text_config\" is absent; droptrace reads glm5_next's language model from text_config", path: path)
        }
        if let type = keys.textConfig?.modelType, type != "glm5_next_text" {
            throw DroptraceError(
                "\"text_config.model_type\" is \(ConfigValueKinds.spelled(.string(type))): glm5_next's language model is glm5_next_text's; write it or omit it",
                path: path)
        }
        var placement = TextModelPlacement.wrapped(
            textDefaults: ConfigValueKinds.omittedDefaultValues(of: "glm5_next.text_config"), prefixes: ["model.language_model."],
            tiedEmbeddings: keys.tieWordEmbeddings ?? false)
        // Glm5NextTextConfig sets head_dim to qk_rope_head_dim (0) whatever is written; nothing is sized by it.
        placement.section.overrides["head_dim"] = .null
        let config = try checkpoint.decodeConfig(Glm5NextConfiguration.self, section: placement.section)
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self, section: placement.section).numHiddenLayers
        let types = config.resolvedLayerTypes(layers), mlpTypes = config.resolvedMLPTypes(layers)
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        let parts = try DecoderParts(checkpoint, placement: placement, naming: Self.naming, experts: config.experts.naming(isSparse: isSparse))
        try parts.checks {
            try config.check(parts.dimensions, types: types)
            if mlpTypes.prefix(layers).contains("sparse") { try config.experts.check(hidden: parts.dimensions.hiddenSize) }
        }
        (self.parts, self.config, layerTypes, self.mlpTypes) = (parts, config, types, mlpTypes)
        indexerTypes = (0..<layers).map { config.indexerTypes.type($0) ?? "full" }
        try config.linearSizes.confirm(
            parts, types: types.map { $0 == Glm5NextConfiguration.indexed ? AttentionLayerType.full : $0 }, module: "self_attn.")
        try parts.confirmLayerKinds(
            mlpTypes, key: "mlp_layer_types", mlp: true, probes: ["dense": ["mlp.down_proj.weight"], "sparse": ["mlp.gate.weight"]])
        if let layer = types.indices.first(where: { types[$0] == Glm5NextConfiguration.indexed && !parts.configuredDrops.dropsAttention($0) }) {
            try config.latent.confirmShapes(parts, layer: layer)
            try Glm4MoeLiteConfiguration.confirmIndexerShapes(
                parts, sharesIndexer: { types[$0] != Glm5NextConfiguration.indexed }, heads: config.indexNHeads, dim: config.indexHeadDim,
                queryRank: config.latent.qLoraRank!)
            let p = "layers.\(layer).self_attn.indexer."
            try parts.weights.confirmShape(
                p + "index_kpool_compress_ape", [config.indexKpool, config.indexHeadDim], keys: "index_kpool, index_head_dim",
                configPath: parts.configPath)
            try parts.weights.confirmShape(
                p + "index_kpool_compress_gate", [config.indexHeadDim, parts.dimensions.hiddenSize], keys: "index_head_dim, hidden_size",
                configPath: parts.configPath)
        }
        try config.experts.confirm(parts, isSparse: isSparse)
        try confirmHyperConnectionShapes()
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm.", "attn_hc."],
            mlp: ["mlp.", "post_attention_layernorm.", "ffn_hc."], layerCountKeys: ["num_hidden_layers"])
    }

    /// Exports without some blocks spell out the kept layers' mixers, MLPs and indexer types.
    var layerNaming: LayerNaming {
        var naming = parts.naming(spellingOut: layerTypes, mlpTypes: mlpTypes)
        naming.perLayerLists["indexer_types"] = indexerTypes
        return naming
    }

    var streamWidth: Int { hiddenSize * config.hcMult }

    /// The embedding, entering every stream.
    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch).repeated(config.hcMult) }

    func head() throws -> OutputHead {
        var head = try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
        head.streamCollapse = StreamMean(streams: config.hcMult)
        return head
    }

    var hyperConnections: HyperConnectionTensors {
        HyperConnectionTensors(
            weights: parts.weights, streams: config.hcMult, hiddenSize: hiddenSize, gateEps: Float(config.hcEps),
            normEps: Float(config.rmsNormEps))
    }

    /// The first kept layer's hyper-connections against hc_mult and hidden_size.
    func confirmHyperConnectionShapes() throws {
        let n = config.hcMult, rows = (2 + n) * n
        for (kept, name) in [((0..<layerCount).first { !configuredDrops.dropsAttention($0) }, "attn_hc."), ((0..<layerCount).first { !configuredDrops.dropsMLP($0) }, "ffn_hc.")] {
            guard let layer = kept else { continue }
            let p = "layers.\(layer).\(name)"
            for (tensor, shape, keys) in [
                ("fn", [rows, streamWidth], "(2 + hc_mult) × hc_mult, hc_mult × hidden_size"), ("base", [rows], "(2 + hc_mult) × hc_mult"),
                ("scale", [3], "Glm5NextTextHyperConnection's three scales"),
            ] {
                try parts.weights.confirmShape(p + tensor, shape, keys: keys, configPath: parts.configPath)
            }
        }
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index).", limit = Float(config.swigluLimit)
        func connection(_ name: String) throws -> ResidualJoin {
            try hyperConnections.connection(p + name, postMagnitude: 2, sinkhornIterations: config.hcSinkhornIters)
        }
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            residualJoins: ({ try connection("attn_hc") }, { try connection("ffn_hc") }),
            mixer: {
                guard layerTypes[index] == Glm5NextConfiguration.indexed else {
                    let h = config.linearSizes.layerHeads
                    return .gatedDeltaNet(try parts.kimiDeltaAttention(
                        p + "self_attn.", heads: h, gate: "forget_gate.", logDecayShape: [h.valueHeads], normEps: config.rmsNormEps,
                        activationName: config.hiddenAct,
                        decay: config.lowerBound.map { .boundedSigmoid(lowerBound: Float($0)) } ?? .softplus))
                }
                return .attention(try config.latent.attention(
                    parts, layer: index, rotary: nil, scale: Float(pow(Double(config.latent.queryKeyDim), -0.5)),
                    indexer: try indexer(layer: index), latentNormEps: config.rmsNormEps))
            },
            feedForward: {
                let activation = Activation.clampedInput(try parts.activation(config.hiddenAct), limit: limit)
                let sparse = mlpTypes[index] == "sparse"
                // The routed experts apply SiLU whatever hidden_act says; the shared ones and the dense MLP hidden_act.
                return try config.experts.feedForward(
                    parts, layer: index, sparse: sparse, activation: sparse ? .clampedInput(.silu, limit: limit) : activation,
                    sharedActivation: activation)
            })
    }

    /// Layer `index`'s DSA indexer with its key pools (no rotation: NoPE).
    func indexer(layer index: Int) throws -> SparseAttentionIndexer {
        let p = "layers.\(index).self_attn.indexer.", dim = config.indexHeadDim, w = parts.weights
        var indexer = try SparseAttentionIndexer(
            w, p, queryRank: config.latent.qLoraRank!, hidden: hiddenSize, heads: config.indexNHeads, dim: dim, topK: config.indexTopk,
            rotary: RotaryEmbedding(inverseFrequencies: [], headDim: 0), interleaved: false)
        indexer.keyPools = SparseAttentionIndexer.KeyPools(
            size: config.indexKpool, positionBias: try w.floats(p + "index_kpool_compress_ape", [config.indexKpool, dim]),
            gate: Linear(
                weight: try w.floats(p + "index_kpool_compress_gate", [dim, hiddenSize]), bias: nil, inFeatures: hiddenSize, outFeatures: dim))
        return indexer
    }
}

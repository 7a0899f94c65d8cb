import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

private extension JSONValue {
    var isNull: Bool { if case .null = self { true } else { false } }
}

/// config.json of `minimax_m3_vl_text` beyond MiniMax-M2's keys
/// (`MiniMaxM2Configuration`), with MiniMaxM3VLTextConfig's defaults: the
/// MLP widths and clamped SwiGLU, the per-layer types and the indexer, each
/// as `__post_init__` resolves it (the legacy `sparse_attention_config`
/// entries over the flat `index_*` keys, `sparse_attention_freq` and
/// `moe_layer_freq` where `layer_types` and `mlp_layer_types` are absent).
struct MiniMaxM3Configuration: Decodable {
    var denseIntermediateSize: Int
    var sharedIntermediateSize: Int
    var routedScalingFactor: Double
    var swigluAlpha: Double
    var swigluLimit: Double
    var layerTypes: [String]?
    var mlpLayerTypes: [String]?
    var indexHeads: Int
    var indexHeadDim: Int
    var indexBlockSize: Int
    var indexTopKBlocks: Int
    var indexLocalBlocks: Int
    /// The key config.json gives each index setting under, by its flat key
    /// (the legacy `sparse_attention_config.<entry>` where that set it), for errors.
    var indexKeyNames: [String: String] = [:]

    enum CodingKeys: String, CodingKey {
        case denseIntermediateSize = "dense_intermediate_size"
        case sharedIntermediateSize = "shared_intermediate_size"
        case routedScalingFactor = "routed_scaling_factor"
        case swigluAlpha = "swiglu_alpha"
        case swigluLimit = "swiglu_limit"
        case layerTypes = "layer_types"
        case mlpLayerTypes = "mlp_layer_types"
        case moeLayerFreq = "moe_layer_freq"
        case sparseAttentionConfig = "sparse_attention_config"
        case indexHeads = "index_n_heads"
        case indexHeadDim = "index_head_dim"
        case indexBlockSize = "index_block_size"
        case indexTopKBlocks = "index_topk_blocks"
        case indexLocalBlocks = "index_local_blocks"
    }

    /// The legacy `sparse_attention_config` entries, each over its flat key.
    static let legacyIndexKeys: [(legacy: String, flat: CodingKeys)] = [
        ("sparse_num_index_heads", .indexHeads), ("sparse_index_dim", .indexHeadDim), ("sparse_block_size", .indexBlockSize),
        ("sparse_topk_blocks", .indexTopKBlocks), ("sparse_local_block", .indexLocalBlocks),
    ]

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func number(_ key: CodingKeys, _ fallback: Double) throws -> Double { try c.decodeIfPresent(Double.self, forKey: key) ?? fallback }
        denseIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .denseIntermediateSize) ?? 12288
        sharedIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .sharedIntermediateSize) ?? 3072
        routedScalingFactor = try number(.routedScalingFactor, 2)
        swigluAlpha = try number(.swigluAlpha, 1.702)
        swigluLimit = try number(.swigluLimit, 7)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        indexHeads = try c.decodeIfPresent(Int.self, forKey: .indexHeads) ?? 4
        indexHeadDim = try c.decodeIfPresent(Int.self, forKey: .indexHeadDim) ?? 128
        indexBlockSize = try c.decodeIfPresent(Int.self, forKey: .indexBlockSize) ?? 128
        indexTopKBlocks = try c.decodeIfPresent(Int.self, forKey: .indexTopKBlocks) ?? 16
        indexLocalBlocks = try c.decodeIfPresent(Int.self, forKey: .indexLocalBlocks) ?? 1
        let (alpha, limit, scaling) = (swigluAlpha, swigluLimit, routedScalingFactor)
        try ConfigRules.decodingChecks {
            for (value, key) in [(alpha, CodingKeys.swigluAlpha), (limit, .swigluLimit), (scaling, .routedScalingFactor)] where !value.isFinite {
                throw InvalidConfigValue(key: key.rawValue, problem: "must be a finite number, got \(value)")
            }
        }
    }

    /// Reads the legacy keys of config.json's section `document` as
    /// `__post_init__` does: `sparse_attention_config`'s index entries over
    /// the flat keys (held to integers, as the strict class holds the fields
    /// it sets), its `sparse_attention_freq` where `layer_types` is absent,
    /// `moe_layer_freq` where `mlp_layer_types` is; then checks the lists' entries.
    mutating func readLegacyKeys(_ document: JSONValue?) throws {
        let sparse = document?.member("sparse_attention_config")
        /// A 0/1 list's entries as `if f` reads them.
        // MiniMaxM3VLTextConfig takes each entry's truth value (1.0 is sparse, 0 and null are not).
        func flags(_ value: JSONValue, key: String) throws -> [Bool] {
            guard case .array(let entries) = value else { throw InvalidConfigValue(key: key, problem: "must be a list of 0 / 1 per layer") }
            return entries.map(\.isTruthy)
        }
        for (legacy, flat) in Self.legacyIndexKeys {
            guard let value = sparse?.member(legacy) else { continue }
            guard case .integer(let number) = value else {
                throw InvalidConfigValue(
                    key: "sparse_attention_config.\(legacy)", problem: "must be an integer (it sets \(flat.rawValue)), got \(ConfigValueKinds.spelled(value))")
            }
            indexKeyNames[flat.rawValue] = "sparse_attention_config.\(legacy)"
            switch flat {
            case .indexHeads: indexHeads = number
            case .indexHeadDim: indexHeadDim = number
            case .indexBlockSize: indexBlockSize = number
            case .indexTopKBlocks: indexTopKBlocks = number
            default: indexLocalBlocks = number
            }
        }
        if layerTypes == nil, let freq = sparse?.member("sparse_attention_freq") {
            layerTypes = try flags(freq, key: "sparse_attention_config.sparse_attention_freq").map {
                $0 ? MiniMaxM3Model.sparseType : AttentionLayerType.full
            }
        }
        if mlpLayerTypes == nil, let freq = document?.member(CodingKeys.moeLayerFreq.rawValue), !freq.isNull {
            mlpLayerTypes = try flags(freq, key: CodingKeys.moeLayerFreq.rawValue).map { $0 ? "sparse" : "dense" }
        }
        try MLPLayerTypes.checkEntries(mlpLayerTypes)
        if let bad = layerTypes?.first(where: { $0 != AttentionLayerType.full && $0 != MiniMaxM3Model.sparseType }) {
            throw InvalidConfigValue(
                key: CodingKeys.layerTypes.rawValue,
                problem: "must list \"full_attention\" or \"minimax_m3_sparse\" per layer, got \"\(bad.forErrorMessage)\" "
                    + "(MiniMaxM3VLTextConfig has no sliding window, on which transformers fails)")
        }
    }

    /// The key config.json gives index setting `key` under.
    func indexKey(_ key: CodingKeys) -> String { indexKeyNames[key.rawValue] ?? key.rawValue }

    /// The clamped SwiGLU of every MLP and expert: (clamp(up) + 1) · g σ(α g), g = min(gate, limit).
    var activation: ClampedSwiGLU { ClampedSwiGLU(alpha: Float(swigluAlpha), limit: Float(swigluLimit)) }

    /// Refuses what transformers could not run, or would run as no attention
    /// at all, before anything is sized from it.
    func check(_ d: DecoderDimensions, layerTypes: [String], mlpTypes: [String], rotaryDim: Int) throws {
        let layers = d.numHiddenLayers
        for (list, key) in [(self.layerTypes, "layer_types"), (self.mlpLayerTypes, MLPLayerTypes.key)] {
            if let list, list.count != layers {
                throw InvalidConfigValue(key: key, problem: "lists \(list.count) layers, but num_hidden_layers is \(layers)")
            }
        }
        if mlpTypes.contains("dense") {
            try ConfigRules.count(denseIntermediateSize, CodingKeys.denseIntermediateSize.rawValue)
            try ConfigRules.product([(denseIntermediateSize, CodingKeys.denseIntermediateSize.rawValue), (3, "gate, up and down"), (d.hiddenSize, "hidden_size")])
        }
        if mlpTypes.contains("sparse") {
            try ConfigRules.count(sharedIntermediateSize, CodingKeys.sharedIntermediateSize.rawValue)
            try ConfigRules.count(d.intermediateSize, "intermediate_size")
            try ConfigRules.product([(sharedIntermediateSize, CodingKeys.sharedIntermediateSize.rawValue), (3, "gate, up and down"), (d.hiddenSize, "hidden_size")])
        }
        guard layerTypes.contains(MiniMaxM3Model.sparseType) else { return }
        let (heads, dim) = (indexKey(.indexHeads), indexKey(.indexHeadDim))
        try ConfigRules.count(indexHeads, heads)
        try ConfigRules.count(indexHeadDim, dim)
        // The block mask repeats each indexer head's choice over heads / index heads query heads.
        try ConfigRules.divides(indexHeads, heads, d.numAttentionHeads, "num_attention_heads")
        try ConfigRules.product([(indexHeads + 1, heads + " + 1"), (indexHeadDim, dim), (d.hiddenSize, "hidden_size")])
        try ConfigRules.count(indexBlockSize, indexKey(.indexBlockSize))
        guard indexTopKBlocks >= 1 else {
            throw InvalidConfigValue(
                key: indexKey(.indexTopKBlocks),
                problem: "is \(indexTopKBlocks): transformers then keeps no block (below 0 it fails), and every query attends evenly to every key, later ones too")
        }
        guard rotaryDim <= indexHeadDim else {
            throw InvalidConfigValue(
                key: dim,
                problem: "is \(indexHeadDim), below the \(rotaryDim) rotated columns of each head: transformers turns the indexer's heads by a cut table, which droptrace does not compute")
        }
    }
}

/// MiniMax-M3's text model (`minimax_m3_vl_text`: MiniMaxM3VLForCausalLM;
/// transformers' `models/minimax_m3_vl/`), and the language model of
/// `minimax_m3_vl` (MiniMaxM3SparseForConditionalGeneration, `text_config`
/// of that type, weights under `model.language_model.`, the head `lm_head`,
/// tied by the top-level or the text config's `tie_word_embeddings`; the
/// vision tower is not read). MiniMax-M2's pre-norm blocks (its expert
/// count, top-k and norm eps are read by `MiniMaxM2Configuration`) with
/// Gemma's (1 + w) RMS norms everywhere, per-head q/k norms (`q_norm`,
/// `k_norm` [head_dim]) before rotary, which turns `partial_rotary_factor`
/// of each head (`rotary_dim` is not read: MiniMaxM3VLTextConfig keeps it
/// unused), base 5e6 unless given. By `layer_types` a "minimax_m3_sparse"
/// layer's attention reads only the key blocks its lightning indexer
/// (`self_attn.indexer.`) chooses per group of heads (`BlockSparseIndexer`);
/// the indexer belongs to the attention module. By `mlp_layer_types` the
/// MLP is a dense `gate_up_proj` / `down_proj` of `dense_intermediate_size`
/// or Laguna's sigmoid-routed mixture (router `mlp.gate` with its
/// `e_score_correction_bias`, weights σ over their sum times
/// `routed_scaling_factor`) of DeepSeek-V4-style fused experts
/// (`mlp.experts.gate_up_proj` [experts, 2 · intermediate_size, hidden],
/// gate rows first, `down_proj`) beside one shared expert
/// (`mlp.shared_experts.`, `shared_intermediate_size`); every one of them
/// the clamped SwiGLU of gpt-oss on un-interleaved halves (`swiglu_alpha`,
/// `swiglu_limit`; `hidden_act` is not read).
struct MiniMaxM3Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    static let sparseType = "minimax_m3_sparse"
    let parts: DecoderParts
    let m2: MiniMaxM2Configuration
    let config: MiniMaxM3Configuration
    let layerTypes: [String]
    let mlpTypes: [String]
    let rotary: RotaryEmbedding
    /// The checkpoint is MiniMaxM3SparseForConditionalGeneration's, whose
    /// conversion mapping also collects per-expert `w1` / `w3` / `w2` and
    /// concatenates split `gate_proj` / `up_proj` (its released names, which
    /// it saves back): read in either form. MiniMaxM3VLForCausalLM has no
    /// conversion and reads the fused forms only.
    let convertsReleasedNames: Bool

    init(_ checkpoint: Checkpoint) throws {
        convertsReleasedNames = checkpoint.modelType == "minimax_m3_vl"
        var defaults = ConfigValueKinds.omittedDefaultValues(of: "minimax_m3_vl_text")
        defaults["head_dim"] = defaults["head_dim"] ?? .integer(128)
        let placement = try TextModelPlacement.topLevelOrWrapped(checkpoint, defaults: defaults)
        let section = placement.section
        let m2 = try checkpoint.decodeConfig(MiniMaxM2Configuration.self, section: section)
        var config = try checkpoint.decodeConfig(MiniMaxM3Configuration.self, section: section)
        try ConfigRules.checks(path: checkpoint.configURL.path) { try config.readLegacyKeys(checkpoint.document(of: section)) }
        let dimensions = try checkpoint.decodeConfig(DecoderDimensions.self, section: section)
        let layers = dimensions.numHiddenLayers
        let mlpTypes = config.mlpLayerTypes ?? Array(repeating: "sparse", count: layers)
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        (self.m2, self.config, self.mlpTypes) = (m2, config, mlpTypes)
        parts = try DecoderParts(
            checkpoint, placement: placement, naming: LlamaModel.naming,
            experts: ExpertNaming(
                parts: ["mlp.experts."], projections: ["w1", "w3", "w2"], count: m2.numLocalExperts, countKey: m2.numLocalExpertsKey,
                isSparse: isSparse))
        layerTypes = config.layerTypes ?? Array(repeating: AttentionLayerType.full, count: layers)
        rotary = try parts.rotary(defaultTheta: 5_000_000, partialRotary: .honoured(default: 1))
        let (layerTypes, rotaryDim) = (layerTypes, rotary.rotaryDim)
        try parts.checks {
            try config.check(dimensions, layerTypes: layerTypes, mlpTypes: mlpTypes, rotaryDim: rotaryDim)
            if mlpTypes.contains("sparse") {
                try MixtureOfExperts.checkExpertsPerToken(m2.numExpertsPerTok, of: m2.numLocalExperts, expertsKey: m2.numLocalExpertsKey)
                try ConfigRules.product([
                    (m2.numLocalExperts, m2.numLocalExpertsKey), (3, "gate, up and down"), (dimensions.intermediateSize, "intermediate_size"),
                    (dimensions.hiddenSize, "hidden_size"),
                ])
            }
        }
        if mlpTypes.contains("sparse") {
            let sparse = (0..<layers).filter(isSparse)
            try parts.confirmRouter("mlp.gate", experts: m2.numLocalExperts, expertsKey: m2.numLocalExpertsKey, layers: sparse)
            try parts.confirmExpertWidth(
                layers: sparse, experts: m2.numLocalExperts, expertsKey: m2.numLocalExpertsKey, inner: dimensions.intermediateSize,
                innerKey: "intermediate_size", gateName: "w1")
        }
        // The first kept MLP of each kind against its width, before any is read.
        let d = dimensions.hiddenSize, weights = parts.weights
        for (kind, module, inner, key) in [
            ("dense", "mlp.", config.denseIntermediateSize, "dense_intermediate_size"),
            ("sparse", "mlp.shared_experts.", config.sharedIntermediateSize, "shared_intermediate_size"),
        ] {
            guard let layer = (0..<layers).first(where: { mlpTypes[$0] == kind && !parts.configuredDrops.dropsMLP($0) }) else { continue }
            let p = "layers.\(layer).\(module)"
            if convertsReleasedNames && !weights.has(p + "gate_up_proj.weight") {
                try weights.confirmShape(p + "gate_proj.weight", [inner, d], keys: "\(key), hidden_size", configPath: parts.configPath)
            } else {
                try weights.confirmShape(p + "gate_up_proj.weight", [2 * inner, d], keys: "2 × \(key), hidden_size", configPath: parts.configPath)
            }
        }
    }

    /// Exports without some blocks spell out the kept layers' attention and MLP types.
    var layerNaming: LayerNaming { parts.naming(spellingOut: layerTypes, mlpTypes: mlpTypes) }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.offsetRMSNorm("norm", size: hiddenSize, eps: m2.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: m2.rmsNormEps, normKind: .offsetRMS,
            attention: { try attention(layer: index) }, feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s MiniMaxM3VLAttention, with its indexer on a sparse layer.
    func attention(layer index: Int) throws -> SelfAttention {
        let p = "layers.\(index).self_attn.", weights = parts.weights, eps = m2.rmsNormEps, headDim = parts.attentionLayout.headDim
        var attention = try parts.attention(
            p, bias: false, rotary: rotary,
            queryKeyNorm: .perHead(
                query: try weights.offsetRMSNorm(p + "q_norm", size: headDim, eps: eps),
                key: try weights.offsetRMSNorm(p + "k_norm", size: headDim, eps: eps)))
        guard layerTypes[index] == Self.sparseType else { return attention }
        let (heads, dim, d, prefix) = (config.indexHeads, config.indexHeadDim, hiddenSize, p + "indexer.")
        attention.blockSparseIndexer = BlockSparseIndexer(
            query: try weights.linear(prefix + "q_proj", in: d, out: heads * dim, bias: false),
            key: try weights.linear(prefix + "k_proj", in: d, out: dim, bias: false),
            queryNorm: try weights.offsetRMSNorm(prefix + "q_norm", size: dim, eps: eps),
            keyNorm: try weights.offsetRMSNorm(prefix + "k_norm", size: dim, eps: eps), heads: heads, dim: dim,
            blockSize: config.indexBlockSize, topKBlocks: config.indexTopKBlocks, localBlocks: config.indexLocalBlocks,
            rotary: RotaryEmbedding(
                inverseFrequencies: rotary.inverseFrequencies, headDim: dim, attentionScaling: rotary.attentionScaling,
                longContext: rotary.longContext))
        return attention
    }

    /// A fused `gate_up_proj` (gate rows, then up rows) as the clamped
    /// SwiGLU reads it: gate and up rows interleaved.
    static func clamped(_ gated: FeedForward, activation: ClampedSwiGLU) -> FeedForward {
        guard case .gated(let gateUp, let down, _) = gated else { preconditionFailure("a gated MLP") }
        let inner = gateUp.outFeatures / 2
        return .clampedGated(
            gateUp: gateUp.rearrangingRows { values, width in
                var interleaved = [Float](repeating: 0, count: values.count)
                for i in 0..<inner {
                    interleaved.replaceSubrange((2 * i * width)..<((2 * i + 1) * width), with: values[(i * width)..<((i + 1) * width)])
                    interleaved.replaceSubrange(
                        ((2 * i + 1) * width)..<((2 * i + 2) * width), with: values[((inner + i) * width)..<((inner + i + 1) * width)])
                }
                return interleaved
            },
            down: down, activation: activation)
    }

    /// Layer `index`'s dense MLP, or its router, routed experts and shared expert.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", d = hiddenSize, weights = parts.weights, activation = config.activation
        // The activation is the clamped SwiGLU's; the plain one these are first read with is never run.
        func fused(_ mlp: String, inner: Int) throws -> FeedForward {
            let split = convertsReleasedNames && !weights.has(mlp + "gate_up_proj.weight")
            // The wrapper's conversion merges gate_proj and up_proj into gate_up_proj: both stored is one too many.
            if convertsReleasedNames && !split && weights.has(mlp + "gate_proj.weight") {
                throw DroptraceError(
                    "tensors '\(weights.absolute(mlp + "gate_proj.weight").forErrorMessage)' and '\(weights.absolute(mlp + "gate_up_proj.weight").forErrorMessage)' "
                        + "are both read as the MLP's gate by transformers' conversion of minimax_m3_vl checkpoints; keep one of the two",
                    path: weights.checkpoint.weightsPath)
            }
            return Self.clamped(
                split ? try weights.gatedMLP(mlp, hidden: d, inner: inner, activation: .silu)
                    : try weights.fusedGatedMLP(mlp, hidden: d, inner: inner, activation: .silu),
                activation: activation)
        }
        guard mlpTypes[index] == "sparse" else { return try fused(p, inner: config.denseIntermediateSize) }
        let count = m2.numLocalExperts
        // Per-expert tensors (only the wrapper's conversion collects them: `parts` refuses them otherwise).
        let experts = try weights.gatedExperts(
            fused: p + "experts.", perExpert: p + "experts.", names: ("w1", "w3", "w2"), count: count, hidden: d,
            inner: parts.dimensions.intermediateSize, activation: .silu)
        let bias = p + "gate.e_score_correction_bias"
        // A bias the checkpoint lacks stays zero, its initial value.
        let routing = GroupLimitedTopK(
            scoring: .sigmoid, groupScore: .best, groups: 1, groupsPerToken: 1,
            selectionBias: weights.has(bias) ? try weights.floats(bias, [count]) : nil,
            normalizesWeights: true, denominatorEpsilon: 0, scalingFactor: Float(config.routedScalingFactor))
        return .mixture(MixtureOfExperts(
            router: try weights.linear(p + "gate", in: d, out: count, bias: false),
            experts: experts.map { Self.clamped($0, activation: activation) }, expertsPerToken: m2.numExpertsPerTok,
            rule: .groupLimited(routing), sharedExperts: [try fused(p + "shared_experts.", inner: config.sharedIntermediateSize)]))
    }
}

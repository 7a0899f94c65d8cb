import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `kolibri1_1`: Kolibri1Config's keys (`Kolibri1Configuration`)
/// and Kolibri1_1Config's own, with its defaults.
struct Kolibri1_1Configuration: Decodable {
    var base: Kolibri1Configuration
    var indexLayers: [Int]?
    var kvSourceLayers: [Int]?
    var indexTopk: Int
    var indexPoolSize: Int
    var indexCompression: Int
    var indexNumHeads: Int
    var indexNumLocalTokens: Int
    var indexNumSinkTokens: Int
    var mlpOnlyLayers: [Int]?
    var mlpOnlyIntermediateSize: Int

    enum CodingKeys: String, CodingKey {
        case indexLayers = "index_layers"
        case kvSourceLayers = "kv_source_layers"
        case indexTopk = "index_topk"
        case indexPoolSize = "index_pool_size"
        case indexCompression = "index_compression"
        case indexNumHeads = "index_num_heads"
        case indexNumLocalTokens = "index_num_local_tokens"
        case indexNumSinkTokens = "index_num_sink_tokens"
        case mlpOnlyLayers = "mlp_only_layers"
        case mlpOnlyIntermediateSize = "mlp_only_intermediate_size"
    }

    init(from decoder: Decoder) throws {
        base = try Kolibri1Configuration(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        indexLayers = try c.decodeIfPresent([Int].self, forKey: .indexLayers)
        kvSourceLayers = try c.decodeIfPresent([Int].self, forKey: .kvSourceLayers)
        indexTopk = try c.decodeIfPresent(Int.self, forKey: .indexTopk) ?? 2048
        indexPoolSize = try c.decodeIfPresent(Int.self, forKey: .indexPoolSize) ?? 16384
        indexCompression = try c.decodeIfPresent(Int.self, forKey: .indexCompression) ?? 16
        indexNumHeads = try c.decodeIfPresent(Int.self, forKey: .indexNumHeads) ?? 12
        indexNumLocalTokens = try c.decodeIfPresent(Int.self, forKey: .indexNumLocalTokens) ?? 128
        indexNumSinkTokens = try c.decodeIfPresent(Int.self, forKey: .indexNumSinkTokens) ?? 8
        mlpOnlyLayers = try c.decodeIfPresent([Int].self, forKey: .mlpOnlyLayers)
        mlpOnlyIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .mlpOnlyIntermediateSize) ?? 3584
    }

    static let indexed = "indexed_attention"
    /// transformers' `_LEGACY_LAYER_TYPE_REMAP`.
    static let legacyNames = [
        "mamba": "linear_attention", "attention": "full_attention",
        "deepseek_sparse_attention": indexed, "qwen_sparse_attention": indexed,
    ]

    /// The layer types, indexers, key/value sources and dense layers as
    /// Kolibri1_1Config's `__post_init__` resolves them, checked as its
    /// `validate_architecture` checks them.
    /// - Throws: `DroptraceError` naming `path`, with the refused key.
    func resolved(layers: Int, layout: QKVLayout, path: String) throws -> (types: [String], indexers: [Int], sources: [Int], dense: [Int]) {
        func refuse(_ message: String) -> DroptraceError { DroptraceError(message, path: path) }
        let sliding = AttentionLayerType.sliding
        let written = base.layerTypes ?? (0..<layers).map { ($0 + 1) % 5 == 0 ? Self.indexed : sliding }
        // Legacy names are renamed after the defaults below are derived from the names as written
        // (PreTrainedConfig's remap_legacy_layer_types runs after Kolibri1_1Config's own __post_init__).
        let types = written.map { Self.legacyNames[$0] ?? $0 }
        if let unknown = types.first(where: { $0 != Self.indexed && $0 != sliding }) {
            throw refuse("unsupported layer type \"\(unknown.forErrorMessage)\" in layer_types (Kolibri1_1Config has indexed_attention and sliding_attention layers)")
        }
        guard types.count == layers else {
            throw refuse("layer_types has \(types.count) entries for num_hidden_layers \(layers)")
        }
        if types.contains(sliding), (base.slidingWindow ?? 0) <= 0 {
            throw refuse("layer_types has sliding_attention layers but sliding_window is \(base.slidingWindow.map(String.init) ?? "null"); they need a positive window")
        }
        let indexedLayers = types.indices.filter { types[$0] == Self.indexed }
        let writtenIndexed = written.indices.filter { written[$0] == Self.indexed }
        let dense = mlpOnlyLayers ?? [0, 1].filter { $0 < layers }
        let indexers = indexLayers ?? [0, 2, 3, 5].filter { $0 < writtenIndexed.count }.map { writtenIndexed[$0] }
        var sources: [Int]
        if let kvSourceLayers {
            sources = kvSourceLayers
        } else {
            let defaults = [0, 0, 0, 3, 4, 5, 5, 5, 5, 0]
            guard writtenIndexed.count <= defaults.count else {
                throw refuse(
                    "kv_source_layers is left to Kolibri1_1Config's default, which covers \(defaults.count) indexed_attention layers; layer_types has \(writtenIndexed.count): set kv_source_layers")
            }
            sources = Array(0..<layers)
            for (layer, source) in zip(writtenIndexed, defaults) { sources[layer] = writtenIndexed[source] }
        }
        guard Array(Set(indexers)).sorted() == indexers, Set(indexers).isSubset(of: indexedLayers) else {
            throw refuse("index_layers \(indexers) must be increasing indexed_attention layers")
        }
        if let first = indexedLayers.first, !indexers.contains(first) {
            throw refuse("index_layers \(indexers) leaves out the first indexed_attention layer, \(first), which must select the pool")
        }
        guard sources.count == layers else {
            throw refuse("kv_source_layers has \(sources.count) entries for num_hidden_layers \(layers)")
        }
        for (layer, source) in sources.enumerated() {
            if types[layer] == sliding, source != layer {
                throw refuse("kv_source_layers: sliding_attention layer \(layer) cannot read the keys and values of layer \(source)")
            }
            guard (0...layer).contains(source), sources[source] == source else {
                throw refuse("kv_source_layers: layer \(layer) must read the keys and values of an earlier layer that makes its own, not layer \(source)")
            }
            if types[source] != types[layer] {
                throw refuse("kv_source_layers: layer \(layer) must read the keys and values of a layer of its attention type, not layer \(source)")
            }
        }
        for (value, key) in [(indexTopk, "index_topk"), (indexPoolSize, "index_pool_size"), (indexCompression, "index_compression")] where value <= 0 {
            throw refuse("\(key) must be positive, got \(value)")
        }
        if indexPoolSize % indexCompression != 0 {
            throw refuse("index_pool_size \(indexPoolSize) must be a multiple of index_compression \(indexCompression)")
        }
        if layout.headDim % NVFP4.blockSize != 0 {
            throw refuse("head_dim \(layout.headDim) must be a multiple of 16: keys and values are rounded to NVFP4 in blocks of 16")
        }
        let group = layout.numHeads / layout.numKVHeads
        guard indexNumHeads > 0, indexNumHeads <= group else {
            throw refuse("index_num_heads \(indexNumHeads) must be between 1 and the query heads of key head 0 (\(group))")
        }
        if let outside = dense.first(where: { !(0..<layers).contains($0) }) {
            throw refuse("mlp_only_layers names layer \(outside), not one of the \(layers) layers")
        }
        if !dense.isEmpty, mlpOnlyIntermediateSize <= 0 {
            throw refuse("mlp_only_intermediate_size must be positive for the dense mlp_only_layers, got \(mlpOnlyIntermediateSize)")
        }
        return (types, indexers, sources, dense)
    }
}

/// Kolibri 1.1 (Aleph Alpha, transformers' models/kolibri1_1/): Kolibri-1's
/// sandwich blocks (`Kolibri1Model`), whose layers are by `layer_types`
/// (by default every fifth indexed) sliding-attention layers, rotating
/// within `sliding_window`, or indexed-attention layers without positions
/// that attend to the keys their weightless indexer selects
/// (`KeyPoolIndexer`: the `index_topk` best of a pool of `index_pool_size`
/// keys chosen by blocks of `index_compression`, besides
/// `index_num_sink_tokens` first and `index_num_local_tokens` last keys),
/// keys and values rounded to NVFP4. The `index_layers` choose new pools,
/// the other indexed layers reuse the pool of the last one before them.
/// An indexed layer whose `kv_source_layers` entry is another layer has no
/// `k_proj`, `v_proj` or `k_norm` and attends to that layer's keys and
/// values. `mlp_only_layers` (by default the first two) have a dense SwiGLU
/// of `mlp_only_intermediate_size`, the others Kolibri-1's mixture.
///
/// With modules dropped: a layer whose attention is dropped still makes
/// the keys and values or the pool later layers read
/// (`AttentionSharing.storeOnly`); a reindexer whose indexer's block is
/// dropped reuses the pool of the last kept indexer before it, as an export
/// listing the kept `index_layers` runs. Plans that leave a running layer
/// (an indexer whose dropped attention still chooses a later layer's pool
/// runs) no keys and values (its source's block dropped) or no pool are refused.
struct Kolibri1_1Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Kolibri1_1Configuration
    let layerTypes: [String]
    /// `index_layers`, `kv_source_layers` and `mlp_only_layers` as resolved.
    let indexLayers: [Int]
    let kvSources: [Int]
    let denseLayers: Set<Int>
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        let config = try checkpoint.decodeConfig(Kolibri1_1Configuration.self)
        self.config = config
        let base = config.base
        try ConfigRules.checks(path: checkpoint.configURL.path) {
            try ConfigRules.count(base.sharedExpertIntermediateSize, "shared_expert_intermediate_size")
            try ConfigRules.product([(base.sharedExpertIntermediateSize, "shared_expert_intermediate_size"), (3, "gate, up and down")])
        }
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self, section: base.section).numHiddenLayers
        let dense = config.mlpOnlyLayers ?? [0, 1].filter { $0 < layers }
        parts = try DecoderParts(
            checkpoint, section: base.section, naming: Kolibri1Model.naming,
            experts: .gatedMLP(count: base.numExperts, countKey: base.numExpertsKey, isSparse: { !dense.contains($0) }))
        try parts.checks { [parts] in try base.check(hidden: parts.dimensions.hiddenSize) }
        let resolved = try config.resolved(layers: layers, layout: parts.attentionLayout, path: parts.configPath)
        layerTypes = resolved.types
        indexLayers = resolved.indexers
        kvSources = resolved.sources
        denseLayers = Set(resolved.dense)
        if !resolved.dense.isEmpty {
            let hidden = parts.dimensions.hiddenSize
            try parts.checks {
                try ConfigRules.product([(config.mlpOnlyIntermediateSize, "mlp_only_intermediate_size"), (3, "gate, up and down"), (hidden, "hidden_size")])
            }
        }
        let routed = (0..<layers).filter { !resolved.dense.contains($0) }
        try parts.confirmRouter("mlp.gate", experts: base.numExperts, expertsKey: base.numExpertsKey, layers: routed)
        rotary = try parts.rotary()
    }

    /// Exports without some blocks spell out the kept layers' types, indexers,
    /// key/value sources (renumbered) and dense layers.
    var layerNaming: LayerNaming {
        var naming = parts.naming(spellingOut: layerTypes)
        naming.layerIndexLists["index_layers"] = indexLayers
        naming.layerIndexLists["mlp_only_layers"] = denseLayers.sorted()
        naming.layerSourceLists["kv_source_layers"] = kvSources
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.base.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), eps = config.base.rmsNormEps
        let p = "layers.\(index).", weights = parts.weights
        let sharing = try attentionSharing(skipping: plan)
        let activation = try parts.activation(config.base.hiddenAct)
        let outputNorms = (
            try weights.storedModule(p, saved: "post_attn_norm", renamed: "post_self_attn_layernorm"),
            try weights.storedModule(p, saved: "post_ffn_norm", renamed: "post_mlp_layernorm"))
        func attention() throws -> SelfAttention { try self.attention(index, sharing: sharing) }
        let block = try parts.preNormBlock(
            index, drops: drops, eps: eps, outputNorms: outputNorms, attention: attention,
            feedForward: {
                if denseLayers.contains(index) {
                    return try weights.gatedMLP(p + "mlp.", hidden: hiddenSize, inner: config.mlpOnlyIntermediateSize, activation: activation)
                }
                return .mixture(try Kolibri1Model.mixture(index, parts: parts, config: config.base, activation: activation))
            })
        guard drops.dropsAttention(index), !drops.blocks.contains(index), sharing.storesOnly(layer: index) else { return block }
        return TransformerBlock(
            attention: nil, mlp: block.mlp, residual: block.residual,
            sharingProducer: AttentionBranch(inputNorm: try weights.rmsNorm(p + "input_layernorm", size: hiddenSize, eps: eps), attention: try attention()))
    }

    /// Layer `index`'s attention: a layer reading another's keys and values
    /// projects its queries only.
    private func attention(_ index: Int, sharing: LayerSharing) throws -> SelfAttention {
        let weights = parts.weights, layout = parts.attentionLayout, d = hiddenSize, eps = config.base.rmsNormEps
        let p = "layers.\(index).self_attn."
        let sliding = layerTypes[index] == AttentionLayerType.sliding, reuses = kvSources[index] != index
        let queryNorm = try weights.rmsNorm(p + "q_norm", size: layout.headDim, eps: eps)
        var attention = SelfAttention(
            qkv: reuses
                ? try weights.linear(p + "q_proj", in: d, out: layout.queryWidth, bias: false)
                : try weights.stackedQKV(p, hidden: d, layout: layout, bias: false, fused: nil),
            layout: layout, rotary: sliding ? rotary : nil,
            output: try weights.linear(p + "o_proj", in: layout.queryWidth, out: d, bias: false),
            scale: 1 / Float(layout.headDim).squareRoot(), slidingWindow: sliding ? config.base.slidingWindow : nil,
            queryKeyNorm: .perHead(query: queryNorm, key: reuses ? queryNorm : try weights.rmsNorm(p + "k_norm", size: layout.headDim, eps: eps)),
            keyValueSharing: sharing.keysValues[index])
        guard !sliding else { return attention }
        attention.keyPool = KeyPoolIndexer(
            heads: config.indexNumHeads, topK: config.indexTopk, poolSize: config.indexPoolSize, compression: config.indexCompression,
            localTokens: config.indexNumLocalTokens, sinkTokens: config.indexNumSinkTokens, selectsPool: indexLayers.contains(index))
        return attention.sharingKeySelection(sharing.keySelections[index])
    }

    /// Which layers store and reuse keys and values (`kv_source_layers`)
    /// and pools (`index_layers`) with `plan`'s modules dropped (see the
    /// type's description).
    /// - Throws: `DroptraceError` when `plan` leaves a layer whose attention
    ///   runs no keys and values or no pool.
    func attentionSharing(skipping plan: DropPlan) throws -> LayerSharing {
        let drops = plan.union(configuredDrops)
        var keysValues = [AttentionSharing?](repeating: nil, count: layerCount)
        var pools = [AttentionSharing?](repeating: nil, count: layerCount)
        func stored(_ layer: Int) -> AttentionSharing { drops.dropsAttention(layer) ? .storeOnly(layer: layer) : .store(layer: layer) }
        let kept = (0..<layerCount).filter { !drops.blocks.contains($0) }
        var indexer: Int?
        for layer in kept where layerTypes[layer] == Kolibri1_1Configuration.indexed {
            if indexLayers.contains(layer) {
                indexer = layer
            } else if !drops.dropsAttention(layer) {
                guard let indexer else {
                    throw DroptraceError(
                        "dropping every indexer before layer \(layer) leaves it no pool of keys to select from (index_layers)", path: parts.configPath)
                }
                pools[layer] = .reuse(layer: indexer)
                pools[indexer] = stored(indexer)
            }
        }
        for layer in kept where kvSources[layer] != layer {
            let source = kvSources[layer]
            keysValues[layer] = .reuse(layer: source)
            // A dropped attention still runs where it chooses the pool a later layer reads.
            guard !drops.dropsAttention(layer) || pools[layer]?.storesOnly == true else { continue }
            guard !drops.blocks.contains(source) else {
                throw DroptraceError(
                    "dropping block \(source) leaves layer \(layer) no keys and values to attend to (kv_source_layers)", path: parts.configPath)
            }
            keysValues[source] = stored(source)
        }
        return LayerSharing(keysValues: keysValues, keySelections: pools)
    }

    /// An export must run in transformers as droptrace ran the model: no
    /// dropped attention that still makes what later layers read, and every
    /// kept layer's key/value source kept, and an indexer first.
    func exportProblem(_ plan: DropPlan) -> String? {
        if let problem = planProblem(plan) { return problem }
        let drops = plan.union(configuredDrops)
        guard let sharing = try? attentionSharing(skipping: plan) else { return nil }
        if let layer = (0..<layerCount).first(where: { sharing.keysValues[$0]?.storesOnly == true || sharing.keySelections[$0]?.storesOnly == true }) {
            return "layer \(layer)'s attention is dropped, but later layers read its keys and values or pool (kv_source_layers, index_layers); "
                + "an export without that attention would not run as droptrace ran the model"
        }
        let kept = (0..<layerCount).filter { !drops.blocks.contains($0) }
        if let layer = kept.first(where: { !kept.contains(kvSources[$0]) }) {
            return "block \(kvSources[layer]) is dropped, but layer \(layer) reads its keys and values (kv_source_layers); an export would not load"
        }
        if let first = kept.first(where: { layerTypes[$0] == Kolibri1_1Configuration.indexed }), !indexLayers.contains(first) {
            return "the first kept indexed_attention layer, \(first), is not an indexer (index_layers); Kolibri1_1Config refuses such an export"
        }
        return nil
    }
}

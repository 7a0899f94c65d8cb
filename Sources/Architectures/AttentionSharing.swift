import DroptraceSupport
import TensorEngine

/// Something one layer's attention makes that later layers use: its keys
/// and values (Gemma 4's `num_kv_shared_layers`, transformers'
/// `kv_sharing_modes`; `SelfAttention.keyValueSharing`) or the keys its
/// sparse-attention indexer chose (GLM-5's "shared" `indexer_types`;
/// `SelfAttention.keySelectionSharing`).
public enum AttentionSharing: Sendable, Equatable {
    /// This layer's are also used by later layers; stored under its index.
    case store(layer: Int)
    /// This layer uses layer `layer`'s instead of making its own: a layer
    /// reusing keys and values projects queries only and attends to them as
    /// that layer made them (normalised and rotated); one reusing a key
    /// selection attends only to the keys that layer's indexer chose.
    case reuse(layer: Int)
    /// This layer's attention is dropped, but later layers still use what it
    /// makes: it computes and stores that (under its index), and attends to
    /// nothing. For keys and values, its projection gives the keys and values
    /// only (q, k and v where a decoder shares the full model's weights).
    case storeOnly(layer: Int)

    /// The layer whose keys and values or selection are reused; nil for the others.
    public var reusedLayer: Int? { if case .reuse(let layer) = self { layer } else { nil } }
    /// The index this layer's are stored under; nil for `reuse`.
    public var storedLayer: Int? {
        switch self {
        case .store(let layer), .storeOnly(let layer): layer
        case .reuse: nil
        }
    }
    public var storesOnly: Bool { if case .storeOnly = self { true } else { false } }

    /// Each of `count` layers' sharing where every link's layer uses what its
    /// source makes: the source stores it — only stores it where `drops`
    /// drops its attention — and the layer reuses it; nil for the others.
    static func linking(_ links: [(layer: Int, source: Int)], count: Int, drops: DropPlan) -> [AttentionSharing?] {
        var sharing = [AttentionSharing?](repeating: nil, count: count)
        for (layer, source) in links {
            sharing[source] = drops.dropsAttention(source) ? .storeOnly(layer: source) : .store(layer: source)
            sharing[layer] = .reuse(layer: source)
        }
        return sharing
    }
}

/// Each layer's sharing in a model with some modules dropped
/// (`LanguageModel.attentionSharing(skipping:)`); an empty list: the model
/// shares nothing of that kind.
public struct LayerSharing: Sendable, Equatable {
    /// Keys and values (`SelfAttention.keyValueSharing`), by layer.
    public var keysValues: [AttentionSharing?] = []
    /// Sparse-attention key selections (`SelfAttention.keySelectionSharing`), by layer.
    public var keySelections: [AttentionSharing?] = []

    public init(keysValues: [AttentionSharing?] = [], keySelections: [AttentionSharing?] = []) {
        self.keysValues = keysValues
        self.keySelections = keySelections
    }

    public var isEmpty: Bool { keysValues.isEmpty && keySelections.isEmpty }

    /// transformers' `kv_sharing_modes` (Gemma 4's and Gemma 3n's
    /// `num_kv_shared_layers`) with `drops` dropped: each kept layer from
    /// `firstShared` on reuses the keys and values of the last earlier kept
    /// layer of its type, which stores them — and still computes them when
    /// its attention is dropped (`.storeOnly`), so that dropping an
    /// attention removes its output alone. Empty without sharing.
    /// - Throws: `DroptraceError` naming `configPath` when `drops` leaves a
    ///   sharing layer no earlier layer of its type.
    static func trailingKeysValues(layerTypes: [String], firstShared: Int, drops: DropPlan, configPath: String) throws -> LayerSharing {
        let count = layerTypes.count
        guard firstShared < count else { return LayerSharing() }
        let links = try (firstShared..<count).filter { !drops.blocks.contains($0) }.map { layer in
            let type = layerTypes[layer]
            guard let source = (0..<firstShared).last(where: { layerTypes[$0] == type && !drops.blocks.contains($0) }) else {
                throw DroptraceError(
                    "dropping every \(type) layer below \(firstShared) leaves layer \(layer) no keys and values to reuse (num_kv_shared_layers)",
                    path: configPath)
            }
            return (layer: layer, source: source)
        }
        return LayerSharing(keysValues: AttentionSharing.linking(links, count: count, drops: drops))
    }

    /// Shared sparse-attention indexer layers (GLM-5's and Hunyuan V4's
    /// "shared" `indexer_types`) with `drops` dropped: each kept shared layer
    /// whose attention runs reuses the top-k of the last full layer the
    /// model keeps before it, which stores it — and still computes it when
    /// its attention is dropped (`.storeOnly`). Empty without shared layers.
    /// - Throws: `DroptraceError` naming `configPath` when `drops` leaves a
    ///   shared layer no full layer before it (`key`: the list's key).
    static func sharedIndexers(layers: Int, isShared: (Int) -> Bool, drops: DropPlan, key: String, configPath: String) throws -> LayerSharing {
        guard (0..<layers).contains(where: isShared) else { return LayerSharing() }
        var links: [(layer: Int, source: Int)] = []
        var source: Int?
        for layer in 0..<layers where !drops.blocks.contains(layer) {
            guard isShared(layer) else {
                source = layer
                continue
            }
            guard !drops.dropsAttention(layer) else { continue }
            guard let source else {
                throw DroptraceError(
                    "dropping every full indexer layer before layer \(layer) leaves it no top-k to reuse (\(key))", path: configPath)
            }
            links.append((layer, source))
        }
        return LayerSharing(keySelections: AttentionSharing.linking(links, count: layers, drops: drops))
    }

    /// Why an attention-drop export (LLM-Drop's format, which leaves out a
    /// dropped attention's indexer) would not run as the model ran with
    /// these shared indexers (`sharedIndexers`), or nil.
    func sharedIndexerExportProblem(key: String) -> String? {
        guard let layer = keySelections.firstIndex(where: { $0?.storesOnly == true }) else { return nil }
        return "layer \(layer)'s attention is dropped, but later shared indexer layers reuse its indexer's top-k (\(key)); "
            + "an export without that attention would not run as droptrace ran the model"
    }

    /// Whether layer `index` only stores what later layers use, of either kind (`AttentionSharing.storeOnly`).
    public func storesOnly(layer index: Int) -> Bool {
        [keysValues, keySelections].contains { !$0.isEmpty && $0[index]?.storesOnly == true }
    }

    /// Layer `index`'s attention with its sharing of each kind set (as it is where a list is empty).
    func applied(to attention: SelfAttention, layer index: Int) -> SelfAttention {
        var attention = attention
        if !keysValues.isEmpty { attention = attention.sharingKeysValues(keysValues[index]) }
        if !keySelections.isEmpty { attention = attention.sharingKeySelection(keySelections[index]) }
        return attention
    }
}

/// What the storing layers of one forward pass made, by layer index
/// (`AttentionSharing`): keys and values, the [rows, keyWidth + valueWidth]
/// columns after the layer's q/k/v processing, and key selections.
public final class SharedAttentionState: @unchecked Sendable {
    private var stored: [Int: Matrix] = [:]
    private var selections: [Int: KeySelection] = [:]

    public init() {}

    func store(_ keysValues: Matrix, layer: Int) { stored[layer] = keysValues }

    func keysValues(of layer: Int) -> Matrix {
        guard let keysValues = stored[layer] else { preconditionFailure("layer \(layer)'s keys and values were not stored") }
        return keysValues
    }

    func store(_ selection: KeySelection, layer: Int) { selections[layer] = selection }

    func selection(of layer: Int) -> KeySelection {
        guard let selection = selections[layer] else { preconditionFailure("layer \(layer)'s key selection was not stored") }
        return selection
    }
}

extension SelfAttention {
    /// Whether a projection of `outFeatures` columns fits `sharing`: a layer
    /// reusing another's keys and values projects its queries only; one that
    /// only stores them, its keys and values (or all three); any other, all three.
    static func projectionFits(_ outFeatures: Int, layout: QKVLayout, sharing: AttentionSharing?) -> Bool {
        switch sharing {
        case .reuse?: outFeatures == layout.queryWidth
        case .storeOnly?: outFeatures == layout.width || outFeatures == layout.width - layout.queryWidth
        default: outFeatures == layout.width
        }
    }

    /// The attention storing or reusing keys and values as `sharing` says
    /// (a dropped model's layers reuse another layer's: `LanguageModel.attentionSharing`).
    public func sharingKeysValues(_ sharing: AttentionSharing?) -> SelfAttention {
        precondition(Self.projectionFits(projection.outFeatures, layout: layout, sharing: sharing))
        var attention = self
        attention.keyValueSharing = sharing
        return attention
    }

    /// The attention storing or reusing its indexer's key selection as
    /// `sharing` says: a layer with an indexer stores its own, one without
    /// reuses an earlier layer's (Kolibri 1.1's `keyPool`: an indexer
    /// stores its pool, a reindexer reuses the pool of one).
    public func sharingKeySelection(_ sharing: AttentionSharing?) -> SelfAttention {
        precondition(sharing.map { ($0.reusedLayer == nil) == (indexer != nil || keyPool?.selectsPool == true) } ?? true)
        var attention = self
        attention.keySelectionSharing = sharing
        return attention
    }

    /// Rows of `queries` [rows, queryWidth] then `keysValues` [rows, width − queryWidth].
    func widened(queries: Matrix, keysValues: Matrix) -> Matrix {
        let (width, queryWidth) = (layout.width, layout.queryWidth)
        return Matrix(uninitialized: queries.rows, width) { out in
            for r in 0..<queries.rows {
                (out + r * width).update(from: queries.data, at: r * queryWidth, count: queryWidth)
                (out + r * width + queryWidth).update(from: keysValues.data, at: r * (width - queryWidth), count: width - queryWidth)
            }
        }
    }

    /// The keys and values of projected rows `qkv` [rows, width], for the
    /// layers that reuse them.
    func keysValues(_ qkv: Matrix) -> Matrix {
        let (width, queryWidth) = (layout.width, layout.queryWidth)
        return Matrix(uninitialized: qkv.rows, width - queryWidth) { out in
            for r in 0..<qkv.rows {
                (out + r * (width - queryWidth)).update(from: qkv.data, at: r * width + queryWidth, count: width - queryWidth)
            }
        }
    }
}

extension UnsafeMutablePointer<Float> {
    /// Copies `count` values of `source` from index `start`.
    func update(from source: [Float], at start: Int, count: Int) {
        source.withUnsafeBufferPointer { update(from: $0.baseAddress! + start, count: count) }
    }
}

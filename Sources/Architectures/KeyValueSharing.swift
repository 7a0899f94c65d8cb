import TensorEngine

/// Layers that attend to one layer's keys and values (Gemma 4's
/// `num_kv_shared_layers`, transformers' `kv_sharing_modes`).
public enum KeyValueSharing: Sendable, Equatable {
    /// This layer's keys and values are also attended to by later layers;
    /// stored under this layer's index.
    case store(layer: Int)
    /// This layer projects queries only and attends to the keys and values
    /// of layer `layer` (normalised and rotated as that layer made them).
    case reuse(layer: Int)
    /// This layer's attention is dropped, but later layers still reuse its
    /// keys and values: it computes and stores them (under its index), and
    /// attends to nothing. Its projection gives the keys and values only
    /// (q, k and v where a decoder shares the full model's weights).
    case storeOnly(layer: Int)

    /// The layer whose keys and values are reused; nil for the others.
    public var reusedLayer: Int? { if case .reuse(let layer) = self { layer } else { nil } }
    /// The index the keys and values are stored under; nil for `reuse`.
    public var storedLayer: Int? {
        switch self {
        case .store(let layer), .storeOnly(let layer): layer
        case .reuse: nil
        }
    }
    public var storesOnly: Bool { if case .storeOnly = self { true } else { false } }
}

/// The keys and values the storing layers of one forward pass made, by
/// layer index: the [rows, keyWidth + valueWidth] columns after the
/// layer's q/k/v processing (`KeyValueSharing`).
public final class SharedKeysValues: @unchecked Sendable {
    private var stored: [Int: Matrix] = [:]

    public init() {}

    func store(_ keysValues: Matrix, layer: Int) { stored[layer] = keysValues }

    func keysValues(of layer: Int) -> Matrix {
        guard let keysValues = stored[layer] else { preconditionFailure("layer \(layer)'s keys and values were not stored") }
        return keysValues
    }
}

extension SelfAttention {
    /// Whether a projection of `outFeatures` columns fits `sharing`: a layer
    /// reusing another's keys and values projects its queries only; one that
    /// only stores them, its keys and values (or all three); any other, all three.
    static func projectionFits(_ outFeatures: Int, layout: QKVLayout, sharing: KeyValueSharing?) -> Bool {
        switch sharing {
        case .reuse?: outFeatures == layout.queryWidth
        case .storeOnly?: outFeatures == layout.width || outFeatures == layout.width - layout.queryWidth
        default: outFeatures == layout.width
        }
    }

    /// The attention storing or reusing keys and values as `sharing` says
    /// (a dropped model's layers reuse another layer's: `LanguageModel.keyValueSharing`).
    public func sharingKeysValues(_ sharing: KeyValueSharing?) -> SelfAttention {
        precondition(Self.projectionFits(projection.outFeatures, layout: layout, sharing: sharing))
        var attention = self
        attention.keyValueSharing = sharing
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

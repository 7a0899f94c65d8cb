import Foundation
import TensorEngine

/// Doge's dynamic mask attention (transformers' `DogeAttention`): each key
/// carries, per key/value head g, the bias exp(A_g · softplus(dt_proj(v))_g)
/// of its value row v, added to its scaled scores; where a sequence is
/// longer than `keep` (`keep_window_size`), each query attends only to the
/// `keep` keys of highest bias it may see (`KeyBiases`).
public struct DynamicMask: Sendable {
    /// [kv_heads, kv_heads · head_dim]: the values' projection to one logit per key/value head.
    public let projection: Linear
    /// [kv_heads]: `A`.
    public let rates: [Float]
    public let keep: Int

    public init(projection: Linear, rates: [Float], keep: Int) {
        precondition(projection.outFeatures == rates.count && keep > 0)
        self.projection = projection
        self.rates = rates
        self.keep = keep
    }

    /// The biases of the keys of projected rows `qkv` (grouped q | k | v),
    /// in Float32 as torch computes them (softplus returning its input above 20).
    public func biases(_ qkv: Matrix, layout: QKVLayout) -> KeyBiases {
        precondition(layout.arrangement == .grouped && projection.inFeatures == layout.keyWidth)
        let start = layout.valueOffset(kvHead: 0), width = layout.keyWidth
        let values = Matrix(uninitialized: qkv.rows, width) { out in
            qkv.data.withUnsafeBufferPointer { rows in
                for r in 0..<qkv.rows { (out + r * width).update(from: rows.baseAddress! + r * layout.width + start, count: width) }
            }
        }
        var logits = projection(values)
        let heads = rates.count
        logits.data.withUnsafeMutableBufferPointer { dt in
            for i in dt.indices {
                let x = dt[i], softplus = x > 20 ? x : log1p(exp(x))
                dt[i] = exp(rates[i % heads] * softplus)
            }
        }
        return KeyBiases(values: logits.data, kvHeads: heads, keep: keep)
    }
}

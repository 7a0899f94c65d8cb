import Foundation
import TensorEngine

/// Differential attention (DiffLlama, https://huggingface.co/papers/2410.05258),
/// as transformers' `DiffLlamaAttention` computes it: the softmax attention
/// runs twice with the same queries and keys, over two value tensors made
/// from the two halves of the value heads (kv head g reads value head
/// g mod (kv_heads / 2), then kv_heads / 2 + g mod (kv_heads / 2)); each
/// query head's two outputs side by side make a head of 2 · head_dim
/// columns; head j of the first half of the heads minus λ times head
/// j + heads / 2 is normalised (a weightless RMSNorm over its 2 · head_dim
/// columns) and scaled by 1 − λ_init, giving the heads / 2 pieces of the
/// output projection's input.
public struct DifferentialAttention: Sendable {
    /// λ = exp(λ_q1 · λ_k1) − exp(λ_q2 · λ_k2) + λ_init, in float32 as transformers sums it.
    public let lambda: Float
    /// 0.8 − 0.6 · exp(−0.3 · layer index).
    public let lambdaInit: Double
    /// The norm of each combined head: its weights all 1 − λ_init.
    let norm: Normalization

    /// - Parameters:
    ///   - q1, k1, q2, k2: the layer's `lambda_q1`, `lambda_k1`, `lambda_q2`, `lambda_k2` [head_dim].
    ///   - layer: the layer's index, which sets λ_init.
    ///   - eps: the group norm's epsilon (`rms_norm_eps`).
    public init(q1: [Float], k1: [Float], q2: [Float], k2: [Float], layer: Int, headDim: Int, eps: Double) {
        precondition([q1, k1, q2, k2].allSatisfy { $0.count == headDim })
        func product(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
        lambdaInit = Self.lambdaInit(layer: layer)
        lambda = (exp(product(q1, k1)) - exp(product(q2, k2))) + Float(lambdaInit)
        norm = .rms(weight: [Float](repeating: Float(1 - lambdaInit), count: 2 * headDim), eps: Float(eps))
    }

    /// DiffLlama's `lambda_init_fn`.
    public static func lambdaInit(layer: Int) -> Double { 0.8 - 0.6 * Foundation.exp(-0.3 * Double(layer)) }

    /// Whether `layout` has the even number of key/value heads the value halves need.
    public static func fits(_ layout: QKVLayout) -> Bool { layout.numKVHeads % 2 == 0 && layout.arrangement == .grouped }

    /// Kv head `kvHead`'s value head in pass `pass` (0 or 1).
    public static func valueHead(_ kvHead: Int, pass: Int, layout: QKVLayout) -> Int {
        let half = layout.numKVHeads / 2
        return pass * half + kvHead % half
    }

    /// Projected rows `qkv` with each kv head's values replaced by those pass `pass` reads.
    func values(_ qkv: Matrix, pass: Int, layout: QKVLayout) -> Matrix {
        var result = qkv
        let width = layout.width, headDim = layout.headDim
        result.data.withUnsafeMutableBufferPointer { out in
            qkv.data.withUnsafeBufferPointer { source in
                for r in 0..<qkv.rows {
                    for g in 0..<layout.numKVHeads {
                        let from = r * width + layout.valueOffset(kvHead: Self.valueHead(g, pass: pass, layout: layout))
                        let to = r * width + layout.valueOffset(kvHead: g)
                        for j in 0..<headDim { out[to + j] = source[from + j] }
                    }
                }
            }
        }
        return result
    }

    /// The attention output [rows, heads · head_dim] of projected rows
    /// `qkv`, `attend` the softmax attention over rows laid out as `qkv`.
    public func callAsFunction(_ qkv: Matrix, layout: QKVLayout, attend: (Matrix) -> Matrix) -> Matrix {
        combine(attend(values(qkv, pass: 0, layout: layout)), attend(values(qkv, pass: 1, layout: layout)), layout: layout)
    }

    /// The output projection's input from the two passes' outputs [rows, heads · head_dim] each.
    public func combine(_ first: Matrix, _ second: Matrix, layout: QKVLayout) -> Matrix {
        precondition(first.rows == second.rows && first.cols == layout.queryWidth && second.cols == layout.queryWidth)
        let headDim = layout.headDim, pairs = layout.numHeads / 2, width = layout.queryWidth, lambda = self.lambda
        var result = Matrix(zeros: first.rows, width)
        result.data.withUnsafeMutableBufferPointer { out in
            for (pass, attended) in [first, second].enumerated() {
                attended.data.withUnsafeBufferPointer { a in
                    for r in 0..<first.rows {
                        for j in 0..<pairs {
                            let target = r * width + j * 2 * headDim + pass * headDim
                            let minuend = r * width + j * headDim, subtrahend = r * width + (j + pairs) * headDim
                            for c in 0..<headDim { out[target + c] = a[minuend + c] - lambda * a[subtrahend + c] }
                        }
                    }
                }
            }
        }
        norm.apply(inPlace: &result, columns: 0..<width, pieceWidth: 2 * headDim)
        return result
    }
}

import Foundation

/// A per-row normalisation layer.
public enum Normalization: Sendable {
    /// x / sqrt(mean(x²) + eps) · w   (Llama, Mistral, Qwen2).
    case rms(weight: [Float], eps: Float)
    /// (x − mean) / sqrt(var + eps) · w + b   (GPT-2, GPT-NeoX).
    case layer(weight: [Float], bias: [Float], eps: Float)

    /// LayerNorm without learnable parameters (OLMo): weight one and bias
    /// zero leave every normalised value exactly as it is.
    public static func parameterFreeLayer(size: Int, eps: Float) -> Normalization {
        .layer(weight: [Float](repeating: 1, count: size), bias: [Float](repeating: 0, count: size), eps: eps)
    }

    /// Normalises columns `columns` of every row of `x` in place, as one
    /// vector per row (OLMo-2's q/k norms over all heads of the fused QKV rows).
    public func apply(inPlace x: inout Matrix, columns: Range<Int>) {
        precondition(columns.upperBound <= x.cols)
        let width = x.cols, rows = x.rows
        x.data.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            parallelFor(chunks: rows, minimumChunk: 16) { range in
                // Each value is read before it is overwritten, so the row can be its own output.
                for r in range {
                    let row = base + r * width + columns.lowerBound
                    normalizeRow(UnsafePointer(row), row, columns.count)
                }
            }
        }
    }

    public func callAsFunction(_ x: Matrix) -> Matrix {
        let width = x.cols
        return Matrix(uninitialized: x.rows, width) { out in
            x.data.withUnsafeBufferPointer { xs in
                parallelFor(chunks: x.rows, minimumChunk: 16) { rows in
                    for r in rows {
                        normalizeRow(xs.baseAddress! + r * width, out + r * width, width)
                    }
                }
            }
        }
    }

    private func normalizeRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        switch self {
        case .rms(let weight, let eps):
            var sumSquares: Float = 0
            for i in 0..<n { sumSquares += x[i] * x[i] }
            let scale = 1 / (sumSquares / Float(n) + eps).squareRoot()
            for i in 0..<n { y[i] = weight[i] * (x[i] * scale) }
        case .layer(let weight, let bias, let eps):
            var sum: Float = 0
            for i in 0..<n { sum += x[i] }
            let mean = sum / Float(n)
            var variance: Float = 0
            for i in 0..<n {
                let d = x[i] - mean
                variance += d * d
            }
            let scale = 1 / (variance / Float(n) + eps).squareRoot()
            for i in 0..<n { y[i] = (x[i] - mean) * scale * weight[i] + bias[i] }
        }
    }
}

import Foundation

/// A per-row normalisation layer.
public enum Normalization: Sendable {
    /// x / sqrt(mean(x²) + eps) · w   (Llama, Mistral, Qwen2).
    case rms(weight: [Float], eps: Float)
    /// (x − mean) / sqrt(var + eps) · w + b   (GPT-2, GPT-NeoX).
    case layer(weight: [Float], bias: [Float], eps: Float)
    /// n ⊙ σ(up(SiLU(down(n)))), n = the inner norm of x: a norm followed by
    /// a low-rank gate of its own output, the gate's sigmoid taken in
    /// float32 (A.X K2's `AXK2GatedRMSNorm`, Megatron's `GatedNormWrapper`;
    /// down [rank, width], up [width, rank], no biases). Each row's values
    /// are normalised together: it is applied to whole rows only.
    indirect case sigmoidGated(Normalization, down: Linear, up: Linear)

    /// LayerNorm without learnable parameters (OLMo): weight one and bias
    /// zero leave every normalised value exactly as it is.
    public static func parameterFreeLayer(size: Int, eps: Float) -> Normalization {
        .layer(weight: [Float](repeating: 1, count: size), bias: [Float](repeating: 0, count: size), eps: eps)
    }

    /// RMSNorm without a weight, x / √(mean(x²) + eps) (nanochat's, Muse's
    /// `with_scale=False` norms, Llama 4's q/k L2 norm): weights of one
    /// leave every normalised value exactly as it is.
    public static func weightlessRMS(size: Int, eps: Float) -> Normalization {
        .rms(weight: [Float](repeating: 1, count: size), eps: eps)
    }

    /// The projection onto the unit sphere without weights, x / √(Σx² + eps)
    /// (nGPT's L2 norm; Dory's `DoryL2Norm`): an RMSNorm of `size` values
    /// whose epsilon is eps / size and whose weights are all 1/√size.
    public static func l2(size: Int, eps: Float) -> Normalization {
        .rms(weight: [Float](repeating: 1 / Float(size).squareRoot(), count: size), eps: eps / Float(size))
    }

    /// Normalises columns `columns` of every row of `x` in place: as one
    /// vector per row (q/k norms over all heads of the fused QKV rows), or,
    /// with `pieceWidth`, as consecutive vectors of that width (per-head q/k
    /// norms; `columns.count` must be a multiple of it). `weightsPerPiece`:
    /// the weights span all of `columns`, each piece normalised with its own
    /// slice of them (Cohere's per-head q/k norms).
    public func apply(inPlace x: inout Matrix, columns: Range<Int>, pieceWidth: Int? = nil, weightsPerPiece: Bool = false) {
        if case .sigmoidGated = self {
            precondition(columns == 0..<x.cols && pieceWidth == nil && !weightsPerPiece)
            x = self(x)
            return
        }
        let piece = pieceWidth ?? columns.count
        precondition(columns.upperBound <= x.cols && piece > 0 && columns.count % piece == 0)
        precondition(!weightsPerPiece || weightCount == columns.count)
        let width = x.cols, rows = x.rows
        x.data.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            parallelFor(chunks: rows, minimumChunk: 16) { range in
                // Each value is read before it is overwritten, so the row can be its own output.
                for r in range {
                    for start in stride(from: columns.lowerBound, to: columns.upperBound, by: piece) {
                        let row = base + r * width + start
                        normalizeRow(UnsafePointer(row), row, piece, weightOffset: weightsPerPiece ? start - columns.lowerBound : 0)
                    }
                }
            }
        }
    }

    /// The number of weights.
    var weightCount: Int {
        switch self {
        case .rms(let weight, _), .layer(let weight, _, _): weight.count
        case .sigmoidGated(let norm, _, _): norm.weightCount
        }
    }

    /// Normalises the `count` values at `row` in place, as one vector.
    public func normalize(inPlace row: UnsafeMutablePointer<Float>, count: Int) {
        normalizeRow(UnsafePointer(row), row, count)
    }

    public func callAsFunction(_ x: Matrix) -> Matrix {
        if case .sigmoidGated(let norm, let down, let up) = self {
            var normed = norm(x)
            var hidden = down(normed)
            hidden.data.withUnsafeMutableBufferPointer { values in
                for i in values.indices { values[i] = Activation.silu.apply(values[i]) }
            }
            let gate = up(hidden)
            precondition(gate.rows == normed.rows && gate.cols == normed.cols)
            normed.data.withUnsafeMutableBufferPointer { values in
                gate.data.withUnsafeBufferPointer { g in
                    for i in values.indices { values[i] *= 1 / (1 + exp(-g[i])) }
                }
            }
            return normed
        }
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

    private func normalizeRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, weightOffset: Int = 0) {
        switch self {
        case .rms(let weight, let eps):
            weight.withUnsafeBufferPointer { VectorKernels.active.rmsNorm(x, weight: $0.baseAddress! + weightOffset, into: y, n, eps: eps) }
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
            for i in 0..<n { y[i] = (x[i] - mean) * scale * weight[weightOffset + i] + bias[weightOffset + i] }
        case .sigmoidGated:
            preconditionFailure("a gated norm is applied to whole matrices (callAsFunction)")
        }
    }
}

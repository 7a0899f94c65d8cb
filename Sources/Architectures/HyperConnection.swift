import Foundation
import TensorEngine

/// Hyper-connections: the residual stream is `streams` parallel copies of
/// the hidden state, each row [streams · hidden] (stream n's columns at
/// n · hidden). The embedding enters every stream (`Matrix.repeated`); each
/// branch reads one collapsed hidden state and its output joins every
/// stream with a gate of its own; the final head collapses them once more
/// (`HyperHead`). Hunyuan V4's independent form (transformers'
/// `HYV4HyperConnection`, after DeepSeek-V4's manifold-constrained
/// hyper-connections without their stream mixing):
///
///     r = (mean over the row's streams · hidden columns of H²  + eps)^-1/2
///     m = (fn · H) · r                                        [2 · streams]
///     pre  = σ(m[..streams] · scale[0] + base[..streams]) + gateEps
///     post = magnitude · σ(m[streams..] · scale[1] + base[streams..]) + gateEps
///     branch input = Σ_n pre_n · H_n                           [hidden]
///     H'_n = post_n · branch output + H_n
///
/// in float32, as transformers forces. The stream passes a branch
/// unchanged but for its output, so a dropped branch leaves it as it was;
/// a module's importance compares the whole stream, all streams at once,
/// before and after its branch. Source: transformers'
/// `models/hy_v4/modeling_hy_v4.py`.
public struct HyperConnection: Sendable {
    /// `hc_mult`.
    public let streams: Int
    /// `fn`: [2 · streams, streams · hidden], float32 in either precision
    /// (transformers keeps the hyper-connections in float32).
    public let projection: Linear
    /// `base`: [2 · streams].
    public let base: [Float]
    /// `scale`: the pre and post gates' scales.
    public let preScale: Float, postScale: Float
    /// `hc_magnitude`.
    public let postMagnitude: Float
    /// `hc_eps`, added to both gates.
    public let gateEps: Float
    /// The unweighted RMS norm's eps (`rms_norm_eps`).
    public let normEps: Float

    public init(
        streams: Int, projection: Linear, base: [Float], scale: [Float], postMagnitude: Float, gateEps: Float, normEps: Float
    ) {
        precondition(streams >= 1 && projection.outFeatures == 2 * streams && projection.inFeatures % streams == 0)
        precondition(base.count == 2 * streams && scale.count == 2)
        self.streams = streams
        self.projection = projection
        self.base = base
        (preScale, postScale) = (scale[0], scale[1])
        self.postMagnitude = postMagnitude
        self.gateEps = gateEps
        self.normEps = normEps
    }

    /// Width of one stream (`hidden_size`).
    public var width: Int { projection.inFeatures / streams }

    /// Each row's pre and post gates [rows, 2 · streams] (pre first) of `stream` [rows, streams · hidden].
    func gates(_ stream: Matrix) -> Matrix {
        var mixes = projection(stream)
        let streams = self.streams
        stream.data.withUnsafeBufferPointer { h in
            mixes.data.withUnsafeMutableBufferPointer { m in
                for r in 0..<stream.rows {
                    let scale = HyperHead.inverseRootMeanSquare(h.baseAddress! + r * stream.cols, count: stream.cols, eps: normEps)
                    for j in 0..<(2 * streams) {
                        let pre = j < streams, mixed = m[r * 2 * streams + j] * scale
                        let gate = 1 / (1 + exp(-(mixed * (pre ? preScale : postScale) + base[j])))
                        m[r * 2 * streams + j] = (pre ? gate : postMagnitude * gate) + gateEps
                    }
                }
            }
        }
        return mixes
    }

    /// The branch's input [rows, hidden]: each row's streams weighed by its pre gates.
    public func collapsed(_ stream: Matrix) -> Matrix {
        HyperHead.weighedSum(stream, weights: gates(stream), stride: 2 * streams, streams: streams)
    }

    /// The stream [rows, streams · hidden] once `output` [rows, hidden] joins
    /// `stream`, each stream through its post gate.
    public func join(_ stream: Matrix, _ output: Matrix) -> Matrix {
        let gates = gates(stream), streams = self.streams, width = self.width
        precondition(output.rows == stream.rows && output.cols == width)
        var result = stream
        result.data.withUnsafeMutableBufferPointer { h in
            output.data.withUnsafeBufferPointer { out in
                for r in 0..<stream.rows {
                    for n in 0..<streams {
                        let post = gates.data[r * 2 * streams + streams + n]
                        let target = h.baseAddress! + r * streams * width + n * width, source = out.baseAddress! + r * width
                        for j in 0..<width { target[j] += post * source[j] }
                    }
                }
            }
        }
        return result
    }
}

/// The final collapse of hyper-connected streams before the last norm
/// (transformers' `HYV4HyperHead`): with r as in `HyperConnection`,
/// pre = σ((hc_fn · H) · r · hc_scale + hc_base) + eps, output Σ_n pre_n · H_n.
public struct HyperHead: Sendable {
    public let streams: Int
    /// `hc_fn`: [streams, streams · hidden], float32 as `HyperConnection.projection`.
    public let projection: Linear
    /// `hc_base`: [streams].
    public let base: [Float]
    /// `hc_scale`.
    public let scale: Float
    /// `hc_eps`.
    public let gateEps: Float
    /// `rms_norm_eps`.
    public let normEps: Float

    public init(streams: Int, projection: Linear, base: [Float], scale: Float, gateEps: Float, normEps: Float) {
        precondition(streams >= 1 && projection.outFeatures == streams && projection.inFeatures % streams == 0 && base.count == streams)
        self.streams = streams
        self.projection = projection
        self.base = base
        self.scale = scale
        self.gateEps = gateEps
        self.normEps = normEps
    }

    /// The collapsed hidden state [rows, hidden] of `stream` [rows, streams · hidden].
    public func callAsFunction(_ stream: Matrix) -> Matrix {
        var mixes = projection(stream)
        stream.data.withUnsafeBufferPointer { h in
            mixes.data.withUnsafeMutableBufferPointer { m in
                for r in 0..<stream.rows {
                    let factor = Self.inverseRootMeanSquare(h.baseAddress! + r * stream.cols, count: stream.cols, eps: normEps)
                    for n in 0..<streams {
                        m[r * streams + n] = 1 / (1 + exp(-(m[r * streams + n] * factor * scale + base[n]))) + gateEps
                    }
                }
            }
        }
        return Self.weighedSum(stream, weights: mixes, stride: streams, streams: streams)
    }

    /// (mean of x² + eps)^-1/2 over `count` values, the mean in float32 as torch's.
    static func inverseRootMeanSquare(_ x: UnsafePointer<Float>, count: Int, eps: Float) -> Float {
        var sum: Float = 0
        for i in 0..<count { sum += x[i] * x[i] }
        return 1 / (sum / Float(count) + eps).squareRoot()
    }

    /// Σ_n w_n · H_n per row, w_n the row's column n of `weights` (rows `stride` wide).
    static func weighedSum(_ stream: Matrix, weights: Matrix, stride: Int, streams: Int) -> Matrix {
        let width = stream.cols / streams
        var result = Matrix(zeros: stream.rows, width)
        result.data.withUnsafeMutableBufferPointer { out in
            stream.data.withUnsafeBufferPointer { h in
                for r in 0..<stream.rows {
                    let target = out.baseAddress! + r * width
                    for n in 0..<streams {
                        let w = weights.data[r * stride + n], source = h.baseAddress! + r * stream.cols + n * width
                        for j in 0..<width { target[j] += w * source[j] }
                    }
                }
            }
        }
        return result
    }
}

extension Matrix {
    /// Each row repeated `copies` times along the columns: [rows, copies · cols]
    /// (the embedding entering every hyper-connected stream).
    public func repeated(_ copies: Int) -> Matrix {
        guard copies > 1 else { return self }
        let cols = self.cols
        return Matrix(uninitialized: rows, copies * cols) { out in
            data.withUnsafeBufferPointer { source in
                for r in 0..<rows {
                    for n in 0..<copies { (out + (r * copies + n) * cols).update(from: source.baseAddress! + r * cols, count: cols) }
                }
            }
        }
    }
}

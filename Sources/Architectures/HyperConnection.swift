import CheckpointIO
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
///
/// DeepSeek-V4's manifold-constrained form (`DeepseekV4HyperConnection`,
/// `mixing` set) also mixes the streams: fn has streams² more rows, whose
/// m (after the pre and post ones, row-major [j, k]) give
///
///     comb = softmax_k(m[j, k] · scale[2] + base[j, k]) + gateEps
///     comb ← comb / (Σ_j comb + gateEps), then (iterations − 1) times
///            comb ← comb / (Σ_k comb + gateEps); comb ← comb / (Σ_j comb + gateEps)
///     H'_k = post_k · branch output + Σ_j comb[j, k] · H_j
///
/// (Sinkhorn-Knopp towards a doubly stochastic matrix), its post gate
/// without gateEps. A dropped branch still leaves the streams as they were,
/// unmixed. Source: transformers' `models/deepseek_v4/modeling_deepseek_v4.py`.
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
    /// DeepSeek-V4's stream mixing: the comb's scale (`scale[2]`) and its
    /// Sinkhorn iterations (`hc_sinkhorn_iters`; at most one, the columns
    /// normalised once, as `range(iterations - 1)` runs none); nil for none (Hunyuan V4).
    public let mixing: (scale: Float, iterations: Int)?

    /// Hunyuan V4's form without `mixing`: fn [2 · streams, ..], base
    /// [2 · streams], scale [2]; DeepSeek-V4's with it: fn [(2 + streams) ·
    /// streams, ..], base as many, scale [3].
    public init(
        streams: Int, projection: Linear, base: [Float], scale: [Float], postMagnitude: Float, gateEps: Float, normEps: Float,
        sinkhornIterations: Int? = nil
    ) {
        let rows = (2 + (sinkhornIterations == nil ? 0 : streams)) * streams
        precondition(streams >= 1 && projection.outFeatures == rows && projection.inFeatures % streams == 0)
        precondition(base.count == rows && scale.count == (sinkhornIterations == nil ? 2 : 3))
        self.streams = streams
        self.projection = projection
        self.base = base
        (preScale, postScale) = (scale[0], scale[1])
        self.postMagnitude = postMagnitude
        self.gateEps = gateEps
        self.normEps = normEps
        mixing = sinkhornIterations.map { (scale[2], $0) }
    }

    /// Values per row of `gates`: pre, post and, when mixing, the comb.
    var gateWidth: Int { projection.outFeatures }

    /// Width of one stream (`hidden_size`).
    public var width: Int { projection.inFeatures / streams }

    /// Each row's pre and post gates and, when mixing, its comb [rows,
    /// `gateWidth`] (pre first, the comb row-major [j, k]) of `stream` [rows, streams · hidden].
    func gates(_ stream: Matrix) -> Matrix {
        var mixes = projection(stream)
        let streams = self.streams, width = gateWidth
        // DeepSeek-V4 adds no eps to the post gate.
        let postEps = mixing == nil ? gateEps : 0
        stream.data.withUnsafeBufferPointer { h in
            mixes.data.withUnsafeMutableBufferPointer { m in
                for r in 0..<stream.rows {
                    let scale = HyperHead.inverseRootMeanSquare(h.baseAddress! + r * stream.cols, count: stream.cols, eps: normEps)
                    let row = m.baseAddress! + r * width
                    for j in 0..<(2 * streams) {
                        let pre = j < streams, mixed = row[j] * scale
                        let gate = 1 / (1 + exp(-(mixed * (pre ? preScale : postScale) + base[j])))
                        row[j] = pre ? gate + gateEps : postMagnitude * gate + postEps
                    }
                    if let mixing { combine(row + 2 * streams, inverseRMS: scale, mixing: mixing) }
                }
            }
        }
        return mixes
    }

    /// One row's comb [streams, streams] in place from its mixes, as `DeepseekV4HyperConnection`.
    private func combine(_ comb: UnsafeMutablePointer<Float>, inverseRMS: Float, mixing: (scale: Float, iterations: Int)) {
        let n = streams, offset = 2 * n
        for j in 0..<n {
            let row = comb + j * n
            var largest = -Float.infinity
            for k in 0..<n {
                row[k] = row[k] * inverseRMS * mixing.scale + base[offset + j * n + k]
                largest = max(largest, row[k])
            }
            var sum: Float = 0
            for k in 0..<n {
                row[k] = exp(row[k] - largest)
                sum += row[k]
            }
            for k in 0..<n { row[k] = row[k] / sum + gateEps }
        }
        func normaliseColumns() {
            for k in 0..<n {
                var sum: Float = 0
                for j in 0..<n { sum += comb[j * n + k] }
                for j in 0..<n { comb[j * n + k] /= sum + gateEps }
            }
        }
        normaliseColumns()
        for _ in 0..<(max(mixing.iterations, 1) - 1) {
            for j in 0..<n {
                var sum: Float = 0
                for k in 0..<n { sum += comb[j * n + k] }
                for k in 0..<n { comb[j * n + k] /= sum + gateEps }
            }
            normaliseColumns()
        }
    }

    /// The branch's input [rows, hidden]: each row's streams weighed by its pre gates.
    public func collapsed(_ stream: Matrix) -> Matrix {
        HyperHead.weighedSum(stream, weights: gates(stream), stride: gateWidth, streams: streams)
    }

    /// The stream [rows, streams · hidden] once `output` [rows, hidden] joins
    /// `stream`, each stream through its post gate.
    public func join(_ stream: Matrix, _ output: Matrix) -> Matrix {
        let gates = gates(stream), streams = self.streams, width = self.width, stride = gateWidth
        precondition(output.rows == stream.rows && output.cols == width)
        if mixing != nil { return mixedJoin(stream, output, gates: gates) }
        var result = stream
        result.data.withUnsafeMutableBufferPointer { h in
            output.data.withUnsafeBufferPointer { out in
                for r in 0..<stream.rows {
                    for n in 0..<streams {
                        let post = gates.data[r * stride + streams + n]
                        let target = h.baseAddress! + r * streams * width + n * width, source = out.baseAddress! + r * width
                        for j in 0..<width { target[j] += post * source[j] }
                    }
                }
            }
        }
        return result
    }

    /// post_k · output + Σ_j comb[j, k] · H_j per row and stream k, in float32 as torch's matmul.
    private func mixedJoin(_ stream: Matrix, _ output: Matrix, gates: Matrix) -> Matrix {
        let n = streams, width = self.width, stride = gateWidth
        return Matrix(uninitialized: stream.rows, stream.cols) { target in
            stream.data.withUnsafeBufferPointer { h in
                output.data.withUnsafeBufferPointer { out in
                    gates.data.withUnsafeBufferPointer { g in
                        for r in 0..<stream.rows {
                            let row = g.baseAddress! + r * stride, comb = row + 2 * n, source = h.baseAddress! + r * n * width
                            for k in 0..<n {
                                let post = row[n + k], result = target + r * n * width + k * width, branch = out.baseAddress! + r * width
                                for d in 0..<width {
                                    var mixed: Float = 0
                                    for j in 0..<n { mixed += comb[j * n + k] * source[j * width + d] }
                                    result[d] = post * branch[d] + mixed
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The final collapse of hyper-connected streams before the last norm
/// (transformers' `HYV4HyperHead`): with r as in `HyperConnection`,
/// pre = σ((hc_fn · H) · r · hc_scale + hc_base) + eps, output Σ_n pre_n · H_n.
public struct HyperHead: StreamCollapse {
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

    public var projections: [Linear] { [projection] }

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

/// The final collapse of hyper-connected streams as their plain mean
/// (GLM-5-Next's `Glm5NextTextHyperHead`: `hidden_streams.mean(dim=2)`).
public struct StreamMean: StreamCollapse {
    public let streams: Int

    public init(streams: Int) {
        precondition(streams >= 1)
        self.streams = streams
    }

    public var projections: [Linear] { [] }

    /// The mean [rows, hidden] of `stream` [rows, streams · hidden]'s streams, summed in order then divided, as torch's mean.
    public func callAsFunction(_ stream: Matrix) -> Matrix {
        let weights = Matrix(uninitialized: stream.rows, streams) { w in
            for i in 0..<(stream.rows * streams) { w[i] = 1 }
        }
        var sum = HyperHead.weighedSum(stream, weights: weights, stride: streams, streams: streams)
        let count = Float(streams)
        sum.data.withUnsafeMutableBufferPointer { for i in $0.indices { $0[i] /= count } }
        return sum
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

/// The hyper-connection tensors of a checkpoint, as Hunyuan V4 and
/// DeepSeek-V4 store them: a connection's `<name>.fn` [rows, streams ·
/// hidden] (read in float32, as transformers keeps it), `.base` [rows] and
/// `.scale`; the head's `hc_head.hc_fn`, `hc_base`, `hc_scale`.
struct HyperConnectionTensors {
    let weights: Weights
    /// `hc_mult`.
    let streams: Int
    let hiddenSize: Int
    /// `hc_eps`, `rms_norm_eps`.
    let gateEps: Float
    let normEps: Float

    /// The connection under `name`: Hunyuan V4's (`sinkhornIterations`
    /// nil) or DeepSeek-V4's with its stream mixing.
    /// - Throws: `DroptraceError` naming a tensor that is missing or misshapen.
    func connection(_ name: String, postMagnitude: Float, sinkhornIterations: Int? = nil) throws -> ResidualJoin {
        let rows = (2 + (sinkhornIterations == nil ? 0 : streams)) * streams
        return .hyperConnected(HyperConnection(
            streams: streams, projection: try projection(name + ".fn", rows: rows), base: try weights.floats(name + ".base", [rows]),
            scale: try weights.floats(name + ".scale", [sinkhornIterations == nil ? 2 : 3]), postMagnitude: postMagnitude,
            gateEps: gateEps, normEps: normEps, sinkhornIterations: sinkhornIterations))
    }

    /// The collapse before the final norm (`hc_head`).
    func head() throws -> HyperHead {
        HyperHead(
            streams: streams, projection: try projection("hc_head.hc_fn", rows: streams),
            base: try weights.floats("hc_head.hc_base", [streams]), scale: try weights.floats("hc_head.hc_scale", [1])[0],
            gateEps: gateEps, normEps: normEps)
    }

    private func projection(_ name: String, rows: Int) throws -> Linear {
        let width = streams * hiddenSize
        return Linear(weight: try weights.floats(name, [rows, width]), bias: nil, inFeatures: width, outFeatures: rows, arithmetic: .f32)
    }
}

extension HyperConnection {
    /// Sinkhorn iterations droptrace runs at most, far past convergence
    /// (transformers' default is 20): each normalises every token's comb
    /// matrix in every layer, and a count past this runs for hours.
    static let maximumSinkhornIterations = 10_000

    /// Refuses `hc_mult` streams whose mixing weights ((hc_mult + 2) ·
    /// hc_mult rows of hc_mult · hidden_size columns) do not fit in an Int,
    /// and more Sinkhorn iterations than `maximumSinkhornIterations`
    /// (DeepseekV4Config's and Glm5NextTextConfig's keys).
    /// - Throws: `InvalidConfigValue` naming the key.
    static func checkSizes(streams hcMult: Int, hidden: Int, sinkhornIterations: Int) throws {
        try ConfigRules.count(hcMult, "hc_mult")
        let mixes = try ConfigRules.sum([(hcMult, "hc_mult"), (2, "2")])
        try ConfigRules.product([(mixes, "hc_mult + 2"), (hcMult, "hc_mult"), (hcMult, "hc_mult"), (hidden, "hidden_size")])
        if sinkhornIterations > maximumSinkhornIterations {
            throw InvalidConfigValue(
                key: "hc_sinkhorn_iters",
                problem: "is \(sinkhornIterations); droptrace runs at most \(maximumSinkhornIterations) Sinkhorn iterations per comb matrix")
        }
    }
}

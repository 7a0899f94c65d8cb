import Foundation
import TensorEngine

/// Alternating updates (AltUp, Baykal et al. 2023) as Gemma 3n's layers run
/// them (transformers' `Gemma3nTextAltUp`): the residual stream is
/// `streams` copies of the hidden state, each row [streams · hidden]
/// (stream s's columns at s · hidden, as `HyperConnection`'s). A layer
///
/// 1. predicts every stream from all of them, with coefficients the active
///    stream routes: m = tanh(router(RMSNorm(X_a) · hidden⁻¹)) [streams],
///    P_j = X_j + Σ_i c_{j·streams + i}(m) X_i, c = `prediction_coefs`(m);
/// 2. runs its branches on the active prediction P_a alone, giving A;
/// 3. corrects every prediction by the innovation A − P_a, with
///    coefficients A routes: C_j = P_j + (A − P_a) · (1 + `correction_coefs`(m(A)))_j;
/// 4. adds its per-layer input branch, read from C_a (times
///    `correct_output_scale` where `altup_correct_scale`), to every stream
///    from 1 on (`PerLayerInputBranch`; the layer's own, not a module's).
///
/// Float32 throughout, each step rounded as torch's.
public struct AltUp: Sendable {
    public let streams: Int
    /// `altup_active_idx`.
    public let active: Int
    /// `router_norm` [hidden].
    public let routerNorm: Normalization
    /// `modality_router` [streams, hidden].
    public let router: Linear
    /// `prediction_coefs` [streams², streams].
    public let predictionCoefficients: Linear
    /// `correction_coefs` [streams, streams].
    public let correctionCoefficients: Linear
    /// `correct_output_scale` [hidden], nil where `altup_correct_scale` is false.
    public let correctOutputScale: [Float]?

    public init(
        streams: Int, active: Int, routerNorm: Normalization, router: Linear, predictionCoefficients: Linear,
        correctionCoefficients: Linear, correctOutputScale: [Float]?
    ) {
        precondition(streams >= 1 && (0..<streams).contains(active))
        precondition(router.outFeatures == streams && predictionCoefficients.inFeatures == streams)
        precondition(predictionCoefficients.outFeatures == streams * streams && correctionCoefficients.outFeatures == streams)
        precondition(correctOutputScale == nil || correctOutputScale!.count == router.inFeatures)
        self.streams = streams
        self.active = active
        self.routerNorm = routerNorm
        self.router = router
        self.predictionCoefficients = predictionCoefficients
        self.correctionCoefficients = correctionCoefficients
        self.correctOutputScale = correctOutputScale
    }

    /// Width of one stream (`hidden_size`).
    public var width: Int { router.inFeatures }

    /// tanh(router(RMSNorm(x) · hidden⁻¹)) [rows, streams] (`compute_router_modalities`).
    func modalities(_ x: Matrix) -> Matrix {
        var routed = router(routerNorm(x).scaled(by: Float(1 / Double(width))))
        routed.data.withUnsafeMutableBufferPointer { values in
            for i in values.indices { values[i] = tanh(values[i]) }
        }
        return routed
    }

    /// The predictions [rows, streams · hidden] of stream `x` (step 1).
    public func predict(_ x: Matrix) -> Matrix {
        let coefficients = predictionCoefficients(modalities(x.stream(active, width: width)))
        let n = streams, width = self.width
        return Matrix(uninitialized: x.rows, x.cols) { out in
            x.data.withUnsafeBufferPointer { h in
                parallelFor(chunks: x.rows, minimumChunk: 4) { range in
                    for r in range {
                        let row = h.baseAddress! + r * n * width, target = out + r * n * width
                        let c = coefficients.data.withUnsafeBufferPointer { $0.baseAddress! + r * n * n }
                        for j in 0..<n {
                            for k in 0..<width {
                                var sum: Float = 0
                                for i in 0..<n { sum += row[i * width + k] * c[j * n + i] }
                                target[j * width + k] = sum + row[j * width + k]
                            }
                        }
                    }
                }
            }
        }
    }

    /// The predictions `predictions` corrected by the active stream's
    /// update `activated` [rows, hidden] (step 3).
    public func correct(_ predictions: Matrix, activated: Matrix) -> Matrix {
        let coefficients = correctionCoefficients(modalities(activated))
        let n = streams, width = self.width, active = self.active
        precondition(activated.rows == predictions.rows && activated.cols == width && predictions.cols == n * width)
        return Matrix(uninitialized: predictions.rows, predictions.cols) { out in
            predictions.data.withUnsafeBufferPointer { p in
                activated.data.withUnsafeBufferPointer { a in
                    for r in 0..<predictions.rows {
                        let row = p.baseAddress! + r * n * width, target = out + r * n * width, update = a.baseAddress! + r * width
                        for j in 0..<n {
                            let coefficient = coefficients.data[r * n + j] + 1
                            for k in 0..<width {
                                let innovation = update[k] - row[active * width + k]
                                target[j * width + k] = innovation * coefficient + row[j * width + k]
                            }
                        }
                    }
                }
            }
        }
    }

    /// The corrected streams `corrected` with the per-layer input branch's
    /// output added to every stream from 1 on (step 4).
    func addingPerLayerInput(_ corrected: Matrix, branch: PerLayerInputBranch, input: Matrix) -> Matrix {
        let n = streams, width = self.width
        var first = corrected.stream(active, width: width)
        if let scale = correctOutputScale {
            first.data.withUnsafeMutableBufferPointer { values in
                for i in values.indices { values[i] *= scale[i % width] }
            }
        }
        let output = branch(first, input: input)
        var result = corrected
        result.data.withUnsafeMutableBufferPointer { h in
            for r in 0..<corrected.rows {
                for s in 1..<max(n, 1) {
                    let target = h.baseAddress! + (r * n + s) * width
                    for k in 0..<width { target[k] += output.data[r * width + k] }
                }
            }
        }
        return result
    }
}

/// Gemma 3n's learned augmented residual (LAuReL, `Gemma3nTextLaurelBlock`)
/// beside the attention: it reads the attention's normalised input n and
/// the attention's output joins the stream with it,
///
///     H = ((X + out) + (n + RMSNorm(right(left(n))))) / √2
///
/// (`ResidualJoin.learnedAugmented`: part of the attention branch, so a
/// dropped attention leaves H = X).
public struct LearnedAugmentedResidual: Sendable {
    /// `linear_left` [rank, hidden].
    public let left: Linear
    /// `linear_right` [hidden, rank].
    public let right: Linear
    /// `post_laurel_norm` [hidden].
    public let norm: Normalization

    public init(left: Linear, right: Linear, norm: Normalization) {
        self.left = left
        self.right = right
        self.norm = norm
    }

    /// H for stream `stream`, the attention's output `output` and its normalised input `normed`.
    func join(_ stream: Matrix, _ output: Matrix, normed: Matrix) -> Matrix {
        let laurel = normed.adding(norm(right(left(normed))))
        let divisor = Float(2.0.squareRoot())
        var sum = stream.adding(output)
        sum.add(laurel)
        sum.data.withUnsafeMutableBufferPointer { values in
            for i in values.indices { values[i] /= divisor }
        }
        return sum
    }
}

/// Gemma 3n's streams entering layer 0 and leaving the last: the embedding
/// becomes stream 0, and each other stream s is `altup_projections[s − 1]`
/// of it scaled to its root-mean-square; at the end each stream s ≥ 1 passes
/// `altup_unembed_projections[s − 1]`, is scaled to stream 0's
/// root-mean-square, and the streams are averaged (transformers'
/// `Gemma3nTextModel.forward`). A projection's mean square is clamped at
/// 1e-5 before its root.
public struct AltUpProjections: Sendable {
    /// Into streams 1 ..< streams, [hidden, hidden] each.
    public let embed: [Linear]
    /// Out of streams 1 ..< streams.
    public let unembed: [Linear]

    public init(embed: [Linear], unembed: [Linear]) {
        precondition(embed.count == unembed.count)
        self.embed = embed
        self.unembed = unembed
    }

    public var streams: Int { embed.count + 1 }

    /// `x` [rows, hidden] scaled row by row from its own root-mean-square to `target`'s.
    static func magnitudeMatched(_ x: Matrix, to target: [Float]) -> Matrix {
        var result = x
        result.data.withUnsafeMutableBufferPointer { values in
            for r in 0..<x.rows {
                var sum: Float = 0
                for k in 0..<x.cols { sum += values[r * x.cols + k] * values[r * x.cols + k] }
                let magnitude = max(sum / Float(x.cols), 1e-5).squareRoot()
                for k in 0..<x.cols { values[r * x.cols + k] = values[r * x.cols + k] * target[r] / magnitude }
            }
        }
        return result
    }

    /// Each row's root-mean-square.
    static func rootMeanSquares(_ x: Matrix) -> [Float] {
        (0..<x.rows).map { r in
            var sum: Float = 0
            for k in 0..<x.cols { sum += x.data[r * x.cols + k] * x.data[r * x.cols + k] }
            return (sum / Float(x.cols)).squareRoot()
        }
    }

    /// The streams [rows, streams · hidden] of embedding `x` [rows, hidden].
    public func expand(_ x: Matrix) -> Matrix {
        let target = Self.rootMeanSquares(x)
        return Matrix.joiningStreams([x] + embed.map { Self.magnitudeMatched($0(x), to: target) })
    }
}

extension AltUpProjections: StreamCollapse {
    public var projections: [Linear] { unembed }

    /// The streams' average [rows, hidden] (before the final norm).
    public func callAsFunction(_ stream: Matrix) -> Matrix {
        let width = embed.first?.inFeatures ?? stream.cols
        let first = stream.stream(0, width: width), target = Self.rootMeanSquares(first)
        let all = [first] + unembed.enumerated().map { Self.magnitudeMatched($1(stream.stream($0 + 1, width: width)), to: target) }
        var sum = all[0]
        for other in all.dropFirst() { sum.add(other) }
        let count = Float(all.count)
        sum.data.withUnsafeMutableBufferPointer { values in
            for i in values.indices { values[i] /= count }
        }
        return sum
    }
}

extension Matrix {
    /// Stream `index` [rows, width] of a row of streams of `width` each.
    public func stream(_ index: Int, width: Int) -> Matrix {
        precondition(cols % width == 0 && (0..<(cols / width)).contains(index))
        return columns(index * width..<(index + 1) * width)
    }

    /// Columns `range` [rows, range.count].
    public func columns(_ range: Range<Int>) -> Matrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= cols)
        guard range.count != cols else { return self }
        return Matrix(uninitialized: rows, range.count) { out in
            data.withUnsafeBufferPointer { source in
                for r in 0..<rows { (out + r * range.count).update(from: source.baseAddress! + r * cols + range.lowerBound, count: range.count) }
            }
        }
    }

    /// Streams of equal width side by side: [rows, count · width].
    static func joiningStreams(_ streams: [Matrix]) -> Matrix {
        let width = streams[0].cols, rows = streams[0].rows, n = streams.count
        return Matrix(uninitialized: rows, n * width) { out in
            for (s, stream) in streams.enumerated() {
                precondition(stream.rows == rows && stream.cols == width)
                stream.data.withUnsafeBufferPointer { source in
                    for r in 0..<rows { (out + (r * n + s) * width).update(from: source.baseAddress! + r * width, count: width) }
                }
            }
        }
    }
}

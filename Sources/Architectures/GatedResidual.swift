import Foundation
import TensorEngine

/// Qwen4-Exp's gated residual (transformers' `Qwen4ExpTextGatedResidual`):
/// the residual stream is `streams` copies of the hidden state, each row
/// [streams · hidden] (stream s's columns at s · hidden), as
/// `HyperConnection`'s, joined otherwise. With n the stream normalised per
/// stream by the (1 + w) RMS norm `hc_norm` (weights [streams · hidden]):
///
///     g    = σ(up(silu(down(n) / streams)))                [streams · hidden]
///     branch input = mean over s of g_s ⊙ n_s             [hidden]
///     w    = 2 σ(block_inject_weight(n) / streams)        [streams]
///     H'_s = H_s + w_s · branch output
///
/// in float32. The branch has no input norm of its own (n is it). The final
/// `hyper_connection_mixer` is one without `block_inject_weight`: its branch
/// input is the model's last hidden state (`StreamCollapse`), with no norm after.
/// Source: transformers' `models/qwen4_exp/modeling_qwen4_exp.py`.
public struct GatedResidual: Sendable {
    public let streams: Int
    /// `hc_norm`: (1 + weight), one weight per stream column, and its eps (`rms_norm_eps`).
    public let norm: Normalization
    /// `input_mix_weight_down` [hc_lowrank, streams · hidden], `input_mix_weight_up` [streams · hidden, hc_lowrank].
    public let down: Linear, up: Linear
    /// `block_inject_weight` [streams, streams · hidden]; nil for the final mixer.
    public let inject: Linear?

    public init(streams: Int, norm: Normalization, down: Linear, up: Linear, inject: Linear?) {
        precondition(streams >= 1 && down.inFeatures % streams == 0 && up.outFeatures == down.inFeatures)
        precondition(up.inFeatures == down.outFeatures && (inject == nil || inject!.outFeatures == streams))
        self.streams = streams
        self.norm = norm
        self.down = down
        self.up = up
        self.inject = inject
    }

    /// Width of one stream (`hidden_size`).
    public var width: Int { down.inFeatures / streams }

    /// The stream normalised stream by stream.
    func normalized(_ stream: Matrix) -> Matrix {
        var n = stream
        norm.apply(inPlace: &n, columns: 0..<n.cols, pieceWidth: width, weightsPerPiece: true)
        return n
    }

    /// The branch's input [rows, hidden] from `stream` [rows, streams · hidden].
    public func collapsed(_ stream: Matrix) -> Matrix { mixed(normalized(stream)) }

    private func mixed(_ n: Matrix) -> Matrix {
        var low = down(n)
        let divisor = Float(streams)
        low.data.withUnsafeMutableBufferPointer { m in
            for i in m.indices {
                let v = m[i] / divisor
                m[i] = v / (1 + exp(-v))
            }
        }
        var gates = up(low)
        gates.data.withUnsafeMutableBufferPointer { m in
            for i in m.indices { m[i] = 1 / (1 + exp(-m[i])) }
        }
        let streams = self.streams, width = self.width, rows = n.rows
        return Matrix(uninitialized: rows, width) { out in
            n.data.withUnsafeBufferPointer { x in
                gates.data.withUnsafeBufferPointer { g in
                    for r in 0..<rows {
                        let base = r * streams * width
                        for j in 0..<width {
                            var sum: Float = 0
                            for s in 0..<streams { sum += g[base + s * width + j] * x[base + s * width + j] }
                            out[r * width + j] = sum / Float(streams)
                        }
                    }
                }
            }
        }
    }

    /// The stream [rows, streams · hidden] once `output` [rows, hidden] joins
    /// `stream`, each stream times its injection weight.
    public func join(_ stream: Matrix, _ output: Matrix) -> Matrix {
        let weights = inject!(normalized(stream)), streams = self.streams, width = self.width
        precondition(output.rows == stream.rows && output.cols == width)
        var result = stream
        result.data.withUnsafeMutableBufferPointer { h in
            output.data.withUnsafeBufferPointer { out in
                for r in 0..<stream.rows {
                    for s in 0..<streams {
                        let w = 2 / (1 + exp(-(weights.data[r * streams + s] / Float(streams))))
                        let target = h.baseAddress! + r * streams * width + s * width, source = out.baseAddress! + r * width
                        for j in 0..<width { target[j] += source[j] * w }
                    }
                }
            }
        }
        return result
    }
}

extension GatedResidual: StreamCollapse {
    /// The final mixer's collapse (`hyper_connection_mixer`).
    public func callAsFunction(_ stream: Matrix) -> Matrix { collapsed(stream) }

    public var projections: [Linear] { [down, up] + (inject.map { [$0] } ?? []) }
}

import TensorEngine

/// The MLP of a block.
public enum FeedForward: Sendable {
    /// down(act(gate(x)) · up(x)), with gate and up stacked into one
    /// projection whose first half is the gate (SwiGLU, GeGLU).
    case gated(gateUp: Linear, down: Linear, activation: Activation)
    /// down(act(up(x)))   (GPT-2, GPT-NeoX).
    case plain(up: Linear, down: Linear, activation: Activation)
    /// Top-k routed experts (Mixtral); the router belongs to the MLP, so
    /// dropping the MLP drops it too.
    case mixture(MixtureOfExperts)
    /// down(act(gateUp(x))) with gate and up interleaved in gateUp's output
    /// (columns 2i, 2i + 1) and the clamped SwiGLU (gpt-oss's experts).
    case clampedGated(gateUp: Linear, down: Linear, activation: ClampedSwiGLU)

    public func callAsFunction(_ x: Matrix) -> Matrix {
        switch self {
        case .gated(let gateUp, let down, let activation):
            let both = gateUp(x)
            let width = both.cols / 2
            let hidden = Matrix(uninitialized: x.rows, width) { out in
                both.data.withUnsafeBufferPointer { source in
                    parallelFor(chunks: x.rows, minimumChunk: 16) { rows in
                        for r in rows {
                            let gate = source.baseAddress! + r * 2 * width
                            let up = gate + width
                            let row = out + r * width
                            activation.applyGated(gate: gate, up: up, into: row, count: width)
                        }
                    }
                }
            }
            return down(hidden)
        case .plain(let up, let down, let activation):
            var hidden = up(x)
            activation.apply(inPlace: &hidden)
            return down(hidden)
        case .mixture(let experts):
            return experts(x)
        case .clampedGated(let gateUp, let down, let activation):
            let both = gateUp(x)
            let width = both.cols / 2
            let hidden = Matrix(uninitialized: x.rows, width) { out in
                both.data.withUnsafeBufferPointer { source in
                    parallelFor(chunks: x.rows, minimumChunk: 16) { rows in
                        for r in rows {
                            activation.applyInterleaved(source.baseAddress! + r * 2 * width, into: out + r * width, count: width)
                        }
                    }
                }
            }
            return down(hidden)
        }
    }
}

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

    /// Bytes of the widest intermediate (gate|up's output) one pass holds.
    /// Its rows are independent, so the MLP runs over chunks of tokens that
    /// keep it this small: at 8192 tokens TinyLlama's gate|up alone would be
    /// 369 MB, the largest buffer of the forward pass (it makes room for the
    /// next block's weights, expanded meanwhile), while GEMMs of a thousand
    /// rows run as fast as of eight thousand.
    static let intermediateBudget = 64 << 20
    /// Fewer rows than this per engine thread make slower GEMMs.
    static let minimumRowsPerThread = 256

    /// The MLP's output for the rows of `x`: [tokens, hidden] → [tokens, hidden].
    public func callAsFunction(_ x: Matrix) -> Matrix {
        callAsFunction(x, rowsPerChunk: rowsPerChunk(x.rows))
    }

    /// The same, computed `rowsPerChunk` rows at a time. Every output row
    /// depends on its input row alone; only the GEMM library's choice of
    /// kernel for the chunk's row count can change the last bit (as the
    /// engine's split of rows across threads already does).
    func callAsFunction(_ x: Matrix, rowsPerChunk: Int) -> Matrix {
        guard rowsPerChunk > 0, x.rows > rowsPerChunk, let width = outputWidth else { return unchunked(x) }
        return Matrix(uninitialized: x.rows, width) { out in
            var start = 0
            while start < x.rows {
                let end = min(x.rows, start + rowsPerChunk)
                let rows = Matrix(rows: end - start, cols: x.cols, data: Array(x.data[(start * x.cols)..<(end * x.cols)]))
                let part = unchunked(rows)
                part.data.withUnsafeBufferPointer { (out + start * width).update(from: $0.baseAddress!, count: $0.count) }
                start = end
            }
        }
    }

    /// Rows per chunk for `rows` tokens: chunks of equal size whose
    /// intermediate stays within `intermediateBudget`; all rows at once for a
    /// mixture of experts, which gathers its own rows per expert.
    func rowsPerChunk(_ rows: Int) -> Int {
        guard let width = intermediateWidth, width > 0 else { return rows }
        let limit = max(Self.intermediateBudget / (width * MemoryLayout<Float>.size), Self.minimumRowsPerThread * EngineThreads.count)
        guard rows > limit else { return rows }
        let chunks = (rows + limit - 1) / limit
        return (rows + chunks - 1) / chunks
    }

    /// Columns of the widest intermediate matrix; nil for a mixture.
    private var intermediateWidth: Int? {
        switch self {
        case .gated(let gateUp, _, _), .clampedGated(let gateUp, _, _): gateUp.outFeatures
        case .plain(let up, _, _): up.outFeatures
        case .mixture: nil
        }
    }

    /// Columns of the output; nil for a mixture.
    private var outputWidth: Int? {
        switch self {
        case .gated(_, let down, _), .clampedGated(_, let down, _), .plain(_, let down, _): down.outFeatures
        case .mixture: nil
        }
    }

    private func unchunked(_ x: Matrix) -> Matrix {
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

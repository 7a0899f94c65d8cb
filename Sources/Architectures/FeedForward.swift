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

    /// The same, computed `rowsPerChunk` rows at a time, each chunk read in
    /// place from `x` and written in place to the output. Every output row
    /// depends on its input row alone; only the GEMM library's choice of
    /// kernel for the chunk's row count can change the last bit (as the
    /// engine's split of rows across threads already does).
    func callAsFunction(_ x: Matrix, rowsPerChunk: Int) -> Matrix {
        if case .mixture(let experts) = self { return experts(x) }
        let chunk = max(1, rowsPerChunk > 0 ? rowsPerChunk : x.rows), width = outputWidth
        return x.data.withUnsafeBufferPointer { xs in
            Matrix(uninitialized: x.rows, width) { out in
                for start in stride(from: 0, to: x.rows, by: chunk) {
                    unchunked(rows: min(chunk, x.rows - start), xs.baseAddress! + start * x.cols, into: out + start * width)
                }
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

    /// Columns of the output (a mixture never runs in chunks).
    private var outputWidth: Int {
        switch self {
        case .gated(_, let down, _), .clampedGated(_, let down, _), .plain(_, let down, _): down.outFeatures
        case .mixture(let experts): experts.router.inFeatures
        }
    }

    /// The MLP of `rows` rows at `x` (hidden wide) into `out` (rows
    /// `outputWidth` apart), its intermediate held for these rows only.
    private func unchunked(rows: Int, _ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        switch self {
        case .gated(let gateUp, let down, let activation):
            let hidden = gatedHidden(rows: rows, x, gateUp: gateUp) { gate, width, row in
                activation.applyGated(gate: gate, up: gate + width, into: row, count: width)
            }
            down.apply(rows: rows, hidden.data, into: out)
        case .clampedGated(let gateUp, let down, let activation):
            let hidden = gatedHidden(rows: rows, x, gateUp: gateUp) { both, width, row in
                activation.applyInterleaved(both, into: row, count: width)
            }
            down.apply(rows: rows, hidden.data, into: out)
        case .plain(let up, let down, let activation):
            var hidden = Matrix(uninitialized: rows, up.outFeatures) { up.apply(rows: rows, x, into: $0) }
            activation.apply(inPlace: &hidden)
            down.apply(rows: rows, hidden.data, into: out)
        case .mixture:
            preconditionFailure("a mixture of experts runs all rows at once")
        }
    }

    /// gateUp(x) for `rows` rows, reduced row by row to half its width by
    /// `combine(gateUpRow, halfWidth, hiddenRow)`, in parallel over rows.
    private func gatedHidden(
        rows: Int, _ x: UnsafePointer<Float>, gateUp: Linear,
        _ combine: (UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>) -> Void
    ) -> Matrix {
        let both = Matrix(uninitialized: rows, gateUp.outFeatures) { gateUp.apply(rows: rows, x, into: $0) }
        let width = both.cols / 2
        return both.data.withUnsafeBufferPointer { source in
            Matrix(uninitialized: rows, width) { out in
                parallelFor(chunks: rows, minimumChunk: 16) { range in
                    for r in range { combine(source.baseAddress! + r * 2 * width, width, out + r * width) }
                }
            }
        }
    }
}

import TensorEngine

/// What a recurrent token mixer carries from one token to the next when
/// decoding: its causal convolution's last inputs and its recurrence's state.
public struct RecurrentState: Sendable {
    /// The last kernel − 1 rows of convolution inputs (zeros before the first token).
    var history: [Float]
    /// The recurrence's state (empty for a convolution alone).
    var recurrent: [Float]
    /// The tokens the state has taken in (a mixer whose first pass over a
    /// sequence differs from its steps: lightning attention's blocks).
    var seen = 0
    /// Whether `recurrent` grows with the tokens (DeepSeek-V4's attention
    /// keeps the sequence's projected rows): a reset empties it.
    var grows = false
    /// What a mixer derives from `recurrent` once and keeps for the steps
    /// after (DeepSeek-V4's compressed keys of finished windows); a reset
    /// empties it.
    var derived: [[Float]] = []

    public init(history: Int, recurrent: Int = 0) {
        self.history = [Float](repeating: 0, count: history)
        self.recurrent = [Float](repeating: 0, count: recurrent)
    }

    /// Values the state holds (Float32).
    public var count: Int { history.count + recurrent.count }

    /// Back to the state before the first token.
    public mutating func reset() {
        for i in history.indices { history[i] = 0 }
        if grows { recurrent.removeAll() }
        derived.removeAll()
        for i in recurrent.indices { recurrent[i] = 0 }
        seen = 0
    }

    /// The causal depthwise convolution the recurrent mixers run before
    /// their scan (torch's Conv1d with `groups` = channels, padded on the
    /// left): `inputs` [count, channels] continue the carried history,
    /// which then keeps the last kernel − 1 rows; out[t, c] = act(Σ_j
    /// taps[c, j] · padded[t + j, c] + bias[c]), taps [channels, kernel]
    /// oldest first; [count, channels].
    mutating func convolve(
        _ inputs: [Float], channels: Int, taps: [Float], kernel: Int, bias: [Float]?, activation: Activation
    ) -> [Float] {
        let count = inputs.count / channels
        guard count > 0 else { return [] }
        let padded = history + inputs
        history = Array(padded[(count * channels)...])
        var convolved = [Float](repeating: 0, count: count * channels)
        taps.withUnsafeBufferPointer { w in
            padded.withUnsafeBufferPointer { input in
                convolved.withUnsafeMutableBufferPointer { out in
                    parallelFor(chunks: count, minimumChunk: 8) { part in
                        for t in part {
                            let row = out.baseAddress! + t * channels
                            for c in 0..<channels {
                                var sum: Float = 0
                                for j in 0..<kernel { sum += w[c * kernel + j] * input[(t + j) * channels + c] }
                                if let bias { sum += bias[c] }
                                row[c] = activation.apply(sum)
                            }
                        }
                    }
                }
            }
        }
        return convolved
    }
}

extension Matrix {
    /// Columns `columns` of `rows`, row after row [rows, columns].
    func gathering(rows: Range<Int>, columns: Range<Int>) -> [Float] {
        var values: [Float] = []
        values.reserveCapacity(rows.count * columns.count)
        data.withUnsafeBufferPointer { p in
            for r in rows { values.append(contentsOf: p[(r * cols + columns.lowerBound)..<(r * cols + columns.upperBound)]) }
        }
        return values
    }
}

/// A token mixer that carries a state along each sequence instead of
/// attending (Gated DeltaNet, Mamba-2, LFM2's gated short convolution): the
/// rows are projected, scanned sequence by sequence from an empty state,
/// and finished row by row.
public protocol RecurrentTokenMixer: Sendable {
    /// Columns of the scan's output.
    var mixedWidth: Int { get }
    /// The rows the scan and `finish` read: `ProjectingTokenMixer.projection`
    /// of the input unless the mixer scales them (Falcon-H1's Mamba-2), or
    /// the input itself where the scan projects it (RWKV's time mixing,
    /// whose projections read each row's predecessor).
    func project(_ x: Matrix) -> Matrix
    /// The state before a sequence's first token.
    func emptyState() -> RecurrentState
    /// Bytes its cache grows by per token (Float32), counted as a
    /// key/value cache is; 0 for a state of fixed size.
    var cacheBytesPerToken: Int { get }
    /// The scan over `rows` of `projected`, continuing `state`, written to
    /// the same rows of `mixed` [rows, mixedWidth].
    func mix(_ projected: Matrix, rows: Range<Int>, state: inout RecurrentState, into mixed: inout Matrix)
    /// The layer's output [rows, hidden] from the scan's output and the projected rows.
    func finish(_ mixed: Matrix, projected: Matrix) -> Matrix
}

/// A recurrent mixer whose scan reads one projection of its input rows.
public protocol ProjectingTokenMixer: RecurrentTokenMixer {
    /// The input projection [projected width, hidden].
    var projection: Linear { get }
}

extension ProjectingTokenMixer {
    public func project(_ x: Matrix) -> Matrix { projection(x) }
}

extension RecurrentTokenMixer {
    public var cacheBytesPerToken: Int { 0 }

    /// The layer over the batch's sequences, each from an empty state.
    public func callAsFunction(_ x: Matrix, _ batch: TokenBatch) -> Matrix {
        let projected = project(x)
        var mixed = Matrix(zeros: x.rows, mixedWidth)
        for sequence in batch.sequences {
            var state = emptyState()
            mix(projected, rows: sequence, state: &state, into: &mixed)
        }
        return finish(mixed, projected: projected)
    }

    /// The layer over rows `x` that continue the sequence `state` holds
    /// (prefill, then one token at a time), updating the state.
    public func callAsFunction(_ x: Matrix, state: inout RecurrentState) -> Matrix {
        let projected = project(x)
        var mixed = Matrix(zeros: x.rows, mixedWidth)
        mix(projected, rows: 0..<x.rows, state: &state, into: &mixed)
        return finish(mixed, projected: projected)
    }
}

import TensorEngine

/// The gated short convolution, the token mixer of LFM2's `conv` layers
/// (`Lfm2ShortConv`), as transformers' torch path computes it:
///
/// - one input projection to B | C | x (`in_proj`, [3 · channels, hidden]);
/// - Bx = B · x, element by element;
/// - a causal depthwise convolution of `kernel` taps (`conv_L_cache`) over
///   Bx, each channel on its own, plus a bias per channel where the layer
///   has one (`conv_bias`);
/// - y = C · conv(Bx), then `output` (`out_proj`).
///
/// transformers zeroes the inputs of padded positions first
/// (`apply_mask_to_padding_states`); droptrace's batches hold no padding
/// (each sequence is its own rows), and an unpadded batch leaves them as they are.
public struct ShortConvolution: ProjectingTokenMixer {
    /// The convolved channels (the hidden size).
    public let channels: Int
    /// Taps of the causal convolution (`conv_L_cache`).
    public let kernel: Int
    /// [3 · channels, hidden]: rows B | C | x.
    public let projection: Linear
    /// [channels, kernel]: each channel's taps, oldest first.
    public let taps: [Float]
    /// Added to each channel's convolution (`conv.bias`), or none.
    public let tapBias: [Float]?
    public let output: Linear

    public init(projection: Linear, taps: [Float], tapBias: [Float]?, output: Linear) {
        precondition(projection.outFeatures % 3 == 0)
        let channels = projection.outFeatures / 3
        precondition(channels > 0 && taps.count % channels == 0 && taps.count >= channels)
        precondition(tapBias == nil || tapBias!.count == channels)
        precondition(output.inFeatures == channels)
        self.channels = channels
        kernel = taps.count / channels
        self.projection = projection
        self.taps = taps
        self.tapBias = tapBias
        self.output = output
    }

    /// The state before a sequence's first token: the last kernel − 1 rows
    /// of Bx [kernel − 1, channels].
    public func emptyState() -> RecurrentState { RecurrentState(history: (kernel - 1) * channels) }

    public var mixedWidth: Int { channels }

    /// The output projection of C · conv(B · x).
    public func finish(_ mixed: Matrix, projected: Matrix) -> Matrix { output(mixed) }

    /// C · conv(B · x) over `rows` of `projected`, written to the same rows
    /// of `mixed` [rows, channels].
    public func mix(_ projected: Matrix, rows: Range<Int>, state: inout RecurrentState, into mixed: inout Matrix) {
        let count = rows.count, channels = self.channels, width = 3 * channels
        guard count > 0 else { return }
        // conv(B · x), then times C.
        var gatedInputs = [Float](repeating: 0, count: count * channels)
        projected.data.withUnsafeBufferPointer { p in
            for (t, r) in rows.enumerated() {
                let row = p.baseAddress! + r * width
                for c in 0..<channels { gatedInputs[t * channels + c] = row[c] * row[2 * channels + c] }
            }
        }
        let convolved = state.convolve(gatedInputs, channels: channels, taps: self.taps, kernel: kernel, bias: tapBias, activation: .identity)
        let first = rows.lowerBound
        projected.data.withUnsafeBufferPointer { p in
            mixed.data.withUnsafeMutableBufferPointer { out in
                for t in 0..<count {
                    let gate = p.baseAddress! + (first + t) * width + channels
                    let row = out.baseAddress! + (first + t) * channels
                    for c in 0..<channels { row[c] = gate[c] * convolved[t * channels + c] }
                }
            }
        }
    }
}

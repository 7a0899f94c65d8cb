import Foundation
import TensorEngine

/// The sizes of a Mamba-2 mixer (transformers' `mamba_*` keys).
public struct Mamba2Heads: Sendable, Equatable {
    /// `mamba_n_heads`.
    public let heads: Int
    /// `mamba_d_head`: channels of x per head.
    public let headDim: Int
    /// `mamba_n_groups`: groups of heads sharing B and C (and normalised together).
    public let groups: Int
    /// `mamba_d_state`: the width of B, C and each head's state rows.
    public let stateSize: Int
    /// `mamba_d_conv`: taps of the causal convolution.
    public let convolutionKernel: Int

    public init(heads: Int, headDim: Int, groups: Int, stateSize: Int, convolutionKernel: Int) {
        precondition(heads > 0 && headDim > 0 && groups > 0 && heads % groups == 0 && stateSize > 0 && convolutionKernel > 0)
        self.heads = heads
        self.headDim = headDim
        self.groups = groups
        self.stateSize = stateSize
        self.convolutionKernel = convolutionKernel
    }

    /// The columns of x, of the output gate z and of the mixer's output (mamba_expand × hidden_size).
    public var innerWidth: Int { heads * headDim }
    /// Columns of all groups' B (or C).
    public var groupWidth: Int { groups * stateSize }
    /// The convolution's channels: x | B | C.
    public var convolutionChannels: Int { innerWidth + 2 * groupWidth }
    /// The input projection's outputs: z | x | B | C | dt.
    public var projectionWidth: Int { innerWidth + convolutionChannels + heads }
}

/// The Mamba-2 mixer (state space duality) of the hybrid Mamba-2 families,
/// as transformers' torch path computes it (`BambaMixer`,
/// `GraniteMoeHybridMambaLayer`):
///
/// - `in_proj` to z | x | B | C | dt;
/// - a causal depthwise convolution of `convolutionKernel` taps (with its
///   bias, where it has one) over x | B | C, then the activation;
/// - per head h of group g = h / (heads / groups) and time step, with
///   Δ = clamp(softplus(dt + dt_bias), time_step_limit) and A = −exp(A_log),
///   the state S [headDim, stateSize] takes S ← exp(Δ A) S + Δ x Bᵀ and gives
///   y = S C + D x;
/// - a gated RMSNorm, norm(y · silu(z)) · w, each group of heads'
///   columns normalised on its own (Falcon-H1: norm(y) · w · silu(z) when
///   `normalisesBeforeGate`, or y · silu(z) without a norm), and `out_proj`.
///
/// Falcon-H1 multiplies the projection's columns by its µP vector
/// (`projectionScales`) before they are split.
///
/// transformers' batched forward runs the same recurrence in chunks
/// (`torch_forward`'s segment sums), equal to this step form up to rounding.
public struct Mamba2Mixer: RecurrentTokenMixer {
    public let heads: Mamba2Heads
    /// [projectionWidth, hidden] rows z | x | B | C | dt.
    public let projection: Linear
    /// [channels, kernel]: each x | B | C channel's taps, oldest first.
    public let convolution: [Float]
    /// One per channel, or nil (`mamba_conv_bias` false).
    public let convolutionBias: [Float]?
    /// After the convolution (`hidden_act`).
    public let activation: Activation
    /// A = −exp(A_log) per head.
    public let decay: [Float]
    /// dt_bias per head.
    public let timeStepBias: [Float]
    /// D per head.
    public let skip: [Float]
    /// `time_step_limit`: Δ is clamped to [lower, upper].
    public let timeStepLimit: (lower: Float, upper: Float)
    /// The gated RMSNorm's weights [innerWidth], each group's columns
    /// normalised on their own; nil for none (Falcon-H1's `mamba_rms_norm` false).
    public let norm: Normalization?
    /// The norm comes before the gate, norm(y) · silu(z) (Falcon-H1's
    /// `mamba_norm_before_gate`), instead of norm(y · silu(z)).
    public let normalisesBeforeGate: Bool
    /// Multiplies each column of the input projection's output [projectionWidth]
    /// (Falcon-H1's µP vector of `ssm_multipliers`); nil for none.
    public let projectionScales: [Float]?
    public let output: Linear

    public init(
        heads: Mamba2Heads, projection: Linear, convolution: [Float], convolutionBias: [Float]?, activation: Activation,
        logDecay: [Float], timeStepBias: [Float], skip: [Float], timeStepLimit: (lower: Float, upper: Float),
        norm: Normalization?, output: Linear, normalisesBeforeGate: Bool = false, projectionScales: [Float]? = nil
    ) {
        precondition(projection.outFeatures == heads.projectionWidth && output.inFeatures == heads.innerWidth)
        precondition(convolution.count == heads.convolutionChannels * heads.convolutionKernel)
        precondition(convolutionBias.map { $0.count == heads.convolutionChannels } ?? true)
        precondition(logDecay.count == heads.heads && timeStepBias.count == heads.heads && skip.count == heads.heads)
        precondition(projectionScales.map { $0.count == heads.projectionWidth } ?? true)
        self.heads = heads
        self.projection = projection
        self.convolution = convolution
        self.convolutionBias = convolutionBias
        self.activation = activation
        decay = logDecay.map { -exp($0) }
        self.timeStepBias = timeStepBias
        self.skip = skip
        self.timeStepLimit = timeStepLimit
        self.norm = norm
        self.normalisesBeforeGate = normalisesBeforeGate
        self.projectionScales = projectionScales
        self.output = output
    }

    /// The input projection, each column times its `projectionScales` entry.
    public func project(_ x: Matrix) -> Matrix {
        var projected = projection(x)
        guard let scales = projectionScales else { return projected }
        let width = heads.projectionWidth
        projected.data.withUnsafeMutableBufferPointer { values in
            for r in 0..<projected.rows {
                for j in 0..<width { values[r * width + j] *= scales[j] }
            }
        }
        return projected
    }

    /// The state before a sequence's first token: the convolution's
    /// kernel − 1 rows of inputs and each head's S [headDim, stateSize].
    public func emptyState() -> RecurrentState {
        RecurrentState(
            history: (heads.convolutionKernel - 1) * heads.convolutionChannels, recurrent: heads.heads * heads.headDim * heads.stateSize)
    }

    public var mixedWidth: Int { heads.innerWidth }

    /// The gate, the grouped norm and the output projection of the scan's output.
    public func finish(_ mixed: Matrix, projected: Matrix) -> Matrix {
        var gated = mixed
        let width = heads.projectionWidth, inner = heads.innerWidth
        func normalise() {
            norm?.apply(inPlace: &gated, columns: 0..<inner, pieceWidth: inner / heads.groups, weightsPerPiece: true)
        }
        if normalisesBeforeGate { normalise() }
        gated.data.withUnsafeMutableBufferPointer { out in
            projected.data.withUnsafeBufferPointer { p in
                for r in 0..<mixed.rows {
                    let z = p.baseAddress! + r * width, o = out.baseAddress! + r * inner
                    for j in 0..<inner { o[j] = o[j] * Activation.silu.apply(z[j]) }
                }
            }
        }
        if !normalisesBeforeGate { normalise() }
        return output(gated)
    }

    /// The convolution and the scan over `rows` of `projected`, written to
    /// the same rows of `mixed` [rows, innerWidth].
    public func mix(_ projected: Matrix, rows: Range<Int>, state: inout RecurrentState, into mixed: inout Matrix) {
        let h = heads, count = rows.count, channels = h.convolutionChannels, taps = h.convolutionKernel
        let width = h.projectionWidth, convolutionStart = h.innerWidth
        guard count > 0 else { return }
        let convolved = state.convolve(
            projected.gathering(rows: rows, columns: convolutionStart..<(convolutionStart + channels)), channels: channels,
            taps: convolution, kernel: taps, bias: convolutionBias, activation: activation)
        let headsPerGroup = h.heads / h.groups, stateSize = h.stateSize, headDim = h.headDim
        let decay = self.decay, timeStepBias = self.timeStepBias, skip = self.skip
        let (lower, upper) = timeStepLimit
        let first = rows.lowerBound, inner = h.innerWidth
        let bStart = inner, cStart = inner + h.groupWidth, dtStart = inner + channels
        state.recurrent.withUnsafeMutableBufferPointer { states in
            convolved.withUnsafeBufferPointer { xbc in
                projected.data.withUnsafeBufferPointer { p in
                    mixed.data.withUnsafeMutableBufferPointer { out in
                        parallelFor(chunks: h.heads) { part in
                            for head in part {
                                let s = states.baseAddress! + head * headDim * stateSize
                                let group = head / headsPerGroup
                                for t in 0..<count {
                                    let row = xbc.baseAddress! + t * channels
                                    let x = row + head * headDim
                                    let b = row + bStart + group * stateSize, c = row + cStart + group * stateSize
                                    let raw = p[(first + t) * width + dtStart + head] + timeStepBias[head]
                                    let softplus = raw > 20 ? raw : log1p(exp(raw))
                                    let delta = min(max(softplus, lower), upper)
                                    let factor = exp(delta * decay[head])
                                    let o = out.baseAddress! + (first + t) * inner + head * headDim
                                    for i in 0..<headDim {
                                        let si = s + i * stateSize, input = x[i] * delta
                                        var y: Float = 0
                                        for n in 0..<stateSize {
                                            si[n] = si[n] * factor + input * b[n]
                                            y += si[n] * c[n]
                                        }
                                        o[i] = y + skip[head] * x[i]
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

extension Mamba2Mixer {
    /// The mixer stored under `prefix` (`in_proj`, `conv1d`, `A_log`,
    /// `dt_bias`, `D`, `norm`, `out_proj`): in_proj's bias by
    /// `projectionBias`, out_proj's by `outputBias` (else the same), the
    /// convolution's by `convolutionBias`; the gated RMSNorm (epsilon `eps`)
    /// unless `normalises` is false, before the gate by `normalisesBeforeGate`;
    /// the projection's columns times `projectionScales`.
    static func stored(
        _ prefix: String, weights: Weights, hidden d: Int, heads h: Mamba2Heads, projectionBias bias: Bool, convolutionBias: Bool,
        activation: Activation, timeStepLimit: (lower: Double, upper: Double), eps: Double, outputBias: Bool? = nil,
        normalises: Bool = true, normalisesBeforeGate: Bool = false, projectionScales: [Float]? = nil
    ) throws -> Mamba2Mixer {
        Mamba2Mixer(
            heads: h, projection: try weights.linear(prefix + "in_proj", in: d, out: h.projectionWidth, bias: bias),
            convolution: try weights.floats(prefix + "conv1d.weight", [h.convolutionChannels, 1, h.convolutionKernel]),
            convolutionBias: convolutionBias ? try weights.floats(prefix + "conv1d.bias", [h.convolutionChannels]) : nil,
            activation: activation,
            logDecay: try weights.floats(prefix + "A_log", [h.heads]),
            timeStepBias: try weights.floats(prefix + "dt_bias", [h.heads]),
            skip: try weights.floats(prefix + "D", [h.heads]),
            timeStepLimit: (Float(timeStepLimit.lower), Float(timeStepLimit.upper)),
            norm: normalises ? try weights.rmsNorm(prefix + "norm", size: h.innerWidth, eps: eps) : nil,
            output: try weights.linear(prefix + "out_proj", in: h.innerWidth, out: d, bias: outputBias ?? bias),
            normalisesBeforeGate: normalisesBeforeGate, projectionScales: projectionScales)
    }
}

import CheckpointIO
import Foundation
import TensorEngine

/// The sizes of a Mamba-1 mixer (Jamba's `mamba_*` keys; Mamba's and
/// FalconMamba's `intermediate_size`, `state_size`, `conv_kernel`, `time_step_rank`).
public struct MambaSizes: Sendable, Equatable {
    /// `mamba_expand` × hidden_size: the channels of x, of the gate and of the state.
    public let innerWidth: Int
    /// `mamba_d_state`: the width of B, C and each channel's state row.
    public let stateSize: Int
    /// `mamba_d_conv`: taps of the causal convolution.
    public let convolutionKernel: Int
    /// `mamba_dt_rank`: the width of each head's time step before `dt_proj`.
    public let timeStepRank: Int
    /// `n_mamba_heads` (Zamba): the channels split into this many equal
    /// heads, each with its own x_proj and dt_proj (1 elsewhere).
    public let heads: Int

    public init(innerWidth: Int, stateSize: Int, convolutionKernel: Int, timeStepRank: Int, heads: Int = 1) {
        precondition(innerWidth > 0 && stateSize > 0 && convolutionKernel > 0 && timeStepRank > 0)
        precondition(heads > 0 && innerWidth % heads == 0)
        self.innerWidth = innerWidth
        self.stateSize = stateSize
        self.convolutionKernel = convolutionKernel
        self.timeStepRank = timeStepRank
        self.heads = heads
    }

    /// The input projection's outputs: x | gate.
    public var projectionWidth: Int { 2 * innerWidth }
    /// The channels of one head.
    public var headWidth: Int { innerWidth / heads }
    /// One head's `x_proj` outputs: dt | B | C.
    public var headSelectionWidth: Int { timeStepRank + 2 * stateSize }
    /// `x_proj`'s outputs, head after head.
    public var selectionWidth: Int { heads * headSelectionWidth }
    /// `dt_proj`'s inputs, head after head.
    public var timeStepWidth: Int { heads * timeStepRank }
}

/// The Mamba-1 (selective state space) mixer, as transformers' torch path
/// computes it (`JambaMambaMixer`'s `causal_conv1d_fn` and
/// `mamba_selective_scan`, float32 throughout):
///
/// - `in_proj` to x | gate;
/// - a causal depthwise convolution of `convolutionKernel` taps over x, with
///   its bias where it has one, then the activation (`hidden_act`);
/// - `x_proj` to dt | B | C, each through its own RMSNorm where the model
///   has them (Jamba's `dt_layernorm`, `b_layernorm`, `c_layernorm`); with
///   several heads (Zamba's), each head's channels to its own dt | B | C,
///   x_proj and dt_proj then block-diagonal over the heads;
/// - Δ = softplus(`dt_proj` dt + dt_proj's bias);
/// - per channel c, with A = −exp(A_log) [channels, stateSize], the state
///   row s takes s ← exp(Δ A) s + (Δ B) x and gives y = s · C + D x;
/// - y · silu(gate), then `out_proj`.
public struct MambaMixer: ProjectingTokenMixer {
    public let sizes: MambaSizes
    /// [projectionWidth, hidden] rows x | gate.
    public let projection: Linear
    /// [channels, kernel]: each channel's taps, oldest first.
    public let convolution: [Float]
    /// One per channel, or nil (`mamba_conv_bias` false).
    public let convolutionBias: [Float]?
    /// After the convolution (`hidden_act`).
    public let activation: Activation
    /// `x_proj` [selectionWidth, innerWidth]: dt | B | C of each head from its channels.
    public let selection: Linear
    /// The RMSNorms of dt, B and C, or nil where the model has none.
    public let timeStepNorm: Normalization?
    public let inputNorm: Normalization?
    public let outputNorm: Normalization?
    /// `dt_proj`'s weight [innerWidth, timeStepWidth] (each head's channels from its dt), without its bias.
    public let timeStepProjection: Linear
    /// `dt_proj`'s bias, added to the projected time step before softplus.
    public let timeStepBias: [Float]
    /// A = −exp(A_log) [innerWidth, stateSize].
    public let decay: [Float]
    /// D per channel.
    public let skip: [Float]
    public let output: Linear

    public init(
        sizes: MambaSizes, projection: Linear, convolution: [Float], convolutionBias: [Float]?, activation: Activation,
        selection: Linear, timeStepNorm: Normalization?, inputNorm: Normalization?, outputNorm: Normalization?,
        timeStepProjection: Linear, timeStepBias: [Float], logDecay: [Float], skip: [Float], output: Linear
    ) {
        let inner = sizes.innerWidth
        precondition(projection.outFeatures == sizes.projectionWidth && output.inFeatures == inner)
        precondition(convolution.count == inner * sizes.convolutionKernel)
        precondition(convolutionBias.map { $0.count == inner } ?? true)
        precondition(selection.inFeatures == inner && selection.outFeatures == sizes.selectionWidth)
        precondition(timeStepProjection.inFeatures == sizes.timeStepWidth && timeStepProjection.outFeatures == inner)
        precondition(sizes.heads == 1 || (timeStepNorm == nil && inputNorm == nil && outputNorm == nil))
        precondition(timeStepProjection.bias == nil && timeStepBias.count == inner)
        precondition(logDecay.count == inner * sizes.stateSize && skip.count == inner)
        self.sizes = sizes
        self.projection = projection
        self.convolution = convolution
        self.convolutionBias = convolutionBias
        self.activation = activation
        self.selection = selection
        self.timeStepNorm = timeStepNorm
        self.inputNorm = inputNorm
        self.outputNorm = outputNorm
        self.timeStepProjection = timeStepProjection
        self.timeStepBias = timeStepBias
        decay = logDecay.map { -exp($0) }
        self.skip = skip
        self.output = output
    }

    /// The state before a sequence's first token: the convolution's
    /// kernel − 1 rows of inputs and each channel's state row.
    public func emptyState() -> RecurrentState {
        RecurrentState(
            history: (sizes.convolutionKernel - 1) * sizes.innerWidth, recurrent: sizes.innerWidth * sizes.stateSize)
    }

    public var mixedWidth: Int { sizes.innerWidth }

    /// The scan's output times silu(gate), then the output projection.
    public func finish(_ mixed: Matrix, projected: Matrix) -> Matrix {
        var gated = mixed
        let width = sizes.projectionWidth, inner = sizes.innerWidth
        gated.data.withUnsafeMutableBufferPointer { out in
            projected.data.withUnsafeBufferPointer { p in
                for r in 0..<mixed.rows {
                    let gate = p.baseAddress! + r * width + inner, o = out.baseAddress! + r * inner
                    for j in 0..<inner { o[j] = o[j] * Activation.silu.apply(gate[j]) }
                }
            }
        }
        return output(gated)
    }

    /// The convolution, the selection and the scan over `rows` of
    /// `projected`, written to the same rows of `mixed` [rows, innerWidth].
    public func mix(_ projected: Matrix, rows: Range<Int>, state: inout RecurrentState, into mixed: inout Matrix) {
        let count = rows.count, channels = sizes.innerWidth, taps = sizes.convolutionKernel
        guard count > 0 else { return }
        let x = Matrix(
            rows: count, cols: channels,
            data: state.convolve(
                projected.gathering(rows: rows, columns: 0..<channels), channels: channels, taps: convolution, kernel: taps,
                bias: convolutionBias, activation: activation))
        // dt | B | C, each normalised on its own, and dt through dt_proj.
        var selected = selection(x)
        let rank = sizes.timeStepRank, stateSize = sizes.stateSize
        timeStepNorm?.apply(inPlace: &selected, columns: 0..<rank)
        inputNorm?.apply(inPlace: &selected, columns: rank..<(rank + stateSize))
        outputNorm?.apply(inPlace: &selected, columns: (rank + stateSize)..<(rank + 2 * stateSize))
        let heads = sizes.heads, headSelection = sizes.headSelectionWidth, headWidth = sizes.headWidth
        let timeStepInput = Matrix(uninitialized: count, heads * rank) { out in
            selected.data.withUnsafeBufferPointer { s in
                for t in 0..<count {
                    for h in 0..<heads {
                        (out + (t * heads + h) * rank).update(from: s.baseAddress! + t * sizes.selectionWidth + h * headSelection, count: rank)
                    }
                }
            }
        }
        let timeSteps = timeStepProjection(timeStepInput)
        let decay = self.decay, timeStepBias = self.timeStepBias, skip = self.skip
        let first = rows.lowerBound, selectionWidth = sizes.selectionWidth
        state.recurrent.withUnsafeMutableBufferPointer { states in
            x.data.withUnsafeBufferPointer { xs in
                selected.data.withUnsafeBufferPointer { bc in
                    timeSteps.data.withUnsafeBufferPointer { dts in
                        mixed.data.withUnsafeMutableBufferPointer { out in
                            parallelFor(chunks: channels) { part in
                                for c in part {
                                    let s = states.baseAddress! + c * stateSize, a = c * stateSize
                                    for t in 0..<count {
                                        let raw = dts[t * channels + c] + timeStepBias[c]
                                        let delta = raw > 20 ? raw : log1p(exp(raw))
                                        let input = xs[t * channels + c]
                                        let b = bc.baseAddress! + t * selectionWidth + (c / headWidth) * headSelection + rank
                                        let cs = b + stateSize
                                        var y: Float = 0
                                        for n in 0..<stateSize {
                                            s[n] = exp(decay[a + n] * delta) * s[n] + delta * b[n] * input
                                            y += s[n] * cs[n]
                                        }
                                        out[(first + t) * channels + c] = y + input * skip[c]
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

extension MambaSizes {
    /// The config keys that give a family's Mamba-1 sizes, for errors.
    struct Keys {
        /// What gives the inner width (`mamba_expand × hidden_size`, `intermediate_size`).
        var inner: String
        var stateSize: String
        var convolutionKernel: String
        var timeStepRank: String
    }

    /// The sizes of a model of `hidden` columns, refused naming the key
    /// where in_proj [2 × inner, hidden], the state [inner, stateSize], the
    /// taps or x_proj and dt_proj would not fit in 64 bits.
    static func checked(
        innerWidth inner: Int, stateSize: Int, convolutionKernel: Int, timeStepRank rank: Int, heads: Int = 1, hidden: Int, keys: Keys
    ) throws -> MambaSizes {
        try ConfigRules.product([(inner, keys.inner), (hidden, "hidden_size"), (2, "x and gate")])
        try ConfigRules.product([(stateSize, keys.stateSize), (inner, keys.inner), (4, "A_log, state")])
        try ConfigRules.product([(convolutionKernel, keys.convolutionKernel), (inner, keys.inner), (4, "float32")])
        let selection = try ConfigRules.product([(stateSize, keys.stateSize), (2, "B and C")])
        let (width, overflow) = selection.addingReportingOverflow(rank)
        guard !overflow else { throw InvalidConfigValue(key: keys.timeStepRank, problem: "is too large: \(rank)") }
        // ZambaConfig's check: the heads split the channels evenly.
        guard heads > 0, inner % heads == 0 else {
            throw InvalidConfigValue(key: "n_mamba_heads", problem: "must divide \(keys.inner) \(inner), got \(heads)")
        }
        // x_proj and dt_proj are held block-diagonal over the heads.
        try ConfigRules.product([
            (width, "\(keys.timeStepRank) + 2 × \(keys.stateSize)"), (heads, "n_mamba_heads"), (inner, keys.inner), (2, "x_proj, dt_proj"),
        ])
        return MambaSizes(innerWidth: inner, stateSize: stateSize, convolutionKernel: convolutionKernel, timeStepRank: rank, heads: heads)
    }
}

extension MambaMixer {
    /// The RMSNorms a mixer applies to dt, B and C before the scan.
    enum SelectionNorms {
        /// None (Mamba).
        case none
        /// Stored `dt_layernorm`, `b_layernorm`, `c_layernorm` weights (Jamba).
        case stored(eps: Double)
        /// Without weights (FalconMamba's `FalconMambaWeightlessRMSNorm`s).
        case weightless(eps: Double)
    }

    /// The mixer stored under `prefix` (`in_proj`, `conv1d`, `x_proj`,
    /// `dt_proj` with its bias, `A_log`, `D`, `out_proj`, and the selection
    /// norms `norms` names), in_proj and out_proj with biases by
    /// `projectionBias`, the convolution's by `convolutionBias`.
    static func stored(
        _ prefix: String, weights: Weights, hidden d: Int, sizes s: MambaSizes, projectionBias bias: Bool, convolutionBias: Bool,
        activation: Activation, norms: SelectionNorms
    ) throws -> MambaMixer {
        let inner = s.innerWidth
        func norm(_ name: String, size: Int) throws -> Normalization? {
            switch norms {
            case .none: nil
            case .stored(let eps): try weights.rmsNorm(prefix + name, size: size, eps: eps)
            case .weightless(let eps): .weightlessRMS(size: size, eps: Float(eps))
            }
        }
        return MambaMixer(
            sizes: s, projection: try weights.linear(prefix + "in_proj", in: d, out: s.projectionWidth, bias: bias),
            convolution: try weights.floats(prefix + "conv1d.weight", [inner, 1, s.convolutionKernel]),
            convolutionBias: convolutionBias ? try weights.floats(prefix + "conv1d.bias", [inner]) : nil,
            activation: activation,
            selection: try weights.linear(prefix + "x_proj", in: inner, out: s.selectionWidth, bias: false),
            timeStepNorm: try norm("dt_layernorm", size: s.timeStepRank),
            inputNorm: try norm("b_layernorm", size: s.stateSize),
            outputNorm: try norm("c_layernorm", size: s.stateSize),
            timeStepProjection: try weights.linear(prefix + "dt_proj", in: s.timeStepRank, out: inner, bias: false),
            timeStepBias: try weights.floats(prefix + "dt_proj.bias", [inner]),
            logDecay: try weights.floats(prefix + "A_log", [inner, s.stateSize]),
            skip: try weights.floats(prefix + "D", [inner]),
            output: try weights.linear(prefix + "out_proj", in: inner, out: d, bias: bias))
    }

    /// Confirms the first kept mixer's tensors (under `prefix`) against the
    /// sizes before any is read: in_proj, conv1d, x_proj and dt_proj,
    /// their rows and columns named by `keys`.
    static func confirmShapes(_ prefix: String, weights: Weights, hidden d: Int, sizes s: MambaSizes, keys: MambaSizes.Keys, configPath: String) throws {
        try weights.confirmShapes(
            projectionShapes(hidden: d, sizes: s, keys: keys) + [
                ("x_proj.weight", [s.selectionWidth, s.innerWidth], "\(keys.timeStepRank) + 2 × \(keys.stateSize), \(keys.inner)"),
                ("dt_proj.weight", [s.innerWidth, s.timeStepRank], "\(keys.inner), \(keys.timeStepRank)"),
            ], prefix: prefix, configPath: configPath)
    }

    /// The shapes of in_proj [2 × inner, hidden] and conv1d [inner, 1,
    /// kernel], which every Mamba-1 mixer stores alike (Zamba's per-head
    /// x_proj and dt_proj are its own), their rows and columns named by `keys`.
    static func projectionShapes(hidden d: Int, sizes s: MambaSizes, keys: MambaSizes.Keys) -> [(name: String, shape: [Int], keys: String)] {
        [
            ("in_proj.weight", [s.projectionWidth, d], "2 × \(keys.inner), hidden_size"),
            ("conv1d.weight", [s.innerWidth, 1, s.convolutionKernel], "\(keys.inner), \(keys.convolutionKernel)"),
        ]
    }
}

/// The `mamba_*` keys of the configs that put a Mamba-1 mixer beside
/// attention (JambaConfig, ZambaConfig), with their defaults: `mamba_d_state`
/// 16, `mamba_d_conv` 4, `mamba_expand` 2, `mamba_dt_rank` "auto"
/// (⌈hidden_size / 16⌉), `mamba_conv_bias` true, `mamba_proj_bias` false
/// (a null flag builds no bias).
struct MambaPrefixedKeys: Decodable {
    var stateSize: Int
    var convolutionKernel: Int
    var expand: Int
    /// nil: "auto".
    var writtenTimeStepRank: Int?
    var convolutionBias: Bool
    var projectionBias: Bool

    enum CodingKeys: String, CodingKey {
        case stateSize = "mamba_d_state"
        case convolutionKernel = "mamba_d_conv"
        case expand = "mamba_expand"
        case timeStepRank = "mamba_dt_rank"
        case convolutionBias = "mamba_conv_bias"
        case projectionBias = "mamba_proj_bias"
    }

    static let keys = MambaSizes.Keys(
        inner: "mamba_expand × hidden_size", stateSize: "mamba_d_state", convolutionKernel: "mamba_d_conv", timeStepRank: "mamba_dt_rank")

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        stateSize = try c.decodeCount(.stateSize, default: 16)
        convolutionKernel = try c.decodeCount(.convolutionKernel, default: 4)
        expand = try c.decodeCount(.expand, default: 2)
        writtenTimeStepRank = try c.decodeNumberOrAuto(.timeStepRank)
        convolutionBias = try c.decodeBiasFlag(.convolutionBias, default: true)
        projectionBias = try c.decodeBiasFlag(.projectionBias, default: false)
        let keys = self
        try ConfigRules.decodingChecks {
            try ConfigRules.count(keys.stateSize, "mamba_d_state")
            try ConfigRules.count(keys.convolutionKernel, "mamba_d_conv")
            try ConfigRules.count(keys.expand, "mamba_expand")
            try ConfigRules.countIfPresent(keys.writtenTimeStepRank, "mamba_dt_rank")
        }
    }

    /// `mamba_dt_rank`, "auto" resolved for a model of `hidden` columns.
    func timeStepRank(hidden: Int) -> Int { writtenTimeStepRank ?? (hidden + 15) / 16 }

    /// The mixers' sizes for a model of `hidden` columns: `heads` heads
    /// (Zamba's `n_mamba_heads`) over `mamba_expand` × hidden_size channels.
    /// - Throws: `InvalidConfigValue` naming the key whose value does not fit.
    func sizes(hidden: Int, heads: Int = 1) throws -> MambaSizes {
        let inner = try ConfigRules.product([(expand, "mamba_expand"), (hidden, "hidden_size")])
        return try MambaSizes.checked(
            innerWidth: inner, stateSize: stateSize, convolutionKernel: convolutionKernel, timeStepRank: timeStepRank(hidden: hidden),
            heads: heads, hidden: hidden, keys: Self.keys)
    }
}

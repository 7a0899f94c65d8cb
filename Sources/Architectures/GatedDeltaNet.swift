import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The sizes of a Gated DeltaNet layer (transformers' `linear_*` keys).
public struct GatedDeltaNetHeads: Sendable, Equatable {
    /// Query/key heads (`linear_num_key_heads`); each serves
    /// `valueHeads / keyHeads` consecutive value heads.
    public let keyHeads: Int
    /// `linear_num_value_heads`.
    public let valueHeads: Int
    /// `linear_key_head_dim`.
    public let keyDim: Int
    /// `linear_value_head_dim`.
    public let valueDim: Int
    /// `linear_conv_kernel_dim`: taps of the causal convolution.
    public let convolutionKernel: Int
    /// One decay gate per key channel of each value head (Kimi Delta
    /// Attention) instead of one per value head (Gated DeltaNet).
    public let decayPerChannel: Bool

    public init(keyHeads: Int, valueHeads: Int, keyDim: Int, valueDim: Int, convolutionKernel: Int, decayPerChannel: Bool = false) {
        precondition(keyHeads > 0 && valueHeads % keyHeads == 0 && keyDim > 0 && valueDim > 0 && convolutionKernel > 0)
        self.keyHeads = keyHeads
        self.valueHeads = valueHeads
        self.keyDim = keyDim
        self.valueDim = valueDim
        self.convolutionKernel = convolutionKernel
        self.decayPerChannel = decayPerChannel
    }

    /// Columns of all query (or all key) heads.
    public var keyWidth: Int { keyHeads * keyDim }
    /// Columns of all value heads (and of the output gate z).
    public var valueWidth: Int { valueHeads * valueDim }
    /// The convolution's channels: q | k | v.
    public var convolutionChannels: Int { 2 * keyWidth + valueWidth }
    /// Decay gates per value head: 1, or keyDim (`decayPerChannel`).
    public var decaysPerHead: Int { decayPerChannel ? keyDim : 1 }
    /// The input projection's outputs: q | k | v | z | b | a (a: `decaysPerHead` per value head).
    public var projectionWidth: Int { convolutionChannels + valueWidth + valueHeads + valueHeads * decaysPerHead }
}

/// How a delta rule's decay g (the state decays by exp(g)) comes from the
/// projected `a`, the time-step bias dt_bias and the head's rate exp(A_log).
public enum DeltaRuleDecay: Sendable, Equatable {
    /// g = −exp(A_log) · softplus(a + dt_bias) (Gated DeltaNet; Kimi Delta
    /// Attention without its safe gate).
    case softplus
    /// g = lowerBound · sigmoid(exp(A_log) · (a + dt_bias)) (Kimi Delta
    /// Attention's safe gate, `kda_safe_gate` with `kda_lower_bound`).
    case boundedSigmoid(lowerBound: Float)

    /// exp(g) for the projected `a` plus its bias, at decay rate `rate`.
    @inline(__always)
    func factor(_ biased: Float, rate: Float) -> Float {
        switch self {
        case .softplus: return exp(-rate * (biased > 20 ? biased : log1p(exp(biased))))
        case .boundedSigmoid(let lowerBound): return exp(lowerBound / (1 + exp(-rate * biased)))
        }
    }
}

/// Gated DeltaNet, the linear-attention token mixer of Qwen3-Next, Qwen3.5,
/// Lara Mini (`Qwen3NextGatedDeltaNet`) and OLMo-Hybrid (`OlmoHybridGatedDeltaNet`),
/// as transformers' torch path computes it:
///
/// - one input projection to q | k | v | z | b | a (the family orders the
///   stored rows so; OLMo-Hybrid's z is its `g_proj`);
/// - a causal depthwise convolution of `convolutionKernel` taps over the
///   q | k | v columns, then `convolutionActivation` (SiLU; OLMo-Hybrid's
///   `hidden_act`);
/// - q and k L2-normalised per head (x · rsqrt(Σx² + 1e-6)), q scaled by
///   keyDim^-1/2;
/// - per value head h (query/key head h / (valueHeads / keyHeads)) and time
///   step, with β = `betaScale` · sigmoid(b) (OLMo-Hybrid's
///   `linear_allow_neg_eigval` doubles it) and g = −exp(A_log) · softplus(a + dt_bias)
///   (`DeltaRuleDecay`), the state S [keyDim, valueDim] decays, S ← exp(g) S,
///   takes the delta update S ← S + k (β (v − Sᵀk))ᵀ, and gives o = Sᵀq;
/// - a gated RMSNorm per value head, norm(o) · w · silu(z), and `output`.
///
/// Kimi Delta Attention (Ling's hybrid and Kimi Linear) is the
/// same layer with one decay per key channel (`decayPerChannel`: row i of S
/// decays by exp(gᵢ)), possibly its safe gate, and a sigmoid output gate
/// (`outputGateActivation`).
///
/// transformers' batched forward runs the same recurrence in chunks
/// (`torch_chunk_gated_delta_rule`, `chunk_kimi_delta_attention`), equal to
/// this step form up to rounding.
public struct GatedDeltaNet: ProjectingTokenMixer {
    public let heads: GatedDeltaNetHeads
    /// [projectionWidth, hidden] rows q | k | v | z | b | a.
    public let projection: Linear
    /// [channels, kernel]: each q | k | v channel's taps, oldest first.
    public let convolution: [Float]
    /// exp(A_log) per value head.
    public let decayRates: [Float]
    /// dt_bias per decay gate (`heads.decaysPerHead` per value head).
    public let timeStepBias: [Float]
    public let decay: DeltaRuleDecay
    /// Gates the normed output by z: SiLU (Gated DeltaNet) or sigmoid (Kimi Delta Attention).
    public let outputGateActivation: Activation
    /// The RMSNorm of each value head's output (weights [valueDim]).
    public let norm: Normalization
    public let output: Linear
    /// Applied to the convolution's output.
    public let convolutionActivation: Activation
    /// Multiplies sigmoid(b): 1, or 2 to let the update's eigenvalues go negative.
    public let betaScale: Float

    public init(
        heads: GatedDeltaNetHeads, projection: Linear, convolution: [Float], logDecayRates: [Float], timeStepBias: [Float],
        norm: Normalization, output: Linear, convolutionActivation: Activation = .silu, betaScale: Float = 1,
        decay: DeltaRuleDecay = .softplus, outputGateActivation: Activation = .silu
    ) {
        precondition(projection.outFeatures == heads.projectionWidth && output.inFeatures == heads.valueWidth)
        precondition(convolution.count == heads.convolutionChannels * heads.convolutionKernel)
        precondition(logDecayRates.count == heads.valueHeads && timeStepBias.count == heads.valueHeads * heads.decaysPerHead)
        self.heads = heads
        self.projection = projection
        self.convolution = convolution
        decayRates = logDecayRates.map { exp($0) }
        self.timeStepBias = timeStepBias
        self.norm = norm
        self.output = output
        self.convolutionActivation = convolutionActivation
        self.betaScale = betaScale
        self.decay = decay
        self.outputGateActivation = outputGateActivation
    }

    /// The state before a sequence's first token: the convolution's
    /// kernel − 1 rows of inputs and each value head's S [keyDim, valueDim].
    public func emptyState() -> RecurrentState {
        RecurrentState(
            history: (heads.convolutionKernel - 1) * heads.convolutionChannels, recurrent: heads.valueHeads * heads.keyDim * heads.valueDim)
    }

    public var mixedWidth: Int { heads.valueWidth }

    /// The gated norm and the output projection of the mixed values.
    public func finish(_ mixed: Matrix, projected: Matrix) -> Matrix {
        var normed = mixed
        norm.apply(inPlace: &normed, columns: 0..<heads.valueWidth, pieceWidth: heads.valueDim)
        let width = heads.projectionWidth, zStart = heads.convolutionChannels, gate = outputGateActivation
        normed.data.withUnsafeMutableBufferPointer { out in
            projected.data.withUnsafeBufferPointer { p in
                for r in 0..<mixed.rows {
                    let z = p.baseAddress! + r * width + zStart, o = out.baseAddress! + r * heads.valueWidth
                    for j in 0..<heads.valueWidth { o[j] = o[j] * gate.apply(z[j]) }
                }
            }
        }
        return output(normed)
    }

    /// The convolution and the recurrence over `rows` of `projected`,
    /// written to the same rows of `mixed` [rows, valueWidth].
    public func mix(_ projected: Matrix, rows: Range<Int>, state: inout RecurrentState, into mixed: inout Matrix) {
        let h = heads, count = rows.count, channels = h.convolutionChannels, taps = h.convolutionKernel
        let width = h.projectionWidth
        guard count > 0 else { return }
        // conv[t, c] = act(Σ_j w[c, j] · padded[t + j, c]), then q and k normalised, q scaled.
        var convolved = state.convolve(
            projected.gathering(rows: rows, columns: 0..<channels), channels: channels, taps: convolution, kernel: taps, bias: nil,
            activation: convolutionActivation)
        let scale = Float(pow(Double(h.keyDim), -0.5))
        convolved.withUnsafeMutableBufferPointer { out in
            parallelFor(chunks: count, minimumChunk: 8) { part in
                for t in part {
                    let row = out.baseAddress! + t * channels
                    for head in 0..<(2 * h.keyHeads) {
                        let v = row + head * h.keyDim
                        var squares: Float = 0
                        for i in 0..<h.keyDim { squares += v[i] * v[i] }
                        let inverse = 1 / (squares + 1e-6).squareRoot()
                        for i in 0..<h.keyDim { v[i] *= inverse }
                        if head < h.keyHeads { for i in 0..<h.keyDim { v[i] *= scale } }
                    }
                }
            }
        }
        let group = h.valueHeads / h.keyHeads, stateSize = h.keyDim * h.valueDim
        let (keyDim, valueDim) = (h.keyDim, h.valueDim)
        let decayRates = self.decayRates, timeStepBias = self.timeStepBias, betaScale = self.betaScale, rule = decay
        let perHead = h.decaysPerHead
        let first = rows.lowerBound, outWidth = h.valueWidth
        let keyStart = h.keyWidth, valueStart = 2 * h.keyWidth
        let bStart = channels + h.valueWidth, aStart = bStart + h.valueHeads
        state.recurrent.withUnsafeMutableBufferPointer { states in
            convolved.withUnsafeBufferPointer { qkv in
                projected.data.withUnsafeBufferPointer { p in
                    mixed.data.withUnsafeMutableBufferPointer { out in
                        parallelFor(chunks: h.valueHeads) { heads in
                            var memory = [Float](repeating: 0, count: valueDim)
                            var decays = [Float](repeating: 0, count: perHead)
                            for head in heads {
                                let s = states.baseAddress! + head * stateSize
                                let keyHead = head / group
                                for t in 0..<count {
                                    let row = qkv.baseAddress! + t * channels
                                    let q = row + keyHead * keyDim, k = row + keyStart + keyHead * keyDim
                                    let v = row + valueStart + head * valueDim
                                    let projectedRow = p.baseAddress! + (first + t) * width
                                    let beta = betaScale / (1 + exp(-projectedRow[bStart + head]))
                                    for c in 0..<perHead {
                                        let gate = head * perHead + c
                                        decays[c] = rule.factor(projectedRow[aStart + gate] + timeStepBias[gate], rate: decayRates[head])
                                    }
                                    // Decay (row i of S by its channel's gate, or all by the head's), then read the state at k: memory = Sᵀk.
                                    for j in 0..<valueDim { memory[j] = 0 }
                                    for i in 0..<keyDim {
                                        let si = s + i * valueDim, ki = k[i], decay = decays[perHead == 1 ? 0 : i]
                                        for j in 0..<valueDim {
                                            si[j] *= decay
                                            memory[j] += si[j] * ki
                                        }
                                    }
                                    for j in 0..<valueDim { memory[j] = (v[j] - memory[j]) * beta }
                                    // S += k deltaᵀ; o = Sᵀq.
                                    let o = out.baseAddress! + (first + t) * outWidth + head * valueDim
                                    for j in 0..<valueDim { o[j] = 0 }
                                    for i in 0..<keyDim {
                                        let si = s + i * valueDim, ki = k[i], qi = q[i]
                                        for j in 0..<valueDim {
                                            si[j] += ki * memory[j]
                                            o[j] += si[j] * qi
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
}

extension Weights {
    /// The Gated DeltaNet input projection under `prefix` [projectionWidth,
    /// `hidden`], rows q | k | v | z | b | a: `in_proj_qkv`, `in_proj_z`,
    /// `in_proj_b` and `in_proj_a` stacked (Qwen3_5GatedDeltaNet's
    /// parameters), or, where `fused` names one and it is stored, that
    /// tensor (LaraMini's released `in_proj`, which transformers' conversion
    /// mapping splits into those four by their sizes, `Split(dim=0)`, and
    /// saves back fused).
    /// - Throws: `DroptraceError` naming the weights when the fused tensor
    ///   is stored beside one of the four (transformers' split then fails),
    ///   or for a missing tensor or a shape the sizes contradict
    ///   (`stackedLinear(storedFused:)`).
    func gatedDeltaNetProjection(_ prefix: String, heads h: GatedDeltaNetHeads, hidden: Int, fused: String? = nil) throws -> Linear {
        try stackedLinear(
            ["in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a"].map { prefix + $0 }, in: hidden,
            outs: [h.convolutionChannels, h.valueWidth, h.valueHeads, h.valueHeads], bias: false, storedFused: fused.map { prefix + $0 })
    }

    /// The causal convolution's taps [channels, 1, kernel] of the delta-rule
    /// layer under `prefix`: stored fused (`conv1d`, transformers' name) or
    /// per part (`q_conv1d`, `k_conv1d`, `v_conv1d`, the released names of
    /// OLMo-Hybrid and Ling's hybrid, which transformers concatenates).
    func deltaRuleConvolution(_ prefix: String, heads h: GatedDeltaNetHeads) throws -> [Float] {
        guard try storedModule(prefix, saved: "q_conv1d", renamed: "conv1d") == "q_conv1d" else {
            return try floats(prefix + "conv1d.weight", [h.convolutionChannels, 1, h.convolutionKernel])
        }
        return try concatenatedRows(
            ["q_conv1d", "k_conv1d", "v_conv1d"].map { prefix + $0 + ".weight" }, rows: h.convolutionChannels,
            trailing: [1, h.convolutionKernel])
    }

    /// Refuses a `linear_conv_kernel_dim` the stored taps under `prefix` contradict.
    func confirmConvolutionKernel(_ prefix: String, heads h: GatedDeltaNetHeads, configPath: String) throws {
        let convolution = prefix + (try storedModule(prefix, saved: "q_conv1d", renamed: "conv1d")) + ".weight"
        let kernel = try checkpoint.storedTensor(self.prefix + convolution).shape.last
        if kernel != h.convolutionKernel {
            throw DroptraceError(
                "linear_conv_kernel_dim \(h.convolutionKernel) contradicts tensor '\(self.prefix)\(convolution)' of \(kernel.map(String.init) ?? "no") taps",
                path: configPath)
        }
    }
}

/// Kimi Delta Attention's sizes as a config writes them: `heads` heads
/// (under `headsKey`) of `headDim` columns for queries, keys and values
/// alike, a `kernel`-tap convolution, one decay per key channel (Ling's
/// hybrid and Kimi Linear).
struct KimiDeltaAttentionSizes {
    var heads: Int
    var headsKey = "linear_num_heads"
    var headDim: Int
    var kernel: Int

    /// Refuses sizes transformers could not build from, or whose tensors would not fit in 64 bits.
    func check(hidden: Int) throws {
        try ConfigRules.count(heads, headsKey)
        try ConfigRules.count(headDim, "linear_head_dim")
        try ConfigRules.count(kernel, "linear_conv_kernel_dim")
        let width = [(heads, headsKey), (headDim, "linear_head_dim")]
        try ConfigRules.product(width + [(3, "q, k and v"), (hidden, "hidden_size")])
        try ConfigRules.product(width + [(kernel, "linear_conv_kernel_dim"), (3, "q, k and v")])
    }

    /// The layer's sizes: as many key as value heads, one decay per key channel.
    var layerHeads: GatedDeltaNetHeads {
        GatedDeltaNetHeads(keyHeads: heads, valueHeads: heads, keyDim: headDim, valueDim: headDim, convolutionKernel: kernel, decayPerChannel: true)
    }

    /// Each kept mixer's kind against `types` (under "layers.<index>.`module`"
    /// a linear layer has `b_proj`, a latent attention `kv_b_proj`), then the
    /// first kept linear layer's q/k/v projections and convolution against these sizes.
    func confirm(_ parts: DecoderParts, types: [String], module: String) throws {
        let linear = HybridQwenConfiguration.linear
        try parts.confirmLayerKinds(types, probes: [AttentionLayerType.full: [module + "kv_b_proj.weight"], linear: [module + "b_proj.weight"]])
        guard let layer = types.indices.first(where: { types[$0] == linear && !parts.configuredDrops.dropsAttention($0) }) else { return }
        let h = layerHeads, keys = "\(headsKey) × linear_head_dim"
        try parts.confirmProjections(layer: layer, attention: module, [("q_proj", h.keyWidth, keys), ("k_proj", h.keyWidth, keys), ("v_proj", h.valueWidth, keys)])
        try parts.weights.confirmConvolutionKernel("layers.\(layer).\(module)", heads: h, configPath: parts.configPath)
    }
}

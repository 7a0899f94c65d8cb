import Foundation
import TensorEngine

/// Griffin's recurrent block, the token mixer of RecurrentGemma's recurrent
/// layers (`RecurrentGemmaRecurrentBlock`; De et al., "Griffin: Mixing Gated
/// Linear Recurrences with Local Attention", 2024), as transformers' torch
/// path computes it:
///
/// - y = act(`linear_y`(x)), u = `linear_x`(x): one projection
///   [2 · width, hidden], rows y | u, with biases;
/// - a causal depthwise convolution of `kernel` taps (`conv1d_width`) with
///   a bias per channel over u;
/// - the RG-LRU (`RecurrentGemmaRglru`) over the convolved u, its gates
///   block-diagonal by head: i = σ(u W_i + b_i), r = σ(u W_r + b_r) per
///   head; log a = −8 · r · softplus(Λ); h_t = a_t ⊙ h_{t−1} + √(1 − a_t²)
///   ⊙ i_t ⊙ u_t, where a token at position 0 resets it: h = i ⊙ u;
/// - `linear_out`(h ⊙ y).
public struct GriffinRecurrentBlock: ProjectingTokenMixer {
    /// The recurrence's width (`lru_width`).
    public let width: Int
    /// Taps of the causal convolution (`conv1d_width`).
    public let kernel: Int
    /// [2 · width, hidden]: rows y | u (`linear_y`, `linear_x`).
    public let projection: Linear
    /// [width, kernel]: each channel's taps, oldest first, and their biases [width].
    public let taps: [Float]
    public let tapBias: [Float]
    /// Each head's gates as projections of its block of u (W [block, block]
    /// stored as `input_gate_weight[h]`, read as torch's `baddbmm` reads it: u · W).
    public let inputGates: [Linear]
    public let recurrentGates: [Linear]
    /// −8 · softplus(Λ) per channel (`recurrent_param` Λ), the factor of r in log a.
    public let logDecayScale: [Float]
    /// y's nonlinearity (`hidden_activation`).
    public let activation: Activation
    /// [hidden, width] (`linear_out`).
    public let output: Linear

    /// - Parameters: as the properties; `gateWeights` [heads, block, block] and
    ///   `gateBiases` [heads, block] as stored (`input_gate_*`, `recurrent_gate_*`),
    ///   `recurrentParameter` Λ [width].
    public init(
        projection: Linear, taps: [Float], tapBias: [Float], heads: Int,
        gateWeights: (input: [Float], recurrent: [Float]), gateBiases: (input: [Float], recurrent: [Float]),
        recurrentParameter: [Float], activation: Activation, output: Linear
    ) {
        let width = projection.outFeatures / 2
        precondition(projection.outFeatures == 2 * width && heads > 0 && width % heads == 0)
        precondition(width > 0 && taps.count % width == 0 && tapBias.count == width && recurrentParameter.count == width)
        let block = width / heads
        /// Head h's gate as a Linear: weight [out, in] = W[h]ᵀ.
        func perHead(_ weights: [Float], _ biases: [Float]) -> [Linear] {
            precondition(weights.count == heads * block * block && biases.count == heads * block)
            return (0..<heads).map { h in
                let w = h * block * block
                let transposed = (0..<block).flatMap { j in (0..<block).map { k in weights[w + k * block + j] } }
                return Linear(weight: transposed, bias: Array(biases[(h * block)..<((h + 1) * block)]), inFeatures: block, outFeatures: block)
            }
        }
        self.width = width
        kernel = taps.count / width
        self.projection = projection
        self.taps = taps
        self.tapBias = tapBias
        inputGates = perHead(gateWeights.input, gateBiases.input)
        recurrentGates = perHead(gateWeights.recurrent, gateBiases.recurrent)
        // torch's softplus (beta 1, threshold 20).
        logDecayScale = recurrentParameter.map { -8 * ($0 > 20 ? $0 : log1p(exp($0))) }
        self.activation = activation
        self.output = output
    }

    public var heads: Int { inputGates.count }

    /// The last kernel − 1 rows of u [kernel − 1, width], then h [width].
    public func emptyState() -> RecurrentState { RecurrentState(history: (kernel - 1) * width, recurrent: width) }

    public var mixedWidth: Int { width }

    /// `linear_out`(h ⊙ act(y)).
    public func finish(_ mixed: Matrix, projected: Matrix) -> Matrix {
        var gated = mixed
        projected.data.withUnsafeBufferPointer { p in
            gated.data.withUnsafeMutableBufferPointer { h in
                for r in 0..<mixed.rows {
                    for c in 0..<width { h[r * width + c] *= activation.apply(p[r * 2 * width + c]) }
                }
            }
        }
        return output(gated)
    }

    /// The RG-LRU over `rows` of the convolved u, continuing `state`, into the same rows of `mixed` [rows, width].
    public func mix(_ projected: Matrix, rows: Range<Int>, state: inout RecurrentState, into mixed: inout Matrix) {
        let count = rows.count, width = self.width, block = width / heads
        guard count > 0 else { return }
        let u = state.convolve(
            projected.gathering(rows: rows, columns: width..<(2 * width)), channels: width, taps: taps, kernel: kernel, bias: tapBias,
            activation: .identity)
        // Each head's gates over all rows at once: σ(u_h W + b).
        let blocks = (0..<heads).map { h in
            Matrix(rows: count, cols: block, data: Matrix(rows: count, cols: width, data: u).gathering(rows: 0..<count, columns: (h * block)..<((h + 1) * block)))
        }
        func gates(_ linears: [Linear]) -> [Float] {
            var gate = [Float](repeating: 0, count: count * width)
            for (h, x) in blocks.enumerated() {
                let out = linears[h](x)
                for t in 0..<count {
                    for j in 0..<block { gate[t * width + h * block + j] = 1 / (1 + exp(-out.data[t * block + j])) }
                }
            }
            return gate
        }
        let inputGate = gates(inputGates), recurrentGate = gates(recurrentGates)
        let first = rows.lowerBound
        mixed.data.withUnsafeMutableBufferPointer { out in
            for t in 0..<count {
                let reset = state.seen + t == 0
                for c in 0..<width {
                    let i = t * width + c
                    let logDecay = logDecayScale[c] * recurrentGate[i]
                    let normalized = u[i] * inputGate[i] * (reset ? 1 : (1 - exp(2 * logDecay)).squareRoot())
                    let h = reset ? normalized : exp(logDecay) * state.recurrent[c] + normalized
                    state.recurrent[c] = h
                    out[(first + t) * width + c] = h
                }
            }
        }
        state.seen += count
    }
}

import Foundation
import TensorEngine

/// The decay tables of a lightning-attention layer, each head's as
/// transformers' `MiniMaxLightningAttention` holds them (its buffers
/// `slope_rate`, `query_decay`, `key_decay`, `diagonal_decay`): read from
/// the checkpoint where it stores them, else (nil) each entry computed from
/// the slopes as the module computes it, when it is used (a table of
/// blockSize² entries per head need not be held for the corner a short
/// sequence reads).
public struct LightningDecay: Sendable {
    public let heads: Int
    /// Tokens per block (`block_size`).
    public let blockSize: Int
    /// Each head's decay rate s [heads] (`slope_rate`: the block decay exp(−s · c)
    /// and the decoding steps' exp(−s)).
    public let slopes: [Float]
    /// The rates the tables not stored are computed from: the module's own
    /// (transformers initialises a missing table from them, not from a stored `slope_rate`).
    public let tableSlopes: [Float]
    /// exp(−s · (i + 1)) for block row i [heads, blockSize].
    public let queryDecay: [Float]?
    /// exp(−s · (blockSize − i − 1)) for block row i [heads, blockSize].
    public let keyDecay: [Float]?
    /// exp(−s · (i − j)) where i ≥ j, else 0 [heads, blockSize, blockSize].
    public let diagonalDecay: [Float]?

    public init(
        heads: Int, blockSize: Int, slopes: [Float], tableSlopes: [Float], queryDecay: [Float]?, keyDecay: [Float]?, diagonalDecay: [Float]?
    ) {
        precondition(heads > 0 && blockSize > 0 && slopes.count == heads && tableSlopes.count == heads)
        precondition(queryDecay.map { $0.count == heads * blockSize } ?? true && keyDecay.map { $0.count == heads * blockSize } ?? true)
        precondition(diagonalDecay.map { $0.count == heads * blockSize * blockSize } ?? true)
        self.heads = heads
        self.blockSize = blockSize
        self.slopes = slopes
        self.tableSlopes = tableSlopes
        self.queryDecay = queryDecay
        self.keyDecay = keyDecay
        self.diagonalDecay = diagonalDecay
    }

    /// The query decay of head `head`'s block row `row`.
    @inline(__always)
    func query(_ head: Int, row: Int) -> Float {
        queryDecay?[head * blockSize + row] ?? exp(-tableSlopes[head] * Float(row + 1))
    }

    /// The key decay of head `head`'s row `row` of a block of `count` rows
    /// (the table's last `count` entries).
    @inline(__always)
    func key(_ head: Int, row: Int, of count: Int) -> Float {
        keyDecay?[head * blockSize + blockSize - count + row] ?? exp(-tableSlopes[head] * Float(count - 1 - row))
    }

    /// The decay from column `column` to row `row` of head `head`'s block.
    @inline(__always)
    func diagonal(_ head: Int, row: Int, column: Int) -> Float {
        if let diagonalDecay { return diagonalDecay[(head * blockSize + row) * blockSize + column] }
        let scaled = tableSlopes[head] * Float(row - column)
        return scaled >= 0 ? exp(-scaled) : 0
    }

    /// `MiniMaxLightningAttention.get_slope_rate` for layer `layer` of
    /// `layers`: (2^(−8/heads))^(h + 1) · (1 − layer / (layers − 1 + 1e-5) + 1e-5),
    /// the power and the product in Float32 as torch forms them.
    public static func slopes(heads: Int, layer: Int, layers: Int) -> [Float] {
        let base = Float(1 / pow(2, 8 / Double(heads)))
        let factor = Float(1 - Double(layer) / (Double(layers) - 1 + 1e-5) + 1e-5)
        return (0..<heads).map { pow(base, Float($0 + 1)) * factor }
    }

    /// `decay_factors` of `slopes` for blocks of `blockSize` (Float32, as torch forms them).
    public static func queryDecay(_ slopes: [Float], blockSize: Int) -> [Float] {
        slopes.flatMap { s in (1...blockSize).map { exp(-s * Float($0)) } }
    }

    public static func keyDecay(_ slopes: [Float], blockSize: Int) -> [Float] {
        slopes.flatMap { s in (1...blockSize).map { exp(-s * Float(blockSize - $0)) } }
    }

    public static func diagonalDecay(_ slopes: [Float], blockSize: Int) -> [Float] {
        slopes.flatMap { s in
            (0..<(blockSize * blockSize)).map { index -> Float in
                let scaled = s * Float(index / blockSize - index % blockSize)
                return scaled >= 0 ? exp(-scaled) : 0
            }
        }
    }
}

/// Lightning attention, the linear-attention token mixer of MiniMax-Text-01
/// and MiniMax-M1 (`MiniMaxLightningAttention`), as transformers' torch path
/// computes it:
///
/// - q | k | v = act(`qkv_proj` x), each head's three parts side by side
///   (head h's columns [3h·d, 3(h + 1)·d): q, k, v), no scaling;
/// - the sequence in blocks of `blockSize` tokens from its start, per head,
///   with the state S [d, d] (zero before the first block): each block's
///   output is (Q Kᵀ ⊙ D) V + (Q ⊙ qd) S, then S ← S · exp(−s · c) + (K ⊙ kd)ᵀ V
///   for a block of c tokens (`LightningDecay`: D its c × c corner, qd its
///   first c query decays, kd its last c key decays);
/// - once the state has taken a sequence in (decoding), one token at a
///   time: S ← exp(−s) S + kᵀv, o = q S, as transformers' cached path;
/// - an RMSNorm over all heads' columns (`norm`, eps 1e-6), times
///   sigmoid(`output_gate` x), then `out_proj`.
///
/// `projection` holds qkv_proj's rows followed by output_gate's, so the
/// gate reads the same normalised input.
public struct LightningAttention: RecurrentTokenMixer {
    public let headDim: Int
    public let decay: LightningDecay
    /// [4 · heads · headDim, hidden]: qkv_proj's rows, then output_gate's.
    public let projection: Linear
    /// `hidden_act`, applied to q | k | v.
    public let activation: Activation
    /// The RMSNorm of all heads' outputs (weights [heads · headDim]).
    public let norm: Normalization
    public let output: Linear

    public init(headDim: Int, decay: LightningDecay, projection: Linear, activation: Activation, norm: Normalization, output: Linear) {
        precondition(headDim > 0 && projection.outFeatures == 4 * decay.heads * headDim && output.inFeatures == decay.heads * headDim)
        self.headDim = headDim
        self.decay = decay
        self.projection = projection
        self.activation = activation
        self.norm = norm
        self.output = output
    }

    public var heads: Int { decay.heads }
    /// Columns of all heads' outputs (and of the gate).
    public var width: Int { heads * headDim }
    public var mixedWidth: Int { width }

    /// The projected rows with q | k | v activated (the gate's columns as projected).
    public func project(_ x: Matrix) -> Matrix {
        var projected = projection(x)
        let rowWidth = projected.cols, activated = 3 * width, activation = self.activation
        projected.data.withUnsafeMutableBufferPointer { values in
            parallelFor(chunks: projected.rows, minimumChunk: 16) { rows in
                for r in rows { activation.apply(inPlace: values.baseAddress! + r * rowWidth, count: activated) }
            }
        }
        return projected
    }

    /// Each head's S [headDim, headDim]; `seen` counts the tokens taken in.
    public func emptyState() -> RecurrentState { RecurrentState(history: 0, recurrent: heads * headDim * headDim) }

    /// The normed outputs times sigmoid(gate), through `out_proj`.
    public func finish(_ mixed: Matrix, projected: Matrix) -> Matrix {
        var normed = norm(mixed)
        let rowWidth = projected.cols, gateStart = 3 * width, width = self.width
        normed.data.withUnsafeMutableBufferPointer { out in
            projected.data.withUnsafeBufferPointer { p in
                for r in 0..<mixed.rows {
                    let gate = p.baseAddress! + r * rowWidth + gateStart, o = out.baseAddress! + r * width
                    for j in 0..<width { o[j] = Activation.sigmoid.apply(gate[j]) * o[j] }
                }
            }
        }
        return output(normed)
    }

    /// The heads' attention over `rows` of `projected`, block by block from
    /// an empty state, else (a state that has taken tokens in) token by token.
    public func mix(_ projected: Matrix, rows: Range<Int>, state: inout RecurrentState, into mixed: inout Matrix) {
        guard !rows.isEmpty else { return }
        let blockwise = state.seen == 0
        state.seen += rows.count
        let d = headDim, rowWidth = projected.cols, width = self.width, decay = self.decay
        state.recurrent.withUnsafeMutableBufferPointer { states in
            projected.data.withUnsafeBufferPointer { p in
                mixed.data.withUnsafeMutableBufferPointer { out in
                    parallelFor(chunks: heads) { heads in
                        for head in heads {
                            let s = states.baseAddress! + head * d * d
                            // Head h's q, k and v of row r.
                            func q(_ r: Int) -> UnsafePointer<Float> { p.baseAddress! + r * rowWidth + 3 * head * d }
                            func k(_ r: Int) -> UnsafePointer<Float> { q(r) + d }
                            func v(_ r: Int) -> UnsafePointer<Float> { q(r) + 2 * d }
                            func o(_ r: Int) -> UnsafeMutablePointer<Float> { out.baseAddress! + r * width + head * d }
                            if blockwise {
                                Self.blocks(rows, decay: decay, head: head, d: d, state: s, q: q, k: k, v: v, o: o)
                            } else {
                                let ratio = exp(-decay.slopes[head])
                                for r in rows {
                                    let (kr, vr, qr, or) = (k(r), v(r), q(r), o(r))
                                    for i in 0..<(d * d) { s[i] *= ratio }
                                    for i in 0..<d { for j in 0..<d { s[i * d + j] += kr[i] * vr[j] } }
                                    for j in 0..<d { or[j] = 0 }
                                    for i in 0..<d { for j in 0..<d { or[j] += qr[i] * s[i * d + j] } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// transformers' block loop for one head over `rows` (from the
    /// sequence's start), writing each row's output and leaving S after the last block.
    private static func blocks(
        _ rows: Range<Int>, decay: LightningDecay, head: Int, d: Int, state s: UnsafeMutablePointer<Float>,
        q: (Int) -> UnsafePointer<Float>, k: (Int) -> UnsafePointer<Float>, v: (Int) -> UnsafePointer<Float>,
        o: (Int) -> UnsafeMutablePointer<Float>
    ) {
        let size = decay.blockSize, slope = decay.slopes[head]
        // A block holds at most the rows there are (block_size may be far longer than the sequence).
        var weights = [Float](repeating: 0, count: min(size, rows.count))
        var decayed = [Float](repeating: 0, count: d)
        for start in stride(from: rows.lowerBound, to: rows.upperBound, by: size) {
            let c = min(size, rows.upperBound - start)
            for i in 0..<c {
                let qi = q(start + i), oi = o(start + i)
                // Intra: Σ_j (q_i · k_j) D[i, j] v_j over the block (D zero above its diagonal).
                for j in 0..<c {
                    let kj = k(start + j)
                    var dot: Float = 0
                    for a in 0..<d { dot += qi[a] * kj[a] }
                    weights[j] = dot * decay.diagonal(head, row: i, column: j)
                }
                var intra = [Float](repeating: 0, count: d)
                for j in 0..<c {
                    let vj = v(start + j), w = weights[j]
                    for b in 0..<d { intra[b] += w * vj[b] }
                }
                // Inter: (q_i · qd[i]) S.
                let queryDecay = decay.query(head, row: i)
                for a in 0..<d { decayed[a] = qi[a] * queryDecay }
                for b in 0..<d { oi[b] = 0 }
                for a in 0..<d {
                    let row = s + a * d, qa = decayed[a]
                    for b in 0..<d { oi[b] += qa * row[b] }
                }
                for b in 0..<d { oi[b] += intra[b] }
            }
            // S ← S · exp(−s · c) + Σ_j (k_j · kd[size − c + j]) v_jᵀ.
            let blockDecay = exp(-slope * Float(c))
            for i in 0..<(d * d) { s[i] *= blockDecay }
            var update = [Float](repeating: 0, count: d * d)
            for j in 0..<c {
                let kj = k(start + j), vj = v(start + j), keyDecay = decay.key(head, row: j, of: c)
                for a in 0..<d {
                    let ka = kj[a] * keyDecay
                    for b in 0..<d { update[a * d + b] += ka * vj[b] }
                }
            }
            for i in 0..<(d * d) { s[i] += update[i] }
        }
    }
}

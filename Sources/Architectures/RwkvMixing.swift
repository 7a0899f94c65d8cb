import Foundation
import TensorEngine

/// RWKV's token shift (`time_shift`, a zero pad of one row at the top of
/// each sequence): every row mixed with the row before it,
/// x ⊙ mix + previous ⊙ (1 − mix), in float32 as transformers' two
/// products and their sum round it.
public struct TokenShift: Sendable {
    /// [hidden]: the row's own share (`time_mix_key`, … stored [1, 1, hidden]).
    public let mix: [Float]
    /// [hidden]: 1 − mix, as torch rounds `1 - time_mix_*`.
    let previousShare: [Float]

    public init(mix: [Float]) {
        self.mix = mix
        previousShare = mix.map { 1 - $0 }
    }

    /// The mixed rows of `x` [rows, hidden], each sequence of `sequences`
    /// shifted on its own, its first row mixed with `previous`, the row
    /// before it (nil: zeros, a sequence's start; a decoder's carried row).
    func callAsFunction(_ x: Matrix, sequences: [Range<Int>], previous: [Float]?) -> Matrix {
        let width = mix.count
        precondition(x.cols == width)
        return x.data.withUnsafeBufferPointer { xs in
            Matrix(uninitialized: x.rows, width) { out in
                precondition(previous == nil || previous!.count == width)
                for sequence in sequences {
                    for r in sequence {
                        let row = xs.baseAddress! + r * width, target = out + r * width
                        if r == sequence.lowerBound {
                            for c in 0..<width { target[c] = row[c] * mix[c] + (previous?[c] ?? 0) * previousShare[c] }
                        } else {
                            let before = row - width
                            for c in 0..<width { target[c] = row[c] * mix[c] + before[c] * previousShare[c] }
                        }
                    }
                }
            }
        }
    }
}

/// RWKV-4's time mixing, the token mixer of its blocks (transformers'
/// `RwkvSelfAttention`, its CPU path `rwkv_linear_attention_cpu`): with
/// k = key(shift_k x), v = value(shift_v x), r = σ(receptance(shift_r x)),
/// the WKV recurrence per channel, w = −exp(`time_decay`), u = `time_first`,
///
///     wkv_t = (e^{p − q} a + e^{k_t + u − q} v_t) / (e^{p − q} b + e^{k_t + u − q}),  q = max(p, k_t + u)
///     a ← e^{p + w − q'} a + e^{k_t − q'} v_t,  b ← e^{p + w − q'} b + e^{k_t − q'},  p ← q' = max(p + w, k_t)
///
/// in float32 from a = b = 0, p = −1e38 (the running maximum keeps the
/// exponentials finite); output(r ⊙ wkv). The projections need each row's
/// predecessor, so `project` passes the rows through and `mix` applies them.
public struct RwkvTimeMixing: RecurrentTokenMixer {
    public let keyShift: TokenShift, valueShift: TokenShift, receptanceShift: TokenShift
    /// [width, hidden] each (`attention_hidden_size` rows).
    public let key: Linear, value: Linear, receptance: Linear
    /// w = −exp(`time_decay`) [width].
    public let decay: [Float]
    /// u = `time_first` [width]: the current token's bonus.
    public let bonus: [Float]
    /// [hidden, width].
    public let output: Linear

    /// The start of the running maximum p (transformers' `- 1e38`).
    static let emptyMaximum: Float = -1e38

    public init(
        shifts: (key: [Float], value: [Float], receptance: [Float]), key: Linear, value: Linear, receptance: Linear,
        timeDecay: [Float], timeFirst: [Float], output: Linear
    ) {
        let width = key.outFeatures, hidden = key.inFeatures
        precondition([value.outFeatures, receptance.outFeatures, output.inFeatures, timeDecay.count, timeFirst.count].allSatisfy { $0 == width })
        precondition([value.inFeatures, receptance.inFeatures, output.outFeatures, shifts.key.count, shifts.value.count, shifts.receptance.count]
            .allSatisfy { $0 == hidden })
        keyShift = TokenShift(mix: shifts.key)
        valueShift = TokenShift(mix: shifts.value)
        receptanceShift = TokenShift(mix: shifts.receptance)
        (self.key, self.value, self.receptance, self.output) = (key, value, receptance, output)
        decay = timeDecay.map { -exp($0) }
        bonus = timeFirst
    }

    public var width: Int { key.outFeatures }
    public var hidden: Int { key.inFeatures }
    public var mixedWidth: Int { width }

    /// The rows themselves: the shifts read each row's predecessor first.
    public func project(_ x: Matrix) -> Matrix { x }

    /// history: the last input row [hidden]; recurrent: a | b | p [3 · width]
    /// (p set to −1e38 before the first token: `seen` 0).
    public func emptyState() -> RecurrentState { RecurrentState(history: hidden, recurrent: 3 * width) }

    public func finish(_ mixed: Matrix, projected: Matrix) -> Matrix { output(mixed) }

    public func mix(_ projected: Matrix, rows: Range<Int>, state: inout RecurrentState, into mixed: inout Matrix) {
        let n = rows.count, width = self.width
        guard n > 0 else { return }
        let x = projected.rows(rows), local = [0..<n], carried = state.history
        let k = key(keyShift(x, sequences: local, previous: carried))
        let v = value(valueShift(x, sequences: local, previous: carried))
        var r = receptance(receptanceShift(x, sequences: local, previous: carried))
        Activation.sigmoid.apply(inPlace: &r)
        state.history = Array(x.row(n - 1))
        if state.seen == 0 {
            for c in 0..<width { state.recurrent[2 * width + c] = Self.emptyMaximum }
        }
        state.seen += n
        let first = rows.lowerBound
        state.recurrent.withUnsafeMutableBufferPointer { s in
            k.data.withUnsafeBufferPointer { ks in
                v.data.withUnsafeBufferPointer { vs in
                    r.data.withUnsafeBufferPointer { rs in
                        mixed.data.withUnsafeMutableBufferPointer { out in
                            parallelFor(chunks: width, minimumChunk: 64) { channels in
                                for c in channels {
                                    var (a, b, p) = (s[c], s[width + c], s[2 * width + c])
                                    let (w, u) = (decay[c], bonus[c])
                                    for t in 0..<n {
                                        let kt = ks[t * width + c], vt = vs[t * width + c]
                                        let q = Swift.max(p, kt + u)
                                        let e1 = exp(p - q), e2 = exp(kt + u - q)
                                        let wkv = (e1 * a + e2 * vt) / (e1 * b + e2)
                                        out[(first + t) * width + c] = rs[t * width + c] * wkv
                                        let q2 = Swift.max(p + w, kt)
                                        let d1 = exp(p + w - q2), d2 = exp(kt - q2)
                                        a = d1 * a + d2 * vt
                                        b = d1 * b + d2
                                        p = q2
                                    }
                                    (s[c], s[width + c], s[2 * width + c]) = (a, b, p)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// RWKV-4's channel mixing, the MLP of its blocks (`RwkvFeedForward`):
/// r = σ(receptance(shift_r x)), out = r ⊙ value(relu(key(shift_k x))²).
/// Its shifts read the row before in the sequence, so decoding carries the
/// last input row from one step to the next (`TokenShiftRows`, by `layer`).
public struct RwkvChannelMixing: Sendable {
    public let keyShift: TokenShift, receptanceShift: TokenShift
    /// [intermediate, hidden].
    public let key: Linear
    /// [hidden, hidden].
    public let receptance: Linear
    /// [hidden, intermediate].
    public let value: Linear
    /// The layer it belongs to: where a decoder keeps its last input row.
    public let layer: Int

    public init(shifts: (key: [Float], receptance: [Float]), key: Linear, receptance: Linear, value: Linear, layer: Int) {
        let hidden = key.inFeatures
        precondition(receptance.inFeatures == hidden && receptance.outFeatures == hidden && value.outFeatures == hidden)
        precondition(value.inFeatures == key.outFeatures && shifts.key.count == hidden && shifts.receptance.count == hidden)
        keyShift = TokenShift(mix: shifts.key)
        receptanceShift = TokenShift(mix: shifts.receptance)
        (self.key, self.receptance, self.value, self.layer) = (key, receptance, value, layer)
    }

    /// The MLP's output for rows `x` [rows, hidden], the sequences
    /// `sequences`, each from a zero row, or, with `carried` (a decoder's),
    /// continuing the row it holds for this layer, which it then replaces
    /// by the last row.
    func callAsFunction(_ x: Matrix, sequences: [Range<Int>], carried: TokenShiftRows?) -> Matrix {
        let previous = carried?.rows[layer]
        let shiftedKeys = keyShift(x, sequences: sequences, previous: previous)
        var r = receptance(receptanceShift(x, sequences: sequences, previous: previous))
        if let carried, x.rows > 0 { carried.rows[layer] = Array(x.row(x.rows - 1)) }
        Activation.sigmoid.apply(inPlace: &r)
        var hidden = key(shiftedKeys)
        Activation.reluSquared.apply(inPlace: &hidden)
        var out = value(hidden)
        out.data.withUnsafeMutableBufferPointer { o in
            r.data.withUnsafeBufferPointer { g in
                for i in 0..<o.count { o[i] = g[i] * o[i] }
            }
        }
        return out
    }
}

/// The rows RWKV's channel mixings read as the one before a decoding
/// step's token, by layer (`RwkvChannelMixing.layer`): a decoder's, kept
/// from one step to the next; empty before a sequence's first token.
public final class TokenShiftRows: @unchecked Sendable {
    var rows: [Int: [Float]] = [:]

    public init() {}

    /// Back to a sequence's start.
    public func reset() { rows.removeAll() }
}

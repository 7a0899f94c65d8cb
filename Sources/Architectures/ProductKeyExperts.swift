import Foundation
import TensorEngine

/// Doge's cross-domain mixture of experts (transformers' `DogeCDMoE`): a
/// dense gated MLP every token goes through, plus `keys²` single-neuron
/// experts retrieved by product keys. Each expert e is a row of
/// `down_embed` and of `up_embed` [experts, hidden]; a token x's chosen
/// experts add Σ_e w_e · act(down_e · x) · up_e, w the softmax of their
/// scores over the chosen (renormalised when `norm_topk_prob`).
///
/// The router (`router_gate`, [2 · keys, hidden]) gives each token 2 · keys
/// logits; transformers views the sequence's logits [tokens, 2 · keys] as
/// [2, tokens, keys]: token t's row-half scores are the t-th and the
/// (tokens + t)-th run of `keys` logits of the sequence, in row-major order
/// (so for more than one token they mix the halves of other tokens' rows;
/// a one-token sequence, a decoding step, reads its own two halves).
/// Expert i · keys + j scores x_i + y_j; the `expertsPerToken` best are chosen.
public struct ProductKeyExperts: Sendable {
    /// The dense MLP beside the experts (`gate_proj`, `up_proj`, `down_proj`).
    public let shared: FeedForward
    public let router: Linear
    public let keys: Int
    /// [keys², hidden] each.
    public let down: [Float]
    public let up: [Float]
    public let expertsPerToken: Int
    public let activation: Activation
    /// The chosen weights are divided by their sum (`norm_topk_prob`).
    public let renormalizes: Bool

    public init(
        shared: FeedForward, router: Linear, down: [Float], up: [Float], expertsPerToken: Int, activation: Activation, renormalizes: Bool
    ) {
        let keys = router.outFeatures / 2, hidden = router.inFeatures
        precondition(router.outFeatures == 2 * keys && down.count == keys * keys * hidden && up.count == down.count)
        precondition((1...(keys * keys)).contains(expertsPerToken))
        self.shared = shared
        self.router = router
        self.keys = keys
        self.down = down
        self.up = up
        self.expertsPerToken = expertsPerToken
        self.activation = activation
        self.renormalizes = renormalizes
    }

    /// Each row's chosen experts, best first, and their weights
    /// ([rows · expertsPerToken] each), the rows routed by their sequences'.
    public func route(_ x: Matrix, sequences: [Range<Int>]) -> (experts: [Int], weights: [Float]) {
        let logits = router(x), k = expertsPerToken, keys = self.keys
        var experts = [Int](repeating: 0, count: x.rows * k)
        var weights = [Float](repeating: 0, count: x.rows * k)
        logits.data.withUnsafeBufferPointer { all in
            for sequence in sequences {
                let flat = all.baseAddress! + sequence.lowerBound * 2 * keys, count = sequence.count
                parallelFor(chunks: count, minimumChunk: 16) { tokens in
                    for t in tokens {
                        let (chosen, scores) = choose(flat + t * keys, flat + (count + t) * keys)
                        let row = (sequence.lowerBound + t) * k
                        // softmax in Float32, then the optional renormalisation, as torch computes them.
                        let maximum = scores.max()!
                        var exps = scores.map { exp($0 - maximum) }
                        let sum = exps.reduce(0, +)
                        exps = exps.map { $0 / sum }
                        if renormalizes {
                            let total = exps.reduce(0, +)
                            exps = exps.map { $0 / total }
                        }
                        for i in 0..<k {
                            experts[row + i] = chosen[i]
                            weights[row + i] = exps[i]
                        }
                    }
                }
            }
        }
        return (experts, weights)
    }

    /// The best `expertsPerToken` experts of the scores `x` and `y` (keys
    /// each), best first (equal scores: the earlier in transformers'
    /// order), and their scores.
    private func choose(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> ([Int], [Float]) {
        let keys = self.keys, k = expertsPerToken
        func sorted(_ scores: UnsafePointer<Float>) -> [Int] {
            (0..<keys).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        }
        let xs = sorted(x), ys = sorted(y)
        // Pair (i, j) of the sorted lists is beaten by every (i', j') ≤ (i, j): only (i + 1)(j + 1) ≤ k can be chosen.
        var pairs: [(score: Float, position: Int, expert: Int)] = []
        for i in 0..<min(keys, k) {
            for j in 0..<min(keys, k / (i + 1)) {
                pairs.append((x[xs[i]] + y[ys[j]], i * keys + j, xs[i] * keys + ys[j]))
            }
        }
        pairs.sort { $0.score > $1.score || ($0.score == $1.score && $0.position < $1.position) }
        let best = pairs.prefix(k)
        return (best.map(\.expert), best.map(\.score))
    }

    /// The dense MLP's output plus the chosen experts' for the rows of `x`,
    /// whose rows are the sequences `sequences`.
    public func callAsFunction(_ x: Matrix, sequences: [Range<Int>]) -> Matrix {
        var out = shared(x)
        let (experts, weights) = route(x, sequences: sequences)
        let hidden = x.cols, k = expertsPerToken
        out.data.withUnsafeMutableBufferPointer { result in
            x.data.withUnsafeBufferPointer { rows in
                down.withUnsafeBufferPointer { down in
                    up.withUnsafeBufferPointer { up in
                        parallelFor(chunks: x.rows, minimumChunk: 16) { range in
                            var mixed = [Float](repeating: 0, count: hidden)
                            for r in range {
                                let token = rows.baseAddress! + r * hidden
                                for i in 0..<hidden { mixed[i] = 0 }
                                for i in 0..<k {
                                    let e = experts[r * k + i], row = down.baseAddress! + e * hidden
                                    var dot: Float = 0
                                    for j in 0..<hidden { dot += row[j] * token[j] }
                                    let a = activation.apply(dot) * weights[r * k + i], upRow = up.baseAddress! + e * hidden
                                    for j in 0..<hidden { mixed[j] += a * upRow[j] }
                                }
                                let target = result.baseAddress! + r * hidden
                                for j in 0..<hidden { target[j] += mixed[j] }
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

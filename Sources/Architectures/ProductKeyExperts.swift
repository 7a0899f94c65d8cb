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
    /// Bit-equal rows of `x` get bit-equal logits (`EqualRowOutputs`): a
    /// token whose two halves come from equal rows (repeated tokens entering
    /// a layer whose attention was dropped) then ties experts (i, j) and
    /// (j, i) exactly, as in transformers, and torch.topk's rule chooses.
    public func route(_ x: Matrix, sequences: [Range<Int>]) -> (experts: [Int], weights: [Float]) {
        let logits = EqualRowOutputs.unified(router(x), inputs: x), k = expertsPerToken, keys = self.keys
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
    /// each) and their scores, as transformers chooses them: each half
    /// ranked by torch.topk (sorted), every pair's score x_i + y_j laid out
    /// in that order, then torch.topk of those keys² scores — so among
    /// equal scores at the cut (a zeroed or saturated router) the experts
    /// torch keeps (`TorchTopK.sortedIndices`).
    private func choose(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> ([Int], [Float]) {
        let keys = self.keys, k = expertsPerToken
        if let unique = chooseWithoutTies(x, y) { return unique }
        let xs = TorchTopK.sortedIndices(count: keys, k: keys) { x[$0] }
        let ys = TorchTopK.sortedIndices(count: keys, k: keys) { y[$0] }
        let score = { (pair: Int) -> Float in x[xs[pair / keys]] + y[ys[pair % keys]] }
        let best = TorchTopK.sortedIndices(count: keys * keys, k: k, value: score)
        return (best.map { xs[$0 / keys] * keys + ys[$0 % keys] }, best.map(score))
    }

    /// `choose`'s experts, best first, when the k-th best pair scores more
    /// than the (k + 1)-th (all scores finite): then the set is the same whatever the
    /// order of equals. Pair (i, j) of the sorted halves scores at most
    /// each (i', j') ≤ (i, j) (rounding is monotone), so the k + 1 best are
    /// among those with (i + 1)(j + 1) ≤ k + 1. Nil when the cut is tied.
    private func chooseWithoutTies(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> ([Int], [Float])? {
        let keys = self.keys, k = expertsPerToken
        guard k < keys * keys, (0..<keys).allSatisfy({ x[$0].isFinite && y[$0].isFinite }) else { return nil }
        let xs = (0..<keys).sorted { x[$0] > x[$1] }, ys = (0..<keys).sorted { y[$0] > y[$1] }
        var pairs: [(score: Float, expert: Int)] = []
        for i in 0..<min(keys, k + 1) {
            for j in 0..<min(keys, (k + 1) / (i + 1)) {
                pairs.append((x[xs[i]] + y[ys[j]], xs[i] * keys + ys[j]))
            }
        }
        pairs.sort { $0.score > $1.score }
        guard pairs.count > k, pairs[k - 1].score > pairs[k].score else { return nil }
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

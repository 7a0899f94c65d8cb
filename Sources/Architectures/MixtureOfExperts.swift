import Foundation
import TensorEngine

/// A sparse mixture-of-experts MLP (Mixtral): a linear router scores every
/// expert per token, the token goes to its top-k experts, and their outputs
/// are summed with the router's renormalised probabilities as weights.
///
/// Tokens are grouped by expert, so each expert runs one GEMM over exactly
/// the rows routed to it.
public struct MixtureOfExperts: Sendable {
    /// [experts, hidden]: one logit per expert.
    public let router: Linear
    /// Each a gated MLP (SwiGLU for Mixtral).
    public let experts: [FeedForward]
    public let expertsPerToken: Int
    /// How `route` turns router logits into expert weights.
    public let weighting: RouterWeighting

    /// How a token's router logits become its experts' weights.
    public enum RouterWeighting: Sendable {
        /// Softmax over all experts, the top k, renormalised to sum to 1 (Mixtral).
        case softmaxThenTopK
        /// The k largest logits, then a softmax over those k only (gpt-oss's
        /// `GptOssTopKRouter`): the same weights as `softmaxThenTopK` up to
        /// rounding, computed as transformers does.
        case topKThenSoftmax
    }

    public init(router: Linear, experts: [FeedForward], expertsPerToken: Int, weighting: RouterWeighting = .softmaxThenTopK) {
        precondition(router.outFeatures == experts.count && (1...experts.count).contains(expertsPerToken))
        self.router = router
        self.experts = experts
        self.expertsPerToken = expertsPerToken
        self.weighting = weighting
    }

    /// Each token's chosen experts, best first, and their weights.
    public struct Routing: Sendable {
        /// Row r's experts are `experts[r * k ..< (r + 1) * k]`.
        public let experts: [Int]
        public let weights: [Float]
        public let expertsPerToken: Int
    }

    /// Softmax over the router logits, the k most probable experts, and their
    /// probabilities divided by their sum (as transformers routes Mixtral).
    public func route(_ x: Matrix) -> Routing {
        let logits = router(x)
        if weighting == .topKThenSoftmax { return softmaxOverTopLogits(logits) }
        let count = experts.count, k = expertsPerToken
        var chosen = [Int](repeating: 0, count: x.rows * k)
        var weights = [Float](repeating: 0, count: x.rows * k)
        logits.data.withUnsafeBufferPointer { scores in
            for r in 0..<x.rows {
                let row = scores.baseAddress! + r * count
                var maximum = -Float.infinity
                for e in 0..<count { maximum = max(maximum, row[e]) }
                var probabilities = (0..<count).map { exp(row[$0] - maximum) }
                let sum = probabilities.reduce(0, +)
                for e in 0..<count { probabilities[e] /= sum }
                // Highest probability first; equal ones keep the lower index.
                let top = (0..<count).sorted { probabilities[$0] > probabilities[$1] || (probabilities[$0] == probabilities[$1] && $0 < $1) }
                    .prefix(k)
                let total = top.reduce(Float(0)) { $0 + probabilities[$1] }
                for (slot, e) in top.enumerated() {
                    chosen[r * k + slot] = e
                    weights[r * k + slot] = probabilities[e] / total
                }
            }
        }
        return Routing(experts: chosen, weights: weights, expertsPerToken: k)
    }

    /// Each row's k largest logits (highest first; equal ones keep the lower
    /// index, as torch.topk on CPU) and the softmax over just those k.
    func softmaxOverTopLogits(_ logits: Matrix) -> Routing {
        let count = experts.count, k = expertsPerToken
        var chosen = [Int](repeating: 0, count: logits.rows * k)
        var weights = [Float](repeating: 0, count: logits.rows * k)
        logits.data.withUnsafeBufferPointer { scores in
            for r in 0..<logits.rows {
                let row = scores.baseAddress! + r * count
                let top = (0..<count).sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(k)
                // Shifted by the largest logit (the first): exp(0) = 1 keeps the sum finite.
                guard let best = top.first else { continue }
                let exps = top.map { exp(row[$0] - row[best]) }
                let total = exps.reduce(0, +)
                for (slot, e) in top.enumerated() {
                    chosen[r * k + slot] = e
                    weights[r * k + slot] = exps[slot] / total
                }
            }
        }
        return Routing(experts: chosen, weights: weights, expertsPerToken: k)
    }

    public func callAsFunction(_ x: Matrix) -> Matrix {
        let routing = route(x)
        let k = expertsPerToken, width = x.cols
        var output = Matrix(zeros: x.rows, width)
        // Experts in index order, each adding its weighted output to its
        // tokens' rows: the order in which transformers accumulates them.
        for (e, expert) in experts.enumerated() {
            var rows: [Int] = []
            var rowWeights: [Float] = []
            for r in 0..<x.rows {
                for slot in 0..<k where routing.experts[r * k + slot] == e {
                    rows.append(r)
                    rowWeights.append(routing.weights[r * k + slot])
                }
            }
            if rows.isEmpty { continue }
            let gathered = Matrix(uninitialized: rows.count, width) { out in
                x.data.withUnsafeBufferPointer { source in
                    for (i, r) in rows.enumerated() {
                        (out + i * width).update(from: source.baseAddress! + r * width, count: width)
                    }
                }
            }
            let expertOutput = expert(gathered)
            output.data.withUnsafeMutableBufferPointer { target in
                expertOutput.data.withUnsafeBufferPointer { source in
                    for (i, r) in rows.enumerated() {
                        let weight = rowWeights[i]
                        let from = source.baseAddress! + i * width, to = target.baseAddress! + r * width
                        for j in 0..<width { to[j] += from[j] * weight }
                    }
                }
            }
        }
        return output
    }
}

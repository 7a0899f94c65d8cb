import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// A sparse mixture-of-experts MLP (Mixtral, Qwen3-MoE, OLMoE): a linear
/// router scores every expert per token, the token goes to its top-k experts,
/// and their outputs are summed, weighted as the routing rule says.
///
/// Tokens are grouped by expert, so each expert runs one GEMM over exactly
/// the rows routed to it.
public struct MixtureOfExperts: Sendable {
    /// [experts, hidden]: one logit per expert.
    public let router: Linear
    /// Each a gated MLP (SwiGLU for Mixtral).
    public let experts: [FeedForward]
    public let expertsPerToken: Int
    /// How router logits become each token's experts and weights.
    public let rule: RoutingRule

    /// How a router's logits [tokens, experts] choose each token's experts
    /// and their weights. All rules run in Float32, as transformers computes
    /// the router softmax in float32 whatever the weights' dtype.
    public enum RoutingRule: Sendable {
        /// Softmax over all experts, the k most probable, and as weights
        /// their probabilities, divided by their sum when `renormalize`
        /// (transformers: Mixtral always; Qwen3-MoE and OLMoE when
        /// `norm_topk_prob`, whose top-k weights otherwise sum to less than 1).
        case softmaxTopK(renormalize: Bool)
        /// The k largest logits, then a softmax over those k only (gpt-oss's
        /// `GptOssTopKRouter`): the same weights as renormalised `softmaxTopK`
        /// up to rounding, computed as transformers does.
        case topKThenSoftmax
        /// Experts chosen within the best groups, weighted by their
        /// unbiased scores (DeepSeek-V2/V3; see `GroupLimitedTopK`).
        case groupLimited(GroupLimitedTopK)
        /// The k largest logits, each weighted by its own sigmoid, not
        /// normalised (Llama 4's `Llama4Router`).
        case sigmoidOfTopK
        /// The k largest logits, each weighted by its sigmoid divided by
        /// the sum of the k sigmoids (Cohere2-MoE's sigmoid router with
        /// `norm_topk_prob`).
        case normalizedSigmoidOfTopK
        /// PhiMoE's `sparsemixer` as transformers runs it in eval mode:
        /// always two experts. The first is the largest logit m, weighted
        /// by its softmax probability over the logits within the jitter
        /// band — x is left out (−∞) where (m − x) / max(|x|, m) >
        /// 2 · `jitterEps` (`router_jitter_noise`); the second is the
        /// largest of the other logits, m₂, weighted likewise over the
        /// others within m₂'s band.
        case sparseMixer(jitterEps: Double)
        /// Softmax over all experts, the k most probable, and their
        /// probabilities divided by their p-norm (Σ|w|^p)^(1/p) (DBRX's
        /// `moe_normalize_expert_weights`; p = 1 is `softmaxTopK(renormalize: true)`
        /// as torch.norm computes it).
        case softmaxTopKOverPNorm(p: Double)
        /// Each token's experts read from a table by its token id (DeepSeek-V4's
        /// `DeepseekV4HashRouter`), weighted as `TokenHashedRouting` says.
        case tokenHashed(TokenHashedRouting)
    }

    /// Whether the routing reads the rows' tokens.
    public var routesByToken: Bool {
        if case .tokenHashed = rule { true } else { false }
    }
    /// The routing weight multiplies each expert's input rather than its
    /// output (Llama 4's experts take x · weight); with a nonlinear expert
    /// the two differ.
    public let weightsScaleInput: Bool
    /// Experts every token goes through, added after the routed ones
    /// (DeepSeek's `shared_experts`, stored as one wider MLP).
    public let sharedExperts: [FeedForward]
    /// [1, hidden]: when present, the shared experts' output is multiplied
    /// per token by sigmoid of this projection of the token before it is
    /// added (Qwen2-MoE's `shared_expert_gate`).
    public let sharedExpertGate: Linear?
    /// When present, the router reads its input normalised by this first
    /// (Gemma 4's `Gemma4TextRouter`).
    public let routerNorm: RouterNorm?
    /// When present, each chosen expert's routing weight, after the rule
    /// made it, times this expert's entry (Gemma 4's `per_expert_scale`).
    public let expertScales: [Float]?
    /// The routed and shared experts' outputs are averaged, (routed +
    /// shared) / 2, not summed (Cohere2-MoE's
    /// `shared_expert_combination_strategy: "average"`).
    public let averagesShared: Bool
    /// When present, the routed experts work in a narrower latent space:
    /// their input is `down` of the token, their weighted sum goes back
    /// through `up` (Nemotron-H's `fc1_latent_proj` / `fc2_latent_proj`,
    /// `moe_latent_size`); the router and the shared experts read the token.
    public let latent: LatentProjection?
    /// [hidden]: added to every token's output last, whichever experts it
    /// went to (JetMoE's `mlp.bias`); nil for none.
    public let outputBias: [Float]?
    /// Experts the router scores after the `experts` that compute nothing:
    /// a token routed to one gets its own input back, times the weight
    /// (LongCat-Flash's `zero_expert_num` zero-computation experts). Their
    /// weighted inputs, the weights summed in the token's routing order,
    /// join the routed experts' sum last, as LongcatFlashMoE adds them.
    public let identityExperts: Int

    /// The routed experts' way into and out of their latent space.
    public struct LatentProjection: Sendable {
        /// [latent, hidden].
        public let down: Linear
        /// Normalises `down`'s output (Muse Spark's `pre_expert_norm`, [latent]); nil for none.
        public let downNorm: Normalization?
        /// [hidden, latent].
        public let up: Linear

        public init(down: Linear, downNorm: Normalization? = nil, up: Linear) {
            precondition(down.outFeatures == up.inFeatures && down.inFeatures == up.outFeatures)
            self.down = down
            self.downNorm = downNorm
            self.up = up
        }

        /// The experts' input [rows, latent] from the tokens [rows, hidden].
        func enter(_ x: Matrix) -> Matrix {
            let projected = down(x)
            return downNorm.map { $0(projected) } ?? projected
        }
    }

    /// The router's own input norm: RMSNorm without a weight, then times
    /// `scale` and times `rootScale` (Gemma 4: hidden_size^-0.5), each a
    /// Float32 product, as transformers computes them.
    public struct RouterNorm: Sendable {
        public let eps: Float
        public let scale: [Float]
        public let rootScale: Float

        public init(eps: Float, scale: [Float], rootScale: Float) {
            self.eps = eps
            self.scale = scale
            self.rootScale = rootScale
        }

        public func callAsFunction(_ x: Matrix) -> Matrix {
            var normed = Normalization.weightlessRMS(size: scale.count, eps: eps)(x)
            let width = scale.count
            normed.data.withUnsafeMutableBufferPointer { values in
                for r in 0..<x.rows {
                    for j in 0..<width { values[r * width + j] = values[r * width + j] * scale[j] * rootScale }
                }
            }
            return normed
        }
    }

    public init(
        router: Linear, experts: [FeedForward], expertsPerToken: Int, rule: RoutingRule = .softmaxTopK(renormalize: true),
        sharedExperts: [FeedForward] = [], sharedExpertGate: Linear? = nil, weightsScaleInput: Bool = false,
        routerNorm: RouterNorm? = nil, expertScales: [Float]? = nil, averagesShared: Bool = false,
        latent: LatentProjection? = nil, outputBias: [Float]? = nil, identityExperts: Int = 0
    ) {
        precondition(router.outFeatures == experts.count + identityExperts && (1...router.outFeatures).contains(expertsPerToken))
        if identityExperts > 0 {
            guard case .groupLimited = rule else { preconditionFailure("identity experts are routed by GroupLimitedTopK only") }
            precondition(latent == nil && sharedExperts.isEmpty && expertScales == nil && !weightsScaleInput)
        }
        self.identityExperts = identityExperts
        if case .sparseMixer = rule { precondition(expertsPerToken == 2) }
        precondition(sharedExpertGate == nil || (sharedExpertGate!.outFeatures == 1 && !sharedExperts.isEmpty))
        precondition(routerNorm == nil || routerNorm!.scale.count == router.inFeatures)
        precondition(expertScales == nil || expertScales!.count == experts.count)
        precondition(latent == nil || latent!.down.inFeatures == router.inFeatures)
        precondition(outputBias == nil || outputBias!.count == (latent?.up.outFeatures ?? router.inFeatures))
        self.latent = latent
        self.outputBias = outputBias
        self.routerNorm = routerNorm
        self.expertScales = expertScales
        self.averagesShared = averagesShared
        self.router = router
        self.experts = experts
        self.expertsPerToken = expertsPerToken
        self.rule = rule
        self.sharedExperts = sharedExperts
        self.sharedExpertGate = sharedExpertGate
        self.weightsScaleInput = weightsScaleInput
    }

    /// Each token's chosen experts, best first, and their weights.
    public struct Routing: Sendable {
        /// Row r's experts are `experts[r * k ..< (r + 1) * k]`.
        public let experts: [Int]
        public let weights: [Float]
        public let expertsPerToken: Int
    }

    /// Each row of `x` [tokens, hidden] routed by `rule` (normalised first
    /// by `routerNorm`, the weights scaled after by `expertScales`).
    public func route(_ x: Matrix, tokenIDs: [Int]? = nil) -> Routing {
        let x = routerNorm.map { $0(x) } ?? x
        let routing: Routing = switch rule {
        case .tokenHashed(let rule): rule.route(router(x), tokenIDs: tokenIDs!, expertsPerToken: expertsPerToken)
        case .softmaxTopK(let renormalize): softmaxTopK(x, renormalize: renormalize)
        case .topKThenSoftmax: softmaxOverTopLogits(router(x))
        case .groupLimited(let rule): rule.route(router(x), expertsPerToken: expertsPerToken)
        case .sigmoidOfTopK: sigmoidOfTopLogits(router(x))
        case .normalizedSigmoidOfTopK: sigmoidOfTopLogits(router(x), normalize: true)
        case .sparseMixer(let jitterEps): sparseMixer(router(x), jitterEps: jitterEps)
        case .softmaxTopKOverPNorm(let p): softmaxTopK(x, renormalize: true, pNorm: p)
        }
        guard let expertScales else { return routing }
        return Routing(
            experts: routing.experts, weights: zip(routing.weights, routing.experts).map { $0 * expertScales[$1] },
            expertsPerToken: routing.expertsPerToken)
    }

    /// `sparsemixer` in eval mode, in Float32 as torch computes it: for each
    /// of two picks, the largest remaining logit (equal ones: the lower
    /// index, as torch.max on CPU), and its probability in the softmax over
    /// the remaining logits its band keeps. The band of threshold t keeps x
    /// unless (t − x) / max(|x|, t) > 2 · `jitterEps` (a NaN quotient, 0 / 0,
    /// keeps it). The second pick measures every other logit against the
    /// second-largest; the first pick is out of it whatever its band says.
    func sparseMixer(_ logits: Matrix, jitterEps: Double) -> Routing {
        let count = experts.count
        // torch compares the float32 quotient with the Python float 2·eps cast to float32.
        let band = Float(2 * jitterEps)
        var chosen = [Int](repeating: 0, count: logits.rows * 2)
        var weights = [Float](repeating: 0, count: logits.rows * 2)
        logits.data.withUnsafeBufferPointer { scores in
            for r in 0..<logits.rows {
                let row = scores.baseAddress! + r * count
                var excluded: Int? = nil
                for pick in 0..<2 {
                    // The largest logit not yet chosen, the first of equal ones.
                    var best = -1
                    for e in 0..<count where e != excluded && (best < 0 || row[e] > row[best]) { best = e }
                    let threshold = row[best]
                    var kept = [Float](repeating: -.infinity, count: count)
                    for e in 0..<count where e != excluded {
                        let factor = max(abs(row[e]), threshold)
                        if !((threshold - row[e]) / factor > band) { kept[e] = row[e] }
                    }
                    // Softmax over the kept logits (the chosen one among them: its quotient is 0).
                    let top = kept.max() ?? -.infinity
                    var total: Float = 0
                    for e in 0..<count { total += exp(kept[e] - top) }
                    chosen[r * 2 + pick] = best
                    weights[r * 2 + pick] = exp(kept[best] - top) / total
                    excluded = best
                }
            }
        }
        return Routing(experts: chosen, weights: weights, expertsPerToken: 2)
    }

    /// Each row's k largest logits (highest first; of equal ones, those
    /// torch.topk keeps on CPU, `TorchTopK`), each weighted σ(logit) = 1 / (1 + e^(−logit)),
    /// divided by the k weights' sum when `normalize`.
    func sigmoidOfTopLogits(_ logits: Matrix, normalize: Bool = false) -> Routing {
        let count = experts.count, k = expertsPerToken
        var chosen = [Int](repeating: 0, count: logits.rows * k)
        var weights = [Float](repeating: 0, count: logits.rows * k)
        logits.data.withUnsafeBufferPointer { scores in
            for r in 0..<logits.rows {
                let row = scores.baseAddress! + r * count
                let top = TorchTopK.indices(count: count, k: k) { row[$0] }
                let sigmoids = top.map { 1 / (1 + exp(-row[$0])) }
                let total = normalize ? sigmoids.reduce(Float(0), +) : 1
                for (slot, e) in top.enumerated() {
                    chosen[r * k + slot] = e
                    weights[r * k + slot] = sigmoids[slot] / total
                }
            }
        }
        return Routing(experts: chosen, weights: weights, expertsPerToken: k)
    }

    /// The softmax of a router row's `count` logits in Float32: exp(l − max)
    /// over their sum, summed in order.
    static func softmax(_ row: UnsafePointer<Float>, count: Int) -> [Float] {
        var maximum = -Float.infinity
        for e in 0..<count { maximum = max(maximum, row[e]) }
        var probabilities = (0..<count).map { exp(row[$0] - maximum) }
        let sum = probabilities.reduce(0, +)
        for e in 0..<count { probabilities[e] /= sum }
        return probabilities
    }

    /// Softmax over the router logits, the k most probable experts, and their
    /// probabilities, divided by their sum when `renormalize` (by their
    /// p-norm when `pNorm` is given, in Float32 as torch.norm computes it).
    func softmaxTopK(_ x: Matrix, renormalize: Bool, pNorm: Double? = nil) -> Routing {
        let logits = router(x)
        let count = experts.count, k = expertsPerToken
        var chosen = [Int](repeating: 0, count: x.rows * k)
        var weights = [Float](repeating: 0, count: x.rows * k)
        logits.data.withUnsafeBufferPointer { scores in
            for r in 0..<x.rows {
                let probabilities = Self.softmax(scores.baseAddress! + r * count, count: count)
                // Highest probability first; of equal ones, those torch.topk keeps.
                let top = TorchTopK.indices(count: count, k: k) { probabilities[$0] }
                let total: Float
                if let pNorm, pNorm != 1 {
                    if pNorm == 2 {
                        total = top.reduce(Float(0)) { $0 + probabilities[$1] * probabilities[$1] }.squareRoot()
                    } else {
                        let p = Float(pNorm)
                        total = pow(top.reduce(Float(0)) { $0 + pow(abs(probabilities[$1]), p) }, 1 / p)
                    }
                } else {
                    total = renormalize ? top.reduce(Float(0)) { $0 + probabilities[$1] } : 1
                }
                for (slot, e) in top.enumerated() {
                    chosen[r * k + slot] = e
                    weights[r * k + slot] = probabilities[e] / total
                }
            }
        }
        return Routing(experts: chosen, weights: weights, expertsPerToken: k)
    }

    /// Each row's k largest logits (highest first; of equal ones, those
    /// torch.topk keeps on CPU, `TorchTopK`) and the softmax over just those k.
    func softmaxOverTopLogits(_ logits: Matrix) -> Routing {
        Self.softmaxOverTopLogits(logits, expertsPerToken: expertsPerToken)
    }

    /// `softmaxOverTopLogits` of logits [tokens, experts] choosing `k` per
    /// token, for routers that choose among other things than MLPs (JetMoE's
    /// attention experts, `AttentionHeadExperts`).
    static func softmaxOverTopLogits(_ logits: Matrix, expertsPerToken k: Int) -> Routing {
        let count = logits.cols
        var chosen = [Int](repeating: 0, count: logits.rows * k)
        var weights = [Float](repeating: 0, count: logits.rows * k)
        logits.data.withUnsafeBufferPointer { scores in
            for r in 0..<logits.rows {
                let row = scores.baseAddress! + r * count
                let top = TorchTopK.indices(count: count, k: k) { row[$0] }
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

    public func callAsFunction(_ x: Matrix) -> Matrix { callAsFunction(x, routerInput: x) }

    /// The experts over the rows of `x`, each row routed by the same row of
    /// `routerInput` (Gemma 4 routes the stream before the experts' input norm).
    public func callAsFunction(_ x: Matrix, routerInput: Matrix, tokenIDs: [Int]? = nil) -> Matrix {
        precondition(routerInput.rows == x.rows && (!routesByToken || tokenIDs?.count == x.rows))
        let routing = route(routerInput, tokenIDs: tokenIDs)
        let k = expertsPerToken
        var output = Self.dispatch(latent.map { $0.enter(x) } ?? x, to: experts, routing: routing, weightsScaleInput: weightsScaleInput)
        if identityExperts > 0 {
            let count = experts.count, hidden = x.cols
            output.data.withUnsafeMutableBufferPointer { target in
                x.data.withUnsafeBufferPointer { source in
                    for r in 0..<x.rows {
                        var weight: Float = 0
                        for slot in 0..<k where routing.experts[r * k + slot] >= count { weight += routing.weights[r * k + slot] }
                        guard weight != 0 else { continue }
                        for j in 0..<hidden { target[r * hidden + j] += source[r * hidden + j] * weight }
                    }
                }
            }
        }
        if let latent { output = latent.up(output) }
        for shared in sharedExperts {
            var sharedOutput = shared(x)
            if let gate = sharedExpertGate {
                // One gate value per token, σ(g · x), scaling that token's whole row.
                let gates = gate(x).data
                let hidden = x.cols
                sharedOutput.data.withUnsafeMutableBufferPointer { values in
                    for r in 0..<x.rows {
                        let g = 1 / (1 + exp(-gates[r]))
                        for j in 0..<hidden { values[r * hidden + j] *= g }
                    }
                }
            }
            output.add(sharedOutput)
        }
        if averagesShared, !sharedExperts.isEmpty { output = output.scaled(by: 0.5) }
        if let outputBias { output.addToEachRow(outputBias) }
        return output
    }

    /// The rows of `routed` through the experts `routing` chose for them,
    /// each output times its weight (each input, `weightsScaleInput`), summed
    /// per row; a row routed to an index past `experts` gets nothing from it.
    static func dispatch(_ routed: Matrix, to experts: [FeedForward], routing: Routing, weightsScaleInput: Bool = false) -> Matrix {
        let k = routing.expertsPerToken, width = routed.cols
        var output = Matrix(zeros: routed.rows, width)
        // Experts in index order, each adding its weighted output to its
        // tokens' rows: the order in which transformers accumulates them.
        for (e, expert) in experts.enumerated() {
            var rows: [Int] = []
            var rowWeights: [Float] = []
            for r in 0..<routed.rows {
                for slot in 0..<k where routing.experts[r * k + slot] == e {
                    rows.append(r)
                    rowWeights.append(routing.weights[r * k + slot])
                }
            }
            if rows.isEmpty { continue }
            let gathered = Matrix(uninitialized: rows.count, width) { out in
                routed.data.withUnsafeBufferPointer { source in
                    for (i, r) in rows.enumerated() {
                        let to = out + i * width, from = source.baseAddress! + r * width
                        if weightsScaleInput {
                            let weight = rowWeights[i]
                            for j in 0..<width { to[j] = from[j] * weight }
                        } else {
                            to.update(from: from, count: width)
                        }
                    }
                }
            }
            let expertOutput = expert(gathered)
            output.data.withUnsafeMutableBufferPointer { target in
                expertOutput.data.withUnsafeBufferPointer { source in
                    for (i, r) in rows.enumerated() {
                        let from = source.baseAddress! + i * width, to = target.baseAddress! + r * width
                        if weightsScaleInput {
                            for j in 0..<width { to[j] += from[j] }
                        } else {
                            let weight = rowWeights[i]
                            for j in 0..<width { to[j] += from[j] * weight }
                        }
                    }
                }
            }
        }
        return output
    }
}

extension Matrix {
    /// Adds `vector` [cols] to every row (a bias added after a sum of
    /// expert outputs, as torch broadcasts it).
    mutating func addToEachRow(_ vector: [Float]) {
        precondition(vector.count == cols)
        let (rows, cols) = (rows, cols)
        data.withUnsafeMutableBufferPointer { values in
            for r in 0..<rows {
                for j in 0..<cols { values[r * cols + j] += vector[j] }
            }
        }
    }
}

extension Weights {
    /// The `count` gated experts of one sparse MLP, in whichever form the
    /// checkpoint stores them:
    /// - fused, `<fused>gate_up_proj` [count, 2·inner, hidden] (each
    ///   expert's gate rows, then its up rows) and `<fused>down_proj`
    ///   [count, hidden, inner] — transformers' 3-D expert parameters;
    /// - else per expert, `<perExpert><e>.<gate|up|down>.weight`
    ///   ([inner, hidden], [inner, hidden], [hidden, inner]) — what
    ///   `save_pretrained` writes.
    /// - Throws: `DroptraceError` for a missing tensor or a shape the sizes contradict.
    func gatedExperts(
        fused: String, perExpert: String, names: (gate: String, up: String, down: String),
        count: Int, hidden d: Int, inner: Int, activation: Activation, transposedToo: Bool = false
    ) throws -> [FeedForward] {
        guard hasFusedExperts(fused) else {
            return try (0..<count).map { e in
                try gatedMLP(perExpert + "\(e).", hidden: d, inner: inner, activation: activation, names: names)
            }
        }
        return try fusedGatedExperts(
            gateUp: fused + "gate_up_proj", down: fused + "down_proj", count: count, hidden: d, inner: inner, activation: activation,
            transposedToo: transposedToo)
    }

    /// `count` gated experts stored as two 3-D tensors: `gateUp` [count,
    /// 2·inner, hidden] (each expert's gate rows, then its up rows) and
    /// `down` [count, hidden, inner], whatever their names (transformers'
    /// `gate_up_proj` / `down_proj`, GraniteMoE's `input_linear` / `output_linear`);
    /// with `transposedToo`, either may be stored with its last two axes
    /// swapped (`expertMatrices`).
    func fusedGatedExperts(
        gateUp gateUpName: String, down downName: String, count: Int, hidden d: Int, inner: Int, activation: Activation,
        transposedToo: Bool = false
    ) throws -> [FeedForward] {
        let gateUp = Self.expertLinears(
            try expertMatrices(gateUpName, [count, 2 * inner, d], transposedToo: transposedToo), count: count, in: d, out: 2 * inner)
        let down = Self.expertLinears(
            try expertMatrices(downName, [count, d, inner], transposedToo: transposedToo), count: count, in: inner, out: d)
        return zip(gateUp, down).map { .gated(gateUp: $0, down: $1, activation: activation) }
    }

    /// `count` gated experts stored as two 3-D tensors whose projections are
    /// [in, out] (the layout grouped matrix products take): `gateUp` [count,
    /// hidden, 2·inner] (gate columns, then up) and `down` [count, inner,
    /// hidden] (Llama 4's `gate_up_proj` / `down_proj`, Aria's `fc1` / `fc2`).
    func inByOutGatedExperts(
        gateUp gateUpName: String, down downName: String, count: Int, hidden d: Int, inner: Int, activation: Activation
    ) throws -> [FeedForward] {
        let gateUp = Self.expertLinears(try floats(gateUpName, [count, d, 2 * inner]), count: count, in: d, out: 2 * inner, layout: .inByOut)
        let down = Self.expertLinears(try floats(downName, [count, inner, d]), count: count, in: inner, out: d, layout: .inByOut)
        return zip(gateUp, down).map { .gated(gateUp: $0, down: $1, activation: activation) }
    }

    /// One bias-free Linear per expert of a fused tensor's values, [`count`,
    /// `out`, `in`] (or [`count`, `in`, `out`] with `layout` `.inByOut`, Llama 4's).
    static func expertLinears(
        _ values: [Float], count: Int, in inFeatures: Int, out outFeatures: Int, layout: Linear.Layout = .outByIn
    ) -> [Linear] {
        let size = inFeatures * outFeatures
        return (0..<count).map { e in
            Linear(
                weight: Array(values[(e * size)..<((e + 1) * size)]), bias: nil, inFeatures: inFeatures, outFeatures: outFeatures,
                layout: layout)
        }
    }

    /// Whether the experts under `fused` are stored as 3-D tensors.
    func hasFusedExperts(_ fused: String) -> Bool { has(fused + "gate_up_proj") }

    /// The `count` ungated experts under `experts` (Nemotron-H's
    /// `mixer.experts.`), each down(act(up x)) without biases: fused,
    /// `<experts>up_proj` [count, inner, width] and `<experts>down_proj`
    /// [count, width, inner] (transformers' parameters), else per expert,
    /// `<experts><e>.up_proj.weight` [inner, width] and `down_proj.weight`
    /// [width, inner], as `save_pretrained` writes them.
    /// - Throws: `DroptraceError` for a missing tensor or a shape the sizes contradict.
    func plainExperts(_ experts: String, count: Int, width: Int, inner: Int, activation: Activation) throws -> [FeedForward] {
        guard has(experts + "up_proj") else {
            return try (0..<count).map { e in
                .plain(
                    up: try linear(experts + "\(e).up_proj", in: width, out: inner, bias: false),
                    down: try linear(experts + "\(e).down_proj", in: inner, out: width, bias: false), activation: activation)
            }
        }
        let up = Self.expertLinears(try floats(experts + "up_proj", [count, inner, width]), count: count, in: width, out: inner)
        let down = Self.expertLinears(try floats(experts + "down_proj", [count, width, inner]), count: count, in: inner, out: width)
        return zip(up, down).map { .plain(up: $0, down: $1, activation: activation) }
    }

    /// The 3-D tensor `name` as `shape` [count, rows, columns]; with
    /// `transposedToo`, one stored as [count, columns, rows] is transposed
    /// per expert, as transformers' `Transpose(1, 2, check_dims=True)` does
    /// to a tensor whose shape is not its parameter's (Qwen3-VL-MoE's released experts).
    func expertMatrices(_ name: String, _ shape: [Int], transposedToo: Bool) throws -> [Float] {
        let swapped = [shape[0], shape[2], shape[1]]
        guard transposedToo, has(name), shape != swapped, try storedShape(name) == swapped else { return try floats(name, shape) }
        let stored = try floats(name, swapped), (rows, columns) = (shape[1], shape[2])
        var values = [Float](repeating: 0, count: stored.count)
        for e in 0..<shape[0] {
            let base = e * rows * columns
            for c in 0..<columns {
                for r in 0..<rows { values[base + r * columns + c] = stored[base + c * rows + r] }
            }
        }
        return values
    }
}

extension Weights {
    /// The sparse MLP under `mlp` (e.g. "layers.3.mlp.") as Qwen-MoE and
    /// OLMoE name it: router `<mlp>gate.weight` [count, hidden] choosing by
    /// `rule`, and gated experts under `<mlp>experts.` (`gate_proj` /
    /// `up_proj` / `down_proj` per expert, or fused; see `gatedExperts`).
    func routedExperts(
        _ mlp: String, count: Int, expertsPerToken: Int, hidden d: Int, inner: Int, activation: Activation,
        rule: MixtureOfExperts.RoutingRule, transposedToo: Bool = false
    ) throws -> MixtureOfExperts {
        MixtureOfExperts(
            router: try linear(mlp + "gate", in: d, out: count, bias: false),
            experts: try gatedExperts(
                fused: mlp + "experts.", perExpert: mlp + "experts.", names: ("gate_proj", "up_proj", "down_proj"),
                count: count, hidden: d, inner: inner, activation: activation, transposedToo: transposedToo),
            expertsPerToken: expertsPerToken, rule: rule)
    }
}

extension MixtureOfExperts {
    /// Refuses a `num_experts_per_tok` (or the family's `key`) outside
    /// 1...experts (`expertsKey` names the expert count's key).
    static func checkExpertsPerToken(_ k: Int, of experts: Int, expertsKey: String, key: String = "num_experts_per_tok") throws {
        guard experts >= 1, (1...experts).contains(k) else {
            throw InvalidConfigValue(key: key, problem: "must be between 1 and \(expertsKey) \(experts), got \(k)")
        }
    }
}

/// Where a family's sparse layers store their experts, so that
/// `Weights.confirmLayers` checks the stored expert tensors against the
/// config as it checks the stored layers. transformers 5 collects a layer's
/// per-expert tensors `<part><e>.<projection>.weight` into its fused 3-D
/// parameters `mlp.experts.gate_up_proj` / `down_proj` (its conversion
/// mapping), so it refuses an expert index past the expert count (the
/// collected tensor has the wrong shape) and a layer holding both forms;
/// on a dense layer the same names are unexpected keys, which it ignores.
struct ExpertNaming {
    /// Name parts after "<layer prefix><index>." under which experts are
    /// stored, e.g. "mlp.experts.".
    var parts: [String]
    /// The per-expert projections transformers collects ("gate_proj", "up_proj", "down_proj").
    var projections: [String]
    /// The configured expert count and the config key that gives it.
    var count: Int
    var countKey: String
    /// How many experts each layer stores per expert where that is not
    /// `count`, and what they are (ERNIE 4.5 VL's released checkpoints
    /// store the text experts, then as many vision experts: 2 × count).
    var stored: (count: Int, description: String)?
    /// Whether layer `index` has experts (others have a dense MLP).
    var isSparse: (Int) -> Bool
    /// transformers' fused expert parameters under each part: gated experts'
    /// `gate_up_proj` and `down_proj`, ungated ones' `up_proj` and `down_proj`.
    var fusedNames: Set<Substring> = ["gate_up_proj", "down_proj"]
    /// A gated expert's projections as `save_pretrained` writes most families'.
    static let gatedNames = (gate: "gate_proj", up: "up_proj", down: "down_proj")

    /// `mlp.experts.<e>.{gate,up,down}_proj.weight`, as Qwen-MoE, OLMoE and
    /// DeepSeek store their experts.
    static func gatedMLP(count: Int, countKey: String, isSparse: @escaping (Int) -> Bool) -> ExpertNaming {
        ExpertNaming(
            parts: ["mlp.experts."], projections: ["gate_proj", "up_proj", "down_proj"], count: count, countKey: countKey,
            isSparse: isSparse)
    }

    /// How a tensor stores experts.
    enum Form: Equatable {
        case fused
        /// One expert's projection; nil for an index too large for `Int`.
        /// `padded`: the index is written with leading zeros (`experts.01.`).
        case perExpert(index: Int?, padded: Bool)
    }

    /// How the tensor named `rest` after its layer's "<prefix><index>."
    /// stores experts; nil for any other tensor (transformers converts
    /// only these names).
    func form(of rest: String) -> Form? {
        for part in parts where rest.hasPrefix(part) {
            let tail = rest.dropFirst(part.count)
            if fusedNames.contains(tail) { return .fused }
            let pieces = tail.split(separator: ".", omittingEmptySubsequences: false)
            guard pieces.count == 3, !pieces[0].isEmpty, pieces[0].allSatisfy({ $0.isASCII && $0.isNumber }),
                  projections.contains(String(pieces[1])), pieces[2] == "weight"
            else { continue }
            return .perExpert(index: Int(pieces[0]), padded: pieces[0].count > 1 && pieces[0].first == "0")
        }
        return nil
    }
}

/// The expert tensors of each sparse layer, checked one stored name at a
/// time by `Weights.confirmLayers`.
struct StoredExperts {
    let naming: ExpertNaming
    /// The model types whose conversion mappings transformers applies to
    /// these weights (`WeightConversions.modelTypes`); nil: none is applied.
    let conversionModelTypes: [String]?
    /// Each layer's first fused and first per-expert tensor met so far.
    private var fused: [Int: String] = [:]
    private var perExpert: [Int: String] = [:]

    init(_ naming: ExpertNaming, conversionModelTypes: [String]?) {
        self.naming = naming
        self.conversionModelTypes = conversionModelTypes
    }

    /// Notes tensor `name` of layer `layer` (`rest` after the layer's prefix);
    /// `keyPrefix` puts the count's key under its section (`text_config.`).
    /// - Throws: `DroptraceError` naming `configPath` and the tensor for an
    ///   expert index at or past the configured count (as a layer past the
    ///   layer count is refused), and naming `weightsPath` and the layer when
    ///   the layer's experts are stored partly fused and partly per expert
    ///   (droptrace reads a layer's experts in one form; transformers reads
    ///   the two forms of one projection as one parameter, which copy it kept
    ///   depending on the order it met them, as for a tensor stored with and
    ///   without `model.`),
    ///   or stored per expert where the conversion mappings do not collect
    ///   them (transformers would initialise the fused experts randomly).
    mutating func note(_ name: String, layer: Int, rest: String, keyPrefix: String, configPath: String, weightsPath: String) throws {
        // A count below 1 is left to the family's check, which names the key's rule.
        guard naming.count >= 1, naming.isSparse(layer), let form = naming.form(of: rest) else { return }
        if case .perExpert(let index, padded: true) = form {
            // transformers reads it as that expert (beside the unpadded name, as a second copy); droptrace reads
            // experts by the names save_pretrained writes.
            throw DroptraceError(
                "tensor '\(name)' writes expert \(index.map(String.init) ?? "index") with leading zeros, which transformers "
                    + "reads as that expert; droptrace reads experts named as save_pretrained writes them: rename it",
                path: weightsPath)
        }
        if case .perExpert(let index, _) = form, (index ?? .max) >= naming.stored?.count ?? naming.count {
            throw DroptraceError(
                "\"\(keyPrefix)\(naming.countKey)\" is \(naming.count)"
                    + (naming.stored.map { ", so each layer stores \($0.count) experts (\($0.description))" } ?? "")
                    + ", but the weights hold tensor '\(name)' of expert " + (index.map(String.init) ?? "index past \(Int.max)"),
                path: configPath)
        }
        if form != .fused, let types = conversionModelTypes, !WeightConversions.collects(name, modelTypes: types) {
            throw DroptraceError(
                "tensor '\(name)' stores one expert, but transformers collects such tensors into its fused experts only "
                    + "where the conversion mapping of the model type says so, and that of "
                    + types.map { "\"\($0.forErrorMessage)\"" }.joined(separator: " and ")
                    + " does not (it would initialise the experts randomly): store them fused",
                path: weightsPath)
        }
        if form == .fused { fused[layer] = fused[layer] ?? name } else { perExpert[layer] = perExpert[layer] ?? name }
        if let one = fused[layer], let other = perExpert[layer] {
            throw DroptraceError(
                "layer \(layer)'s experts are stored partly fused ('\(one)') and partly per expert ('\(other)'): droptrace reads "
                    + "a layer's experts in one form (transformers reads the two forms of one projection as one parameter); store them "
                    + "fused or per expert",
                path: weightsPath)
        }
    }
}

extension DecoderParts {
    /// Checks the gated experts of the first of `layers` whose MLP the config
    /// keeps against `experts` (named by `expertsKey`) and
    /// `moe_intermediate_size` `inner`, fused or per expert, before any
    /// expert is read (`innerKey`: the width's key, when not moe_intermediate_size).
    /// `module(layer)` names the layer's sparse MLP (Kimi Linear's released
    /// `block_sparse_moe.`), `gateName` each expert's gate projection.
    func confirmExpertWidth(
        layers: [Int], experts: Int, expertsKey: String, inner: Int, innerKey: String = "moe_intermediate_size",
        module: (Int) throws -> String = { _ in "mlp." }, gateName: String = "gate_proj", transposedToo: Bool = false
    ) throws {
        guard let layer = layers.first(where: { !configuredDrops.dropsMLP($0) }) else { return }
        let p = "layers.\(layer).\(try module(layer))experts.", d = dimensions
        if weights.hasFusedExperts(p) {
            let swapped = [experts, d.hiddenSize, 2 * inner]
            if transposedToo, try weights.storedShape(p + "gate_up_proj") == swapped { return }
            try weights.confirmShape(
                p + "gate_up_proj", [experts, 2 * inner, d.hiddenSize],
                keys: "\(expertsKey), 2 × \(innerKey), hidden_size", configPath: configPath)
        } else {
            try weights.confirmShape(
                p + "0.\(gateName).weight", [inner, d.hiddenSize], keys: "\(innerKey), hidden_size", configPath: configPath)
        }
    }
}

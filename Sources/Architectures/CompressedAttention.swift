import Foundation
import TensorEngine

/// Rotations of the last `frequencies.count` · 2 columns of a head in
/// interleaved pairs (2i, 2i + 1), as DeepSeek-V4's `apply_rotary_pos_emb`:
/// x·cos + rotate_half(x)·sin with cos and sin of position · θ_i (float32),
/// each product rounded on its own; `inverse` rotates by −sin (the
/// attention output's rotation back to the query's position).
public struct InterleavedRope: Sendable {
    /// θ_i, one per pair.
    public let frequencies: [Float]
    /// Multiplies cos and sin (YaRN's attention factor; 1 for the default rotation).
    public let scaling: Float

    public init(frequencies: [Float], scaling: Float = 1) {
        self.frequencies = frequencies
        self.scaling = scaling
    }

    /// The rotation of `table`: its frequencies and cos/sin factor.
    public init(_ table: RotaryEmbedding) {
        self.init(frequencies: table.inverseFrequencies, scaling: table.attentionScaling)
    }

    /// Columns rotated per head.
    public var width: Int { 2 * frequencies.count }

    /// Rotates the last `width` of the `headDim` values at `head` to `position`
    /// (`inverse`: by the negated sine, as transformers undoes it on the
    /// output, the scaling applied again).
    @inline(__always)
    func rotate(_ head: UnsafeMutablePointer<Float>, headDim: Int, position: Int, inverse: Bool = false) {
        let start = head + headDim - width, p = Float(position)
        for i in 0..<frequencies.count {
            let angle = p * frequencies[i], c = cos(angle) * scaling, sine = sin(angle) * scaling, s = inverse ? -sine : sine
            let a = start[2 * i], b = start[2 * i + 1]
            start[2 * i] = a * c + (-b) * s
            start[2 * i + 1] = b * c + a * s
        }
    }
}

/// DeepSeek-V4's key compressor (`DeepseekV4HCACompressor`,
/// `DeepseekV4CSACompressor`, and the indexer's own): every finished window
/// of `rate` rows of a sequence becomes one key. With C = kv_proj(x) and
/// Z = gate_proj(x) + position_bias[i] (i the row's place in its window),
/// per column
///
///     entry_w = kv_norm(Σ_slots softmax_slots(Z) ⊙ C),
///
/// the slots a window's own rows (heavily compressed), or, `overlapping`
/// (compressed sparse), the previous window's rows' first `dim` columns
/// (none before window 0) and this window's last `dim` columns; then its
/// last columns rotated to position w · rate with the compressed rope.
public struct KeyCompressor: Sendable {
    public let rate: Int
    /// Columns of an entry (`head_dim`, or the indexer's `index_head_dim`).
    public let dim: Int
    /// Whether windows overlap (compressed sparse attention, the indexer).
    public let overlapping: Bool
    /// kv_proj, gate_proj: [(overlapping ? 2 : 1) · dim, hidden].
    public let keyValue: Linear, gate: Linear
    /// position_bias: [rate, (overlapping ? 2 : 1) · dim].
    public let positionBias: [Float]
    /// kv_norm over `dim`.
    public let norm: Normalization
    public let rope: InterleavedRope

    public init(
        rate: Int, dim: Int, overlapping: Bool, keyValue: Linear, gate: Linear, positionBias: [Float], norm: Normalization,
        rope: InterleavedRope
    ) {
        let width = (overlapping ? 2 : 1) * dim
        precondition(rate >= 1 && keyValue.outFeatures == width && gate.outFeatures == width && positionBias.count == rate * width)
        precondition(rope.width <= dim)
        self.rate = rate
        self.dim = dim
        self.overlapping = overlapping
        self.keyValue = keyValue
        self.gate = gate
        self.positionBias = positionBias
        self.norm = norm
        self.rope = rope
    }

    /// Columns of the projected rows it reads: C, then Z.
    var projectedWidth: Int { 2 * (overlapping ? 2 : 1) * dim }

    /// The entries [⌊count / rate⌋ − first, dim] of windows first..<⌊count / rate⌋
    /// of a sequence's `count` rows of projected C | Z at `rows` (`stride`
    /// apart, C from `offset`). Each entry depends on its own window's rows
    /// (and the previous window's) alone, so those of finished windows are
    /// computed once and kept (`extend(_:rows:count:stride:offset:)`).
    func entries(_ rows: UnsafePointer<Float>, count: Int, stride: Int, offset: Int, from first: Int = 0) -> Matrix {
        let windows = count / rate, width = (overlapping ? 2 : 1) * dim, slots = (overlapping ? 2 : 1) * rate
        guard first < windows else { return Matrix(zeros: 0, dim) }
        var out = Matrix(zeros: windows - first, dim)
        var weights = [Float](repeating: 0, count: slots), values = [Float](repeating: 0, count: slots)
        out.data.withUnsafeMutableBufferPointer { o in
            for w in first..<windows {
                for c in 0..<dim {
                    // (gate, value) of each slot; a missing one (−∞, 0).
                    var n = 0
                    if overlapping {
                        for i in 0..<rate {
                            if w > 0 {
                                let row = rows + ((w - 1) * rate + i) * stride + offset
                                weights[n] = row[width + c] + positionBias[i * width + c]
                                values[n] = row[c]
                            } else {
                                weights[n] = -.infinity
                                values[n] = 0
                            }
                            n += 1
                        }
                    }
                    let column = overlapping ? dim + c : c
                    for i in 0..<rate {
                        let row = rows + (w * rate + i) * stride + offset
                        weights[n] = row[width + column] + positionBias[i * width + column]
                        values[n] = row[column]
                        n += 1
                    }
                    var largest = -Float.infinity
                    for i in 0..<n { largest = max(largest, weights[i]) }
                    var sum: Float = 0
                    for i in 0..<n {
                        weights[i] = exp(weights[i] - largest)
                        sum += weights[i]
                    }
                    var total: Float = 0
                    for i in 0..<n { total += values[i] * (weights[i] / sum) }
                    o[(w - first) * dim + c] = total
                }
            }
        }
        out = norm(out)
        out.data.withUnsafeMutableBufferPointer { o in
            for w in first..<windows { rope.rotate(o.baseAddress! + (w - first) * dim, headDim: dim, position: w * rate) }
        }
        return out
    }

    /// `kept` (the entries of the windows finished before, [n, dim] row by
    /// row) extended by those the sequence's `count` rows finish since;
    /// the entries of all finished windows [⌊count / rate⌋, dim].
    func extend(_ kept: inout [Float], rows: UnsafePointer<Float>, count: Int, stride: Int, offset: Int) -> Matrix {
        kept += entries(rows, count: count, stride: stride, offset: offset, from: kept.count / dim).data
        return Matrix(rows: kept.count / dim, cols: dim, data: kept)
    }
}

/// DeepSeek-V4's lightning indexer (`DeepseekV4Indexer`): for each query of
/// a compressed sparse attention layer, the `topK` finished compressed keys
/// it reads. Its own overlapping compressor of `index_head_dim` gives keys
/// k_w; its queries q_h = q_b_proj(query latent), each head's last columns
/// rotated to the query's position with the compressed rope; query t scores
/// entry w < ⌊(t + 1) / rate⌋ by
///
///     I(t, w) = Σ_h (weights_proj(x)_h · heads^-1/2) · ReLU(q_h · k_w) · dim^-1/2
///
/// in float32, keeping the `topK` largest as torch.topk does on CPU over
/// the whole sequence's entries, the later ones at −∞ (`TorchTopK`); none
/// for `topK` 0.
public struct CompressedKeyIndexer: Sendable {
    public let compressor: KeyCompressor
    /// q_b_proj: [heads · dim, q_lora_rank].
    public let queryUp: Linear
    /// weights_proj: [heads, hidden].
    public let headWeights: Linear
    public let heads: Int
    public let topK: Int

    public init(compressor: KeyCompressor, queryUp: Linear, headWeights: Linear, heads: Int, topK: Int) {
        precondition(compressor.overlapping && queryUp.outFeatures == heads * compressor.dim && headWeights.outFeatures == heads)
        precondition(topK >= 0)
        self.compressor = compressor
        self.queryUp = queryUp
        self.headWeights = headWeights
        self.heads = heads
        self.topK = topK
    }
}

/// DeepSeek-V4's attention (`DeepseekV4Attention`): one key head that is
/// also the value head, read by every query head.
///
/// Per row x, with its query latent c = q_a_norm(q_a_proj(x)):
///
///     q = RMS(q_b_proj(c)) per head (no weight),  kv = kv_norm(kv_proj(x)),
///
/// each head's last columns rotated in interleaved pairs (`InterleavedRope`:
/// the "main" rope on sliding-only layers, the compressed one on the
/// others). Query t attends, with a sink logit per head (`sinks`) taking
/// probability mass, to the keys of the last `slidingWindow` rows up to
/// its own and to compressed keys (`KeyCompressor`): every finished window
/// w < ⌊(t + 1) / rate⌋ (heavily compressed), or those the indexer keeps
/// (compressed sparse), logits q · k · head_dim^-1/2. The output's rotated
/// columns are rotated back by the query's position, then each of `groups`
/// groups of heads is projected on its own (`o_a_proj`, block-diagonal) and
/// the groups together by `o_b_proj`.
///
/// A recurrent mixer whose state is the sequence's projected rows and the
/// compressed keys of its finished windows: a step rotates the keys of the
/// rows its window reaches and compresses only the windows it finishes (an
/// entry depends on its own rows alone, so it is the one a whole pass
/// computes).
public struct CompressedAttention: RecurrentTokenMixer {
    public let heads: Int, headDim: Int
    /// q_a_proj, q_a_norm, q_b_proj; kv_proj, kv_norm.
    public let queryDown: Linear, queryNorm: Normalization, queryUp: Linear
    public let keyValue: Linear, keyValueNorm: Normalization
    /// The unweighted per-head RMS norm's eps (`rms_norm_eps`).
    public let normEps: Float
    public let sinks: [Float]
    public let slidingWindow: Int
    public let rope: InterleavedRope
    public let compressor: KeyCompressor?
    /// The compressed sparse attention's indexer (with `compressor`); nil for heavily compressed or sliding only.
    public let indexer: CompressedKeyIndexer?
    /// o_a_proj, one block per group: [rank, heads · headDim / groups] each.
    public let outputGroups: [Linear]
    public let output: Linear

    /// All the input's projections side by side: q_a, kv, the compressor's C | Z, the indexer's C | Z and head weights.
    public let projection: Linear

    public init(
        heads: Int, headDim: Int, queryDown: Linear, queryNorm: Normalization, queryUp: Linear, keyValue: Linear,
        keyValueNorm: Normalization, normEps: Float, sinks: [Float], slidingWindow: Int, rope: InterleavedRope,
        compressor: KeyCompressor?, indexer: CompressedKeyIndexer?, outputGroups: [Linear], output: Linear
    ) {
        precondition(queryUp.outFeatures == heads * headDim && keyValue.outFeatures == headDim && sinks.count == heads)
        precondition(rope.width <= headDim && slidingWindow >= 1 && (indexer == nil || compressor?.overlapping == true))
        precondition(!outputGroups.isEmpty && outputGroups.allSatisfy { $0.inFeatures * outputGroups.count == heads * headDim })
        self.heads = heads
        self.headDim = headDim
        self.queryDown = queryDown
        self.queryNorm = queryNorm
        self.queryUp = queryUp
        self.keyValue = keyValue
        self.keyValueNorm = keyValueNorm
        self.normEps = normEps
        self.sinks = sinks
        self.slidingWindow = slidingWindow
        self.rope = rope
        self.compressor = compressor
        self.indexer = indexer
        self.outputGroups = outputGroups
        self.output = output
        var parts = [queryDown, keyValue]
        if let compressor { parts += [compressor.keyValue, compressor.gate] }
        if let indexer { parts += [indexer.compressor.keyValue, indexer.compressor.gate, indexer.headWeights] }
        projection = Linear(
            weight: parts.flatMap(\.weight), bias: nil, inFeatures: queryDown.inFeatures,
            outFeatures: parts.reduce(0) { $0 + $1.outFeatures }, arithmetic: queryDown.arithmetic)
    }

    /// Where each part starts in a projected row.
    private var offsets: (keyValue: Int, compressor: Int, indexer: Int, headWeights: Int, queries: Int, indexerQueries: Int) {
        let keyValue = queryDown.outFeatures, compressor = keyValue + headDim
        let indexer = compressor + (self.compressor?.projectedWidth ?? 0)
        let headWeights = indexer + (self.indexer?.compressor.projectedWidth ?? 0)
        let queries = headWeights + (self.indexer?.heads ?? 0)
        return (keyValue, compressor, indexer, headWeights, queries, queries + heads * headDim)
    }

    /// The state's row: the projections, then the normalised queries and the indexer's queries (not rotated).
    private var rowWidth: Int { offsets.indexerQueries + (indexer.map { $0.heads * $0.compressor.dim } ?? 0) }

    public var mixedWidth: Int { heads * headDim }

    /// As transformers' DeepSeek-V4 cache holds them: the token's key, which
    /// is also its value (`head_dim`), and its share of a compressed key
    /// (`head_dim` per `rate` tokens) and of the indexer's (`index_head_dim`
    /// per `rate`), Float32, rounded to whole bytes.
    public var cacheBytesPerToken: Int {
        let shares = [compressor, indexer?.compressor].compactMap { $0 }.reduce(0.0) { $0 + Double($1.dim) / Double($1.rate) }
        return Int((Double(MemoryLayout<Float>.size) * (Double(headDim) + shares)).rounded())
    }

    /// Each row's projections, kv normalised, with its queries (per-head RMS
    /// normalised) and the indexer's queries from the query latent.
    public func project(_ x: Matrix) -> Matrix {
        let projected = projection(x), o = offsets
        var latent = Matrix(rows: x.rows, cols: queryDown.outFeatures, data: projected.gathering(rows: 0..<x.rows, columns: 0..<o.keyValue))
        latent = queryNorm(latent)
        var queries = queryUp(latent)
        queries.data.withUnsafeMutableBufferPointer { q in
            for r in 0..<x.rows {
                for h in 0..<heads { Self.unweightedRMS(q.baseAddress! + (r * heads + h) * headDim, count: headDim, eps: normEps) }
            }
        }
        let keys = keyValueNorm(
            Matrix(rows: x.rows, cols: headDim, data: projected.gathering(rows: 0..<x.rows, columns: o.keyValue..<(o.keyValue + headDim))))
        let indexerQueries = indexer.map { $0.queryUp(latent) }
        let width = rowWidth
        return Matrix(uninitialized: x.rows, width) { out in
            for r in 0..<x.rows {
                let row = out + r * width
                projected.data.withUnsafeBufferPointer { row.update(from: $0.baseAddress! + r * projected.cols, count: projected.cols) }
                keys.data.withUnsafeBufferPointer { (row + o.keyValue).update(from: $0.baseAddress! + r * headDim, count: headDim) }
                queries.data.withUnsafeBufferPointer {
                    (row + o.queries).update(from: $0.baseAddress! + r * heads * headDim, count: heads * headDim)
                }
                if let indexerQueries {
                    indexerQueries.data.withUnsafeBufferPointer {
                        (row + o.indexerQueries).update(from: $0.baseAddress! + r * indexerQueries.cols, count: indexerQueries.cols)
                    }
                }
            }
        }
    }

    /// x / √(mean(x²) + eps), the mean in float32 (`DeepseekV4UnweightedRMSNorm`).
    static func unweightedRMS(_ x: UnsafeMutablePointer<Float>, count: Int, eps: Float) {
        var sum: Float = 0
        for i in 0..<count { sum += x[i] * x[i] }
        let factor = 1 / (sum / Float(count) + eps).squareRoot()
        for i in 0..<count { x[i] *= factor }
    }

    /// The state holds the sequence's projected rows so far.
    public func emptyState() -> RecurrentState {
        var state = RecurrentState(history: 0)
        state.grows = true
        return state
    }

    public func mix(_ projected: Matrix, rows: Range<Int>, state: inout RecurrentState, into mixed: inout Matrix) {
        let width = rowWidth
        precondition(projected.cols == width)
        state.recurrent += projected.gathering(rows: rows, columns: 0..<width)
        let count = state.recurrent.count / width, first = count - rows.count
        state.seen = count
        // A window past the rows seen reaches every one of them: its buffer is sized by what it can reach.
        let o = offsets, heads = self.heads, headDim = self.headDim, window = min(slidingWindow, count)
        let scale = 1 / Float(headDim).squareRoot()
        state.recurrent.withUnsafeBufferPointer { all in
            let base = all.baseAddress!
            // The keys of the rows a window of the new rows reaches, rotated to
            // their positions (row t at keys[t − reached]).
            let reached = max(0, first - window + 1)
            var keys = [Float](repeating: 0, count: (count - reached) * headDim)
            keys.withUnsafeMutableBufferPointer { k in
                for t in reached..<count {
                    (k.baseAddress! + (t - reached) * headDim).update(from: base + t * width + o.keyValue, count: headDim)
                    rope.rotate(k.baseAddress! + (t - reached) * headDim, headDim: headDim, position: t)
                }
            }
            // The compressed keys of the finished windows: those of earlier calls are kept in the state.
            if state.derived.isEmpty { state.derived = [[], []] }
            let compressed = compressor?.extend(&state.derived[0], rows: base, count: count, stride: width, offset: o.compressor)
            let indexKeys = indexer?.compressor.extend(&state.derived[1], rows: base, count: count, stride: width, offset: o.indexer)
            mixed.data.withUnsafeMutableBufferPointer { out in
                var logits = [Float](repeating: 0, count: window + (compressed?.rows ?? 0) + 1)
                var query = [Float](repeating: 0, count: heads * headDim)
                for t in first..<count {
                    let row = base + t * width
                    // The compressed keys query t reads.
                    var read: [Int] = []
                    if let compressed {
                        let ready = min((t + 1) / compressor!.rate, compressed.rows)
                        if let indexer, let indexKeys {
                            read = indexer.selection(
                                row: row, queries: row + o.indexerQueries, headWeights: row + o.headWeights, keys: indexKeys,
                                position: t, ready: ready)
                        } else {
                            read = Array(0..<ready)
                        }
                    }
                    for i in 0..<(heads * headDim) { query[i] = row[o.queries + i] }
                    query.withUnsafeMutableBufferPointer { q in
                        for h in 0..<heads { rope.rotate(q.baseAddress! + h * headDim, headDim: headDim, position: t) }
                    }
                    let local = max(0, t - window + 1)...t
                    let target = out.baseAddress! + (t - first + rows.lowerBound) * heads * headDim
                    for h in 0..<heads {
                        let q = query.withUnsafeBufferPointer { $0.baseAddress! + h * headDim }
                        var n = 0
                        func dot(_ k: UnsafePointer<Float>) -> Float {
                            var s: Float = 0
                            for d in 0..<headDim { s += q[d] * k[d] }
                            return s * scale
                        }
                        keys.withUnsafeBufferPointer { k in
                            for j in local {
                                logits[n] = dot(k.baseAddress! + (j - reached) * headDim)
                                n += 1
                            }
                        }
                        if let compressed {
                            compressed.data.withUnsafeBufferPointer { c in
                                for w in read {
                                    logits[n] = dot(c.baseAddress! + w * headDim)
                                    n += 1
                                }
                            }
                        }
                        var largest = sinks[h]
                        for i in 0..<n { largest = max(largest, logits[i]) }
                        var sum = exp(sinks[h] - largest)
                        for i in 0..<n {
                            logits[i] = exp(logits[i] - largest)
                            sum += logits[i]
                        }
                        let head = target + h * headDim
                        for d in 0..<headDim { head[d] = 0 }
                        var i = 0
                        keys.withUnsafeBufferPointer { k in
                            for j in local {
                                let p = logits[i] / sum, v = k.baseAddress! + (j - reached) * headDim
                                for d in 0..<headDim { head[d] += p * v[d] }
                                i += 1
                            }
                        }
                        if let compressed {
                            compressed.data.withUnsafeBufferPointer { c in
                                for w in read {
                                    let p = logits[i] / sum, v = c.baseAddress! + w * headDim
                                    for d in 0..<headDim { head[d] += p * v[d] }
                                    i += 1
                                }
                            }
                        }
                        rope.rotate(head, headDim: headDim, position: t, inverse: true)
                    }
                }
            }
        }
    }

    /// Each group of heads through its block of o_a_proj, then o_b_proj.
    public func finish(_ mixed: Matrix, projected: Matrix) -> Matrix {
        let groups = outputGroups.count, width = mixed.cols / groups
        var parts: [Matrix] = []
        for (g, block) in outputGroups.enumerated() {
            parts.append(block(Matrix(rows: mixed.rows, cols: width, data: mixed.gathering(rows: 0..<mixed.rows, columns: (g * width)..<((g + 1) * width)))))
        }
        let rank = outputGroups[0].outFeatures
        let joined = Matrix(uninitialized: mixed.rows, groups * rank) { out in
            for r in 0..<mixed.rows {
                for g in 0..<groups {
                    parts[g].data.withUnsafeBufferPointer { (out + (r * groups + g) * rank).update(from: $0.baseAddress! + r * rank, count: rank) }
                }
            }
        }
        return output(joined)
    }
}

extension CompressedKeyIndexer {
    /// The compressed keys query `position` reads among the `ready` finished
    /// ones of `keys` [entries, dim]: its queries [heads · dim] (not yet
    /// rotated) and head weights [heads] (raw weights_proj) in its projected row.
    func selection(
        row: UnsafePointer<Float>, queries: UnsafePointer<Float>, headWeights: UnsafePointer<Float>, keys: Matrix, position: Int,
        ready: Int
    ) -> [Int] {
        let dim = compressor.dim, entries = keys.rows
        var q = Array(UnsafeBufferPointer(start: queries, count: heads * dim))
        q.withUnsafeMutableBufferPointer { p in
            for h in 0..<heads { compressor.rope.rotate(p.baseAddress! + h * dim, headDim: dim, position: position) }
        }
        let softmaxScale = 1 / Float(dim).squareRoot(), weightScale = 1 / Float(heads).squareRoot()
        var scores = [Float](repeating: -.infinity, count: entries)
        keys.data.withUnsafeBufferPointer { k in
            for w in 0..<ready {
                var total: Float = 0
                for h in 0..<heads {
                    var s: Float = 0
                    for d in 0..<dim { s += q[h * dim + d] * k[w * dim + d] }
                    total += max(s, 0) * softmaxScale * (headWeights[h] * weightScale)
                }
                scores[w] = total
            }
        }
        return TorchTopK.indices(count: entries, k: topK) { scores[$0] }.filter { $0 < ready }
    }
}

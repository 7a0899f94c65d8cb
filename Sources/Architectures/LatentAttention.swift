import TensorEngine

/// How an attention layer turns its normalised input into the grouped
/// q | k | v rows `causalAttention` reads.
public enum QKVProjection: Sendable {
    /// One projection [width, hidden] whose output is the q | k | v rows
    /// (q_proj, k_proj and v_proj stacked, or a checkpoint's fused one).
    case fused(Linear)
    /// Multi-head latent attention (DeepSeek-V2/V3): low-rank query and
    /// key/value paths; see `LatentQKVProjection`.
    case latent(LatentQKVProjection)
    /// Queries from the attention experts each token's router chooses, keys
    /// and values from one projection (JetMoE's mixture of attention heads;
    /// see `AttentionHeadExperts`, which also projects the attention's output).
    case headExperts(AttentionHeadExperts)

    /// The rows for `x` [rows, hidden]: [rows, layout.width]. `positions` are
    /// the rows' positions, for a projection that rotates its own parts;
    /// `queryLatent`, the latent projection's `queryLatent(x)` when already
    /// computed.
    public func callAsFunction(_ x: Matrix, positions: [Int], queryLatent: Matrix? = nil) -> Matrix {
        switch self {
        case .fused(let linear): linear(x)
        case .latent(let latent): latent(x, positions: positions, queryLatent: queryLatent)
        case .headExperts(let experts): experts.project(x)
        }
    }

    /// Whether `queryLatent` gives one: a latent projection's low-rank query path.
    public var hasQueryLatent: Bool {
        guard case .latent(let latent) = self else { return false }
        switch latent.query {
        case .lowRank, .lowRankBesideRaw: return true
        case .direct: return false
        }
    }

    /// What a latent projection's up projection reads of `x`
    /// (`LatentQKVProjection.queryUpInput`; nil for any other).
    public func queryUpInput(_ x: Matrix) -> Matrix? {
        guard case .latent(let latent) = self else { return nil }
        return latent.queryUpInput(x)
    }

    /// A latent projection's low-rank query latent of `x` (nil for any other).
    public func queryLatent(_ x: Matrix) -> Matrix? {
        guard case .latent(let latent) = self else { return nil }
        return latent.queryLatent(x)
    }

    /// Columns of the projected rows.
    public var outFeatures: Int {
        switch self {
        case .fused(let linear): linear.outFeatures
        case .latent(let latent): latent.layout.width
        case .headExperts(let experts): experts.layout.width
        }
    }

    /// The projections applied to every token (for FLOP counts).
    public var linears: [Linear] {
        switch self {
        case .fused(let linear): [linear]
        case .latent(let latent): latent.linears
        case .headExperts(let experts): experts.linears
        }
    }
}

/// Multi-head latent attention's projection, as transformers' DeepseekV3Attention
/// and DeepseekV2Attention compute it:
///
/// - queries: q_proj [heads · (nope + rope), hidden], or the low-rank path
///   q_b_proj(RMSNorm(q_a_proj(x))) with q_a_proj [q_lora_rank, hidden] and
///   q_b_proj [heads · (nope + rope), q_lora_rank];
/// - keys and values: kv_a_proj_with_mqa [kv_lora_rank + rope, hidden] gives a
///   latent (normalised by kv_a_layernorm) and one rope part shared by every
///   head; kv_b_proj [heads · (nope + v), kv_lora_rank] expands the latent to
///   each head's key nope part and value;
/// - each head's query and key are [nope | rope], only the rope parts rotated.
///
/// The output is a grouped q | k | v matrix of `layout` (every head its own
/// key and value, head width max(nope + rope, v)): values narrower than the
/// head are zero-padded, so the attention output's padding columns are zero
/// and `paddedOutput` gives o_proj zero weights for them. The attention
/// kernel, the key/value-cache decoder and the output projection thus stay
/// those of every other model.
///
/// Rope parts whose pairs are interleaved (x0, x1), (x2, x3), … (DeepSeek's
/// checkpoints: `rope_interleave`, V2's complex rotation) are de-interleaved
/// when the weights are loaded (`deinterleavingRope`): a query-key dot
/// product is the same in either order, and the rotation is then the usual
/// rotate-half one.
public struct LatentQKVProjection: Sendable {
    /// How queries are projected.
    public enum QueryPath: Sendable {
        /// q_proj (q_lora_rank null).
        case direct(Linear)
        /// q_b_proj(norm(q_a_proj(x))).
        case lowRank(down: Linear, norm: Normalization, up: Linear)
        /// up([norm(q_a_proj(x)) | q_a_proj(x)]): the up projection reads the
        /// normalised latent beside the raw one (A.X K2's `q_gate_proj`,
        /// whose query rows `up` holds), [heads · (nope + rope), 2 · q_lora_rank].
        case lowRankBesideRaw(down: Linear, norm: Normalization, up: Linear)
    }

    public let query: QueryPath
    /// kv_a_proj_with_mqa: [kv_lora_rank + rope, hidden].
    public let keyValueDown: Linear
    /// kv_a_layernorm over the kv_lora_rank latent.
    public let keyValueNorm: Normalization
    /// kv_b_proj: [heads · (nope + v), kv_lora_rank].
    public let keyValueUp: Linear
    public let numHeads: Int
    /// qk_nope_head_dim, qk_rope_head_dim, v_head_dim.
    public let nopeDim: Int, ropeDim: Int, valueDim: Int
    /// Rotates the rope parts (its head width is `ropeDim`); nil: they are
    /// not rotated (Kimi Linear's latent attention takes no positions).
    public let rotary: RotaryEmbedding?
    /// A norm over the shared key rope part before it is rotated (dots.note's
    /// `k_rope_only_layernorm`, its weights in the rope part's column order); nil: none.
    public let keyRopeNorm: Normalization?

    public init(
        query: QueryPath, keyValueDown: Linear, keyValueNorm: Normalization, keyValueUp: Linear, numHeads: Int,
        nopeDim: Int, ropeDim: Int, valueDim: Int, rotary: RotaryEmbedding?, keyRopeNorm: Normalization? = nil
    ) {
        let queryOut: Int
        switch query {
        case .direct(let q): queryOut = q.outFeatures
        case .lowRank(let down, _, let up): queryOut = up.outFeatures; precondition(up.inFeatures == down.outFeatures)
        case .lowRankBesideRaw(let down, _, let up): queryOut = up.outFeatures; precondition(up.inFeatures == 2 * down.outFeatures)
        }
        precondition(queryOut == numHeads * (nopeDim + ropeDim) && keyValueDown.outFeatures > ropeDim)
        precondition(keyValueUp.inFeatures == keyValueDown.outFeatures - ropeDim)
        precondition(keyValueUp.outFeatures == numHeads * (nopeDim + valueDim) && (rotary.map { $0.headDim == ropeDim } ?? true))
        self.query = query
        self.keyValueDown = keyValueDown
        self.keyValueNorm = keyValueNorm
        self.keyValueUp = keyValueUp
        self.numHeads = numHeads
        self.nopeDim = nopeDim
        self.ropeDim = ropeDim
        self.valueDim = valueDim
        self.rotary = rotary
        self.keyRopeNorm = keyRopeNorm
    }

    /// Query/key width nope + rope.
    public var queryKeyDim: Int { nopeDim + ropeDim }

    /// Every head its own key and value, `max(nope + rope, v)` wide.
    public var layout: QKVLayout {
        QKVLayout(numHeads: numHeads, numKVHeads: numHeads, headDim: max(queryKeyDim, valueDim))
    }

    var linears: [Linear] {
        switch query {
        case .direct(let q): [q, keyValueDown, keyValueUp]
        case .lowRank(let down, _, let up), .lowRankBesideRaw(let down, _, let up): [down, up, keyValueDown, keyValueUp]
        }
    }

    /// The low-rank query path's latent norm(q_a_proj(x)) [rows, q_lora_rank]
    /// (nil for the direct q_proj), which DeepSeek Sparse Attention's indexer
    /// reads too.
    public func queryLatent(_ x: Matrix) -> Matrix? {
        switch query {
        case .lowRank(let down, let norm, _), .lowRankBesideRaw(let down, let norm, _): norm(down(x))
        case .direct: nil
        }
    }

    /// What the low-rank query path's up projection reads of `x`: the
    /// latent `queryLatent` (when already computed, else computed here),
    /// beside q_a_proj(x) for `lowRankBesideRaw` [rows, 2 · q_lora_rank];
    /// nil for the direct q_proj.
    public func queryUpInput(_ x: Matrix, queryLatent: Matrix? = nil) -> Matrix? {
        switch query {
        case .direct: return nil
        case .lowRank(let down, let norm, _): return queryLatent ?? norm(down(x))
        case .lowRankBesideRaw(let down, let norm, _):
            let raw = down(x), latent = queryLatent ?? norm(raw), rank = raw.cols
            return Matrix(uninitialized: x.rows, 2 * rank) { out in
                latent.data.withUnsafeBufferPointer { l in
                    raw.data.withUnsafeBufferPointer { r in
                        for row in 0..<x.rows {
                            (out + row * 2 * rank).update(from: l.baseAddress! + row * rank, count: rank)
                            (out + row * 2 * rank + rank).update(from: r.baseAddress! + row * rank, count: rank)
                        }
                    }
                }
            }
        }
    }

    /// The q | k | v rows [rows, layout.width] of `x` [rows, hidden], rotated
    /// to `positions`; `queryLatent` is `queryLatent(x)` when already computed.
    public func callAsFunction(_ x: Matrix, positions: [Int], queryLatent: Matrix? = nil) -> Matrix {
        var queries: Matrix
        switch query {
        case .direct(let q): queries = q(x)
        case .lowRank(_, _, let up), .lowRankBesideRaw(_, _, let up): queries = up(queryUpInput(x, queryLatent: queryLatent)!)
        }
        var compressed = keyValueDown(x)
        let rank = compressed.cols - ropeDim
        keyValueNorm.apply(inPlace: &compressed, columns: 0..<rank)
        keyRopeNorm?.apply(inPlace: &compressed, columns: rank..<compressed.cols)
        let keyValues = keyValueUp(Matrix(uninitialized: x.rows, rank) { out in
            compressed.data.withUnsafeBufferPointer { source in
                for r in 0..<x.rows { (out + r * rank).update(from: source.baseAddress! + r * compressed.cols, count: rank) }
            }
        })
        let qk = queryKeyDim, nope = nopeDim, rope = ropeDim, v = valueDim, heads = numHeads
        // The shared key rope part is rotated once per row, before every head copies it.
        if let rotary {
            queries.data.withUnsafeMutableBufferPointer { buffer in
                rotary.apply(
                    to: buffer.baseAddress!, rowStride: queries.cols, headOffsets: (0..<heads).map { $0 * qk + nope },
                    positions: positions)
            }
            compressed.data.withUnsafeMutableBufferPointer { buffer in
                rotary.apply(to: buffer.baseAddress!, rowStride: compressed.cols, headOffsets: [rank], positions: positions)
            }
        }
        let layout = self.layout, width = layout.width, kvWidth = nope + v
        var projected = Matrix(zeros: x.rows, width)
        projected.data.withUnsafeMutableBufferPointer { target in
            queries.data.withUnsafeBufferPointer { q in
                compressed.data.withUnsafeBufferPointer { c in
                    keyValues.data.withUnsafeBufferPointer { kv in
                        parallelFor(chunks: x.rows, minimumChunk: 16) { rows in
                            for r in rows {
                                let row = target.baseAddress! + r * width
                                let sharedRope = c.baseAddress! + r * compressed.cols + rank
                                for h in 0..<heads {
                                    let source = kv.baseAddress! + r * heads * kvWidth + h * kvWidth
                                    (row + layout.queryOffset(head: h)).update(from: q.baseAddress! + r * heads * qk + h * qk, count: qk)
                                    let key = row + layout.keyOffset(kvHead: h)
                                    key.update(from: source, count: nope)
                                    (key + nope).update(from: sharedRope, count: rope)
                                    (row + layout.valueOffset(kvHead: h)).update(from: source + nope, count: v)
                                }
                            }
                        }
                    }
                }
            }
        }
        return projected
    }

    /// o_proj [hidden, heads · v] widened to read the attention output of
    /// `layout` [.., heads · headDim]: zero weights for each head's padding
    /// columns (which the zero-padded values leave at zero anyway).
    public static func paddedOutput(_ output: Linear, numHeads: Int, valueDim: Int, headDim: Int) -> Linear {
        precondition(output.layout == .outByIn && output.inFeatures == numHeads * valueDim && headDim >= valueDim)
        guard headDim > valueDim else { return output }
        let out = output.outFeatures, inWidth = numHeads * headDim
        var weight = [Float](repeating: 0, count: out * inWidth)
        output.weight.withUnsafeBufferPointer { source in
            weight.withUnsafeMutableBufferPointer { target in
                for o in 0..<out {
                    for h in 0..<numHeads {
                        (target.baseAddress! + o * inWidth + h * headDim)
                            .update(from: source.baseAddress! + o * output.inFeatures + h * valueDim, count: valueDim)
                    }
                }
            }
        }
        return Linear(weight: weight, bias: output.bias, inFeatures: inWidth, outFeatures: out)
    }

    /// A projection [heads · valueDim, in] widened to give one row per column
    /// of the attention output of heads `headDim` wide: zero rows for each
    /// head's padding columns (an output gate over the values).
    public static func paddedRows(_ linear: Linear, numHeads: Int, valueDim: Int, headDim: Int) -> Linear {
        precondition(linear.layout == .outByIn && linear.bias == nil && linear.outFeatures == numHeads * valueDim && headDim >= valueDim)
        guard headDim > valueDim else { return linear }
        let width = linear.inFeatures
        var weight = [Float](repeating: 0, count: numHeads * headDim * width)
        linear.weight.withUnsafeBufferPointer { source in
            weight.withUnsafeMutableBufferPointer { target in
                for h in 0..<numHeads {
                    (target.baseAddress! + h * headDim * width).update(from: source.baseAddress! + h * valueDim * width, count: valueDim * width)
                }
            }
        }
        return Linear(weight: weight, bias: nil, inFeatures: width, outFeatures: numHeads * headDim)
    }

    /// The rows of a projection's weight [out, in] (or bias [out]) with the
    /// interleaved pairs of each rope part, `ropeDim` rows starting at every
    /// offset in `ropeStarts`, reordered evens first then odds: how
    /// transformers' interleaved rotation reads them (x0, x2, …, x1, x3, …).
    public static func deinterleavingRope(_ values: [Float], rowWidth: Int, ropeStarts: [Int], ropeDim: Int) -> [Float] {
        var result = values
        let half = ropeDim / 2
        for start in ropeStarts {
            for i in 0..<ropeDim {
                let from = i < half ? start + 2 * i : start + 2 * (i - half) + 1
                let to = start + i
                for j in 0..<rowWidth { result[to * rowWidth + j] = values[from * rowWidth + j] }
            }
        }
        return result
    }
}

import Foundation
import TensorEngine

/// Norms of queries and keys after the projection, before rotary (unless
/// the attention's `queryKeyNormAfterRotary` says after it).
public enum QueryKeyNorm: Sendable {
    /// One norm over all query columns at once and one over all key columns
    /// (weights [heads · head_dim] and [kv_heads · head_dim]; OLMo-2, OLMoE).
    case acrossHeads(query: Normalization, key: Normalization)
    /// The same norm applied to each head's columns separately (weights
    /// [head_dim]; Qwen3, Gemma-3).
    case perHead(query: Normalization, key: Normalization)
    /// Each head's columns normalised separately with weights of its own
    /// (weights [heads · head_dim], head h's at h · head_dim; Cohere).
    case eachHead(query: Normalization, key: Normalization)
}

/// Multi-head (grouped-query) causal self-attention with a QKV projection
/// (one fused linear, or multi-head latent attention's low-rank paths),
/// optional rotary embedding and optional sliding window, plus
/// the adjustments some checkpoints need, each named by what it does:
/// clipping q/k/v, normalising queries and keys, soft-capping the scores.
public struct SelfAttention: Sendable {
    public let projection: QKVProjection
    public let layout: QKVLayout
    public let rotary: RotaryEmbedding?
    public let output: Linear
    public let scale: Float
    public let slidingWindow: Int?
    /// q, k and v are clamped to [−clip, clip] after the projection and the
    /// q/k norms, before rotary (OLMo's and OLMoE's `clip_qkv`).
    public let clip: Float?
    public let queryKeyNorm: QueryKeyNorm?
    /// The q/k norms act on the rotated queries and keys (Hunyuan's
    /// `query_layernorm`, `key_layernorm`), not before rotary.
    public let queryKeyNormAfterRotary: Bool
    /// Scaled scores s become tanh(s / cap) · cap before the softmax (Gemma-2).
    public let logitSoftcap: Float?
    /// [numHeads]: one learned logit per head that joins the softmax over
    /// the keys without a value, taking probability mass (gpt-oss's `sinks`).
    public let sinkLogits: [Float]?
    /// Linear biases by key position instead of rotary (BLOOM, Falcon-RW).
    public let alibi: ALiBi?
    /// Queries scaled by position after rotary (Ministral 3's Llama-4 temperature).
    public let queryTemperature: QueryTemperature?
    /// Queries see only the keys of their own chunk of this many positions
    /// (Llama 4's chunked attention; `firstVisibleKey`).
    public let chunkSize: Int?
    /// One norm applied to each value head's columns (weights [head_dim];
    /// Gemma 4's scale-free `v_norm`), with the q/k norms.
    public let valueNorm: Normalization?
    /// [numHeads · head_dim, hidden]: the attention output is multiplied by
    /// sigmoid(gate x) of the layer input before `output` (Qwen3-Next's and
    /// Qwen3.5's gated attention, whose q_proj yields the gate with the queries).
    public let outputGate: Linear?
    /// DeepSeek Sparse Attention's indexer: each query attends only to the
    /// keys it chooses (a latent projection with a low-rank query path).
    public let indexer: SparseAttentionIndexer?
    /// Kolibri 1.1's weightless indexer: the layer attends to the keys it
    /// selects from a pool, rounded with the values to NVFP4 (`pooledAttention`).
    public var keyPool: KeyPoolIndexer? = nil
    /// Qwen4-Exp's QSA indexer: the layer attends to the keys of the blocks
    /// it chooses (`QSAIndexer`); nil for none.
    public var blockIndexer: QSAIndexer? = nil
    /// MiniMax-M3's lightning indexer: each group of query heads attends
    /// to the keys of the blocks its indexer head chooses
    /// (`BlockSparseIndexer`); nil for none.
    public var blockSparseIndexer: BlockSparseIndexer? = nil
    /// Multiplies the projected keys before anything else touches them
    /// (Falcon-H1's `key_multiplier`, `k_proj(x) · m`); nil for none.
    public var keyScale: Float? = nil
    /// Multiplies the projected values (MiMo-V2-Flash's `attention_value_scale`,
    /// `v_proj(x) · s`); nil for none.
    public var valueScale: Float? = nil
    /// How `outputGate`'s outputs become gates: sigmoid (Qwen3-Next,
    /// AFMoE, LFM3) or softplus (Laguna's `F.softplus`, beta 1, threshold 20).
    public var outputGateFunction: GateFunction = .sigmoid
    /// `outputGate` reads what the latent projection's query up projection
    /// reads (`QKVProjection.queryUpInput`) instead of the layer input (A.X
    /// K2's gate rows of `q_gate_proj`, fused with the queries).
    public var outputGateReadsQueryUpInput = false
    /// Normalises each row of the attention output (after `outputGate`)
    /// before `output` (BitNet's `attn_sub_norm`); nil for none.
    public var attendedNorm: Normalization? = nil
    /// Normalises each head's columns of the attended values (weights
    /// [head_dim]) before `outputGate` (Muse Spark's weightless `o_norm`); nil for none.
    public var headOutputNorm: Normalization? = nil
    public enum GateFunction: Sendable { case sigmoid, softplus }
    /// [queryWidth]: multiplies each query column after rotary and
    /// `queryTemperature` (Dory's per-channel `sqk` scale); nil for none.
    public var queryScales: [Float]? = nil
    /// Multiplies each query head after rotary by a factor of its head and
    /// position (Mistral Large 4's softmax scaling); nil for none.
    public var headQueryScales: LogPositionQueryScale? = nil
    /// Biases of the keys by their values, and the cap on the keys a query
    /// sees (Doge's dynamic mask attention); nil for none.
    public var dynamicMask: DynamicMask? = nil
    /// Two softmax passes over the two halves of the value heads, combined
    /// and normalised before `output` (DiffLlama's); nil for one pass.
    public var differential: DifferentialAttention? = nil {
        didSet { precondition(differential == nil || DifferentialAttention.fits(layout)) }
    }
    /// Whether the layer stores its keys and values for later layers, or
    /// reuses an earlier layer's (its projection then gives the queries
    /// only); nil for neither.
    public internal(set) var keyValueSharing: AttentionSharing?
    /// Whether the keys its `indexer` chose are also used by later layers,
    /// or the layer (without an indexer) attends only to the keys an
    /// earlier layer's chose (GLM-5's "shared" indexer layers); nil for neither.
    public internal(set) var keySelectionSharing: AttentionSharing?
    /// Whether the layer only makes what later layers use (`AttentionSharing.storeOnly`).
    public var storesOnly: Bool { keyValueSharing?.storesOnly == true || keySelectionSharing?.storesOnly == true }

    public init(
        qkv: Linear, layout: QKVLayout, rotary: RotaryEmbedding?, output: Linear, scale: Float,
        slidingWindow: Int? = nil, clip: Float? = nil, queryKeyNorm: QueryKeyNorm? = nil, queryKeyNormAfterRotary: Bool = false,
        logitSoftcap: Float? = nil, sinkLogits: [Float]? = nil, alibi: ALiBi? = nil, queryTemperature: QueryTemperature? = nil,
        chunkSize: Int? = nil, valueNorm: Normalization? = nil, outputGate: Linear? = nil, keyValueSharing: AttentionSharing? = nil
    ) {
        self.init(
            projection: .fused(qkv), layout: layout, rotary: rotary, output: output, scale: scale,
            slidingWindow: slidingWindow, clip: clip, queryKeyNorm: queryKeyNorm, queryKeyNormAfterRotary: queryKeyNormAfterRotary,
            logitSoftcap: logitSoftcap, sinkLogits: sinkLogits, alibi: alibi, queryTemperature: queryTemperature, chunkSize: chunkSize,
            valueNorm: valueNorm, outputGate: outputGate, keyValueSharing: keyValueSharing)
    }

    /// Attention over the rows `projection` gives; `rotary` rotates whole
    /// heads of them (a latent projection rotates its own rope parts and
    /// comes with none).
    public init(
        projection: QKVProjection, layout: QKVLayout, rotary: RotaryEmbedding?, output: Linear, scale: Float,
        slidingWindow: Int? = nil, clip: Float? = nil, queryKeyNorm: QueryKeyNorm? = nil, queryKeyNormAfterRotary: Bool = false,
        logitSoftcap: Float? = nil, sinkLogits: [Float]? = nil, alibi: ALiBi? = nil, queryTemperature: QueryTemperature? = nil,
        chunkSize: Int? = nil, valueNorm: Normalization? = nil, outputGate: Linear? = nil, indexer: SparseAttentionIndexer? = nil,
        keyValueSharing: AttentionSharing? = nil
    ) {
        precondition(Self.projectionFits(projection.outFeatures, layout: layout, sharing: keyValueSharing))
        precondition(keyValueSharing == nil || (layout.arrangement == .grouped && indexer == nil))
        precondition(indexer == nil || ((projection.hasQueryLatent || indexer!.queryInputNorm != nil) && slidingWindow == nil && chunkSize == nil))
        precondition(chunkSize.map { $0 > 0 } ?? true)
        precondition(valueNorm == nil || layout.arrangement == .grouped)
        precondition(outputGate == nil || outputGate!.outFeatures == layout.queryWidth)
        precondition(queryKeyNorm == nil || layout.arrangement == .grouped)
        precondition(!queryKeyNormAfterRotary || clip == nil)
        precondition(sinkLogits == nil || sinkLogits!.count == layout.numHeads)
        precondition(alibi == nil || alibi!.slopes.count == layout.numHeads)
        // The queries are the first queryWidth columns only in the grouped layout.
        precondition(queryTemperature == nil || layout.arrangement == .grouped)
        self.projection = projection
        self.layout = layout
        self.rotary = rotary
        self.output = output
        self.scale = scale
        self.slidingWindow = slidingWindow
        self.clip = clip
        self.queryKeyNorm = queryKeyNorm
        self.queryKeyNormAfterRotary = queryKeyNormAfterRotary
        self.logitSoftcap = logitSoftcap
        self.sinkLogits = sinkLogits
        self.alibi = alibi
        self.queryTemperature = queryTemperature
        self.chunkSize = chunkSize
        self.valueNorm = valueNorm
        self.outputGate = outputGate
        self.indexer = indexer
        self.keyValueSharing = keyValueSharing
    }

    /// Queries, keys and values of `x`, ready to attend: projected,
    /// normalised, clipped and rotated to the rows' `positions` (rotated,
    /// then normalised, when `queryKeyNormAfterRotary`), and the queries
    /// scaled by `queryTemperature`. A layer that reuses another's keys and
    /// values (`keyValueSharing`) takes them from `sharedKeysValues`
    /// [rows, keyWidth + valueWidth], as that layer made them, and processes
    /// its queries only.
    public func projectedQKV(_ x: Matrix, positions: [Int], queryLatent: Matrix? = nil, sharedKeysValues: Matrix? = nil) -> Matrix {
        precondition((sharedKeysValues == nil) == (keyValueSharing?.reusedLayer == nil))
        let projected = projection(x, positions: positions, queryLatent: queryLatent)
        let (width, queryWidth) = (layout.width, layout.queryWidth)
        if let sharedKeysValues {
            precondition(sharedKeysValues.rows == x.rows && sharedKeysValues.cols == width - queryWidth)
            return processed(widened(queries: projected, keysValues: sharedKeysValues), positions: positions, ownKeys: false)
        }
        if projected.cols == width - queryWidth {
            // A store-only layer's keys and values, beside queries of zeros (normalised and rotated, they stay zeros).
            return processed(widened(queries: Matrix(zeros: x.rows, queryWidth), keysValues: projected), positions: positions, ownKeys: true)
        }
        return processed(projected, positions: positions, ownKeys: true)
    }

    /// `projectedQKV`'s processing of the projected rows; `ownKeys` false
    /// leaves the keys and values (another layer's, processed) as they are.
    private func processed(_ projected: Matrix, positions: [Int], ownKeys: Bool) -> Matrix {
        var projected = projected
        if ownKeys {
            if let keyScale { scale(&projected, by: keyScale, heads: layout.keyOffset(kvHead:)) }
            if let valueScale { scale(&projected, by: valueScale, heads: layout.valueOffset(kvHead:)) }
        }
        if ownKeys, let valueNorm {
            valueNorm.apply(
                inPlace: &projected, columns: (layout.queryWidth + layout.keyWidth)..<layout.width, pieceWidth: layout.headDim)
        }
        if !queryKeyNormAfterRotary { normaliseQueriesAndKeys(&projected, keys: ownKeys) }
        // After the q/k norms, as OLMoE clips (OLMo, which clips too, has no norms).
        if let clip {
            let (width, clipped) = (layout.width, ownKeys ? layout.width : layout.queryWidth)
            projected.data.withUnsafeMutableBufferPointer { values in
                for r in 0..<projected.rows {
                    for i in (r * width)..<(r * width + clipped) { values[i] = min(max(values[i], -clip), clip) }
                }
            }
        }
        if let rotary {
            let heads = (0..<layout.numHeads).map(layout.queryOffset(head:))
                + (ownKeys ? (0..<layout.numKVHeads).map(layout.keyOffset(kvHead:)) : [])
            projected.data.withUnsafeMutableBufferPointer { buffer in
                rotary.apply(to: buffer.baseAddress!, rowStride: layout.width, headOffsets: heads, positions: positions)
            }
        }
        if queryKeyNormAfterRotary { normaliseQueriesAndKeys(&projected, keys: ownKeys) }
        if let queryTemperature {
            projected.data.withUnsafeMutableBufferPointer { buffer in
                queryTemperature.apply(to: buffer.baseAddress!, rowStride: layout.width, columns: 0..<layout.queryWidth, positions: positions)
            }
        }
        if let queryScales {
            let (width, queryWidth, rows) = (layout.width, layout.queryWidth, projected.rows)
            projected.data.withUnsafeMutableBufferPointer { values in
                for r in 0..<rows {
                    for j in 0..<queryWidth { values[r * width + j] *= queryScales[j] }
                }
            }
        }
        if let headQueryScales {
            let layout = layout
            projected.data.withUnsafeMutableBufferPointer { buffer in
                headQueryScales.apply(
                    to: buffer.baseAddress!, rowStride: layout.width, headOffsets: (0..<layout.numHeads).map(layout.queryOffset(head:)),
                    width: layout.headDim, positions: positions)
            }
        }
        return projected
    }

    /// Multiplies the columns of every key/value head that `heads` places (its offset by head) by `factor`.
    private func scale(_ projected: inout Matrix, by factor: Float, heads offset: (Int) -> Int) {
        let layout = self.layout, width = layout.width, rows = projected.rows
        projected.data.withUnsafeMutableBufferPointer { values in
            for r in 0..<rows {
                for g in 0..<layout.numKVHeads {
                    let start = r * width + offset(g)
                    for j in start..<(start + layout.headDim) { values[j] *= factor }
                }
            }
        }
    }

    /// Applies `queryKeyNorm` to the query columns of `projected` and, when
    /// `keys`, to its key columns.
    func normaliseQueriesAndKeys(_ projected: inout Matrix, keys normalisesKeys: Bool = true) {
        // Grouped layout: all query columns, then all key columns.
        let queries = 0..<layout.queryWidth, keys = layout.queryWidth..<(layout.queryWidth + layout.keyWidth)
        let (query, key, pieceWidth, weightsPerPiece): (Normalization, Normalization, Int?, Bool)
        switch queryKeyNorm {
        case .acrossHeads(let q, let k)?: (query, key, pieceWidth, weightsPerPiece) = (q, k, nil, false)
        case .perHead(let q, let k)?: (query, key, pieceWidth, weightsPerPiece) = (q, k, layout.headDim, false)
        case .eachHead(let q, let k)?: (query, key, pieceWidth, weightsPerPiece) = (q, k, layout.headDim, true)
        case nil: return
        }
        query.apply(inPlace: &projected, columns: queries, pieceWidth: pieceWidth, weightsPerPiece: weightsPerPiece)
        if normalisesKeys { key.apply(inPlace: &projected, columns: keys, pieceWidth: pieceWidth, weightsPerPiece: weightsPerPiece) }
    }

    /// The attention over the whole batch, each sequence on its own. A layer
    /// that stores or reuses keys and values (`keyValueSharing`) or a key
    /// selection (`keySelectionSharing`) does so in `shared`, the forward pass's.
    public func callAsFunction(_ x: Matrix, _ batch: TokenBatch, shared: SharedAttentionState? = nil) -> Matrix {
        if let keyPool { return pooledAttention(x, batch, shared: shared, indexer: keyPool) }
        let latent = indexer == nil ? nil : projection.queryLatent(x)
        let selection = keySelectionSharing?.reusedLayer.map { shared!.selection(of: $0) }
            ?? indexer.map { $0.select(x, queryLatent: latent, batch: batch) }
            ?? blockIndexer.map { $0.select(x, batch: batch) }
            ?? blockSparseIndexer.map { $0.select(x, batch: batch) }
        if let layer = keySelectionSharing?.storedLayer { shared!.store(selection!, layer: layer) }
        // A store-only layer adds nothing to the stream (`TransformerBlock.sharingProducer`).
        if keySelectionSharing?.storesOnly == true { return Matrix(zeros: x.rows, 0) }
        let qkv = projectedQKV(
            x, positions: batch.positions, queryLatent: latent,
            sharedKeysValues: keyValueSharing?.reusedLayer.map { shared!.keysValues(of: $0) })
        if let layer = keyValueSharing?.storedLayer { shared!.store(keysValues(qkv), layer: layer) }
        if keyValueSharing?.storesOnly == true { return Matrix(zeros: x.rows, 0) }
        let keyBiases = dynamicMask?.biases(qkv, layout: layout, inputs: x)
        let attended = attended(qkv) {
            causalAttention(
                qkv: $0, layout: layout, sequences: batch.sequences,
                scale: scale, slidingWindow: slidingWindow, logitSoftcap: logitSoftcap, sinkLogits: sinkLogits, alibi: alibi,
                chunkSize: chunkSize, keySelection: selection, keyBiases: keyBiases)
        }
        return finish(attended, input: x)
    }

    /// The attended values of projected rows `qkv` by `attend` (the softmax
    /// attention over rows laid out as `qkv`): its one pass, or the
    /// `differential` attention's two passes combined.
    public func attended(_ qkv: Matrix, by attend: (Matrix) -> Matrix) -> Matrix {
        guard let differential else { return attend(qkv) }
        return differential(qkv, layout: layout, attend: attend)
    }

    /// The output projection of the attended values of layer input `x`'s
    /// rows, each head normalised first where the attention has a
    /// `headOutputNorm`, gated where it has an `outputGate`, then
    /// normalised where it has an `attendedNorm`; where the projection is
    /// `headExperts`, the output projections the router chose for each row
    /// (`AttentionHeadExperts.combine`) in place of `output`.
    public func finish(_ attended: Matrix, input x: Matrix) -> Matrix {
        var gated = attended
        headOutputNorm?.apply(inPlace: &gated, columns: 0..<gated.cols, pieceWidth: layout.headDim)
        if let outputGate {
            let gate = outputGate(outputGateReadsQueryUpInput ? projection.queryUpInput(x)! : x), softplus = outputGateFunction == .softplus
            gated.data.withUnsafeMutableBufferPointer { values in
                gate.data.withUnsafeBufferPointer { g in
                    for i in values.indices {
                        // torch's softplus returns the input above its threshold, 20.
                        values[i] *= softplus ? (g[i] > 20 ? g[i] : log1p(exp(g[i]))) : 1 / (1 + exp(-g[i]))
                    }
                }
            }
        }
        let attended = attendedNorm.map { $0(gated) } ?? gated
        // Routed output projections where the queries were routed.
        if case .headExperts(let experts) = projection { return experts.combine(attended, input: x) }
        return output(attended)
    }
}

import Foundation
import TensorEngine

/// Qwen4-Exp's hashed n-gram embeddings (transformers'
/// `Qwen4ExpTextNGramEmbedding`), one table per PLE layer.
///
/// Each sequence's history is `ngramSize − 1` eos tokens and then its
/// tokens; the token k places back from t is eos where that reaches past
/// the start of t's segment (segments start after each eos token). For
/// n = 2 … ngramSize the n-gram of t is hashed, in int64 as torch computes
/// it, as m = XOR_{k < n} token_{t−k} · multipliers[k], and looked up in
/// each of its `headsPerNgram` heads at (m mod vocabSizes[h]) + offsets[h];
/// the heads' rows [headWidth] are concatenated, 2-grams first. The
/// multipliers, head sizes and offsets are read from the checkpoint
/// (`layer_multipliers`, `ngram_heads_vocab_sizes`, `ngram_heads_offsets`),
/// as transformers loads them over the ones it derives from the config.
public struct NGramEmbedding: Sendable {
    public let ngramSize: Int, headsPerNgram: Int
    /// `layer_multipliers` [ngramSize].
    public let multipliers: [Int64]
    /// `ngram_heads_vocab_sizes`, `ngram_heads_offsets` [(ngramSize − 1) · headsPerNgram].
    public let vocabSizes: [Int64], offsets: [Int64]
    /// `ngram_embedding` [rows, headWidth] (its shards concatenated).
    public let table: Matrix
    /// `eos_token_id` (its first item).
    public let eos: Int

    public init(ngramSize: Int, headsPerNgram: Int, multipliers: [Int64], vocabSizes: [Int64], offsets: [Int64], table: Matrix, eos: Int) {
        let heads = (ngramSize - 1) * headsPerNgram
        precondition(ngramSize >= 2 && headsPerNgram >= 1 && multipliers.count == ngramSize)
        precondition(vocabSizes.count == heads && offsets.count == heads && vocabSizes.allSatisfy { $0 >= 1 })
        self.ngramSize = ngramSize
        self.headsPerNgram = headsPerNgram
        self.multipliers = multipliers
        self.vocabSizes = vocabSizes
        self.offsets = offsets
        self.table = table
        self.eos = eos
    }

    public var heads: Int { (ngramSize - 1) * headsPerNgram }

    /// The table rows each head of each token reads, or nil for a row past
    /// the table. `context`: the `ngramSize − 1` tokens before the one
    /// sequence's rows (a decoder's), nil for a sequence's start (eos tokens).
    func rows(tokenIDs: [Int], sequences: [Range<Int>], context before: [Int]? = nil) -> [Int]? {
        let heads = heads, context = ngramSize - 1
        precondition(before == nil || (before!.count == context && sequences.count == 1))
        var result = [Int](repeating: 0, count: tokenIDs.count * heads)
        for sequence in sequences {
            let history = (before ?? [Int](repeating: eos, count: context)) + tokenIDs[sequence]
            // Where each history position's segment starts: after the last eos before it.
            var segmentStart = [Int](repeating: 0, count: history.count)
            var lastEOS = -1
            for p in history.indices {
                segmentStart[p] = lastEOS + 1
                if history[p] == eos { lastEOS = p }
            }
            for t in 0..<sequence.count {
                let p = context + t
                func shifted(_ k: Int) -> Int64 { Int64(p - segmentStart[p] >= k && p - k >= 0 ? history[p - k] : eos) }
                for n in 2...ngramSize {
                    var mixed = shifted(0) &* multipliers[0]
                    for k in 1..<n { mixed ^= shifted(k) &* multipliers[k] }
                    for h in 0..<headsPerNgram {
                        let head = (n - 2) * headsPerNgram + h
                        var id = mixed % vocabSizes[head]
                        if id < 0 { id += vocabSizes[head] }
                        let row = id + offsets[head]
                        guard row >= 0, row < Int64(table.rows) else { return nil }
                        result[(sequence.lowerBound + t) * heads + head] = Int(row)
                    }
                }
            }
        }
        return result
    }

    /// Each token's embeddings [tokens, heads · headWidth] within its
    /// sequence (after `context`, as `rows`).
    public func callAsFunction(tokenIDs: [Int], sequences: [Range<Int>], context: [Int]? = nil) -> Matrix? {
        guard let rows = rows(tokenIDs: tokenIDs, sequences: sequences, context: context) else { return nil }
        let width = table.cols, heads = heads
        return Matrix(uninitialized: tokenIDs.count, heads * width) { out in
            table.data.withUnsafeBufferPointer { t in
                for (i, row) in rows.enumerated() { (out + i * width).update(from: t.baseAddress! + row * width, count: width) }
            }
        }
    }
}

/// Qwen4-Exp's per-layer embedding (transformers' `Qwen4ExpTextPLELayer`),
/// added to the hyper-connected stream X [rows, streams · hidden] as the
/// layer begins. With e the n-gram embeddings (`NGramEmbedding`) and the
/// grouped (1 + w) RMS norms `norm_key`, `norm_query`, `norm_conv` (per
/// stream, weights [streams · hidden]):
///
///     key = norm_key(key_proj e) [streams, hidden], value = value_proj e [hidden]
///     g_s = Σ (key_s ⊙ norm_query(X)_s) / √hidden,  g_s ← sign(g_s) · √max(|g_s|, 1e-6)
///     v_s = σ(g_s) · value
///     PLE = v + silu(conv(norm_conv(v)))
///
/// conv a depthwise causal convolution per column of `kernel` taps spaced
/// `dilation` (ngram_size) apart, without bias, within each sequence.
public struct PerLayerNGramBranch: Sendable {
    public let embedding: NGramEmbedding
    /// `key_proj` [streams · hidden, ple_embed_dim], `value_proj` [hidden, ple_embed_dim].
    public let key: Linear, value: Linear
    public let keyNorm: Normalization, queryNorm: Normalization, convolutionNorm: Normalization
    /// `conv1d.weight` [streams · hidden, 1, kernel].
    public let taps: [Float]
    public let kernel: Int, dilation: Int
    public let streams: Int

    public init(
        embedding: NGramEmbedding, key: Linear, value: Linear, keyNorm: Normalization, queryNorm: Normalization,
        convolutionNorm: Normalization, taps: [Float], kernel: Int, dilation: Int, streams: Int
    ) {
        precondition(key.outFeatures == streams * value.outFeatures && taps.count == key.outFeatures * kernel && kernel >= 1)
        self.embedding = embedding
        self.key = key
        self.value = value
        self.keyNorm = keyNorm
        self.queryNorm = queryNorm
        self.convolutionNorm = convolutionNorm
        self.taps = taps
        self.kernel = kernel
        self.dilation = dilation
        self.streams = streams
    }

    public var width: Int { value.outFeatures }

    /// The stream `x` with the PLE added, for the rows' tokens `tokenIDs` in `sequences`.
    public func callAsFunction(_ x: Matrix, tokenIDs: [Int], sequences: [Range<Int>]) -> Matrix {
        let e = embedding(tokenIDs: tokenIDs, sequences: sequences)!
        let (gated, normed) = gatedValues(x, embeddings: e)
        var result = x
        for sequence in sequences {
            add(gated, normed, rows: sequence, history: [], to: &result)
        }
        return result
    }

    /// What a decoder keeps of one sequence between tokens, as transformers'
    /// cache keeps it: the last `ngramSize − 1` token ids (eos before the
    /// first) and the convolution's inputs of the last (kernel − 1) · dilation tokens.
    public struct State: Sendable {
        fileprivate var context: [Int]
        /// [rows, streams · hidden], the oldest first; fewer rows at the sequence's start.
        fileprivate var history: [Float] = []
        fileprivate let initialContext: [Int]

        public mutating func reset() {
            context = initialContext
            history = []
        }
    }

    /// The state before a sequence's first token.
    public func emptyState() -> State {
        let start = [Int](repeating: embedding.eos, count: embedding.ngramSize - 1)
        return State(context: start, initialContext: start)
    }

    /// `callAsFunction` of rows `x`, the sequence's next tokens `tokenIDs`
    /// after those `state` has seen; updates `state`.
    public func decode(_ x: Matrix, tokenIDs: [Int], state: inout State) -> Matrix {
        let e = embedding(tokenIDs: tokenIDs, sequences: [0..<x.rows], context: state.context)!
        let (gated, normed) = gatedValues(x, embeddings: e)
        var result = x
        let channels = streams * width
        add(gated, normed, rows: 0..<x.rows, history: state.history, to: &result)
        state.context = Array((state.context + tokenIDs).suffix(embedding.ngramSize - 1))
        let kept = (kernel - 1) * dilation
        state.history = Array((state.history + normed.data).suffix(kept * channels))
        return result
    }

    /// Each row's gated value v [rows, streams · hidden] and norm_conv(v).
    private func gatedValues(_ x: Matrix, embeddings e: Matrix) -> (gated: Matrix, normed: Matrix) {
        let streams = streams, width = width, channels = streams * width, rows = x.rows
        var keys = key(e)
        keyNorm.apply(inPlace: &keys, columns: 0..<channels, pieceWidth: width, weightsPerPiece: true)
        var queries = x
        queryNorm.apply(inPlace: &queries, columns: 0..<channels, pieceWidth: width, weightsPerPiece: true)
        let values = value(e)
        let root = Float(width).squareRoot()
        var gated = Matrix(zeros: rows, channels)
        for r in 0..<rows {
            for s in 0..<streams {
                var dot: Float = 0
                for j in 0..<width { dot += keys.data[r * channels + s * width + j] * queries.data[r * channels + s * width + j] }
                var g = dot / root
                g = g == 0 ? 0 : (g > 0 ? 1 : -1) * max(abs(g), 1e-6).squareRoot()
                let gate = 1 / (1 + exp(-g))
                for j in 0..<width { gated.data[r * channels + s * width + j] = gate * values.data[r * width + j] }
            }
        }
        var normed = gated
        convolutionNorm.apply(inPlace: &normed, columns: 0..<channels, pieceWidth: width, weightsPerPiece: true)
        return (gated, normed)
    }

    /// Adds v + silu(conv(norm_conv(v))) of rows `sequence` to `result`,
    /// the convolution reading `history` (the rows before, [rows, channels]) before them.
    private func add(_ gated: Matrix, _ normed: Matrix, rows sequence: Range<Int>, history: [Float], to result: inout Matrix) {
        let channels = streams * width, before = history.count / channels
        for t in 0..<sequence.count {
            let r = sequence.lowerBound + t
            for c in 0..<channels {
                var sum: Float = 0
                for k in 0..<kernel {
                    let source = t - (kernel - 1 - k) * dilation
                    if source >= 0 {
                        sum += taps[c * kernel + k] * normed.data[(sequence.lowerBound + source) * channels + c]
                    } else if before + source >= 0 {
                        sum += taps[c * kernel + k] * history[(before + source) * channels + c]
                    }
                }
                let activated = sum / (1 + exp(-sum))
                result.data[r * channels + c] += gated.data[r * channels + c] + activated
            }
        }
    }
}

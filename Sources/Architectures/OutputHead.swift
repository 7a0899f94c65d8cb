import Foundation
import TensorEngine

/// The final norm and the projection to vocabulary logits.
public struct OutputHead: Sendable {
    /// Absent where the model ends without one (OPT-350m, whose post-LN
    /// blocks leave the stream normalised).
    public let norm: Normalization?
    /// A linear between the norm and the head, from the stream's width to
    /// the embedding's (OPT-350m's `project_out`, hidden_size →
    /// word_embed_proj_dim); nil for most models.
    public let projectOut: Linear?
    public let projection: Linear
    /// Logits z become tanh(z / cap) · cap (Gemma-2's `final_logit_softcapping`).
    public let logitSoftcap: Float?
    /// Logits z become z / divisor (Granite's `logits_scaling`): no change
    /// to a greedy choice, but a different distribution, so perplexity and
    /// log-likelihoods depend on it.
    public let logitDivisor: Float?
    /// Logits z become z · scale (Cohere's `logit_scale`), as perplexity sees them.
    public let logitScale: Float?
    /// Collapses several streams into one hidden state before the norm
    /// (Hunyuan V4's `hc_head`, Gemma 3n's AltUp unembedding); nil where
    /// the stream is one.
    public var streamCollapse: (any StreamCollapse)? = nil
    /// A dense layer, its activation and a norm between the final norm and
    /// the projection (ModernBERT decoder's prediction head `lm_head`); nil for most models.
    public var predictionHead: PredictionHead? = nil
    /// Token ids whose logits are set to float32's lowest value, never
    /// predicted (Chameleon's image tokens, as its head masks them).
    public var suppressedTokens: [Int] = []

    public init(
        norm: Normalization?, projectOut: Linear? = nil, projection: Linear, logitSoftcap: Float? = nil, logitDivisor: Float? = nil,
        logitScale: Float? = nil
    ) {
        precondition(projection.inFeatures == projectOut?.outFeatures ?? projection.inFeatures)
        self.norm = norm
        self.projectOut = projectOut
        self.projection = projection
        self.logitSoftcap = logitSoftcap
        self.logitDivisor = logitDivisor
        self.logitScale = logitScale
    }

    public var vocabularySize: Int { projection.outFeatures }

    /// Log-probabilities (natural log) of `targets[r]` given row r of the
    /// final hidden state, computed in chunks of rows so the [rows × vocab]
    /// logits never exist all at once. Rows with a negative target are skipped (NaN).
    /// Every target must have a logit (below `vocabularySize`): callers refuse
    /// others first (`CalibrationSet.checkPredictable`).
    public func logProbabilities(_ hidden: Matrix, targets: [Int], chunkRows: Int = 512) -> [Double] {
        precondition(targets.count == hidden.rows)
        precondition(targets.allSatisfy { $0 < vocabularySize }, "a target beyond the head's \(vocabularySize) logits")
        var result = [Double](repeating: .nan, count: hidden.rows)
        let vocabulary = vocabularySize
        var start = 0
        while start < hidden.rows {
            let end = min(hidden.rows, start + chunkRows)
            let rows = Matrix(rows: end - start, cols: hidden.cols, data: Array(hidden.data[(start * hidden.cols)..<(end * hidden.cols)]))
            let logits = logits(rows)
            logits.data.withUnsafeBufferPointer { values in
                result.withUnsafeMutableBufferPointer { out in
                    parallelFor(chunks: end - start, minimumChunk: 8) { range in
                        for r in range where targets[start + r] >= 0 {
                            let row = values.baseAddress! + r * vocabulary
                            var maximum = -Float.infinity
                            for j in 0..<vocabulary { maximum = max(maximum, row[j]) }
                            var sum = 0.0
                            for j in 0..<vocabulary { sum += Double(exp(row[j] - maximum)) }
                            out[start + r] = Double(row[targets[start + r]] - maximum) - log(sum)
                        }
                    }
                }
            }
            start = end
        }
        return result
    }

    /// Logits of selected rows (for checks and decoding).
    public func logits(_ hidden: Matrix) -> Matrix {
        let collapsed = streamCollapse.map { $0(hidden) } ?? hidden
        let normed = norm.map { $0(collapsed) } ?? collapsed
        let projected = projectOut.map { $0(normed) } ?? normed
        var logits = projection(predictionHead.map { $0(projected) } ?? projected)
        if let divisor = logitDivisor {
            // Divided, not multiplied by 1 / divisor: transformers' rounding.
            logits.data.withUnsafeMutableBufferPointer { values in
                parallelFor(chunks: values.count, minimumChunk: 1 << 14) { range in
                    for i in range { values[i] /= divisor }
                }
            }
        }
        if let scale = logitScale {
            logits.data.withUnsafeMutableBufferPointer { values in
                parallelFor(chunks: values.count, minimumChunk: 1 << 14) { range in
                    for i in range { values[i] *= scale }
                }
            }
        }
        if let cap = logitSoftcap {
            logits.data.withUnsafeMutableBufferPointer { values in
                parallelFor(chunks: values.count, minimumChunk: 1 << 14) { range in
                    for i in range { values[i] = tanh(values[i] / cap) * cap }
                }
            }
        }
        if !suppressedTokens.isEmpty {
            let vocabulary = vocabularySize
            logits.data.withUnsafeMutableBufferPointer { values in
                for r in 0..<logits.rows {
                    for token in suppressedTokens { values[r * vocabulary + token] = -.greatestFiniteMagnitude }
                }
            }
        }
        return logits
    }
}

/// What collapses a model's streams [rows, streams · hidden] into one
/// hidden state [rows, hidden] before the final norm.
public protocol StreamCollapse: Sendable {
    func callAsFunction(_ stream: Matrix) -> Matrix
    /// How many streams it collapses.
    var streams: Int { get }
    /// The projections it applies, for cost estimates.
    var projections: [Linear] { get }
}

/// norm(act(dense(x))): a transform of the final hidden state before the
/// vocabulary projection (ModernBERT decoder's `ModernBertDecoderPredictionHead`).
public struct PredictionHead: Sendable {
    public let dense: Linear
    public let activation: Activation
    public let norm: Normalization

    public init(dense: Linear, activation: Activation, norm: Normalization) {
        self.dense = dense
        self.activation = activation
        self.norm = norm
    }

    public func callAsFunction(_ x: Matrix) -> Matrix {
        var hidden = dense(x)
        activation.apply(inPlace: &hidden)
        return norm(hidden)
    }
}

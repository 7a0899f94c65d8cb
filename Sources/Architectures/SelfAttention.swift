import TensorEngine

/// Multi-head (grouped-query) causal self-attention with one fused QKV
/// projection, optional rotary embedding and optional sliding window, plus
/// the per-family adjustments some checkpoints need (OLMo's q/k/v clipping,
/// OLMo-2's q/k norms, Gemma-2's attention logit soft cap).
public struct SelfAttention: Sendable {
    public let qkv: Linear
    public let layout: QKVLayout
    public let rotary: RotaryEmbedding?
    public let output: Linear
    public let scale: Float
    public let slidingWindow: Int?
    /// q, k and v are clamped to [−clip, clip] right after the projection (OLMo's `clip_qkv`).
    public let clip: Float?
    /// Norms over all query / all key columns at once, before rotary (OLMo-2).
    public let queryNorm: Normalization?
    public let keyNorm: Normalization?
    /// Scaled scores s become tanh(s / cap) · cap before the softmax (Gemma-2).
    public let logitSoftcap: Float?

    public init(
        qkv: Linear, layout: QKVLayout, rotary: RotaryEmbedding?, output: Linear, scale: Float,
        slidingWindow: Int? = nil, clip: Float? = nil, queryNorm: Normalization? = nil, keyNorm: Normalization? = nil,
        logitSoftcap: Float? = nil
    ) {
        precondition(qkv.outFeatures == layout.width)
        precondition((queryNorm == nil && keyNorm == nil) || layout.arrangement == .grouped)
        self.qkv = qkv
        self.layout = layout
        self.rotary = rotary
        self.output = output
        self.scale = scale
        self.slidingWindow = slidingWindow
        self.clip = clip
        self.queryNorm = queryNorm
        self.keyNorm = keyNorm
        self.logitSoftcap = logitSoftcap
    }

    /// Queries, keys and values of `x`, ready to attend: projected, clipped,
    /// normalised and rotated to the rows' `positions`.
    public func projectedQKV(_ x: Matrix, positions: [Int]) -> Matrix {
        var projected = qkv(x)
        if let clip {
            projected.data.withUnsafeMutableBufferPointer { values in
                for i in values.indices { values[i] = min(max(values[i], -clip), clip) }
            }
        }
        // Grouped layout: all query columns, then all key columns.
        let queryWidth = layout.numHeads * layout.headDim
        let keyWidth = layout.numKVHeads * layout.headDim
        queryNorm?.apply(inPlace: &projected, columns: 0..<queryWidth)
        keyNorm?.apply(inPlace: &projected, columns: queryWidth..<(queryWidth + keyWidth))
        if let rotary {
            let heads = (0..<layout.numHeads).map(layout.queryOffset(head:))
                + (0..<layout.numKVHeads).map(layout.keyOffset(kvHead:))
            projected.data.withUnsafeMutableBufferPointer { buffer in
                rotary.apply(to: buffer.baseAddress!, rowStride: layout.width, headOffsets: heads, positions: positions)
            }
        }
        return projected
    }

    public func callAsFunction(_ x: Matrix, _ batch: TokenBatch) -> Matrix {
        let attended = causalAttention(
            qkv: projectedQKV(x, positions: batch.positions), layout: layout, sequences: batch.sequences, scale: scale,
            slidingWindow: slidingWindow, logitSoftcap: logitSoftcap)
        return output(attended)
    }
}

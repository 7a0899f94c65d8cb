import TensorEngine

/// Multi-head (grouped-query) causal self-attention with one fused QKV
/// projection, optional rotary embedding and optional sliding window.
public struct SelfAttention: Sendable {
    public let qkv: Linear
    public let layout: QKVLayout
    public let rotary: RotaryEmbedding?
    public let output: Linear
    public let scale: Float
    public let slidingWindow: Int?

    public init(
        qkv: Linear, layout: QKVLayout, rotary: RotaryEmbedding?, output: Linear, scale: Float,
        slidingWindow: Int? = nil
    ) {
        precondition(qkv.outFeatures == layout.width)
        self.qkv = qkv
        self.layout = layout
        self.rotary = rotary
        self.output = output
        self.scale = scale
        self.slidingWindow = slidingWindow
    }

    public func callAsFunction(_ x: Matrix, _ batch: TokenBatch) -> Matrix {
        var projected = qkv(x)
        if let rotary {
            let heads = (0..<layout.numHeads).map(layout.queryOffset(head:))
                + (0..<layout.numKVHeads).map(layout.keyOffset(kvHead:))
            projected.data.withUnsafeMutableBufferPointer { buffer in
                rotary.apply(
                    to: buffer.baseAddress!, rowStride: layout.width, headOffsets: heads, positions: batch.positions)
            }
        }
        let attended = causalAttention(
            qkv: projected, layout: layout, sequences: batch.sequences, scale: scale, slidingWindow: slidingWindow)
        return output(attended)
    }
}

import TensorEngine

/// Softmax attention and a Mamba-2 mixer side by side on the same
/// normalised input, their outputs summed (Falcon-H1's layers): one token
/// mixer, the layer's attention module, scored and dropped as a whole.
///
/// As transformers' `FalconH1DecoderLayer` computes it:
/// mamba(x · ssmIn) · ssmOut + attention(x · attentionIn) · attentionOut,
/// each factor a Python float times float32 activations (nil: none).
public struct AttentionBesideMamba2: Sendable {
    public let attention: SelfAttention
    public let mamba: Mamba2Mixer
    /// `attention_in_multiplier`: multiplies the attention's input.
    public let attentionInputScale: Float?
    /// `attention_out_multiplier`: multiplies the attention's output.
    public let attentionOutputScale: Float?
    /// `ssm_in_multiplier`: multiplies the Mamba-2 mixer's input.
    public let mambaInputScale: Float?
    /// `ssm_out_multiplier`: multiplies the Mamba-2 mixer's output.
    public let mambaOutputScale: Float?

    public init(
        attention: SelfAttention, mamba: Mamba2Mixer, attentionInputScale: Float? = nil, attentionOutputScale: Float? = nil,
        mambaInputScale: Float? = nil, mambaOutputScale: Float? = nil
    ) {
        self.attention = attention
        self.mamba = mamba
        self.attentionInputScale = attentionInputScale
        self.attentionOutputScale = attentionOutputScale
        self.mambaInputScale = mambaInputScale
        self.mambaOutputScale = mambaOutputScale
    }

    /// The summed output for normalised input `x`: `attend` runs the
    /// attention on its scaled input, `recur` the Mamba-2 mixer on its own
    /// (over the whole batch, or over a key/value cache and a recurrent
    /// state when decoding).
    public func callAsFunction(
        _ x: Matrix, attend: (SelfAttention, Matrix) -> Matrix, recur: (any RecurrentTokenMixer, Matrix) -> Matrix
    ) -> Matrix {
        let mixed = recur(mamba, x.scaled(by: mambaInputScale)).scaled(by: mambaOutputScale)
        let attended = attend(attention, x.scaled(by: attentionInputScale)).scaled(by: attentionOutputScale)
        return mixed.adding(attended)
    }
}

import TensorEngine

/// How a block combines its two branches with the residual stream.
public enum ResidualStyle: Sendable {
    /// h = x + attn(x); y = h + mlp(h)   (Llama, GPT-2, most models).
    case sequential
    /// y = x + attn(x) + mlp(x)   (GPT-NeoX / Pythia, GPT-J).
    case parallel
}

/// One residual branch's output before it is added to the stream: the
/// branch's own norm(s) included, so dropping the branch drops them too.
public struct AttentionBranch: Sendable {
    /// Absent where the branch reads the raw residual stream (OLMo-2).
    public let inputNorm: Normalization?
    public let attention: SelfAttention
    /// Applied to the branch output inside the residual (OLMo-2, Gemma-2).
    public let outputNorm: Normalization?

    public init(inputNorm: Normalization?, attention: SelfAttention, outputNorm: Normalization? = nil) {
        self.inputNorm = inputNorm
        self.attention = attention
        self.outputNorm = outputNorm
    }

    public func callAsFunction(_ x: Matrix, _ batch: TokenBatch) -> Matrix {
        let out = attention(inputNorm.map { $0(x) } ?? x, batch)
        return outputNorm.map { $0(out) } ?? out
    }
}

public struct MLPBranch: Sendable {
    public let inputNorm: Normalization?
    public let feedForward: FeedForward
    public let outputNorm: Normalization?

    public init(inputNorm: Normalization?, feedForward: FeedForward, outputNorm: Normalization? = nil) {
        self.inputNorm = inputNorm
        self.feedForward = feedForward
        self.outputNorm = outputNorm
    }

    public func callAsFunction(_ x: Matrix) -> Matrix {
        let out = feedForward(inputNorm.map { $0(x) } ?? x)
        return outputNorm.map { $0(out) } ?? out
    }
}

/// A transformer block as droptrace sees it: two residual branches, either
/// of which may be dropped (nil).
public struct TransformerBlock: Sendable {
    public let attention: AttentionBranch?
    public let mlp: MLPBranch?
    public let residual: ResidualStyle

    public init(attention: AttentionBranch?, mlp: MLPBranch?, residual: ResidualStyle) {
        self.attention = attention
        self.mlp = mlp
        self.residual = residual
    }
}

import TensorEngine

extension DecoderParts {
    /// Layer attention stored as transformers' usual `q_proj`, `k_proj`,
    /// `v_proj` and `o_proj` under `prefix` (e.g. "layers.3.self_attn."),
    /// with the heads of `attentionLayout` (q/k/v stacked into one
    /// projection, grouped q | k | v).
    ///
    /// - Parameters:
    ///   - bias: whether q/k/v_proj have biases; `outputBias` for o_proj
    ///     (the same unless given: Qwen2 has q/k/v biases only); `outputName`
    ///     for o_proj's name (Phi's `dense`).
    ///   - scale: the softmax scale, 1/√head_dim unless given.
    ///   - the rest: as `SelfAttention` takes them.
    /// - Throws: `DroptraceError` for a missing tensor or a shape the sizes contradict.
    func attention(
        _ prefix: String, bias: Bool, outputBias: Bool? = nil, outputName: String = "o_proj", rotary: RotaryEmbedding?, scale: Float? = nil,
        slidingWindow: Int? = nil, clip: Float? = nil, queryKeyNorm: QueryKeyNorm? = nil, logitSoftcap: Float? = nil,
        sinkLogits: [Float]? = nil
    ) throws -> SelfAttention {
        let layout = attentionLayout, d = dimensions.hiddenSize
        return SelfAttention(
            qkv: try weights.stackedQKV(prefix, hidden: d, layout: layout, bias: bias),
            layout: layout,
            rotary: rotary,
            output: try weights.linear(prefix + outputName, in: layout.queryWidth, out: d, bias: outputBias ?? bias),
            scale: scale ?? 1 / Float(layout.headDim).squareRoot(),
            slidingWindow: slidingWindow, clip: clip, queryKeyNorm: queryKeyNorm, logitSoftcap: logitSoftcap,
            sinkLogits: sinkLogits)
    }
}

import TensorEngine

extension Weights {
    /// An attention whose query projection `queryGate` under `prefix` gives
    /// each head's queries then its output gate ([heads · 2 · head_dim, hidden]
    /// rows, head after head: Qwen3NextAttention's q_proj,
    /// MiniCPM5MoeAttention's q_gate_proj), beside k_proj and v_proj: the
    /// queries stacked with k_proj and v_proj into the q | k | v projection
    /// of `layout`, and the gate rows as a projection of their own
    /// ([heads · head_dim, hidden]; the attention output is multiplied by
    /// the sigmoid of its output before o_proj).
    /// - Throws: `DroptraceError` for a missing tensor or a shape `layout` contradicts.
    func gatedQueryProjections(
        _ prefix: String, queryGate: String, layout: QKVLayout, hidden d: Int, bias: Bool
    ) throws -> (qkv: Linear, gate: Linear) {
        let headDim = layout.headDim, heads = layout.numHeads
        let combined = try linear(prefix + queryGate, in: d, out: 2 * heads * headDim, bias: bias)
        let keyValue = try stackedLinear([prefix + "k_proj", prefix + "v_proj"], in: d, outs: [layout.keyWidth, layout.keyWidth], bias: bias)
        /// Each head's queries (`gate` false) or gate rows, head after head.
        func rows(_ values: [Float], width: Int, gate: Bool) -> [Float] {
            (0..<heads).flatMap { h in
                let start = (2 * h + (gate ? 1 : 0)) * headDim * width
                return values[start..<(start + headDim * width)]
            }
        }
        let qkv = Linear(
            weight: rows(combined.weight, width: d, gate: false) + keyValue.weight,
            bias: bias ? rows(combined.bias!, width: 1, gate: false) + keyValue.bias! : nil, inFeatures: d, outFeatures: layout.width)
        let gate = Linear(
            weight: rows(combined.weight, width: d, gate: true), bias: bias ? rows(combined.bias!, width: 1, gate: true) : nil,
            inFeatures: d, outFeatures: layout.queryWidth)
        return (qkv, gate)
    }
}

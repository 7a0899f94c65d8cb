import DroptraceSupport

/// llama.cpp's tensor names mapped back to the Hugging Face names and layouts
/// droptrace's architectures read, per GGUF architecture.
///
/// llama.cpp's converter changes three things besides names, each undone
/// here without copying the weights (see `TensorSlice.StoredOrder`):
/// - `llama`: rows of Q and K are permuted per head from Hugging Face's
///   rotate-half layout to interleaved pairs (row h·d + s·d/2 + i is stored
///   at h·d + 2i + s);
/// - `gptneox`: the fused QKV rows, per head [q_h, k_h, v_h] in Hugging Face,
///   are stored as all q, then all k, then all v;
/// - `gpt2`: Conv1D weights ([in, out]) are stored transposed.
struct GGUFTensorNames {
    let family: GGUFFamily
    /// Query heads, key/value heads and head width, for the row permutations.
    let heads: Int
    let kvHeads: Int
    let headDim: Int

    /// The Hugging Face name and stored order of a GGUF tensor, or nil for
    /// tensors with no Hugging Face counterpart (e.g. `rope_freqs.weight`).
    func huggingFace(_ name: String, rows: Int) -> (name: String, order: TensorSlice.StoredOrder)? {
        let parts = name.split(separator: ".", maxSplits: 2).map(String.init)
        if parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]) {
            let rest = parts[2]
            guard let dot = rest.lastIndex(of: ".") else { return nil }
            let (base, kind) = (String(rest[..<dot]), String(rest[rest.index(after: dot)...]))
            guard let module = blockModule(base) else { return nil }
            return ("\(family.prefix)\(family.layers).\(layer).\(module).\(kind)", order(base: base, rows: rows))
        }
        guard let mapped = topLevel[name] else { return nil }
        return (mapped, .asShaped)
    }

    private var topLevel: [String: String] {
        let p = family.prefix
        switch family {
        case .llama, .qwen2, .qwen3, .qwen3moe, .olmoe:
            return ["token_embd.weight": p + "embed_tokens.weight", "output_norm.weight": p + "norm.weight",
                    "output.weight": "lm_head.weight"]
        case .gptneox:
            return ["token_embd.weight": p + "embed_in.weight", "output_norm.weight": p + "final_layer_norm.weight",
                    "output_norm.bias": p + "final_layer_norm.bias", "output.weight": "lm_head.weight"]
        case .gpt2:
            return ["token_embd.weight": p + "wte.weight", "position_embd.weight": p + "wpe.weight",
                    "output_norm.weight": p + "ln_f.weight", "output_norm.bias": p + "ln_f.bias",
                    "output.weight": "lm_head.weight"]
        }
    }

    private func blockModule(_ base: String) -> String? {
        var table: [String: String]
        switch family {
        case .llama, .qwen2, .qwen3, .qwen3moe, .olmoe:
            table = ["attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                     "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                     "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                     "ffn_down": "mlp.down_proj"]
            if family != .llama && family != .qwen2 {
                table["attn_q_norm"] = "self_attn.q_norm"
                table["attn_k_norm"] = "self_attn.k_norm"
            }
            if family.hasExperts { table["ffn_gate_inp"] = "mlp.gate" }
        case .gptneox:
            table = ["attn_norm": "input_layernorm", "attn_qkv": "attention.query_key_value",
                     "attn_output": "attention.dense", "ffn_norm": "post_attention_layernorm",
                     "ffn_up": "mlp.dense_h_to_4h", "ffn_down": "mlp.dense_4h_to_h"]
        case .gpt2:
            table = ["attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2",
                     "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"]
        }
        return table[base]
    }

    private func order(base: String, rows: Int) -> TensorSlice.StoredOrder {
        switch (family, base) {
        case (.llama, "attn_q"): return .rowsPermuted(Self.unpermuteRotaryRows(rows: rows, heads: heads))
        case (.llama, "attn_k"): return .rowsPermuted(Self.unpermuteRotaryRows(rows: rows, heads: kvHeads))
        case (.gptneox, "attn_qkv"): return .rowsPermuted(Self.interleaveQKVRows(heads: heads, headDim: headDim))
        default: return .asShaped
        }
    }

    /// Where Hugging Face's row r of a Q or K projection sits in llama.cpp's
    /// layout: within each head, rows s·half + i (s = 0, 1) were moved to 2i + s.
    static func unpermuteRotaryRows(rows: Int, heads: Int) -> [Int] {
        let width = rows / heads, half = width / 2
        return (0..<rows).map { r in
            let (head, within) = r.quotientAndRemainder(dividingBy: width)
            let (s, i) = within.quotientAndRemainder(dividingBy: half)
            return head * width + 2 * i + s
        }
    }

    /// Where Hugging Face's row r of GPT-NeoX's fused QKV (per head: q, k, v)
    /// sits in llama.cpp's layout (all q rows, all k rows, all v rows).
    static func interleaveQKVRows(heads: Int, headDim: Int) -> [Int] {
        let width = heads * headDim
        return (0..<(3 * width)).map { r in
            let (head, within) = r.quotientAndRemainder(dividingBy: 3 * headDim)
            let (part, i) = within.quotientAndRemainder(dividingBy: headDim)
            return part * width + head * headDim + i
        }
    }

    /// For `blk.<l>.ffn_<gate|up|down>_exps.weight` (experts × out × in, one
    /// [out, in] matrix per expert), the Hugging Face name of expert e's
    /// projection, as `save_pretrained` writes them
    /// (`model.layers.<l>.mlp.experts.<e>.gate_proj.weight`).
    func expertName(_ name: String) -> ((Int) -> String)? {
        guard family.hasExperts else { return nil }
        let parts = name.split(separator: ".").map(String.init)
        let projections = ["ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"]
        guard parts.count == 4, parts[0] == "blk", let layer = Int(parts[1]), let projection = projections[parts[2]],
              parts[3] == "weight" else { return nil }
        return { "\(family.prefix)\(family.layers).\(layer).mlp.experts.\($0).\(projection).weight" }
    }

    /// GPT-2's Conv1D weights are stored as torch.nn.Linear would hold them.
    func isTransposedConv1D(_ name: String) -> Bool {
        guard family == .gpt2, name.hasPrefix("blk."), name.hasSuffix(".weight") else { return false }
        return ["attn_qkv", "attn_output", "ffn_up", "ffn_down"].contains { name.hasSuffix(".\($0).weight") }
    }
}

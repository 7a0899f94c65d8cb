import DroptraceSupport
import Foundation

/// The tensors llama.cpp's converter splits or merges, put back together
/// (computed when expanded, never held), and DeepSeek's config, which
/// translates most keys.
enum GGUFLayouts {
    /// DeepSeek's `kv_b_proj` ([heads · (qk_nope + v_head), kv_lora_rank]) from
    /// `attn_k_b` ([heads, kv_lora_rank, qk_nope], each head's key rows
    /// transposed) and `attn_v_b` ([heads, v_head, kv_lora_rank]).
    static let latentKVB = GGUFArchitecture.Composite(
        name: "self_attn.kv_b_proj.weight", sources: ["attn_k_b.weight", "attn_v_b.weight"]
    ) { name, sources, config in
        let (k, v) = (sources[0], sources[1])
        let heads = config.heads, rank = try config.int("kv_lora_rank")
        let nope = try config.int("qk_nope_head_dim"), width = try config.int("v_head_dim")
        try expect(k, [heads, rank, nope], "heads, kv_lora_rank and qk_nope_head_dim")
        try expect(v, [heads, width, rank], "heads, v_head_dim and kv_lora_rank")
        let rows = nope + width
        return .computed(name: name, shape: [heads * rows, rank], path: k.path) {
            let (keys, values) = (try k.floats(), try v.floats())
            var out = [Float](repeating: 0, count: heads * rows * rank)
            for h in 0..<heads {
                for i in 0..<nope {
                    for r in 0..<rank { out[(h * rows + i) * rank + r] = keys[(h * rank + r) * nope + i] }
                }
                let start = (h * rows + nope) * rank
                out[start..<(start + width * rank)] = values[(h * width * rank)..<((h + 1) * width * rank)]
            }
            return out
        }
    }

    /// gpt-oss's fused expert tensors from llama.cpp's stacks: `gate_up_proj`
    /// ([experts, hidden, 2 · inter], gate in even and up in odd columns) from
    /// `ffn_gate_exps` and `ffn_up_exps` ([experts, inter, hidden]), their
    /// biases likewise, and `down_proj` ([experts, inter, hidden]) from
    /// `ffn_down_exps` ([experts, hidden, inter]).
    static let gptOssExperts: [GGUFArchitecture.Composite] = [
        .init(name: "mlp.experts.gate_up_proj", sources: ["ffn_gate_exps.weight", "ffn_up_exps.weight"]) { name, sources, config in
            let experts = try config.int("num_local_experts"), inter = try config.int("intermediate_size"), hidden = try config.int("hidden_size")
            for source in sources { try expect(source, [experts, inter, hidden], "experts, intermediate_size and hidden_size") }
            let (gate, up) = (sources[0], sources[1])
            return .computed(name: name, shape: [experts, hidden, 2 * inter], path: gate.path) {
                let (g, u) = (try gate.floats(), try up.floats())
                var out = [Float](repeating: 0, count: g.count * 2)
                for e in 0..<experts {
                    for i in 0..<inter {
                        let from = (e * inter + i) * hidden
                        for h in 0..<hidden {
                            let to = (e * hidden + h) * 2 * inter + 2 * i
                            out[to] = g[from + h]
                            out[to + 1] = u[from + h]
                        }
                    }
                }
                return out
            }
        },
        .init(name: "mlp.experts.gate_up_proj_bias", sources: ["ffn_gate_exps.bias", "ffn_up_exps.bias"]) { name, sources, config in
            let experts = try config.int("num_local_experts"), inter = try config.int("intermediate_size")
            for source in sources { try expect(source, [experts, inter], "experts and intermediate_size") }
            let (gate, up) = (sources[0], sources[1])
            return .computed(name: name, shape: [experts, 2 * inter], path: gate.path) {
                let (g, u) = (try gate.floats(), try up.floats())
                var out = [Float](repeating: 0, count: g.count * 2)
                for j in 0..<g.count {
                    out[2 * j] = g[j]
                    out[2 * j + 1] = u[j]
                }
                return out
            }
        },
        .init(name: "mlp.experts.down_proj", sources: ["ffn_down_exps.weight"]) { name, sources, config in
            let experts = try config.int("num_local_experts"), inter = try config.int("intermediate_size"), hidden = try config.int("hidden_size")
            let down = sources[0]
            try expect(down, [experts, hidden, inter], "experts, hidden_size and intermediate_size")
            return .computed(name: name, shape: [experts, inter, hidden], path: down.path) {
                let stored = try down.floats()
                var out = [Float](repeating: 0, count: stored.count)
                for e in 0..<experts {
                    let base = e * hidden * inter
                    for h in 0..<hidden {
                        for i in 0..<inter { out[base + i * hidden + h] = stored[base + h * inter + i] }
                    }
                }
                return out
            }
        },
    ]

    /// A stored tensor of Hugging Face shape `shape`, or the error naming it.
    private static func expect(_ slice: TensorSlice, _ shape: [Int], _ sizes: String) throws {
        guard GGUFFile.sameShape(slice.shape, shape) else {
            throw DroptraceError(
                "tensor '\(slice.name)' has shape \(slice.shape), but the metadata's \(sizes) make \(shape)", path: slice.path)
        }
    }

    /// DeepSeek-V2 / V3's config.json from the `deepseek2` keys; V3 when the
    /// experts are gated by a sigmoid (`expert_gating_func` 2), as V3 does.
    static func deepseekConfig(_ input: GGUFArchitecture.Input) throws -> [String: Any] {
        let m = input.metadata, sizes = input.sizes
        let keyWidth = sizes.headDim
        let rotary = try m.uint32(input.key("rope.dimension_count"))
        // Mistral Large 3 (Llama 4's attention temperature, written as deepseek2): no DeepSeek model of transformers has it.
        try input.refuseUnmodelled(
            "attention.temperature_scale", inert: 0,
            effect: "scale the queries by 1 + scale · ln(⌊position / attention.temperature_length⌋ + 1)")
        let valueWidth = try m.optionalUInt32(input.key("attention.value_length_mla")) ?? m.uint32(input.key("attention.value_length"))
        let kvRank = try m.uint32(input.key("attention.kv_lora_rank"))
        // 0, as absent: no low-rank query projection (llama.cpp branches on q_lora_rank > 0).
        let qRank = try m.optionalUInt32(input.key("attention.q_lora_rank")).flatMap { $0 == 0 ? nil : $0 }
        let firstDense = try m.optionalUInt32(input.key("leading_dense_block_count")) ?? 0
        let shared = try m.optionalUInt32(input.key("expert_shared_count")) ?? 0
        let gating = try m.optionalUInt32(input.key("expert_gating_func")) ?? 1
        let groups = try m.optionalUInt32(input.key("expert_group_count"))
        let groupsUsed = try m.optionalUInt32(input.key("expert_group_used_count"))
        try ConfigRules.checks(path: input.path) {
            // Interleaved rotary pairs need an even width that leaves a non-rotary part.
            guard rotary >= 2, rotary % 2 == 0, rotary < keyWidth else {
                throw InvalidConfigValue(
                    key: input.key("rope.dimension_count"), problem: "must be even and below the key width \(keyWidth), got \(rotary)")
            }
            try ConfigRules.count(valueWidth, input.key("attention.value_length_mla"))
            try ConfigRules.count(kvRank, input.key("attention.kv_lora_rank"))
            try ConfigRules.countIfPresent(qRank, input.key("attention.q_lora_rank"))
            guard (0...sizes.layers).contains(firstDense) else {
                throw InvalidConfigValue(
                    key: input.key("leading_dense_block_count"), problem: "must be between 0 and the block count \(sizes.layers), got \(firstDense)")
            }
            try ConfigRules.nonNegative(shared, input.key("expert_shared_count"))
            guard [1, 2].contains(gating) else {
                throw InvalidConfigValue(key: input.key("expert_gating_func"), problem: "must be 1 (softmax) or 2 (sigmoid), got \(gating)")
            }
            if let groups {
                try ConfigRules.divides(groups, input.key("expert_group_count"), sizes.experts, input.key("expert_count"))
                guard let groupsUsed, (1...groups).contains(groupsUsed) else {
                    throw InvalidConfigValue(
                        key: input.key("expert_group_used_count"), problem: "must be between 1 and the group count \(groups), got \(groupsUsed.map(String.init) ?? "none")")
                }
            }
        }
        let v3 = gating == 2
        var config = try input.llamaShaped(v3 ? "deepseek_v3" : "deepseek_v2")
        // MLA is multi-head in Hugging Face; llama.cpp's single kv head is its MQA view.
        config["num_key_value_heads"] = sizes.heads
        config["head_dim"] = rotary
        config["qk_rope_head_dim"] = rotary
        config["qk_nope_head_dim"] = keyWidth - rotary
        config["qk_head_dim"] = keyWidth
        config["v_head_dim"] = valueWidth
        config["kv_lora_rank"] = kvRank
        config["q_lora_rank"] = qRank.map { $0 as Any } ?? NSNull()
        config["first_k_dense_replace"] = firstDense
        config["n_shared_experts"] = shared
        config["routed_scaling_factor"] = try m.optionalPositiveFloat32(input.key("expert_weights_scale")) ?? 1
        config["norm_topk_prob"] = try m.optionalBool(input.key("expert_weights_norm")) ?? false
        if sizes.experts > 0 {
            config["n_routed_experts"] = sizes.experts
            config["num_experts_per_tok"] = try GGUFConfiguration.expertsUsed(input)
            config["moe_intermediate_size"] = try GGUFConfiguration.expertWidth(input)
        }
        if v3 {
            config["n_group"] = groups ?? 1
            config["topk_group"] = groupsUsed ?? 1
            config["rope_interleave"] = true
        } else {
            config["topk_method"] = (groups ?? 1) > 1 ? "group_limited_greedy" : "greedy"
            config["n_group"] = groups.map { $0 as Any } ?? NSNull()
            config["topk_group"] = groupsUsed.map { $0 as Any } ?? NSNull()
        }
        return config
    }
}

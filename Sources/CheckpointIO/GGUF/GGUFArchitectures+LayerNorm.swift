import DroptraceSupport
import Foundation

/// The architectures with LayerNorms (weights and, but for Command-R and
/// OLMo, biases), one table each, as `GGUFArchitectures.swift`'s.
extension GGUFArchitecture {
    /// StarCoder2: LayerNorms and linear layers with biases, a GELU (tanh) MLP
    /// of `c_fc` and `c_proj`. llama.cpp has no sliding window for it.
    static let starcoder2 = GGUFArchitecture(
        name: "starcoder2", prefix: "model.", topLevel: llamaTop.merging(["output_norm.bias": "norm.bias"]) { $1 },
        blocks: Place.llamaBlocks.filter { $0.key != "ffn_gate" }.adding([
            "ffn_up": .module("mlp.c_fc", nil), "ffn_down": .module("mlp.c_proj", nil),
        ]),
        attentionRows: .separateQK
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.sized("starcoder2")
        config["norm_epsilon"] = try input.layerNormEpsilon()
        config["hidden_act"] = "gelu_pytorch_tanh"
        config["use_bias"] = try input.everyBlock(has: "attn_q.bias")
        config["sliding_window"] = NSNull()
        return config
    }

    /// Phi-2: one LayerNorm feeding attention and the GELU MLP in parallel,
    /// biases everywhere (the head's too), partial rotary. Files converted from
    /// Microsoft's original layout keep q, k, v fused in `attn_qkv`.
    static let phi2 = GGUFArchitecture(
        name: "phi2", prefix: "model.",
        topLevel: ["token_embd.weight": "embed_tokens.weight", "output_norm.weight": "final_layernorm.weight",
                   "output_norm.bias": "final_layernorm.bias", "output.weight": "lm_head.weight", "output.bias": "lm_head.bias"],
        blocks: [
            "attn_norm": .module("input_layernorm", nil), "attn_q": .module("self_attn.q_proj", nil),
            "attn_k": .module("self_attn.k_proj", nil), "attn_v": .module("self_attn.v_proj", nil),
            "attn_qkv": .rowParts(["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
            "attn_output": .module("self_attn.dense", nil), "ffn_up": .module("mlp.fc1", nil), "ffn_down": .module("mlp.fc2", nil),
        ],
        attentionRows: .projections([("attn_q.weight", .query), ("attn_k.weight", .keyValue), ("attn_qkv.weight", .queryKeyValue)])
    ) { input in
        // The fused rows split in equal thirds only when k and v have as many heads as q.
        if input.block(0, has: "attn_qkv.weight"), input.sizes.kvHeads != input.sizes.heads {
            throw InvalidConfigValue(
                key: input.key("attention.head_count_kv"),
                problem: "must equal head_count \(input.sizes.heads) for a fused attn_qkv, got \(input.sizes.kvHeads)"
            ).error(path: input.path)
        }
        var config = try input.sized("phi")
        config["rope_parameters"] = try GGUFConfiguration.partialRope(input)
        config["layer_norm_eps"] = try input.layerNormEpsilon()
        config["hidden_act"] = "gelu_new"
        config["qk_layernorm"] = false
        return config
    }

    /// StableLM and StableLM-2: LayerNorms with biases, partial rotary,
    /// optional q/k/v biases and per-head q/k LayerNorms (stacked by the
    /// converter into [heads, width]). As in llama.cpp, blocks without an
    /// `ffn_norm` are parallel (the file's use_parallel_residual is not read).
    static let stablelm = GGUFArchitecture(
        name: "stablelm", prefix: "model.", topLevel: llamaTop.merging(["output_norm.bias": "norm.bias"]) { $1 },
        blocks: Place.llamaBlocks.adding([
            "attn_q_norm": .perHead("self_attn.q_layernorm.norms.{e}"), "attn_k_norm": .perHead("self_attn.k_layernorm.norms.{e}"),
        ]),
        attentionRows: .separateQK
    ) { input in
        var config = try input.sized("stablelm")
        config["rope_parameters"] = try GGUFConfiguration.partialRope(input)
        config["layer_norm_eps"] = try input.layerNormEpsilon()
        config["hidden_act"] = "silu"
        config["use_qkv_bias"] = try input.everyBlock(has: "attn_q.bias")
        config["qk_layernorm"] = try input.everyBlock(has: "attn_q_norm.weight")
        config["use_parallel_residual"] = try !input.everyBlock(has: "ffn_norm.weight")
        return config
    }

    /// Command-R (Hugging Face `cohere`): one bias-free LayerNorm feeding
    /// attention and the MLP in parallel, rotary on interleaved pairs as
    /// Hugging Face stores them (no rows move), optional per-head q/k norms
    /// ([heads, width] as in Hugging Face), logits times `logit_scale`.
    static let commandR = GGUFArchitecture(
        name: "command-r", prefix: "model.", topLevel: llamaTop,
        blocks: Place.llamaBlocks.filter { $0.key != "ffn_norm" }.adding(Place.qkNorms),
        attentionRows: .separateQK
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.sized("cohere")
        config["layer_norm_eps"] = try input.layerNormEpsilon()
        config["hidden_act"] = "silu"
        config["logit_scale"] = try input.metadata.positiveFloat32(input.key("logit_scale"))
        config["attention_bias"] = try input.everyBlock(has: "attn_q.bias")
        config["use_qk_norm"] = try input.everyBlock(has: "attn_q_norm.weight")
        return config
    }

    /// OLMo: LayerNorms without parameters (the file has no norm tensors),
    /// Q and K rows permuted as Llama's, optional q/k/v clamp.
    static let olmo = GGUFArchitecture(
        name: "olmo", prefix: "model.", topLevel: ["token_embd.weight": "embed_tokens.weight", "output.weight": "lm_head.weight"],
        blocks: Place.llamaPermutedBlocks.filter { $0.key != "attn_norm" && $0.key != "ffn_norm" },
        attentionRows: .separateQK
    ) { input in
        try GGUFConfiguration.requireInterleavedRotary(input)
        // transformers' OlmoLayerNorm has ε = 1e-5 fixed (what the converter writes).
        let epsilon = try input.layerNormEpsilon()
        guard Float(epsilon) == Float(1e-5) else {
            throw InvalidConfigValue(
                key: input.key("attention.layer_norm_epsilon"), problem: "must be 1e-05 (OLMo's fixed LayerNorm epsilon), got \(epsilon)"
            ).error(path: input.path)
        }
        var config = try input.sized("olmo")
        config["hidden_act"] = "silu"
        config["attention_bias"] = false
        config["clip_qkv"] = try input.metadata.optionalPositiveFloat32(input.key("attention.clamp_kqv")) ?? NSNull()
        return config
    }
}

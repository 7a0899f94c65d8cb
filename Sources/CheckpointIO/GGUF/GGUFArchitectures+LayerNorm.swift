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

extension GGUFArchitecture {
    /// BLOOM: ALiBi instead of rotary (llama.cpp's maximum bias 8 gives
    /// BLOOM's slopes), a LayerNorm after the embedding (`token_embd_norm`),
    /// biases everywhere, the fused QKV regrouped from per-head to all q, all
    /// k, all v. The converter writes a tied head out as a copy of the
    /// embedding (`output.weight`), so the config says untied.
    static let bloom = GGUFArchitecture(
        name: "bloom", prefix: "transformer.", layerList: "h",
        topLevel: ["token_embd.weight": "word_embeddings.weight", "token_embd_norm.weight": "word_embeddings_layernorm.weight",
                   "token_embd_norm.bias": "word_embeddings_layernorm.bias", "output_norm.weight": "ln_f.weight",
                   "output_norm.bias": "ln_f.bias", "output.weight": "lm_head.weight"],
        blocks: ["attn_norm": .module("input_layernorm", nil), "attn_qkv": .module("self_attention.query_key_value", .groupedQKV),
                 "attn_output": .module("self_attention.dense", nil), "ffn_norm": .module("post_attention_layernorm", nil),
                 "ffn_up": .module("mlp.dense_h_to_4h", nil), "ffn_down": .module("mlp.dense_4h_to_h", nil)],
        attentionRows: .fusedPerHead("attn_qkv.weight")
    ) { input in
        let sizes = input.sizes
        // BloomMLP is 4 × hidden wide, whatever the file says.
        guard sizes.feedForward == 4 * sizes.hidden else {
            throw InvalidConfigValue(
                key: input.key("feed_forward_length"), problem: "must be 4 × embedding_length \(sizes.hidden) (BLOOM's MLP), got \(sizes.feedForward)"
            ).error(path: input.path)
        }
        return [
            "model_type": "bloom", "hidden_size": sizes.hidden, "n_layer": sizes.layers, "n_head": sizes.heads,
            "vocab_size": sizes.vocabulary, "layer_norm_epsilon": try input.layerNormEpsilon(),
            "apply_residual_connection_post_layernorm": false, "slow_but_exact": false, "tie_word_embeddings": sizes.tied,
        ]
    }

    /// Falcon: one LayerNorm (7B, Falcon 2) or two (`attn_norm`, `attn_norm_2`:
    /// 40B and 180B's `new_decoder_architecture`) feeding attention and the
    /// GELU MLP in parallel, rotary on whole heads. The converter regroups the
    /// fused QKV of every Falcon from per key/value group to all q, all k, all
    /// v ("jploski" layout) and writes a context of 2048. A single key/value
    /// head without a second norm is Falcon-7B's multi-query attention; more
    /// are the new architecture's groups. llama.cpp has no ALiBi Falcon (RW).
    static let falcon = falconTable(norms: ["attn_norm": .module("input_layernorm", nil)])
    private static let falconTwoNorms = falconTable(
        norms: ["attn_norm": .module("ln_attn", nil), "attn_norm_2": .module("ln_mlp", nil)])

    private static func falconTable(norms: [String: Place]) -> GGUFArchitecture {
        GGUFArchitecture(
            name: "falcon", prefix: "transformer.", layerList: "h",
            topLevel: ["token_embd.weight": "word_embeddings.weight", "output_norm.weight": "ln_f.weight",
                       "output_norm.bias": "ln_f.bias", "output.weight": "lm_head.weight"],
            blocks: norms.merging([
                "attn_qkv": .module("self_attention.query_key_value", .kvGroupedQKV), "attn_output": .module("self_attention.dense", nil),
                "ffn_up": .module("mlp.dense_h_to_4h", nil), "ffn_down": .module("mlp.dense_4h_to_h", nil),
            ]) { $1 },
            attentionRows: .projections([("attn_qkv.weight", .queryKeyValue)]),
            config: { input in
                try GGUFConfiguration.requireWholeHeadRotary(input)
                let sizes = input.sizes, twoNorms = try input.everyBlock(has: "attn_norm_2.weight")
                let multiQuery = sizes.kvHeads == 1 && !twoNorms
                return [
                    "model_type": "falcon", "hidden_size": sizes.hidden, "num_hidden_layers": sizes.layers,
                    // Multi-query attention reads no num_kv_heads; FalconConfig then sets it to the heads.
                    "num_attention_heads": sizes.heads, "num_kv_heads": multiQuery ? sizes.heads : sizes.kvHeads,
                    "ffn_hidden_size": sizes.feedForward,
                    "vocab_size": sizes.vocabulary, "max_position_embeddings": sizes.context,
                    "layer_norm_epsilon": try input.layerNormEpsilon(), "activation": "gelu",
                    "bias": try input.everyBlock(has: "attn_qkv.bias"), "alibi": false, "parallel_attn": true,
                    "multi_query": true, "new_decoder_architecture": !multiQuery,
                    "num_ln_in_parallel_attn": multiQuery ? NSNull() : twoNorms ? 2 : 1,
                    "tie_word_embeddings": sizes.tied, "rope_parameters": try GGUFConfiguration.rope(input),
                ]
            },
            variant: { $0["blk.0.attn_norm_2.weight"] != nil ? falconTwoNorms : falcon })
    }
}

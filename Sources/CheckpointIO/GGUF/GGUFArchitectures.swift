import DroptraceSupport
import Foundation

/// The architectures droptrace reads, one table each. What llama.cpp's
/// converter does is stated per table; `GGUFArchitecture` says what the fields mean.
extension GGUFArchitecture {
    static let all: [GGUFArchitecture] = [
        llama, qwen2, gptneox, gpt2, qwen3, qwen3moe, gemma3, phi3, olmo2, olmoe, deepseek2, gptOss,
        gemma, gemma2, qwen2moe, granite, smollm3, apertus, starcoder2, phi2, stablelm, commandR, olmo, bloom, falcon,
    ]

    static func named(_ name: String) -> GGUFArchitecture? { all.first { $0.name == name } }

    static let llamaTop = ["token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight", "output.weight": "lm_head.weight"]

    /// Llama, Mistral, Mixtral, TinyLlama, SmolLM and other Llama-shaped
    /// models. The converter permutes Q and K rows to interleaved rotary pairs,
    /// writes Mistral as `llama` (a sliding window sets it apart) and Mixtral
    /// as `llama` with experts (stacked `w1`, `w3`, `w2`; top-k renormalised).
    static let llama = GGUFArchitecture(
        name: "llama", prefix: "model.", topLevel: llamaTop,
        blocks: Place.llamaPermutedBlocks.adding([
            "ffn_gate_inp": .module("block_sparse_moe.gate", nil),
            "ffn_gate_exps": .perExpert("block_sparse_moe.experts.{e}.w1"),
            "ffn_up_exps": .perExpert("block_sparse_moe.experts.{e}.w3"),
            "ffn_down_exps": .perExpert("block_sparse_moe.experts.{e}.w2"),
        ]),
        attentionRows: .separateQK,
        ropeFactors: ["rope_freqs.weight"], experts: .optional
    ) { input in
        let slidingWindow = try input.metadata.optionalUInt32(input.key("attention.sliding_window"))
        try ConfigRules.checks(path: input.path) {
            try ConfigRules.countIfPresent(slidingWindow, input.key("attention.sliding_window"))
        }
        try GGUFConfiguration.requireInterleavedRotary(input)
        let mixtral = input.sizes.experts > 0
        var config = try input.llamaShaped(mixtral ? "mixtral" : slidingWindow == nil ? "llama" : "mistral")
        config["attention_bias"] = input.tensorDimensions["blk.0.attn_q.bias"] != nil
        config["mlp_bias"] = input.tensorDimensions["blk.0.ffn_up.bias"] != nil
        if let slidingWindow { config["sliding_window"] = slidingWindow }
        if mixtral {
            config["sliding_window"] = slidingWindow ?? NSNull()
            config["num_local_experts"] = input.sizes.experts
            config["num_experts_per_tok"] = try GGUFConfiguration.expertsUsed(input)
            config["intermediate_size"] = try GGUFConfiguration.expertWidth(input)
            // MixtralConfig has no head_dim of its own unless the heads are not hidden / heads wide.
            if input.sizes.headDim * input.sizes.heads == input.sizes.hidden { config.removeValue(forKey: "head_dim") }
        }
        return config
    }

    /// Qwen2 / Qwen2.5: rotate-half rotary kept as in Hugging Face (no permutation).
    static let qwen2 = GGUFArchitecture(
        name: "qwen2", prefix: "model.", topLevel: llamaTop, blocks: Place.llamaBlocks,
        attentionRows: .separateQK
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.llamaShaped("qwen2")
        config["use_sliding_window"] = false
        config.removeValue(forKey: "attention_bias")
        return config
    }

    /// GPT-NeoX / Pythia: fused QKV regrouped (all q, all k, all v); partial rotary.
    static let gptneox = GGUFArchitecture(
        name: "gptneox", prefix: "gpt_neox.",
        topLevel: ["token_embd.weight": "embed_in.weight", "output_norm.weight": "final_layer_norm.weight",
                   "output_norm.bias": "final_layer_norm.bias", "output.weight": "lm_head.weight"],
        blocks: ["attn_norm": .module("input_layernorm", nil), "attn_qkv": .module("attention.query_key_value", .groupedQKV),
                 "attn_output": .module("attention.dense", nil), "ffn_norm": .module("post_attention_layernorm", nil),
                 "ffn_up": .module("mlp.dense_h_to_4h", nil), "ffn_down": .module("mlp.dense_4h_to_h", nil)],
        attentionRows: .fusedPerHead("attn_qkv.weight")
    ) { input in
        let a = input.architecture.name + ".", sizes = input.sizes
        return [
            "model_type": "gpt_neox",
            "hidden_size": sizes.hidden, "num_hidden_layers": sizes.layers, "num_attention_heads": sizes.heads,
            "intermediate_size": sizes.feedForward,
            "layer_norm_eps": try input.metadata.positiveFloat32(a + "attention.layer_norm_epsilon"),
            "vocab_size": sizes.vocabulary, "max_position_embeddings": sizes.context, "hidden_act": "gelu",
            "use_parallel_residual": try input.metadata.optionalBool(a + "use_parallel_residual") ?? true,
            "attention_bias": input.tensorDimensions["blk.0.attn_qkv.bias"] != nil,
            "tie_word_embeddings": sizes.tied,
            // llama.cpp's generic rope keys (linear, YaRN) apply to gptneox as to any architecture.
            "rope_parameters": try GGUFConfiguration.partialRope(input),
        ]
    }

    /// GPT-2: Conv1D weights stored transposed; learned positions.
    static let gpt2 = GGUFArchitecture(
        name: "gpt2", prefix: "transformer.", layerList: "h",
        topLevel: ["token_embd.weight": "wte.weight", "position_embd.weight": "wpe.weight", "output_norm.weight": "ln_f.weight",
                   "output_norm.bias": "ln_f.bias", "output.weight": "lm_head.weight"],
        blocks: ["attn_norm": .module("ln_1", nil), "attn_qkv": .module("attn.c_attn", .transposedConv1D),
                 "attn_output": .module("attn.c_proj", .transposedConv1D), "ffn_norm": .module("ln_2", nil),
                 "ffn_up": .module("mlp.c_fc", .transposedConv1D), "ffn_down": .module("mlp.c_proj", .transposedConv1D)],
        attentionRows: .fusedPerHead("attn_qkv.weight")
    ) { input in
        let sizes = input.sizes
        return [
            "model_type": "gpt2",
            "n_embd": sizes.hidden, "n_layer": sizes.layers, "n_head": sizes.heads, "n_inner": sizes.feedForward,
            "n_positions": sizes.context, "vocab_size": sizes.vocabulary,
            "layer_norm_epsilon": try input.metadata.positiveFloat32(input.key("attention.layer_norm_epsilon")),
            "activation_function": "gelu_new", "tie_word_embeddings": sizes.tied,
        ]
    }

    /// Gemma: norms stored as 1 + w, GELU (tanh) gate, tied head. The
    /// converter writes no rope base (llama.cpp's default 10000 is Gemma's).
    static let gemma = GGUFArchitecture(
        name: "gemma", prefix: "model.", topLevel: llamaTop,
        blocks: Place.llamaBlocks.adding([
            "attn_norm": .module("input_layernorm", .normPlusOne), "ffn_norm": .module("post_attention_layernorm", .normPlusOne),
        ]),
        topLevelLayout: .normPlusOne,
        attentionRows: .separateQK
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.llamaShaped("gemma")
        config["hidden_act"] = "gelu_pytorch_tanh"
        return config
    }

    /// Gemma 2: sandwich norms stored as 1 + w, logit soft-capping (llama.cpp's
    /// defaults 50 and 30 when absent), sliding even layers (period 2 unless the
    /// file gives a pattern). The converter drops query_pre_attn_scalar:
    /// llama.cpp scales queries by 1/sqrt(head width), by 1/sqrt(hidden / heads)
    /// for the 46-layer 27B.
    static let gemma2 = GGUFArchitecture(
        name: "gemma2", prefix: "model.", topLevel: llamaTop, blocks: Place.llamaBlocks.adding(Place.sandwichNorms),
        topLevelLayout: .normPlusOne,
        attentionRows: .separateQK
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.llamaShaped("gemma2")
        let m = input.metadata, sizes = input.sizes
        config["hidden_act"] = "gelu_pytorch_tanh"
        config["hidden_activation"] = "gelu_pytorch_tanh"
        // llama.cpp's gemma2 window when the file gives none: Gemma 2's 4096.
        let window = try m.optionalUInt32(input.key("attention.sliding_window")) ?? 4096
        try ConfigRules.checks(path: input.path) { try ConfigRules.count(window, input.key("attention.sliding_window")) }
        config["sliding_window"] = window
        config["layer_types"] = try GGUFConfiguration.slidingPattern(input, default: 2)
        config["query_pre_attn_scalar"] = sizes.layers == 46 ? sizes.hidden / sizes.heads : sizes.headDim
        config["attn_logit_softcapping"] = try m.optionalPositiveFloat32(input.key("attn_logit_softcapping")) ?? 50
        config["final_logit_softcapping"] = try m.optionalPositiveFloat32(input.key("final_logit_softcapping")) ?? 30
        try input.refuseUnmodelled(
            "rope.freq_base_swa", inert: sizes.theta, effect: "give the sliding layers' rotary embedding a base of its own")
        if try m.optionalString(input.key("rope.scaling.type")) == "none" {
            // llama.cpp resets the scale to 1 for type none, but its gemma2 copied it to the sliding layers first.
            try input.refuseUnmodelled(
                "rope.scaling.factor", inert: 1, effect: "scale the sliding layers' positions even with rope.scaling.type none")
        }
        return config
    }

    /// Qwen1.5-MoE / Qwen2-MoE: routed experts stacked per layer plus the shared
    /// expert and its sigmoid gate; q/k/v biases. llama.cpp never renormalises
    /// the top-k weights and has no sliding windows for it.
    static let qwen2moe = GGUFArchitecture(
        name: "qwen2moe", prefix: "model.", topLevel: llamaTop,
        blocks: Place.llamaBlocks.adding(Place.stackedExperts).adding([
            "ffn_gate_shexp": .module("mlp.shared_expert.gate_proj", nil), "ffn_up_shexp": .module("mlp.shared_expert.up_proj", nil),
            "ffn_down_shexp": .module("mlp.shared_expert.down_proj", nil),
            "ffn_gate_inp_shexp": .module("mlp.shared_expert_gate", .matrix),
        ]),
        attentionRows: .separateQK, experts: .required
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.llamaShaped("qwen2_moe")
        config.removeValue(forKey: "attention_bias")
        config["qkv_bias"] = try input.everyBlock(has: "attn_q.bias")
        config["use_sliding_window"] = false
        config["num_experts"] = input.sizes.experts
        config["num_experts_per_tok"] = try GGUFConfiguration.expertsUsed(input)
        config["moe_intermediate_size"] = try GGUFConfiguration.expertWidth(input)
        let shared = try input.metadata.optionalUInt32(input.key("expert_shared_feed_forward_length")) ?? input.sizes.feedForward
        try ConfigRules.checks(path: input.path) { try ConfigRules.count(shared, input.key("expert_shared_feed_forward_length")) }
        config["shared_expert_intermediate_size"] = shared
        config["norm_topk_prob"] = false
        config["decoder_sparse_step"] = 1
        config["mlp_only_layers"] = (0..<input.sizes.layers).filter { !input.block($0, has: "ffn_gate_inp.weight") }
        return config
    }

    /// Granite: Llama's block with its four multipliers. llama.cpp reads 0 or
    /// an absent key as no scaling (queries then by 1/sqrt(head width)).
    static let granite = GGUFArchitecture(
        name: "granite", prefix: "model.", topLevel: llamaTop, blocks: Place.llamaPermutedBlocks,
        attentionRows: .separateQK
    ) { input in
        try GGUFConfiguration.requireInterleavedRotary(input)
        var config = try input.llamaShaped("granite")
        config.removeValue(forKey: "head_dim")
        config["attention_bias"] = try input.everyBlock(has: "attn_q.bias")
        config["mlp_bias"] = try input.everyBlock(has: "ffn_up.bias")
        let scale = { (key: String, unset: Double) throws -> Double in
            let value = try input.metadata.optionalFloat32(input.key(key)) ?? 0
            try ConfigRules.checks(path: input.path) {
                guard value.isFinite else { throw InvalidConfigValue(key: input.key(key), problem: "must be a finite number, got \(value)") }
            }
            return value == 0 ? unset : value
        }
        config["attention_multiplier"] = try scale("attention.scale", 1 / Double(input.sizes.headDim).squareRoot())
        config["embedding_multiplier"] = try scale("embedding_scale", 1)
        config["residual_multiplier"] = try scale("residual_scale", 1)
        config["logits_scaling"] = try scale("logit_scale", 1)
        // llama.cpp's granite reads `rope.scaling.finetuned` as a switch: false runs without rotary.
        if try input.metadata.optionalBool(input.key("rope.scaling.finetuned")) == false {
            throw InvalidConfigValue(
                key: input.key("rope.scaling.finetuned"),
                problem: "is false: llama.cpp's granite then runs without a rotary embedding, which no Hugging Face granite model does; refused rather than ignored"
            ).error(path: input.path)
        }
        return config
    }

    /// SmolLM3: Llama's block without rotary on every fourth layer, which
    /// llama.cpp fixes (the file does not say; the converter drops no_rope_layers).
    static let smollm3 = GGUFArchitecture(
        name: "smollm3", prefix: "model.", topLevel: llamaTop, blocks: Place.llamaPermutedBlocks,
        attentionRows: .separateQK,
        ropeFactors: ["rope_freqs.weight"]
    ) { input in
        try GGUFConfiguration.requireInterleavedRotary(input)
        var config = try input.llamaShaped("smollm3")
        config["attention_bias"] = try input.everyBlock(has: "attn_q.bias")
        config["mlp_bias"] = try input.everyBlock(has: "ffn_up.bias")
        config["use_sliding_window"] = false
        config["sliding_window"] = NSNull()
        config["layer_types"] = input.layerTypes { _ in false }
        config["no_rope_layer_interval"] = 4
        config["no_rope_layers"] = (0..<input.sizes.layers).map { ($0 + 1) % 4 != 0 ? 1 : 0 }
        return config
    }

    /// Apertus: pre-norms named `attention_layernorm` / `feedforward_layernorm`,
    /// per-head q/k RMSNorms, rotate-half rotary (no rows move; Llama 3
    /// scaling as `rope_freqs`), an ungated xIELU MLP whose per-layer
    /// parameters the converter moves into `xielu.*` arrays (as stored in
    /// Hugging Face; no architecture prefix).
    static let apertus = GGUFArchitecture(
        name: "apertus", prefix: "model.", topLevel: llamaTop,
        blocks: Place.llamaBlocks.filter { $0.key != "ffn_gate" }.adding(Place.qkNorms).adding([
            "attn_norm": .module("attention_layernorm", nil), "ffn_norm": .module("feedforward_layernorm", nil),
        ]),
        attentionRows: .separateQK, ropeFactors: ["rope_freqs.weight"],
        layerValues: [("mlp.act_fn.alpha_n", "xielu.alpha_n", [1]), ("mlp.act_fn.alpha_p", "xielu.alpha_p", [1]),
                      ("mlp.act_fn.beta", "xielu.beta", []), ("mlp.act_fn.eps", "xielu.eps", [])]
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.llamaShaped("apertus")
        config["hidden_act"] = "xielu"
        config["attention_bias"] = try input.everyBlock(has: "attn_q.bias")
        return config
    }

    /// Qwen3: per-head q/k RMSNorms, explicit head width. llama.cpp has no
    /// sliding windows for it, so the converter drops `layer_types`.
    static let qwen3 = GGUFArchitecture(
        name: "qwen3", prefix: "model.", topLevel: llamaTop, blocks: Place.llamaBlocks.adding(Place.qkNorms),
        attentionRows: .separateQK
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.llamaShaped("qwen3")
        config["use_sliding_window"] = false
        config["layer_types"] = input.layerTypes { _ in false }
        return config
    }

    /// Qwen3-MoE: experts stacked per layer; layers without a router are
    /// `mlp_only_layers`. The top-k weights are renormalised, as llama.cpp
    /// always does, unless the file's `expert_weights_norm` (transformers'
    /// `norm_topk_prob`, which llama.cpp ignores here) says otherwise.
    static let qwen3moe = GGUFArchitecture(
        name: "qwen3moe", prefix: "model.", topLevel: llamaTop,
        blocks: Place.llamaBlocks.adding(Place.qkNorms).adding(Place.stackedExperts),
        attentionRows: .separateQK, experts: .required
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.llamaShaped("qwen3_moe")
        config["use_sliding_window"] = false
        config["num_local_experts"] = input.sizes.experts
        config["num_experts_per_tok"] = try GGUFConfiguration.expertsUsed(input)
        config["moe_intermediate_size"] = try GGUFConfiguration.expertWidth(input)
        config["norm_topk_prob"] = try input.metadata.optionalBool(input.key("expert_weights_norm")) ?? true
        config["decoder_sparse_step"] = 1
        config["mlp_only_layers"] = (0..<input.sizes.layers).filter { !input.block($0, has: "ffn_gate_inp.weight") }
        return config
    }

    /// Gemma 3 (text): sandwich norms, norms stored as 1 + w by the converter,
    /// local/global layers when the file gives a window (llama.cpp's default
    /// pattern: every sixth global, local base 10000 unless the file says
    /// otherwise; no window or 0: every layer global), per-head q/k norms.
    /// Without `attention.scale`, queries are scaled as llama.cpp scales them:
    /// by 1/sqrt(head width), but by 1/sqrt(hidden / heads) for the 62-layer
    /// 27B (Gemma 3 27B's query_pre_attn_scalar, 168, is not its head width).
    static let gemma3 = GGUFArchitecture(
        name: "gemma3", prefix: "model.", topLevel: llamaTop,
        blocks: Place.llamaBlocks.adding(Place.sandwichNorms).adding([
            "attn_q_norm": .module("self_attn.q_norm", .normPlusOne), "attn_k_norm": .module("self_attn.k_norm", .normPlusOne),
        ]),
        topLevelLayout: .normPlusOne,
        attentionRows: .separateQK
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.llamaShaped("gemma3_text")
        let m = input.metadata
        config["hidden_act"] = "gelu_pytorch_tanh"
        config["hidden_activation"] = "gelu_pytorch_tanh"
        let window = try m.optionalUInt32(input.key("attention.sliding_window")) ?? 0
        config["sliding_window"] = window > 0 ? window : 4096
        config["layer_types"] = window > 0 ? try GGUFConfiguration.slidingPattern(input, default: 6) : input.layerTypes { _ in false }
        if let scale = try m.optionalPositiveFloat32(input.key("attention.scale")) {
            config["query_pre_attn_scalar"] = 1 / (scale * scale)
        } else {
            config["query_pre_attn_scalar"] = input.sizes.layers == 62 ? input.sizes.hidden / input.sizes.heads : input.sizes.headDim
        }
        // llama.cpp's gemma3 soft-caps nothing unless the file says so (transformers' default: None).
        for key in ["final_logit_softcapping", "attn_logit_softcapping"] {
            if let cap = try m.optionalPositiveFloat32(input.key(key)) { config[key] = cap }
        }
        config["rope_parameters"] = [
            "full_attention": try GGUFConfiguration.rope(input),
            "sliding_attention": [
                "rope_type": "default", "rope_theta": try m.optionalPositiveFloat32(input.key("rope.freq_base_swa")) ?? 10_000,
            ] as [String: Any],
        ] as [String: Any]
        return config
    }

    /// Phi-3 / Phi-4: fused `qkv_proj` and `gate_up_proj` kept as they are;
    /// partial rotary; LongRoPE factors as `rope_factors_long` / `_short`.
    static let phi3 = GGUFArchitecture(
        name: "phi3", prefix: "model.", topLevel: llamaTop,
        blocks: ["attn_norm": .module("input_layernorm", nil), "attn_qkv": .module("self_attn.qkv_proj", nil),
                 "attn_output": .module("self_attn.o_proj", nil), "ffn_norm": .module("post_attention_layernorm", nil),
                 "ffn_up": .module("mlp.gate_up_proj", nil), "ffn_down": .module("mlp.down_proj", nil)],
        attentionRows: .projections([("attn_qkv.weight", .queryKeyValue)]), ropeFactors: ["rope_factors_long.weight", "rope_factors_short.weight"]
    ) { input in
        var config = try input.llamaShaped("phi3")
        config.removeValue(forKey: "attention_bias")
        let m = input.metadata, headDim = input.sizes.headDim
        let rotary = try GGUFConfiguration.partialRotary(input)
        let original = try m.optionalUInt32(input.key("rope.scaling.original_context_length")) ?? input.sizes.context
        try ConfigRules.checks(path: input.path) { try ConfigRules.count(original, input.key("rope.scaling.original_context_length")) }
        config["original_max_position_embeddings"] = original
        // 0 is llama.cpp's converter's mark of Phi-4 (its config's sliding_window is null): no window, as
        // llama.cpp reads it.
        if let window = try m.optionalUInt32(input.key("attention.sliding_window")) {
            config["sliding_window"] = window == 0 ? NSNull() : window
        }
        var rope = config["rope_parameters"] as! [String: Any]
        rope["partial_rotary_factor"] = GGUFConfiguration.fraction(rotary, of: headDim)
        let long = input.ropeTensors["rope_factors_long.weight"], short = input.ropeTensors["rope_factors_short.weight"]
        // LongRoPE needs both; one alone would be dropped unseen.
        guard (long == nil) == (short == nil) else {
            throw DroptraceError(
                "rope_factors_long.weight and rope_factors_short.weight come together (LongRoPE), but only \(long == nil ? "rope_factors_short" : "rope_factors_long").weight is stored",
                path: input.path)
        }
        if let long, let short {
            guard long.count == rotary / 2, short.count == rotary / 2 else {
                throw DroptraceError(
                    "rope_factors_long.weight and rope_factors_short.weight must hold \(rotary / 2) factors (half the rotary width), got \(long.count) and \(short.count)",
                    path: input.path)
            }
            rope["rope_type"] = "longrope"
            rope["original_max_position_embeddings"] = original
            rope["long_factor"] = long.map(Double.init)
            rope["short_factor"] = short.map(Double.init)
            rope.removeValue(forKey: "factor")
            // The converter stores transformers' default sqrt(1 + ln s / ln original) as a float32;
            // only another value is passed on. Without the key llama.cpp scales by 1.
            let scale = Double(input.sizes.context) / Double(original)
            let derived = scale > 1 ? (1 + log(scale) / log(Double(original))).squareRoot() : 1
            let attention = try m.optionalPositiveFloat32(input.key("rope.scaling.attn_factor")) ?? 1
            if Float(attention) != Float(derived) { rope["attention_factor"] = attention }
        }
        config["rope_parameters"] = rope
        return config
    }

    /// OLMo 2: post-norm layout (norms after attention and MLP, none before),
    /// q/k RMSNorms over the whole projection. The converter writes OLMo 3 as
    /// `olmo2` with a sliding window; llama.cpp then slides on all but every
    /// `sliding_window_pattern`-th layer (4 unless given), where the rotary
    /// embedding is the plain one at the model's base (no YaRN): `olmo3`.
    static let olmo2 = GGUFArchitecture(
        name: "olmo2", prefix: "model.", topLevel: llamaTop,
        blocks: Place.llamaBlocks.filter { $0.key != "attn_norm" && $0.key != "ffn_norm" }.adding(Place.qkNorms).adding([
            "post_attention_norm": .module("post_attention_layernorm", nil),
            "post_ffw_norm": .module("post_feedforward_layernorm", nil),
        ]),
        attentionRows: .separateQK
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        let window = try input.metadata.optionalUInt32(input.key("attention.sliding_window")) ?? 0
        var config = try input.llamaShaped(window > 0 ? "olmo3" : "olmo2")
        config.removeValue(forKey: "head_dim")
        if window > 0 {
            config["sliding_window"] = window
            config["layer_types"] = try GGUFConfiguration.slidingPattern(input, default: 4)
            // OLMo 3's sliding layers rotate at a base of their own (`rope_parameters.sliding_attention`).
            let slidingTheta = try input.metadata.optionalPositiveFloat32(input.key("rope.freq_base_swa")) ?? input.sizes.theta
            config["rope_parameters"] = [
                "full_attention": config["rope_parameters"]!,
                "sliding_attention": ["rope_type": "default", "rope_theta": slidingTheta] as [String: Any],
            ] as [String: Any]
        }
        return config
    }

    /// OLMoE: experts stacked per layer, whole-projection q/k norms. The
    /// q/k/v clamp (`attention.clamp_kqv`) and `expert_weights_norm` keep
    /// transformers' meaning (`clip_qkv`, `norm_topk_prob`) where a file gives
    /// them; llama.cpp's olmoe ignores both.
    static let olmoe = GGUFArchitecture(
        name: "olmoe", prefix: "model.", topLevel: llamaTop,
        blocks: Place.llamaBlocks.adding(Place.qkNorms).adding(Place.stackedExperts),
        attentionRows: .separateQK, experts: .required
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.llamaShaped("olmoe")
        config.removeValue(forKey: "head_dim")
        config["intermediate_size"] = try GGUFConfiguration.expertWidth(input)
        config["num_experts"] = input.sizes.experts
        config["num_experts_per_tok"] = try GGUFConfiguration.expertsUsed(input)
        config["norm_topk_prob"] = try input.metadata.optionalBool(input.key("expert_weights_norm")) ?? false
        if let clip = try input.metadata.optionalPositiveFloat32(input.key("attention.clamp_kqv")) { config["clip_qkv"] = clip }
        return config
    }

    /// DeepSeek-V2 and V3 (multi-head latent attention, shared experts). The
    /// converter writes MLA as MQA (one kv head, key width kv_lora_rank + rope),
    /// the per-head widths under `*_mla`, and splits `kv_b_proj` into
    /// `attn_k_b` (transposed per head) and `attn_v_b` (older files keep
    /// `attn_kv_b`). Sigmoid gating is V3's; rotary pairs are interleaved as
    /// in llama.cpp, so no rows move.
    static let deepseek2 = GGUFArchitecture(
        name: "deepseek2", prefix: "model.", topLevel: llamaTop,
        blocks: Place.llamaBlocks.filter { !["attn_k", "attn_v"].contains($0.key) }.adding(Place.stackedExperts).adding([
            "attn_q_a": .module("self_attn.q_a_proj", nil), "attn_q_a_norm": .module("self_attn.q_a_layernorm", nil),
            "attn_q_b": .module("self_attn.q_b_proj", nil), "attn_kv_a_mqa": .module("self_attn.kv_a_proj_with_mqa", nil),
            "attn_kv_a_norm": .module("self_attn.kv_a_layernorm", nil), "attn_kv_b": .module("self_attn.kv_b_proj", nil),
            "ffn_gate_shexp": .module("mlp.shared_experts.gate_proj", nil), "ffn_up_shexp": .module("mlp.shared_experts.up_proj", nil),
            "ffn_down_shexp": .module("mlp.shared_experts.down_proj", nil),
        ]),
        blockTensors: ["exp_probs_b.bias": "mlp.gate.e_score_correction_bias"],
        composites: [GGUFLayouts.latentKVB],
        attentionRows: .projections([("attn_q.weight", .query), ("attn_q_b.weight", .query)]),
        headWidthKey: "attention.key_length_mla", experts: .required
    ) { input in
        try GGUFLayouts.deepseekConfig(input)
    }

    /// gpt-oss: attention sinks, alternating sliding/full layers (sliding
    /// first, or the file's `sliding_window_pattern`), experts with biases; the converter splits the interleaved
    /// `gate_up_proj` into gate and up stacks and transposes the expert
    /// matrices to [experts, out, in].
    static let gptOss = GGUFArchitecture(
        name: "gpt-oss", prefix: "model.", topLevel: llamaTop,
        blocks: Place.llamaBlocks.filter { !["ffn_norm", "ffn_gate", "ffn_up", "ffn_down"].contains($0.key) }.adding([
            "post_attention_norm": .module("post_attention_layernorm", nil), "ffn_gate_inp": .module("mlp.router", nil),
        ]),
        blockTensors: ["attn_sinks.weight": "self_attn.sinks", "ffn_down_exps.bias": "mlp.experts.down_proj_bias"],
        composites: GGUFLayouts.gptOssExperts,
        attentionRows: .separateQK, experts: .required
    ) { input in
        try GGUFConfiguration.requireWholeHeadRotary(input)
        var config = try input.llamaShaped("gpt_oss")
        let window = try input.metadata.uint32(input.key("attention.sliding_window"))
        try ConfigRules.checks(path: input.path) { try ConfigRules.count(window, input.key("attention.sliding_window")) }
        config["attention_bias"] = true
        config["sliding_window"] = window
        // Even layers slide unless the file gives a pattern (llama.cpp's default period 2).
        config["layer_types"] = try GGUFConfiguration.slidingPattern(input, default: 2)
        config["intermediate_size"] = try GGUFConfiguration.expertWidth(input)
        config["num_local_experts"] = input.sizes.experts
        config["num_experts_per_tok"] = try GGUFConfiguration.expertsUsed(input)
        // The clamped gated activation's constants, fixed in llama.cpp.
        config["swiglu_alpha"] = 1.702
        config["swiglu_limit"] = 7.0
        var rope = config["rope_parameters"] as! [String: Any]
        // gpt-oss's YaRN does not truncate the correction range (its config.json says so).
        if rope["rope_type"] as? String == "yarn" { rope["truncate"] = false }
        config["rope_parameters"] = rope
        try input.refuseUnmodelled(
            "rope.freq_base_swa", inert: input.sizes.theta, effect: "give the sliding layers' rotary embedding a base of its own")
        return config
    }
}

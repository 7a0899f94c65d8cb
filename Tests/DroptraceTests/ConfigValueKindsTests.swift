@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Testing

/// config.json values of a kind transformers' strict config classes refuse
/// (null for an int, a float for a count, an int for a flag or a float) are
/// refused naming the key; the kinds a class accepts keep loading.
@Suite struct ConfigValueKindsTests {
    /// One value written into a fixture's config.json (`key` dotted for a
    /// member of an object), as JSON text.
    struct Written: Sendable, CustomTestStringConvertible {
        var model: String
        var key: String
        var value: String
        var testDescription: String { "\(model) \(key)=\(value)" }
        init(_ model: String, _ key: String, _ value: String) {
            (self.model, self.key, self.value) = (model, key, value)
        }

        func fixture() throws -> EditedFixture {
            let parsed = try JSONSerialization.jsonObject(with: Data(value.utf8), options: .fragmentsAllowed)
            let fixture = try EditedFixture(model) { EditedModel.set(parsed, at: key, in: &$0) }
            // JSONSerialization writes 4.0 as 4 and 10^20 as 1e+20: put the literal in as written.
            if value.contains(".") || value == "null" || Int(value) == nil {
                let url = fixture.model.appendingPathComponent("config.json")
                var object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
                EditedModel.set("@@", at: key, in: &object)
                let text = KindPreservingJSON.text(object)
                try Data(text.replacingOccurrences(of: #""@@""#, with: value).utf8).write(to: url)
            }
            return fixture
        }
    }

    /// Values each family's transformers config class refuses
    /// (StrictDataclassFieldValidationError in transformers 5.24).
    static let refused: [Written] = [
        Written("qwen3-f32", "head_dim", "null"), Written("qwen3-f32", "max_window_layers", "null"),
        Written("qwen3-f32", "use_sliding_window", "null"), Written("qwen3-f32", "rms_norm_eps", "null"),
        Written("gemma2-f32", "query_pre_attn_scalar", "null"), Written("gemma2-f32", "head_dim", "null"),
        Written("gemma-f32", "head_dim", "null"), Written("gemma3_text-f32", "query_pre_attn_scalar", "null"),
        Written("gemma3-f32", "text_config.head_dim", "null"), Written("gemma3-f32", "text_config.num_hidden_layers", "4.0"),
        Written("gpt_oss-f32", "swiglu_limit", "null"), Written("gpt_oss-f32", "swiglu_alpha", "null"),
        Written("gpt_oss-f32", "head_dim", "null"), Written("gpt_oss-f32", "attention_bias", "null"),
        Written("smollm3-f32", "no_rope_layer_interval", "null"), Written("mixtral-f32", "num_local_experts", "null"),
        Written("olmoe-f32", "num_experts", "null"), Written("olmoe-f32", "norm_topk_prob", "null"),
        Written("qwen3_moe-f32", "decoder_sparse_step", "null"), Written("deepseek_v3-f32", "first_k_dense_replace", "3.0"),
        Written("deepseek_v2-f32", "kv_lora_rank", "null"), Written("phi3-f32", "original_max_position_embeddings", "null"),
        Written("gpt_neox-f32", "use_parallel_residual", "null"), Written("gpt2-f32", "n_inner", "64.0"),
        // Integers written as floats, flags as 0 / 1, floats as integers, numbers as strings.
        Written("llama-f32", "num_hidden_layers", "4.0"), Written("mistral-f32", "hidden_size", "64.0"),
        Written("qwen2-f32", "sliding_window", "8.0"), Written("llama-f32", "tie_word_embeddings", "0"),
        Written("qwen2-f32", "use_sliding_window", "1"), Written("llama-f32", "rms_norm_eps", "1"),
        Written("olmo-f32", "clip_qkv", "8"), Written("gemma2-f32", "final_logit_softcapping", "30"),
        Written("gpt2-f32", "layer_norm_epsilon", "0"), Written("llama-f32", "vocab_size", "\"512\""),
        Written("qwen3_moe-f32", "mlp_only_layers", "[1.0]"), Written("ministral-f32", "layer_types", "[1]"),
        Written("smollm3-f32", "no_rope_layers", "[1, 1, 1, true]"), Written("granite-f32", "residual_multiplier", "null"),
        Written("granite-f32", "logits_scaling", "\"8\""), Written("starcoder2-f32", "use_bias", "null"),
        Written("starcoder2-f32", "norm_epsilon", "1"), Written("qwen2_moe-f32", "shared_expert_intermediate_size", "24.0"),
        Written("qwen2_moe-f32", "qkv_bias", "null"), Written("phi-f32", "qk_layernorm", "null"),
        Written("phi-f32", "layer_norm_eps", "1"), Written("cohere-f32", "logit_scale", "1"),
        Written("stablelm-f32", "use_qkv_bias", "null"), Written("stablelm_parallel-f32", "use_parallel_residual", "1"),
        Written("stablelm-f32", "qk_layernorm", "null"), Written("stablelm-f32", "num_key_value_heads", "null"),
        // Beyond 64 bits the literal still decides, as in Python: an integer for a float, a float for an
        // integer (both were taken as either; rms_norm_eps 10^20 scored every cosine 1).
        Written("llama-f32", "rms_norm_eps", "100000000000000000000"), Written("llama-f32", "initializer_range", "9223372036854775808"),
        Written("llama-f32", "eos_token_id", "3.4e38"), Written("llama-f32", "bos_token_id", "1e20"),
        Written("llama-f32", "pretraining_tp", "1e300"),
        // Values transformers refuses when it builds the config or the model (checked with transformers 5.23).
        Written("llama-f32", "initializer_range", "2.0"), Written("llama-f32", "initializer_range", "-0.02"),
        Written("gpt2-f32", "resid_pdrop", "-1"), Written("gpt2-f32", "embd_pdrop", "2.0"),
        Written("gpt_neox-f32", "hidden_dropout", "1e300"), Written("gpt2-f32", "layer_types", "\"x\""),
        Written("gpt2-f32", "layer_types", "[]"), Written("gpt_neox-f32", "layer_types", "[\"FULL\", \"FULL\"]"),
        Written("llama-f32", "layer_types", #"["full_attention", "x", "full_attention", "full_attention", "full_attention"]"#),
        Written("gemma-f32", "layer_types", #"["full_attention"]"#),
        Written("mixtral-f32", "layer_types", #"["sliding", "sliding", "sliding", "sliding"]"#),
        // Qwen2MoeConfig keeps a null num_key_value_heads, which its attention divides by (TypeError).
        Written("qwen2_moe-f32", "num_key_value_heads", "null"),
        Written("phi3-f32", "resid_pdrop", "2.0"), Written("starcoder2-f32", "residual_dropout", "1.5"),
        Written("starcoder2-f32", "embedding_dropout", "-0.1"),
        Written("stablelm_parallel-f32", "hidden_dropout", "1.5"),
        // A null head_dim the class takes and its model reads as the head width (TypeError building it).
        Written("qwen2-f32", "head_dim", "null"), Written("granite-f32", "head_dim", "null"),
        Written("qwen3_moe-f32", "head_dim", "null"), Written("ministral-f32", "head_dim", "null"),
        // Rope integers torch cannot convert (OverflowError), 2^64 and above.
        Written("llama-f32", "rope_parameters.rope_theta", "18446744073709551616"),
        Written("llama-f32", "rope_parameters.factor", "100000000000000000000"),
        Written("llama-v4", "rope_theta", "18446744073709551616"),
        // Aliases (attribute_map keys) are set over the key they stand for, unchecked.
        Written("gpt2-f32", "hidden_size", "64"), Written("gpt2-f32", "num_hidden_layers", "4.0"),
        Written("deepseek_v2-f32", "num_experts", "2"), Written("gpt_oss-f32", "num_experts", "8"),
        Written("olmoe-f32", "num_local_experts", "2"),
    ]

    @Test(arguments: refused)
    func refusedKindIsRefusedNamingTheKey(_ written: Written) throws {
        let fixture = try written.fixture()
        fixture.expectRefused(naming: "\"\(written.key)\"")
        do {
            _ = try fixture.load()
        } catch {
            #expect("\(error)".contains("transformers'"), "\(error)")
        }
    }

    /// Nulls the classes accept (`int | None` fields) load as before.
    static let acceptedNulls: [Written] = [
        Written("llama-f32", "head_dim", "null"), Written("mistral-f32", "sliding_window", "null"),
        Written("qwen3-f32", "pad_token_id", "null"), Written("olmo-f32", "clip_qkv", "null"),
        Written("gemma2-f32", "attn_logit_softcapping", "null"), Written("llama-f32", "rope_parameters", "null"),
        Written("qwen2-f32", "layer_types", "null"), Written("gpt2-f32", "n_inner", "null"),
        // A list on a class that never reads it, which transformers' cache can build.
        Written("olmo2-f32", "layer_types", #"["full_attention", "full_attention", "full_attention", "full_attention"]"#),
        Written("llama-f32", "eos_token_id", "[1, 2]"), Written("llama-f32", "attention_dropout", "0"),
        Written("gpt2-f32", "num_hidden_layers", "4"), Written("olmoe-f32", "num_local_experts", "4"),
        Written("granite-f32", "logits_scaling", "8"), Written("cohere-f32", "use_qk_norm", "null"),
        // Only LlamaConfig declares initializer_range's interval; the other classes take any float.
        Written("gemma-f32", "initializer_range", "-0.02"), Written("qwen2-f32", "initializer_range", "2.0"),
        // A rotary fraction the family never reads (default rope type): transformers runs any value.
        Written("cohere-f32", "rope_parameters.partial_rotary_factor", "null"),
        Written("granite-f32", "rope_parameters.partial_rotary_factor", "0"),
        Written("starcoder2-f32", "rope_parameters.partial_rotary_factor", "1.5"),
        Written("qwen2_moe-f32", "rope_parameters.partial_rotary_factor", "null"),
        Written("deepseek_v2-f32", "head_dim", "32"), Written("deepseek_v2-f32", "head_dim", "null"),
        Written("deepseek_v3-f32", "head_dim", "8"), Written("llama-f32", "rope_parameters.rope_theta", "9223372036854775808"),
    ]

    @Test(arguments: acceptedNulls)
    func acceptedValueLoads(_ written: Written) throws {
        let fixture = try written.fixture()
        #expect(try fixture.load().layerCount >= 1)
    }

    /// Nulls transformers keeps inside the rope parameters, where its rotary
    /// initialisers then fail, and rope_scaling beside rope_parameters
    /// (which transformers merges, rope_scaling's values over the others);
    /// and rotary settings its validation or forward pass then fails on.
    static let refusedRope: [Written] = [
        Written("llama-f32", "rope_parameters.rope_theta", "null"), Written("llama-f32", "rope_parameters.rope_type", "null"),
        Written("gpt_neox-f32", "rope_parameters.partial_rotary_factor", "null"),
        Written("phi3-f32", "rope_parameters.partial_rotary_factor", "null"),
        Written("llama-f32", "rope_scaling", #"{"rope_type": "linear", "factor": 2.0}"#),
        Written("llama-v4", "rope_theta", "null"), Written("gpt_neox-v4", "rotary_pct", "null"),
        // validate_rope compares the scaled types' original length (TypeError on None).
        Written("llama-f32", "rope_parameters.original_max_position_embeddings", "null"),
        Written("deepseek_v3-f32", "rope_parameters.original_max_position_embeddings", "null"),
        // DeepSeek-V3 sizes its rotary embedding by head_dim: another width fails in its forward.
        Written("deepseek_v3-f32", "head_dim", "16"), Written("deepseek_v3-f32", "head_dim", "null"),
    ]

    @Test(arguments: refusedRope)
    func refusedRopeValueIsRefusedNamingTheKey(_ written: Written) throws {
        try written.fixture().expectRefused(naming: String(written.key.split(separator: ".").last!))
    }

    /// pad_token_id outside [-vocab_size, vocab_size) where transformers'
    /// model builds its embedding with padding_idx=pad_token_id: torch's
    /// nn.Embedding asserts "Padding_idx must be within num_embeddings" and
    /// from_pretrained fails (checked against transformers 5.23 for llama
    /// 512, 600 and -600 with vocab_size 512). The fixtures' vocab_size is 512.
    static let refusedPadding: [Written] = [
        Written("llama-f32", "pad_token_id", "512"), Written("llama-f32", "pad_token_id", "600"),
        Written("llama-f32", "pad_token_id", "-600"), Written("llama-f32", "pad_token_id", "-513"),
        Written("qwen2-f32", "pad_token_id", "512"), Written("gemma-f32", "pad_token_id", "1000"),
        Written("gemma3_text-f32", "pad_token_id", "512"), Written("gemma3-f32", "text_config.pad_token_id", "512"),
        Written("mixtral-f32", "pad_token_id", "512"), Written("deepseek_v3-f32", "pad_token_id", "512"),
        Written("gpt_oss-f32", "pad_token_id", "512"), Written("phi3-f32", "pad_token_id", "99999999999999999999"),
    ]

    @Test(arguments: refusedPadding)
    func padTokenOutsideTheVocabularyIsRefused(_ written: Written) throws {
        let fixture = try written.fixture()
        fixture.expectRefused(naming: "\"\(written.key)\"")
        do {
            _ = try fixture.load()
        } catch {
            #expect("\(error)".contains("vocab_size 512"), "\(error)")
        }
    }

    /// An absent pad_token_id is the class's default (Phi3Config 32000,
    /// SmolLM3Config 128004, ApertusConfig 3), outside a 512-token vocabulary
    /// for the first two: transformers cannot build those models either.
    /// A list with an item of a kind the field does not take names the item.
    @Test func refusedListNamesItsItem() throws {
        let error = #expect(throws: DroptraceError.self) { _ = try EditedFixture("flint-f32") { $0["mlp_only_layers"] = [0, true] }.load() }
        #expect(error?.message.hasPrefix(#"key "mlp_only_layers" holds a list whose item [1] is true (a boolean), which"#) == true, "\(String(describing: error))")
    }

    @Test func absentPadTokenTakesTheClassDefault() throws {
        for model in ["phi3-f32", "smollm3-f32"] {
            let fixture = try EditedFixture(model) { $0.removeValue(forKey: "pad_token_id") }
            fixture.expectRefused(naming: "\"pad_token_id\" is absent")
        }
        for model in ["apertus-f32", "olmo-f32", "llama-f32"] {
            let fixture = try EditedFixture(model) { $0.removeValue(forKey: "pad_token_id") }
            #expect(try fixture.load().layerCount >= 1, "\(model)")
        }
    }

    /// In range (negative indices count from the end, as torch reads them),
    /// null, and bloom / falcon / gpt2 / gpt_neox, whose embeddings have no padding index.
    static let acceptedPadding: [Written] = [
        Written("llama-f32", "pad_token_id", "511"), Written("llama-f32", "pad_token_id", "-512"),
        Written("llama-f32", "pad_token_id", "-1"), Written("phi3-f32", "pad_token_id", "null"),
        Written("gemma3-f32", "text_config.pad_token_id", "511"), Written("gpt2-f32", "pad_token_id", "600"),
        Written("gpt_neox-f32", "pad_token_id", "-600"), Written("bloom-f32", "pad_token_id", "600"),
        Written("falcon-f32", "pad_token_id", "600"), Written("mistral3-f32", "text_config.pad_token_id", "511"),
    ]

    @Test(arguments: acceptedPadding)
    func padTokenInsideTheVocabularyLoads(_ written: Written) throws {
        #expect(try written.fixture().load().layerCount >= 1)
    }

    /// The padded-embedding table names config classes of the registry's
    /// families, and every family but bloom, falcon, gpt2, gpt_bigcode,
    /// gpt_neo, gpt_neox, gptj, codegen, mpt, nemotron_h (and nemotron_h_omni's
    /// text config, nemotron_h's), mamba, falcon_mamba, mamba2, rwkv and molmo2
    /// (whose embeddings take no padding index) has its entry.
    @Test func everyPaddedFamilyHasItsEntry() {
        let unpadded = [
            "bloom", "falcon", "gpt2", "gpt_bigcode", "gpt_neo", "gpt_neox", "gptj", "codegen", "mpt", "nemotron_h", "mamba", "falcon_mamba", "mamba2",
            "rwkv", "molmo2",
        ]
        for modelType in ModelRegistry.supportedModelTypes where !unpadded.contains(modelType) && modelType != "nemotron_h_omni" {
            // A text_config whose class follows its model_type (mistral3's) is checked as that type
            // (glm46v's glm4v_text as glm4v's own text config class).
            // (qwen2_5_omni's is its thinker's text config class: `qwen2_5_omni.thinker_config.text_config`.)
            let key = ConfigValueKinds.textConfigClass(of: modelType, text: [])
                ?? ConfigValueKinds.nestedTextConfigs[modelType].map { modelType + "." + $0 }
                ?? ConfigValueKinds.textConfigModelTypes[modelType] ?? modelType
            #expect(ConfigValueKinds.paddedEmbeddings[key] != nil, "\(key)")
        }
        for key in ConfigValueKinds.paddedEmbeddings.keys {
            #expect(ConfigValueKinds.transformers[key] != nil, "\(key)")
        }
        for modelType in unpadded { #expect(ConfigValueKinds.paddedEmbeddings[modelType] == nil, "\(modelType)") }
    }

    /// Every family has its config class's table, so a new family cannot
    /// skip the check.
    @Test func everyFamilyHasItsTable() {
        for modelType in ModelRegistry.supportedModelTypes {
            #expect(ConfigValueKinds.transformers[modelType] != nil, "\(modelType)")
        }
        #expect(ConfigValueKinds.transformers["gemma3.text_config"]?.className == "Gemma3TextConfig")
    }

    @Test func kindsFollowTheSpec() {
        #expect(ConfigValueKinds.accepts("ni", .null))
        #expect(!ConfigValueKinds.accepts("i", .null))
        #expect(!ConfigValueKinds.accepts("i", .number(4)))
        #expect(!ConfigValueKinds.accepts("f", .integer(1)))
        #expect(ConfigValueKinds.accepts("if", .integer(1)))
        #expect(!ConfigValueKinds.accepts("b", .integer(0)))
        #expect(ConfigValueKinds.accepts("ni[i]", .array([.integer(1), .integer(2)])))
        #expect(!ConfigValueKinds.accepts("ni[i]", .array([.number(1)])))
        #expect(ConfigValueKinds.accepts("n[s]", .array([])))
        #expect(ConfigValueKinds.accepts("no", .object([])))
        #expect(!ConfigValueKinds.accepts("no", .array([])))
        // An integer literal beyond 64 bits is Python's int (left to the range checks), 1e20 its float.
        #expect(ConfigValueKinds.accepts("i", .bigInteger(1e20)))
        #expect(!ConfigValueKinds.accepts("i", .number(1e20)))
        #expect(!ConfigValueKinds.accepts("f", .bigInteger(1e20)))
    }
}

@testable import Architectures
import CheckpointIO
import DroptraceSupport
@testable import Dropping
import Foundation
import Scoring
import TensorEngine
import Testing

/// StepFun's Step 3.7 (`step3p7`, read as its language model): the layers
/// as Step3p7TextModel builds them, the spellings Step3p7TextConfig reads
/// alike (its aliases and the releases' legacy keys), its refusals
/// (compared with transformers 5.25's), cached decoding and exports. The
/// scores themselves are checked against transformers with every other
/// family (`DropTests` and the reference suites).
@Suite struct Step3p7Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "step3p7-f32"

    static func text(_ key: String, _ value: String) -> Mutant {
        Mutant(name, "text_config." + key, value, key: key)
    }

    /// Values Step3p7TextConfig refuses, on which its model fails or
    /// computes what droptrace does not: each refused naming its key.
    static let mutants: [Mutant] = [
        // A gate per output column: Step3p7Attention cannot broadcast it (and g_proj's shape mismatches).
        text("gating", "false"), text("gating", "\"per-column\""),
        // Bidirectional masks; a property the class cannot set (AttributeError).
        text("use_bidirectional_attention", "true"), text("limit_after_act", "false"),
        // 0 ** -0.5 (ZeroDivisionError); a negative scalar's complex root.
        text("query_pre_attn_scalar", "0"), text("query_pre_attn_scalar", "-4"),
        // Layer kinds the model has no mask or MLP for (AttributeError, validate_layer_type), lists of another length.
        text("layer_types", "[\"full_attention\", \"chunked_attention\", \"full_attention\", \"sliding_attention\"]"),
        text("layer_types", "[\"full_attention\", \"sliding_attention\", \"full_attention\"]"),
        text("mlp_layer_types", "[\"dense\", \"moe\", \"sparse\", \"sparse\"]"),
        // A clip list shorter than the layers reading it (IndexError).
        text("swiglu_limits", "[0, 0.6]"), text("swiglu_limits_shared", "[0.6]"),
        // The sliding-window mask without a window (TypeError), or an empty one.
        text("sliding_window", "null"), text("sliding_window", "0"),
        // per_layer_config: a layer index past the layers (ValueError), a setting only the attention would read.
        Mutant(name, "text_config.per_layer_config", "{\"7\": {\"num_attention_heads\": 2}}", key: "per_layer_config"),
        Mutant(name, "text_config.per_layer_config", "{\"1\": {\"num_attention_heads\": 2, \"head_dim\": 4}}", key: "head_dim"),
        // Query heads the key/value heads do not divide (a precondition failure before the check).
        Mutant(name, "text_config.per_layer_config", "{\"1\": {\"num_attention_heads\": 3}, \"3\": {\"num_attention_heads\": 2}}", key: "num_key_value_heads"),
        // More experts per token than experts (torch.topk fails), none; also under the alias that wins.
        text("num_experts_per_tok", "5"), text("num_experts_per_tok", "0"), text("moe_top_k", "5"),
        // Key/value heads that do not divide a layer's query heads.
        text("num_key_value_heads", "3"),
        // Sizes the tensors contradict (the alias over the field).
        text("n_routed_experts", "8"), text("moe_num_experts", "8"), text("share_expert_dim", "12"),
        // A legacy rotary list too short for a layer type's first layer (IndexError).
        text("rope_parameters", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        if mutant.path == "text_config.rope_parameters" {
            // With rope_parameters gone the class reads rope_theta per layer.
            let fixture = try EditedFixture(Self.name) { config in
                var text = config["text_config"] as! [String: Any]
                text["rope_parameters"] = nil
                text["rope_theta"] = [10000.0]
                config["text_config"] = text
            }
            fixture.expectRefused(naming: "rope_theta")
            return
        }
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Full layers of 4 query heads, sliding ones of 2 (per_layer_config)
    /// within 8 keys, all over 2 key/value heads of 8, scaled by 12 ** -1/2,
    /// the full layers rotating 4 columns of each head; layer 0's MLP dense,
    /// the others 2 of 4 routed experts beside a shared one, clipped per layer.
    @Test func layersAsStep3p7Builds() throws {
        let model = try EditedFixture(Self.name).load()
        let limits: [(routed: Float?, shared: Float?)] = [(nil, 0.6), (0.6, nil), (nil, 0.5), (0.5, nil)]
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            let attention = try #require(block.attention?.mixer.softmaxAttention)
            let sliding = layer % 2 == 1
            #expect(attention.layout.numHeads == (sliding ? 2 : 4) && attention.layout.numKVHeads == 2 && attention.layout.headDim == 8)
            #expect(attention.slidingWindow == (sliding ? 8 : nil))
            #expect(attention.scale == Float(pow(12.0, -0.5)))
            #expect(attention.rotary?.rotaryDim == (sliding ? 8 : 4))
            #expect(attention.outputGate != nil && attention.outputGateFunction == .sigmoid)
            func clip(_ activation: Activation) -> Float? {
                if case .clipped(.silu, let limit) = activation { return limit }
                #expect(activation == .silu)
                return nil
            }
            switch block.mlp?.feedForward {
            case .gated(_, _, let activation)? where layer == 0:
                #expect(clip(activation) == limits[layer].shared)
            case .mixture(let mixture)? where layer > 0:
                #expect(mixture.experts.count == 4 && mixture.sharedExperts.count == 1 && mixture.expertsPerToken == 2)
                guard case .gated(_, _, let routed)? = mixture.experts.first, case .gated(_, _, let shared)? = mixture.sharedExperts.first else {
                    Issue.record("layer \(layer): experts that are not gated MLPs")
                    continue
                }
                #expect(clip(routed) == limits[layer].routed && clip(shared) == limits[layer].shared)
            default:
                Issue.record("layer \(layer): not the MLP mlp_layer_types gives")
            }
        }
    }

    /// Spellings Step3p7TextConfig reads alike: the released legacy keys
    /// (rotary per layer in rope_theta / partial_rotary_factors, the sliding
    /// heads in attention_other_setting, the MoE layers in moe_layers_enum,
    /// every per-layer list padded with num_nextn_predict_layers entries),
    /// the attribute_map aliases for their fields, hidden_act (always
    /// SiLU), num_local_experts (replaced by n_routed_experts) and any
    /// text_config.model_type (Step3p7Config drops it).
    @Test func spellingsAsTransformersReadsThem() throws {
        let base = try scores(EditedFixture(Self.name))
        func edited(_ change: @escaping (inout [String: Any]) -> Void) throws -> [Double] {
            try scores(EditedFixture(Self.name) { config in
                var text = config["text_config"] as! [String: Any]
                change(&text)
                config["text_config"] = text
            })
        }
        let legacy = try edited { text in
            for key in ["rope_parameters", "per_layer_config", "num_sliding_attention_heads", "mlp_layer_types"] { text[key] = nil }
            text["rope_theta"] = [10000.0, 5000.0, 10000.0, 5000.0, 10000.0]
            text["partial_rotary_factors"] = [0.5, 1.0, 0.5, 1.0, 0.5]
            text["attention_other_setting"] = ["num_attention_heads": 2, "num_attention_groups": 2]
            text["moe_layers_enum"] = "1,2,3,4"
            text["num_nextn_predict_layers"] = 1
            text["layer_types"] = ["full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention"]
            text["swiglu_limits"] = [0, 0.6, 0, 0.5, 0]
            text["swiglu_limits_shared"] = [0.6, 0, 0.5, 0, 0]
            text["hidden_act"] = "swigluoai"
        }
        #expect(legacy == base)
        // (An alias beside its field with another value is refused, as for every family: keep one of them.)
        #expect(try edited { text in
            for (field, alias) in [
                ("n_routed_experts", "moe_num_experts"), ("num_experts_per_tok", "moe_top_k"), ("share_expert_dim", "share_expert_dims"),
                ("num_key_value_heads", "num_attention_groups"),
            ] {
                text[alias] = text.removeValue(forKey: field)
            }
            text["num_local_experts"] = 9
            text["model_type"] = "llama"
        } == base)
        // The per-type rotary entries are read only when every type in use has one; else the per-layer keys, by default 1e4 on whole heads.
        let flat = try edited { $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 77.0] }
        #expect(flat == (try edited { $0["rope_parameters"] = nil }))
        #expect(flat != base)
        for change in [{ (t: inout [String: Any]) in t["moe_router_scaling_factor"] = 0.0 }, { $0["swiglu_limits"] = [] }, { $0["query_pre_attn_scalar"] = 8 }] {
            #expect(try edited(change) != base)
        }
    }

    /// The head is tied by the top-level tie_word_embeddings alone (the
    /// text config's flag is not read); untied, a head the checkpoint lacks is refused.
    @Test func headTiesByTheTopLevelFlag() throws {
        func withoutHead(top: Bool?, text: Bool) throws -> EditedFixture {
            let fixture = try EditedFixture(Self.name) { config in
                config["tie_word_embeddings"] = top
                var textConfig = config["text_config"] as! [String: Any]
                textConfig["tie_word_embeddings"] = text
                config["text_config"] = textConfig
            }
            try BadInputTests().rewriteWeights(fixture.model) { entries in entries.removeAll { $0.name == "lm_head.weight" } }
            return fixture
        }
        _ = try withoutHead(top: true, text: false).load().head()
        #expect(throws: DroptraceError.self) { _ = try withoutHead(top: nil, text: true).load().head() }
    }

    /// Key/value-cache decoding equals the batched forward, across the
    /// sliding window, with modules and blocks dropped.
    @Test func cachedDecodingMatchesTheForward() throws {
        let model = try EditedFixture(Self.name).load()
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12,
            plans: [.none, DropPlan(attention: [1]), DropPlan(blocks: [0]), DropPlan(mlp: [2]), DropPlan(blocks: [1, 2])], label: Self.name)
    }

    /// A block-drop export spells out the kept layers' attention and MLP
    /// types and keeps their per_layer_config entries under their new indices;
    /// one of a config giving MTP layers or per-layer rotary lists is refused.
    @Test func blockDropExport() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 3)
        #expect(text["layer_types"] as? [String] == ["sliding_attention", "full_attention", "sliding_attention"])
        #expect(text["mlp_layer_types"] as? [String] == ["sparse", "sparse", "sparse"])
        let perLayer = try #require(text["per_layer_config"] as? [String: Any])
        #expect(Set(perLayer.keys) == ["0", "2"])
        for key in ["num_nextn_predict_layers", "rope_theta"] {
            let fixture = try EditedFixture(Self.name) { config in
                var text = config["text_config"] as! [String: Any]
                if key == "rope_theta" {
                    text["rope_parameters"] = nil
                    text["rope_theta"] = [10000.0, 5000.0, 10000.0, 5000.0]
                    text["partial_rotary_factors"] = [0.5, 1.0, 0.5, 1.0]
                } else {
                    text[key] = 1
                }
                config["text_config"] = text
            }
            let problem = try fixture.load().exportProblem(DropPlan(blocks: [0]))
            #expect(problem?.contains(key) == true && problem?.contains("\n") == false, "\(problem ?? "nil")")
        }
    }
}

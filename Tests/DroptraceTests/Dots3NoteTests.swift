@testable import Architectures
import CheckpointIO
import DroptraceSupport
@testable import Dropping
import Foundation
import Scoring
import TensorEngine
import Testing

/// dots.note's text model (`dots3_note_text`) and the language model of its
/// multimodal wrapper (`dots3_note`): each layer type's latent attention and
/// shape, the spellings Dots3NoteTextConfig resolves alike, its refusals
/// (compared with transformers 5.25's), cached decoding and exports. The
/// scores themselves are checked against transformers with every other
/// family (`DropTests` and the reference suites).
@Suite struct Dots3NoteTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "dots3_note_text-f32"
    static let wrapper = "dots3_note-f32"
    static let fixtures = [name, wrapper]

    /// Values Dots3NoteTextConfig refuses, on which its model fails or
    /// computes what droptrace does not: each refused naming its key.
    static let mutants: [Mutant] = [
        // Dots3NoteTextConfig.validate_architecture.
        Mutant(name, "q_lora_rank", "null"), Mutant(name, "n_shared_experts", "0"), Mutant(name, "n_group", "3"),
        Mutant(name, "n_group", "8"), Mutant(name, "topk_group", "3"), Mutant(name, "num_key_value_heads", "2"),
        Mutant(name, "per_layer_config.1.num_key_value_heads", "1", key: "per_layer_config.1.num_key_value_heads"),
        Mutant(name, "per_layer_config.1.head_dim", "20", key: "per_layer_config.1.head_dim"),
        // A sum past 64 bits (a trap before).
        Mutant(name, "per_layer_config.1.qk_nope_head_dim", "9223372036854775807", key: "per_layer_config.1.qk_nope_head_dim"),
        Mutant(name, "index_head_dim", "4", key: "qk_rope_head_dim"),
        // The heterogeneous config: a layer index past the layers, keys read globally elsewhere.
        Mutant(name, "per_layer_config.7", "{\"head_dim\": 16}", key: "per_layer_config"),
        Mutant(name, "per_layer_config.1.rms_norm_eps", "1e-5", key: "rms_norm_eps"),
        Mutant(name, "per_layer_config.1.sliding_window", "3", key: "sliding_window"),
        // One shape per layer type (Dots3NoteTextRotaryEmbedding and the config's checks read it by type).
        Mutant(name, "per_layer_config.0", "{\"num_attention_heads\": 2, \"num_key_value_heads\": 2}", key: "per_layer_config"),
        // Layer types the model builds no mask for (KeyError), lists of another length.
        Mutant(name, "layer_types", "[\"indexed_attention\", \"linear_attention\", \"indexed_attention\", \"full_attention\"]"),
        Mutant(name, "layer_types", "[\"indexed_attention\", \"sliding_attention\", \"indexed_attention\"]"),
        Mutant(name, "mlp_layer_types", "[\"dense\", \"moe\", \"sparse\", \"sparse\"]"),
        Mutant(name, "sliding_window", "0"),
        // Rotation droptrace does not run, or that transformers cannot.
        Mutant(name, "rope_parameters.sliding_attention.rope_type", "\"yarn\"", key: "rope_parameters.sliding_attention.rope_type"),
        Mutant(name, "rope_parameters.indexed_attention", "null", key: "rope_parameters.indexed_attention"),
        Mutant(name, "rope_parameters.full_attention.rope_theta", "-1", key: "rope_parameters.full_attention.rope_theta"),
        // Sizes the tensors contradict.
        Mutant(name, "n_routed_experts", "16"), Mutant(name, "per_layer_config.1.kv_lora_rank", "8", key: "kv_lora_rank"),
        Mutant(name, "shared_experts_intermediate_size", "12", key: "shared_experts"),
        // Another text model type under the wrapper.
        Mutant(wrapper, "text_config.model_type", "\"deepseek_v32\"", key: "text_config.model_type"),
        Mutant(wrapper, "text_config.q_lora_rank", "null", key: "text_config.q_lora_rank"),
        Mutant(wrapper, "text_config", "null", key: "text_config"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The legacy MLP rule's modulo by zero and list too short fail in
    /// Dots3NoteTextConfig: refused naming moe_layer_freq.
    @Test func legacyMLPRuleFailuresAreRefused() throws {
        try EditedFixture(Self.name) { $0["mlp_layer_types"] = nil; $0["moe_layer_freq"] = 0 }.expectRefused(naming: "moe_layer_freq")
        try EditedFixture(Self.name) { $0["mlp_layer_types"] = nil; $0["moe_layer_freq"] = [1, 1] }.expectRefused(naming: "moe_layer_freq")
        // A list of flags: layer 0 dense by first_k_dense_replace, the others by their flags.
        let listed = try scores(EditedFixture(Self.name) { $0["mlp_layer_types"] = nil; $0["moe_layer_freq"] = [1, 1, 1, 1] })
        #expect(try listed == scores(EditedFixture(Self.name)))
    }

    /// Indexed, sliding, indexed and full layers: 4 heads of nope 8 + rope
    /// 8 (values 12), the sliding one 2 heads of nope 12 + rope 4 (values
    /// 10, window 6); the indexed ones' indexer keeps 12 keys; each attention
    /// gated per head; layer 0's MLP dense, the others routed beside a shared
    /// expert of 24. The wrapper reads the same layers.
    @Test(arguments: fixtures)
    func layersAsDots3NoteBuilds(_ fixture: String) throws {
        let model = try EditedFixture(fixture).load()
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            let attention = try #require(block.attention?.mixer.softmaxAttention)
            guard case .latent(let latent) = attention.projection else {
                Issue.record("layer \(layer): not a latent attention")
                continue
            }
            let sliding = layer == 1
            #expect(latent.numHeads == (sliding ? 2 : 4) && latent.ropeDim == (sliding ? 4 : 8) && latent.nopeDim == (sliding ? 12 : 8))
            #expect(latent.valueDim == (sliding ? 10 : 12) && latent.keyRopeNorm != nil && attention.outputGate != nil)
            #expect(attention.slidingWindow == (sliding ? 6 : nil))
            #expect((attention.indexer?.topK) == (layer == 0 || layer == 2 ? 12 : nil))
            switch block.mlp?.feedForward {
            case .gated? where layer == 0:
                break
            case .mixture(let mixture)? where layer > 0:
                #expect(mixture.experts.count == 8 && mixture.sharedExperts.count == 1 && mixture.expertsPerToken == 2)
            default:
                Issue.record("layer \(layer): not the MLP mlp_layer_types gives")
            }
        }
    }

    /// Spellings Dots3NoteTextConfig resolves alike: the sliding layers'
    /// shape as the legacy `swa_*` keys (without per_layer_config), the
    /// rotation as its defaults from `rope_theta` and `swa_rope_theta`, the
    /// MLP types from `first_k_dense_replace`, the attention types from the
    /// class's rule renamed by `use_dsa`.
    @Test func legacySpellingsAsTransformersReadsThem() throws {
        let base = try scores(EditedFixture(Self.name))
        let legacy = try scores(EditedFixture(Self.name) { config in
            config["per_layer_config"] = nil
            for (key, value) in [
                ("num_attention_heads", 2), ("num_key_value_heads", 2), ("q_lora_rank", 20), ("kv_lora_rank", 12), ("head_dim", 16),
                ("qk_nope_head_dim", 12), ("v_head_dim", 10),
            ] { config["swa_" + key] = value }
            config["rope_parameters"] = nil
            config["rope_theta"] = 10000.0
            config["swa_rope_theta"] = 5.0
            config["mlp_layer_types"] = nil
            config["first_k_dense_replace"] = 1
            // Without per_layer_config use_dsa defaults to true (full_attention read as indexed); null keeps them.
            config["use_dsa"] = NSNull()
        })
        #expect(legacy == base)
        // use_dsa true: the full layer is indexed, and needs the indexer its weights lack; false: the indexed ones are full.
        #expect(throws: DroptraceError.self) { _ = try scores(EditedFixture(Self.name) { $0["use_dsa"] = true }) }
        #expect(try scores(EditedFixture(Self.name) { $0["use_dsa"] = false }) != base)
        // A layer type the nested rope parameters lack (KeyError in transformers).
        try EditedFixture(Self.name) { config in
            var rope = config["rope_parameters"] as! [String: Any]
            rope["full_attention"] = nil
            config["rope_parameters"] = rope
        }.expectRefused(naming: "rope_parameters.full_attention")
        // One flat set of rope parameters: every type alike (the sliding layer's base 10000, not 5).
        #expect(try scores(EditedFixture(Self.name) { $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 10000.0] }) != base)
        // Not read: rope_interleave (always interleaved), partial_rotary_factor (derived from the widths).
        #expect(try scores(EditedFixture(Self.name) { $0["rope_interleave"] = false; $0["partial_rotary_factor"] = 0.5 }) == base)
    }

    /// Prefill past the window and index_topk, then key/value-cache decoding:
    /// both equal the full forward, under drops of an indexed layer's and
    /// the sliding layer's attention, an MLP and a block.
    @Test(arguments: fixtures)
    func prefillAndDecodingMatchTheForward(_ fixture: String) throws {
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture(fixture).load(), tokens: 30, prefill: 20,
            plans: [.none, DropPlan(attention: [0]), DropPlan(attention: [1]), DropPlan(mlp: [2]), DropPlan(blocks: [1])], label: fixture)
    }

    /// The wrapper's head is tied by its top-level flag alone, as
    /// Dots3NoteForConditionalGeneration ties it; untied there, the head the
    /// checkpoint lacks is refused.
    @Test func wrapperTiesByTheTopLevel() throws {
        func tied(top: Bool, text: Bool) -> (inout [String: Any]) -> Void {
            { config in
                var textConfig = config["text_config"] as! [String: Any]
                textConfig["tie_word_embeddings"] = text
                config["text_config"] = textConfig
                config["tie_word_embeddings"] = top
            }
        }
        _ = try EditedFixture(Self.wrapper, tied(top: true, text: false)).load().head()
        #expect(throws: DroptraceError.self) { _ = try EditedFixture(Self.wrapper, tied(top: false, text: true)).load().head() }
    }

    /// A block-drop export keeps the kept layers' types and renumbers
    /// per_layer_config with them.
    @Test func blockDropExportRenumbersThePerLayerShapes() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0])
        #expect(config["layer_types"] as? [String] == ["sliding_attention", "indexed_attention", "full_attention"])
        #expect(config["mlp_layer_types"] as? [String] == ["sparse", "sparse", "sparse"])
        let perLayer = try #require(config["per_layer_config"] as? [String: Any])
        #expect(Array(perLayer.keys) == ["0"])
        let kept = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [1])
        #expect((kept["per_layer_config"] as? [String: Any])?.isEmpty == true)
        #expect(kept["layer_types"] as? [String] == ["indexed_attention", "indexed_attention", "full_attention"])
    }
}

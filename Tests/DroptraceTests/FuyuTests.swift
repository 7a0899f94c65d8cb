@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Testing

/// Fuyu (`fuyu-f32`): Fuyu-8B's Persimmon language model under the released
/// names (`language_model.model.`, `language_model.lm_head`), its config
/// written flat as released: FuyuConfig builds the text config from the
/// top-level keys it lists alone (rope_theta 25000 here), with
/// `partial_rotary_factor` 0.5 whatever the top level says.
@Suite struct FuyuTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "fuyu-f32"

    /// The listed keys checked against PersimmonConfig; the patch projection's sizes.
    static let mutants: [Mutant] = [
        Mutant(name, "hidden_size", "48.0", key: "hidden_size"),
        Mutant(name, "qk_layernorm", "1", key: "qk_layernorm"),
        Mutant(name, "rope_theta", "null", key: "rope_theta"),
        Mutant(name, "patch_size", "null", key: "patch_size"),
        Mutant(name, "num_channels", "-1", key: "num_channels"),
        Mutant(name, "patch_size", "4000000000", key: "patch_size"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score within 1e-7 of transformers', read under the released names.
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.name)
        #expect(try EditedFixture(Self.name).load().layerNaming.prefix == "language_model.model.layers.")
    }

    /// Top-level keys FuyuConfig does not list stay on the wrapper, unread
    /// (transformers' logits do not move with them): a `partial_rotary_factor`
    /// (0.5 is set), a padding token beyond the vocabulary, key/value heads,
    /// biases. A `rope_scaling` is listed: its partial factor is read over the 0.5.
    @Test func flatKeysOutsideTheListAreNotRead() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let unread = try EditedFixture(Self.name) { config in
            config["partial_rotary_factor"] = 1.0
            config["pad_token_id"] = 600
            config["num_key_value_heads"] = 1
            config["attention_bias"] = true
            config["max_window_layers"] = "x"
        }
        #expect(try unread.attentionScores() == base)
        let scaled = try EditedFixture(Self.name) { $0["rope_scaling"] = ["rope_type": "default", "partial_rotary_factor": 1.0] }
        #expect(try scaled.attentionScores() != base)
    }

    /// The same model from `text_config`, read as PersimmonConfig reads it:
    /// its own rope base (10000 where absent) and partial factor; its
    /// padding token checked; the flat keys beside it unread.
    @Test func textConfigFormAsTheClassBuildsIt() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let listed = [
            "vocab_size", "max_position_embeddings", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "hidden_act", "layer_norm_eps", "qk_layernorm", "eos_token_id",
        ]
        func nested(_ text: [String: Any]) throws -> EditedFixture {
            try EditedFixture(Self.name) { config in
                var moved: [String: Any] = ["model_type": "persimmon"]
                for key in listed { moved[key] = config.removeValue(forKey: key) }
                config["text_config"] = moved.merging(text, uniquingKeysWith: { $1 })
            }
        }
        let theta: [String: Any] = ["rope_type": "default", "rope_theta": 25_000.0]
        #expect(try nested(["rope_parameters": theta]).attentionScores() == base)
        #expect(try nested([:]).attentionScores() != base)
        #expect(try nested(["rope_parameters": theta.merging(["partial_rotary_factor": 1.0], uniquingKeysWith: { $1 })]).attentionScores() != base)
        try nested(["rope_parameters": theta, "pad_token_id": 600]).expectRefused(naming: "text_config.pad_token_id")
        try nested(["rope_parameters": theta, "hidden_size": "48"]).expectRefused(naming: "text_config.hidden_size")
    }

    /// Without `text_config` and with none of the listed keys, FuyuConfig
    /// builds Fuyu-8B's text config from its defaults, which droptrace does
    /// not hold: refused, naming the first size it needs.
    @Test func configWithoutTextKeysIsRefused() throws {
        let bare = try EditedFixture(Self.name) { config in
            for key in ConfigValueKinds.flatTextConfigKeys["fuyu"]!.keys { config.removeValue(forKey: key) }
        }
        bare.expectRefused(naming: "text_config.hidden_size")
    }
}

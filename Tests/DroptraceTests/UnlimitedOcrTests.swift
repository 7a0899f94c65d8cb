@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Testing

/// Unlimited OCR (`unlimited_ocr-f32`): DeepSeek-OCR 2's language model
/// with reference sliding attention (on a prompt every token attends to all
/// earlier ones) and its MLPs by `first_k_dense_replace` where
/// `mlp_layer_types` is absent, read from the original checkpoint's
/// `language_config` with the top level's `sliding_window`, or from `text_config`.
@Suite struct UnlimitedOcrTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "unlimited_ocr-f32"

    static let mutants: [Mutant] = [
        // UnlimitedOcrTextConfig.validate_architecture; the model masks full and reference sliding layers only.
        Mutant(name, "sliding_window", "null", key: "sliding_window"),
        Mutant(name, "sliding_window", "6.0", key: "sliding_window"),
        Mutant(name, "language_config.layer_types", "[\"sliding_attention\", \"full_attention\", \"full_attention\", \"full_attention\"]", key: "layer_types"),
        Mutant(name, "language_config.mlp_layer_types", "[\"dense\", \"dense\", \"moe\", \"sparse\"]", key: "mlp_layer_types"),
        Mutant(name, "language_config.num_experts", "8", key: "language_config.num_experts"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score within 1e-7 of transformers', read under `model.language_model.` from the released names.
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.name)
        #expect(try EditedFixture(Self.name).load().layerNaming.prefix == "model.language_model.layers.")
    }

    /// The same model from `text_config` (as save_pretrained writes it), with
    /// full-attention layers (the same on a prompt), and with its MLPs left to
    /// `first_k_dense_replace` (2 here; 1 by default, which reads layer 1's
    /// dense MLP as routed: refused for its missing router).
    @Test func configFormsAsTheClassBuildsThem() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        func moved(_ change: @escaping (inout [String: Any]) -> Void = { _ in }) throws -> EditedFixture {
            try EditedFixture(Self.name) { config in
                var text = config.removeValue(forKey: "language_config") as! [String: Any]
                text["sliding_window"] = config.removeValue(forKey: "sliding_window")
                config["text_config"] = text
                change(&config)
            }
        }
        #expect(try moved().attentionScores() == base)
        #expect(try moved { EditedModel.set(Array(repeating: "full_attention", count: 4), at: "text_config.layer_types", in: &$0) }
            .attentionScores() == base)
        // The top level's window replaces language_config's.
        #expect(try EditedFixture(Self.name) { EditedModel.set(nil, at: "language_config.sliding_window", in: &$0) }.attentionScores() == base)
        try moved { EditedModel.set(NSNull(), at: "text_config.sliding_window", in: &$0) }.expectRefused(naming: "sliding_window")
        let rule = try EditedFixture(Self.name) {
            EditedModel.set(nil, at: "language_config.mlp_layer_types", in: &$0)
            EditedModel.set(2, at: "language_config.first_k_dense_replace", in: &$0)
        }
        #expect(try rule.attentionScores() == base)
        #expect(try rule.exportedConfig(droppingBlocks: [0]).member("language_config", "mlp_layer_types") as? [String] == ["dense", "sparse", "sparse"])
        let error = #expect(throws: DroptraceError.self) {
            try EditedFixture(Self.name) { EditedModel.set(nil, at: "language_config.mlp_layer_types", in: &$0) }.load()
        }
        #expect(error?.message.contains("layers.1.mlp") == true, "\(String(describing: error))")
    }
}

extension Dictionary where Key == String, Value == Any {
    /// The value at `section`.`key` of a config.json object.
    fileprivate func member(_ section: String, _ key: String) -> Any? { (self[section] as? [String: Any])?[key] }
}

@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Dropping
import Foundation
import TensorEngine
import Testing

/// GPT-Neo's defaults as GPTNeoConfig has them, its global and local layers
/// by `attention_types`, its unscaled scores, and block-drop exports that
/// keep each kept layer's type; the scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`).
@Suite struct GPTNeoTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("gpt_neo-f32", "num_heads", "5"),
        Mutant("gpt_neo-f32", "hidden_size", "0"),
        Mutant("gpt_neo-f32", "num_layers", "null"),
        Mutant("gpt_neo-f32", "intermediate_size", "-1"),
        Mutant("gpt_neo-f32", "layer_norm_epsilon", "0.0"),
        Mutant("gpt_neo-f32", "window_size", "0"),
        Mutant("gpt_neo-f32", "window_size", "null"),
        // GPTNeoConfig refuses an expansion of another length than num_layers.
        Mutant("gpt_neo-f32", "attention_types", "[[[\"global\", \"local\"], 3]]"),
        Mutant("gpt_neo-f32", "attention_types", "[[[\"global\"], 9223372036854775807]]"),
        Mutant("gpt_neo-f32", "attention_types", "[[[\"global\"], -4]]"),
        // GPTNeoAttention raises for any other type.
        Mutant("gpt_neo-f32", "attention_types", "[[[\"global\", \"sparse\"], 2]]"),
        Mutant("gpt_neo-f32", "attention_types", "[[\"global\", 4]]"),
        Mutant("gpt_neo-f32", "attention_types", "\"global\""),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The fixture's [[["global", "local"], 2]]: layers 1 and 3 attend to the
    /// last window_size keys; no layer scales its scores; q/k/v without
    /// biases, out_proj with one.
    @Test func localLayersFollowAttentionTypes() throws {
        let model = try EditedFixture("gpt_neo-f32").load()
        let windows = try (0..<4).map { try model.block($0).attention?.attention.slidingWindow }
        #expect(windows == [nil, 8, nil, 8])
        let attention = try #require(try model.block(0).attention?.attention)
        guard case .fused(let qkv) = attention.projection else { return }
        #expect(attention.scale == 1 && attention.rotary == nil && qkv.bias == nil && attention.output.bias != nil)

        let global = try EditedFixture("gpt_neo-f32") { $0["attention_types"] = [[["global"], 4]] }.load()
        #expect(try (0..<4).allSatisfy { try global.block($0).attention?.attention.slidingWindow == nil })
    }

    /// Without attention_types the default [[["global", "local"], 12]]
    /// expands to 24 layer types, which a 4-layer config cannot take.
    @Test func defaultAttentionTypesNeedTwentyFourLayers() throws {
        try EditedFixture("gpt_neo-f32") { $0["attention_types"] = nil }.expectRefused(naming: "attention_types")
    }

    /// Dropping block 1 (local) keeps global, global, local: attention_types
    /// is written back as one run per kept layer, attention_layers alike.
    @Test func blockDropExportKeepsEachLayersType() throws {
        let config = try EditedFixture("gpt_neo-f32").exportedConfig(droppingBlocks: [1])
        #expect(config["num_layers"] as? Int == 3)
        let runs = try #require(config["attention_types"] as? [[Any]])
        #expect(runs.map { ($0[0] as? [String]) ?? [] } == [["global"], ["global"], ["local"]])
        #expect(runs.allSatisfy { $0[1] as? Int == 1 })
        #expect(config["attention_layers"] as? [String] == ["global", "global", "local"])
    }
}

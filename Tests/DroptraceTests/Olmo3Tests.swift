import Architectures
import CheckpointIO
import Foundation
import Testing

/// OLMo-3: sliding windows by `layer_types` (every fourth layer full by
/// default), a rotary base per layer type resolved as transformers 5.x
/// resolves it, and the checks on those keys.
@Suite struct Olmo3Tests {
    static let sliding = "sliding_attention", full = "full_attention"

    /// The second inverse frequency of a head of 8: base^(−2/8).
    static func secondFrequency(base: Double) -> Float { Float(1 / Foundation.pow(base, 0.25)) }

    func windowsAndSecondFrequencies(_ model: any LanguageModel) throws -> [(Int?, Float?)] {
        try (0..<model.layerCount).map { index in
            let attention = try model.block(index).attention?.attention
            return (attention?.slidingWindow, attention?.rotary?.inverseFrequencies[1])
        }
    }

    @Test func eachLayerTypeHasItsWindowAndRotaryBase() throws {
        // The fixture: layers 0-2 slide (window 8, base 10000), layer 3 is full (base 500000).
        let layers = try windowsAndSecondFrequencies(try EditedFixture("olmo3-f32").load())
        #expect(layers.map(\.0) == [8, 8, 8, nil])
        let sliding = Self.secondFrequency(base: 10_000), full = Self.secondFrequency(base: 500_000)
        #expect(layers.map(\.1) == [sliding, sliding, sliding, full])
    }

    /// A 4.x-style config: no layer_types, no sliding_window key, a top-level
    /// rope_theta. transformers then slides layers 0-2 with its 4096 window,
    /// gives the top-level base to the full layer only and 500000 to the others.
    @Test func silentConfigTakesTransformersDefaults() throws {
        let fixture = try EditedFixture("olmo3-f32") {
            $0["layer_types"] = nil
            $0["sliding_window"] = nil
            $0["rope_parameters"] = nil
            $0["rope_theta"] = 20_000.0
        }
        let layers = try windowsAndSecondFrequencies(try fixture.load())
        #expect(layers.map(\.0) == [4096, 4096, 4096, nil])
        let sliding = Self.secondFrequency(base: 500_000), full = Self.secondFrequency(base: 20_000)
        #expect(layers.map(\.1) == [sliding, sliding, sliding, full])
    }

    @Test func layerTypesLeftToTheRuleAreSpelledOutInBlockDroppedExports() throws {
        let fixture = try EditedFixture("olmo3-f32") { $0["layer_types"] = nil }
        let config = try fixture.exportedConfig(droppingBlocks: [1])
        #expect(config["layer_types"] as? [String] == [Self.sliding, Self.sliding, Self.full])
        #expect(config["num_hidden_layers"] as? Int == 3)
    }

    @Test(arguments: [
        ("layer_types", #"["sliding_attention", "chunked_attention", "sliding_attention", "full_attention"]"#),
        ("layer_types", #"["sliding_attention", "full_attention"]"#),
        ("sliding_window", "null"),
        ("sliding_window", "0"),
        ("rope_parameters", #"{"full_attention": {"rope_type": "default", "rope_theta": 0}}"#),
        ("rope_parameters", #"{"sliding_attention": {"rope_type": "longrope", "rope_theta": 10000.0}}"#),
        ("rope_parameters", #"{"full_attention": 5}"#),
        ("rope_theta", "-1"),
    ])
    func badValueIsRefusedNamingTheKey(key: String, json: String) throws {
        let value = try JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)
        let fixture = try EditedFixture("olmo3-f32") { $0[key] = value }
        // Errors inside a rope_parameters entry name the entry's own key (rope_theta, rope type).
        fixture.expectRefused(naming: key == "rope_parameters" ? "rope" : key)
    }

    @Test func ropeScalingBesidesPerTypeParametersIsRefused() throws {
        let fixture = try EditedFixture("olmo3-f32") { $0["rope_scaling"] = ["rope_type": "linear", "factor": 2.0] }
        fixture.expectRefused(naming: "rope_scaling")
    }

    /// OLMo-3's published intermediate checkpoints carry OLMo-2's revision
    /// names (transformers' Olmo3 documentation: `stage1-step140000-tokens294B`).
    @Test func publishedRevisionNamesParse() {
        let parts = CheckpointName.parse("stage1-step140000-tokens294B")
        #expect(parts == CheckpointName.Parts(stage: 1, step: 140_000, tokens: 294_000_000_000))
    }
}

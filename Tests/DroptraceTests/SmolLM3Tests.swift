import Architectures
import Foundation
import Scoring
import Testing

/// SmolLM3: NoPE layers from `no_rope_layers` (1: rotary) or, without the
/// list, every `no_rope_layer_interval`-th layer; sliding windows where
/// `layer_types` says (derived with `use_sliding_window`).
@Suite struct SmolLM3Tests {
    func ropeAndWindows(_ model: any LanguageModel) throws -> [(rotates: Bool, window: Int?)] {
        try (0..<model.layerCount).map { index in
            let attention = try #require(try model.block(index).attention?.attention)
            return (attention.rotary != nil, attention.slidingWindow)
        }
    }

    @Test func flaggedLayersAttendWithoutRotary() throws {
        // The fixture's no_rope_layers: [1, 0, 1, 0].
        let layers = try ropeAndWindows(try EditedFixture("smollm3-f32").load())
        #expect(layers.map(\.rotates) == [true, false, true, false])
        #expect(layers.allSatisfy { $0.window == nil })
    }

    /// Without the lists transformers derives them: every third layer NoPE,
    /// and with use_sliding_window those NoPE layers slide.
    @Test func silentConfigDerivesNoPELayersAndTheirWindows() throws {
        let fixture = try EditedFixture("smollm3-f32") {
            $0["no_rope_layers"] = nil
            $0["layer_types"] = nil
            $0["no_rope_layer_interval"] = 3
            $0["use_sliding_window"] = true
            $0["sliding_window"] = 5
        }
        let layers = try ropeAndWindows(try fixture.load())
        #expect(layers.map(\.rotates) == [true, true, false, true])
        #expect(layers.map(\.window) == [nil, nil, 5, nil])
    }

    @Test func derivedFlagsAreSpelledOutInBlockDroppedExports() throws {
        let fixture = try EditedFixture("smollm3-f32") {
            $0["no_rope_layers"] = nil
            $0["layer_types"] = nil
            $0["no_rope_layer_interval"] = 3
        }
        let config = try fixture.exportedConfig(droppingBlocks: [0])
        #expect(config["no_rope_layers"] as? [Int] == [1, 0, 1])
        #expect(config["num_hidden_layers"] as? Int == 3)
    }

    @Test(arguments: [
        ("no_rope_layers", "[1, 2, 1, 0]"),
        ("no_rope_layers", "[1, -1, 1, 0]"),
        ("no_rope_layers", "[1, 0, 1]"),
        ("no_rope_layers", "[true, false, true, false]"),
        ("layer_types", #"["full_attention", "sliding_attention", "full_attention", "full_attention"]"#),
    ])
    func badValueIsRefusedNamingTheKey(key: String, json: String) throws {
        let value = try JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)
        try EditedFixture("smollm3-f32") { $0[key] = value }.expectRefused(naming: key)
    }

    @Test(arguments: ["0", "-4"])
    func intervalBelowOneIsRefusedWhenItDecides(_ interval: String) throws {
        let fixture = try EditedFixture("smollm3-f32") {
            $0["no_rope_layers"] = nil
            $0["no_rope_layer_interval"] = Int(interval)
        }
        fixture.expectRefused(naming: "no_rope_layer_interval")
    }

    /// Sliding layers with use_sliding_window false: transformers (eager and
    /// sdpa, as hooked) gives those layers the sliding-window mask all the
    /// same (the flag only reaches flash attention's window argument), so
    /// they slide, and score as they do with the flag set.
    @Test func slidingLayersSlideWithoutUseSlidingWindow() throws {
        func fixture(useSlidingWindow: Bool) throws -> EditedFixture {
            try EditedFixture("smollm3-f32") {
                $0["sliding_window"] = 4
                $0["use_sliding_window"] = useSlidingWindow
                $0["layer_types"] = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
            }
        }
        let (without, with) = (try fixture(useSlidingWindow: false).load(), try fixture(useSlidingWindow: true).load())
        #expect(try ropeAndWindows(without).map(\.window) == [nil, 4, nil, 4])
        let sequences = FixtureFiles.jsonlSequences()
        let (a, b) = (try ImportanceScorer(model: without).score(sequences, calibrationPath: "fixture"),
                      try ImportanceScorer(model: with).score(sequences, calibrationPath: "fixture"))
        #expect(a.attention == b.attention && a.mlp == b.mlp && a.block == b.block)
        let unwindowed = try ImportanceScorer(model: try EditedFixture("smollm3-f32").load()).score(sequences, calibrationPath: "fixture")
        #expect(a.attention != unwindowed.attention, "the windows change the scores on these sequences")
    }
}

import Architectures
import Scoring
import Foundation
import Testing

/// Rotary tables of edited fixture configs against the ones transformers
/// builds from the same config.json (Fixtures/rope_reference.json,
/// scripts/fixtures/make_rope_references.py): where `original_max_position_embeddings`
/// comes from (top level over the rope parameters; max_position_embeddings
/// when absent; nested parameters never read the top level), YaRN's
/// `truncate` in nested parameters, `beta_fast` 0, GPT-NeoX sizing its table
/// by a config `head_dim`, each family reading its own spelling of the
/// top-level base and rotary fraction, and DeepSeek-V4's two rotations
/// (flat parameters are the compressed layers', nested ones take the
/// top-level base).
@Suite struct RopeStandardizationTests {
    static let reference: [String: Any] = {
        let url = FixtureFiles.root.appendingPathComponent("rope_reference.json")
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }()
    static var cases: [String: [String: Any]] { reference["cases"] as! [String: [String: Any]] }

    @Test(arguments: cases.keys.sorted())
    func rotaryTablesAreTransformers(_ name: String) throws {
        let entry = Self.cases[name]!
        let fixture = try EditedFixture(entry["fixture"] as! String) { config in
            for (key, value) in entry["set"] as! [String: Any] { config[key] = value is NSNull ? nil : value }
        }
        let model = try fixture.load()
        let layers = entry["layers"] as! [[String: Any]]
        #expect(layers.count == model.layerCount)
        for (index, expected) in layers.enumerated() {
            let block = try model.block(index)
            let ours: (frequencies: [Float], scaling: Float)
            if case .compressedAttention(let attention)? = block.attention?.mixer {
                ours = (attention.rope.frequencies, attention.rope.scaling)
            } else {
                let rotary = try #require(block.attention?.attention.rotary)
                ours = (rotary.inverseFrequencies, rotary.attentionScaling)
            }
            let frequencies = (expected["inv_freq"] as! [NSNumber]).map(\.floatValue)
            #expect(ours.frequencies.count == frequencies.count)
            for (mine, theirs) in zip(ours.frequencies, frequencies) {
                #expect(abs(mine - theirs) <= 2e-6 * abs(theirs), "layer \(index): \(ours.frequencies) vs \(frequencies)")
            }
            let scaling = (expected["attention_scaling"] as! NSNumber).floatValue
            #expect(abs(ours.scaling - scaling) <= 1e-6, "layer \(index)")
        }
    }

    /// A scaled entry by layer type without `original_max_position_embeddings`:
    /// transformers' `standardize_rope_params` gives it max_position_embeddings,
    /// but ZayaConfig, LagunaConfig, MiMoV2FlashConfig, MellumConfig and
    /// BeamConfig override `convert_rope_params_to_dict` without it, and their
    /// rope validation raises ("Missing required keys in `rope_parameters`"),
    /// while DoryConfig and CohereCompassTextConfig standardise and run it
    /// (both checked with transformers 5.25).
    @Test(arguments: [
        ("zaya-f32", "hybrid", false), ("laguna-f32", "sliding_attention", false), ("mimo_v2_flash-f32", "full_attention", false),
        ("mellum-f32", "full_attention", false), ("beam-f32", "sliding_attention", false),
        ("dory-f32", "full_attention", true), ("cohere_compass_text-f32", "sliding_attention", true),
    ])
    func scaledEntriesWithoutTheOriginalLength(fixture name: String, layerType: String, runs: Bool) throws {
        for (type, extra) in [("yarn", [:]), ("llama3", ["low_freq_factor": 1.0, "high_freq_factor": 4.0])] as [(String, [String: Double])] {
            let fixture = try EditedFixture(name) { config in
                var parameters = config["rope_parameters"] as! [String: Any]
                var entry = parameters[layerType] as! [String: Any]
                entry["rope_type"] = type
                entry["factor"] = 2.0
                for (key, value) in extra { entry[key] = value }
                parameters[layerType] = entry
                config["rope_parameters"] = parameters
            }
            if runs {
                #expect(throws: Never.self, "\(type)") { _ = try fixture.load() }
            } else {
                fixture.expectRefused(naming: "rope_parameters.\(layerType).original_max_position_embeddings")
            }
        }
    }
}

/// Keys a family's transformers model does not read change nothing.
@Suite struct UnreadConfigKeyTests {
    /// GemmaMLP takes `hidden_act` alone (transformers 5.23): a
    /// `hidden_activation` beside it, Gemma 2's key, is not read.
    @Test func gemmaReadsHiddenActNotHiddenActivation() throws {
        let windows = FixtureFiles.jsonlSequences()
        func scores(_ change: @escaping (inout [String: Any]) -> Void) throws -> [Double] {
            let scored = try ImportanceScorer(model: try EditedFixture("gemma-f32", change).load())
                .score(windows, calibrationPath: "c")
            return scored.attention + scored.mlp
        }
        let plain = try scores { _ in }
        #expect(try scores { $0["hidden_activation"] = "silu" } == plain)
        #expect(try scores { $0["hidden_act"] = "silu" } != plain, "the fixture must tell the activations apart")
    }

    /// transformers reads YaRN's `truncate` with `.get("truncate", True)`:
    /// absent is true, null (present) is false.
    @Test func yarnTruncateNullIsFalse() throws {
        let windows = FixtureFiles.jsonlSequences()
        func scores(truncate: Any?) throws -> [Double] {
            let scored = try ImportanceScorer(model: try EditedFixture("llama-f32") { config in
                var rope: [String: Any] = ["rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64]
                if let truncate { rope["truncate"] = truncate }
                config["rope_parameters"] = rope
            }.load()).score(windows, calibrationPath: "c")
            return scored.attention + scored.mlp + scored.block
        }
        #expect(try scores(truncate: NSNull()) == scores(truncate: false))
        #expect(try scores(truncate: nil) == scores(truncate: true))
        #expect(try scores(truncate: nil) != scores(truncate: false), "the fixture must tell truncation apart")
    }
}

@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Meta's Code World Model (`cwm`): Llama 3's block with CwmConfig's
/// defaults — every fourth layer full, the others within the window,
/// llama3-scaled rotary at 1e6, heads of 128, 8 key/value heads — and its
/// refusals. The fixture's config.json omits `layer_types` and
/// `rope_parameters`; the scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct CwmTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "cwm-f32"

    static let mutants: [Mutant] = [
        // CwmConfig turns 0 into None and its validation refuses None.
        Mutant(name, "sliding_window", "0"), Mutant(name, "sliding_window", "null"),
        Mutant(name, "layer_types", "[\"full_attention\"]"),
        Mutant(name, "layer_types", "[\"full_attention\", \"chunked_attention\", \"full_attention\", \"full_attention\", \"full_attention\"]"),
        // A truthy rope_scaling replaces the rope parameters, and must be an object.
        Mutant(name, "rope_scaling", "\"x\""), Mutant(name, "rope_scaling", "1"),
        Mutant(name, "num_key_value_heads", "3"), Mutant(name, "head_dim", "12"),
        Mutant(name, "mlp_bias", "1"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers 0 and 4 attend fully, 1–3 within 8 tokens; no attention
    /// biases; the MLP's three projections carry biases; heads of 16.
    @Test func layersAsCwmBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        var windows: [Int?] = []
        for index in 0..<model.layerCount {
            let block = try model.block(index)
            let attention = try #require(block.attention?.attention)
            windows.append(attention.slidingWindow)
            guard case .fused(let qkv) = attention.projection else {
                Issue.record("not a q|k|v projection")
                return
            }
            #expect(qkv.bias == nil && attention.output.bias == nil && attention.layout.headDim == 16)
            guard case .gated(let gateUp, let down, _)? = block.mlp?.feedForward else {
                Issue.record("not a gated MLP")
                return
            }
            #expect(gateUp.bias?.count == 128 && down.bias?.count == 48)
        }
        #expect(windows == [nil, 8, 8, 8, nil])
    }

    /// What config.json leaves out takes CwmConfig's defaults, and nothing
    /// else: the rope parameters (a top-level rope_theta or a falsy
    /// rope_scaling does not replace them), the layer types, the window
    /// (8192: longer than the calibration, so every layer attends fully),
    /// heads of 128 and 8 key/value heads (which the fixture's tensors refuse).
    @Test func omittedKeysTakeCwmConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let defaults: [String: Any] = [
            "rope_type": "llama3", "rope_theta": 1_000_000.0, "factor": 16.0, "high_freq_factor": 4.0,
            "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
        ]
        let written = try EditedFixture(Self.name) {
            $0["rope_parameters"] = defaults
            $0["layer_types"] = ["full_attention", "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]
        }
        #expect(try written.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["rope_theta"] = 500_000.0 }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["rope_scaling"] = [String: Any]() }.attentionScores() == base)

        // rope_parameters as written, {} too: the default rotation at CwmConfig's base.
        let unscaled = try EditedFixture(Self.name) { $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 1_000_000.0] }
            .attentionScores()
        #expect(unscaled != base)
        #expect(try EditedFixture(Self.name) { $0["rope_parameters"] = [String: Any]() }.attentionScores() == unscaled)

        let unwindowed = try EditedFixture(Self.name) { $0["sliding_window"] = nil }.attentionScores()
        let full = try EditedFixture(Self.name) { $0["layer_types"] = Array(repeating: "full_attention", count: 5) }.attentionScores()
        #expect(unwindowed == full && full != base)

        try EditedFixture(Self.name) { $0["head_dim"] = nil }.expectRefused(naming: "head_dim")
        try EditedFixture(Self.name) { $0["num_key_value_heads"] = nil }.expectRefused(naming: "num_key_value_heads")
    }

    /// An export without block 0 spells out the kept layers' types, which
    /// CwmConfig's rule would otherwise renumber (layer 3 would attend fully).
    @Test func blockDropExportWritesTheKeptLayerTypes() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0])
        #expect(config["num_hidden_layers"] as? Int == 4)
        #expect(config["layer_types"] as? [String] == ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"])
    }
}

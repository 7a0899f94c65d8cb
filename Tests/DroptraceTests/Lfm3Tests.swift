@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// LFM3 (`lfm3`): LFM2's convolutions with sliding and full attention
/// layers, per-type rotation, the per-head output gate and sandwich norms,
/// Lfm3Config's defaults and refusals. The scores themselves are checked
/// against transformers with every other family (`DropTests` and the
/// reference suites).
@Suite struct Lfm3Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "lfm3-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "layer_types", "[\"conv\", \"conv\", \"linear_attention\", \"conv\", \"sliding_attention\", \"conv\"]"),
        // Layer 0 holds a convolution's weights.
        Mutant(name, "layer_types", "[\"full_attention\", \"conv\", \"full_attention\", \"conv\", \"sliding_attention\", \"conv\"]"),
        Mutant(name, "sliding_window", "null"), Mutant(name, "conv_L_cache", "4"),
        Mutant(name, "rope_parameters.full_attention.rope_type", "\"yarn\"", key: "rope_parameters.full_attention.rope_type"),
        Mutant(name, "rope_parameters", "{\"full_attention\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}", key: "sliding_attention"),
        Mutant(name, "head_dim", "12"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layer 2 attends fully, rotating the first half of its pairs; layer 4
    /// slides within 8 tokens rotating all of them; both gate each head's
    /// output (one gate value per head); every branch ends at its own norm.
    @Test func layersAsLfm3Builds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<6 {
            let block = try model.block(index)
            #expect(block.attention?.outputNorm != nil && block.mlp?.outputNorm != nil)
            guard case .attention(let attention)? = block.attention?.mixer else {
                #expect(![2, 4].contains(index))
                continue
            }
            let frequencies = try #require(attention.rotary?.inverseFrequencies)
            #expect(frequencies.count == 8 && frequencies.filter { $0 == 0 }.count == (index == 2 ? 4 : 0))
            #expect(attention.slidingWindow == (index == 4 ? 8 : nil))
            let gate = try #require(attention.outputGate?.weight)
            #expect(gate.count == 64 * 48 && Array(gate[0..<48]) == Array(gate[48..<96]))
        }
    }

    /// What config.json leaves out takes Lfm3Config's values: the rule's
    /// layer types and the rope parameters (the fixture's), the gate and the
    /// sandwich norms on; a rope entry without rope_theta takes the top-level one.
    @Test func omittedKeysTakeLfm3ConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let omitted = try EditedFixture(Self.name) {
            for key in ["layer_types", "rope_parameters", "use_attention_gate", "use_sandwich_norm"] { $0[key] = nil }
        }
        #expect(try omitted.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["use_attention_gate"] = false }.attentionScores() != base)
        let topLevelTheta = try EditedFixture(Self.name) {
            $0["rope_theta"] = 10_000.0
            $0["rope_parameters"] = [
                "full_attention": ["rope_type": "proportional", "partial_rotary_factor": 0.5],
                "sliding_attention": ["rope_type": "default"],
            ]
        }
        let full = try #require(topLevelTheta.load().block(2).attention?.attention?.rotary?.inverseFrequencies)
        #expect(abs(Double(full[1]) / (1 / pow(10_000.0, 2.0 / 16)) - 1) < 1e-6)
    }
}

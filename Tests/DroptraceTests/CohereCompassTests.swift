@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// CohereCompass (`cohere_compass_text`, and `cohere_compass` around it):
/// Cohere's parallel block with rotate-half rotary per layer type (a null
/// entry: no positions), CohereCompassTextConfig's defaults and refusals,
/// the wrapper's placement and head tying. The scores themselves are checked
/// against transformers with every other family (`DropTests` and the
/// reference suites).
@Suite struct CohereCompassTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "cohere_compass_text-f32"
    static let wrapper = "cohere_compass-f32"

    static let mutants: [Mutant] = [
        // create_sliding_window_causal_mask fails without a window.
        Mutant(name, "sliding_window", "null"),
        // The rotary embedding reads each layer type's entry (KeyError), and rope_theta in it.
        Mutant(name, "rope_parameters", #"{"rope_type": "default", "rope_theta": 10000.0}"#, key: "rope_parameters.full_attention"),
        Mutant(name, "rope_parameters.full_attention", "3", key: "rope_parameters.full_attention"),
        Mutant(name, "rope_parameters.sliding_attention.rope_theta", "null", key: "rope_parameters.sliding_attention.rope_theta"),
        // A scaled rope type applies the factor to a table the attention then mismatches.
        Mutant(
            name, "rope_parameters.sliding_attention",
            #"{"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0, "partial_rotary_factor": 0.5}"#,
            key: "partial_rotary_factor"),
        Mutant(name, "layer_types", #"["sliding_attention", "chunked_attention", "sliding_attention", "full_attention"]"#),
        // A head_dim given is the heads' width (the tensors' is 12); null fails in the attention.
        Mutant(name, "head_dim", "16"), Mutant(name, "head_dim", "null"),
        Mutant(name, "logit_scale", "\"x\""), Mutant(name, "layer_norm_eps", "null"),
        // CohereCompassRotaryEmbedding indexes items 1 and 2 of each used entry's M-RoPE section.
        Mutant(name, "rope_parameters.sliding_attention.mrope_section", "\"abc\"", key: "rope_parameters.sliding_attention.mrope_section"),
        Mutant(name, "rope_parameters.sliding_attention.mrope_section", "[8, 8]", key: "rope_parameters.sliding_attention.mrope_section"),
        // CohereCompassTextConfig declares no head_dim: only an integer sizes the attention.
        Mutant(name, "head_dim", "12.0"), Mutant(wrapper, "text_config.head_dim", "16.0", key: "text_config.head_dim"),
        // Standardised into every entry: the wrapper's linear full_attention entry then builds a half-width table.
        Mutant(wrapper, "text_config.partial_rotary_factor", "0.5", key: "partial_rotary_factor"),
        Mutant(name, "rope_parameters.sliding_attention.rope_theta", "\"x\"", key: "rope_parameters.sliding_attention.rope_theta\" must be a number"),
        // transformers builds the model in torch.<dtype>.
        Mutant(name, "dtype", "\"auto\""), Mutant(name, "torch_dtype", "5"),
        Mutant(wrapper, "text_config.sliding_window", "null", key: "text_config.sliding_window"),
        Mutant(wrapper, "text_config.rope_parameters.full_attention", "[]", key: "text_config.rope_parameters.full_attention"),
        Mutant(
            wrapper, "text_config.rope_parameters.full_attention.factor", "-2.0",
            key: "text_config.rope_parameters.full_attention.factor"),
        Mutant(wrapper, "text_config.head_dim", "12", key: "text_config.head_dim"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The text model: layers 0 and 2 slide within 8 tokens rotating the
    /// halves of each head at 5e4, 1 and 3 attend fully without positions;
    /// both branches read one input norm; logits × 0.5.
    @Test func layersAsCohereCompassBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            let attention = try #require(block.attention?.attention)
            let sliding = index % 2 == 0
            #expect(attention.slidingWindow == (sliding ? 8 : nil))
            #expect((attention.rotary == nil) == !sliding)
            if let frequency = attention.rotary?.inverseFrequencies[1] {
                #expect(abs(Double(frequency) / (1 / pow(50_000.0, 2.0 / 12)) - 1) < 1e-6)
            }
            #expect(block.residual == .parallel)
        }
        #expect(try model.head().logitScale == 0.5)
    }

    /// The wrapper: heads of head_dim 16, every layer rotating (the full
    /// ones by linear scaling), no logit scale, an untied head.
    @Test func wrappedLanguageModelAsCohereCompassBuilds() throws {
        let model = try EditedFixture(Self.wrapper).load()
        let full = try #require(try model.block(1).attention?.attention)
        let sliding = try #require(try model.block(0).attention?.attention)
        #expect(full.layout.headDim == 16 && full.slidingWindow == nil && sliding.slidingWindow == 8)
        let fullFrequency = try #require(full.rotary?.inverseFrequencies[1])
        let slidingFrequency = try #require(sliding.rotary?.inverseFrequencies[1])
        #expect(abs(Double(fullFrequency) / (0.5 / pow(10_000.0, 2.0 / 16)) - 1) < 1e-6)
        #expect(abs(Double(slidingFrequency) / (1 / pow(50_000.0, 2.0 / 16)) - 1) < 1e-6)
        #expect(try model.head().logitScale == nil)
    }

    /// What config.json leaves out takes CohereCompassTextConfig's values:
    /// every layer full (the fixture's rope then needs a full entry only),
    /// no logit scale (which the scores do not see); a missing
    /// rope_parameters has no entry per type (refused).
    @Test func omittedKeysTakeCohereCompassTextConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["logit_scale"] = nil }.attentionScores() == base)
        let allFull = try EditedFixture(Self.name) {
            $0["layer_types"] = nil
            $0["rope_parameters"] = ["full_attention": NSNull()]
        }.load()
        #expect(try (0..<4).allSatisfy { try allFull.block($0).attention?.attention?.slidingWindow == nil })
        try EditedFixture(Self.name) { $0["rope_parameters"] = nil }.expectRefused(naming: "rope_parameters")
    }
}

@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Cosmos3-Edge (`cosmos3_edge-f32`): its language model read by the Arcee
/// family (RMSNorms, the plain ReLU² MLP named fc1 / fc2), its unified
/// checkpoint's names and generation branches, the M-RoPE parameters its
/// config class validates, and a head never tied.
@Suite struct Cosmos3EdgeTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "cosmos3_edge-f32"

    static let mutants: [Mutant] = [
        // Cosmos3EdgeTextConfig.validate_architecture: rope type "default", three runs summing to head_dim / 2.
        Mutant(name, "text_config.rope_parameters.rope_type", "\"linear\"", key: "text_config.rope_parameters.rope_type"),
        Mutant(name, "text_config.rope_parameters.mrope_section", "[4, 2, 3]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(name, "text_config.rope_parameters.mrope_section", "[4, 4]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(name, "text_config.rope_parameters.mrope_section", "[4, 2.0, 2]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(name, "text_config.head_dim", "null", key: "text_config.head_dim"),
        Mutant(name, "text_config.mlp_bias", "1", key: "text_config.mlp_bias"),
        Mutant(name, "projector_hidden_size", "\"x\"", key: "projector_hidden_size"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score within 1e-7 of transformers', read from the unified
    /// names (generation branches beside them) as transformers renames them.
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.name)
        let stored = try Checkpoint(directory: FixtureFiles.model(Self.name))
        #expect(stored.hasTensor("model.language_model.layers.0.mlp.fc1.weight") && stored.hasTensor("model.language_model.layers.2.mlp_moe_gen.fc1.weight")
            && stored.hasTensor("norm_moe_gen.weight"))
        let model = try EditedFixture(Self.name).load()
        #expect(model.layerNaming.prefix == "model.language_model.layers.")
    }

    /// The plain MLP with no biases, q/k/v/o biases by `attention_bias`,
    /// rotation at the class's base 1e8 over head_dim 16; the written
    /// section and model_type change nothing on text.
    @Test func blockAsCosmos3EdgeTextConfigBuildsIt() throws {
        let model = try EditedFixture(Self.name).load()
        let block = try model.block(0)
        guard case .plain(let up, let down, let activation)? = block.mlp?.feedForward else {
            Issue.record("not a plain MLP")
            return
        }
        #expect(up.outFeatures == 96 && up.bias == nil && down.bias == nil && activation == .reluSquared)
        let attention = try #require(block.attention?.attention)
        let frequency = try #require(attention.rotary?.inverseFrequencies[1])
        #expect(abs(Double(frequency) / (1 / pow(100_000_000.0, 2.0 / 16)) - 1) < 1e-6)
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) {
            EditedModel.set([2, 4, 2], at: "text_config.rope_parameters.mrope_section", in: &$0)
            EditedModel.set("llama", at: "text_config.model_type", in: &$0)
        }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) {
            EditedModel.set(10_000.0, at: "text_config.rope_parameters.rope_theta", in: &$0)
        }.attentionScores() != base)
    }

    /// Cosmos3EdgeForConditionalGeneration ties no weights: without a stored
    /// lm_head the model is refused, whatever `tie_word_embeddings` says.
    @Test func headIsNeverTied() throws {
        for flag in [true, false] {
            let fixture = try EditedFixture(Self.name) { $0["tie_word_embeddings"] = flag }
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "lm_head.weight" } }
            let error = #expect(throws: DroptraceError.self) { try fixture.load().head() }
            #expect(error?.message.contains("lm_head") == true, "\(String(describing: error))")
        }
    }
}

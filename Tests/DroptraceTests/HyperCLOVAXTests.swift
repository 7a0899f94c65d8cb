@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// HyperCLOVA X SEED (`hyperclovax`): Granite's multipliers (the logits
/// multiplied) and Peri-LN output norms, with HyperCLOVAXConfig's defaults
/// and refusals; and the language model of HyperCLOVA X SEED Think's
/// wrapper (`hyperclovax_vision_v2`). The scores themselves are checked against transformers
/// with every other family (`DropTests` and the reference suites).
@Suite struct HyperCLOVAXTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "hyperclovax-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "embedding_multiplier", "null"), Mutant(name, "residual_multiplier", "1e39"),
        Mutant(name, "attention_multiplier", "1e39"), Mutant(name, "logits_scaling", "null"),
        Mutant(name, "use_post_norm", "1"), Mutant(name, "rms_norm_eps", "0"),
        Mutant(name, "head_dim", "16"),
        // The wrapper: its own keys, its text config as HyperCLOVAXConfig checks it.
        Mutant(wrapper, "tie_word_embeddings", "null"), Mutant(wrapper, "image_token_id", "5.0"),
        Mutant(wrapper, "text_config.logits_scaling", "null", key: "text_config.logits_scaling"),
        Mutant(wrapper, "text_config.use_post_norm", "1", key: "text_config.use_post_norm"),
        Mutant(wrapper, "text_config.head_dim", "16", key: "text_config.head_dim"),
        Mutant(wrapper, "text_config.model_type", "\"llama\"", key: "text_config.model_type"),
        Mutant(wrapper, "text_config.model_type", "null", key: "text_config.model_type"),
    ]
    /// HyperCLOVA X SEED Think (HyperCLOVAXVisionV2ForConditionalGeneration).
    static let wrapper = "hyperclovax_vision_v2-f32"

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Each branch ends at its own output norm, then × 0.3; the softmax
    /// scale is 0.2; the head multiplies the logits by 0.5.
    @Test func layersAsHyperCLOVAXBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        let block = try model.block(0)
        let attention = try #require(block.attention)
        let mlp = try #require(block.mlp)
        #expect(attention.outputNorm != nil && mlp.outputNorm != nil)
        #expect(attention.outputScale == 0.3 && mlp.outputScale == 0.3)
        #expect(attention.attention?.scale == 0.2)
        #expect(try model.head().logitScale == 0.5)
    }

    /// What config.json leaves out takes HyperCLOVAXConfig's defaults:
    /// Peri-LN on; a null or absent attention_multiplier is 1/√head_dim;
    /// without Peri-LN the output norms are not read.
    @Test func omittedKeysTakeHyperCLOVAXConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["use_post_norm"] = nil }.attentionScores() == base)
        let unscaled = try EditedFixture(Self.name) { $0["attention_multiplier"] = nil }
        let null = try EditedFixture(Self.name) { $0["attention_multiplier"] = NSNull() }
        #expect(try unscaled.load().block(0).attention?.attention?.scale == 1 / Float(12).squareRoot())
        #expect(try null.attentionScores() == unscaled.attentionScores())
        let plain = try EditedFixture(Self.name) { $0["use_post_norm"] = false }
        #expect(try plain.load().block(0).attention?.outputNorm == nil)
        #expect(try plain.attentionScores() != base)
    }

    /// The wrapper reads its HyperCLOVAXModel: the text config's keys, the
    /// weights under model.language_model. (or the released
    /// model.language_model.model., which transformers renames), the head
    /// tied by the top-level tie_word_embeddings (true by default; the
    /// fixture's text config says false) and multiplying the logits by the
    /// text config's logits_scaling. An untied wrapper reads its stored
    /// head, `lm_head` or as released `model.language_model.lm_head`, and
    /// refuses a missing one. The vision tower is never read.
    @Test func wrapperReadsItsLanguageModel() throws {
        let fixture = try EditedFixture(Self.wrapper)
        let model = try fixture.load()
        #expect(try model.head().logitScale == 0.5 && model.layerCount == 4)
        #expect(try model.block(0).attention?.outputScale == 0.3)
        let base = try scores(fixture)
        let edits: [(inout [String: Any]) -> Void] = [
            { $0["vision_config"] = nil }, { $0["tie_word_embeddings"] = nil },
            { EditedModel.set(nil, at: "text_config.model_type", in: &$0) },
            { EditedModel.set(true, at: "text_config.tie_word_embeddings", in: &$0) },
        ]
        for edit in edits {
            #expect(try scores(EditedFixture(Self.wrapper, edit)) == base)
        }
        let released = try EditedFixture(Self.wrapper)
        try BadInputTests().rewriteWeights(released.model) { entries in
            entries = entries.compactMap { entry in
                guard entry.name.hasPrefix("model.language_model.") else { return entry.name.hasPrefix("model.") ? nil : entry }
                var renamed = entry
                renamed.name = "model.language_model.model." + entry.name.dropFirst("model.language_model.".count)
                return renamed
            }
        }
        #expect(try scores(released) == base)
        // Untied: the head transformers reads, under either name; none is refused.
        for name in ["lm_head.weight", "model.language_model.lm_head.weight", nil] {
            let untied = try EditedFixture(Self.wrapper) { $0["tie_word_embeddings"] = false }
            let stored = try Checkpoint(directory: untied.model)
            let embedding = try stored.tensor("model.language_model.embed_tokens.weight")
            try BadInputTests().rewriteWeights(untied.model) { entries in
                if let name { entries.append(SafetensorsWriter.Entry(embedding, renamedTo: name)) }
            }
            if name == nil {
                #expect(throws: DroptraceError.self) { _ = try untied.load().head() }
            } else {
                #expect(try scores(untied) == base, "\(name!)")
            }
        }
    }

    /// A block-dropped export of the wrapper renumbers its text config, the
    /// top level as it was; decoding carries each layer's cache.
    @Test func wrapperExportsAndDecodes() throws {
        let config = try EditedFixture(Self.wrapper).exportedConfig(droppingBlocks: [1])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 3 && config["num_hidden_layers"] == nil)
        #expect(config["tie_word_embeddings"] as? Bool == true && config["model_type"] as? String == "hyperclovax_vision_v2")
        let model = try EditedFixture(Self.wrapper).load()
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12, plans: [.none, DropPlan(attention: [1]), DropPlan(blocks: [2])], label: Self.wrapper)
    }

    @Test func wrapperScoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.wrapper)
    }
}

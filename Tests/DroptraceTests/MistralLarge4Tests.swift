@testable import Architectures
import CheckpointIO
import DroptraceSupport
@testable import Dropping
import Foundation
import Scoring
import TensorEngine
import Testing

/// Mistral Large 4 (`mistral_large4`, read as its `mistral_large4_text`
/// language model): its config refusals, compared with what transformers
/// refuses, the keys MistralLarge4TextConfig does not read, the layers
/// without rotary, and the block-drop export's per-layer keys. The scores
/// themselves are checked against transformers with every other family
/// (`DropTests` and the reference suites).
@Suite struct MistralLarge4Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "mistral_large4-f32"

    static let mutants: [Mutant] = [
        // Each layer reads its no_rope_layers entry (IndexError).
        Mutant(name, "text_config.no_rope_layers", "[1, 1]"),
        // A rotary width past Int (a trap on the conversion before).
        Mutant(name, "text_config.rope_parameters.partial_rotary_factor", "-9223372036854775808", key: "partial_rotary_factor"),
        // Latent key/value sharing: transformers refuses the first two, runs the third (droptrace does not).
        Mutant(name, "text_config.kv_source_layers", "[0, 1, 2]"), Mutant(name, "text_config.kv_source_layers", "[1, 1, 2, 3]"),
        Mutant(name, "text_config.kv_source_layers", "[0, 0, 2, 3]"),
        // A float field; 0 caps every logit at 0.
        Mutant(name, "text_config.final_logit_softcapping", "null"), Mutant(name, "text_config.final_logit_softcapping", "0"),
        // No key kept; a shared layer with no full one before it (transformers raises).
        Mutant(name, "text_config.index_topk", "0"),
        Mutant(name, "text_config.indexer_types", #"["shared", "full", "full", "shared"]"#),
        // A rotary table narrower than the 8 rope columns (transformers refuses alpha's size).
        Mutant(name, "text_config.rope_parameters.partial_rotary_factor", "0.5", key: "partial_rotary_factor"),
        // Another text model type under this wrapper: another model.
        Mutant(name, "text_config.model_type", #""mistral4""#, key: "text_config.model_type"),
        // Sizes the tensors contradict (transformers refuses them too).
        Mutant(name, "text_config.index_head_dim", "4"), Mutant(name, "text_config.index_n_heads", "8"),
        Mutant(name, "text_config.n_routed_experts", "16"), Mutant(name, "text_config.kv_lora_rank", "8"),
        // Layer 2's latent has no rope part: the weights refuse rotary there.
        Mutant(name, "text_config.no_rope_layers", "[1, 1, 1, 1]"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    static func text(_ change: @escaping (inout [String: Any]) -> Void) -> (inout [String: Any]) -> Void {
        { config in
            var text = config["text_config"] as! [String: Any]
            change(&text)
            config["text_config"] = text
        }
    }

    /// no_rope_layer_interval (read where no_rope_layers is absent) is a
    /// divisor: 0 and null are refused, as transformers fails on them; 3
    /// makes layer 2 the one without rotary, as the fixture's list does; 4,
    /// its default, layer 3, which the weights refuse.
    @Test func ropeLayersByInterval() throws {
        for value in [0 as Any, NSNull()] {
            try EditedFixture(Self.name, Self.text { $0["no_rope_layers"] = nil; $0["no_rope_layer_interval"] = value })
                .expectRefused(naming: "text_config.no_rope_layer_interval")
        }
        try EditedFixture(Self.name, Self.text { $0["no_rope_layers"] = nil }).expectRefused(naming: "text_config.no_rope_layers")
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name, Self.text { $0["no_rope_layers"] = nil; $0["no_rope_layer_interval"] = 3 }).attentionScores() == base)
        // Entries past the last layer are not read.
        #expect(try EditedFixture(Self.name, Self.text { $0["no_rope_layers"] = [1, 1, 0, 1, 1, 0] }).attentionScores() == base)
    }

    /// Keys MistralLarge4TextConfig does not read (q_lora_rank,
    /// norm_topk_prob) change nothing; without rope_parameters the class's
    /// YaRN defaults, which the fixture was made with.
    @Test func keysTheConfigClassDoesNotRead() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        for change in [
            Self.text { $0["q_lora_rank"] = 16 }, Self.text { $0["norm_topk_prob"] = false }, Self.text { $0["rope_parameters"] = nil },
            Self.text { $0["kv_source_layers"] = [0, 1, 2, 3] },
        ] {
            #expect(try EditedFixture(Self.name, change).attentionScores() == base)
        }
        // Soft-capping acts on the logits only.
        #expect(try EditedFixture(Self.name, Self.text { $0["final_logit_softcapping"] = 2.0 }).attentionScores() == base)
    }

    /// Layer 2 has no rotary: its latent is kv_lora_rank wide with no rope
    /// part and its queries qk_nope + qk_rope wide; the indexer keeps
    /// index_topk keys, layer 3 reusing layer 2's choice.
    @Test func layersAsTransformersBuildsThem() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let attention = try #require(try model.block(index).attention?.attention)
            #expect(attention.headQueryScales != nil)
            #expect((attention.indexer != nil) == (index != 3))
            #expect(attention.indexer.map { $0.topK == 12 && $0.queryInputNorm != nil && $0.queryScale != nil } ?? true)
            guard case .latent(let latent) = attention.projection else { Issue.record("layer \(index): not latent"); continue }
            #expect(latent.ropeDim == (index == 2 ? 0 : 8) && latent.nopeDim == (index == 2 ? 16 : 8))
        }
    }

    /// A block-drop export writes the kept layers' no_rope_layers,
    /// indexer_types and kv_source_layers (renumbered) under text_config.
    @Test func exportWritesPerLayerKeys() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [1])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 3)
        #expect(text["no_rope_layers"] as? [Int] == [1, 0, 1])
        #expect(text["indexer_types"] as? [String] == ["full", "full", "shared"])
        #expect(text["kv_source_layers"] as? [Int] == [0, 1, 2])
    }

    /// transformers' renaming of mistral_large4 turns `.experts.` into
    /// `.mlp.experts.` also in names already so renamed: a moved layer's
    /// experts are exported under their stored spelling, renumbered, and
    /// the export reads back as the model without the block.
    @Test func exportKeepsStoredSpellingWhereRenamingIsNotIdempotent() throws {
        let fixture = try EditedFixture(Self.name)
        let model = try fixture.load()
        let export = fixture.scratch.path("moved")
        try DroppedModelExport.write(model: model, plan: DropPlan(blocks: [1]), to: export)
        let names = try Checkpoint(directory: export).storedTensorNames
        #expect(names.contains("model.language_model.layers.2.mlp.experts.0.w1.weight"))
        #expect(!names.contains { $0.contains("mlp.mlp.") || $0.contains("layers.3.") })
        let expected = try LanguageModelLoss.evaluate(model: model, plan: DropPlan(blocks: [1]), windows: FixtureFiles.jsonlSequences(), sourcePath: "eval")
        let loss = try LanguageModelLoss.evaluate(
            model: try ModelRegistry.load(try Checkpoint(directory: export)), plan: .none, windows: FixtureFiles.jsonlSequences(), sourcePath: "eval")
        #expect(abs(loss.perplexity / expected.perplexity - 1) < 1e-6)
    }
}

import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import Testing

/// Gemma-3 (`gemma3_text`, and `gemma3` multimodal checkpoints read through
/// their `text_config`): config keys, the 4.x spellings transformers still
/// reads, and exports that edit `text_config`.
@Suite struct Gemma3Tests {
    func scores(_ directory: URL) throws -> ModuleScores {
        try ImportanceScorer(model: try EditedModel.load(directory)).score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
    }

    func expectSameScores(_ a: ModuleScores, _ b: ModuleScores, _ comment: Comment) {
        let worst = zip(a.attention + a.mlp + a.block, b.attention + b.mlp + b.block).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst < 1e-12, comment)
    }

    /// Bad values of the keys Gemma-3 adds, each refused with one error naming
    /// config.json and the key (under `text_config.` for `gemma3`).
    static let badConfigs: [(fixture: String, path: String, value: String?, key: String)] = [
        ("gemma3_text-f32", "query_pre_attn_scalar", "0", "query_pre_attn_scalar"),
        ("gemma3_text-f32", "final_logit_softcapping", "-30.0", "final_logit_softcapping"),
        ("gemma3_text-f32", "use_bidirectional_attention", "true", "use_bidirectional_attention"),
        // GemmaModel reads it too.
        ("gemma-f32", "use_bidirectional_attention", "true", "use_bidirectional_attention"),
        ("gemma3_text-f32", "num_attention_heads", "3", "num_attention_heads"),
        ("gemma3_text-f32", "layer_types", #"["sliding_attention", "global", "sliding_attention", "full_attention"]"#, "layer_types"),
        ("gemma3_text-f32", "sliding_window", "null", "sliding_window"),
        ("gemma3_text-f32", "rope_parameters", #""linear""#, "rope_parameters"),
        ("gemma3_text-f32", "rope_parameters.full_attention", "8", "rope_parameters.full_attention"),
        ("gemma3_text-f32", "rope_parameters.full_attention.factor", "0", "factor"),
        ("gemma3_text-f32", "rope_parameters.sliding_attention.rope_theta", "-10000", "rope_theta"),
        ("gemma3_text-f32", "rope_parameters.sliding_attention.rope_type", #""yarn""#, "yarn"),
        ("gemma3-f32", "text_config", "4", "text_config"),
        ("gemma3-f32", "text_config.hidden_size", #""32""#, "text_config.hidden_size"),
        ("gemma3-f32", "text_config.hidden_size", "48", "hidden_size"),
        ("gemma3-f32", "text_config.num_hidden_layers", "5", "num_hidden_layers"),
        ("gemma3-f32", "text_config.query_pre_attn_scalar", "-1", "text_config.query_pre_attn_scalar"),
        ("gemma3-f32", "text_config.rope_scaling", "[8]", "rope_scaling"),
        // Without text_config, transformers' defaults (26 layers of 2304) meet the tensors.
        ("gemma3-f32", "text_config", nil, "num_hidden_layers"),
    ]

    @Test(arguments: badConfigs.indices)
    func badConfigIsRefusedNamingTheKey(_ index: Int) throws {
        let bad = Self.badConfigs[index]
        let scratch = try ScratchDirectory()
        let model = try EditedModel.copy(bad.fixture, in: scratch, [(bad.path, bad.value)])
        let configPath = model.appendingPathComponent("config.json").path
        do {
            let loaded = try EditedModel.load(model)
            Issue.record("\(bad.fixture) \(bad.path)=\(bad.value ?? "absent") loaded as a \(loaded.layerCount)-layer model")
        } catch let error as DroptraceError {
            #expect(error.path == configPath, "\(error)")
            #expect(error.message.contains(bad.key), "\(bad.path) does not name \(bad.key): \(error)")
            #expect(!error.message.contains("\n"))
        }
    }

    /// A transformers 4.x config: the bases as `rope_theta` /
    /// `rope_local_base_freq`, the global scaling as `rope_scaling`, and the
    /// layer types left to `sliding_window_pattern`, reads as the 5.x one.
    @Test func legacyRopeKeysAndPatternReadAsTheNestedParameters() throws {
        let scratch = try ScratchDirectory()
        let legacy = try EditedModel.copy("gemma3_text-f32", in: scratch, [
            ("rope_parameters", nil), ("layer_types", nil), ("sliding_window_pattern", "2"),
            ("rope_theta", "1000000.0"), ("rope_local_base_freq", "10000.0"),
            ("rope_scaling", #"{"rope_type": "linear", "factor": 8.0}"#),
        ])
        expectSameScores(try scores(legacy), try scores(FixtureFiles.model("gemma3_text-f32")), "4.x spelling")
        // The two bases matter: swapped, the scores move.
        let swapped = try EditedModel.copy("gemma3_text-f32", in: scratch, as: "swapped", [
            ("rope_parameters.full_attention.rope_theta", "10000.0"), ("rope_parameters.sliding_attention.rope_theta", "1000000.0"),
        ])
        let moved = try scores(swapped).attention
        let fixture = try scores(FixtureFiles.model("gemma3_text-f32")).attention
        #expect(zip(moved, fixture).contains { abs($0 - $1) > 1e-6 })
    }

    /// A multimodal config that leaves keys to Gemma3TextConfig's defaults,
    /// with the weights under the names of transformers 5.x's modules
    /// (`model.language_model.`, where `save_pretrained` writes
    /// `language_model.model.`), scores as the fixture.
    @Test func sparseTextConfigAndInMemoryWeightNames() throws {
        let scratch = try ScratchDirectory()
        let model = try EditedModel.copy("gemma3-f32", in: scratch, [
            ("text_config.rms_norm_eps", nil), ("text_config.hidden_activation", nil), ("text_config.attention_bias", nil),
            ("text_config.tie_word_embeddings", nil),
        ])
        let weights = model.appendingPathComponent(Checkpoint.singleFileName)
        let checkpoint = try Checkpoint(directory: FixtureFiles.model("gemma3-f32"))
        let entries = try checkpoint.tensorNames.map { name in
            let renamed = name.hasPrefix("language_model.model.")
                ? "model.language_model." + name.dropFirst("language_model.model.".count) : "model." + name
            return SafetensorsWriter.Entry(try checkpoint.tensor(name), renamedTo: renamed)
        }
        try SafetensorsWriter.write(entries, to: weights)
        #expect(try Checkpoint(directory: model).tensorNames.contains("model.language_model.layers.0.self_attn.q_norm.weight"))
        expectSameScores(try scores(model), try scores(FixtureFiles.model("gemma3-f32")), "defaults and module names")
    }

    /// Only the text-only model soft-caps its logits, as in transformers.
    @Test func onlyTheTextModelSoftCapsLogits() throws {
        let scratch = try ScratchDirectory()
        let text = try EditedModel.copy("gemma3_text-f32", in: scratch, as: "text", [("final_logit_softcapping", "0.5")])
        let multimodal = try EditedModel.copy("gemma3-f32", in: scratch, as: "mm", [("text_config.final_logit_softcapping", "0.5")])
        #expect(try EditedModel.load(text).head().logitSoftcap == 0.5)
        #expect(try EditedModel.load(multimodal).head().logitSoftcap == nil)
    }

    /// A block-dropped multimodal export rewrites `text_config` (count and
    /// layer types, spelled out where the config left them to defaults) and
    /// keeps the vision tower; the drop lists stay at the top level.
    @Test func exportEditsTextConfig() throws {
        let scratch = try ScratchDirectory()
        let sparse = try EditedModel.copy("gemma3-f32", in: scratch, as: "sparse", [("text_config.layer_types", nil), ("text_config.sliding_window_pattern", "2")])
        for source in [FixtureFiles.model("gemma3-f32"), sparse] {
            let model = try EditedModel.load(source)
            let export = scratch.path("export-\(source.lastPathComponent)")
            try DroppedModelExport.write(model: model, plan: DropPlan(attention: [3], blocks: [1]), to: export)
            let config = try JSONSerialization.jsonObject(with: Data(contentsOf: export.appendingPathComponent("config.json"))) as! [String: Any]
            let text = config["text_config"] as! [String: Any]
            #expect((text["num_hidden_layers"] as? NSNumber)?.intValue == 3)
            #expect(text["layer_types"] as? [String] == ["sliding_attention", "sliding_attention", "full_attention"])
            #expect(config["num_hidden_layers"] == nil && config["layer_types"] == nil)
            #expect((config[DropPlan.attentionKey] as? [NSNumber])?.map(\.intValue) == [2])
            let names = try Checkpoint(directory: export).tensorNames
            #expect(names.contains { $0.hasPrefix("vision_tower.") })
            #expect(!names.contains { $0.hasPrefix("language_model.model.layers.3.") })
            #expect(!names.contains("language_model.model.layers.2.self_attn.q_norm.weight"))
            #expect(names.contains("language_model.model.layers.2.mlp.gate_proj.weight"))
            #expect(try EditedModel.load(export).layerCount == 3)
        }
    }
}

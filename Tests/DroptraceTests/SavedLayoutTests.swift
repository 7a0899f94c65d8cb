@testable import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Scoring
import Testing

/// Checkpoints as the saving tools leave them, read as transformers reads them.
@Suite struct SavedLayoutTests {
    /// safetensors' `save_model` keeps one name per shared tensor, the
    /// alphabetically first: a tied model's embedding is stored only as
    /// `lm_head.weight` (GPT-2, Qwen2, Gemma, Gemma 3 with its
    /// `language_model.` prefix...). transformers ties the embedding to it;
    /// the scores and the perplexity are those of the model as first saved.
    @Test(arguments: [
        ("gemma-f32", "model.embed_tokens.weight", "lm_head.weight"),
        ("gpt2-f32", "transformer.wte.weight", "lm_head.weight"),
        ("qwen2-f32", "model.embed_tokens.weight", "lm_head.weight"),
        ("smollm3-f32", "model.embed_tokens.weight", "lm_head.weight"),
        ("gemma3-f32", "language_model.model.embed_tokens.weight", "language_model.lm_head.weight"),
    ])
    func tiedEmbeddingStoredOnlyAsTheHead(fixture: String, embedding: String, head: String) throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel(fixture)
        try renameTensor(embedding, to: head, in: directory)
        #expect(!(try Checkpoint(directory: directory).hasTensor(embedding)))

        let windows = FixtureFiles.jsonlSequences()
        let original = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(fixture)))
        let saved = try ModelRegistry.load(try Checkpoint(directory: directory))
        let expected = try ImportanceScorer(model: original).score(windows, calibrationPath: "calib")
        let scores = try ImportanceScorer(model: saved).score(windows, calibrationPath: "calib")
        #expect(scores.attention == expected.attention && scores.mlp == expected.mlp && scores.block == expected.block)
        let loss = try LanguageModelLoss.evaluate(model: saved, plan: .none, windows: windows, sourcePath: "eval")
        let reference = try LanguageModelLoss.evaluate(model: original, plan: .none, windows: windows, sourcePath: "eval")
        #expect(loss.perplexity == reference.perplexity)
    }

    /// Untied, the head is not the embedding: a checkpoint without its
    /// embedding is refused, naming it, even when it stores a head.
    @Test func untiedModelWithoutItsEmbeddingIsRefused() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("llama-f32")
        try BadInputTests().rewriteWeights(directory) { $0.removeAll { $0.name == "model.embed_tokens.weight" } }
        let error = #expect(throws: DroptraceError.self) { try ModelRegistry.load(try Checkpoint(directory: directory)) }
        #expect(error?.message.contains("model.embed_tokens.weight") == true, "\(String(describing: error))")
    }

    /// A model saved sharded and then again unsharded into the same folder
    /// keeps the old index (and maybe its shards): transformers reads
    /// model.safetensors before an index, and so does droptrace.
    @Test func singleFileIsReadBeforeAStaleIndex() throws {
        let scratch = try ScratchDirectory()
        let stale = try scratch.copyOfModel("llama-sharded", as: "stale")
        try FileManager.default.copyItem(
            at: FixtureFiles.model("llama-bf16").appendingPathComponent("model.safetensors"),
            to: stale.appendingPathComponent("model.safetensors"))
        let resaved = try scratch.copyOfModel("llama-sharded", as: "resaved")
        for shard in try FileManager.default.contentsOfDirectory(atPath: resaved.path) where shard.hasPrefix("model-0") {
            try FileManager.default.removeItem(at: resaved.appendingPathComponent(shard))
        }
        try FileManager.default.copyItem(
            at: FixtureFiles.model("llama-bf16").appendingPathComponent("model.safetensors"),
            to: resaved.appendingPathComponent("model.safetensors"))

        let windows = FixtureFiles.jsonlSequences()
        func scores(_ directory: URL) throws -> [Double] {
            let model = try ModelRegistry.load(try Checkpoint(directory: directory))
            return try ImportanceScorer(model: model).score(windows, calibrationPath: "calib").attention
        }
        let expected = try scores(FixtureFiles.model("llama-bf16"))
        #expect(try scores(stale) == expected)
        #expect(try scores(resaved) == expected)
        #expect(try scores(FixtureFiles.model("llama-sharded")) != expected, "the fixtures must differ for this test to tell")
    }

    /// config.json's `transformers_weights` names the file transformers
    /// loads (conversions keeping several weight files in one folder); the
    /// export's own weights have the usual name, so it drops the key.
    @Test func configNamedWeightFileIsTheOneRead() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("llama-bf16")
        try FileManager.default.copyItem(
            at: FixtureFiles.model("llama-f32").appendingPathComponent("model.safetensors"),
            to: directory.appendingPathComponent("model-fp32.safetensors"))
        try ArchitectureTests().rewriteConfig(directory) { $0["transformers_weights"] = "model-fp32.safetensors" }
        let windows = FixtureFiles.jsonlSequences()
        func scores(_ directory: URL) throws -> [Double] {
            try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: directory))).score(windows, calibrationPath: "calib").attention
        }
        #expect(try scores(directory) == scores(FixtureFiles.model("llama-f32")))

        let export = scratch.path("export")
        try DroppedModelExport.write(model: try ModelRegistry.load(try Checkpoint(directory: directory)), plan: DropPlan(attention: [1]), to: export)
        let config = try String(contentsOf: export.appendingPathComponent("config.json"), encoding: .utf8)
        #expect(!config.contains("transformers_weights"))
        _ = try ModelRegistry.load(try Checkpoint(directory: export))
    }

    /// An index `transformers_weights` names in a subfolder lists shards of
    /// the checkpoint directory: transformers joins their names to it.
    @Test func namedIndexInASubfolderReadsTheTopLevelShards() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("llama-sharded")
        let sub = directory.appendingPathComponent("sub")
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
        try FileManager.default.moveItem(
            at: directory.appendingPathComponent("model.safetensors.index.json"),
            to: sub.appendingPathComponent("model.safetensors.index.json"))
        try ArchitectureTests().rewriteConfig(directory) { $0["transformers_weights"] = "sub/model.safetensors.index.json" }
        let layout = try CheckpointLayout.resolve(directory)
        #expect(!layout.weightFiles.isEmpty && layout.weightFiles.allSatisfy { $0.deletingLastPathComponent().path == directory.path })
        _ = try ModelRegistry.load(try Checkpoint(directory: directory))
    }

    /// Names transformers refuses too, and a named file that is not there.
    @Test(arguments: [
        (#""../model.safetensors""#, "inside the checkpoint directory"), (#""pytorch_model.bin""#, ".safetensors"),
        (#""other.safetensors""#, "missing"), ("7", ".safetensors"),
    ])
    func badNamedWeightFileIsRefused(value: String, problem: String) throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("llama-f32")
        let url = directory.appendingPathComponent("config.json")
        try BadInputTests().writeConfig(directory, key: "transformers_weights", literal: value)
        let error = #expect(throws: DroptraceError.self) { try Checkpoint(directory: directory) }
        #expect(error?.path == url.path && error?.message.contains(problem) == true, "\(String(describing: error))")
    }

    func renameTensor(_ name: String, to newName: String, in directory: URL) throws {
        try BadInputTests().rewriteWeights(directory) { entries in
            for index in entries.indices where entries[index].name == name { entries[index].name = newName }
        }
    }
}

import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Testing

/// Qwen3's own config keys and attention: per-head q/k norms, windows
/// resolved as Qwen3Config resolves them.
@Suite struct Qwen3Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("qwen3-f32", "max_window_layers", "-1"),
        Mutant("qwen3-f32", "sliding_window", "0"),
        Mutant("qwen3-f32", "layer_types", #"["sliding_attention", "full_attention", "chunked_attention", "full_attention"]"#),
        Mutant("qwen3-f32", "layer_types", #"["full_attention"]"#),
        // The fixture's layer_types slide layers 0 and 2: without
        // use_sliding_window, transformers sets no window for them.
        Mutant("qwen3-f32", "use_sliding_window", "false", key: "sliding_window"),
        Mutant("qwen3-f32", "head_dim", "8"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// A copy of the fixture with `edit` applied to its config.json object.
    func model(in scratch: ScratchDirectory, edit: (inout [String: Any]) -> Void) throws -> URL {
        let model = try scratch.copyOfModel("qwen3-f32", as: "model")
        let url = model.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        edit(&config)
        try KindPreservingJSON.data(config).write(to: url)
        return model
    }

    func windows(_ model: any LanguageModel) throws -> [Int?] {
        try (0..<model.layerCount).map { try model.block($0).attention?.attention.slidingWindow }
    }

    /// Without `layer_types`, layers from `max_window_layers` on slide, and
    /// only when `use_sliding_window`; an absent `sliding_window` is 4096.
    @Test func windowsFollowQwen3ConfigDefaults() throws {
        let scratch = try ScratchDirectory()
        let ruled = try model(in: scratch) { config in
            config["layer_types"] = nil
            config["max_window_layers"] = 2
            config["sliding_window"] = nil
        }
        let model = try ModelRegistry.load(try Checkpoint(directory: ruled))
        #expect(try windows(model) == [nil, nil, 4096, 4096])

        // Its export without block 1 spells the kept layers' types out.
        let export = scratch.path("export")
        try DroppedModelExport.write(model: model, plan: DropPlan(blocks: [1]), to: export)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: export.appendingPathComponent("config.json"))) as! [String: Any]
        #expect(config["layer_types"] as? [String] == ["full_attention", "sliding_attention", "sliding_attention"])
        #expect(try windows(ModelRegistry.load(try Checkpoint(directory: export))) == [nil, 4096, 4096])

        let offScratch = try ScratchDirectory()
        let off = try self.model(in: offScratch) { config in
            config["layer_types"] = nil
            config["max_window_layers"] = 0
            config["use_sliding_window"] = false
        }
        #expect(try windows(ModelRegistry.load(try Checkpoint(directory: off))) == [nil, nil, nil, nil])
    }

    /// The fixture's q/k norms are per head: [head_dim] weights on
    /// head_dim 16, which is not hidden_size / heads (12).
    @Test func queryKeyNormIsPerHead() throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model("qwen3-f32")))
        let attention = try #require(try model.block(0).attention?.attention)
        #expect(attention.layout.headDim == 16)
        guard case .perHead? = attention.queryKeyNorm else {
            Issue.record("qwen3's q/k norm is not per head")
            return
        }
        #expect(try windows(model) == [8, nil, 8, nil])
    }

    /// llama.cpp's `qwen3` GGUF (scripts/fixtures/make_gguf_qwen3_olmoe_fixtures.py,
    /// the fixture's float32 weights) scores as the safetensors fixture does.
    /// The GGUF carries no sliding window, so the comparison is with the
    /// fixture's windows switched off.
    @Test func ggufScoresLikeTheSafetensorsCheckpoint() throws {
        let scratch = try ScratchDirectory()
        let windowless = try model(in: scratch) { config in
            config["use_sliding_window"] = false
            config["layer_types"] = nil
        }
        try expectGGUFScoresLike("qwen3-f32.gguf", safetensors: windowless, modelType: "qwen3")
    }

    /// YaRN's attention factor as llama.cpp's converter writes it
    /// (`rope.scaling.yarn_attn_factor`; for OLMo 3 also
    /// `rope.scaling.attn_factor`) is transformers' `attention_factor`: it
    /// was ignored (the default scale, exit 0) and the second refused.
    @Test(arguments: [["yarn_attn_factor"], ["attn_factor"], ["yarn_attn_factor", "attn_factor"]])
    func ggufYarnAttentionFactorScoresLikeTransformersAttentionFactor(keys: [String]) throws {
        let scratch = try ScratchDirectory()
        let factor: Float = 1.3
        let yarn = #"{"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0, "original_max_position_embeddings": 64"#
        let windowless: [(String, String?)] = [("use_sliding_window", "false"), ("layer_types", nil)]
        let scaled = try EditedModel.copy("qwen3-f32", in: scratch, as: "scaled",
                                          windowless + [("rope_parameters", yarn + #", "attention_factor": \#(Double(factor))}"#)])
        let plain = try EditedModel.copy("qwen3-f32", in: scratch, as: "plain", windowless + [("rope_parameters", yarn + "}")])
        var bytes = try GGUFBytes.fixture("gguf/qwen3-f32.gguf")
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("qwen3.rope.scaling.type") + GGUFBytes.value(.string, GGUFBytes.string("yarn")))
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("qwen3.rope.scaling.factor") + GGUFLlamaCppOnlyKeyTests.float32(4))
        try GGUFBytes.insertPair(
            &bytes, GGUFBytes.string("qwen3.rope.scaling.original_context_length") + GGUFBytes.value(.uint32, GGUFBytes.le(UInt32(64))))
        for key in keys {
            try GGUFBytes.insertPair(&bytes, GGUFBytes.string("qwen3.rope.scaling.\(key)") + GGUFLlamaCppOnlyKeyTests.float32(factor))
        }
        let gguf = try ModelRegistry.load(try GGUFBytes.open(bytes, in: scratch))
        #expect(try scoreDifference(gguf, safetensors: scaled) < 1e-6)
        #expect(try scoreDifference(gguf, safetensors: plain) > 1e-3, "the factor must matter for the comparison to mean something")
    }

    /// The two keys of YaRN's attention factor, given different values, are refused naming both.
    @Test func ggufYarnAttentionFactorsThatDisagreeAreRefused() throws {
        var bytes = try GGUFBytes.fixture("gguf/qwen3-f32.gguf")
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("qwen3.rope.scaling.type") + GGUFBytes.value(.string, GGUFBytes.string("yarn")))
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("qwen3.rope.scaling.factor") + GGUFLlamaCppOnlyKeyTests.float32(4))
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("qwen3.rope.scaling.yarn_attn_factor") + GGUFLlamaCppOnlyKeyTests.float32(1.25))
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("qwen3.rope.scaling.attn_factor") + GGUFLlamaCppOnlyKeyTests.float32(1.5))
        let message = try GGUFBytes.openingError(bytes)?.message ?? "(read)"
        #expect(message == #""qwen3.rope.scaling.attn_factor" is 1.5, but "qwen3.rope.scaling.yarn_attn_factor" is 1.25: both are YaRN's attention factor"#,
                "\(message)")
    }
}

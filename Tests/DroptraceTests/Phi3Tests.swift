@testable import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Phi-3: fused projections, LongRoPE and its config spellings.
@Suite struct Phi3Tests {
    func scores(_ directory: URL) throws -> ModuleScores {
        try ImportanceScorer(model: try EditedModel.load(directory)).score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
    }

    /// Bad values of the keys Phi-3 reads, each refused with one error naming
    /// config.json and the key.
    static let badConfigs: [(fixture: String, path: String, value: String?, key: String)] = [
        ("phi3-f32", "rope_parameters.rope_type", #""linear""#, "linear"),
        ("phi3-f32", "original_max_position_embeddings", "0", "original_max_position_embeddings"),
        ("phi3-f32", "num_key_value_heads", "1", "num_key_value_heads"),
        // Fits q_proj-sized checks, but not the fused q | k | v rows.
        ("phi3-f32", "head_dim", "18014398509481983", "too large"),
        ("phi3-f32", "rope_parameters.partial_rotary_factor", "0", "partial_rotary_factor"),
        ("phi3_longrope-f32", "rope_parameters.short_factor", "[1.0, 1.0]", "short_factor"),
        ("phi3_longrope-f32", "rope_parameters.long_factor", "[2.0, 3.0, 5.0, 8.0, 16.0, -32.0]", "long_factor"),
        ("phi3_longrope-f32", "rope_parameters.long_factor", nil, "long_factor"),
        ("phi3_longrope-f32", "rope_parameters.attention_factor", "0", "attention_factor"),
        ("phi3_longrope-f32", "rope_parameters.factor", "-2", "factor"),
        // ln(original) divides the default attention factor.
        ("phi3_longrope-f32", "original_max_position_embeddings", "1", "original_max_position_embeddings"),
        // Phi-4-multimodal: Phi3Config's rules, and its own vision config class's kinds.
        ("phi4_multimodal-f32", "rope_parameters.rope_type", #""yarn2""#, "yarn2"),
        ("phi4_multimodal-f32", "rope_parameters.long_factor", "[2.0, 3.0]", "long_factor"),
        ("phi4_multimodal-f32", "num_hidden_layers", "4.0", "num_hidden_layers"),
        ("phi4_multimodal-f32", "vision_config.num_hidden_layers", "1.5", "vision_config.num_hidden_layers"),
    ]

    @Test(arguments: badConfigs.indices)
    func badConfigIsRefusedNamingTheKey(_ index: Int) throws {
        let bad = Self.badConfigs[index]
        let scratch = try ScratchDirectory()
        let model = try EditedModel.copy(bad.fixture, in: scratch, [(bad.path, bad.value)])
        do {
            let loaded = try EditedModel.load(model)
            Issue.record("\(bad.fixture) \(bad.path)=\(bad.value ?? "absent") loaded as a \(loaded.layerCount)-layer model")
        } catch let error as DroptraceError {
            #expect(error.path == model.appendingPathComponent("config.json").path, "\(error)")
            #expect(error.message.contains(bad.key), "\(bad.path) does not name \(bad.key): \(error)")
            #expect(!error.message.contains("\n"))
        }
    }

    /// The long factors apply to a whole sequence longer than the threshold
    /// (transformers: max(position) + 1 of the forward call), the short ones
    /// to a shorter sequence in the same batch, and a decoding step at a
    /// position past the threshold uses the long ones.
    @Test func longFactorsApplyPerSequenceLength() {
        let rotary = RotaryEmbedding(
            inverseFrequencies: [0.5], headDim: 2, attentionScaling: 2,
            longContext: RotaryEmbedding.LongContext(beyondLength: 4, inverseFrequencies: [0.25]))
        let positions = [0, 1, 2, 3, 0, 1, 2, 3, 4, 7]
        var rows = [Float](repeating: 0, count: 2 * positions.count)
        for r in positions.indices { rows[2 * r] = 1 }
        rows.withUnsafeMutableBufferPointer { rotary.apply(to: $0.baseAddress!, rowStride: 2, headOffsets: [0], positions: positions) }
        // Rows 0-3: a sequence of 4 (short); rows 4-8: of 5 (long); row 9: a step at position 7 (long).
        for (r, position) in positions.enumerated() {
            let frequency: Float = r < 4 ? 0.5 : 0.25
            #expect(abs(rows[2 * r] - 2 * cos(Float(position) * frequency)) < 1e-6, "row \(r)")
            #expect(abs(rows[2 * r + 1] - 2 * sin(Float(position) * frequency)) < 1e-6, "row \(r)")
        }
    }

    /// The LongRoPE fixture: threshold from the top-level
    /// original_max_position_embeddings (which wins over the rope
    /// parameters'), attention factor √(1 + ln(256/16) / ln 16) = √2.
    @Test func longRoPESettings() throws {
        let rotary = try #require(try EditedModel.load(FixtureFiles.model("phi3_longrope-f32")).block(0).attention?.attention.rotary)
        #expect(rotary.longContext?.beyondLength == 16)
        #expect(abs(rotary.attentionScaling - Float(2.0.squareRoot())) < 1e-7)
        let scratch = try ScratchDirectory()
        let top = try EditedModel.copy("phi3_longrope-f32", in: scratch, [("original_max_position_embeddings", "32")])
        let moved = try #require(try EditedModel.load(top).block(0).attention?.attention.rotary)
        #expect(moved.longContext?.beyondLength == 32)
        #expect(abs(moved.attentionScaling - Float((1 + log(8.0) / log(32.0)).squareRoot())) < 1e-7)
    }

    /// The first Phi-3 128k configs: `rope_scaling` of type "su" with a top-level
    /// base, read as LongRoPE (with the length from the rope parameters).
    @Test func suConfigReadsAsLongRoPE() throws {
        let scratch = try ScratchDirectory()
        let su = try EditedModel.copy("phi3_longrope-f32", in: scratch, [
            ("rope_parameters", nil), ("rope_theta", "10000.0"),
            ("rope_scaling", #"{"type": "su", "short_factor": [1.0, 1.0, 1.05, 1.1, 1.2, 1.5], "long_factor": [2.0, 3.0, 5.0, 8.0, 16.0, 32.0], "original_max_position_embeddings": 16}"#),
        ])
        let a = try scores(su), b = try scores(FixtureFiles.model("phi3_longrope-f32"))
        #expect(a.attention == b.attention && a.mlp == b.mlp)
    }

    /// Phi-4-multimodal is read as Phi-3's language model: its image and
    /// audio encoders (embed_tokens_extend) act only on image and audio
    /// inputs, so the scores are the same without their tensors, and an
    /// export keeps them as stored.
    @Test func phi4MultimodalReadsItsLanguageModel() throws {
        let fixture = try EditedFixture("phi4_multimodal-f32")
        #expect(try fixture.load() is Phi3Model)
        let base = try fixture.attentionScores()
        let textOnly = try EditedFixture("phi4_multimodal-f32")
        try BadInputTests().rewriteWeights(textOnly.model) { $0.removeAll { $0.name.hasPrefix("model.embed_tokens_extend.") } }
        #expect(try textOnly.attentionScores() == base)
        let scratch = try ScratchDirectory()
        let export = scratch.path("export")
        try DroppedModelExport.write(model: try fixture.load(), plan: DropPlan(blocks: [2]), to: export)
        let names = try Checkpoint(directory: export).tensorNames
        #expect(names.contains("model.embed_tokens_extend.audio_embed.encoder.embed.out.weight"))
        #expect(!names.contains { $0.hasPrefix("model.layers.3.") })
    }

    /// A dropped attention or MLP takes its fused tensor with it, whole.
    @Test func exportDropsFusedTensorsWhole() throws {
        let scratch = try ScratchDirectory()
        let export = scratch.path("export")
        try DroppedModelExport.write(
            model: try EditedModel.load(FixtureFiles.model("phi3-f32")), plan: DropPlan(attention: [1], mlp: [2]), to: export)
        let names = try Checkpoint(directory: export).tensorNames
        #expect(!names.contains("model.layers.1.self_attn.qkv_proj.weight") && !names.contains("model.layers.1.input_layernorm.weight"))
        #expect(names.contains("model.layers.1.mlp.gate_up_proj.weight") && names.contains("model.layers.2.self_attn.qkv_proj.weight"))
        #expect(!names.contains("model.layers.2.mlp.gate_up_proj.weight") && !names.contains("model.layers.2.post_attention_layernorm.weight"))
        #expect(try EditedModel.load(export).configuredDrops == DropPlan(attention: [1], mlp: [2]))
    }
}

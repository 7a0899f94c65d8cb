import Architectures
@testable import CheckpointIO
import Foundation
import Scoring
import Testing

/// Settings a GGUF file leaves out take llama.cpp's values (llama-model.cpp's
/// `load_hparams` and the architectures' graphs), and settings it gives keep
/// the meaning of the Hugging Face model it was converted from.
@Suite struct GGUFLlamaCppSettingsTests {
    static func translated(_ bytes: [UInt8], in scratch: ScratchDirectory) throws -> (config: [String: Any], checkpoint: Checkpoint) {
        let file = scratch.path("edited.gguf")
        try Data(bytes).write(to: file)
        let checkpoint = try Checkpoint(location: file)
        return (try GGUFArchitectureTranslationTests.json(checkpoint.configData), checkpoint)
    }

    /// llama.cpp scales Gemma 3's queries by 1/sqrt(head width) except for the
    /// 62-layer 27B, whose scale is 1/sqrt(hidden / heads) = 1/sqrt(168) (its
    /// query_pre_attn_scalar; the head width is 128).
    @Test(arguments: [(layers: 62, hidden: 5376, heads: 32, headDim: 128, scalar: 168), (layers: 26, hidden: 1152, heads: 4, headDim: 256, scalar: 256)])
    func gemma3QueryScaleFollowsLlamaCpp(_ size: (layers: Int, hidden: Int, heads: Int, headDim: Int, scalar: Int)) throws {
        let metadata = GGUFMetadata(
            values: ["gemma3.attention.layer_norm_rms_epsilon": .float(1e-6, .float32), "gemma3.attention.sliding_window": .unsigned(512, .uint32)],
            path: "gemma3.gguf")
        let sizes = GGUFArchitecture.Sizes(
            hidden: size.hidden, layers: size.layers, heads: size.heads, kvHeads: size.heads / 2, headDim: size.headDim, feedForward: 4 * size.hidden,
            context: 8192, vocabulary: 1000, tied: true, theta: 1_000_000, experts: 0)
        let input = GGUFArchitecture.Input(metadata: metadata, sizes: sizes, tensorDimensions: [:], ropeTensors: [:], architecture: .gemma3)
        let config = try GGUFArchitecture.gemma3.config(input)
        #expect(config["query_pre_attn_scalar"] as? Int == size.scalar)
    }

    /// Gemma 3 without a window (sliding_window 0, as recent llama.cpp reads
    /// it): every layer attends globally, none is refused.
    @Test func gemma3WithoutAWindowIsGlobal() throws {
        let scratch = try ScratchDirectory()
        var bytes = [UInt8](try Data(contentsOf: GGUFArchitectureFixtures.file("gemma3_text-f16.gguf")))
        let windowed = try Self.translated(bytes, in: scratch).config["layer_types"] as? [String]
        #expect(windowed?.contains("sliding_attention") == true)
        try ConfigValidationTests.setMetadataNumber(&bytes, key: "gemma3.attention.sliding_window", to: 0)
        let (config, checkpoint) = try Self.translated(bytes, in: scratch)
        #expect(config["layer_types"] as? [String] == Array(repeating: "full_attention", count: 4))
        _ = try ImportanceScorer(model: try ModelRegistry.load(checkpoint)).score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
    }

    /// llama.cpp's converter writes OLMo 3 as `olmo2` with a sliding window;
    /// llama.cpp then slides on three layers of four (or the file's pattern)
    /// with the plain rotary embedding there, as transformers' olmo3. Without
    /// the window it was read as OLMo 2: full attention everywhere.
    @Test func olmo2WithAWindowIsOlmo3() throws {
        let scratch = try ScratchDirectory()
        let original = [UInt8](try Data(contentsOf: GGUFArchitectureFixtures.file("olmo2-q8_0.gguf")))
        var bytes = original
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("olmo2.attention.sliding_window") + GGUFBytes.value(.uint32, GGUFBytes.le(UInt32(4))))
        let (config, checkpoint) = try Self.translated(bytes, in: scratch)
        #expect(config["model_type"] as? String == "olmo3")
        #expect(config["sliding_window"] as? Int == 4)
        #expect(config["layer_types"] as? [String] == ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"])
        let rope = config["rope_parameters"] as? [String: Any]
        #expect((rope?["sliding_attention"] as? [String: Any])?["rope_type"] as? String == "default")
        let sequences = FixtureFiles.jsonlSequences()
        let olmo3 = try ImportanceScorer(model: try ModelRegistry.load(checkpoint)).score(sequences, calibrationPath: "fixture")
        let olmo2 = try ImportanceScorer(model: try ModelRegistry.load(try Self.translated(original, in: scratch).checkpoint))
            .score(sequences, calibrationPath: "fixture")
        #expect(olmo3.attention != olmo2.attention, "a window of 4 changes every sliding layer's attention")
    }

    /// OLMo 3's sliding layers rotate at `rope_parameters.sliding_attention`'s
    /// base, which the converter writes as `rope.freq_base_swa` and
    /// llama.cpp reads: it was ignored (the full layers' base, exit 0).
    @Test func olmo3SlidingLayersRotateAtTheirOwnBase() throws {
        let scratch = try ScratchDirectory()
        var bytes = [UInt8](try Data(contentsOf: GGUFArchitectureFixtures.file("olmo2-q8_0.gguf")))
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("olmo2.attention.sliding_window") + GGUFBytes.value(.uint32, GGUFBytes.le(UInt32(4))))
        let sequences = FixtureFiles.jsonlSequences()
        let shared = try ImportanceScorer(model: try ModelRegistry.load(try Self.translated(bytes, in: scratch).checkpoint))
            .score(sequences, calibrationPath: "fixture")
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("olmo2.rope.freq_base_swa") + GGUFLlamaCppOnlyKeyTests.float32(500))
        let (config, checkpoint) = try Self.translated(bytes, in: scratch)
        let rope = try #require(config["rope_parameters"] as? [String: Any])
        #expect((rope["sliding_attention"] as? [String: Any])?["rope_theta"] as? Double == 500, "\(rope)")
        let own = try ImportanceScorer(model: try ModelRegistry.load(checkpoint)).score(sequences, calibrationPath: "fixture")
        #expect(own.attention != shared.attention)
    }

    /// gpt-oss slides on even layers unless the file gives a pattern, which
    /// llama.cpp reads (it was ignored).
    @Test func gptOssSlidingPatternIsRead() throws {
        let scratch = try ScratchDirectory()
        var bytes = [UInt8](try Data(contentsOf: GGUFArchitectureFixtures.file("gpt_oss-f16.gguf")))
        let layers = try #require(try Self.translated(bytes, in: scratch).config["layer_types"] as? [String])
        #expect(layers == (0..<layers.count).map { $0 % 2 == 0 ? "sliding_attention" : "full_attention" })
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("gpt-oss.attention.sliding_window_pattern") + GGUFBytes.value(.uint32, GGUFBytes.le(UInt32(3))))
        let patterned = try Self.translated(bytes, in: scratch).config["layer_types"] as? [String]
        #expect(patterned == (0..<layers.count).map { ($0 + 1) % 3 != 0 ? "sliding_attention" : "full_attention" })
    }

    /// llama.cpp reads the rope scaling types none, linear, yarn and longrope
    /// and refuses a file naming another; "dynamic" with a factor was read as
    /// no scaling at all (exit 0).
    @Test(arguments: ["dynamic", "default", "llama3"])
    func ropeScalingTypesLlamaCppDoesNotKnowAreRefused(_ type: String) throws {
        let scratch = try ScratchDirectory()
        var bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("llama.rope.scaling.type") + GGUFBytes.value(.string, GGUFBytes.string(type)))
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("llama.rope.scaling.factor") + GGUFBytes.value(.float32, GGUFBytes.le(Float(2).bitPattern)))
        let file = scratch.path("scaled.gguf")
        try Data(bytes).write(to: file)
        #expect {
            _ = try Checkpoint(location: file)
        } throws: { error in
            "\(error)" == "\(file.path): \"llama.rope.scaling.type\" must be none, linear, yarn or longrope (the types llama.cpp reads), got \"\(type)\""
        }
    }
}

/// Shape errors of a GGUF file's tensor name the tensor as the file stores it
/// and the configuration as the GGUF metadata (there is no config.json).
@Suite struct GGUFShapeErrorTests {
    @Test func shapeErrorNamesTheGGUFTensorAndMetadata() throws {
        let url = FixtureFiles.root.appendingPathComponent("gguf/llama-f32.gguf")
        let checkpoint = try Checkpoint(location: url)
        #expect {
            _ = try checkpoint.tensor("model.layers.0.post_attention_layernorm.weight", shape: [96])
        } throws: { error in
            "\(error)" == "\(url.path): tensor 'blk.0.ffn_norm.weight' (read as 'model.layers.0.post_attention_layernorm.weight', "
                + "shapes in Hugging Face order) has shape [48] but the GGUF metadata implies [96]"
        }
    }
}

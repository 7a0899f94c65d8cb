import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Model sizes from config.json and GGUF metadata are checked once, while
/// the shared config types decode and against the tensors' shapes, before
/// anything is allocated or divided: every bad value is one error naming the
/// file and the key, never a trap, hang or heap overwrite.
@Suite struct ConfigValidationTests {
    /// The configs that crashed, hung or overwrote the heap, named
    /// `<family>-<key>-<what>.config.json` (Fixtures/config-cases).
    static let crasherConfigs: [String] = {
        let folder = FixtureFiles.root.appendingPathComponent("config-cases")
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasSuffix(".config.json") }.sorted()
    }()

    @Test func crasherConfigsArePresent() {
        #expect(Self.crasherConfigs.count >= 12)
    }

    /// `droptrace score` on the `<family>-f32` fixture with the crasher as its
    /// config.json: exit 1, one error line naming config.json and the key.
    @Test(arguments: crasherConfigs)
    func crasherConfigIsRefusedNamingTheKey(_ file: String) throws {
        let scratch = try ScratchDirectory()
        let parts = file.components(separatedBy: "-")
        let model = try scratch.copyOfModel(parts[0] + "-f32", as: "model")
        let config = model.appendingPathComponent("config.json")
        try FileManager.default.removeItem(at: config)
        try FileManager.default.copyItem(at: FixtureFiles.root.appendingPathComponent("config-cases/\(file)"), to: config)
        let result = try DroptraceCommand.run([
            "score", model.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("s.h5").path,
        ])
        #expect(result.status == 1)
        let errors = result.stderr.split(separator: "\n").filter { $0.contains("error") }
        #expect(errors.count == 1, "\(file): \(result.stderr)")
        let line = String(errors.first ?? "")
        #expect(line.contains(config.path + ":"), "\(file): \(line)")
        #expect(line.contains(parts[1]), "\(file) does not name \(parts[1]): \(line)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("s.h5").path))
    }

    /// One value changed in a fixture's config.json, and the key the error must name.
    struct Mutant: Sendable, CustomTestStringConvertible {
        var model: String
        /// Dotted path of the changed value (`rope_parameters.factor`).
        var path: String
        /// The new value as JSON text.
        var value: String
        var key: String
        var testDescription: String { "\(model) \(path)=\(value)" }
        init(_ model: String, _ path: String, _ value: String, key: String? = nil) {
            self.model = model
            self.path = path
            self.value = value
            self.key = key ?? String(path.split(separator: ".").last!)
        }

        /// Writes the changed value into the config.json at `configURL`.
        func apply(to configURL: URL) throws {
            var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
            EditedModel.set(
                try JSONSerialization.jsonObject(with: Data(value.utf8), options: .fragmentsAllowed), at: path, in: &config)
            try KindPreservingJSON.data(config).write(to: configURL)
        }
    }

    /// Mutants of the crashers' kinds in other keys and other families.
    static let mutants: [Mutant] = [
        // A float head_dim, which classes without a typed field keep and their models cannot size attention by.
        Mutant("cohere2-f32", "head_dim", "12.0"), Mutant("qwen3_moe-f32", "head_dim", "16.0"),
        Mutant("aya_vision-f32", "text_config.head_dim", "12.0", key: "text_config.head_dim"),
        // GPT-2: counts, heads dividing the width, products, eps, layers against the weights.
        Mutant("gpt2-f32", "n_embd", "0"), Mutant("gpt2-f32", "n_layer", "-1"), Mutant("gpt2-f32", "n_positions", "0"),
        Mutant("gpt2-f32", "n_inner", "0"), Mutant("gpt2-f32", "vocab_size", "-512"), Mutant("gpt2-f32", "n_head", "7"),
        Mutant("gpt2-f32", "layer_norm_epsilon", "0"), Mutant("gpt2-f32", "layer_norm_epsilon", "-1e-5"),
        Mutant("gpt2-f32", "n_layer", "6"), Mutant("gpt2-f32", "n_layer", "3"),
        Mutant("gpt2-f32", "n_embd", "4611686018427387904"), Mutant("gpt2-f32", "vocab_size", "513"),
        Mutant("gpt2-f32", "n_positions", "129"),
        // GPT-NeoX: rotary fraction, base, eps, heads, sizes, layers.
        Mutant("gpt_neox-f32", "rope_parameters.partial_rotary_factor", "0"),
        Mutant("gpt_neox-f32", "rope_parameters.partial_rotary_factor", "-0.25"),
        Mutant("gpt_neox-f32", "rope_parameters.partial_rotary_factor", "1.0000001"),
        Mutant("gpt_neox-f32", "rope_parameters.rope_theta", "0"), Mutant("gpt_neox-f32", "rope_parameters.rope_theta", "-10000"),
        Mutant("gpt_neox-f32", "layer_norm_eps", "0"), Mutant("gpt_neox-f32", "num_attention_heads", "5"),
        Mutant("gpt_neox-f32", "hidden_size", "0"), Mutant("gpt_neox-f32", "intermediate_size", "-96"),
        Mutant("gpt_neox-f32", "max_position_embeddings", "0"), Mutant("gpt_neox-f32", "num_hidden_layers", "4"),
        Mutant("gpt_neox-f32", "vocab_size", "3074457345618258603"),
        // Llama: kv heads, eps, sizes against the tensors, rope scaling, layers, head_dim.
        Mutant("llama-f32", "num_key_value_heads", "3"), Mutant("llama-f32", "rms_norm_eps", "0"),
        Mutant("llama-f32", "rms_norm_eps", "-1"), Mutant("llama-f32", "max_position_embeddings", "0"),
        Mutant("llama-f32", "intermediate_size", "0"), Mutant("llama-f32", "vocab_size", "0"),
        Mutant("llama-f32", "vocab_size", "511"), Mutant("llama-f32", "rope_parameters.factor", "0"),
        Mutant("llama-f32", "rope_parameters.factor", "-8"),
        Mutant("llama-f32", "rope_parameters.low_freq_factor", "0"),
        Mutant("llama-f32", "rope_parameters.original_max_position_embeddings", "1e300"),
        Mutant("llama-f32", "rope_parameters.original_max_position_embeddings", "0"),
        // transformers copies a top-level original length over the rope parameters', a null too.
        Mutant("llama-f32", "original_max_position_embeddings", "null"),
        // One LongRoPE factor for every pair: the generic validation lets torch broadcast it, Phi3Config does not.
        Mutant("phi3_longrope-f32", "rope_parameters.short_factor", "[1.5]"),
        Mutant("phi3_longrope-f32", "rope_parameters.long_factor", "[1.5]"),
        // Phi-3 sized its factor check from partial_rotary_factor before checking it: beyond Int's range, a trap.
        Mutant("phi3-f32", "rope_parameters.partial_rotary_factor", "-9223372036854775808"),
        Mutant("phi3-f32", "rope_parameters.partial_rotary_factor", "1e300"),
        Mutant("phi3_longrope-f32", "rope_parameters.partial_rotary_factor", "1e20"),
        Mutant("llama-f32", "rope_parameters.rope_theta", "0"), Mutant("llama-f32", "num_hidden_layers", "6"),
        Mutant("llama-f32", "num_hidden_layers", "4"), Mutant("llama-f32", "head_dim", "0"), Mutant("llama-f32", "head_dim", "13"),
        Mutant("llama-f32", "head_dim", "4611686018427387904"), Mutant("llama-f32", "num_attention_heads", "-4"),
        Mutant("llama-f32", "partial_rotary_factor", "1.5"), Mutant("gpt_neox-v4", "rotary_pct", "0"),
        // Dynamic NTK without a factor: transformers' KeyError (absent), TypeError building the model (null).
        Mutant("llama-f32", "rope_parameters", #"{"rope_type": "dynamic", "rope_theta": 10000.0}"#, key: "factor"),
        Mutant("qwen2-f32", "rope_parameters", #"{"rope_type": "dynamic", "factor": null}"#, key: "factor"),
        // phi slices int(head_dim · factor) dimensions against a 2·ceil(w/2)-wide table: odd widths fail.
        Mutant("phi-f32", "rope_parameters.partial_rotary_factor", "0.3"),
        Mutant("phi-f32", "rope_parameters.partial_rotary_factor", "0.16"),
        Mutant("phi-f32", "rope_parameters.partial_rotary_factor", "null"),
        // Mistral, Qwen2: windows, heads wider than the model, sizes against the embedding.
        Mutant("mistral-f32", "sliding_window", "0"), Mutant("mistral-f32", "num_key_value_heads", "-1"),
        Mutant("mistral-f32", "hidden_size", "47"), Mutant("qwen2-f32", "num_attention_heads", "96"),
        Mutant("qwen2-f32", "num_key_value_heads", "0"), Mutant("qwen2-f32", "layer_types", #"["full_attention"]"#),
        // Sliding layers without a window: Qwen2Config drops the window unless use_sliding_window.
        Mutant("qwen2-f32", "layer_types", #"["sliding_attention", "full_attention", "sliding_attention", "full_attention"]"#,
               key: "sliding_window"),
        Mutant("ministral-f32", "sliding_window", "null", key: "sliding_window"),
        Mutant("llama-f32", "drop_attn_list", "[1e300]"), Mutant("llama-f32", "drop_mlp_list", "[5]"), Mutant("qwen2-f32", "num_hidden_layers", "9223372036854775807"),
        // Gemma, Gemma-2: head_dim against q_proj, soft caps and scalars, windows, layers.
        Mutant("gemma-f32", "head_dim", "1099511627776"), Mutant("gemma-f32", "rms_norm_eps", "0"),
        Mutant("gemma2-f32", "attn_logit_softcapping", "0"), Mutant("gemma2-f32", "final_logit_softcapping", "-30.0"),
        Mutant("gemma2-f32", "query_pre_attn_scalar", "0"), Mutant("gemma2-f32", "sliding_window", "-1"),
        Mutant("gemma2-f32", "num_hidden_layers", "5"), Mutant("llama-f32", "num_hidden_layers", "4097"),
        // OLMo, OLMo-2, Mixtral.
        Mutant("olmo-f32", "clip_qkv", "0"), Mutant("olmo-f32", "clip_qkv", "-0.5"),
        Mutant("olmo2-f32", "num_key_value_heads", "3"), Mutant("olmo2-f32", "rms_norm_eps", "0"),
        Mutant("mixtral-f32", "num_local_experts", "0"), Mutant("mixtral-f32", "num_experts_per_tok", "0"),
        Mutant("mixtral-f32", "num_experts_per_tok", "5"), Mutant("mixtral-f32", "num_local_experts", "1152921504606846976"),
        Mutant("mixtral-f32", "num_local_experts", "2147483648"), Mutant("mixtral-f32", "num_local_experts", "5"),
        // transformers attends both ways when is_causal is false (every family), and refuses other kinds in its attention.
        Mutant("gpt2-f32", "is_causal", "false"), Mutant("gpt_neox-f32", "is_causal", "false"), Mutant("llama-f32", "is_causal", "false"),
        Mutant("qwen2-f32", "is_causal", "0"), Mutant("mistral-f32", "is_causal", #""no""#),
        Mutant("gemma3-f32", "text_config.is_causal", "false"),
        // Rope settings per attention type, on families that rotate every layer alike (transformers fails or ignores them).
        Mutant("gemma2-f32", "rope_parameters",
               #"{"full_attention": {"rope_type": "default", "rope_theta": 500.0}, "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}"#,
               key: "full_attention"),
        Mutant("qwen2-f32", "rope_parameters", #"{"sliding_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}}"#,
               key: "sliding_attention"),
        Mutant("llama-f32", "rope_parameters", #"{"full_attention": {"rope_type": "default", "rope_theta": 500.0}}"#, key: "full_attention"),
    ]

    /// The number Foundation cannot decode is named however many other
    /// non-whole numbers come before it (only the first 64 were tried: the
    /// message named no key, and a large file took minutes to try them).
    @Test func theUndecodableNumberIsNamedAmongManyFractions() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "model")
        let url = model.appendingPathComponent("config.json")
        let fractions = (0..<200).map { "\"k\($0)\": 0.5" }.joined(separator: ", ")
        let text = try String(contentsOf: url, encoding: .utf8)
            .replacingOccurrences(of: "\"num_hidden_layers\": 5", with: "\"num_hidden_layers\": 99999999999999999999, \"aaa\": {\(fractions)}")
        try #require(text.contains("99999999999999999999"))
        try Data(text.utf8).write(to: url)
        let error = #expect(throws: DroptraceError.self) { _ = try ModelRegistry.load(try Checkpoint(directory: model)) }
        #expect(error?.description == "\(url.path): key \"num_hidden_layers\" holds 99999999999999999999, which is not a whole number in range")
    }

    /// `is_causal` true or null attends causally in transformers, as without the key.
    @Test(arguments: ["true", "null"])
    func causalIsCausalIsRead(_ value: String) throws {
        let scratch = try ScratchDirectory()
        _ = try EditedModel.load(try EditedModel.copy("llama-f32", in: scratch, [("is_causal", value)]))
    }

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel(mutant.model, as: "model")
        let configURL = model.appendingPathComponent("config.json")
        try mutant.apply(to: configURL)
        do {
            let loaded = try ModelRegistry.load(try Checkpoint(directory: model))
            Issue.record("\(mutant.testDescription) loaded as a \(loaded.layerCount)-layer model")
        } catch let error as DroptraceError {
            #expect(error.path == configURL.path, "\(error)")
            #expect(error.message.contains(mutant.key), "does not name \(mutant.key): \(error)")
            #expect(!error.message.contains("\n"))
        }
    }

    /// A multimodal checkpoint's refused language-model key is named where
    /// config.json writes it, under `text_config.`: refused while decoding
    /// (sizes, a family's own keys) or after (sizes against each other).
    static let textConfigMutants: [Mutant] = [
        Mutant("mistral3_mistral4-f32", "text_config.hidden_size", "0", key: "text_config.hidden_size"),
        Mutant("mistral3_mistral4-f32", "text_config.n_group", "3", key: "text_config.n_group"),
        Mutant("qwen3_5-f32", "text_config.linear_num_value_heads", "3", key: "text_config.linear_num_value_heads"),
        Mutant("qwen3_5_moe-f32", "text_config.num_experts", "9223372036854775807", key: "text_config.num_experts"),
        Mutant("gemma3-f32", "text_config.query_pre_attn_scalar", "0", key: "text_config.query_pre_attn_scalar"),
        Mutant("gemma3-f32", "text_config.num_key_value_heads", "3", key: "text_config.num_key_value_heads"),
        // Counts the tensors contradict.
        Mutant("mistral3_mistral4-f32", "text_config.num_hidden_layers", "3", key: "text_config.num_hidden_layers"),
        Mutant("qwen3_5_moe-f32", "text_config.num_experts", "3", key: "text_config.num_experts"),
    ]

    @Test(arguments: textConfigMutants)
    func textConfigKeyIsNamedUnderTextConfig(_ mutant: Mutant) throws {
        try mutantIsRefusedNamingTheKey(mutant)
    }

    /// With every attention layer dropped by the config, no q_proj confirms
    /// head_dim and no rotary table is built from it: an absurd head_dim
    /// cannot hang the load.
    @Test func noRotaryTableWithoutAttention() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "model")
        try BadInputTests().rewriteConfig(model) {
            $0["drop_attn_list"] = [0, 1, 2, 3, 4]
            $0["head_dim"] = 1 << 40
        }
        let loaded = try ModelRegistry.load(try Checkpoint(directory: model))
        #expect(try loaded.block(0).attention == nil)
    }

    // MARK: - GGUF metadata

    /// One metadata number changed in a fixture GGUF, and the key the error must name.
    struct GGUFMutant: Sendable, CustomTestStringConvertible {
        var file: String
        var key: String
        var value: Double
        var testDescription: String { "\(file) \(key)=\(value)" }
    }

    static let ggufMutants: [GGUFMutant] = [
        GGUFMutant(file: "llama-f32.gguf", key: "llama.attention.head_count_kv", value: 0),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.attention.head_count_kv", value: 3),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.attention.head_count", value: 0),
        GGUFMutant(file: "llama-w64-q.gguf", key: "llama.attention.head_count", value: 256),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.attention.key_length", value: 4_294_967_295),
        // llama.cpp sizes attn_v by it; it was ignored.
        GGUFMutant(file: "llama-f32.gguf", key: "llama.attention.value_length", value: 8),
        GGUFMutant(file: "qwen3-f32.gguf", key: "qwen3.attention.value_length", value: 4_294_967_295),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.embedding_length", value: 0),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.embedding_length", value: 64),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.block_count", value: 6),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.block_count", value: 4),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.context_length", value: 0),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.feed_forward_length", value: 0),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.rope.dimension_count", value: 127),
        GGUFMutant(file: "gpt_neox-bf16.gguf", key: "gptneox.rope.dimension_count", value: 127),
        GGUFMutant(file: "gpt_neox-bf16.gguf", key: "gptneox.rope.dimension_count", value: 0),
        // llama.cpp's rope asserts an even count.
        GGUFMutant(file: "gpt_neox-bf16.gguf", key: "gptneox.rope.dimension_count", value: 5),
        GGUFMutant(file: "gpt_neox-bf16.gguf", key: "gptneox.rope.dimension_count", value: 1),
        GGUFMutant(file: "gpt_neox-bf16.gguf", key: "gptneox.attention.head_count", value: 5),
        GGUFMutant(file: "gpt_neox-bf16.gguf", key: "gptneox.attention.head_count", value: 0),
        GGUFMutant(file: "gpt2-f16.gguf", key: "gpt2.attention.head_count", value: 7),
        GGUFMutant(file: "qwen2-f16.gguf", key: "qwen2.attention.head_count_kv", value: 0),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.attention.layer_norm_rms_epsilon", value: 0),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.attention.layer_norm_rms_epsilon", value: -.infinity),
        GGUFMutant(file: "llama-f32.gguf", key: "llama.rope.freq_base", value: -10000),
        GGUFMutant(file: "gpt_neox-bf16.gguf", key: "gptneox.attention.layer_norm_epsilon", value: .nan),
    ]

    @Test(arguments: ggufMutants)
    func ggufMutantIsRefusedNamingTheKey(_ mutant: GGUFMutant) throws {
        let scratch = try ScratchDirectory()
        let file = scratch.path(mutant.file)
        var bytes = [UInt8](try Data(contentsOf: FixtureFiles.root.appendingPathComponent("gguf/\(mutant.file)")))
        try Self.setMetadataNumber(&bytes, key: mutant.key, to: mutant.value)
        try Data(bytes).write(to: file)
        do {
            let loaded = try ModelRegistry.load(try Checkpoint(location: file))
            Issue.record("\(mutant.testDescription) loaded as a \(loaded.layerCount)-layer model")
        } catch let error as DroptraceError {
            #expect(error.path == file.path, "\(error)")
            #expect(error.message.contains(mutant.key), "does not name \(mutant.key): \(error)")
        }
    }

    /// A tokenizer key of another type than llama.cpp reads (its loader
    /// refuses the whole file) is refused with pre-tokenised calibration too,
    /// which needs no tokens: it was checked only for text calibration.
    @Test(arguments: [FixtureFiles.calibrationJSONL, FixtureFiles.calibrationText])
    func ggufTokenizerKeyOfAnotherTypeIsRefusedWhateverTheCalibration(_ calibration: URL) throws {
        let scratch = try ScratchDirectory()
        let file = scratch.path("llama-f32.gguf")
        var bytes = [UInt8](try Data(contentsOf: FixtureFiles.root.appendingPathComponent("gguf/llama-f32.gguf")))
        let type = try Self.metadataValueOffset(bytes, key: "tokenizer.ggml.bos_token_id")
        try #require(bytes[type] == 4, "stored as UINT32")
        bytes[type] = 5  // INT32, the same width
        try Data(bytes).write(to: file)
        let result = try DroptraceCommand.run([
            "score", file.path, "--calibration", calibration.path, "--output", scratch.path("s.h5").path])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(file.path): GGUF metadata key 'tokenizer.ggml.bos_token_id' has type INT32, but llama.cpp reads it as UINT32"),
                "\(result.stderr)")
    }

    /// Overwrites the numeric value of GGUF metadata `key` (stored as
    /// length-prefixed key, UInt32 type, value) in place.
    static func setMetadataNumber(_ bytes: inout [UInt8], key: String, to value: Double) throws {
        let typeOffset = try metadataValueOffset(bytes, key: key)
        let type = bytes[typeOffset]
        let bits: UInt64 = switch type {
        case 6: UInt64(Float(value).bitPattern)
        case 12: value.bitPattern
        default: UInt64(truncatingIfNeeded: Int64(value))
        }
        let width = [4: 4, 5: 4, 6: 4, 10: 8, 11: 8, 12: 8][Int(type)]!
        for i in 0..<width { bytes[typeOffset + 4 + i] = UInt8(truncatingIfNeeded: bits >> UInt64(8 * i)) }
    }

    /// Where the type of GGUF metadata `key`'s value starts (after the length-prefixed key).
    static func metadataValueOffset(_ bytes: [UInt8], key: String) throws -> Int {
        let pattern = [UInt8](key.utf8)
        guard let start = (8...(bytes.count - pattern.count)).first(where: { bytes[$0..<($0 + pattern.count)].elementsEqual(pattern) && bytes[$0 - 8] == UInt8(pattern.count) }) else {
            throw DroptraceError("no metadata key \(key)")
        }
        return start + pattern.count
    }

    static func littleEndian(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

    /// Replaces the `length` bytes at `offset` of a GGUF file aligned to 32
    /// (no `general.alignment`) by `replacement`, lengthening `general.name`
    /// so that the tensor data that follows the header keeps its alignment.
    static func spliceMetadata(_ bytes: inout [UInt8], at offset: Int, length: Int, with replacement: [UInt8]) throws {
        bytes.replaceSubrange(offset..<(offset + length), with: replacement)
        let padding = (32 - (replacement.count - length) % 32 + 32) % 32
        let name = try metadataValueOffset(bytes, key: "general.name") + 4
        let nameLength = bytes[name..<(name + 8)].reversed().reduce(0) { $0 << 8 | Int($1) }
        bytes.replaceSubrange(name..<(name + 8), with: littleEndian(UInt64(nameLength + padding)))
        bytes.insert(contentsOf: [UInt8](repeating: UInt8(ascii: "x"), count: padding), at: name + 8 + nameLength)
    }

    /// llama.cpp reads a per-layer metadata value (head counts, feed-forward
    /// width) given as an array only when it holds one value per block ("key
    /// ... has wrong array length"); an array of equal values but another
    /// length was taken for every block.
    @Test(arguments: ["llama.attention.head_count", "llama.attention.head_count_kv", "llama.feed_forward_length"])
    func perLayerMetadataOfAnotherLengthThanTheBlocksIsRefused(key: String) throws {
        let scratch = try ScratchDirectory()
        let original = [UInt8](try Data(contentsOf: FixtureFiles.root.appendingPathComponent("gguf/llama-f32.gguf")))
        let typeOffset = try Self.metadataValueOffset(original, key: key)
        #expect(original[typeOffset] == 4, "\(key) is not a UInt32")
        let value = original[(typeOffset + 4)..<(typeOffset + 8)]
        // The file has 5 blocks: 5 values load as the scalar does, 4 or 6 are refused.
        for count in [5, 4, 6, 0] {
            var bytes = original
            let array: [UInt8] = [9, 0, 0, 0, 4, 0, 0, 0] + Self.littleEndian(UInt64(count))
                + Array([[UInt8]](repeating: Array(value), count: count).joined())
            try Self.spliceMetadata(&bytes, at: typeOffset, length: 8, with: array)
            let file = scratch.path("per-layer-\(count).gguf")
            try Data(bytes).write(to: file)
            do {
                let loaded = try ModelRegistry.load(try Checkpoint(location: file))
                #expect(count == 5, "\(count) values of \(key) loaded as a \(loaded.layerCount)-layer model")
            } catch let error as DroptraceError {
                #expect(count != 5, "\(error)")
                #expect(error.path == file.path, "\(error)")
                #expect(error.message.contains("'\(key)' holds \(count) per-layer values, but the model has 5 blocks"), "\(error)")
            }
        }
    }

    // MARK: - Required tensors

    /// A copy of `fixture` without lm_head.weight, its config changed by `change`.
    func modelWithoutHead(_ fixture: String, in scratch: ScratchDirectory, _ change: (inout [String: Any]) -> Void) throws -> URL {
        let model = try scratch.copyOfModel(fixture, as: "model")
        try BadInputTests().rewriteConfig(model, change)
        try BadInputTests().rewriteWeights(model) { $0.removeAll { $0.name == "lm_head.weight" } }
        return model
    }

    /// An untied model (tie_word_embeddings false, or absent where the
    /// family's default is false) without lm_head.weight is an error naming
    /// it, not a head borrowed from the embedding.
    @Test(arguments: [false, nil] as [Bool?])
    func untiedModelWithoutHeadIsRefused(tie: Bool?) throws {
        let scratch = try ScratchDirectory()
        let model = try modelWithoutHead("llama-f32", in: scratch) { $0["tie_word_embeddings"] = tie }
        let loaded = try ModelRegistry.load(try Checkpoint(directory: model))
        #expect {
            try loaded.head()
        } throws: { error in
            "\(error)".contains("lm_head.weight") && "\(error)".contains(model.path)
        }
    }

    /// A stored head as transformers' names (GPT-NeoX's embed_out) or the
    /// released ones (Mistral's output, DeepSeek-V4's head) spell it.
    static func isHead(_ name: String) -> Bool { name.hasSuffix("lm_head.weight") || ["output.weight", "embed_out.weight", "head.weight"].contains(name) }

    /// A copy of `fixture` with every tying flag (top level, the language
    /// model's config, an omni model's thinker's) set to `tied` and its stored heads replaced by
    /// `head(name, stored head)` (nil: none).
    func retied(
        _ fixture: String, _ tied: Bool, in scratch: ScratchDirectory, as name: String,
        head: ((String, SafetensorsWriter.Entry?) throws -> SafetensorsWriter.Entry)? = nil
    ) throws -> URL {
        let model = try scratch.copyOfModel(fixture, as: name)
        try BadInputTests().rewriteConfig(model) { config in
            config["tie_word_embeddings"] = tied
            for key in ["text_config", "llm_config", "language_config"] {
                if var text = config[key] as? [String: Any] {
                    text["tie_word_embeddings"] = tied
                    config[key] = text
                }
            }
            // An omni model's thinker (Qwen2.5-Omni's), whose own flag ties its head, and its text config.
            if config["thinker_config"] is [String: Any] {
                EditedModel.set(tied, at: "thinker_config.tie_word_embeddings", in: &config)
                EditedModel.set(tied, at: "thinker_config.text_config.tie_word_embeddings", in: &config)
            }
        }
        try BadInputTests().rewriteWeights(model) { entries in
            let stored = entries.first { Self.isHead($0.name) }
            entries.removeAll { Self.isHead($0.name) }
            if let head { entries.append(try head(stored?.name ?? Self.unstoredHeadNames[fixture, default: "lm_head.weight"], stored)) }
        }
        return model
    }

    /// Where a fixture storing no head would store one, when not `lm_head.weight`: ModernBERT's
    /// decoder, ShieldGemma2ForImageClassification's (its Gemma3ForConditionalGeneration under `model.`).
    static let unstoredHeadNames = ["modernbert-decoder-f32": "decoder.weight", "shieldgemma2-f32": "model.lm_head.weight"]

    /// Model classes that tie nothing, whatever the flags say (transformers 5.25).
    static let neverTied: Set<String> = [
        "bailing_hybrid-f32", "bailing_hybrid_limits-f32", "ergo-f32", "kimi_linear-f32", "nemotron_h-f32", "nemotron_h_latent-f32",
        "nemotron_h_omni-f32", "mllama-f32", "mllama_text_model-f32", "molmo2-f32", "molmo2_olmo-f32", "cosmos3_edge-f32",
    ]

    /// The same in every family: with every tying flag false and its stored
    /// head removed, the head is refused naming it, never the embedding read
    /// in its place. (Untied Zamba and Zamba2 layers read their own
    /// shared-block copies, which the fixtures store once: that refusal comes first.)
    @Test(arguments: FixtureFiles.familyFixtures)
    func untiedHeadMissingIsRefusedInEveryFamily(_ fixture: String) throws {
        let scratch = try ScratchDirectory()
        let model = try retied(fixture, false, in: scratch, as: "model")
        let named = ["zamba-f32": ["shared_transf"], "zamba2-f32": ["shared_transformer"]][fixture] ?? ["lm_head", "output.weight", "embed_out", "head.weight", "'decoder.weight'"]
        #expect {
            try ModelRegistry.load(try Checkpoint(directory: model)).head()
        } throws: { error in
            "\(error)".contains(model.path) && named.contains { "\(error)".contains($0) }
        }
    }

    /// With every tying flag true, the head is the embedding where none is
    /// stored, and a stored head unlike the embedding is read as stored:
    /// transformers 5 leaves both parameters as loaded then ("both are present
    /// in the checkpoints with different values, so we will NOT tie them").
    /// A class that ties nothing reads no embedding in its place; DbrxConfig
    /// refuses the flag; Ovis2 sizes its head by the top level's config
    /// (defaults here), which refuses a head of the language model's size.
    @Test(arguments: FixtureFiles.familyFixtures)
    func tiedFlagReadsTheEmbeddingOrAStoredHead(_ fixture: String) throws {
        let scratch = try ScratchDirectory()
        let headless = try retied(fixture, true, in: scratch, as: "headless")
        func head(_ model: URL) throws -> Linear { try ModelRegistry.load(try Checkpoint(directory: model)).head().projection }
        if fixture == "dbrx-f32" {
            #expect {
                try ModelRegistry.load(try Checkpoint(directory: headless))
            } throws: { error in
                "\(error)".contains("tie_word_embeddings") && "\(error)".contains(headless.path)
            }
            return
        }
        if Self.neverTied.contains(fixture) {
            #expect(throws: DroptraceError.self) { try head(headless) }
            return
        }
        // Another head than the embedding: the stored one negated, else the embedding negated.
        let embedding = try head(headless)
        func negatedHead(_ name: String, _ stored: SafetensorsWriter.Entry?) throws -> SafetensorsWriter.Entry {
            let values = try stored.map { try $0.bytes().withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } } ?? embedding.weight
            return SafetensorsWriter.Entry(name: name, shape: stored?.shape ?? [embedding.outFeatures, embedding.inFeatures]) { values.map { -$0 } }
        }
        let stored = try retied(fixture, true, in: scratch, as: "stored", head: negatedHead)
        if fixture == "ovis2-f32" {
            #expect(throws: DroptraceError.self) { try head(stored) }
            return
        }
        // As the same file read untied (untied Zamba / Zamba2 layers want shared-block copies the fixtures lack: the head is plain).
        let read = try head(stored).weight
        let untied = ["zamba-f32", "zamba2-f32"].contains(fixture)
            ? embedding.weight.map { -$0 } : try head(try retied(fixture, false, in: scratch, as: "untied", head: negatedHead)).weight
        #expect(read == untied && read != embedding.weight)
    }

    /// Tied models keep using the embedding: by the config, or by the family's
    /// default (Gemma ties when the key is absent).
    @Test(arguments: [("llama-f32", true), ("gemma-f32", nil)] as [(String, Bool?)])
    func tiedModelWithoutHeadUsesTheEmbedding(fixture: String, tie: Bool?) throws {
        let scratch = try ScratchDirectory()
        let model = try modelWithoutHead(fixture, in: scratch) { $0["tie_word_embeddings"] = tie }
        let checkpoint = try Checkpoint(directory: model)
        let head = try ModelRegistry.load(checkpoint).head()
        #expect(head.projection.weight == (try checkpoint.tensor("model.embed_tokens.weight").floats()))
    }

    // MARK: - The rotary kernel

    /// Frequencies for more dimensions than the head has rotate only the
    /// head, and heads that do not fit in a row are left alone: nothing
    /// outside them is written.
    @Test func rotaryKernelNeverWritesOutsideAHead() {
        let rotary = RotaryEmbedding(inverseFrequencies: [Float](repeating: 0.5, count: 64), headDim: 6)
        #expect(rotary.rotaryDim == 6)
        let stride = 16, rows = 3
        var buffer = [Float](repeating: 7, count: rows * stride + 32)
        buffer.withUnsafeMutableBufferPointer { values in
            rotary.apply(to: values.baseAddress!, rowStride: stride, headOffsets: [2, 12, -4], positions: [1, 2, 3])
        }
        for r in 0..<rows {
            for j in 0..<stride where !(2..<8).contains(j) {
                #expect(buffer[r * stride + j] == 7, "row \(r) column \(j) was written")
            }
            #expect(buffer[r * stride + 2] != 7)
        }
        #expect(buffer[(rows * stride)...].allSatisfy { $0 == 7 })
    }

    /// A rotary fraction whose width rounds up past an odd head is refused
    /// rather than rotating a dimension of the next head.
    @Test func rotaryWidthBeyondTheHeadIsRefused() throws {
        let rope = try JSONDecoder().decode(RopeSettings.self, from: Data(#"{"partial_rotary_factor": 1.0}"#.utf8))
        #expect(throws: DroptraceError.self) { try rope.embedding(headDim: 7, configPath: "config.json") }
        #expect(try rope.embedding(headDim: 8, configPath: "config.json").rotaryDim == 8)
    }
}

import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import Testing
import Tokenization

/// The GGUF architecture fixtures (Fixtures/gguf-arch, written by
/// scripts/fixtures/make_gguf_arch_fixtures.py, and the qwen3, qwen3moe and
/// olmoe files of Fixtures/gguf, by make_gguf_qwen3_olmoe_fixtures.py, the way
/// llama.cpp's converter writes them from the Hugging Face fixtures): the
/// translation back must give the Hugging Face fixture's config values and tensors.
enum GGUFArchitectureFixtures {
    struct Case: CustomTestStringConvertible, Sendable {
        let file: String
        let model: String
        /// config.json keys llama.cpp's converter drops (llama.cpp does not implement them).
        let lost: Set<String>
        /// A tied head the converter wrote out as a copy of the embedding (BLOOM).
        var headCopied = false
        var testDescription: String { file }
    }

    static let cases: [Case] = [
        Case(file: "../gguf/qwen3-f32.gguf", model: "qwen3-f32", lost: ["layer_types", "use_sliding_window", "sliding_window"]),
        Case(file: "../gguf/qwen3_moe-f32.gguf", model: "qwen3_moe-f32", lost: []),
        Case(file: "gemma3_text-f16.gguf", model: "gemma3_text-f32", lost: ["query_pre_attn_scalar", "final_logit_softcapping"]),
        Case(file: "phi3-f32.gguf", model: "phi3-f32", lost: []),
        Case(file: "phi3_longrope-f16.gguf", model: "phi3_longrope-f32", lost: []),
        Case(file: "olmo2-q8_0.gguf", model: "olmo2-f32", lost: []),
        Case(file: "../gguf/olmoe-f32.gguf", model: "olmoe-f32", lost: []),
        Case(file: "deepseek_v2-f16.gguf", model: "deepseek_v2-f32", lost: []),
        Case(file: "deepseek_v3-f16.gguf", model: "deepseek_v3-f32", lost: []),
        Case(file: "gpt_oss-f16.gguf", model: "gpt_oss-f32", lost: ["swiglu_limit"]),
        Case(file: "gemma-f16.gguf", model: "gemma-f32", lost: []),
        Case(file: "gemma2-f16.gguf", model: "gemma2-f32", lost: ["query_pre_attn_scalar"]),
        Case(file: "mixtral-f16.gguf", model: "mixtral-f32", lost: ["sliding_window"]),
        Case(file: "qwen2_moe-f16.gguf", model: "qwen2_moe-f32", lost: ["layer_types", "use_sliding_window", "sliding_window"]),
        Case(file: "starcoder2-f16.gguf", model: "starcoder2-f32", lost: ["sliding_window"]),
        Case(file: "phi2-f16.gguf", model: "phi2-f32", lost: []),
        Case(file: "phi2_qkv-f16.gguf", model: "phi2-f32", lost: []),
        Case(file: "stablelm-f16.gguf", model: "stablelm-f32", lost: []),
        Case(file: "stablelm_parallel-f16.gguf", model: "stablelm_parallel-f32", lost: []),
        Case(file: "cohere-f16.gguf", model: "cohere-f32", lost: []),
        Case(file: "granite-f16.gguf", model: "granite-f32", lost: []),
        Case(file: "olmo-f16.gguf", model: "olmo-f32", lost: []),
        Case(file: "smollm3-f16.gguf", model: "smollm3-f32", lost: ["no_rope_layers", "no_rope_layer_interval"]),
        // Llama 3 scaling travels as rope_freqs' divisors (frequency_factors), the same frequencies.
        Case(file: "apertus-f16.gguf", model: "apertus-f32", lost: ["rope_parameters"]),
        Case(file: "bloom-f16.gguf", model: "bloom-f32", lost: ["tie_word_embeddings"], headCopied: true),
        // The converter writes a context of 2048 for every Falcon.
        Case(file: "falcon-f16.gguf", model: "falcon-f32", lost: ["max_position_embeddings"]),
        Case(file: "falcon_new-f16.gguf", model: "falcon_new-f32", lost: ["max_position_embeddings"]),
    ]

    static func file(_ name: String) -> URL { FixtureFiles.root.appendingPathComponent("gguf-arch/\(name)") }

    /// config.json keys no architecture reads (bookkeeping, training-only and token ids,
    /// which GGUF keeps with the tokenizer).
    static let notModelKeys: Set<String> = [
        "architectures", "dtype", "transformers_version", "use_cache", "initializer_range", "bos_token_id", "eos_token_id",
        "pad_token_id", "attention_dropout", "output_router_logits", "router_aux_loss_coef", "pretraining_tp",
        "max_window_layers", "embd_pdrop", "resid_pdrop", "_sliding_window_pattern", "use_bidirectional_attention",
        "num_nextn_predict_layers", "mlp_bias", "router_jitter_noise", "hidden_dropout", "embedding_dropout",
        "residual_dropout",
    ]
}

@Suite struct GGUFArchitectureTranslationTests {
    static func json(_ data: Data) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// Whether a translated config value equals the Hugging Face one (numbers
    /// to float32 precision: GGUF stores float keys as float32).
    static func same(_ translated: Any?, _ expected: Any) -> Bool {
        switch expected {
        case is NSNull: return translated == nil || translated is NSNull
        case let object as [String: Any]:
            guard let other = translated as? [String: Any] else { return false }
            return object.allSatisfy { same(other[$0.key], $0.value) }
        case let list as [Any]:
            guard let other = translated as? [Any], other.count == list.count else { return false }
            return zip(other, list).allSatisfy { same($0, $1) }
        case let text as String: return translated as? String == text
        case let number as NSNumber:
            guard let other = translated as? NSNumber else { return false }
            return abs(other.doubleValue - number.doubleValue) <= 1e-6 * max(abs(number.doubleValue), 1e-30)
        default: return false
        }
    }

    @Test(arguments: GGUFArchitectureFixtures.cases)
    func configHasTheHuggingFaceValues(fixture: GGUFArchitectureFixtures.Case) throws {
        let gguf = try Checkpoint(location: GGUFArchitectureFixtures.file(fixture.file))
        let original = try Checkpoint(location: FixtureFiles.model(fixture.model))
        let translated = try Self.json(gguf.configData), expected = try Self.json(original.configData)
        #expect(gguf.modelType == original.modelType)
        for (key, value) in expected where !GGUFArchitectureFixtures.notModelKeys.contains(key) {
            if fixture.lost.contains(key) {
                #expect(!Self.same(translated[key], value), "\(fixture.file): \(key) is listed as lost but survives")
                continue
            }
            #expect(Self.same(translated[key], value), "\(fixture.file): \(key) is \(translated[key] ?? "missing"), expected \(value)")
        }
    }

    /// Every Hugging Face tensor, under its name and shape, with its values:
    /// bit-exact where stored as F32, rounded to half where stored as F16, and
    /// Gemma's norms as (w + 1) − 1 in float32; the Q8_0 file within its step.
    @Test(arguments: GGUFArchitectureFixtures.cases)
    func tensorsAreTheHuggingFaceTensors(fixture: GGUFArchitectureFixtures.Case) throws {
        let gguf = try Checkpoint(location: GGUFArchitectureFixtures.file(fixture.file))
        let original = try Checkpoint(location: FixtureFiles.model(fixture.model))
        if fixture.headCopied {
            let embedding = try #require(original.tensorNames.first { $0.hasSuffix("word_embeddings.weight") })
            #expect(try gguf.tensor("lm_head.weight").floats() == (try gguf.tensor(embedding).floats()))
            #expect(gguf.tensorNames == (original.tensorNames + ["lm_head.weight"]).sorted(), "\(fixture.file): names differ")
        } else {
            #expect(gguf.tensorNames == original.tensorNames, "\(fixture.file): names differ")
        }
        for name in original.tensorNames {
            let expected = try original.tensor(name), slice = try gguf.tensor(name)
            #expect(slice.shape == expected.shape, "\(fixture.file) \(name): shape \(slice.shape), expected \(expected.shape)")
            guard slice.shape == expected.shape else { continue }
            let values = try slice.floats(), reference = try expected.floats()
            if fixture.file.contains("q8_0") {
                let scale = reference.map(abs).max() ?? 0
                let error = zip(values, reference).map { abs($0 - $1) }.max() ?? 0
                #expect(error <= scale / 100 + 1e-7, "\(fixture.file) \(name): off by \(error)")
                continue
            }
            let candidates: [(Float) -> Float] = [{ $0 }, { Float(Float16($0)) }, { ($0 + 1) - 1 }]
            let matches = candidates.contains { round in
                zip(values, reference).allSatisfy { $0.bitPattern == round($1).bitPattern }
            }
            #expect(matches, "\(fixture.file) \(name): values differ from the Hugging Face tensor")
        }
    }

    @Test func vocabularyComesFromTheConvertersTokenizerKeys() throws {
        for (file, model, pre) in [("../gguf/qwen3-f32.gguf", "qwen3-f32", "qwen2"), ("gemma3_text-f16.gguf", "gemma3_text-f32", "gpt-2")] {
            let checkpoint = try Checkpoint(location: GGUFArchitectureFixtures.file(file))
            let spec = try VocabularySpec(gguf: try #require(checkpoint.gguf))
            #expect(spec.model == .byteLevelBPE)
            #expect(spec.tokens.count == 512)
            #expect(spec.preTokenizer == pre)
            let json = try JSONSerialization.jsonObject(
                with: Data(contentsOf: FixtureFiles.model(model).appendingPathComponent("tokenizer.json"))) as! [String: Any]
            let merges = ((json["model"] as! [String: Any])["merges"] as! [Any]).map { $0 as? String ?? ($0 as! [String]).joined(separator: " ") }
            #expect(spec.merges == merges, "\(file): merges differ from tokenizer.json")
        }
    }

    /// Tensors built from several GGUF tensors export as float32 like any other.
    @Test func computedTensorsExpandByRowAndAsBytes() throws {
        let gguf = try Checkpoint(location: GGUFArchitectureFixtures.file("deepseek_v2-f16.gguf"))
        let slice = try gguf.tensor("model.layers.0.self_attn.kv_b_proj.weight")
        let values = try slice.floats()
        var row = [Float](repeating: 0, count: slice.shape[1])
        try row.withUnsafeMutableBufferPointer { try slice.expandRows([3], into: $0.baseAddress!) }
        #expect(row == Array(values[(3 * slice.shape[1])..<(4 * slice.shape[1])]))
        let bytes = try slice.storedBytes()
        #expect(bytes == values.withUnsafeBytes { Data($0) })
    }
}

/// Metadata the tensors contradict, or out of range, in the new architectures:
/// one error naming the file and the key, before any tensor table is built.
@Suite struct GGUFArchitectureBadMetadataTests {
    struct Mutant: Sendable, CustomTestStringConvertible {
        var file: String
        var key: String
        var value: Double
        /// What the message must name (the key unless the error is a tensor's).
        var names: String? = nil
        var testDescription: String { "\(file) \(key)=\(value)" }
    }

    static let mutants: [Mutant] = [
        Mutant(file: "../gguf/qwen3_moe-f32.gguf", key: "qwen3moe.expert_count", value: 5),
        Mutant(file: "../gguf/qwen3_moe-f32.gguf", key: "qwen3moe.expert_count", value: 0),
        Mutant(file: "../gguf/qwen3_moe-f32.gguf", key: "qwen3moe.expert_used_count", value: 0),
        Mutant(file: "../gguf/qwen3_moe-f32.gguf", key: "qwen3moe.expert_used_count", value: 9),
        Mutant(file: "../gguf/qwen3_moe-f32.gguf", key: "qwen3moe.expert_feed_forward_length", value: 17),
        Mutant(file: "../gguf/qwen3-f32.gguf", key: "qwen3.attention.key_length", value: 8),
        Mutant(file: "../gguf/olmoe-f32.gguf", key: "olmoe.attention.clamp_kqv", value: -1),
        Mutant(file: "gemma3_text-f16.gguf", key: "gemma3.attention.key_length", value: 32),
        Mutant(file: "phi3-f32.gguf", key: "phi3.rope.dimension_count", value: 13),
        Mutant(file: "phi3-f32.gguf", key: "phi3.attention.head_count_kv", value: 4),
        Mutant(file: "deepseek_v2-f16.gguf", key: "deepseek2.rope.dimension_count", value: 7),
        Mutant(file: "deepseek_v2-f16.gguf", key: "deepseek2.rope.dimension_count", value: 16),
        Mutant(file: "deepseek_v2-f16.gguf", key: "deepseek2.expert_gating_func", value: 3),
        Mutant(file: "deepseek_v2-f16.gguf", key: "deepseek2.leading_dense_block_count", value: 9),
        Mutant(file: "deepseek_v2-f16.gguf", key: "deepseek2.attention.kv_lora_rank", value: 17, names: "kv_lora_rank"),
        Mutant(file: "deepseek_v2-f16.gguf", key: "deepseek2.attention.value_length_mla", value: 11, names: "v_head_dim"),
        Mutant(file: "deepseek_v3-f16.gguf", key: "deepseek2.expert_group_count", value: 3),
        Mutant(file: "deepseek_v3-f16.gguf", key: "deepseek2.expert_group_used_count", value: 5),
        Mutant(file: "gpt_oss-f16.gguf", key: "gpt-oss.expert_feed_forward_length", value: 31),
        Mutant(file: "gpt_oss-f16.gguf", key: "gpt-oss.attention.sliding_window", value: 0),
        Mutant(file: "gemma2-f16.gguf", key: "gemma2.attention.sliding_window", value: 0),
        Mutant(file: "gemma2-f16.gguf", key: "gemma2.attn_logit_softcapping", value: 0),
        Mutant(file: "mixtral-f16.gguf", key: "llama.expert_used_count", value: 5),
        Mutant(file: "qwen2_moe-f16.gguf", key: "qwen2moe.expert_shared_feed_forward_length", value: 0),
        Mutant(file: "phi2-f16.gguf", key: "phi2.rope.dimension_count", value: 5),
        Mutant(file: "phi2_qkv-f16.gguf", key: "phi2.attention.head_count_kv", value: 2),
        Mutant(file: "stablelm-f16.gguf", key: "stablelm.rope.dimension_count", value: 18),
        Mutant(file: "cohere-f16.gguf", key: "command-r.logit_scale", value: 0),
        Mutant(file: "granite-f16.gguf", key: "granite.residual_scale", value: .nan),
        Mutant(file: "olmo-f16.gguf", key: "olmo.attention.layer_norm_epsilon", value: 1e-6),
        Mutant(file: "bloom-f16.gguf", key: "bloom.feed_forward_length", value: 100),
        Mutant(file: "bloom-f16.gguf", key: "bloom.attention.head_count", value: 5),
        Mutant(file: "falcon_new-f16.gguf", key: "falcon.attention.head_count_kv", value: 4),
        Mutant(file: "falcon-f16.gguf", key: "falcon.attention.layer_norm_epsilon", value: -1),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        let scratch = try ScratchDirectory()
        let file = scratch.path((mutant.file as NSString).lastPathComponent)
        var bytes = [UInt8](try Data(contentsOf: GGUFArchitectureFixtures.file(mutant.file)))
        try ConfigValidationTests.setMetadataNumber(&bytes, key: mutant.key, to: mutant.value)
        try Data(bytes).write(to: file)
        do {
            let checkpoint = try Checkpoint(location: file)
            // Tensors built from several GGUF tensors check their parts when built; expand all.
            for name in checkpoint.tensorNames { _ = try checkpoint.tensor(name).floats() }
            Issue.record("\(mutant.testDescription) opened with \(checkpoint.tensorNames.count) tensors")
        } catch let error as DroptraceError {
            #expect(error.path == file.path, "\(error)")
            #expect(error.message.contains(mutant.names ?? mutant.key), "does not name \(mutant.names ?? mutant.key): \(error)")
        }
    }
}

/// End to end: each GGUF scores like a safetensors model holding the same
/// weights under the Hugging Face fixture's config with the keys llama.cpp
/// drops set as the GGUF reader sets them; the float32 phi3 GGUF like
/// transformers on the original. Runs for the families the registry has.
@Suite struct GGUFArchitectureScoringTests {
    static func maxDifference(_ a: ModuleScores, _ b: ModuleScores) -> Double {
        let pairs = Array(zip(a.attention, b.attention)) + Array(zip(a.mlp, b.mlp)) + Array(zip(a.block, b.block))
        #expect(a.layerCount == b.layerCount)
        return pairs.map { $0.isNaN && $1.isNaN ? 0 : abs($0 - $1) }.max() ?? 0
    }

    @Test(arguments: GGUFArchitectureFixtures.cases)
    func scoresLikeTheSafetensorsModel(fixture: GGUFArchitectureFixtures.Case) throws {
        let gguf = try Checkpoint(location: GGUFArchitectureFixtures.file(fixture.file))
        guard ModelRegistry.supportedModelTypes.contains(gguf.modelType) else { return }
        let translated = try JSONSerialization.jsonObject(with: gguf.configData) as! [String: Any]
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel(fixture.model, as: "model")
        try BadInputTests().rewriteConfig(model) { config in
            for key in fixture.lost { config[key] = translated[key] }
        }
        var weights: [String: Data] = [:]
        for name in try Checkpoint(directory: model).tensorNames {
            weights[name] = try gguf.tensor(name).floats().withUnsafeBytes { Data($0) }
        }
        try BadInputTests().rewriteWeights(model) { entries in
            entries = entries.map { .init(name: $0.name, dtype: .float32, shape: $0.shape, bytes: weights[$0.name] ?? Data()) }
        }
        let sequences = FixtureFiles.jsonlSequences()
        let fromGGUF = try ImportanceScorer(model: try ModelRegistry.load(gguf)).score(sequences, calibrationPath: "fixture")
        let fromSafetensors = try ImportanceScorer(model: try EditedModel.load(model)).score(sequences, calibrationPath: "fixture")
        let difference = Self.maxDifference(fromGGUF, fromSafetensors)
        #expect(difference <= 1e-5, "\(fixture.file): max |gguf − safetensors| = \(difference)")
    }

    @Test func float32Phi3ScoresLikeTransformers() throws {
        let checkpoint = try Checkpoint(location: GGUFArchitectureFixtures.file("phi3-f32.gguf"))
        guard ModelRegistry.supportedModelTypes.contains("phi3") else { return }
        let scores = try ImportanceScorer(model: try ModelRegistry.load(checkpoint))
            .score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
        let reference = try #require(FixtureFiles.scores("phi3-f32", "jsonl", "float32_compute"))
        let difference = reference.maxDifference(
            attention: scores.attention, mlp: scores.mlp, block: scores.block, blockGap: scores.blockGap)
        #expect(difference <= 1e-5, "max |gguf − transformers| = \(difference)")
    }
}

/// transformers' config classes of some families default `pad_token_id` to
/// a token (Phi-3 32000, OLMo 2 / OLMoE 1, Gemma 3 0): a GGUF export without
/// the key did not load where that id is beyond the vocabulary (Phi-3's 512
/// tokens: "Padding_idx must be within num_embeddings"). Every synthesised
/// config names it: the file's `tokenizer.ggml.padding_token_id` when it is
/// a row of the embedding, else null.
@Suite struct GGUFPaddingIdTests {
    static let files = GGUFArchitectureFixtures.cases.map(\.file)
        + ["../gguf/llama-f32.gguf", "../gguf/gpt2-f16.gguf", "../gguf/gpt_neox-bf16.gguf", "../gguf/qwen2-f16.gguf"]

    /// The fixtures carry no padding id: null for every family.
    @Test(arguments: files)
    func padTokenIdIsNullWithoutOne(file: String) throws {
        let gguf = try Checkpoint(location: GGUFArchitectureFixtures.file(file))
        let config = try JSONSerialization.jsonObject(with: gguf.configData) as! [String: Any]
        #expect(config["pad_token_id"] is NSNull, "\(file): \(config["pad_token_id"] ?? "absent")")
    }

    /// llama.cpp's converter writes a Phi-4 (config sliding_window null) as
    /// phi3 with attention.sliding_window 0, which llama.cpp reads as no
    /// window: so does droptrace (it refused the file).
    @Test func phi3SlidingWindowZeroIsNoWindow() throws {
        var bytes = try GGUFBytes.fixture("gguf-arch/phi3-f32.gguf")
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("phi3.attention.sliding_window") + GGUFBytes.value(.uint32, GGUFBytes.le(UInt32(0))))
        let scratch = try ScratchDirectory()
        let url = scratch.path("phi4.gguf")
        try Data(bytes).write(to: url)
        let checkpoint = try Checkpoint(location: url)
        let config = try JSONSerialization.jsonObject(with: checkpoint.configData) as! [String: Any]
        #expect(config["sliding_window"] is NSNull, "\(config["sliding_window"] ?? "absent")")
        let model = try ModelRegistry.load(checkpoint)
        #expect(model.layerCount > 0)
    }

    /// A padding id inside the vocabulary is written; one beyond it is null.
    @Test(arguments: [(UInt32(7), 7 as Int?), (UInt32(511), 511), (UInt32(512), nil), (UInt32(32000), nil)])
    func padTokenIdComesFromTheFile(id: UInt32, expected: Int?) throws {
        var bytes = try GGUFBytes.fixture("gguf-arch/phi3-f32.gguf")
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("tokenizer.ggml.padding_token_id") + GGUFBytes.value(.uint32, GGUFBytes.le(id)))
        let scratch = try ScratchDirectory()
        let url = scratch.path("phi3.gguf")
        try Data(bytes).write(to: url)
        let config = try JSONSerialization.jsonObject(with: try Checkpoint(location: url).configData) as! [String: Any]
        if let expected {
            #expect((config["pad_token_id"] as? NSNumber)?.intValue == expected)
        } else {
            #expect(config["pad_token_id"] is NSNull, "\(config["pad_token_id"] ?? "absent")")
        }
    }
}

/// A GGUF vocabulary holding one token text at two ids maps the text to the
/// last of them, as llama.cpp's vocabulary loader does
/// (`token_to_id[word] = i` over the list in order); the first was used, and
/// every score computed on other tokens than llama.cpp feeds the model.
@Suite struct GGUFRepeatedTokenTests {
    /// The llama fixture's byte-level vocabulary with "Ġle" (id 509) copied
    /// to id 3 ("$", used by no merge): " le" is 509, before and after.
    @Test func byteLevelTextTakesTheLastId() throws {
        let checkpoint = try Checkpoint(location: FixtureFiles.root.appendingPathComponent("gguf/llama-f32.gguf"))
        var spec = try VocabularySpec(gguf: try #require(checkpoint.gguf))
        try #require(spec.tokens[509] == "Ġle" && spec.tokens[3] == "$")
        #expect(try Tokenizer(vocabulary: spec).encode(" le le") == [510, 509, 509])
        spec.tokens[3] = "Ġle"
        #expect(try Tokenizer(vocabulary: spec).encode(" le le") == [510, 509, 509])
        // "$" copied after itself, over the result of a merge no other merge
        // uses (that merge removed): the copy's id.
        spec.tokens[3] = "$"
        var merges = try #require(spec.merges)
        let parts = Set(merges.flatMap { $0.split(separator: " ").map(String.init) })
        let leaf = try #require(merges.lastIndex { !parts.contains($0.replacingOccurrences(of: " ", with: "")) })
        let free = try #require(spec.tokens.firstIndex(of: merges[leaf].replacingOccurrences(of: " ", with: "")))
        merges.remove(at: leaf)
        spec.merges = merges
        try #require(free > 3)
        #expect(try Tokenizer(vocabulary: spec).encode("$$") == [510, 3, 3])
        spec.tokens[free] = "$"
        #expect(try Tokenizer(vocabulary: spec).encode("$$") == [510, free, free])
    }

    /// SentencePiece pieces and byte tokens alike (llama.cpp's byte fallback
    /// looks `<0x41>` up by its text too).
    @Test func sentencePieceTextTakesTheLastId() throws {
        var tokens = ["<unk>", "<s>", "</s>", "\u{2581}", "a", "\u{2581}a", "\u{2581}a"]
        var types: [VocabularySpec.TokenType] = [.unknown, .control, .control, .normal, .normal, .normal, .normal]
        let bytes = (0..<256).map { "<0x" + ($0 < 16 ? "0" : "") + String($0, radix: 16, uppercase: true) + ">" }
        tokens += bytes + ["<0x41>"]
        types += Array(repeating: .byte, count: 257)
        let spec = VocabularySpec(
            model: .sentencePiece, tokens: tokens, scores: tokens.indices.map { -Float($0) }, tokenTypes: types,
            bosID: 1, eosID: 2, unknownID: 0, addBOS: false)
        let tokenizer = try Tokenizer(vocabulary: spec)
        #expect(try tokenizer.encode("a a") == [6, 6])
        #expect(try tokenizer.encode("A") == [3, tokens.count - 1])
    }

    /// A SentencePiece vocabulary of `pieces` beside the unknown, control and byte tokens.
    static func sentencePiece(_ pieces: [String], scores: [Float]? = nil) -> VocabularySpec {
        let bytes = (0..<256).map { "<0x" + ($0 < 16 ? "0" : "") + String($0, radix: 16, uppercase: true) + ">" }
        let tokens = ["<unk>", "<s>", "</s>"] + pieces + bytes
        let types: [VocabularySpec.TokenType] = [.unknown, .control, .control] + Array(repeating: .normal, count: pieces.count)
            + Array(repeating: .byte, count: 256)
        return VocabularySpec(
            model: .sentencePiece, tokens: tokens, scores: scores ?? tokens.indices.map { -Float($0) }, tokenTypes: types,
            bosID: 1, eosID: 2, unknownID: 0, addBOS: false)
    }

    /// Deriving the merges looked up both halves of every cut of every
    /// piece: a piece of 300,000 bytes took half a minute. Cuts into lengths
    /// no piece has are skipped (the same merges); pieces whose halves are
    /// still too many to look up (every length from 1 to 1,200) are refused,
    /// as are NaN scores, which give the merges no order.
    @Test func longPiecesAreCheapOrRefused() throws {
        let start = Date()
        let long = try Tokenizer(vocabulary: Self.sentencePiece(["\u{2581}", "a", "\u{2581}a", String(repeating: "a", count: 300_000)]))
        #expect(try long.encode("a a") == [5, 5] && Date().timeIntervalSince(start) < 10)
        let every = Self.sentencePiece((1...1_200).map { String(repeating: "a", count: $0) })
        let error = #expect(throws: DroptraceError.self) { try Tokenizer(vocabulary: every) }
        #expect(error?.message.contains("too long to derive merges from") == true, "\(String(describing: error))")
        var scores = Self.sentencePiece(["\u{2581}", "a"]).scores!
        scores[4] = .nan
        let nan = #expect(throws: DroptraceError.self) { try Tokenizer(vocabulary: Self.sentencePiece(["\u{2581}", "a"], scores: scores)) }
        #expect(nan?.message.contains("token 4's score (tokenizer.ggml.scores) is NaN") == true, "\(String(describing: nan))")
    }

    /// A piece typed UNUSED is still built from its halves: transformers'
    /// converter derives the merges from every piece of the vocabulary
    /// (`generate_merges`), so tokenizers 0.23.3 on the converted file gives
    /// "▁the" for " the" (checked on a trained SentencePiece model whose
    /// "▁the" was marked UNUSED); droptrace merged only NORMAL pieces.
    @Test func unusedPiecesAreMergedInto() throws {
        var tokens = ["<unk>", "<s>", "</s>", "\u{2581}", "t", "h", "e", "\u{2581}t", "he", "\u{2581}the"]
        var types: [VocabularySpec.TokenType] = [.unknown, .control, .control] + Array(repeating: .normal, count: 6) + [.unused]
        let bytes = (0..<256).map { "<0x" + ($0 < 16 ? "0" : "") + String($0, radix: 16, uppercase: true) + ">" }
        tokens += bytes
        types += Array(repeating: .byte, count: 256)
        let spec = VocabularySpec(
            model: .sentencePiece, tokens: tokens, scores: tokens.indices.map { -Float($0) }, tokenTypes: types,
            bosID: 1, eosID: 2, unknownID: 0, addBOS: false)
        #expect(try Tokenizer(vocabulary: spec).encode("the") == [9])
    }
}

/// Tensors the new architectures' tables could read two ways: refused, naming them.
@Suite struct GGUFArchitectureAmbiguousTensorTests {
    static func refusal(_ fixture: String, adding name: String, dimensions: [Int]) throws -> String {
        let bytes = GGUFBytes.addingTensor(
            try GGUFBytes.fixture("gguf-arch/\(fixture)"), name: name, dimensions: dimensions,
            values: Array(repeating: 0.5, count: dimensions.reduce(1, *)))
        return try GGUFBytes.openingError(bytes)?.message ?? "(read)"
    }

    /// A split projection beside phi-2's fused one: the file would say two things of q_proj.
    @Test func splitAndFusedAttentionTogetherAreRefused() throws {
        let message = try Self.refusal("phi2_qkv-f16.gguf", adding: "blk.0.attn_q.weight", dimensions: [48, 48])
        #expect(message.contains("'blk.0.attn_q.weight'") && message.contains("'blk.0.attn_qkv.weight'"), "\(message)")
    }

    /// StableLM's block kind comes from ffn_norm's presence; one block unlike the others has no config.
    @Test func aBlockOfAnotherKindIsRefused() throws {
        let message = try Self.refusal("stablelm_parallel-f16.gguf", adding: "blk.0.ffn_norm.weight", dimensions: [48])
        #expect(message.contains("1 of 4 blocks have tensor ffn_norm.weight"), "\(message)")
    }
}

/// Apertus' xIELU parameters come from per-layer metadata arrays: one finite FLOAT32 per block.
@Suite struct GGUFLayerValueTests {
    static func refusal(replacing key: String, with value: [UInt8]) throws -> String {
        var bytes = try GGUFBytes.fixture("gguf-arch/apertus-f16.gguf")
        try GGUFBytes.replaceValue(&bytes, key: key, with: value)
        return try GGUFBytes.openingError(bytes)?.message ?? "(read)"
    }

    static func floats(_ values: [Float]) -> [UInt8] {
        GGUFBytes.array(.float32, count: values.count, values.flatMap { GGUFBytes.le($0.bitPattern) })
    }

    @Test func anArrayOfAnotherLengthIsRefused() throws {
        let message = try Self.refusal(replacing: "xielu.beta", with: Self.floats([0.5, 0.5, 0.5]))
        #expect(message == "metadata key 'xielu.beta' holds 3 per-layer values, but the model has 4 blocks (block_count)")
    }

    @Test func aValueThatIsNotFiniteIsRefused() throws {
        let message = try Self.refusal(replacing: "xielu.alpha_p", with: Self.floats([0.5, .nan, 0.5, 0.5]))
        #expect(message == "metadata key 'xielu.alpha_p' must hold finite numbers")
    }

    /// llama.cpp's get_key_or_arr also takes one value for every block.
    @Test func oneValueStandsForEveryBlock() throws {
        let scratch = try ScratchDirectory()
        var bytes = try GGUFBytes.fixture("gguf-arch/apertus-f16.gguf")
        try GGUFBytes.replaceValue(&bytes, key: "xielu.eps", with: GGUFBytes.value(.float32, GGUFBytes.le(Float(-1e-6).bitPattern)))
        let checkpoint = try GGUFBytes.open(bytes, in: scratch)
        for layer in 0..<4 {
            #expect(try checkpoint.tensor("model.layers.\(layer).mlp.act_fn.eps").floats() == [Float(-1e-6)])
        }
    }
}

import Architectures
@testable import CheckpointIO
import Dropping
import Foundation
import Scoring
import Testing
import Tokenization

/// The GGUF fixtures (Fixtures/gguf, written by scripts/fixtures/make_gguf_fixtures.py)
/// and their references: values dequantised by gguf-py, scores by transformers.
enum GGUFFixtures {
    static let directory = FixtureFiles.root.appendingPathComponent("gguf")

    static func file(_ name: String) -> URL { directory.appendingPathComponent(name) }

    static let reference: [String: Any] = {
        let data = try! Data(contentsOf: directory.appendingPathComponent("reference.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    static var fileNames: [String] { (reference["files"] as! [String: Any]).keys.sorted() }

    static func entry(_ name: String) -> [String: Any] { (reference["files"] as! [String: Any])[name] as! [String: Any] }

    static func scores(_ name: String) -> [String: [Double]] {
        (entry(name)["scores"] as! [String: [Any]]).mapValues { $0.map { ($0 as! NSNumber).doubleValue } }
    }
}

@Suite struct GGUFReadingTests {
    @Test(arguments: GGUFFixtures.fileNames)
    func tensorsDequantiseLikeGGUFPy(file: String) throws {
        let checkpoint = try Checkpoint(location: GGUFFixtures.file(file))
        let tensors = GGUFFixtures.entry(file)["tensors"] as! [String: [String: Any]]
        #expect(tensors.count > 10)
        for (name, expected) in tensors {
            let slice = try checkpoint.tensor(name)
            let type = expected["type"] as! String
            #expect(slice.dtype.rawValue == type, "\(file) \(name)")
            let shape = (expected["shape"] as! [NSNumber]).map(\.intValue)
            #expect(slice.shape == shape, "\(file) \(name): shape \(slice.shape), expected \(shape)")
            let values = try slice.floats()
            let rowWidth = shape.count == 2 ? shape[1] : values.count
            let first = (expected["first_row"] as! [NSNumber]).map(\.floatValue)
            let last = (expected["last_row"] as! [NSNumber]).map(\.floatValue)
            #expect(Array(values.prefix(first.count)) == first, "\(file) \(name) (\(type)): first row differs")
            let lastStart = values.count - rowWidth
            #expect(Array(values[lastStart..<(lastStart + last.count)]) == last, "\(file) \(name) (\(type)): last row differs")
            let sum = values.reduce(0.0) { $0 + Double($1) }
            let sumAbs = values.reduce(0.0) { $0 + Double(abs($1)) }
            let expectedSum = (expected["sum"] as! NSNumber).doubleValue
            let expectedAbs = (expected["sum_abs"] as! NSNumber).doubleValue
            #expect(abs(sum - expectedSum) <= 1e-9 * max(expectedAbs, 1), "\(file) \(name): sum \(sum) vs \(expectedSum)")
            #expect(abs(sumAbs - expectedAbs) <= 1e-9 * max(expectedAbs, 1), "\(file) \(name): sum |x| \(sumAbs) vs \(expectedAbs)")
            // Embedding lookups expand single rows; they must agree with the whole tensor.
            if shape.count == 2, slice.storedOrder != .transposed {
                var row = [Float](repeating: 0, count: rowWidth)
                try row.withUnsafeMutableBufferPointer { try slice.expandRows([shape[0] - 1], into: $0.baseAddress!) }
                #expect(row == Array(values[lastStart...]), "\(file) \(name): expandRows differs from floats()")
            }
        }
    }

    @Test func everyQuantisationTypeIsCovered() {
        var types = Set<String>()
        for file in GGUFFixtures.fileNames {
            for (_, tensor) in GGUFFixtures.entry(file)["tensors"] as! [String: [String: Any]] {
                types.insert(tensor["type"] as! String)
            }
        }
        #expect(types == ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"])
    }

    @Test(arguments: GGUFFixtures.fileNames)
    func scoresMatchTransformers(file: String) throws {
        let checkpoint = try Checkpoint(location: GGUFFixtures.file(file))
        let scores = try ImportanceScorer(model: try ModelRegistry.load(checkpoint))
            .score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
        let expected = GGUFFixtures.scores(file)
        for (kind, values) in [("attention", scores.attention), ("mlp", scores.mlp), ("block", scores.block)] {
            let reference = try #require(expected[kind])
            #expect(values.count == reference.count)
            let difference = zip(values, reference).map { abs($0 - $1) }.max() ?? .infinity
            #expect(difference <= 1e-4, "\(file) \(kind): max |droptrace − transformers| = \(difference)")
        }
        #expect(Set(scores.attention.map { ($0 * 1e6).rounded() }).count > 1, "\(file): attention scores all equal")
    }

    /// llama.cpp permutes Q and K rows and stores Llama 3 scaling as rope_freqs;
    /// undone, the float32 GGUF must score like the safetensors original.
    @Test func llamaGGUFScoresLikeItsSafetensorsOriginal() throws {
        let checkpoint = try Checkpoint(location: GGUFFixtures.file("llama-f32.gguf"))
        let scores = try ImportanceScorer(model: try ModelRegistry.load(checkpoint))
            .score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
        let reference = try #require(FixtureFiles.scores("llama-f32", "jsonl", "float32_compute"))
        let difference = reference.maxDifference(
            attention: scores.attention, mlp: scores.mlp, block: scores.block, blockGap: scores.blockGap)
        #expect(difference <= 1e-5, "max |gguf − safetensors reference| = \(difference)")
    }

    @Test func configurationComesFromMetadataAndTensors() throws {
        func config(_ file: String) throws -> [String: Any] {
            let checkpoint = try Checkpoint(location: GGUFFixtures.file(file))
            return try JSONSerialization.jsonObject(with: checkpoint.configData) as! [String: Any]
        }
        let qwen = try config("qwen2-f16.gguf")
        #expect(qwen["model_type"] as? String == "qwen2")
        #expect(qwen["tie_word_embeddings"] as? Bool == true)
        #expect(qwen["num_key_value_heads"] as? Int == 2)
        #expect(qwen["vocab_size"] as? Int == 512)
        let neox = try config("gpt_neox-bf16.gguf")
        #expect(neox["use_parallel_residual"] as? Bool == true)
        #expect((neox["rope_parameters"] as? [String: Any])?["partial_rotary_factor"] as? Double == 0.25)
        let llama = try config("llama-f32.gguf")
        #expect(llama["tie_word_embeddings"] as? Bool == false)
        #expect(((llama["rope_parameters"] as? [String: Any])?["frequency_factors"] as? [Any])?.count == 6)
        let gpt2 = try config("gpt2-f16.gguf")
        #expect(gpt2["n_positions"] as? Int == 128)
        #expect(gpt2["n_inner"] as? Int == 96)
    }

    @Test func directoryHoldingOneGGUFFileOpensIt() throws {
        let scratch = try ScratchDirectory()
        try FileManager.default.copyItem(at: GGUFFixtures.file("qwen2-f16.gguf"), to: scratch.path("model.gguf"))
        let checkpoint = try Checkpoint(location: scratch.url)
        #expect(checkpoint.layout.format == .gguf)
        #expect(checkpoint.modelType == "qwen2")
    }

    @Test func expectedLengthComesFromTheHeader() throws {
        let original = GGUFFixtures.file("llama-w64-q.gguf")
        let size = try FileManager.default.attributesOfItem(atPath: original.path)[.size] as! Int
        #expect(try GGUFCheckpoint.expectedLength(path: original.path) == size)
        let scratch = try ScratchDirectory()
        let truncated = scratch.path("partial.gguf")
        try Data(contentsOf: original).prefix(size - 1000).write(to: truncated)
        #expect(try GGUFCheckpoint.expectedLength(path: truncated.path) == size)
        try Data(contentsOf: original).prefix(100).write(to: truncated)
        #expect(try GGUFCheckpoint.expectedLength(path: truncated.path) == nil)
    }

    @Test func quantisedTensorsExportAsFloat32Safetensors() throws {
        let checkpoint = try Checkpoint(location: GGUFFixtures.file("llama-w64-q.gguf"))
        let slice = try checkpoint.tensor("model.layers.0.self_attn.q_proj.weight")
        let entry = SafetensorsWriter.Entry(slice)
        #expect(entry.dtype == .float32)
        #expect(try entry.bytes() == slice.floats().withUnsafeBytes { Data($0) })
    }

    /// A dropped model from a quantised GGUF exports as plain safetensors with
    /// the same perplexity, and takes none of the unrelated files lying beside the GGUF.
    @Test func droppedGGUFModelExportsAlone() throws {
        let model = try ModelRegistry.load(try Checkpoint(location: GGUFFixtures.file("llama-w64-q.gguf")))
        let plan = DropPlan(attention: [1])
        let scratch = try ScratchDirectory()
        let export = scratch.path("export")
        try DroppedModelExport.write(model: model, plan: plan, to: export)
        #expect(try FileManager.default.contentsOfDirectory(atPath: export.path).sorted() == ["config.json", "model.safetensors"])
        let windows = FixtureFiles.jsonlSequences()
        let expected = try LanguageModelLoss.evaluate(model: model, plan: plan, windows: windows, sourcePath: "eval")
        let exported = try ModelRegistry.load(try Checkpoint(location: export))
        let loss = try LanguageModelLoss.evaluate(model: exported, plan: .none, windows: windows, sourcePath: "eval")
        #expect(abs(loss.perplexity / expected.perplexity - 1) < 1e-6)
    }

    @Test func scoreCommandTakesASingleGGUFFile() throws {
        let scratch = try ScratchDirectory()
        let result = try DroptraceCommand.run([
            "score", GGUFFixtures.file("llama-w256-k.gguf").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", scratch.path("scores.h5").path, "--json", "--threads", "2",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let scores = json["scores"] as! [String: [Double]]
        let reference = GGUFFixtures.scores("llama-w256-k.gguf")
        for kind in ["attention", "mlp", "block"] {
            let difference = zip(scores[kind]!, reference[kind]!).map { abs($0 - $1) }.max() ?? .infinity
            #expect(difference <= 1e-4, "\(kind): \(difference)")
        }
        #expect(FileManager.default.fileExists(atPath: scratch.path("scores.h5").path))
    }
}

/// Damaged and unsupported GGUF files: one-line errors naming the file.
@Suite struct GGUFBadInputTests {
    func damagedCopy(_ name: String, in scratch: ScratchDirectory, _ damage: (inout Data) -> Void) throws -> URL {
        var bytes = try Data(contentsOf: GGUFFixtures.file(name))
        damage(&bytes)
        let url = scratch.path(name)
        try bytes.write(to: url)
        return url
    }

    func expectError(_ url: URL, mentioning words: [String]) {
        do {
            _ = try Checkpoint(location: url)
            Issue.record("\(url.lastPathComponent) opened without error")
        } catch {
            let message = "\(error)"
            #expect(message.contains(url.path), "error does not name the file: \(message)")
            #expect(!message.contains("\n"), "error is not one line: \(message)")
            for word in words { #expect(message.contains(word), "error does not mention '\(word)': \(message)") }
        }
    }

    @Test func truncatedFile() throws {
        let scratch = try ScratchDirectory()
        let url = try damagedCopy("qwen2-f16.gguf", in: scratch) { $0 = $0.prefix($0.count - 4096) }
        expectError(url, mentioning: ["truncated", "blk."])
        let header = try damagedCopy("qwen2-f16.gguf", in: scratch) { $0 = $0.prefix(200) }
        expectError(header, mentioning: ["truncated"])
    }

    @Test func wrongMagic() throws {
        let scratch = try ScratchDirectory()
        let url = try damagedCopy("qwen2-f16.gguf", in: scratch) { $0.replaceSubrange(0..<4, with: Data("GGML".utf8)) }
        expectError(url, mentioning: ["not a GGUF file", "GGML"])
    }

    @Test func versionOneIsRefused() throws {
        let scratch = try ScratchDirectory()
        let url = try damagedCopy("qwen2-f16.gguf", in: scratch) { $0.replaceSubrange(4..<8, with: [1, 0, 0, 0]) }
        expectError(url, mentioning: ["version 1", "not supported"])
    }

    @Test func bigEndianIsRefused() throws {
        let scratch = try ScratchDirectory()
        let url = try damagedCopy("qwen2-f16.gguf", in: scratch) { $0.replaceSubrange(4..<8, with: [0, 0, 0, 3]) }
        expectError(url, mentioning: ["big-endian"])
    }

    @Test func unsupportedQuantisationType() throws {
        expectError(GGUFFixtures.file("unsupported-iq2_xxs.gguf"), mentioning: ["token_embd.weight", "IQ2_XXS", "cannot read"])
    }

    @Test func unsupportedArchitecture() throws {
        let scratch = try ScratchDirectory()
        let url = try damagedCopy("gpt2-f16.gguf", in: scratch) { bytes in
            // "gpt2" → "gpt9" in general.architecture's value (same length).
            let key = Data("general.architecture".utf8)
            let at = bytes.range(of: key)!.upperBound + 4 + 8
            bytes[at + 3] = UInt8(ascii: "9")
        }
        expectError(url, mentioning: ["gpt9", "not supported"])
    }

    /// llama.cpp refuses a metadata key given twice (gguf-py keeps the first):
    /// no value is taken silently.
    @Test func repeatedMetadataKeyIsRefused() throws {
        let scratch = try ScratchDirectory()
        let url = try damagedCopy("qwen2-f16.gguf", in: scratch) { bytes in
            let key = Data("qwen2.rope.dimension_count".utf8)
            bytes.replaceSubrange(bytes.range(of: key)!, with: Data("qwen2.attention.head_count".utf8))
        }
        expectError(url, mentioning: ["qwen2.attention.head_count", "given twice"])
    }

    /// Llama's Q and K rows are un-permuted per head; a bias (or any other
    /// tensor of those projections) whose rows are not whole heads of an even
    /// width is refused instead of dividing by a zero half-width.
    @Test func rotaryRowsThatAreNotWholeHeadsAreRefused() throws {
        let scratch = try ScratchDirectory()
        for rows in [2, 6, 1] {
            let url = try damagedCopy("llama-f32.gguf", in: scratch) { bytes in
                // blk.0.attn_norm.weight (48 values) → blk.0.attn_q.bias_mask (same name length) of `rows` values.
                let name = bytes.range(of: Data("blk.0.attn_norm.weight".utf8))!
                bytes.replaceSubrange(name, with: Data("blk.0.attn_q.bias_mask".utf8))
                let dimension = name.upperBound + 4
                bytes.replaceSubrange(dimension..<(dimension + 8), with: withUnsafeBytes(of: UInt64(rows).littleEndian) { Data($0) })
                // The later tensors move up, as llama.cpp lays them out.
                var edited = [UInt8](bytes)
                GGUFBytes.layOutTensors(&edited)
                bytes = Data(edited)
            }
            expectError(url, mentioning: ["blk.0.attn_q.bias_mask", "\(rows) rows", "not whole heads"])
        }
    }

    /// "blk.000000.attn_q.weight" reads as block 0 to `Int`: a second tensor
    /// for blk.0.attn_q.weight's place, replacing it or not by file order.
    @Test func blockNumbersLlamaCppDoesNotWriteAreRefused() throws {
        #expect(GGUFTensorNames.blockNumber("blk.12.attn_q.weight") == 12)
        for name in ["blk.012.attn_q.weight", "blk.+2.attn_q.weight", "blk.-0.attn_q.weight", "blk.-1.attn_q.weight"] {
            #expect(GGUFTensorNames.blockNumber(name) == nil && GGUFTensorNames.hasMisspelledBlockNumber(name), "\(name)")
        }
        #expect(!GGUFTensorNames.hasMisspelledBlockNumber("blk.x.attn_q.weight"))
        let scratch = try ScratchDirectory()
        let url = try damagedCopy("llama-f32.gguf", in: scratch) { bytes in
            // Same length, same shape [48, 48].
            bytes.replaceSubrange(bytes.range(of: Data("blk.0.attn_output.weight".utf8))!, with: Data("blk.000000.attn_q.weight".utf8))
        }
        expectError(url, mentioning: ["blk.000000.attn_q.weight", "block number"])
    }

    @Test func commandLineErrorIsOneLine() throws {
        let scratch = try ScratchDirectory()
        let url = try damagedCopy("llama-w64-q.gguf", in: scratch) { $0 = $0.prefix($0.count / 2) }
        let result = try DroptraceCommand.run([
            "score", url.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("s.h5").path,
        ])
        #expect(result.status != 0)
        let errors = result.stderr.split(separator: "\n").filter { $0.contains("error") }
        #expect(errors.count == 1 && errors[0].contains(url.path) && errors[0].contains("truncated"), "\(result.stderr)")
    }

    @Test func safetensorsRefusesGGMLBlockTypes() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("model.safetensors")
        let block = SafetensorsWriter.Entry(name: "w", dtype: .q8_0, shape: [1, 32], bytes: Data(count: 34))
        try SafetensorsWriter.write([block], to: url)
        do {
            _ = try SafetensorsFile(path: url.path)
            Issue.record("a safetensors file with dtype Q8_0 was accepted")
        } catch {
            #expect("\(error)".contains("unsupported dtype Q8_0"), "\(error)")
        }
    }
}

@Suite struct GGUFVocabularyTests {
    @Test func vocabularyComesFromTokenizerMetadata() throws {
        let checkpoint = try Checkpoint(location: GGUFFixtures.file("llama-f32.gguf"))
        let spec = try VocabularySpec(gguf: try #require(checkpoint.gguf))
        #expect(spec.model == .byteLevelBPE)
        #expect(spec.tokens.count == 512)
        #expect(spec.preTokenizer == "llama-bpe")
        #expect(spec.bosID == 510 && spec.eosID == 511)
        #expect(spec.addBOS && !spec.addEOS)
        #expect(spec.tokenTypes?[510] == .control)
        #expect(spec.tokenTypes?[0] == .normal)
        // Same merges as the tokenizer.json the file was made from.
        let json = try JSONSerialization.jsonObject(
            with: Data(contentsOf: FixtureFiles.model("llama-f32").appendingPathComponent("tokenizer.json"))) as! [String: Any]
        let merges = ((json["model"] as! [String: Any])["merges"] as! [Any]).map { $0 as? String ?? ($0 as! [String]).joined(separator: " ") }
        #expect(spec.merges == merges)
    }
}

extension GGUFVocabularyTests {
    /// A token_type array one entry longer than the tokens, that entry out of
    /// range (llama.cpp's types are 1...6): dropped before the count was
    /// compared, it lined the array up with the tokens, and every type after
    /// it went to the token before its own. Every entry is checked, then the count.
    @Test(arguments: [0, 7, -1] as [Int32])
    func tokenTypeOutOfRangeIsNotDroppedToFitTheTokens(extra: Int32) throws {
        let scratch = try ScratchDirectory()
        var bytes = [UInt8](try Data(contentsOf: GGUFFixtures.file("llama-f32.gguf")))
        // Array type, element type int32, count, values.
        let typeOffset = try ConfigValidationTests.metadataValueOffset(bytes, key: "tokenizer.ggml.token_type")
        #expect(bytes[typeOffset] == 9 && bytes[typeOffset + 4] == 5)
        let countOffset = typeOffset + 8
        let count = bytes[countOffset..<(countOffset + 8)].reversed().reduce(0) { $0 << 8 | Int($1) }
        #expect(count == 512)
        let values = Array(bytes[(countOffset + 8)..<(countOffset + 8 + 4 * count)])
        let inserted = withUnsafeBytes(of: extra.littleEndian) { Array($0) }
        let replacement = ConfigValidationTests.littleEndian(UInt64(count + 1)) + values[..<40] + inserted + values[40...]
        try ConfigValidationTests.spliceMetadata(&bytes, at: countOffset, length: 8 + 4 * count, with: replacement)
        let url = scratch.path("token-types.gguf")
        try Data(bytes).write(to: url)
        let gguf = try #require(try Checkpoint(location: url).gguf)
        #expect {
            try VocabularySpec(gguf: gguf)
        } throws: { error in
            "\(error)" == "\(url.path): 'tokenizer.ggml.token_type' must hold one token type (1...6) per token"
        }
    }
}

/// Tokenizers built from GGUF vocabularies against the Python `tokenizers`
/// library on the original tokenizer.json. Enabled together with
/// `Tokenizer(vocabulary:)`, which this branch only declares.
@Suite("GGUF vocabulary tokenizes like tokenizer.json")
struct GGUFVocabularyTokenizationTests {
    static let reference: [String: Any] = {
        let data = try! Data(contentsOf: FixtureFiles.root.appendingPathComponent("tokenizers/reference.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    @Test(arguments: GGUFFixtures.fileNames)
    func idsMatchTheTokenizersLibrary(file: String) throws {
        let flavour = GGUFFixtures.entry(file)["tokenizer"] as! String
        let checkpoint = try Checkpoint(location: GGUFFixtures.file(file))
        let tokenizer = try CheckpointTokenizer.load(for: checkpoint, purpose: "test", requestedBy: file)
        let cases = Self.reference[flavour] as! [String: [String: [Int]]]
        for (textFile, expected) in cases {
            let text = try String(contentsOf: FixtureFiles.root.appendingPathComponent("text/\(textFile)"), encoding: .utf8)
            #expect(try tokenizer.encode(text) == expected["ids_with_special"], "\(file) \(textFile) with special tokens")
            #expect(try tokenizer.encode(text, addSpecialTokens: false) == expected["ids_without_special"], "\(file) \(textFile)")
        }
    }
}

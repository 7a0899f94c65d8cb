import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Malformed, hostile and changing weight files: every size is checked before
/// it is used, overlapping tensors and non-regular files are refused, buffers
/// of other dtypes are ignored, and a file changed while it is read gives an
/// error instead of SIGBUS or mixed weights.
@Suite struct CheckpointFormatTests {
    static let formats = FixtureFiles.root.appendingPathComponent("formats")

    /// The error `body` throws, which must be a DroptraceError.
    func failure(_ body: () throws -> Void) -> DroptraceError? {
        do {
            try body()
        } catch let error as DroptraceError {
            return error
        } catch {
            Issue.record("not a DroptraceError: \(error)")
            return nil
        }
        Issue.record("expected an error")
        return nil
    }

    /// One shard given as the checkpoint is named as a shard (it was read as
    /// a model lacking most layers, blamed on config.json); a file of one
    /// shard (`-00001-of-00001`) is a whole model.
    @Test func oneShardOfSeveralIsNamedAsSuch() throws {
        let shard = FixtureFiles.model("llama-sharded").appendingPathComponent("model-00002-of-00003.safetensors")
        let error = failure { _ = try Checkpoint(location: shard) }
        #expect(error == DroptraceError("is one of 3 shards of a checkpoint, not a model: give the checkpoint's directory",
                                        path: shard.path))
        #expect(CheckpointLayout.shardCount("model-00001-of-00001.safetensors") == 1)
        #expect(CheckpointLayout.shardCount("model-of-3.safetensors") == nil)
        #expect(CheckpointLayout.shardCount("pytorch_model-00002-of-00010.bin") == 10)
    }

    /// A GGUF file without the extension (an Ollama blob, sha256-<digest>)
    /// is read by its magic, as llama.cpp reads any path.
    @Test func aGGUFFileIsKnownByItsMagic() throws {
        let scratch = try ScratchDirectory()
        let blob = scratch.path("sha256-0123abcd")
        try FileManager.default.copyItem(at: FixtureFiles.root.appendingPathComponent("gguf/llama-f32.gguf"), to: blob)
        #expect(try Checkpoint(location: blob).gguf != nil)
        let other = try scratch.write("not a model", to: "notes")
        #expect(failure { _ = try Checkpoint(location: other) }?.message.hasPrefix("not a checkpoint") == true)
    }

    /// Training and release formats transformers does not load as a model
    /// are named with their conversion, not as a folder without weights.
    @Test(arguments: [
        (["config.json", "pytorch_model_fsdp.bin"], "holds accelerate's FSDP state dict (pytorch_model_fsdp.bin)"),
        (["consolidated.00.pth", "params.json", "tokenizer.model"], "holds Meta's original checkpoint format (consolidated.00.pth, params.json)"),
    ])
    func unreadableFormatsAreNamed(files: [String], message: String) throws {
        let scratch = try ScratchDirectory()
        let directory = scratch.path("checkpoint")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for name in files { try Data("{}".utf8).write(to: directory.appendingPathComponent(name)) }
        let error = failure { _ = try Checkpoint(location: directory) }
        #expect(error?.message.hasPrefix(message) == true, "\(String(describing: error))")
    }

    /// A safetensors file with `header` (JSON) and `dataLength` zero bytes of data.
    func safetensors(_ header: String, dataLength: Int, in scratch: ScratchDirectory, name: String = "model.safetensors") throws -> URL {
        var bytes = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(Data(header.utf8))
        bytes.append(Data(count: dataLength))
        let url = scratch.path(name)
        try bytes.write(to: url)
        return url
    }

    // MARK: - Sizes from the file

    @Test(arguments: ["shape-2p62.safetensors", "shape-product-overflow.safetensors"])
    func overflowingSafetensorsShapesAreRefused(file: String) throws {
        let url = Self.formats.appendingPathComponent("crashers/\(file)")
        let error = failure { _ = try SafetensorsFile(path: url.path) }
        #expect(error?.message.contains("do not fit its shape") == true, "\(String(describing: error))")
        // Series discovery reads the same header: it must not trap either.
        #expect(try SafetensorsFile.expectedLength(path: url.path) != nil)
    }

    /// Headers within the format's 100 MB but beyond any checkpoint's
    /// (1.35 million empty tensors: minutes and gigabytes to read), and GGUF
    /// files listing more tensors or keys than any model, are refused
    /// before they are parsed.
    @Test func absurdlyLargeHeadersAreRefusedUnparsed() throws {
        let scratch = try ScratchDirectory()
        let header = "{" + String(repeating: " ", count: (16 << 20) + 8) + "}"
        let url = try safetensors(header, dataLength: 0, in: scratch)
        let error = failure { _ = try SafetensorsFile(path: url.path) }
        #expect(error?.message == "safetensors header of \(header.utf8.count) bytes is longer than the 16 MiB droptrace reads "
                    + "(a checkpoint's header holds ~150 bytes a tensor, some thousands of them)", "\(String(describing: error))")
        for (tensors, keys, words) in [(70_000, 0, "lists 70000 tensors"), (0, 70_000, "lists 70000 metadata keys")] {
            var bytes = Data("GGUF".utf8)
            for value in [UInt32(3)] { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
            for value in [UInt64(tensors), UInt64(keys)] { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
            bytes.append(Data(count: 32 * 70_000))
            let gguf = scratch.path("many-\(tensors).gguf")
            try bytes.write(to: gguf)
            let error = failure { _ = try GGUFFile(path: gguf.path) }
            #expect(error?.message == "\(words), more than the 65536 droptrace reads in one GGUF file", "\(String(describing: error))")
        }
    }

    @Test func hostileSafetensorsHeadersGiveOneLineErrors() throws {
        let scratch = try ScratchDirectory()
        let cases: [(header: String, data: Int, words: [String])] = [
            (#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 9223372036854775807]}}"#, 8, ["do not fit"]),
            (#"{"w": {"dtype": "F32", "shape": [2, "x"], "data_offsets": [0, 8]}}"#, 8, ["malformed"]),
            (#"{"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}}"#, 8, ["malformed"]),
            (#"{"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}"#, 8, ["malformed"]),
            (#"{"w": {"dtype": "F32", "shape": [1e30], "data_offsets": [0, 8]}}"#, 8, ["malformed"]),
            (#"{"w": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}"#, 8, ["unsupported dtype X9"]),
            (#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#, 8, ["truncated"]),
            (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#,
             12, ["'a' and 'b' overlap"]),
            (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#,
             8, ["'a' and 'b' overlap"]),
            (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}"#, 16, ["0..<8", "no holes"]),
            (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, 12, ["4 bytes after the last tensor"]),
            (#"[1, 2]"#, 0, ["not a JSON object"]),
            // Refused by the safetensors library (serde): integers written as floats, a
            // __metadata__ that is not a string map, a byte-order mark, a field given twice.
            (#"{"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}"#, 8, ["malformed"]),
            (#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8]}}"#, 8, ["malformed"]),
            (#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [00, 8]}}"#, 8, ["not valid JSON", "leading zero"]),
            (#"{"__metadata__": [1, 2], "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, 8, ["__metadata__"]),
            (#"{"__metadata__": {"format": 1}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, 8, ["__metadata__"]),
            ("\u{FEFF}" + #"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, 8, ["not valid JSON", "byte 0"]),
            (#"{"w": {"dtype": "F32", "shape": [2], "dtype": "F16", "data_offsets": [0, 8]}}"#, 8, ["malformed", "\"dtype\" twice"]),
            (#"{"__metadata__": {}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": null}"#,
             8, ["\"__metadata__\" twice"]),
            // serde reads -0 as the float -0.0 and refuses a lone surrogate escape.
            (#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [-0, 8]}}"#, 8, ["malformed"]),
            (#"{"w\ud800": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#,
             8, ["not valid JSON", "lone surrogate"]),
            (#"{"__metadata__": {"x": "\udc00"}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, 8, ["lone surrogate"]),
        ]
        for (header, data, words) in cases {
            let url = try safetensors(header, dataLength: data, in: scratch)
            let error = failure { _ = try SafetensorsFile(path: url.path) }
            for word in words {
                #expect(error?.message.contains(word) == true, "\(header): \(String(describing: error))")
            }
            #expect(error?.description.contains("\n") == false)
            _ = try SafetensorsFile.expectedLength(path: url.path)
        }
    }

    /// The safetensors library reads `__metadata__` as an optional map, so
    /// null is a file without metadata, not a damaged one.
    @Test func nullSafetensorsMetadataIsNoMetadata() throws {
        let scratch = try ScratchDirectory()
        let url = try safetensors(#"{"__metadata__": null, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, dataLength: 8, in: scratch)
        let file = try SafetensorsFile(path: url.path)
        #expect(file.metadata.isEmpty && file.tensors["w"]?.shape == [2])
    }

    /// A tensor named twice: serde reads the header into a map, so the
    /// last entry counts, and the library then validates the tensors it
    /// kept; every entry must still be well-formed. Verdicts of the
    /// safetensors library (0.8.0, `safe_open`) on these headers over 48
    /// bytes (A, B, C = bytes 0, 16, 32 of them): the same entry twice opens,
    /// as does an earlier entry that overlaps, misfits or runs past the data
    /// when the last one tiles it; a last entry leaving bytes 0..<16 to no
    /// tensor is refused ("invalid offset"), as is an earlier entry of an
    /// unknown dtype, a negative size or a missing field ("invalid JSON"); a
    /// key repeated inside __metadata__ keeps its last value.
    @Test func aTensorNamedTwiceIsItsLastEntry() throws {
        let scratch = try ScratchDirectory()
        func entry(_ begin: Int, _ end: Int, shape: Int = 4, dtype: String = "F32") -> String {
            #"{"dtype": "\#(dtype)", "shape": [\#(shape)], "data_offsets": [\#(begin), \#(end)]}"#
        }
        let (a, b, c) = (entry(0, 16), entry(16, 32), entry(32, 48))
        let opened: [String] = [
            #"{"A": \#(a), "B": \#(b), "C": \#(c), "A": \#(a)}"#,
            #"{"A": \#(c), "B": \#(b), "C": \#(c), "A": \#(a)}"#,
            #"{"A": \#(entry(0, 16, shape: 7)), "B": \#(b), "C": \#(c), "A": \#(a)}"#,
            #"{"A": \#(entry(0, 400, shape: 100)), "B": \#(b), "C": \#(c), "A": \#(a)}"#,
        ]
        for header in opened {
            let url = try safetensors(header, dataLength: 48, in: scratch)
            let file = try SafetensorsFile(path: url.path)
            #expect(file.tensors.count == 3, "\(header)")
            #expect(file.tensors["A"].map { ($0.fileOffset ?? 0) - (file.tensors["B"]?.fileOffset ?? 0) } == -16, "\(header)")
            #expect(try SafetensorsFile.expectedLength(path: url.path) == 8 + header.utf8.count + 48)
        }
        let refused: [(header: String, words: [String])] = [
            (#"{"A": \#(a), "B": \#(b), "A": \#(c)}"#, ["0..<16", "no holes"]),
            (#"{"A": \#(a), "B": \#(b), "C": \#(c), "A": \#(entry(16, 32))}"#, ["0..<16", "no holes"]),
            (#"{"A": \#(entry(0, 16, dtype: "XX")), "B": \#(b), "C": \#(c), "A": \#(a)}"#, ["unsupported dtype XX"]),
            (#"{"A": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}, "B": \#(b), "C": \#(c), "A": \#(a)}"#, ["malformed"]),
            (#"{"A": {"dtype": "F32", "data_offsets": [0, 16]}, "B": \#(b), "C": \#(c), "A": \#(a)}"#, ["malformed"]),
        ]
        for (header, words) in refused {
            let url = try safetensors(header, dataLength: 48, in: scratch)
            let error = failure { _ = try SafetensorsFile(path: url.path) }
            for word in words { #expect(error?.message.contains(word) == true, "\(header): \(String(describing: error))") }
        }
        let metadata = try safetensors(#"{"__metadata__": {"format": "pt", "format": "np"}, "A": \#(a), "B": \#(b), "C": \#(c)}"#, dataLength: 48, in: scratch)
        #expect(try SafetensorsFile(path: metadata.path).metadata == ["format": "np"])
    }

    /// The tester's case: the fixture's header with one entry given again
    /// scores as the fixture does (transformers loads it; safe_open lists the tensor once).
    @Test func aRepeatedHeaderEntryScoresAsTheFile() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "model")
        let url = model.appendingPathComponent("model.safetensors")
        var bytes = try Data(contentsOf: url)
        let length = Int(bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian)
        let header = try #require(String(data: bytes.subdata(in: 8..<(8 + length)), encoding: .utf8))
        let name = "model.layers.0.self_attn.q_proj.weight"
        let object = try #require(try JSONSerialization.jsonObject(with: Data(header.utf8)) as? [String: Any])
        let repeated = String(decoding: try JSONSerialization.data(withJSONObject: try #require(object[name])), as: UTF8.self)
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        let edited = Data((trimmed.dropLast() + #", "\#(name)": \#(repeated)}"#).utf8)
        bytes.replaceSubrange(0..<(8 + length), with: withUnsafeBytes(of: UInt64(edited.count).littleEndian) { Data($0) } + edited)
        try bytes.write(to: url)
        let sequences = FixtureFiles.jsonlSequences()
        func scores(_ directory: URL) throws -> ModuleScores {
            try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(location: directory)))
                .score(sequences, calibrationPath: "fixture")
        }
        let (repeatedEntry, plain) = (try scores(model), try scores(FixtureFiles.model("llama-f32")))
        #expect(repeatedEntry.attention == plain.attention && repeatedEntry.mlp == plain.mlp && repeatedEntry.block == plain.block)
    }

    @Test func absurdSafetensorsHeaderLengthIsRefusedWithoutAllocating() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("model.safetensors")
        var bytes = Data()
        withUnsafeBytes(of: UInt64.max.littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(Data("{}".utf8))
        try bytes.write(to: url)
        let error = failure { _ = try SafetensorsFile(path: url.path) }
        #expect(error?.message.contains("points past the end of the file") == true)
        #expect(try SafetensorsFile.expectedLength(path: url.path) == 8, "a header that can never fit is not 'still being written'")
    }

    @Test func ggufDimensionsWhoseProductOverflowsAreRefused() throws {
        let url = Self.formats.appendingPathComponent("crashers/dims-product-overflow-min.gguf")
        let error = failure { _ = try GGUFFile(path: url.path) }
        #expect(error?.message.contains("overflows") == true, "\(String(describing: error))")
        #expect(try GGUFFile.expectedLength(path: url.path) == 0)
    }

    /// A GGUF v3 file: `metadata` raw key/value bytes, then `tensors` F32 1-D infos (name, length, offset).
    func gguf(metadata: [UInt8] = [], metadataCount: UInt64 = 0, tensors: [(String, UInt64, UInt64)], dataLength: Int) -> Data {
        var bytes: [UInt8] = Array("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        u32(3)
        u64(UInt64(tensors.count))
        u64(metadataCount)
        bytes += metadata
        for (name, length, offset) in tensors {
            u64(UInt64(name.utf8.count))
            bytes += Array(name.utf8)
            u32(1)
            u64(length)
            u32(0)
            u64(offset)
        }
        while bytes.count % 32 != 0 { bytes.append(0) }
        return Data(bytes + [UInt8](repeating: 0, count: dataLength))
    }

    @Test func overlappingGGUFTensorsAreRefused() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("model.gguf")
        try gguf(tensors: [("a", 16, 0), ("b", 16, 64)], dataLength: 128).write(to: url)
        _ = try GGUFFile(path: url.path)
        try gguf(tensors: [("a", 16, 0), ("b", 16, 64), ("c", 8, 128), ("d", 16, 96)], dataLength: 160).write(to: url)
        let error = failure { _ = try GGUFFile(path: url.path) }
        #expect(
            error?.message == "tensor 'd' starts at data offset 96, but llama.cpp places it at 160 (right after the tensor before it, padded to the alignment 32)",
            "\(String(describing: error))")
    }

    /// llama.cpp lays the tensors out one after another in the order of the
    /// table and refuses other offsets: a gap, or offsets swapped between two
    /// tensors of one size (read as each other's weights), is refused too.
    @Test func ggufTensorsOutOfLlamaCppsLayoutAreRefused() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("model.gguf")
        for (tensors, words) in [
            ([("a", 16, 0), ("b", 16, 128)] as [(String, UInt64, UInt64)], "tensor 'b' starts at data offset 128, but llama.cpp places it at 64"),
            ([("a", 16, 64), ("b", 16, 0)], "tensor 'a' starts at data offset 64, but llama.cpp places it at 0"),
            ([("a", 8, 0), ("b", 8, 16)], "tensor 'b' starts at data offset 16, but llama.cpp places it at 32"),
        ] {
            try gguf(tensors: tensors, dataLength: 256).write(to: url)
            let error = failure { _ = try GGUFFile(path: url.path) }
            #expect(error?.message.hasPrefix(words) == true, "\(String(describing: error))")
        }
    }

    /// ggml holds tensor names in 64 bytes ending in a NUL: a longer name is
    /// refused by llama.cpp, and one holding a NUL is cut there ("output.weight\0x"
    /// is llama.cpp's output matrix), so droptrace refuses both.
    @Test func ggufTensorNamesLlamaCppCannotHoldAreRefused() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("model.gguf")
        let long = String(repeating: "a", count: 64)
        for (name, words) in [(long, "the name of tensor 0 ('\(long)') is 64 bytes long"), ("output.weight\0x", "the name of tensor 0 ('output.weight\\u{0}x') holds a NUL byte")] {
            try gguf(tensors: [(name, 16, 0)], dataLength: 64).write(to: url)
            let error = failure { _ = try GGUFFile(path: url.path) }
            #expect(error?.message.hasPrefix(words) == true, "\(String(describing: error))")
        }
        try gguf(tensors: [(String(repeating: "a", count: 63), 16, 0)], dataLength: 64).write(to: url)
        _ = try GGUFFile(path: url.path)
    }

    @Test func hostileGGUFCountsAreRefusedBeforeAllocating() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("model.gguf")
        func key(_ name: String) -> [UInt8] {
            withUnsafeBytes(of: UInt64(name.utf8.count).littleEndian) { Array($0) } + Array(name.utf8)
        }
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        let cases: [(metadata: [UInt8], count: UInt64, words: String)] = [
            // A key of 4294967295 bytes.
            (le(UInt64(UInt32.max)) + Array("k".utf8), 1, "string length 4294967295"),
            // An array of 2^62 uint8 values, and one of 2^40 strings.
            (key("a") + le(UInt32(9)) + le(UInt32(0)) + le(UInt64(1) << 62), 1, "array length of 'a'"),
            (key("a") + le(UInt32(9)) + le(UInt32(8)) + le(UInt64(1) << 40), 1, "array length of 'a'"),
            // Arrays of arrays, which llama.cpp refuses (nested as deep as the bytes allow).
            (key("a") + le(UInt32(9)) + (0..<8).flatMap { _ in le(UInt32(9)) + le(UInt64(1)) }, 1, "'a' holds an array of arrays"),
            (key("a") + le(UInt32(9)) + le(UInt32(9)) + le(UInt64(0)), 1, "'a' holds an array of arrays"),
            // An empty key.
            (key("") + le(UInt32(4)) + le(UInt32(1)), 1, "metadata key 0 is empty"),
            // More metadata pairs than the file could hold.
            ([], UInt64.max, "metadata count"),
        ]
        for (metadata, count, words) in cases {
            try gguf(metadata: metadata, metadataCount: count, tensors: [], dataLength: 64).write(to: url)
            let error = failure { _ = try GGUFFile(path: url.path) }
            #expect(error?.message.contains(words) == true, "\(String(describing: error))")
        }
    }

    // MARK: - Buffers of other dtypes

    /// transformers ignores BOOL masks, I64 position_ids and the like; scores
    /// are those of the model without them.
    @Test(arguments: ["neox-buffers", "llama-position-ids"])
    func nonFloatBuffersAreIgnored(model: String) throws {
        let expected = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Self.formats.appendingPathComponent("expected.json"))) as! [String: [String: [Double]]]
        let sequences = try String(contentsOf: Self.formats.appendingPathComponent("calibration.jsonl"), encoding: .utf8)
            .split(separator: "\n").map { line in
                (try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: [Int]])["input_ids"]!
            }
        let checkpoint = try Checkpoint(location: Self.formats.appendingPathComponent(model))
        let scores = try ImportanceScorer(model: try ModelRegistry.load(checkpoint)).score(sequences, calibrationPath: "fixture")
        let reference = try #require(expected[model])
        for (kind, actual) in [("attention", scores.attention), ("mlp", scores.mlp), ("block", scores.block)] {
            let wanted = try #require(reference[kind])
            #expect(actual.count == wanted.count)
            let worst = zip(actual, wanted).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst <= 1e-4, "\(model) \(kind): \(actual) vs \(wanted)")
        }
    }

    /// A model saved in float64 (transformers loads it): read as the same
    /// values rounded to float32, here the float32 fixture's exactly, so the
    /// scores are the fixture's to the bit.
    @Test func float64SafetensorsReadAsTheirFloat32Rounding() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let weights = model.appendingPathComponent("model.safetensors")
        let entries = try SafetensorsFile(path: weights.path).tensors.values.map { slice in
            let doubles = try slice.floats().map { Double($0) }
            return SafetensorsWriter.Entry(
                name: slice.name, dtype: .float64, shape: slice.shape, bytes: doubles.withUnsafeBytes { Data($0) })
        }
        try SafetensorsWriter.encode(entries).write(to: weights, options: .atomic)
        let sequences = FixtureFiles.jsonlSequences()
        func scores(_ directory: URL) throws -> ModuleScores {
            try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(location: directory)))
                .score(sequences, calibrationPath: "fixture")
        }
        let (double, single) = (try scores(model), try scores(FixtureFiles.model("llama-f32")))
        #expect(double.attention == single.attention && double.mlp == single.mlp && double.block == single.block)

        // Values float32 cannot hold round to nearest, as torch's .float() does.
        let values: [Double] = [0.1, 1 + 0x1p-24, 1 + 0x1p-23 + 0x1p-24, -3e-39, 1e39]
        var out = [Float](repeating: 0, count: values.count)
        values.withUnsafeBytes { expandToFloat32($0.baseAddress!, dtype: .float64, count: values.count, into: &out) }
        #expect(out == [Float(0.1), 1, 1 + 0x1p-22, Float(-3e-39), .infinity])
    }

    @Test func readingABufferAsWeightsNamesItAndItsDtype() throws {
        let checkpoint = try Checkpoint(location: Self.formats.appendingPathComponent("neox-buffers"))
        #expect(checkpoint.hasTensor("gpt_neox.layers.0.attention.bias"))
        #expect(!checkpoint.tensorNames.contains("gpt_neox.layers.0.attention.bias"))
        let error = failure { _ = try checkpoint.tensor("gpt_neox.layers.0.attention.bias") }
        #expect(error?.message.contains("'gpt_neox.layers.0.attention.bias' has unsupported dtype BOOL") == true, "\(String(describing: error))")
        let position = failure { _ = try Checkpoint(location: Self.formats.appendingPathComponent("llama-position-ids")).tensor("model.position_ids") }
        #expect(position?.message.contains("dtype I64") == true)
        #expect(position?.path?.hasSuffix("model.safetensors") == true)
    }

    // MARK: - Files that are not regular files

    @Test(arguments: ["model.safetensors", "config.json", "tokenizer.json"])
    func aFIFOInTheCheckpointIsRefusedWithoutBlocking(file: String) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let fifo = model.appendingPathComponent(file)
        try FileManager.default.removeItem(at: fifo)
        #expect(mkfifo(fifo.path, 0o644) == 0)
        let started = Date()
        let result = try DroptraceCommand.run(
            ["score", model.path, "--calibration", FixtureFiles.calibrationText.path, "--output", scratch.path("s.h5").path])
        #expect(result.status == 1)
        #expect(result.stderr.contains(file), "\(result.stderr)")
        #expect(Date().timeIntervalSince(started) < 30)
        if file == "model.safetensors" {
            #expect(result.stderr.contains("not a regular file (a FIFO)"), "\(result.stderr)")
            #expect(try SafetensorsFile.expectedLength(path: fifo.path) == 0)
        }
    }

    /// Series discovery must not block on a FIFO either, and the run names it.
    @Test(arguments: ["model.safetensors", "trainer_state.json"])
    func aFIFOInASeriesIsRefusedWithoutBlocking(file: String) throws {
        let scratch = try ScratchDirectory()
        let series = scratch.path("series")
        try FileManager.default.createDirectory(at: series, withIntermediateDirectories: true)
        let model = series.appendingPathComponent("checkpoint-1")
        try FileManager.default.copyItem(at: FixtureFiles.model("llama-f32"), to: model)
        let fifo = model.appendingPathComponent(file)
        try? FileManager.default.removeItem(at: fifo)
        #expect(mkfifo(fifo.path, 0o644) == 0)
        let started = Date()
        let result = try DroptraceCommand.run(
            ["trace", series.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("out").path])
        #expect(Date().timeIntervalSince(started) < 60)
        if file == "model.safetensors" {
            #expect(result.status != 0)
            #expect(result.stderr.contains("not a regular file (a FIFO)"), "\(result.stderr)")
        } else {
            #expect(result.status == 0, "\(result.stderr)")
        }
    }

    // MARK: - Shard names

    @Test(arguments: ["../outside.safetensors", "/etc/passwd", "sub/model.safetensors", "..", ""])
    func shardNamesStayInTheCheckpointDirectory(name: String) throws {
        let scratch = try ScratchDirectory()
        let directory = scratch.path("checkpoint")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("sub"), withIntermediateDirectories: true)
        _ = try safetensors("{}", dataLength: 0, in: scratch, name: "outside.safetensors")
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        let object = ["metadata": [:], "weight_map": ["w": name]]
        try JSONSerialization.data(withJSONObject: object).write(to: index)
        let error = failure { _ = try CheckpointLayout.resolve(directory) }
        #expect(error?.message.contains("is not a file name in the checkpoint directory") == true, "\(String(describing: error))")
    }

    /// Shard names written `./model-00001-of-00002.safetensors` are the files
    /// beside the index, as transformers joins them (they were refused).
    @Test func shardNamesInTheCurrentDirectoryAreTheShards() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-sharded", as: "model")
        let index = model.appendingPathComponent("model.safetensors.index.json")
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: index)) as! [String: Any]
        let map = object["weight_map"] as! [String: String]
        object["weight_map"] = map.mapValues { "./" + $0 }
        try JSONSerialization.data(withJSONObject: object).write(to: index)
        let plain = Set(map.values).sorted().map { model.appendingPathComponent($0).path }
        #expect(try CheckpointLayout.shards(index: index).map(\.path) == plain)
        func scores(_ directory: URL) throws -> ModuleScores {
            try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: directory)))
                .score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
        }
        #expect(try scores(model) == (try scores(FixtureFiles.model("llama-sharded"))))
    }

    /// An index mapping a tensor to config.json (or any of the checkpoint's
    /// JSON files) is the index's fault: config.json was opened as a shard
    /// and blamed for a safetensors header "past the end of the file".
    @Test(arguments: ["config.json", "model.safetensors.index.json", "Tokenizer.JSON"])
    func aShardThatIsAJSONFileIsTheIndexsFault(name: String) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-sharded", as: "model")
        let index = model.appendingPathComponent("model.safetensors.index.json")
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: index)) as! [String: Any]
        var map = object["weight_map"] as! [String: String]
        map[map.keys.sorted()[0]] = name
        object["weight_map"] = map
        try JSONSerialization.data(withJSONObject: object).write(to: index)
        let error = failure { _ = try CheckpointLayout.resolve(model) }
        #expect(error?.path == index.path && error?.message == "shard name \"\(name)\" in the index is a JSON file of the checkpoint, not a weight shard",
                "\(String(describing: error))")
    }

    /// An index without a "metadata" object, which transformers cannot load
    /// (KeyError or TypeError in get_checkpoint_shard_files), is refused.
    @Test(arguments: [#""metadata": null, "#, "", #""metadata": [1], "#])
    func shardIndexWithoutMetadataIsRefused(metadata: String) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-sharded", as: "model")
        let index = model.appendingPathComponent("model.safetensors.index.json")
        var text = try String(contentsOf: index, encoding: .utf8)
        let start = try #require(text.range(of: #""metadata""#)), end = try #require(text.range(of: #""weight_map""#))
        text.replaceSubrange(start.lowerBound..<end.lowerBound, with: metadata)
        try Data(text.utf8).write(to: index)
        let error = failure { _ = try CheckpointLayout.resolve(model) }
        #expect(error?.path == index.path && error?.message.contains("no \"metadata\" object") == true, "\(String(describing: error))")
    }

    @Test func shardNamesAppearEscapedInMessages() throws {
        let scratch = try ScratchDirectory()
        let index = scratch.path("model.safetensors.index.json")
        let name = "\u{1B}[2J\u{202E}evil\nline.safetensors"
        try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": ["w": name]]).write(to: index)
        let error = failure { _ = try CheckpointLayout.shards(index: index) }
        let text = error?.description ?? ""
        #expect(text.contains("missing"))
        #expect(!text.contains("\u{1B}") && !text.contains("\n") && !text.contains("\u{202E}"), "\(text)")
        #expect(text.contains("\\u{1b}[2J\\u{202e}evil\\u{a}line.safetensors"), "\(text)")
    }

    // MARK: - Files changed while being read

    func openedCopy() throws -> (ScratchDirectory, Checkpoint, URL) {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let checkpoint = try Checkpoint(location: model)
        return (scratch, checkpoint, model.appendingPathComponent("model.safetensors"))
    }

    @Test func aWeightFileTruncatedAfterOpeningGivesAnError() throws {
        let (scratch, checkpoint, weights) = try openedCopy()
        let model = try ModelRegistry.load(checkpoint)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: weights.path)[.size] as? Int)
        #expect(truncate(weights.path, off_t(size / 2)) == 0)
        let error = failure { _ = try ImportanceScorer(model: model).score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture") }
        #expect(error?.message.contains("changed while being read") == true, "\(String(describing: error))")
        #expect(error?.path == weights.path)
        _ = scratch
    }

    @Test func aWeightFileRewrittenInPlaceGivesAnError() throws {
        let (scratch, checkpoint, weights) = try openedCopy()
        let slice = try checkpoint.tensor("model.layers.1.mlp.down_proj.weight")
        let before = try slice.floats()
        // Same size, other bytes, a later modification time.
        let handle = try FileHandle(forWritingTo: weights)
        try handle.seek(toOffset: try handle.seekToEnd() - 512)
        try handle.write(contentsOf: Data(repeating: 0x7F, count: 256))
        try handle.close()
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(10)], ofItemAtPath: weights.path)
        let error = failure { _ = try slice.floats() }
        #expect(error?.message.contains("changed while being read") == true, "\(String(describing: error))")
        let row = failure {
            let table = try checkpoint.tensor("model.embed_tokens.weight")
            var values = [Float](repeating: 0, count: table.shape[1])
            try values.withUnsafeMutableBufferPointer { try table.expandRows([0], into: $0.baseAddress!) }
        }
        #expect(row?.message.contains("changed while being read") == true)
        // Opened again, the new file reads fine.
        #expect(try Checkpoint(location: weights.deletingLastPathComponent()).tensor("model.layers.1.mlp.down_proj.weight").floats().count == before.count)
        _ = scratch
    }

    /// The open descriptor still reads the complete file that was opened.
    @Test func aWeightFileReplacedByRenameKeepsReadingTheOpenedFile() throws {
        let (scratch, checkpoint, weights) = try openedCopy()
        let slice = try checkpoint.tensor("model.layers.0.self_attn.q_proj.weight")
        let before = try slice.floats()
        let replacement = scratch.path("replacement")
        try Data(count: 16).write(to: replacement)
        #expect(rename(replacement.path, weights.path) == 0)
        #expect(try slice.floats() == before)
    }
}

/// A safetensors header's arrays are shapes and offset pairs: one far longer
/// is refused before it is held in memory (a 68 MB array of zeros took
/// gigabytes), when the file is opened and when a series looks at it.
@Suite struct SafetensorsHeaderArrayTests {
    static func file(junk count: Int, in scratch: ScratchDirectory) throws -> URL {
        let zeros = Array(repeating: "0", count: count).joined(separator: ",")
        let header = Array("{\"junk\":[\(zeros)],\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}".utf8)
        var bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
        bytes += [0, 0, 128, 63]
        let url = scratch.path("model.safetensors")
        try Data(bytes).write(to: url)
        return url
    }

    @Test func anArrayLongerThanAnyShapeIsRefused() throws {
        let scratch = try ScratchDirectory()
        let url = try Self.file(junk: 65, in: scratch)
        #expect {
            _ = try SafetensorsFile(path: url.path)
        } throws: { "\($0)".contains("an array of more than 64 values") }
        // Complete as far as waiting goes: opening it reports the problem.
        let size = try FileManager.default.attributesOfItem(atPath: url.path)[.size] as! Int
        #expect(try SafetensorsFile.expectedLength(path: url.path) == size - 4)
    }

    @Test func sixtyFourValuesAreAnArrayStill() throws {
        let scratch = try ScratchDirectory()
        let url = try Self.file(junk: 64, in: scratch)
        // Past the arrays, "junk" is no tensor entry: refused as the safetensors library refuses it.
        #expect {
            _ = try SafetensorsFile(path: url.path)
        } throws: { "\($0)".contains("malformed header entry for tensor 'junk'") }
    }
}

import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Pipeline
import Scoring
import Testing

/// PyTorch `.bin` checkpoints (torch.save) read natively: the fixtures are
/// torch.save copies of safetensors fixture models (scripts/fixtures/make_pytorch_fixtures.py),
/// so every tensor and the transformers reference scores of the original apply.
@Suite struct PyTorchCheckpointTests {
    /// `.bin` fixture → the safetensors model it was saved from.
    static let copies: [(bin: String, original: String)] = [
        ("llama-f32-bin", "llama-f32"),  // zip format, OrderedDict with _metadata, int64 buffer
        ("gpt_neox-bf16-bin", "gpt_neox-bf16"),  // index + 2 shards, bfloat16
        ("gpt2-f32-bin", "gpt2-f32"),  // tied lm_head, transposed views, slices of stacked storages
        ("qwen2-bf16-legacy", "qwen2-bf16"),  // legacy non-zip format, one float64 tensor
    ]

    static var binNames: [String] { copies.map(\.bin) }

    static func original(of bin: String) -> String { copies.first { $0.bin == bin }!.original }

    static func pickle(_ name: String) -> URL { FixtureFiles.root.appendingPathComponent("pickles/\(name)") }

    static func loadError(_ url: URL) -> String {
        do {
            _ = try TorchCheckpointFile(path: url.path)
            return "(no error)"
        } catch {
            return "\(error)"
        }
    }

    @Test(arguments: binNames)
    func everyTensorEqualsTheSafetensorsOriginal(bin: String) throws {
        let loaded = try Checkpoint(location: FixtureFiles.model(bin))
        let reference = try Checkpoint(location: FixtureFiles.model(Self.original(of: bin)))
        #expect(loaded.layout.format == .pytorch)
        // Only float tensors come through: the int64/bool/uint8 buffers are left out.
        let extra: Set<String> = bin == "gpt2-f32-bin" ? ["lm_head.weight"] : []
        #expect(Set(loaded.tensorNames) == Set(reference.tensorNames).union(extra))
        for name in reference.tensorNames {
            let expected = try reference.tensor(name)
            let actual = try loaded.tensor(name)
            #expect(actual.shape == expected.shape, "\(bin) \(name)")
            let (a, e) = (try actual.floats(), try expected.floats())
            let differing = zip(a, e).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(a.count == e.count && differing == 0, "\(bin) \(name): \(differing) of \(e.count) values differ")
        }
    }

    @Test(arguments: binNames)
    func scoresMatchTransformersReference(bin: String) throws {
        let original = Self.original(of: bin)
        let scores = try ScoringReferenceTests().score(bin, FixtureFiles.jsonlSequences())
        let reference = try #require(FixtureFiles.scores(original, "jsonl", "float32_compute"))
        ScoringReferenceTests().check(bin, scores, against: reference, tolerance: ScoringReferenceTests.float32Tolerance)
    }

    @Test func singleBinFileWithConfigBeside() throws {
        let file = FixtureFiles.model("llama-f32-bin").appendingPathComponent("pytorch_model.bin")
        let checkpoint = try Checkpoint(location: file)
        #expect(checkpoint.layout.weightFiles == [file])
        let scorer = ImportanceScorer(model: try ModelRegistry.load(checkpoint))
        let scores = try scorer.score(FixtureFiles.textInputIDs("llama-f32"), calibrationPath: "fixture")
        let reference = try #require(FixtureFiles.scores("llama-f32", "text", "float32_compute"))
        ScoringReferenceTests().check("llama-f32-bin file", scores, against: reference, tolerance: ScoringReferenceTests.float32Tolerance)
    }

    /// Bytes appended after the zip's end record (a copy tool's padding):
    /// Python's zipfile and torch.load read such a file, and so does droptrace,
    /// to the same tensors; in a series it is finished, not "still being written".
    @Test func bytesAfterTheArchiveAreIgnoredAsTorchLoadIgnoresThem() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("llama-f32-bin")
        let file = directory.appendingPathComponent("pytorch_model.bin")
        let handle = try FileHandle(forWritingTo: file)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(repeating: 0x55, count: 1000))
        try handle.close()
        let appended = try Checkpoint(location: directory), original = try Checkpoint(location: FixtureFiles.model("llama-f32-bin"))
        for name in original.tensorNames {
            #expect(try appended.tensor(name).floats() == original.tensor(name).floats(), "\(name)")
        }
        let size = try #require(try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int)
        #expect(try TorchCheckpointFile.expectedLength(path: file.path) == size)
    }

    @Test func tiedWeightsShareOneStorageInPlace() throws {
        let file = try TorchCheckpointFile(path: FixtureFiles.model("gpt2-f32-bin").appendingPathComponent("pytorch_model.bin").path)
        let embedding = try #require(file.tensors["transformer.wte.weight"])
        let head = try #require(file.tensors["lm_head.weight"])
        #expect(embedding.fileOffset != nil && embedding.fileOffset == head.fileOffset)
        #expect(file.tensors["transformer.h.0.attn.bias"] == nil && file.tensors["transformer.h.0.attn.masked_bias"] == nil)
    }

    /// What torch.load(weights_only=True), as transformers loads a .bin, does
    /// not give as a state dict: pickle protocol 4 (its FRAME opcode: "Unsupported
    /// operand 149"), and a training checkpoint holding the state dict under
    /// "state_dict" (transformers finds no weights and initialises them randomly).
    @Test(arguments: [
        ("protocol4_parameters.bin", "pickle opcode 0x95 (FRAME) at byte 2, which torch.load with weights_only"),
        ("nested_state_dict.bin", #"holds a training checkpoint with the state dict under "state_dict""#),
    ])
    func whatTorchLoadDoesNotReadAsAStateDictIsRefused(file: String, message: String) {
        let error = Self.loadError(Self.pickle(file))
        #expect(error.contains(file) && error.contains(message) && !error.contains("\n"), "\(error)")
    }

    @Test(arguments: ["small.bin", "zip64.bin", "parameters.bin"])
    func smallStateDictVariantsAreRead(file: String) throws {
        let tensors = try TorchCheckpointFile(path: Self.pickle(file).path).tensors
        #expect(tensors.keys.sorted() == ["weight"])
        let weight = try #require(tensors["weight"])
        #expect(weight.shape == [2, 3] && weight.dtype == .float32)
        #expect(try weight.floats() == [0, 1, 2, 3, 4, 5])
    }

    @Test func instOpcodeIsRefused() {
        let message = Self.loadError(Self.pickle("inst.bin"))
        #expect(message.contains("inst.bin: refusing to load") && message.contains("INST (os.system)"), "\(message)")
    }

    @Test(arguments: [
        ("os_system.bin", "os.system"),
        ("builtins_eval.bin", "builtins.eval"),
        ("unknown_class.bin", "__main__.TrainingState"),
    ])
    func maliciousPicklesAreRefused(file: String, callable: String) {
        let message = Self.loadError(Self.pickle(file))
        #expect(message.contains(file) && message.contains("refusing to load"), "\(message)")
        #expect(message.contains("calls \(callable), which is not part of a PyTorch state dict"), "\(message)")
        #expect(!message.contains("\n"))
    }

    @Test(arguments: [
        ("truncated.bin", "no end-of-central-directory record"),
        ("entry_past_end.bin", "zip entry small/data/0 (24 bytes, its header at byte 2147418112) ends past the end of the file of 1563 bytes"),
        ("compressed.bin", "is compressed"),
        ("plain_pickle.bin", "not a PyTorch checkpoint"),
    ])
    func brokenFilesGiveOneLineErrors(file: String, phrase: String) {
        let message = Self.loadError(Self.pickle(file))
        #expect(message.hasPrefix(Self.pickle(file).path + ": "), "\(message)")
        #expect(message.contains(phrase), "\(message)")
        #expect(!message.contains("\n"))
    }

    /// Every prefix and every single damaged byte of a small checkpoint either
    /// loads or fails with a one-line error naming the file — never a crash.
    @Test func damagedFilesNeverCrash() throws {
        let original = try Data(contentsOf: Self.pickle("small.bin"))
        let scratch = try ScratchDirectory()
        let file = scratch.path("damaged.bin")
        // Prefixes (every third length) and one damaged value per byte, cycling
        // through zero, all ones and a flipped low bit.
        var variants: [Data] = stride(from: 0, to: original.count, by: 3).map { original.prefix($0) }
        for position in 0..<original.count {
            var damaged = original
            damaged[position] = [0x00, 0xFF, original[position] ^ 0x01][position % 3]
            variants.append(damaged)
        }
        var failures = 0
        for variant in variants {
            try variant.write(to: file)
            do {
                _ = try TorchCheckpointFile(path: file.path)
            } catch {
                failures += 1
                let message = "\(error)"
                #expect(message.hasPrefix(file.path + ": ") && !message.contains("\n"), "\(message)")
            }
        }
        #expect(failures > original.count / 3)
    }

    /// torch bounds only a tensor with elements by its storage: an empty one
    /// may give any storage offset, and must not be placed in the file by it.
    /// A view repeating storage elements — stride 0 from `expand()`
    /// (`expanded.bin`: `arange(3).expand(4096, 3)`), overlapping strides —
    /// reads as the values torch.load(weights_only=True) gives, which
    /// transformers copies into the parameter. The expected values are
    /// torch's: `torch.as_strided(torch.arange(6.), size, stride, offset)`
    /// over small.bin's storage.
    @Test func repeatingViewsReadAsTorchLoadGivesThem() throws {
        let weight = try #require(try TorchCheckpointFile(path: Self.pickle("expanded.bin").path).tensors["weight"])
        #expect(weight.shape == [4096, 3])
        #expect(try weight.floats() == Array([[Float]](repeating: [0, 1, 2], count: 4096).joined()))
        #expect(try weight.floats().count == 4096 * 3)
        #expect(try Self.smallStorageView(shape: [3, 2], strides: [0, 2], offset: 1).floats() == [1, 3, 1, 3, 1, 3])
        #expect(try Self.smallStorageView(shape: [4, 3], strides: [1, 1]).floats() == [0, 1, 2, 1, 2, 3, 2, 3, 4, 3, 4, 5])
    }

    /// A repeating view is bounded by its storage, not by its sizes: its
    /// values are gathered only when it is expanded (after a model has
    /// checked its shape), so 2^60 elements over 6 stored ones open without
    /// allocating them; sizes whose Float32 bytes overflow are refused, and
    /// so is a view reaching past its storage, as for any view.
    @Test func repeatingViewsAreBoundedByTheirStorage() throws {
        let huge = try Self.smallStorageView(shape: [1 << 30, 1 << 30], strides: [0, 0], offset: 5)
        #expect(huge.shape == [1 << 30, 1 << 30])
        #expect {
            try Self.smallStorageView(shape: [1 << 61, 2], strides: [0, 1])
        } throws: { "\($0)".hasSuffix("small.bin: tensor 'weight' has an impossible shape [\(1 << 61), 2]") }
        #expect {
            try Self.smallStorageView(shape: [4, 2], strides: [0, 1], offset: 5)
        } throws: { "\($0)".hasSuffix("small.bin: tensor 'weight' (shape [4, 2], offset 5) reaches element 7 of a storage holding 6 float32 elements") }
    }

    /// A float32 view over small.bin's storage (6 elements, 0 to 5).
    static func smallStorageView(shape: [Int], strides: [Int], offset: Int = 0) throws -> TensorSlice {
        let url = pickle("small.bin")
        let values = Data([Float]([0, 1, 2, 3, 4, 5]).withUnsafeBytes { Array($0) })
        let start = try #require(try Data(contentsOf: url).range(of: values)).lowerBound
        let storage = TorchStorageReference(element: .float32, key: "0", count: 6)
        let tensor = TorchTensorRecord(storage: storage, element: .float32, offset: offset, shape: shape, strides: strides)
        let file = try RegularFile(path: url.path)
        return try #require(try TorchStateDict.slice(name: "weight", tensor: tensor, storage: (offset: start, count: 24), file: file))
    }

    @Test func anEmptyTensorFarPastItsStorageReadsNothing() throws {
        let file = try RegularFile(path: Self.pickle("small.bin").path)
        let storage = TorchStorageReference(element: .float32, key: "0", count: 6)
        for offset in [7, Int.max / 3, Int.max] {
            let tensor = TorchTensorRecord(storage: storage, element: .float32, offset: offset, shape: [0, 3], strides: [3, 1])
            let slice = try #require(try TorchStateDict.slice(name: "weight", tensor: tensor, storage: (offset: 64, count: 24), file: file))
            #expect(slice.shape == [0, 3])
            #expect(try slice.floats().isEmpty)
        }
    }

    /// torch.load refuses a storage record whose size is not the declared
    /// element count times the element size ("record size ... does not match
    /// expected size"); a longer record was read as if the declared storage
    /// were all of it, a file torch never loads.
    @Test func storageRecordOfAnotherSizeThanDeclaredIsRefused() throws {
        let storage = TorchStorageReference(element: .float32, key: "0", count: 6)
        let exact = try TorchCheckpointFile.checked((offset: 64, count: 24), storage, path: "m.bin")
        #expect(exact.offset == 64 && exact.count == 24)
        for bytes in [28, 20, 0] {
            #expect {
                try TorchCheckpointFile.checked((offset: 64, count: bytes), storage, path: "m.bin")
            } throws: { error in
                "\(error)" == "m.bin: storage 0 holds \(bytes) bytes but the pickle declares 6 float32 elements (24 bytes)"
            }
        }
    }

    /// A state dict giving a name twice is refused, as a key given twice in
    /// config.json or GGUF metadata is: torch.save cannot write one, and
    /// unpickling keeps the last value (here an int64 tensor, or None) where
    /// the first was read.
    /// A name given twice in a (crafted) pickle holds its last value, as
    /// `torch.load` gives it (Python's dict: the first place, the last
    /// value); names are told apart by code points, as Python's str.
    @Test func aNameGivenTwiceInTheStateDictHoldsItsLastValue() throws {
        func tensor(_ element: TorchElementType, offset: Int = 0) -> PickleValue {
            let storage = TorchStorageReference(element: element, key: "0", count: 6)
            return .tensor(TorchTensorRecord(storage: storage, element: element, offset: offset, shape: [2], strides: [1]))
        }
        let dict = PickleDict()
        dict.entries = [(.string("w"), tensor(.float32)), (.string("v"), tensor(.float32)), (.string("w"), tensor(.float32, offset: 4))]
        let read = try TorchStateDict.tensors(in: .dict(dict), path: "m.bin")
        #expect(read.map(\.name) == ["w", "v"] && read[0].tensor.offset == 4)
        // A later value that is no tensor leaves the name out, as it holds no weight.
        dict.entries = [(.string("w"), tensor(.float32)), (.string("v"), tensor(.float32)), (.string("w"), .none)]
        #expect(try TorchStateDict.tensors(in: .dict(dict), path: "m.bin").map(\.name) == ["v"])
        // Canonically equivalent names are two names.
        dict.entries = [(.string("\u{e9}"), tensor(.float32)), (.string("e\u{301}"), tensor(.float32))]
        #expect(try TorchStateDict.tensors(in: .dict(dict), path: "m.bin").count == 2)
        // Keys that are no strings are skipped as before.
        let plain = PickleDict()
        plain.entries = [(.string("w"), tensor(.float32)), (.int(1), .none), (.int(1), .none), (.string("v"), tensor(.float32))]
        #expect(try TorchStateDict.tensors(in: .dict(plain), path: "m.bin").map { $0.name } == ["w", "v"])
    }

    /// Python decodes a pickle's strings, and torch an archive's record
    /// names, as UTF-8 and refuses anything else; replacing the bad bytes
    /// read a tensor name (or a record) torch.load never reads.
    @Test func stringsThatAreNotUTF8AreRefused() throws {
        var reader = ByteReader([0x61, 0xFF, 0x62], at: 0, end: 3, path: "m.bin", what: "m/data.pkl")
        #expect { try reader.string(3) } throws: { "\($0)" == "m.bin: m/data.pkl holds a string that is not UTF-8 at byte 0" }
        var valid = ByteReader(Array("lé".utf8), at: 0, end: 3, path: "m.bin", what: "m/data.pkl")
        #expect(try valid.string(3) == "lé")

        let scratch = try ScratchDirectory()
        let file = scratch.path("m.bin")
        try Self.renaming("small/.format_version", to: Data([0xFF]) + Data("mall/.format_version".utf8)).write(to: file)
        #expect(Self.loadError(file) == "\(file.path): zip central directory holds a string that is not UTF-8 at byte 106")
    }

    /// torch.load refuses an archive with a record outside the folder of its data.pkl.
    @Test func recordOutsideTheArchiveFolderIsRefused() throws {
        let scratch = try ScratchDirectory()
        let file = scratch.path("m.bin")
        try Self.renaming("small/version", to: Data("other/version".utf8)).write(to: file)
        #expect(Self.loadError(file) == "\(file.path): zip entry other/version lies outside the archive's folder small/")
    }

    /// small.bin with every occurrence of record name `name` (local header
    /// and central directory) replaced by `replacement` of the same length.
    static func renaming(_ name: String, to replacement: Data) throws -> Data {
        var bytes = try Data(contentsOf: pickle("small.bin"))
        let old = Data(name.utf8)
        var start = bytes.startIndex
        while let range = bytes.range(of: old, in: start..<bytes.endIndex) {
            bytes.replaceSubrange(range, with: replacement)
            start = range.upperBound
        }
        return bytes
    }

    /// torch.load calls torch._utils' rebuild functions with the arguments
    /// the pickle gives, and they take a fixed number; one more or fewer
    /// fails there (a pickle torch.load refuses was read).
    @Test func rebuildCallsTakeTorchsArgumentCounts() throws {
        let storage = PickleValue.storage(TorchStorageReference(element: .float32, key: "0", count: 6))
        let head: [PickleValue] = [storage, .int(0), .tuple([.int(2), .int(3)], depth: 1), .tuple([.int(3), .int(1)], depth: 1)]
        let rest: [PickleValue] = [.bool(false), .dict(PickleDict()), .global(.dtype(.float32, name: "float32")), .none]
        func call(_ function: TorchGlobal, _ count: Int) -> Bool {
            (try? TorchRebuild.call(function, Array((head + rest).prefix(count)), path: "m.bin", pickleName: "m/data.pkl")) != nil
        }
        #expect((3...8).filter { call(.rebuildTensor, $0) } == [4])
        #expect((3...8).filter { call(.rebuildTensorV2, $0) } == [6, 7])
        let v3: [PickleValue] = head + [.bool(false), .dict(PickleDict()), .global(.dtype(.float32, name: "float32")), .none, .none]
        #expect((3...9).filter { (try? TorchRebuild.call(.rebuildTensorV3, Array(v3.prefix($0)), path: "m", pickleName: "p")) != nil } == [7, 8])
        #expect {
            try TorchRebuild.call(.rebuildTensorV2, Array(head.prefix(4)) + [.bool(false)], path: "m.bin", pickleName: "m/data.pkl")
        } throws: { "\($0)" == "m.bin: m/data.pkl: torch._utils._rebuild_tensor_v2 called with 5 arguments, expected 6 or 7" }
        let tensor = try TorchRebuild.call(.rebuildTensor, head, path: "m", pickleName: "p")
        let parameter: [PickleValue] = [tensor, .bool(false), .dict(PickleDict()), .none, .none]
        #expect((1...5).filter { (try? TorchRebuild.call(.rebuildParameter, Array(parameter.prefix($0)), path: "m", pickleName: "p")) != nil } == [3, 4])
    }

    /// torch.load unpacks a storage's persistent id into exactly its fields:
    /// five in the zip format, six (with view_metadata) in the legacy one.
    @Test func persistentIdsHaveTorchsFieldCount() throws {
        let fields: [PickleValue] = [.string("storage"), .global(.storageClass(.float32, name: "FloatStorage")), .string("0"), .string("cpu"), .int(6), .none, .none]
        func read(_ count: Int, legacy: Bool) -> Bool {
            (try? TorchRebuild.storage(.tuple(Array(fields.prefix(count)), depth: 1), legacy: legacy, path: "m.bin", pickleName: "p")) != nil
        }
        #expect((4...7).filter { read($0, legacy: false) } == [5])
        #expect((4...7).filter { read($0, legacy: true) } == [6])
        #expect {
            try TorchRebuild.storage(.tuple(Array(fields.prefix(6)), depth: 1), path: "m.bin", pickleName: "m/data.pkl")
        } throws: {
            "\($0)" == "m.bin: m/data.pkl: persistent id is a tuple of 6 fields, not a ('storage', type, key, location, numel) tuple"
        }
    }

    @Test func unfinishedFilesHaveNoExpectedLength() throws {
        let small = Self.pickle("small.bin")
        let size = try FileManager.default.attributesOfItem(atPath: small.path)[.size] as! Int
        #expect(try TorchCheckpointFile.expectedLength(path: small.path) == size)
        #expect(try TorchCheckpointFile.expectedLength(path: Self.pickle("truncated.bin").path) == nil)
        let legacy = FixtureFiles.model("qwen2-bf16-legacy").appendingPathComponent("pytorch_model.bin")
        #expect(try TorchCheckpointFile.expectedLength(path: legacy.path) != nil)

        // A legacy file cut inside its storages.
        let scratch = try ScratchDirectory()
        let cut = scratch.path("cut.bin")
        let data = try Data(contentsOf: legacy)
        try data.prefix(data.count - 100).write(to: cut)
        #expect(try TorchCheckpointFile.expectedLength(path: cut.path) == nil)
        #expect(Self.loadError(cut).contains("truncated"))
    }

    @Test func discoveryTellsUnfinishedBinCheckpoints() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1, model: "llama-f32-bin")
        try series.add(step: 2, model: "gpt_neox-bf16-bin")
        let cut = try series.add(step: 3, model: "llama-f32-bin")
        let weights = cut.appendingPathComponent("pytorch_model.bin")
        let data = try Data(contentsOf: weights)
        try data.prefix(data.count / 2).write(to: weights)
        let sharded = try series.add(step: 4, model: "gpt_neox-bf16-bin")
        let shard = sharded.appendingPathComponent("pytorch_model-00002-of-00002.bin")
        try Data(try Data(contentsOf: shard).dropLast(10)).write(to: shard)

        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == ["checkpoint-1", "checkpoint-2"])
        #expect(result.incomplete.map(\.name) == ["checkpoint-3", "checkpoint-4"])
        #expect(result.incomplete[0].reason.contains("pytorch_model.bin"))
        #expect(result.incomplete[1].reason.contains("pytorch_model-00002-of-00002.bin"))
    }

    @Test func scoreCommandReadsBinDirectory() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("scores.h5")
        let (seqLen, samples) = FixtureFiles.textSettings("llama-f32")
        let result = try DroptraceCommand.run([
            "score", FixtureFiles.model("llama-f32-bin").path, "--calibration", FixtureFiles.calibrationText.path,
            "--seq-len", "\(seqLen)", "--samples", "\(samples)", "--output", output.path, "--json", "--threads", "2",
        ])
        try #require(result.status == 0, "\(result.stderr)")
        let reference = try #require(FixtureFiles.scores("llama-f32", "text", "float32_compute"))
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let scores = json["scores"] as! [String: [Double]]
        let gap = (json["block_gap"] as! [[Any]]).map { $0.map { ($0 as? NSNumber)?.doubleValue ?? .nan } }
        let difference = reference.maxDifference(
            attention: scores["attention"]!, mlp: scores["mlp"]!, block: scores["block"]!, blockGap: gap)
        #expect(difference <= ScoringReferenceTests.float32Tolerance, "\(difference)")
    }

    @Test func scoreCommandNamesTheRefusedFile() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32-bin", as: "evil")
        let weights = model.appendingPathComponent("pytorch_model.bin")
        try FileManager.default.removeItem(at: weights)
        try FileManager.default.copyItem(at: Self.pickle("os_system.bin"), to: weights)
        let result = try DroptraceCommand.run([
            "score", model.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("s.h5").path,
        ])
        #expect(result.status != 0)
        #expect(result.stderr.contains("pytorch_model.bin: refusing to load") && result.stderr.contains("os.system"), "\(result.stderr)")
    }
}

/// Zip archives torch.load refuses, built from small.bin: refused as it refuses them,
/// not read with the entries droptrace happens to use.
@Suite struct TorchZipStrictnessTests {
    static func small() throws -> [UInt8] { [UInt8](try Data(contentsOf: PyTorchCheckpointTests.pickle("small.bin"))) }

    static func u16(_ bytes: [UInt8], _ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
    static func u32(_ bytes: [UInt8], _ at: Int) -> Int { u16(bytes, at) | u16(bytes, at + 2) << 16 }
    static func put32(_ bytes: inout [UInt8], _ at: Int, _ value: Int) {
        for i in 0..<4 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }

    /// The end-of-central-directory record (small.bin has no comment).
    static func endRecord(_ bytes: [UInt8]) -> Int { bytes.count - 22 }

    /// The central directory record of entry `name`: its start and length.
    static func centralRecord(_ name: String, in bytes: [UInt8]) -> (start: Int, length: Int) {
        var at = u32(bytes, endRecord(bytes) + 16)
        while true {
            let length = 46 + u16(bytes, at + 28) + u16(bytes, at + 30) + u16(bytes, at + 32)
            if Array(bytes[(at + 46)..<(at + 46 + u16(bytes, at + 28))]) == Array(name.utf8) { return (at, length) }
            at += length
        }
    }

    static func error(_ bytes: [UInt8]) throws -> String {
        let scratch = try ScratchDirectory()
        let file = scratch.path("m.bin")
        try Data(bytes).write(to: file)
        return PyTorchCheckpointTests.loadError(file).replacingOccurrences(of: file.path + ": ", with: "")
    }

    /// Python's zipfile takes the last of two same-named entries, torch's reader may take the first.
    @Test func twoEntriesOfOneNameAreRefused() throws {
        var bytes = try Self.small()
        let record = Self.centralRecord("small/data/0", in: bytes)
        bytes.insert(contentsOf: bytes[record.start..<(record.start + record.length)], at: record.start + record.length)
        let end = Self.endRecord(bytes)
        bytes[end + 8] += 1
        bytes[end + 10] += 1
        Self.put32(&bytes, end + 12, Self.u32(bytes, end + 12) + record.length)
        // torch.save also writes the ZIP64 records: the locator's pointer and the record's count and size.
        let locator = end - 20
        if Self.u32(bytes, locator) == 0x0706_4b50 {
            let zip64 = Self.u32(bytes, locator + 8) + record.length
            Self.put32(&bytes, locator + 8, zip64)
            bytes[zip64 + 24] += 1
            bytes[zip64 + 32] += 1
            Self.put32(&bytes, zip64 + 40, Self.u32(bytes, zip64 + 40) + record.length)
        }
        #expect(try Self.error(bytes) == "zip archive holds two entries named small/data/0; the file is damaged")
    }

    /// miniz refuses the archive over an encrypted entry even if it is never read.
    /// Encrypted (flag bit 0), strongly encrypted (bit 6) or with its local header masked (bit 13).
    @Test(arguments: [(8, UInt8(0x01)), (8, 0x40), (9, 0x20)])
    func anEncryptedEntryIsRefusedEvenUnread(byte: Int, bit: UInt8) throws {
        var bytes = try Self.small()
        bytes[Self.centralRecord("small/.format_version", in: bytes).start + byte] |= bit
        #expect(try Self.error(bytes) == "zip entry small/.format_version is encrypted")
    }

    /// The archive's disk numbers, or an entry's (miniz takes 0 or 1 there).
    /// torch.save writes ZIP64 records, whose fields miniz reads in place of
    /// the classic record's (changed there, torch.load reads the file).
    @Test func aMultiDiskArchiveIsRefused() throws {
        let multiDisk = "zip archive spans several disks, which torch.load does not read; the file is damaged"
        var classic = try Self.small()
        classic[Self.endRecord(classic) + 4] = 1
        #expect(try Self.error(classic) == "(no error)")
        let locator = Self.endRecord(classic) - 20, zip64 = Self.u32(classic, locator + 8)
        // Both disk numbers 1 is one disk, numbered 1; its entries (on disk 0) are then on another.
        for (offset, value) in [(zip64 + 16, 1), (zip64 + 20, 1), (locator + 16, 2), (locator + 16, 0)] {
            var bytes = try Self.small()
            Self.put32(&bytes, offset, value)
            #expect(try Self.error(bytes) == multiDisk, "byte \(offset) = \(value)")
        }
        var entries = try Self.small()
        Self.put32(&entries, zip64 + 24, Self.u32(entries, zip64 + 24) + 1)  // entries on this disk ≠ entries
        #expect(try Self.error(entries) == multiDisk)
        var entry = try Self.small()
        let record = Self.centralRecord("small/data/0", in: entry).start
        entry[record + 34] = 1
        #expect(try Self.error(entry) == "(no error)")
        entry[record + 34] = 2
        #expect(try Self.error(entry) == "zip entry small/data/0 lies on disk 2: the archive spans several disks, which torch.load does not read; "
            + "the file is damaged")
    }

    /// torch assigns it to tensor.requires_grad, which takes a bool only.
    @Test func requiresGradOtherThanABoolIsRefused() throws {
        let storage = PickleValue.storage(TorchStorageReference(element: .float32, key: "0", count: 6))
        let arguments: [PickleValue] = [storage, .int(0), .tuple([.int(2), .int(3)], depth: 1), .tuple([.int(3), .int(1)], depth: 1),
                                        .list(PickleList()), .dict(PickleDict())]
        #expect {
            try TorchRebuild.call(.rebuildTensorV2, arguments, path: "m.bin", pickleName: "m/data.pkl")
        } throws: { "\($0)" == "m.bin: m/data.pkl: torch._utils._rebuild_tensor_v2 called with requires_grad a list, not a bool" }
        let tensor = try TorchRebuild.call(.rebuildTensor, Array(arguments.prefix(4)), path: "m", pickleName: "p")
        #expect(throws: DroptraceError.self) {
            try TorchRebuild.call(.rebuildParameter, [tensor, .int(1), .dict(PickleDict())], path: "m", pickleName: "p")
        }
    }

    /// With the end record there, the whole directory was written: a damaged record is not a write in progress.
    @Test func aDamagedDirectoryRecordIsNotTakenForAnUnfinishedFile() throws {
        var bytes = try Self.small()
        bytes[Self.centralRecord("small/version", in: bytes).start] = 0
        let scratch = try ScratchDirectory()
        let file = scratch.path("m.bin")
        try Data(bytes).write(to: file)
        #expect(try TorchCheckpointFile.expectedLength(path: file.path) == bytes.count)
        #expect(PyTorchCheckpointTests.loadError(file).contains("zip central directory is damaged"))
    }

    /// small.bin with the bytes of stored record `name` replaced by `contents` (of the same length).
    static func patching(_ name: String, with contents: [UInt8]) throws -> [UInt8] {
        var bytes = try small()
        let offset = u32(bytes, centralRecord(name, in: bytes).start + 42)
        let start = offset + 30 + u16(bytes, offset + 26) + u16(bytes, offset + 28)
        precondition(u32(bytes, centralRecord(name, in: bytes).start + 24) == contents.count)
        bytes.replaceSubrange(start..<(start + contents.count), with: contents)
        return bytes
    }

    /// The records torch.load reads besides the pickle and storages: refused
    /// as it refuses them (they were never read, and the file scored, exit 0).
    @Test(arguments: [
        ("small/version", "x\n", "zip entry small/version holds \"x\\u{a}\", which torch.load cannot parse as a version number"),
        ("small/version", "99", "zip entry small/version gives archive format version 99; torch.load reads 1 to 10"),
        ("small/version", "0\n", "zip entry small/version gives archive format version 0; torch.load reads 1 to 10"),
        // std::stoull wraps a minus sign around.
        ("small/version", "-1", "zip entry small/version gives archive format version 18446744073709551615; torch.load reads 1 to 10"),
        ("small/.storage_alignment", "6\u{0}", "zip entry small/.storage_alignment holds \"6\\u{0}\", which is not an integer as torch.load reads it"),
        ("small/.storage_alignment", "6_", "zip entry small/.storage_alignment holds \"6_\", which is not an integer as torch.load reads it"),
        ("small/byteorder", "middle", "zip entry small/byteorder holds \"middle\" instead of \"little\" or \"big\""),
    ])
    func recordsTorchLoadReadsAreCheckedAsItChecksThem(name: String, contents: String, message: String) throws {
        #expect(try Self.error(try Self.patching(name, with: Array(contents.utf8))) == message)
    }

    /// What torch.load reads in those records all the same: std::stoull's
    /// whitespace, sign and trailing text; Python int()'s whitespace, sign and underscores.
    @Test(arguments: [("small/version", " 3"), ("small/version", "+3"), ("small/version", "3x"), ("small/.storage_alignment", "+6"),
                      ("small/.storage_alignment", "6 "), ("small/.storage_alignment", "\t6")])
    func recordsTorchLoadAcceptsAreRead(name: String, contents: String) throws {
        #expect(try Self.error(try Self.patching(name, with: Array(contents.utf8))) == "(no error)")
    }

    @Test func aMissingVersionOrAnIdentifierNotUTF8IsRefused() throws {
        let missing = try PyTorchCheckpointTests.renaming("small/version", to: Data("small/versioX".utf8))
        #expect(try Self.error([UInt8](missing)) == "zip archive has no small/version record, which torch.load requires; the file is damaged")
        var identifier = Array(repeating: UInt8(ascii: "7"), count: 40)
        identifier[0] = 0xFF
        #expect(try Self.error(try Self.patching("small/.data/serialization_id", with: identifier))
                == "zip entry small/.data/serialization_id is not UTF-8 text, which torch.load refuses")
    }

    /// miniz checks every directory record when it opens the archive: a
    /// stored entry (method and time 0) whose two sizes differ, data without
    /// a compressed size, data past the end of the file. Such an entry that
    /// droptrace never reads (`version`) went unnoticed.
    @Test func directoryRecordsAreCheckedAsMinizChecksThem() throws {
        let record = Self.centralRecord("small/version", in: try Self.small()).start
        var sizes = try Self.small()
        Self.put32(&sizes, record + 20, 3)
        #expect(try Self.error(sizes) == "zip entry small/version declares 3 bytes stored for 2 bytes of data; the file is damaged")
        var empty = try Self.small()
        Self.put32(&empty, record + 20, 0)
        #expect(try Self.error(empty) == "zip entry small/version declares 0 bytes stored for 2 bytes of data; the file is damaged")
        // Dated, a stored entry's sizes are not compared (miniz reads method and time as one number).
        var dated = sizes
        dated[record + 12] = 1
        #expect(try Self.error(dated) != "zip entry small/version declares 3 bytes stored for 2 bytes of data; the file is damaged")
        var past = try Self.small()
        Self.put32(&past, record + 42, past.count)
        #expect(try Self.error(past) == "zip entry small/version (2 bytes, its header at byte \(past.count)) ends past the end of the file of "
            + "\(past.count) bytes; the file is truncated or damaged")
    }
}

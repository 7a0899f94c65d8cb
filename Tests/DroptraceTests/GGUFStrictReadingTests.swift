import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import Testing
import Tokenization

/// Edits of a fixture GGUF file's metadata in its bytes (fixtures aligned to
/// 32 with a `general.name`, which absorbs the padding; see
/// `ConfigValidationTests.spliceMetadata`).
enum GGUFBytes {
    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

    /// A GGUF string: length, then the bytes.
    static func string(_ bytes: [UInt8]) -> [UInt8] { le(UInt64(bytes.count)) + bytes }
    static func string(_ text: String) -> [UInt8] { string(Array(text.utf8)) }

    /// A typed value: type id, then the payload.
    static func value(_ type: GGUFType, _ payload: [UInt8]) -> [UInt8] { le(type.rawValue) + payload }

    /// An array value of `count` elements of `element` type, payloads concatenated.
    static func array(_ element: GGUFType, count: Int, _ payload: [UInt8]) -> [UInt8] {
        le(GGUFType.array.rawValue) + le(element.rawValue) + le(UInt64(count)) + payload
    }

    static func fixture(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: FixtureFiles.root.appendingPathComponent(name)))
    }

    /// Bytes a value of `type` takes at `offset` (its payload, after the type).
    static func payloadLength(_ bytes: [UInt8], type: UInt32, at offset: Int) -> Int {
        func u64(_ at: Int) -> Int { bytes[at..<(at + 8)].reversed().reduce(0) { $0 << 8 | Int($1) } }
        switch type {
        case 0, 1, 7: return 1
        case 2, 3: return 2
        case 4, 5, 6: return 4
        case 10, 11, 12: return 8
        case 8: return 8 + u64(offset)
        case 9:
            let element = bytes[offset..<(offset + 4)].reversed().reduce(0) { $0 << 8 | UInt32($1) }
            var end = offset + 12
            for _ in 0..<u64(offset + 4) { end += payloadLength(bytes, type: element, at: end) }
            return end - offset
        default: fatalError("type \(type)")
        }
    }

    /// Replaces metadata `key`'s value (type and payload) by `typeAndValue`.
    static func replaceValue(_ bytes: inout [UInt8], key: String, with typeAndValue: [UInt8]) throws {
        let typeOffset = try ConfigValidationTests.metadataValueOffset(bytes, key: key)
        let type = bytes[typeOffset..<(typeOffset + 4)].reversed().reduce(0) { $0 << 8 | UInt32($1) }
        let length = 4 + payloadLength(bytes, type: type, at: typeOffset + 4)
        try ConfigValidationTests.spliceMetadata(&bytes, at: typeOffset, length: length, with: typeAndValue)
    }

    /// Adds a key/value pair (`pair`: key string, type, payload) before the others.
    static func insertPair(_ bytes: inout [UInt8], _ pair: [UInt8]) throws {
        let count = bytes[16..<24].reversed().reduce(0) { $0 << 8 | UInt64($1) }
        bytes.replaceSubrange(16..<24, with: le(count + 1))
        try ConfigValidationTests.spliceMetadata(&bytes, at: 24, length: 0, with: pair)
    }

    /// A tensor info as stored: its ggml dimensions (fastest first), type
    /// id and where its offset field sits.
    struct TensorInfo {
        let dimensions: [Int]
        let type: UInt32
        let offsetField: Int

        /// Bytes of a float tensor (F32, F16, BF16).
        var size: Int { dimensions.reduce(1, *) * [0: 4, 1: 2, 30: 2][type]! }
    }

    /// The tensor infos of a file and the offset just past them.
    static func tensorInfos(_ bytes: [UInt8]) -> (infos: [TensorInfo], end: Int) {
        func u64(_ at: Int) -> Int { bytes[at..<(at + 8)].reversed().reduce(0) { $0 << 8 | Int($1) } }
        func u32(_ at: Int) -> UInt32 { bytes[at..<(at + 4)].reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        var at = 24
        for _ in 0..<u64(16) {
            at += 8 + u64(at)
            let type = u32(at)
            at += 4 + payloadLength(bytes, type: type, at: at + 4)
        }
        var infos: [TensorInfo] = []
        for _ in 0..<u64(8) {
            at += 8 + u64(at)
            let dimensions = (0..<Int(u32(at))).map { u64(at + 4 + 8 * $0) }
            at += 4 + 8 * dimensions.count
            infos.append(TensorInfo(dimensions: dimensions, type: u32(at), offsetField: at + 4))
            at += 12
        }
        return (infos, at)
    }

    static func padded(_ count: Int) -> Int { (count + 31) / 32 * 32 }

    /// Rewrites the tensor infos' offsets of a float file (F32, F16, BF16) as
    /// llama.cpp lays the tensors out, one after another padded to 32, after
    /// an edit changed a tensor's size; the data is left where it is, and
    /// the file ends where the laid-out data does.
    static func layOutTensors(_ bytes: inout [UInt8]) {
        let (infos, end) = tensorInfos(bytes)
        var next = 0
        for info in infos {
            bytes.replaceSubrange(info.offsetField..<(info.offsetField + 8), with: le(UInt64(next)))
            next += padded(info.size)
        }
        bytes.removeSubrange(min(bytes.count, padded(end) + next)...)
    }

    /// A float file (aligned to 32) with an F32 tensor `name` of ggml
    /// dimensions `dimensions` holding `values` added after the others, laid
    /// out as llama.cpp's writer would.
    static func addingTensor(_ bytes: [UInt8], name: String, dimensions: [Int], values: [Float]) -> [UInt8] {
        let (infos, end) = tensorInfos(bytes)
        let dataLength = infos.map(\.size).map(padded).reduce(0, +)
        var result = Array(bytes[..<end])
        result.replaceSubrange(8..<16, with: le(UInt64(infos.count + 1)))
        result += string(name) + le(UInt32(dimensions.count)) + dimensions.flatMap { le(UInt64($0)) } + le(UInt32(0)) + le(UInt64(dataLength))
        result += [UInt8](repeating: 0, count: padded(result.count) - result.count)
        let data = Array(bytes[padded(end)...].prefix(dataLength))
        result += data + [UInt8](repeating: 0, count: dataLength - data.count)
        return result + values.flatMap { le($0.bitPattern) }
    }

    /// `bytes` opened as a GGUF checkpoint from a scratch file.
    static func open(_ bytes: [UInt8], in scratch: ScratchDirectory) throws -> Checkpoint {
        let file = scratch.path("edited.gguf")
        try Data(bytes).write(to: file)
        return try Checkpoint(location: file)
    }

    /// The error `bytes` are refused with as a GGUF checkpoint (checked to name
    /// the file), or nil when they are read.
    static func openingError(_ bytes: [UInt8]) throws -> DroptraceError? {
        let scratch = try ScratchDirectory()
        do {
            _ = try open(bytes, in: scratch)
            return nil
        } catch let error as DroptraceError {
            #expect(error.path == scratch.path("edited.gguf").path, "\(error)")
            return error
        }
    }

    /// The UInt32 value of metadata `key`.
    static func uint32(_ bytes: [UInt8], key: String) throws -> UInt32 {
        let at = try ConfigValidationTests.metadataValueOffset(bytes, key: key) + 4
        return bytes[at..<(at + 4)].reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
}

/// GGUF metadata keys droptrace uses, stored as another type than llama.cpp
/// reads them as: llama.cpp's loader refuses the model ("key ... has wrong
/// type"), so droptrace does too, naming the key, the type found and the
/// type expected, instead of converting (an epsilon stored as UINT32 was read
/// as that integer, a token id stored as INT32 as a token id).
@Suite struct GGUFMetadataTypeTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var key: String
        /// The replacement value, built from the key's UInt32 value for counts.
        var value: @Sendable (UInt32) -> [UInt8]
        var found: String
        var expected: String
        var testDescription: String { "\(key) as \(found)" }
    }

    static let modelCases: [Case] = [
        Case(key: "llama.attention.layer_norm_rms_epsilon", value: { _ in GGUFBytes.value(.uint32, GGUFBytes.le(UInt32(1))) },
             found: "UINT32", expected: "FLOAT32"),
        Case(key: "llama.rope.freq_base", value: { _ in GGUFBytes.value(.float64, GGUFBytes.le(Double(10_000).bitPattern)) },
             found: "FLOAT64", expected: "FLOAT32"),
        Case(key: "llama.block_count", value: { GGUFBytes.value(.int32, GGUFBytes.le(Int32($0))) }, found: "INT32", expected: "UINT32"),
        Case(key: "llama.block_count", value: { GGUFBytes.value(.float32, GGUFBytes.le(Float($0).bitPattern)) },
             found: "FLOAT32", expected: "UINT32"),
        Case(key: "llama.context_length", value: { GGUFBytes.value(.uint64, GGUFBytes.le(UInt64($0))) }, found: "UINT64", expected: "UINT32"),
        Case(key: "llama.embedding_length", value: { GGUFBytes.value(.string, GGUFBytes.string("\($0)")) }, found: "STRING", expected: "UINT32"),
        Case(key: "llama.rope.dimension_count", value: { GGUFBytes.value(.uint16, GGUFBytes.le(UInt16($0))) }, found: "UINT16", expected: "UINT32"),
        Case(key: "llama.attention.head_count_kv", value: { GGUFBytes.value(.int32, GGUFBytes.le(Int32($0))) }, found: "INT32",
             expected: "UINT32, or an ARRAY of UINT32 or INT32 with one value per block"),
        Case(key: "llama.attention.head_count", value: { n in GGUFBytes.array(.float32, count: 5, (0..<5).flatMap { _ in GGUFBytes.le(Float(n).bitPattern) }) },
             found: "ARRAY of FLOAT32", expected: "UINT32, or an ARRAY of UINT32 or INT32 with one value per block"),
    ]

    @Test(arguments: modelCases)
    func modelKeyOfAnotherTypeIsRefused(_ test: Case) throws {
        let scratch = try ScratchDirectory()
        var bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        let original = try GGUFBytes.uint32(bytes, key: test.key)
        try GGUFBytes.replaceValue(&bytes, key: test.key, with: test.value(original))
        let file = scratch.path("typed.gguf")
        try Data(bytes).write(to: file)
        #expect {
            _ = try ModelRegistry.load(try Checkpoint(location: file))
        } throws: { error in
            "\(error)" == "\(file.path): GGUF metadata key '\(test.key)' has type \(test.found), but llama.cpp reads it as \(test.expected)"
        }
    }

    /// The per-layer form llama.cpp reads: INT32 arrays as well as UINT32 ones.
    @Test func perLayerCountsMayBeAnInt32Array() throws {
        let scratch = try ScratchDirectory()
        var bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        let heads = try GGUFBytes.uint32(bytes, key: "llama.attention.head_count")
        try GGUFBytes.replaceValue(
            &bytes, key: "llama.attention.head_count", with: GGUFBytes.array(.int32, count: 5, (0..<5).flatMap { _ in GGUFBytes.le(Int32(heads)) }))
        let file = scratch.path("per-layer.gguf")
        try Data(bytes).write(to: file)
        let loaded = try ModelRegistry.load(try Checkpoint(location: file))
        #expect(loaded.layerCount == 5)
    }

    static let vocabularyCases: [Case] = [
        Case(key: "tokenizer.ggml.bos_token_id", value: { GGUFBytes.value(.int32, GGUFBytes.le(Int32($0))) }, found: "INT32", expected: "UINT32"),
        Case(key: "tokenizer.ggml.eos_token_id", value: { GGUFBytes.value(.uint64, GGUFBytes.le(UInt64($0))) }, found: "UINT64", expected: "UINT32"),
        // Was taken for no pre-tokenizer at all: llama.cpp's default instead of llama-bpe.
        Case(key: "tokenizer.ggml.pre", value: { _ in GGUFBytes.value(.uint32, GGUFBytes.le(UInt32(1))) }, found: "UINT32", expected: "STRING"),
        Case(key: "tokenizer.ggml.model", value: { _ in GGUFBytes.value(.uint32, GGUFBytes.le(UInt32(2))) }, found: "UINT32", expected: "STRING"),
        Case(key: "tokenizer.ggml.add_bos_token", value: { _ in GGUFBytes.value(.uint8, [1]) }, found: "UINT8", expected: "BOOL"),
        // One byte per type, read by llama.cpp as four.
        Case(key: "tokenizer.ggml.token_type", value: { _ in GGUFBytes.array(.uint8, count: 512, [UInt8](repeating: 1, count: 512)) },
             found: "ARRAY of UINT8", expected: "ARRAY of INT32 or UINT32"),
        Case(key: "tokenizer.ggml.merges", value: { _ in GGUFBytes.array(.uint32, count: 1, GGUFBytes.le(UInt32(0))) },
             found: "ARRAY of UINT32", expected: "ARRAY of STRING"),
    ]

    @Test(arguments: vocabularyCases)
    func vocabularyKeyOfAnotherTypeIsRefused(_ test: Case) throws {
        let scratch = try ScratchDirectory()
        var bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        let original = (try? GGUFBytes.uint32(bytes, key: test.key)) ?? 0
        try GGUFBytes.replaceValue(&bytes, key: test.key, with: test.value(original))
        let file = scratch.path("typed.gguf")
        try Data(bytes).write(to: file)
        // The special ids are read with the configuration (its pad/bos/eos ids), the rest with the vocabulary.
        #expect {
            _ = try VocabularySpec(gguf: try Checkpoint(location: file).gguf!)
        } throws: { error in
            "\(error)" == "\(file.path): GGUF metadata key '\(test.key)' has type \(test.found), but llama.cpp reads it as \(test.expected)"
        }
    }

    /// Scores are float32 data to llama.cpp: an INT32 array is refused, not converted.
    @Test func scoresAreFloat32() throws {
        let scratch = try ScratchDirectory()
        let bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        for (name, element) in [("scores-f32.gguf", GGUFType.float32), ("scores-i32.gguf", .int32)] {
            var edited = bytes
            try GGUFBytes.insertPair(
                &edited, GGUFBytes.string("tokenizer.ggml.scores") + GGUFBytes.array(element, count: 512, [UInt8](repeating: 0, count: 4 * 512)))
            let file = scratch.path(name)
            try Data(edited).write(to: file)
            let gguf = try #require(try Checkpoint(location: file).gguf)
            if element == .float32 {
                #expect(try VocabularySpec(gguf: gguf).scores?.count == 512)
            } else {
                #expect {
                    _ = try VocabularySpec(gguf: gguf)
                } throws: { error in
                    "\(error)" == "\(file.path): GGUF metadata key 'tokenizer.ggml.scores' has type ARRAY of INT32, but llama.cpp reads it as ARRAY of FLOAT32"
                }
            }
        }
    }

    /// llama.cpp and gguf-py read `general.alignment` as a UINT32 only.
    @Test(arguments: [GGUFType.uint32, .uint64, .int32])
    func alignmentIsAUInt32(_ type: GGUFType) throws {
        let scratch = try ScratchDirectory()
        var bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        let payload = type == .uint64 ? GGUFBytes.le(UInt64(32)) : GGUFBytes.le(UInt32(32))
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("general.alignment") + GGUFBytes.value(type, payload))
        let file = scratch.path("aligned.gguf")
        try Data(bytes).write(to: file)
        if type == .uint32 {
            _ = try GGUFFile(path: file.path)
        } else {
            #expect {
                _ = try GGUFFile(path: file.path)
            } throws: { error in
                "\(error)" == "\(file.path): GGUF metadata key 'general.alignment' has type \(type.name), but llama.cpp reads it as UINT32"
            }
        }
    }
}

/// Strings in a GGUF file must be UTF-8: keys, values, tensor names and
/// vocabulary tokens with other bytes were read with U+FFFD in their place
/// (another key or name, or a token that no longer matches its merges) and
/// are refused naming what holds them, as gguf-py and transformers refuse them.
@Suite struct GGUFStringEncodingTests {
    /// `bytes` with the byte at `offset` within the first occurrence of `text` set to 0xFF.
    static func damaging(_ bytes: [UInt8], _ text: String, at offset: Int) throws -> [UInt8] {
        let pattern = Array(text.utf8)
        let start = try #require((0...(bytes.count - pattern.count)).first { bytes[$0..<($0 + pattern.count)].elementsEqual(pattern) })
        var copy = bytes
        copy[start + offset] = 0xFF
        return copy
    }

    static let cases: [(text: String, offset: Int, message: String)] = [
        ("llama.context_length", 0, "metadata key 2 ('\u{FFFD}lama.context_length') is not valid UTF-8"),
        ("\u{5}\0\0\0\0\0\0\0llama", 12, "the value of metadata key 'general.architecture' is not valid UTF-8"),
        ("token_embd.weight", 5, "the name of tensor 1 ('token\u{FFFD}embd.weight') is not valid UTF-8"),
    ]

    @Test func stringsThatAreNotUTF8AreRefused() throws {
        let scratch = try ScratchDirectory()
        let original = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        for (index, test) in Self.cases.enumerated() {
            let file = scratch.path("bad-\(index).gguf")
            try Data(try Self.damaging(original, test.text, at: test.offset)).write(to: file)
            #expect {
                _ = try Checkpoint(location: file)
            } throws: { error in
                "\(error)" == "\(file.path): \(test.message)"
            }
        }
    }

    /// A byte-level token is made of characters standing for bytes, never of raw bytes.
    @Test func vocabularyTokenThatIsNotUTF8IsRefused() throws {
        let scratch = try ScratchDirectory()
        var bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        // Type, element type, count, then length-prefixed tokens: damage token 300's first byte.
        var at = try ConfigValidationTests.metadataValueOffset(bytes, key: "tokenizer.ggml.tokens") + 16
        for _ in 0..<300 { at += 8 + bytes[at..<(at + 8)].reversed().reduce(0) { $0 << 8 | Int($1) } }
        bytes[at + 8] = 0xC3
        let file = scratch.path("token.gguf")
        try Data(bytes).write(to: file)
        #expect {
            _ = try Checkpoint(location: file)
        } throws: { error in
            "\(error)" == "\(file.path): element 300 of metadata key 'tokenizer.ggml.tokens' is not valid UTF-8"
        }
    }
}

/// A GGUF file holds the tensors its architecture creates in llama.cpp and no
/// other: llama.cpp refuses a file with more ("wrong number of tensors"), and
/// droptrace, which would ignore them, computed another model than the file
/// describes. Each error is one line naming the GGUF file (not the folder).
@Suite struct GGUFUnusedTensorTests {
    static let llama = "gguf/llama-f32.gguf"

    /// `bytes` with the first tensor name `name` renamed to `renamed` (same length).
    static func renaming(_ bytes: [UInt8], _ name: String, to renamed: String) throws -> [UInt8] {
        let (old, new) = (Array(name.utf8), Array(renamed.utf8))
        precondition(old.count == new.count)
        let at = try #require((0...(bytes.count - old.count)).first { bytes[$0..<($0 + old.count)].elementsEqual(old) })
        var copy = bytes
        copy.replaceSubrange(at..<(at + old.count), with: new)
        return copy
    }

    /// The errors of `droptrace score` on the file `bytes` (written as `name`), and the file's path.
    static func scoreErrors(_ bytes: [UInt8], in scratch: ScratchDirectory) throws -> (errors: [Substring], path: String) {
        let url = scratch.path("edited.gguf")
        try Data(bytes).write(to: url)
        let result = try DroptraceCommand.run([
            "score", url.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("s.h5").path,
        ])
        #expect(result.status == 1)
        #expect(!FileManager.default.fileExists(atPath: scratch.path("s.h5").path))
        return (result.stderr.split(separator: "\n").filter { $0.contains("error") }, url.path)
    }

    static func expectOneError(_ bytes: [UInt8], _ message: String) throws {
        let scratch = try ScratchDirectory()
        let (errors, path) = try scoreErrors(bytes, in: scratch)
        #expect(errors.count == 1 && errors[0].hasSuffix("error: \(path): \(message)"), "\(errors)")
    }

    static func scores(_ bytes: [UInt8]) throws -> ModuleScores {
        let scratch = try ScratchDirectory()
        let url = scratch.path("model.gguf")
        try Data(bytes).write(to: url)
        return try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(location: url)))
            .score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
    }

    /// A block tensor llama has no place for (same shape as the one it replaces).
    @Test func blockTensorWithNoPlaceIsRefused() throws {
        let bytes = try Self.renaming(try GGUFBytes.fixture(Self.llama), "blk.1.attn_v.weight", to: "blk.1.attn_w.weight")
        try Self.expectOneError(
            bytes, "tensor 'blk.1.attn_w.weight' has no place in a llama model as transformers builds it; refused rather than ignored (llama.cpp refuses it or, where its architecture has it as optional, reads it)")
    }

    /// Llama 3's rope factors under another name were ignored: exit 0, scores
    /// of a model without the factors.
    @Test func renamedRopeFactorsAreRefused() throws {
        let bytes = try Self.renaming(try GGUFBytes.fixture(Self.llama), "rope_freqs.weight", to: "rope_freqx.weight")
        try Self.expectOneError(
            bytes, "tensor 'rope_freqx.weight' has no place in a llama model as transformers builds it; refused rather than ignored (llama.cpp refuses it or, where its architecture has it as optional, reads it)")
    }

    /// `bytes` (the llama fixture: 5 blocks, q/o rows 48, k/v rows 24) with
    /// attention biases of `value` added to the blocks `blocks`.
    static func addingAttentionBiases(_ bytes: [UInt8], blocks: [Int], value: Float) -> [UInt8] {
        var edited = bytes
        for block in blocks {
            for (projection, rows) in [("attn_q", 48), ("attn_k", 24), ("attn_v", 24), ("attn_output", 48)] {
                edited = GGUFBytes.addingTensor(
                    edited, name: "blk.\(block).\(projection).bias", dimensions: [rows], values: Array(repeating: value, count: rows))
            }
        }
        return edited
    }

    /// Zero biases in every block make a file llama reads (attention_bias)
    /// and score as the file without them: the test's writer makes valid files.
    @Test func biasesInEveryBlockAreRead() throws {
        let original = try GGUFBytes.fixture(Self.llama)
        let zero = try Self.scores(Self.addingAttentionBiases(original, blocks: Array(0..<5), value: 0))
        let nonzero = try Self.scores(Self.addingAttentionBiases(original, blocks: Array(0..<5), value: 0.5))
        let reference = try Self.scores(original)
        #expect(zero.attention == reference.attention && zero.mlp == reference.mlp)
        #expect(nonzero.attention != reference.attention)
    }

    /// attention_bias comes from block 0; biases of a later block alone were
    /// ignored (exit 0, the scores of the model without them).
    @Test func biasesOfOneLaterBlockAreRefused() throws {
        let bytes = Self.addingAttentionBiases(try GGUFBytes.fixture(Self.llama), blocks: [3], value: 0.5)
        try Self.expectOneError(
            bytes, "tensor 'blk.3.attn_k.bias' (and 3 more of its block) is not used by the llama model the metadata describes, as transformers builds it; refused rather than ignored (llama.cpp refuses it or, where its architecture has it as optional, reads it)")
    }

    /// Block 0 sets attention_bias; a later block without the biases lacks
    /// tensors, named as the file would name them.
    @Test func biasesOfBlockZeroAloneNameTheMissingGGUFTensor() throws {
        let bytes = Self.addingAttentionBiases(try GGUFBytes.fixture(Self.llama), blocks: [0], value: 0.5)
        try Self.expectOneError(bytes, "missing tensor 'blk.1.attn_q.bias' (read as 'model.layers.1.self_attn.q_proj.bias')")
    }

    /// A vocabulary without `tokenizer.ggml.bos_token_id` that adds BOS takes
    /// llama.cpp's default id, 11 for byte-level BPE (llama.cpp through
    /// llama-cpp-python 0.3.16 gives [11, ...] on such a file); it was refused.
    @Test func aMissingBOSIdTakesLlamaCppsDefault() throws {
        let bytes = try Self.renaming(
            try GGUFBytes.fixture(Self.llama), "tokenizer.ggml.bos_token_id", to: "tokenizer.ggml.bos_token_ix")
        let scratch = try ScratchDirectory()
        let url = scratch.path("model.gguf")
        try Data(bytes).write(to: url)
        let checkpoint = try Checkpoint(location: url)
        let (tokenizer, prefix) = try CheckpointTokenizer.loadWithPrefixToken(for: checkpoint, purpose: "test", requestedBy: url.path)
        #expect(try tokenizer.encode("Hello").first == 11)
        #expect(prefix == .token(id: 11, text: tokenizer.decode([11])))
    }

    /// A special-token id beyond the vocabulary is llama.cpp's "bad special
    /// token": it loads the file with the default id (here BOS 11); the file
    /// was refused, even for token-id calibration.
    @Test func aSpecialTokenIdOutsideTheVocabularyTakesLlamaCppsDefault() throws {
        var bytes = try GGUFBytes.fixture(Self.llama)
        try ConfigValidationTests.setMetadataNumber(&bytes, key: "tokenizer.ggml.bos_token_id", to: 512)
        let scratch = try ScratchDirectory()
        let url = scratch.path("model.gguf")
        try Data(bytes).write(to: url)
        let checkpoint = try Checkpoint(location: url)
        let (tokenizer, prefix) = try CheckpointTokenizer.loadWithPrefixToken(for: checkpoint, purpose: "test", requestedBy: url.path)
        #expect(tokenizer.vocabularySize == 512)
        #expect(prefix == .token(id: 11, text: tokenizer.decode([11])))
    }

    /// A LoRA adapter written by llama.cpp's convert_lora_to_gguf.py
    /// (general.type "adapter") is named as one, not as a model lacking keys.
    @Test func anAdapterIsNamedAsOne() throws {
        var bytes = try GGUFBytes.fixture(Self.llama)
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("general.type") + GGUFBytes.value(.string, GGUFBytes.string("adapter")))
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("adapter.type") + GGUFBytes.value(.string, GGUFBytes.string("lora")))
        try Self.expectOneError(bytes, "is an adapter (lora), not a model (general.type \"adapter\"): merge it into its base "
                                    + "model (llama.cpp's llama-export-lora) and score the merged file")
    }

    /// An expert stack the file lacks is named as the file would name it,
    /// not by the expert's slice droptrace reads from it.
    @Test func aMissingExpertStackIsNamedByItsGGUFName() throws {
        let bytes = try Self.renaming(
            try GGUFBytes.fixture("gguf/qwen3_moe-f32.gguf"), "blk.0.ffn_up_exps.weight", to: "blk.0.ffn_up_exps.wexght")
        let scratch = try ScratchDirectory()
        let (errors, path) = try Self.scoreErrors(bytes, in: scratch)
        #expect(errors.count == 1 && errors[0].hasSuffix(
            "error: \(path): missing tensor 'blk.0.ffn_up_exps.weight' (read as 'model.layers.0.mlp.experts.0.up_proj.weight')"),
            "\(errors)")
    }

    /// A tensor of a known place that the family has no use for (Qwen3's MLP has no biases).
    @Test func tensorTheFamilyDoesNotReadIsRefused() throws {
        let bytes = GGUFBytes.addingTensor(try GGUFBytes.fixture("gguf/qwen3-f32.gguf"), name: "blk.0.ffn_up.bias", dimensions: [96], values: Array(repeating: 1, count: 96))
        let scratch = try ScratchDirectory()
        let (errors, path) = try Self.scoreErrors(bytes, in: scratch)
        #expect(errors.count == 1 && errors[0].hasSuffix("error: \(path): tensor 'blk.0.ffn_up.bias' is not used by the qwen3 model the metadata describes, as transformers builds it; refused rather than ignored (llama.cpp refuses it or, where its architecture has it as optional, reads it)"), "\(errors)")
    }

    /// Rope factors only where llama.cpp creates them (Llama's rope_freqs,
    /// Phi-3's long and short factors, both), and as a vector.
    @Test func ropeFactorsOnlyWhereTheArchitectureReadsThem() throws {
        let qwen3 = try GGUFBytes.fixture("gguf/qwen3-f32.gguf")
        try Self.expectOneError(
            GGUFBytes.addingTensor(qwen3, name: "rope_freqs.weight", dimensions: [6], values: Array(repeating: 2, count: 6)),
            "tensor 'rope_freqs.weight' has no place in a qwen3 model as transformers builds it; refused rather than ignored (llama.cpp refuses it or, where its architecture has it as optional, reads it)")
        try Self.expectOneError(
            GGUFBytes.addingTensor(qwen3, name: "rope_freqs.weight", dimensions: [3, 2], values: Array(repeating: 2, count: 6)),
            "tensor 'rope_freqs.weight' should be a vector of rope factors but has dimensions [3, 2]")
        let phi3 = try GGUFBytes.fixture("gguf-arch/phi3_longrope-f16.gguf")
        try Self.expectOneError(
            try Self.renaming(phi3, "rope_factors_short.weight", to: "rope_factors_shor_.weight"),
            "rope_factors_long.weight and rope_factors_short.weight come together (LongRoPE), but only rope_factors_long.weight is stored")
    }
}

/// Tensors written with trailing dimensions of size 1 (ggml order: a norm
/// [48] as [48, 1] or [48, 1, 1, 1]) are the tensors llama.cpp reads:
/// `llama_model_loader::check_tensor_dims` compares all four of ggml's
/// dimensions, one not written being 1. They read as the plain file does,
/// for norms, matrices (head-permuted, transposed, the embedding the sizes
/// come from), biases and expert stacks; a leading 1 is another shape.
@Suite struct GGUFUnitDimensionTests {
    /// `bytes` with `extra` dimensions appended to tensor `name`'s (or set
    /// to `replaced`), the data section moved to follow the longer header.
    static func editing(_ bytes: [UInt8], _ name: String, appending extra: [Int] = [], replacing replaced: [Int]? = nil) throws -> [UInt8] {
        func u64(_ at: Int) -> Int { bytes[at..<(at + 8)].reversed().reduce(0) { $0 << 8 | Int($1) } }
        func u32(_ at: Int) -> Int { bytes[at..<(at + 4)].reversed().reduce(0) { $0 << 8 | Int($1) } }
        var at = 24
        for _ in 0..<u64(16) {
            at += 8 + u64(at)
            let type = UInt32(u32(at))
            at += 4 + GGUFBytes.payloadLength(bytes, type: type, at: at + 4)
        }
        var result = Array(bytes[..<at])
        var found = false
        for _ in 0..<u64(8) {
            let nameEnd = at + 8 + u64(at)
            let tensorName = String(decoding: bytes[(at + 8)..<nameEnd], as: UTF8.self)
            let count = u32(nameEnd)
            var dimensions = (0..<count).map { u64(nameEnd + 4 + 8 * $0) }
            if tensorName == name {
                dimensions = (replaced ?? dimensions) + extra
                found = true
            }
            result += bytes[at..<nameEnd] + GGUFBytes.le(UInt32(dimensions.count)) + dimensions.flatMap { GGUFBytes.le(UInt64($0)) }
            at = nameEnd + 4 + 8 * count
            result += bytes[at..<(at + 12)]
            at += 12
        }
        #expect(found, "no tensor \(name)")
        result += [UInt8](repeating: 0, count: GGUFBytes.padded(result.count) - result.count)
        return result + bytes[GGUFBytes.padded(at)...]
    }

    static let cases: [(file: String, tensor: String, extra: [Int])] = [
        ("llama-f32.gguf", "blk.0.attn_norm.weight", [1]), ("llama-f32.gguf", "blk.0.attn_norm.weight", [1, 1, 1]),
        ("llama-f32.gguf", "output_norm.weight", [1]), ("llama-f32.gguf", "blk.1.attn_q.weight", [1, 1]),
        ("llama-f32.gguf", "blk.0.attn_k.weight", [1]), ("llama-f32.gguf", "token_embd.weight", [1]),
        ("llama-f32.gguf", "blk.0.ffn_down.weight", [1]), ("qwen2-f16.gguf", "blk.0.attn_q.bias", [1, 1]),
        ("gpt2-f16.gguf", "blk.0.attn_qkv.weight", [1]), ("gpt2-f16.gguf", "blk.0.attn_qkv.bias", [1]),
        ("qwen3_moe-f32.gguf", "blk.0.ffn_gate_exps.weight", [1]), ("olmoe-f32.gguf", "blk.1.ffn_down_exps.weight", [1]),
    ]

    @Test(arguments: cases.indices)
    func trailingUnitDimensionsReadAsThePlainFile(_ index: Int) throws {
        let (file, tensor, extra) = Self.cases[index]
        let plain = try GGUFBytes.fixture("gguf/" + file)
        let expected = try GGUFUnusedTensorTests.scores(plain)
        let scores = try GGUFUnusedTensorTests.scores(try Self.editing(plain, tensor, appending: extra))
        #expect(scores.attention == expected.attention && scores.mlp == expected.mlp && scores.block == expected.block, "\(file) \(tensor)")
    }

    /// A dimension of 1 first (ggml order), [1, 48] for a norm of 48, is
    /// not the norm's shape for llama.cpp either.
    @Test func aLeadingUnitDimensionIsAnotherShape() throws {
        let plain = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        let edited = try Self.editing(plain, "blk.0.attn_norm.weight", replacing: [1, 48])
        let scratch = try ScratchDirectory()
        let (errors, _) = try GGUFUnusedTensorTests.scoreErrors(edited, in: scratch)
        #expect(errors.count == 1 && errors[0].contains("blk.0.attn_norm.weight") && errors[0].contains("[48, 1]"), "\(errors)")
    }
}

/// The shape rule itself: ggml order, a dimension not written is 1.
@Suite struct GGUFShapeRuleTests {
    @Test func dimensionsCompareAsLlamaCppComparesThem() {
        #expect(GGUFFile.sameDimensions([48, 1], [48]) && GGUFFile.sameDimensions([48], [48, 1, 1, 1]))
        #expect(!GGUFFile.sameDimensions([1, 48], [48]) && !GGUFFile.sameDimensions([48, 2], [48]))
        #expect(GGUFFile.sameShape([1, 1, 48], [48]) && GGUFFile.sameShape([64], [1, 64]) && !GGUFFile.sameShape([48, 1], [48]))
        #expect(GGUFFile.dimensions([48], rank: 2) == [48, 1] && GGUFFile.dimensions([48, 64, 1], rank: 2) == [48, 64])
        #expect(GGUFFile.dimensions([48, 64, 2], rank: 2) == nil)
    }

    /// A shape the config implies with an outer 1 ([1, hidden]: a router of
    /// one expert) is what a GGUF tensor written without it holds, as the
    /// slice then says; other formats keep their exact shapes.
    @Test func aGGUFTensorTakesTheShapeAskedWhereLlamaCppWould() throws {
        let gguf = try Checkpoint(location: FixtureFiles.root.appendingPathComponent("gguf/llama-f32.gguf"))
        let norm = try gguf.tensor("model.norm.weight")
        #expect(norm.shape == [48])
        let asked = try gguf.tensor("model.norm.weight", shape: [1, 48])
        let (values, plain) = (try asked.floats(), try norm.floats())
        #expect(asked.shape == [1, 48] && values == plain)
        #expect(throws: DroptraceError.self) { try gguf.tensor("model.norm.weight", shape: [48, 1]) }
        let safetensors = try Checkpoint(directory: FixtureFiles.model("llama-f32"))
        #expect(throws: DroptraceError.self) { try safetensors.tensor("model.norm.weight", shape: [1, 48]) }
    }
}


/// Files llama.cpp refuses, or reads otherwise than a table's defaults would.
@Suite struct GGUFLlamaCppAgreementTests {
    static func pair(_ key: String, _ typeAndValue: [UInt8]) -> [UInt8] { GGUFBytes.string(key) + typeAndValue }

    /// gpt_neox-bf16.gguf with linear rope scaling of `factor`.
    static func neoxScaled(by factor: Float) throws -> [UInt8] {
        var bytes = try GGUFBytes.fixture("gguf/gpt_neox-bf16.gguf")
        try GGUFBytes.insertPair(&bytes, pair("gptneox.rope.scaling.type", GGUFBytes.value(.string, GGUFBytes.string("linear"))))
        try GGUFBytes.insertPair(&bytes, pair("gptneox.rope.scaling.factor", GGUFBytes.value(.float32, GGUFBytes.le(factor.bitPattern))))
        return bytes
    }

    /// llama.cpp sizes the embedding by the vocabulary ("wrong shape"): rows and tokens must agree.
    @Test func anEmbeddingOfAnotherSizeThanTheVocabularyIsRefused() throws {
        var bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        let tokens = (0..<511).flatMap { GGUFBytes.string("t\($0)") }
        try GGUFBytes.replaceValue(&bytes, key: "tokenizer.ggml.tokens", with: GGUFBytes.array(.string, count: 511, tokens))
        let message = try GGUFBytes.openingError(bytes)?.message ?? "(read)"
        #expect(message.hasPrefix("token_embd.weight has 512 rows, but the vocabulary (tokenizer.ggml.tokens) holds 511 tokens"), "\(message)")
    }

    /// llama.cpp's rope keys apply to every architecture, gptneox among them.
    @Test func gptNeoXTakesTheRopeScalingKeys() throws {
        let scratch = try ScratchDirectory()
        let config = try JSONSerialization.jsonObject(with: try GGUFBytes.open(try Self.neoxScaled(by: 4), in: scratch).configData) as! [String: Any]
        let rope = config["rope_parameters"] as! [String: Any]
        #expect(rope["rope_type"] as? String == "linear" && rope["factor"] as? Double == 4)
        #expect(rope["partial_rotary_factor"] != nil)
        let message = try GGUFBytes.openingError(try Self.neoxScaled(by: .nan))?.message ?? "(read)"
        #expect(message.contains("gptneox.rope.scaling.factor"), "\(message)")
    }

    /// Metadata arrays are bounded (values held in memory, tens of bytes each) far above any vocabulary.
    @Test func metadataArraysBeyondAnyVocabularyAreRefused() throws {
        var bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        try GGUFBytes.insertPair(&bytes, Self.pair("general.junk", GGUFBytes.array(.uint8, count: 5_000_000, [UInt8](repeating: 0, count: 5_000_000))))
        #expect(try GGUFBytes.openingError(bytes)?.message == "metadata arrays hold more than 4194304 values (at key 'general.junk'); the file is corrupt")
    }

    /// A tensor count one too low left the last entry of the table to be read
    /// as padding: the data section started 32 bytes early and every tensor
    /// was read from bytes that were not its own (garbage scores, or exit 0
    /// where they stayed finite). Bytes past the padded data are refused.
    @Test(arguments: [1, 2])
    func aTensorCountTooLowIsRefused(missing: UInt64) throws {
        var bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        let count = bytes[8..<16].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        bytes.replaceSubrange(8..<16, with: GGUFBytes.le(count - missing))
        let message = try GGUFBytes.openingError(bytes)?.message ?? "(read)"
        #expect(message.contains("bytes after the data of its \(count - missing) tensors"), "\(message)")
        #expect(message.contains("does not describe the whole file"), "\(message)")
    }

    /// Data appended to a sound file is refused the same way; the file as
    /// written (padded or not after its last tensor) is read.
    @Test func bytesAfterThePaddedDataAreRefused() throws {
        let bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        #expect(try GGUFBytes.openingError(bytes) == nil)
        let padding = GGUFBytes.padded(bytes.count) - bytes.count
        #expect(try GGUFBytes.openingError(bytes + [UInt8](repeating: 0, count: padding)) == nil)
        let message = try GGUFBytes.openingError(bytes + [UInt8](repeating: 0, count: padding + 1))?.message ?? "(read)"
        #expect(message.hasPrefix("the file has 1 byte after the data of its"), "\(message)")
    }
}

/// Keys llama.cpp reads for an architecture with an effect no Hugging Face
/// model of the type has (found by running mutated files through llama.cpp):
/// droptrace ignored them and exited 0 with another model's numbers. A value
/// that changes nothing is read.
@Suite struct GGUFLlamaCppOnlyKeyTests {
    static func float32(_ value: Float) -> [UInt8] { GGUFBytes.value(.float32, GGUFBytes.le(value.bitPattern)) }
    static func bool(_ value: Bool) -> [UInt8] { GGUFBytes.value(.bool, [value ? 1 : 0]) }
    static func uint32(_ value: UInt32) -> [UInt8] { GGUFBytes.value(.uint32, GGUFBytes.le(value)) }

    static func opening(_ fixture: String, with key: String, _ typeAndValue: [UInt8]) throws -> DroptraceError? {
        var bytes = try GGUFBytes.fixture(fixture)
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string(key) + typeAndValue)
        return try GGUFBytes.openingError(bytes)
    }

    @Test(arguments: [
        ("gguf/llama-f32.gguf", "llama.rope.scaling.attn_factor", float32(0.8), "multiply the rotary embedding's cos and sin"),
        ("gguf/qwen3-f32.gguf", "qwen3.rope.scaling.attn_factor", float32(2), "multiply the rotary embedding's cos and sin"),
        ("gguf-arch/gemma2-f16.gguf", "gemma2.rope.freq_base_swa", float32(100), "a base of its own"),
        ("gguf-arch/gpt_oss-f16.gguf", "gpt-oss.rope.freq_base_swa", float32(1000), "a base of its own"),
        ("gguf-arch/granite-f16.gguf", "granite.rope.scaling.finetuned", bool(false), "without a rotary embedding"),
        ("gguf-arch/deepseek_v2-f16.gguf", "deepseek2.attention.temperature_scale", float32(0.1), "scale the queries by 1 + scale"),
        ("gguf-arch/gemma2-f16.gguf", "gemma2.rope.dimension_count_swa", uint32(4), "a rotary width of their own"),
        ("gguf-arch/gpt_oss-f16.gguf", "gpt-oss.rope.dimension_count_swa", uint32(4), "a rotary width of their own"),
    ])
    func keyOnlyLlamaCppReadsIsRefused(fixture: String, key: String, value: [UInt8], effect: String) throws {
        let message = try Self.opening(fixture, with: key, value)?.message ?? "(read)"
        #expect(message.hasPrefix("\"\(key)\"") && message.contains(effect) && message.hasSuffix("refused rather than ignored"), "\(message)")
    }

    @Test(arguments: [
        ("gguf/llama-f32.gguf", "llama.rope.scaling.attn_factor", float32(1)),
        ("gguf-arch/granite-f16.gguf", "granite.rope.scaling.finetuned", bool(true)),
        ("gguf/llama-f32.gguf", "llama.attention.causal", bool(true)),
        ("gguf-arch/deepseek_v2-f16.gguf", "deepseek2.attention.temperature_scale", float32(0)),
        ("gguf-arch/gemma2-f16.gguf", "gemma2.rope.dimension_count_swa", uint32(16)),
    ])
    func inertValueIsRead(fixture: String, key: String, value: [UInt8]) throws {
        #expect(try Self.opening(fixture, with: key, value) == nil)
    }

    /// llama.cpp reads `attention.causal` for every architecture; false
    /// attends both ways (embedding models), which was ignored.
    @Test(arguments: [
        ("gguf/llama-f32.gguf", "llama"), ("gguf/qwen3-f32.gguf", "qwen3"), ("gguf-arch/gemma2-f16.gguf", "gemma2"),
        ("gguf/gpt2-f16.gguf", "gpt2"),
    ])
    func nonCausalAttentionIsRefused(fixture: String, architecture: String) throws {
        let message = try Self.opening(fixture, with: architecture + ".attention.causal", Self.bool(false))?.message ?? "(read)"
        #expect(message.hasPrefix("\"\(architecture).attention.causal\" is false: llama.cpp then attends both ways"), "\(message)")
    }

    /// llama.cpp's gemma2 scales its sliding layers by a factor given with
    /// rope type none (it copies the scale before resetting it); every other
    /// architecture, and droptrace, ignore the factor then.
    @Test(arguments: [(Float(4), true), (Float(1), false)])
    func gemma2FactorWithRopeTypeNone(factor: Float, refused: Bool) throws {
        var bytes = try GGUFBytes.fixture("gguf-arch/gemma2-f16.gguf")
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("gemma2.rope.scaling.type") + GGUFBytes.value(.string, GGUFBytes.string("none")))
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("gemma2.rope.scaling.factor") + Self.float32(factor))
        let message = try GGUFBytes.openingError(bytes)?.message
        #expect(refused ? message?.hasPrefix("\"gemma2.rope.scaling.factor\" is 4.0: llama.cpp reads it") == true : message == nil, "\(message ?? "(read)")")
    }

    /// A part of a gguf-split model holds only some tensors (the first, all
    /// of the metadata): refused naming the split and the merge, where it was
    /// refused for a block without tensors or, in a directory, as one of
    /// several .gguf files.
    @Test func aPartOfASplitModelIsRefusedWithTheMerge() throws {
        var bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("split.no") + GGUFBytes.value(.uint16, GGUFBytes.le(UInt16(0))))
        try GGUFBytes.insertPair(&bytes, GGUFBytes.string("split.count") + GGUFBytes.value(.uint16, GGUFBytes.le(UInt16(2))))
        let message = try GGUFBytes.openingError(bytes)?.message ?? "(read)"
        #expect(message.hasPrefix("is part 1 of 2 of a split GGUF model") && message.contains("llama-gguf-split --merge"), "\(message)")
        var whole = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        try GGUFBytes.insertPair(&whole, GGUFBytes.string("split.count") + GGUFBytes.value(.uint16, GGUFBytes.le(UInt16(1))))
        #expect(try GGUFBytes.openingError(whole) == nil)
    }

    /// Without `attention.head_count_kv` llama.cpp takes head_count; when
    /// that does not fit the key projections the error says the key is absent.
    @Test func absentKeyValueHeadCountIsNamedAsAbsent() throws {
        let bytes = try GGUFUnusedTensorTests.renaming(
            try GGUFBytes.fixture("gguf/llama-f32.gguf"), "llama.attention.head_count_kv", to: "llama.attention.head_count_kx")
        let message = try GGUFBytes.openingError(bytes)?.message ?? "(read)"
        #expect(message.hasPrefix("\"llama.attention.head_count_kv\" is absent, so head_count as llama.cpp defaults it, which does not fit"), "\(message)")
    }

    /// A gemma2 file without `attention.sliding_window` has llama.cpp's
    /// Gemma 2 window, 4096 (it was refused as a missing key).
    @Test func gemma2WithoutAWindowHasGemma2sWindow() throws {
        let bytes = try GGUFUnusedTensorTests.renaming(
            try GGUFBytes.fixture("gguf-arch/gemma2-f16.gguf"), "gemma2.attention.sliding_window", to: "gemma2.attention.sliding_windox")
        let scratch = try ScratchDirectory()
        let config = try JSONSerialization.jsonObject(with: try GGUFBytes.open(bytes, in: scratch).configData) as! [String: Any]
        #expect(config["sliding_window"] as? Int == 4096, "\(config["sliding_window"] ?? "absent")")
    }

    /// Phi-3's LongRoPE scales by `rope.scaling.attn_factor`, and by 1 (as
    /// llama.cpp does) when the file has none, not by transformers' default.
    @Test func longRopeWithoutAnAttentionFactorScalesByOne() throws {
        let bytes = try GGUFUnusedTensorTests.renaming(
            try GGUFBytes.fixture("gguf-arch/phi3_longrope-f16.gguf"), "phi3.rope.scaling.attn_factor", to: "phi3.rope.scaling.attn_fact_x")
        let scratch = try ScratchDirectory()
        let config = try JSONSerialization.jsonObject(with: try GGUFBytes.open(bytes, in: scratch).configData) as! [String: Any]
        let rope = try #require(config["rope_parameters"] as? [String: Any])
        #expect(rope["rope_type"] as? String == "longrope" && rope["attention_factor"] as? Double == 1, "\(rope)")
    }
}

/// DeepSeek's `attention.q_lora_rank` 0 is llama.cpp's "no low-rank query
/// projection" (it branches on the rank being above 0); it was refused as a
/// count below 1.
@Test func deepSeekQueryRankZeroIsNoLowRankProjection() throws {
    var bytes = try GGUFBytes.fixture("gguf-arch/deepseek_v2-f16.gguf")
    let scratch = try ScratchDirectory()
    let plain = try JSONSerialization.jsonObject(with: try GGUFBytes.open(bytes, in: scratch).configData) as! [String: Any]
    try GGUFBytes.insertPair(&bytes, GGUFBytes.string("deepseek2.attention.q_lora_rank") + GGUFBytes.value(.uint32, GGUFBytes.le(UInt32(0))))
    let zero = try JSONSerialization.jsonObject(with: try GGUFBytes.open(bytes, in: scratch).configData) as! [String: Any]
    #expect(plain["q_lora_rank"] is NSNull && zero["q_lora_rank"] is NSNull)
}

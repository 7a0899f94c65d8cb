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

    /// Rewrites the tensor infos' offsets of a float file (F32, F16, BF16) as
    /// llama.cpp lays the tensors out, one after another padded to 32, after
    /// an edit changed a tensor's size; the data is left where it is.
    static func layOutTensors(_ bytes: inout [UInt8]) {
        func u64(_ at: Int) -> Int { bytes[at..<(at + 8)].reversed().reduce(0) { $0 << 8 | Int($1) } }
        func u32(_ at: Int) -> UInt32 { bytes[at..<(at + 4)].reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        var at = 24
        for _ in 0..<u64(16) {
            at += 8 + u64(at)
            let type = u32(at)
            at += 4 + payloadLength(bytes, type: type, at: at + 4)
        }
        var next = 0
        for _ in 0..<u64(8) {
            at += 8 + u64(at)
            let dimensions = (0..<Int(u32(at))).map { u64(at + 4 + 8 * $0) }
            at += 4 + 8 * dimensions.count
            let size = dimensions.reduce(1, *) * [0: 4, 1: 2, 30: 2][u32(at)]!
            bytes.replaceSubrange((at + 4)..<(at + 12), with: le(UInt64(next)))
            next += (size + 31) / 32 * 32
            at += 12
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
        let gguf = try #require(try Checkpoint(location: file).gguf)
        #expect {
            _ = try VocabularySpec(gguf: gguf)
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

/// Errors about a GGUF checkpoint's weights (a tensor its architecture needs
/// is missing) name the GGUF file, not the folder holding it.
@Suite struct GGUFWeightErrorTests {
    @Test func missingTensorNamesTheFile() throws {
        let scratch = try ScratchDirectory()
        var bytes = try GGUFBytes.fixture("gguf/llama-f32.gguf")
        let name = Array("blk.1.attn_v.weight".utf8)
        let at = try #require((0...(bytes.count - name.count)).first { bytes[$0..<($0 + name.count)].elementsEqual(name) })
        // Same length and shape: a block tensor llama has not.
        bytes.replaceSubrange(at..<(at + name.count), with: Array("blk.1.attn_w.weight".utf8))
        let url = scratch.path("renamed.gguf")
        try Data(bytes).write(to: url)
        let result = try DroptraceCommand.run([
            "score", url.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("s.h5").path,
        ])
        #expect(result.status == 1)
        let errors = result.stderr.split(separator: "\n").filter { $0.contains("error") }
        #expect(
            errors.count == 1 && errors[0].hasSuffix("error: \(url.path): missing tensor 'model.layers.1.self_attn.v_proj.weight'"),
            "\(result.stderr)")
    }
}

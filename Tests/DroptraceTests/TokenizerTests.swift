import DroptraceSupport
import Foundation
import Testing
@testable import Tokenization

/// Fixture access for the tokenizer tests. The reference ids come from the
/// Python `tokenizers` package: `Fixtures/tokenizers/reference.json` (see
/// Fixtures/README.md) and `Fixtures/tokenizer-cases/expected.json` (written
/// by `tokenizer-cases/make_expected.py` with tokenizers 0.23.3).
enum TokenizerFixtures {
    static let root: URL = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
    static let flavours = ["gpt2", "llama3", "qwen2"]

    static func tokenizerFile(_ flavour: String) -> URL {
        root.appendingPathComponent("tokenizers/\(flavour)/tokenizer.json")
    }

    static func caseFile(_ name: String) -> URL {
        root.appendingPathComponent("tokenizer-cases/\(name)")
    }

    /// A text fixture exactly as stored (CRLF and all).
    static func text(_ name: String) throws -> String {
        let data = try Data(contentsOf: root.appendingPathComponent("text/\(name)"))
        return String(decoding: data, as: UTF8.self)
    }

    static var textFileNames: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("text").path)) ?? []
        return names.filter { $0.hasSuffix(".txt") }.sorted()
    }

    /// reference.json: flavour → file → (ids with special tokens, without).
    static let reference: [String: [String: (with: [Int], without: [Int])]] = {
        let url = root.appendingPathComponent("tokenizers/reference.json")
        let json = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: [String: [String: [Int]]]]
        return json.mapValues { files in
            files.mapValues { ($0["ids_with_special"]!, $0["ids_without_special"]!) }
        }
    }()

    /// What the library gives for a text: ids with and without special
    /// tokens, or an error (nil ids).
    struct CaseExpectation: Sendable, CustomTestStringConvertible {
        var file: String
        var text: String
        var with: [Int]?
        var without: [Int]?
        var testDescription: String { "\(file): \(text.debugDescription)" }

        init(file: String, entry: [String: Any]) {
            self.file = file
            text = entry["text"] as! String
            with = entry["with"] as? [Int]
            without = entry["without"] as? [Int]
        }

        /// Encodes as the expectation says: equal ids, or a one-line error
        /// naming the tokenizer file where the library fails.
        func check(_ tokenizer: Tokenizer, file path: String) throws {
            guard let with, let without else {
                let error = #expect(throws: DroptraceError.self) { try tokenizer.encode(text) }
                #expect(error?.path == path)
                #expect(error?.description.contains("\n") == false)
                return
            }
            #expect(try tokenizer.encode(text) == with)
            #expect(try tokenizer.encode(text, addSpecialTokens: false) == without)
        }
    }

    static let casesDocument: [String: Any] = {
        let url = root.appendingPathComponent("tokenizer-cases/expected.json")
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }()

    static let caseExpectations: [CaseExpectation] = {
        casesDocument.keys.sorted().filter { $0.hasSuffix(".json") }.flatMap { file in
            (casesDocument[file] as! [[String: Any]]).map { CaseExpectation(file: file, entry: $0) }
        }
    }()
}

extension TokenizerFixtures {
    /// Where two id lists first differ, for readable failures on long lists.
    static func firstDifference(_ got: [Int], _ expected: [Int]) -> String {
        let index = (0..<min(got.count, expected.count)).first { got[$0] != expected[$0] } ?? min(got.count, expected.count)
        let window = { (ids: [Int]) in Array(ids[max(0, index - 3)..<min(ids.count, index + 4)]) }
        return "first difference at \(index) of \(got.count) vs \(expected.count): got \(window(got)), expected \(window(expected))"
    }
}

/// A scratch directory for files written by the tokenizer and calibration tests.
final class TokenizerScratch {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("droptrace-tokenizer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func write(_ contents: String, to name: String) throws -> URL {
        let file = url.appendingPathComponent(name)
        try Data(contents.utf8).write(to: file)
        return file
    }

    func write(json: Any, to name: String) throws -> URL {
        let file = url.appendingPathComponent(name)
        try JSONSerialization.data(withJSONObject: json).write(to: file)
        return file
    }
}

@Suite("Tokenizer matches the Python tokenizers package")
struct TokenizerReferenceTests {
    @Test("reference covers every flavour and every text file")
    func referenceIsComplete() {
        #expect(TokenizerFixtures.reference.keys.sorted() == TokenizerFixtures.flavours)
        for flavour in TokenizerFixtures.flavours {
            #expect(TokenizerFixtures.reference[flavour]?.keys.sorted() == TokenizerFixtures.textFileNames)
        }
        #expect(TokenizerFixtures.textFileNames.count == 3)
    }

    @Test("ids equal the reference, with and without special tokens", arguments: TokenizerFixtures.flavours)
    func matchesReference(flavour: String) throws {
        let tokenizer = try Tokenizer(contentsOf: TokenizerFixtures.tokenizerFile(flavour))
        for (file, expected) in TokenizerFixtures.reference[flavour]! {
            let text = try TokenizerFixtures.text(file)
            let with = try tokenizer.encode(text)
            let without = try tokenizer.encode(text, addSpecialTokens: false)
            #expect(with == expected.with, "\(flavour) \(file) with special tokens: \(TokenizerFixtures.firstDifference(with, expected.with))")
            #expect(without == expected.without, "\(flavour) \(file) without: \(TokenizerFixtures.firstDifference(without, expected.without))")
        }
    }

    @Test("vocabulary size is the largest id plus one", arguments: TokenizerFixtures.flavours)
    func vocabularySize(flavour: String) throws {
        // Fixtures/README.md: each flavour has exactly ids 0..511.
        #expect(try Tokenizer(contentsOf: TokenizerFixtures.tokenizerFile(flavour)).vocabularySize == 512)
    }

    @Test("hand-written cases", arguments: TokenizerFixtures.caseExpectations)
    func handWrittenCase(_ expectation: TokenizerFixtures.CaseExpectation) throws {
        let file = TokenizerFixtures.caseFile(expectation.file)
        try expectation.check(try Tokenizer(contentsOf: file), file: file.path)
    }

    @Test("every hand-written case has expectations")
    func everyCaseIsChecked() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: TokenizerFixtures.caseFile("").path)
        let cases = Set(names.filter { $0.hasSuffix(".json") && $0 != "expected.json" })
        #expect(Set(TokenizerFixtures.caseExpectations.map(\.file)) == cases)
    }

    /// The hand-written scanners for the GPT-2, Llama-3 and Qwen2 regexes
    /// must agree with the general regex path: wrapping a pattern in a
    /// group keeps its meaning but sends it to ICU.
    @Test("word-splitting scanners agree with the regex engine", arguments: TokenizerFixtures.flavours)
    func scannerMatchesRegexEngine(flavour: String) throws {
        let original = TokenizerFixtures.tokenizerFile(flavour)
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: original)) as! [String: Any]
        var preTokenizer = json["pre_tokenizer"] as! [String: Any]
        if preTokenizer["type"] as? String == "ByteLevel" {
            preTokenizer = ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": "(?:\(WordSplitScanner.gpt2Pattern))"],
                 "behavior": "Isolated", "invert": false],
                ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
            ]]
        } else {
            var steps = preTokenizer["pretokenizers"] as! [[String: Any]]
            var pattern = steps[0]["pattern"] as! [String: String]
            pattern["Regex"] = "(?:\(pattern["Regex"]!))"
            steps[0]["pattern"] = pattern
            preTokenizer["pretokenizers"] = steps
        }
        json["pre_tokenizer"] = preTokenizer
        let scratch = try TokenizerScratch()
        let viaRegexEngine = try Tokenizer(contentsOf: scratch.write(json: json, to: "tokenizer.json"))
        let viaScanner = try Tokenizer(contentsOf: original)
        for file in TokenizerFixtures.textFileNames {
            let text = try TokenizerFixtures.text(file)
            let expected = try viaScanner.encode(text)
            let got = try viaRegexEngine.encode(text)
            #expect(got == expected, "\(flavour) \(file): \(TokenizerFixtures.firstDifference(got, expected))")
        }
    }

    @Test("decoding gives the text back", arguments: TokenizerFixtures.flavours)
    func decodeRoundTrip(flavour: String) throws {
        let tokenizer = try Tokenizer(contentsOf: TokenizerFixtures.tokenizerFile(flavour))
        for file in TokenizerFixtures.textFileNames {
            let text = try TokenizerFixtures.text(file)
            // qwen2 normalises to NFC before encoding.
            let expected = flavour == "qwen2" ? text.precomposedStringWithCanonicalMapping : text
            #expect(try tokenizer.decode(tokenizer.encode(text, addSpecialTokens: false)) == expected, "\(flavour) \(file)")
        }
        let llama = try Tokenizer(contentsOf: TokenizerFixtures.tokenizerFile("llama3"))
        #expect(try llama.decode(llama.encode("Hi")) == "<|begin_of_text|>Hi")
    }

    @Test("one tokenizer can encode from several threads at once")
    func concurrentEncoding() async throws {
        let tokenizer = try Tokenizer(contentsOf: TokenizerFixtures.tokenizerFile("llama3"))
        let texts = try TokenizerFixtures.textFileNames.map(TokenizerFixtures.text)
        let expected = try texts.map { try tokenizer.encode($0) }
        let results = try await withThrowingTaskGroup(of: (Int, [Int]).self) { group in
            for _ in 0..<4 {
                for (index, text) in texts.enumerated() {
                    group.addTask { (index, try tokenizer.encode(text)) }
                }
            }
            var collected: [(Int, [Int])] = []
            for try await result in group { collected.append(result) }
            return collected
        }
        #expect(results.count == 4 * texts.count)
        for (index, ids) in results { #expect(ids == expected[index]) }
    }
}

@Suite("Tokenizer refuses what it cannot reproduce")
struct TokenizerErrorTests {
    /// Loads `url`, expecting a one-line DroptraceError naming the file.
    private func loadError(_ url: URL) -> DroptraceError? {
        let error = #expect(throws: DroptraceError.self) { try Tokenizer(contentsOf: url) }
        #expect(error?.path == url.path)
        #expect(error?.description.contains("\n") == false)
        return error
    }

    /// The smallest valid byte-level-free BPE file, to be broken by a test.
    private func minimalTokenizer() -> [String: Any] {
        ["model": ["type": "BPE", "vocab": ["a": 0, "b": 1, "ab": 2], "merges": [["a", "b"]]] as [String: Any]]
    }

    @Test func missingFile() throws {
        let scratch = try TokenizerScratch()
        let error = loadError(scratch.url.appendingPathComponent("tokenizer.json"))
        #expect(error?.message.contains("no such file") == true)
    }

    @Test func invalidJSON() throws {
        let scratch = try TokenizerScratch()
        let error = loadError(try scratch.write("{\"model\": ", to: "tokenizer.json"))
        #expect(error?.message.contains("not valid JSON") == true)
    }

    @Test func wordPieceModelIsRefused() throws {
        let scratch = try TokenizerScratch()
        let json: [String: Any] = ["model": ["type": "WordPiece", "vocab": ["a": 0], "unk_token": "a"] as [String: Any]]
        let error = loadError(try scratch.write(json: json, to: "tokenizer.json"))
        #expect(error?.message.contains("\"WordPiece\"") == true)
    }

    @Test func missingModel() throws {
        let scratch = try TokenizerScratch()
        let error = loadError(try scratch.write(json: ["normalizer": NSNull()], to: "tokenizer.json"))
        #expect(error?.message.contains("\"model\"") == true)
    }

    @Test func mergeOfUnknownToken() throws {
        let scratch = try TokenizerScratch()
        var json = minimalTokenizer()
        json["model"] = ["type": "BPE", "vocab": ["a": 0, "b": 1], "merges": [["a", "b"]]] as [String: Any]
        let error = loadError(try scratch.write(json: json, to: "tokenizer.json"))
        #expect(error?.message.contains("merges[0]") == true)
        #expect(error?.message.contains("\"ab\" is not in the vocabulary") == true)
    }

    /// Two added tokens matched after normalization whose texts differ but
    /// normalize alike: the library (0.23.3) gives either id, at random from
    /// one process to the next (it keeps them in a hash map); droptrace gave
    /// the later one. Refused naming both; the same text twice is the
    /// library's first id, and stays accepted.
    @Test func addedTokensThatNormalizeAlikeAreRefused() throws {
        let scratch = try TokenizerScratch()
        func added(_ content: String, _ id: Int) -> [String: Any] {
            ["id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false]
        }
        var json = minimalTokenizer()
        json["normalizer"] = ["type": "NFC"]
        json["added_tokens"] = [added("\u{E9}", 3), added("e\u{301}", 4)]
        let error = loadError(try scratch.write(json: json, to: "tokenizer.json"))
        #expect(error?.message.contains("added tokens \"\u{E9}\" (id 3) and \"e\u{301}\" (id 4) are both matched after normalization and normalize to the same text") == true,
                "\(String(describing: error))")
        json["added_tokens"] = [added("\u{E9}", 3), added("\u{E9}", 4)]
        #expect(try Tokenizer(contentsOf: scratch.write(json: json, to: "same.json")).encode("a\u{E9}").contains(3))
    }

    /// Fields droptrace does not use but the library deserialises, and
    /// refuses the file for: a ByteLevel decoder's `use_regex: null` (also
    /// inside a Sequence), a special token's `tokens` holding a number.
    @Test(arguments: [
        ("decoder", #"{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": null}"#, "decoder.use_regex"),
        ("decoder", #"{"type": "Sequence", "decoders": [{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": "no"}]}"#,
         "decoder.decoders[0].trim_offsets"),
        ("post_processor", #"{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": [1e39]}}}"#,
         "\"tokens\" should be a list of strings"),
    ])
    func fieldsTheLibraryRefusesAreRefused(section: String, step: String, phrase: String) throws {
        let scratch = try TokenizerScratch()
        var json = minimalTokenizer()
        json[section] = try JSONSerialization.jsonObject(with: Data(step.utf8))
        let error = loadError(try scratch.write(json: json, to: "tokenizer.json"))
        #expect(error?.message.contains(phrase) == true, "\(String(describing: error))")
    }

    @Test func malformedLegacyMerge() throws {
        let scratch = try TokenizerScratch()
        var json = minimalTokenizer()
        json["model"] = ["type": "BPE", "vocab": ["a": 0, "b": 1, "ab": 2], "merges": ["a b c"]] as [String: Any]
        let error = loadError(try scratch.write(json: json, to: "tokenizer.json"))
        #expect(error?.message.contains("merges[0]") == true)
    }

    @Test("unsupported pipeline steps are named", arguments: [
        ("normalizer", #"{"type": "BertNormalizer", "clean_text": true}"#, "\"BertNormalizer\""),
        ("pre_tokenizer", #"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "sometimes"}"#, "prepend_scheme \"sometimes\""),
        ("pre_tokenizer", #"{"type": "UnicodeScripts"}"#, "\"UnicodeScripts\""),
        ("post_processor", #"{"type": "Whatever"}"#, "\"Whatever\""),
        ("pre_tokenizer", #"{"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": false}"#, "invalid regex"),
        ("pre_tokenizer", #"{"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways", "invert": false}"#, "\"Sideways\""),
        // The library hands the second step the template's pieces as a pair.
        ("post_processor", #"{"type": "Sequence", "processors": [{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}}, {"type": "BertProcessing", "sep": ["a", 0], "cls": ["b", 1]}]}"#,
         "followed by another step that adds tokens"),
    ])
    func unsupportedStep(section: String, step: String, expectedPhrase: String) throws {
        let scratch = try TokenizerScratch()
        var json = minimalTokenizer()
        json[section] = try JSONSerialization.jsonObject(with: Data(step.utf8))
        let error = loadError(try scratch.write(json: json, to: "tokenizer.json"))
        #expect(error?.message.contains(section) == true)
        #expect(error?.message.contains(expectedPhrase) == true, "\(error?.message ?? "no error")")
    }

    /// `json` with `value` (JSON text) set at a top-level key or "model.key".
    private func setting(_ path: String, to value: String, in json: [String: Any]) throws -> [String: Any] {
        var json = json
        EditedModel.set(try JSONSerialization.jsonObject(with: Data(value.utf8), options: .fragmentsAllowed), at: path, in: &json)
        return json
    }

    /// Files the library refuses to load (checked with tokenizers 0.23.3:
    /// "expected u32", "Unknown tokenizer version", "missing field", ...),
    /// and BPE dropout, which the library applies at random while encoding.
    @Test("files the library refuses, and BPE dropout, are refused naming the field", arguments: [
        ("model.dropout", "1.0", "model.dropout"), ("model.dropout", "0.1", "model.dropout"),
        ("model.dropout", "-1", "model.dropout"), ("model.dropout", "\"0\"", "model.dropout"),
        ("model.type", "null", "model.type"),
        ("version", "\"2.0\"", "version"), ("version", "null", "version"),
        ("added_tokens", "null", "added_tokens"),
        ("added_tokens", #"[{"id": -1, "content": "x"}]"#, "added_tokens[0].id"),
        ("added_tokens", #"[{"id": 1099511627776, "content": "x"}]"#, "added_tokens[0].id"),
        ("added_tokens", #"[{"id": "x", "content": "x"}]"#, "added_tokens[0].id"),
        ("added_tokens", #"[{"id": true, "content": "x"}]"#, "added_tokens[0].id"),
        ("added_tokens", #"[{"content": "x"}]"#, "added_tokens[0].id"),
        ("added_tokens", #"[{"id": 5, "content": "x", "lstrip": false, "rstrip": false, "normalized": false, "special": true}]"#,
         "added_tokens[0].single_word"),
        ("normalizer", #"{"type": "Sequence"}"#, "normalizer.normalizers"),
        ("pre_tokenizer", #"{"type": "Sequence", "pretokenizers": null}"#, "pre_tokenizer.pretokenizers"),
        ("post_processor", #"{"type": "Sequence"}"#, "post_processor.processors"),
        // Fields the library's deserializer requires ("missing field"), a
        // null where it has no default, and keys it does not know.
        ("normalizer", #"{"type": "Strip", "strip_left": true}"#, "normalizer.strip_right"),
        ("pre_tokenizer", #"{"type": "ByteLevel", "add_prefix_space": false}"#, "pre_tokenizer.trim_offsets"),
        ("pre_tokenizer", #"{"type": "ByteLevel", "trim_offsets": true}"#, "pre_tokenizer.add_prefix_space"),
        ("pre_tokenizer", #"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": null}"#,
         "pre_tokenizer.use_regex"),
        ("pre_tokenizer", #"{"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated"}"#, "pre_tokenizer.invert"),
        ("pre_tokenizer", #"{"type": "Split", "pattern": {"String": " ", "Regex": "a"}, "behavior": "Isolated", "invert": false}"#,
         "pre_tokenizer.pattern"),
        ("pre_tokenizer", #"{"type": "Digits"}"#, "pre_tokenizer.individual_digits"),
        ("pre_tokenizer", #"{"type": "Metaspace", "prepend_scheme": "always"}"#, "pre_tokenizer.replacement"),
        ("pre_tokenizer", #"{"type": "Metaspace", "replacement": "▁", "add_prefix_space": false}"#, "pre_tokenizer"),
        ("pre_tokenizer", #"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": null}"#, "pre_tokenizer.prepend_scheme"),
        ("post_processor", #"{"type": "ByteLevel"}"#, "post_processor.add_prefix_space"),
        ("post_processor", #"{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}}"#,
         "post_processor"),
        ("post_processor", #"{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A"}}], "pair": [], "special_tokens": {}}"#,
         "post_processor.single[0].Sequence"),
        ("post_processor", #"{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [0]}}}"#,
         "post_processor.special_tokens"),
        ("truncate", "1", "has an unknown top-level key \"truncate\""),
        // Sections that do not change the ids, still refused by the library's deserializer.
        ("truncation", "{}", "truncation.max_length"), ("truncation", #""x""#, "truncation should be a JSON object"),
        ("padding", #""x""#, "padding should be a JSON object"),
        ("padding", #"{"direction": "Right", "pad_id": 0, "pad_type_id": 0, "pad_token": "x"}"#, "padding"),
        ("padding", #"{"strategy": "LongestFirst", "direction": "Right", "pad_id": 0, "pad_type_id": 0, "pad_token": "x"}"#, "padding"),
        ("decoder", #"{"add_prefix_space": true}"#, "decoder.type"), ("decoder", #"{"type": "Nope"}"#, "decoder"),
        ("decoder", #"{"type": "ByteLevel", "add_prefix_space": "yes", "trim_offsets": true}"#, "decoder.add_prefix_space"),
        ("post_processor", #"{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"Sequence": {"type_id": 0}}], "special_tokens": {}}"#,
         "post_processor.pair[0].Sequence.id"),
        ("post_processor", #"{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": -1}}], "pair": [], "special_tokens": {}}"#,
         "post_processor.single[0].Sequence.type_id"),
        ("post_processor", #"{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"Sequence": {"id": "C", "type_id": 0}}], "special_tokens": {}}"#,
         "post_processor.pair[0].Sequence"),
        ("normalizer", nestedLowercase(63), "normalizer nests 63 Sequence steps"),
        ("pre_tokenizer", #"{"type": "Punctuation", "behavior": null}"#, "pre_tokenizer.behavior"),
        ("pre_tokenizer", #"{"type": "Punctuation", "behavior": "isolated"}"#, "pre_tokenizer"),
        ("pre_tokenizer", #"{"type": "CharDelimiterSplit", "delimiter": "e\u0301"}"#, "pre_tokenizer"),
        ("pre_tokenizer", #"{"type": "CharDelimiterSplit", "delimiter": ""}"#, "pre_tokenizer"),
        ("pre_tokenizer", #"{"type": "CharDelimiterSplit"}"#, "pre_tokenizer.delimiter"),
    ])
    func refusedByTheLibrary(path: String, value: String, field: String) throws {
        let scratch = try TokenizerScratch()
        let json = try setting(path, to: value, in: minimalTokenizer())
        let error = loadError(try scratch.write(json: json, to: "tokenizer.json"))
        #expect(error?.message.hasPrefix(field) == true, "\(error?.message ?? "no error")")
    }

    /// What the library loads and encodes as if the key were absent
    /// (checked with tokenizers 0.23.3: the same ids, [2, 1, 0] for "abba").
    @Test("dropout 0, absent keys, empty sequences and large added-token ids load", arguments: [
        ("model.dropout", "0"), ("model.dropout", "0.0"), ("model.dropout", "null"),
        ("added_tokens", #"[{"id": 4294967295, "content": "zz", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}]"#),
        ("normalizer", #"{"type": "Sequence", "normalizers": []}"#), ("version", "\"1.0\""),
        ("truncation", #"{"max_length": 5, "strategy": "OnlyFirst", "stride": 0}"#),
        ("padding", #"{"strategy": {"Fixed": 8}, "direction": "Left", "pad_id": 0, "pad_type_id": 0, "pad_token": "x", "pad_to_multiple_of": null}"#),
        ("decoder", #"{"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}"#),
        ("post_processor", #"{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": {}}"#),
        ("normalizer", nestedLowercase(62)),
    ])
    func acceptedLikeTheLibrary(path: String, value: String) throws {
        let scratch = try TokenizerScratch()
        let json = try setting(path, to: value, in: minimalTokenizer())
        let tokenizer = try Tokenizer(contentsOf: scratch.write(json: json, to: "tokenizer.json"))
        #expect(try tokenizer.encode("abba") == [2, 1, 0])
    }

    /// The minimal tokenizer with `section` written as `text`, raw JSON that
    /// may give a key twice (which JSONSerialization cannot write).
    private func writeMinimal(section: String, as text: String, in scratch: TokenizerScratch) throws -> URL {
        let json = try setting(section, to: #""@section@""#, in: minimalTokenizer())
        let written = String(decoding: try JSONSerialization.data(withJSONObject: json), as: UTF8.self)
        return try scratch.write(written.replacingOccurrences(of: #""@section@""#, with: text), to: "tokenizer.json")
    }

    private static let addedToken = #""id": 5, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true"#

    /// A field given twice in an object the library reads with a derived
    /// serde struct (an added token, each part of a post-processor,
    /// truncation, padding) or the model's `type`: tokenizers 0.23.3 refuses
    /// the file ("duplicate field `content`", or no variant of the
    /// post-processor matching), and so does droptrace, naming the field.
    @Test("a field given twice is refused where the library refuses it", arguments: [
        ("added_tokens", "[{\(addedToken), \"content\": \"x\", \"content\": \"y\"}]", "added_tokens[0].content"),
        ("added_tokens", "[{\(addedToken), \"content\": \"x\", \"lstrip\": true}]", "added_tokens[0].lstrip"),
        ("post_processor", #"{"type": "TemplateProcessing", "single": [], "single": [{"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {}}"#,
         "post_processor.single"),
        ("post_processor", #"{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0, "type_id": 0}}], "pair": [], "special_tokens": {}}"#,
         "post_processor.single[0].Sequence.type_id"),
        ("post_processor", #"{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "ids": [1], "tokens": ["<s>"]}}}"#,
         "post_processor.special_tokens.<s>.ids"),
        ("post_processor", #"{"type": "BertProcessing", "sep": ["b", 1], "cls": ["a", 0], "cls": ["x", 9]}"#, "post_processor.cls"),
        ("post_processor", #"{"type": "Sequence", "processors": [], "processors": []}"#, "post_processor.processors"),
        ("post_processor", #"{"type": "Sequence", "type": "Sequence", "processors": []}"#, "post_processor.type"),
        ("post_processor", #"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "trim_offsets": true}"#,
         "post_processor.trim_offsets"),
        ("truncation", #"{"max_length": 5, "max_length": 6, "strategy": "OnlyFirst", "stride": 0}"#, "truncation.max_length"),
        ("padding", #"{"strategy": "BatchLongest", "direction": "Left", "pad_id": 0, "pad_id": 1, "pad_type_id": 0, "pad_token": "x"}"#,
         "padding.pad_id"),
        ("model", #"{"type": "BPE", "type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}"#, "model.type"),
    ])
    func repeatedFieldRefused(section: String, text: String, field: String) throws {
        let scratch = try TokenizerScratch()
        let error = loadError(try writeMinimal(section: section, as: text, in: scratch))
        #expect(error?.message.hasPrefix("\(field) is given twice") == true, "\(error?.message ?? "no error")")
    }

    /// Where the library keeps the last value instead (checked with
    /// tokenizers 0.23.3, "abba" is [2, 1, 0] each time): the top level and
    /// the model (its own readers), normalizers, pre-tokenizers and decoders
    /// (read through serde_json's Value), maps (`special_tokens`), a field
    /// of an added token it does not know, and the tag of a
    /// TemplateProcessing, BertProcessing or RobertaProcessing (a RobertaProcessing
    /// with a repeated flag loads as the BertProcessing it then matches: the
    /// same ids for one sequence). tokenizer-cases/repeated-keys.json has
    /// the library's ids for last values that change them.
    @Test("a key given twice keeps its last value where the library keeps it", arguments: [
        ("added_tokens", "[{\(addedToken), \"content\": \"x\", \"extra\": 1, \"extra\": 2}]"),
        ("normalizer", #"{"type": "Replace", "pattern": {"String": "b", "String": "x"}, "content": "x", "content": "a", "type": "Replace"}"#),
        ("pre_tokenizer", #"{"type": "Split", "pattern": {"String": "x"}, "behavior": "Removed", "behavior": "Isolated", "invert": false}"#),
        ("decoder", #"{"type": "Fuse", "type": "Fuse"}"#),
        ("post_processor", #"{"type": "TemplateProcessing", "type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}, "<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}"#),
        ("post_processor", #"{"type": "RobertaProcessing", "sep": ["b", 1], "cls": ["a", 0], "trim_offsets": true, "trim_offsets": false, "add_prefix_space": true}"#),
        ("model", #"{"type": "BPE", "unk_token": null, "unk_token": null, "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [], "merges": [["a", "b"]]}"#),
    ])
    func repeatedKeyKeepsTheLast(section: String, text: String) throws {
        let scratch = try TokenizerScratch()
        let tokenizer = try Tokenizer(contentsOf: writeMinimal(section: section, as: text, in: scratch))
        #expect(try tokenizer.encode("abba", addSpecialTokens: false) == [2, 1, 0])
    }

    /// An unk_token the vocabulary lacks: the library loads the file and
    /// fails only on text that needs the token (tokenizers 0.23.3: "abba" is
    /// [2, 1, 0]; "abc" raises "Unk token `<unk>` not found in the vocabulary").
    @Test func unknownTokenMissingFromTheVocabularyFailsOnlyWhereNeeded() throws {
        let scratch = try TokenizerScratch()
        let file = try scratch.write(
            json: try setting("model.unk_token", to: #""<unk>""#, in: minimalTokenizer()), to: "tokenizer.json")
        let tokenizer = try Tokenizer(contentsOf: file)
        #expect(try tokenizer.encode("abba") == [2, 1, 0])
        let error = #expect(throws: DroptraceError.self) { try tokenizer.encode("abc") }
        #expect(error?.path == file.path)
        #expect(error?.message.contains(#"model.unk_token "<unk>" is not in it"#) == true, "\(String(describing: error))")
    }

    @Test func templateWithUnknownSpecialToken() throws {
        let scratch = try TokenizerScratch()
        var json = minimalTokenizer()
        json["post_processor"] = ["type": "TemplateProcessing",
                                  "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                                  "pair": [["Sequence": ["id": "A", "type_id": 0]]],
                                  "special_tokens": [String: Any]()] as [String: Any]
        let error = loadError(try scratch.write(json: json, to: "tokenizer.json"))
        #expect(error?.message.contains("\"<s>\"") == true)
    }
}

/// `depth` Sequence normalizers nested around a Lowercase (the library
/// loads 62, refuses 63: its JSON recursion limit).
private func nestedLowercase(_ depth: Int) -> String {
    String(repeating: #"{"type": "Sequence", "normalizers": ["#, count: depth) + #"{"type": "Lowercase"}"#
        + String(repeating: "]}", count: depth)
}

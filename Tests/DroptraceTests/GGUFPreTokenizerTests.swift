import DroptraceSupport
import Foundation
import Testing
@testable import Tokenization

/// Every `tokenizer.ggml.pre` name llama.cpp writes for a byte-level BPE
/// whose pre-tokenizer droptrace expresses tokenises as the `tokenizers`
/// library does on the matching tokenizer.json. Fixtures: one small
/// vocabulary trained without word splitting (so a wrong split point
/// changes the ids) and, per distinct pre-tokenizer, the library's ids for
/// it (scripts/fixtures/make_gguf_pretokenizer_fixtures.py).
@Suite("GGUF pre-tokenizer names tokenise like tokenizer.json")
struct GGUFPreTokenizerTests {
    static let directory = TokenizerFixtures.root.appendingPathComponent("gguf-pretokenizers")

    static var families: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".json") && $0 != "vocabulary.json" }.map { String($0.dropLast(5)) }.sorted()
    }

    struct Fixture {
        var names: [String]
        var tokens: [String]
        var merges: [String]
        var cases: [(text: String, ids: [Int])]
    }

    static func fixture(_ family: String) throws -> Fixture {
        let data = try Data(contentsOf: directory.appendingPathComponent("\(family).json"))
        let json = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let vocabularyData = try Data(contentsOf: directory.appendingPathComponent("vocabulary.json"))
        let vocabulary = try JSONSerialization.jsonObject(with: vocabularyData) as! [String: Any]
        let cases = try (json["cases"] as! [[String: Any]]).map { entry -> (String, [Int]) in
            let text = try (entry["text"] as? String) ?? TokenizerFixtures.text(entry["file"] as! String)
            return (text, entry["ids"] as! [Int])
        }
        return Fixture(names: json["names"] as! [String], tokens: vocabulary["tokens"] as! [String],
                       merges: vocabulary["merges"] as! [String], cases: cases)
    }

    static func tokenizer(_ fixture: Fixture, pre name: String?) throws -> Tokenizer {
        let spec = VocabularySpec(model: .byteLevelBPE, tokens: fixture.tokens, merges: fixture.merges, preTokenizer: name)
        return try Tokenizer(vocabulary: spec, source: "test.gguf")
    }

    @Test("ids equal the tokenizers library's for every name of the family", arguments: families)
    func idsMatch(family: String) throws {
        let fixture = try Self.fixture(family)
        for name in fixture.names {
            let tokenizer = try Self.tokenizer(fixture, pre: name)
            for (index, entry) in fixture.cases.enumerated() {
                let got = try tokenizer.encode(entry.text, addSpecialTokens: false)
                #expect(got == entry.ids, "\(family) as \(name), case \(index): \(TokenizerFixtures.firstDifference(got, entry.ids))")
            }
        }
    }

    @Test("the names llama.cpp writes for SmolLM and DeepSeek-R1-Distill-Qwen are known")
    func namesFromTheIssue() {
        for name in ["smollm", "deepseek-r1-qwen", "default", "llama-bpe", "qwen2", "gpt-2", "deepseek-v3", "tekken"] {
            #expect(LlamaCppPreTokenizer.named(name) != nil, "\(name)")
        }
        // Every family fixture covers distinct names, and the table knows no name twice.
        #expect(Set(LlamaCppPreTokenizer.knownNames).count == LlamaCppPreTokenizer.knownNames.count)
    }

    @Test("every name droptrace knows is covered by a fixture")
    func everyNameHasAFixture() throws {
        let covered = try Set(Self.families.flatMap { try Self.fixture($0).names })
        #expect(covered == Set(LlamaCppPreTokenizer.knownNames))
    }

    /// llama.cpp ignores merges for the Llama-3 pre-type only: a word the
    /// vocabulary holds whole but no merge builds is one token there, and
    /// split into its characters for DBRX and Smaug (llama.cpp: " world"
    /// under "dbrx" is [Ġ, w, o, r, l, d]).
    @Test func mergesAreIgnoredForLlama3Only() throws {
        let tokens = ["Ġ", "w", "o", "r", "l", "d", "Ġworld"]
        func ids(_ pre: String) throws -> [Int] {
            let spec = VocabularySpec(model: .byteLevelBPE, tokens: tokens, merges: [], preTokenizer: pre)
            return try Tokenizer(vocabulary: spec, source: "test.gguf").encode(" world", addSpecialTokens: false)
        }
        #expect(try ids("llama-bpe") == [6])
        #expect(try ids("dbrx") == [0, 1, 2, 3, 4, 5])
        #expect(try ids("smaug-bpe") == [0, 1, 2, 3, 4, 5])
    }

    @Test("BOS is added by default as llama.cpp adds it")
    func bosDefaults() {
        #expect(VocabularySpec.addsBOSByDefault(model: .sentencePiece, preTokenizer: nil))
        #expect(VocabularySpec.addsBOSByDefault(model: .byteLevelBPE, preTokenizer: "llama-bpe"))
        #expect(VocabularySpec.addsBOSByDefault(model: .byteLevelBPE, preTokenizer: "tekken"))
        #expect(!VocabularySpec.addsBOSByDefault(model: .byteLevelBPE, preTokenizer: "smollm"))
        #expect(!VocabularySpec.addsBOSByDefault(model: .byteLevelBPE, preTokenizer: nil))
        #expect(!VocabularySpec.addsBOSByDefault(model: .byteLevelBPE, preTokenizer: "no-such-name"))
        // Llama-3's regex under pre-types of their own (checked with llama.cpp through llama-cpp-python 0.3.16).
        #expect(!VocabularySpec.addsBOSByDefault(model: .byteLevelBPE, preTokenizer: "dbrx"))
        #expect(!VocabularySpec.addsBOSByDefault(model: .byteLevelBPE, preTokenizer: "smaug-bpe"))
    }

    @Test("a vocabulary without tokenizer.ggml.pre gets llama.cpp's default")
    func missingNameIsDefault() throws {
        let fixture = try Self.fixture("default")
        let tokenizer = try Self.tokenizer(fixture, pre: nil)
        for entry in fixture.cases {
            #expect(try tokenizer.encode(entry.text, addSpecialTokens: false) == entry.ids)
        }
    }

    @Test("an unknown name is refused, naming the file and the name")
    func unknownNameIsRefused() throws {
        let fixture = try Self.fixture("gpt2")
        let error = #expect(throws: DroptraceError.self) { try Self.tokenizer(fixture, pre: "kimi-k2") }
        #expect(error?.path == "test.gguf")
        #expect(error?.message.contains("\"kimi-k2\"") == true)
        #expect(error?.message.contains("smollm") == true)
    }
}

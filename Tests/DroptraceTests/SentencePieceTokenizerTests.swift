import DroptraceSupport
import Foundation
import Testing
@testable import Tokenization

/// Fixtures under `Fixtures/sentencepiece/` (Fixtures/README.md), written by
/// `scripts/fixtures/make_sentencepiece_fixtures.py`: SentencePiece-style
/// tokenizer.json files, GGUF-style vocabularies, and the ids and decoded
/// text of the Python `tokenizers` library.
enum SentencePieceFixtures {
    static let root = TokenizerFixtures.root.appendingPathComponent("sentencepiece")
    static let names = [
        "metaspace-unk", "mistral-v1", "spm-always-split", "spm-first", "spm-legacy", "unigram-byte-fallback", "xglm-unigram",
    ]
    static let vocabularies = ["gpt2", "llama3", "mistral-v1", "qwen2", "spm-legacy"]

    struct Expected {
        var with: [Int]
        var without: [Int]
        var decoded: String
    }

    static func tokenizerFile(_ name: String) -> URL {
        root.appendingPathComponent("\(name)/tokenizer.json")
    }

    /// reference.json: tokenizer → text file → ids and decoded text.
    static let reference: [String: [String: Expected]] = {
        let url = root.appendingPathComponent("reference.json")
        var json = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        json["generator"] = nil
        return (json as! [String: [String: [String: Any]]]).mapValues { files in
            files.mapValues { entry in
                Expected(with: entry["ids_with_special"] as! [Int], without: entry["ids_without_special"] as! [Int],
                         decoded: entry["decoded"] as! String)
            }
        }
    }()

    struct Probe: Sendable, CustomTestStringConvertible {
        var tokenizer: String
        var text: String
        var with: [Int]
        var without: [Int]
        var decoded: String
        var testDescription: String { "\(tokenizer): \(text.debugDescription)" }
    }

    /// probes.json: short texts with special tokens, spaces and added tokens.
    static let probes: [Probe] = {
        let url = root.appendingPathComponent("probes.json")
        let json = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: [[String: Any]]]
        return json.keys.sorted().flatMap { name in
            json[name]!.map { entry in
                Probe(tokenizer: name, text: entry["text"] as! String, with: entry["with"] as! [Int],
                      without: entry["without"] as! [Int], decoded: entry["decoded"] as! String)
            }
        }
    }()

    /// A GGUF-style vocabulary JSON as the VocabularySpec a GGUF reader
    /// fills, plus the reference it must reproduce.
    static func vocabulary(_ name: String) throws -> (spec: VocabularySpec, expectedFrom: String) {
        let url = root.appendingPathComponent("gguf/\(name).json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var tokens = json["tokens"] as? [String]
        if let from = json["tokens_from"] as? String {
            let file = TokenizerFixtures.root.appendingPathComponent(from)
            let document = try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as! [String: Any]
            let vocab = (document["model"] as! [String: Any])["vocab"] as! [String: Int]
            tokens = vocab.sorted { $0.value < $1.value }.map(\.key)
        }
        let spec = VocabularySpec(
            model: VocabularySpec.Model(rawValue: json["model"] as! String)!,
            tokens: tokens!,
            scores: (json["scores"] as? [NSNumber])?.map(\.floatValue),
            tokenTypes: (json["token_type"] as? [Int])?.map { VocabularySpec.TokenType(rawValue: $0)! },
            merges: json["merges"] as? [String],
            bosID: json["bos_token_id"] as? Int, eosID: json["eos_token_id"] as? Int,
            unknownID: json["unknown_token_id"] as? Int,
            addBOS: json["add_bos_token"] as? Bool ?? false, addEOS: json["add_eos_token"] as? Bool ?? false,
            preTokenizer: json["pre"] as? String, addSpacePrefix: json["add_space_prefix"] as? Bool ?? true)
        return (spec, json["expected_from"] as! String)
    }

    /// Expected ids for `expectedFrom` ("sentencepiece/<name>" or "tokenizers/<flavour>").
    static func expected(_ expectedFrom: String) -> [String: (with: [Int], without: [Int])] {
        let parts = expectedFrom.split(separator: "/").map(String.init)
        if parts[0] == "tokenizers" { return TokenizerFixtures.reference[parts[1]]! }
        return reference[parts[1]]!.mapValues { ($0.with, $0.without) }
    }
}

@Suite("SentencePiece-style tokenizers match the Python tokenizers package")
struct SentencePieceTokenizerTests {
    @Test("reference covers every tokenizer and every text file")
    func referenceIsComplete() {
        #expect(SentencePieceFixtures.reference.keys.sorted() == SentencePieceFixtures.names)
        for name in SentencePieceFixtures.names {
            #expect(SentencePieceFixtures.reference[name]?.keys.sorted() == TokenizerFixtures.textFileNames)
        }
    }

    @Test("ids equal the reference, with and without special tokens", arguments: SentencePieceFixtures.names)
    func matchesReference(name: String) throws {
        let tokenizer = try Tokenizer(contentsOf: SentencePieceFixtures.tokenizerFile(name))
        for (file, expected) in SentencePieceFixtures.reference[name]! {
            let text = try TokenizerFixtures.text(file)
            let with = try tokenizer.encode(text)
            let without = try tokenizer.encode(text, addSpecialTokens: false)
            #expect(with == expected.with, "\(name) \(file) with special tokens: \(TokenizerFixtures.firstDifference(with, expected.with))")
            #expect(without == expected.without, "\(name) \(file) without: \(TokenizerFixtures.firstDifference(without, expected.without))")
        }
    }

    @Test("decoding equals the library's decode", arguments: SentencePieceFixtures.names)
    func decodeMatchesLibrary(name: String) throws {
        let tokenizer = try Tokenizer(contentsOf: SentencePieceFixtures.tokenizerFile(name))
        for (file, expected) in SentencePieceFixtures.reference[name]! {
            #expect(tokenizer.decode(expected.without) == expected.decoded, "\(name) \(file)")
        }
    }

    @Test("short probing texts", arguments: SentencePieceFixtures.probes)
    func probe(_ probe: SentencePieceFixtures.Probe) throws {
        let tokenizer = try Tokenizer(contentsOf: SentencePieceFixtures.tokenizerFile(probe.tokenizer))
        #expect(try tokenizer.encode(probe.text) == probe.with)
        #expect(try tokenizer.encode(probe.text, addSpecialTokens: false) == probe.without)
        #expect(tokenizer.decode(probe.without) == probe.decoded)
    }

    @Test("byte fallback tokenizers decode back to the text", arguments: ["mistral-v1", "spm-legacy", "spm-always-split"])
    func decodeRoundTrip(name: String) throws {
        let tokenizer = try Tokenizer(contentsOf: SentencePieceFixtures.tokenizerFile(name))
        for file in TokenizerFixtures.textFileNames {
            let text = try TokenizerFixtures.text(file)
            #expect(try tokenizer.decode(tokenizer.encode(text, addSpecialTokens: false)) == text, "\(name) \(file)")
        }
    }

    @Test("prepend_scheme first: only text at the very start gets ▁")
    func prependSchemeFirst() throws {
        let first = try Tokenizer(contentsOf: SentencePieceFixtures.tokenizerFile("spm-first"))
        let always = try Tokenizer(contentsOf: SentencePieceFixtures.tokenizerFile("spm-always-split"))
        // After a special token "the" starts without ▁ under `first` only.
        let afterSpecial = try first.encode("</s>the", addSpecialTokens: false)
        #expect(afterSpecial.first == 2)
        #expect(try afterSpecial != always.encode("</s>the", addSpecialTokens: false))
        #expect(try first.encode("the", addSpecialTokens: false) == always.encode("the", addSpecialTokens: false))
    }
}

@Suite("Tokenizers built from a GGUF vocabulary")
struct VocabularyTokenizerTests {
    @Test("ids equal those of the tokenizer.json the vocabulary came from", arguments: SentencePieceFixtures.vocabularies)
    func matchesTokenizerJSON(name: String) throws {
        let (spec, expectedFrom) = try SentencePieceFixtures.vocabulary(name)
        let tokenizer = try Tokenizer(vocabulary: spec)
        let expected = SentencePieceFixtures.expected(expectedFrom)
        #expect(expected.count == 3)
        for (file, ids) in expected {
            let text = try TokenizerFixtures.text(file)
            let with = try tokenizer.encode(text)
            let without = try tokenizer.encode(text, addSpecialTokens: false)
            #expect(with == ids.with, "\(name) \(file) with special tokens: \(TokenizerFixtures.firstDifference(with, ids.with))")
            #expect(without == ids.without, "\(name) \(file) without: \(TokenizerFixtures.firstDifference(without, ids.without))")
        }
    }

    @Test("SentencePiece vocabularies decode as their tokenizer.json does", arguments: ["mistral-v1", "spm-legacy"])
    func decodeMatchesLibrary(name: String) throws {
        let tokenizer = try Tokenizer(vocabulary: SentencePieceFixtures.vocabulary(name).spec)
        for (file, expected) in SentencePieceFixtures.reference[name]! {
            #expect(tokenizer.decode(expected.without) == expected.decoded, "\(name) \(file)")
        }
    }

    @Test("byte-level vocabularies decode back to the text")
    func byteLevelRoundTrip() throws {
        let tokenizer = try Tokenizer(vocabulary: SentencePieceFixtures.vocabulary("gpt2").spec)
        let text = try TokenizerFixtures.text("tokenizer_test.txt")
        #expect(try tokenizer.decode(tokenizer.encode(text)) == text)
    }
}

@Suite("SentencePiece inputs droptrace refuses")
struct SentencePieceErrorTests {
    private func vocabularyError(_ spec: VocabularySpec) -> DroptraceError? {
        let error = #expect(throws: DroptraceError.self) { try Tokenizer(vocabulary: spec, source: "model.gguf") }
        #expect(error?.path == "model.gguf")
        #expect(error?.description.contains("\n") == false)
        return error
    }

    @Test func unknownPrependScheme() throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(
            with: Data(contentsOf: SentencePieceFixtures.tokenizerFile("spm-first"))) as! [String: Any]
        json["pre_tokenizer"] = ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "sometimes", "split": false]
        let url = try scratch.write(json: json, to: "tokenizer.json")
        let error = #expect(throws: DroptraceError.self) { try Tokenizer(contentsOf: url) }
        #expect(error?.path == url.path)
        #expect(error?.message.contains("pre_tokenizer") == true)
        #expect(error?.message.contains("unknown prepend_scheme \"sometimes\"") == true, "\(error?.message ?? "")")
    }

    @Test func byteTokensIncomplete() throws {
        var spec = try SentencePieceFixtures.vocabulary("spm-legacy").spec
        let index = spec.tokens.firstIndex(of: "<0x80>")!
        spec.tokens[index] = "<0x80-gone>"
        let error = vocabularyError(spec)
        #expect(error?.message.contains("lacks <0x80>") == true, "\(error?.message ?? "")")
    }

    @Test func scoresMissingOrMiscounted() throws {
        var spec = try SentencePieceFixtures.vocabulary("spm-legacy").spec
        spec.scores?.removeLast()
        #expect(vocabularyError(spec)?.message.contains("799 scores for 800 tokens") == true)
        spec.scores = nil
        #expect(vocabularyError(spec)?.message.contains("no scores") == true)
    }

    @Test func unknownPreTokenizerName() throws {
        var spec = try SentencePieceFixtures.vocabulary("gpt2").spec
        // llama.cpp splits kimi-k2 with custom code that no tokenizer.json expresses.
        spec.preTokenizer = "kimi-k2"
        let error = vocabularyError(spec)
        #expect(error?.message.contains("\"kimi-k2\"") == true)
        #expect(error?.message.contains("llama-bpe") == true)
    }

    @Test func byteLevelWithoutMerges() throws {
        var spec = try SentencePieceFixtures.vocabulary("llama3").spec
        spec.merges = nil
        #expect(vocabularyError(spec)?.message.contains("no merges") == true)
    }

    @Test func bosOutsideVocabulary() throws {
        var spec = try SentencePieceFixtures.vocabulary("spm-legacy").spec
        spec.bosID = 5000
        #expect(vocabularyError(spec)?.message.contains("BOS id 5000") == true)
    }
}

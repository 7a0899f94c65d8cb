import DroptraceSupport
import Foundation
import Testing
@testable import Tokenization

/// Unigram models and the Precompiled normalizer beyond the fixtures'
/// texts: broken charsmaps, the model section's refusals, and number
/// literals read as the library reads them (tokenizer-cases/expected.json,
/// written by make_expected.py from tokenizers 0.23.3).
@Suite("Unigram tokenizers and Precompiled normalizers as the tokenizers library runs them")
struct UnigramTokenizerTests {
    struct CharsmapVariant: Sendable, CustomTestStringConvertible {
        var index: Int
        var charsmap: String
        var loadError: Bool
        var texts: [TokenizerFixtures.CaseExpectation]
        var testDescription: String { "variant \(index)\(loadError ? " (refused)" : "")" }
    }

    static let variants: [CharsmapVariant] = {
        let entries = TokenizerFixtures.casesDocument["precompiled-charsmap-variants"] as! [[String: Any]]
        return entries.enumerated().map { index, entry in
            CharsmapVariant(
                index: index, charsmap: entry["charsmap"] as! String, loadError: entry["load_error"] != nil,
                texts: (entry["texts"] as? [[String: Any]] ?? []).map {
                    TokenizerFixtures.CaseExpectation(file: "precompiled-rules.json", entry: $0)
                })
        }
    }()

    /// The library refuses some broken charsmaps at load and panics on some
    /// texts with others: droptrace refuses the same loads and the same
    /// texts with one line naming the file, and gives the same ids for the rest.
    @Test("broken charsmaps: refused, failing or encoding as in the library", arguments: variants)
    func brokenCharsmap(_ variant: CharsmapVariant) throws {
        var json = try JSONSerialization.jsonObject(
            with: Data(contentsOf: TokenizerFixtures.caseFile("precompiled-rules.json"))) as! [String: Any]
        var normalizer = json["normalizer"] as! [String: Any]
        var steps = normalizer["normalizers"] as! [[String: Any]]
        steps[0]["precompiled_charsmap"] = variant.charsmap
        normalizer["normalizers"] = steps
        json["normalizer"] = normalizer
        let scratch = try TokenizerScratch()
        let file = try scratch.write(json: json, to: "tokenizer.json")
        guard !variant.loadError else {
            let error = #expect(throws: DroptraceError.self) { try Tokenizer(contentsOf: file) }
            #expect(error?.path == file.path)
            #expect(error?.message.contains("normalizer.normalizers[0].precompiled_charsmap") == true, "\(error?.message ?? "")")
            #expect(error?.description.contains("\n") == false)
            return
        }
        let tokenizer = try Tokenizer(contentsOf: file)
        #expect(!variant.texts.isEmpty)
        for expectation in variant.texts { try expectation.check(tokenizer, file: file.path) }
    }

    /// serde_json reads a decimal literal by gathering digits into a u64 and
    /// scaling it by a power of ten, not always to the nearest double; a
    /// Unigram model's cuts depend on the exact sums of its scores.
    @Test func numbersReadAsSerdeJSONReadsThem() throws {
        let entries = TokenizerFixtures.casesDocument["serde-floats"] as! [[String: Any]]
        #expect(entries.count > 10)
        var differFromNearest = 0
        for entry in entries {
            let literal = entry["literal"] as! String
            let expected = Double(bitPattern: (entry["bits"] as! NSNumber).uint64Value)
            let read = try JSONParser.parse(Array("[\(literal)]".utf8), serde: true) as! [Any]
            let value = (read[0] as? Double) ?? Double(read[0] as! Int)
            #expect(value.bitPattern == expected.bitPattern, "\(literal): \(value) vs the library's \(expected)")
            if Double(literal)?.bitPattern != expected.bitPattern { differFromNearest += 1 }
        }
        #expect(differFromNearest >= 2)
        #expect(throws: JSONParser.Failure.self) { try JSONParser.parse(Array("1e400".utf8), serde: true) }
    }

    @Test("a model section the library cannot load is refused naming the field", arguments: [
        (#"{"type": "Unigram", "unk_id": 3, "vocab": [["a", -1.0]]}"#, "model.unk_id 3 is outside model.vocab"),
        (#"{"type": "Unigram", "unk_id": 0, "vocab": []}"#, "model.vocab is empty"),
        (#"{"type": "Unigram", "unk_id": -1, "vocab": [["a", -1.0]]}"#, "model.unk_id should not be negative"),
        (#"{"type": "Unigram", "unk_id": 0.0, "vocab": [["a", -1.0]]}"#, "model.unk_id should be an integer"),
        (#"{"type": "Unigram", "vocab": [["a"]]}"#, "vocab[0] should be [piece, score]"),
        (#"{"type": "Unigram", "vocab": [["a", "1"]]}"#, "vocab[0] should be [piece, score]"),
        (#"{"type": "Unigram", "vocab": [["a", -1, 0]]}"#, "vocab[0] should be [piece, score]"),
        (#"{"type": "Unigram", "vocab": [["a", -1.0]], "byte_fallback": null}"#, "model.byte_fallback"),
        (#"{"type": "Unigram", "unk_id": 0}"#, "has no \"vocab\""),
    ])
    func refusedModel(model: String, phrase: String) throws {
        let text = #"{"version": "1.0", "added_tokens": [], "model": "# + model + "}"
        let scratch = try TokenizerScratch()
        let file = try scratch.write(text, to: "tokenizer.json")
        let error = #expect(throws: DroptraceError.self) { try Tokenizer(contentsOf: file) }
        #expect(error?.path == file.path)
        #expect(error?.message.contains(phrase) == true, "\(error?.message ?? "")")
    }

    /// Without a type the library tries each model in turn; a list of
    /// [piece, score] pairs is Unigram's.
    @Test func untypedUnigramModel() throws {
        let text = #"{"version": "1.0", "added_tokens": [], "model": {"unk_id": 0, "vocab": [["<unk>", 0], ["a", -1], ["ab", -1.5]]}}"#
        let scratch = try TokenizerScratch()
        let tokenizer = try Tokenizer(contentsOf: scratch.write(text, to: "tokenizer.json"))
        #expect(try tokenizer.encode("abx a") == [2, 0, 1])
    }
}

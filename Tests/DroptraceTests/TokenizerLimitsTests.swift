import DroptraceSupport
import Foundation
import Testing
@testable import Tokenization

/// Regexes from tokenizer.json run with a step budget: catastrophic
/// backtracking is an error naming the file and the pattern, within a second
/// or two, while long legitimate texts still tokenise.
@Suite("Tokenizer regexes have a time limit")
struct TokenizerLimitsTests {
    /// The llama3 fixture with its word-splitting regex replaced by `regex`
    /// (the shape of the crashers in shared/cases/crashers/tokenizer).
    private func tokenizer(splittingOn regex: String, in scratch: TokenizerScratch) throws -> (Tokenizer, URL) {
        let original = TokenizerFixtures.tokenizerFile("llama3")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: original)) as! [String: Any]
        json["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [
            ["type": "Split", "pattern": ["Regex": regex], "behavior": "Isolated", "invert": false],
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
        ]]
        let file = try scratch.write(json: json, to: "tokenizer.json")
        return (try Tokenizer(contentsOf: file), file)
    }

    @Test("catastrophic backtracking is an error naming the file and the pattern",
          arguments: [#"(.*){1,32000}[bc]"#, #"(\w+\s?)*$"#, #"(a|aa)+b"#, #"((a+)+)+b"#])
    func catastrophicPatternFails(regex: String) throws {
        let scratch = try TokenizerScratch()
        let (tokenizer, file) = try tokenizer(splittingOn: regex, in: scratch)
        let text = try TokenizerFixtures.text("calib.txt") + String(repeating: "a", count: 60) + "\n"
        let start = Date()
        let error = #expect(throws: DroptraceError.self) { try tokenizer.encode(text) }
        #expect(Date().timeIntervalSince(start) < 20)
        #expect(error?.path == file.path)
        #expect(error?.message.contains(quoted(regex)) == true)
        #expect(error?.description.contains("\n") == false)
    }

    /// Each piece's budget alone let a pattern take most of it on every one
    /// of many short pieces: minutes for a megabyte. The text's pieces share
    /// one budget, so the refusal comes after a few of them.
    @Test("many short pieces share one budget")
    func backtrackingOnManyShortPiecesFails() throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: TokenizerFixtures.tokenizerFile("llama3"))) as! [String: Any]
        json["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [
            ["type": "Split", "pattern": ["String": " "], "behavior": "Removed", "invert": false],
            ["type": "Split", "pattern": ["Regex": "(a|a)*b"], "behavior": "Isolated", "invert": false],
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
        ]]
        let file = try scratch.write(json: json, to: "tokenizer.json")
        let tokenizer = try Tokenizer(contentsOf: file)
        let piece = String(repeating: "a", count: 14)
        // One piece alone stays within its own budget.
        #expect(try !tokenizer.encode(piece).isEmpty)
        let text = String(repeating: piece + " ", count: 20_000)
        let error = #expect(throws: DroptraceError.self) { try tokenizer.encode(text) }
        #expect(error?.path == file.path)
        #expect(error?.message.contains(#"tokenizer regex "(a|a)*b" backtracks without end on this text"#) == true,
                "\(String(describing: error))")
    }

    @Test("a regex in a Replace normalizer has the same limit")
    func catastrophicNormalizerFails() throws {
        let scratch = try TokenizerScratch()
        let original = TokenizerFixtures.tokenizerFile("llama3")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: original)) as! [String: Any]
        json["normalizer"] = ["type": "Replace", "pattern": ["Regex": #"(x+x+)+y"#], "content": "z"]
        let file = try scratch.write(json: json, to: "tokenizer.json")
        let tokenizer = try Tokenizer(contentsOf: file)
        let error = #expect(throws: DroptraceError.self) {
            try tokenizer.encode(String(repeating: "x", count: 40))
        }
        #expect(error?.path == file.path)
    }

    /// Replace steps that multiply the text (each space into a thousand)
    /// stop at 16 times its length instead of taking all memory; a real
    /// Replace ("▁" for each space: 3 bytes for 1) is untouched.
    @Test("a normalizer that multiplies the text is an error naming the file", arguments: [1, 2, 6])
    func growingNormalizerFails(steps: Int) throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: TokenizerFixtures.tokenizerFile("llama3"))) as! [String: Any]
        let grow: [String: Any] = ["type": "Replace", "pattern": ["String": " "], "content": String(repeating: " ", count: 1000)]
        json["normalizer"] = steps == 1 ? grow : ["type": "Sequence", "normalizers": Array(repeating: grow, count: steps)]
        let file = try scratch.write(json: json, to: "tokenizer.json")
        let tokenizer = try Tokenizer(contentsOf: file)
        let text = try TokenizerFixtures.text("calib.txt")
        let start = Date()
        let error = #expect(throws: DroptraceError.self) { try tokenizer.encode(text) }
        #expect(Date().timeIntervalSince(start) < 10)
        #expect(error?.path == file.path)
        #expect(error?.message.contains("16 times") == true)

        json["normalizer"] = ["type": "Replace", "pattern": ["String": " "], "content": "\u{2581}"]
        let real = try Tokenizer(contentsOf: try scratch.write(json: json, to: "tokenizer.json"))
        #expect(try !real.encode(text).isEmpty)
    }

    /// ByteLevel steps repeated re-encode what the previous one wrote,
    /// doubling every space: 40 of them asked for 2⁴⁰ times the text (an
    /// abort allocating gigabytes). They stop at 16 times its length.
    @Test("a pre-tokenizer Sequence that multiplies the text is an error naming the file")
    func growingPreTokenizerFails() throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: TokenizerFixtures.tokenizerFile("llama3"))) as! [String: Any]
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false]
        json["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": Array(repeating: byteLevel, count: 40)]
        let file = try scratch.write(json: json, to: "tokenizer.json")
        let tokenizer = try Tokenizer(contentsOf: file)
        // The bound is the error itself (no timing: it holds on a loaded machine too).
        let error = #expect(throws: DroptraceError.self) { try tokenizer.encode(try TokenizerFixtures.text("calib.txt")) }
        #expect(error?.path == file.path && error?.message.contains("pre-tokenizer grows text beyond 16 times") == true,
                "\(String(describing: error))")
    }

    /// The llama3 fixture with one more added token (id 512).
    private func tokenizer(adding token: [String: Any], in scratch: TokenizerScratch) throws -> (Tokenizer, URL) {
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: TokenizerFixtures.tokenizerFile("llama3"))) as! [String: Any]
        json["added_tokens"] = (json["added_tokens"] as! [[String: Any]]) + [token.merging(
            ["id": 512, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false]) { given, _ in given }]
        let file = try scratch.write(json: json, to: "tokenizer.json")
        return (try Tokenizer(contentsOf: file), file)
    }

    /// An added token 100,001 bytes long whose first 100,000 the text
    /// repeats: the search from every position walked all of it (minutes).
    /// It is an error naming the file within seconds.
    @Test("an added token the text keeps almost matching is an error naming the file")
    func longAddedTokenSearchFails() throws {
        let scratch = try TokenizerScratch()
        let (tokenizer, file) = try tokenizer(adding: ["content": String(repeating: "a", count: 100_000) + "b"], in: scratch)
        // The step budget is what the error reports: no timing, which a loaded machine would stretch.
        let error = #expect(throws: DroptraceError.self) { try tokenizer.encode(String(repeating: "a", count: 300_000)) }
        #expect(error?.path == file.path && error?.message.contains("steps per byte") == true, "\(String(describing: error))")
    }

    /// lstrip / rstrip rescanned the whole whitespace run at every match
    /// (200,000 tabs: minutes). Each tab is still the token, as the
    /// tokenizers library gives it ("a\t\t\tb" → a, 512, 512, 512, b), in linear time.
    @Test("stripping added tokens in a long whitespace run takes linear time", arguments: ["lstrip", "rstrip"])
    func strippingAddedTokensInALongRun(side: String) throws {
        let scratch = try TokenizerScratch()
        let (tokenizer, _) = try tokenizer(adding: ["content": "\t", side: true], in: scratch)
        func encode(_ text: String) throws -> [Int] { try tokenizer.encode(text, addSpecialTokens: false) }
        let (a, b) = (try encode("a"), try encode("b"))
        #expect(try encode("a\t\t\tb") == a + [512, 512, 512] + b)
        let start = Date()
        let ids = try encode("a" + String(repeating: "\t", count: 200_000) + "b")
        #expect(Date().timeIntervalSince(start) < 10)
        #expect(ids == a + [Int](repeating: 512, count: 200_000) + b)
    }

    /// A literal pattern is found left to right without overlaps, without
    /// stepping back: a 200,001-byte Replace pattern over 400,000 bytes of its
    /// first byte took minutes.
    @Test("a literal pattern is found in linear time, leftmost and without overlaps")
    func literalPatternSearch() throws {
        func matches(_ needle: String, in text: String) -> [Int] {
            var starts: [Int] = []
            Array(text.utf8).withUnsafeBufferPointer { buffer in
                LiteralSplitPattern(needle: Array(needle.utf8)).forEachSegment(in: buffer) { start, _, isMatch in
                    if isMatch { starts.append(start) }
                }
            }
            return starts
        }
        #expect(matches("aab", in: "aaab") == [1] && matches("abab", in: "abababab") == [0, 4])
        #expect(matches("aa", in: "aaaaa") == [0, 2] && matches("xyz", in: "xyxyz xyz") == [2, 6] && matches("q", in: "abc") == [])
        let long = String(repeating: "a", count: 200_000) + "b"
        let start = Date()
        #expect(matches(long, in: String(repeating: "a", count: 400_000)) == [])
        #expect(matches(long, in: String(repeating: "a", count: 300_000) + "b") == [100_000])
        #expect(Date().timeIntervalSince(start) < 10)
    }

    /// Merges whose pairs a fixed multiplicative hash sends to one run of
    /// slots (left ids j · c⁻¹ mod 2³²) took 18 s to load at 200,000: each
    /// insert probed past all the others. The seeded hash spreads them.
    @Test("merges chosen to collide in the merge table load in linear time")
    func collidingMergesLoadQuickly() {
        let inverse: UInt32 = {  // of the low 32 bits of the old multiplier, mod 2³²
            let c = UInt32(truncatingIfNeeded: 0x9E37_79B9_7F4A_7C15 as UInt64)
            var x: UInt32 = 1
            for _ in 0..<5 { x = x &* (2 &- c &* x) }
            return x
        }()
        var lefts: [Int32] = []
        var j: UInt32 = 0
        while lefts.count < 200_000 {
            let left = j &* inverse
            j += 1
            if left < 1 << 31 { lefts.append(Int32(left)) }
        }
        let start = Date()
        var table = MergeTable(capacity: lefts.count)
        for (rank, left) in lefts.enumerated() { table.insert(left: left, right: 7, rank: UInt32(rank), merged: Int32(rank)) }
        #expect(lefts.enumerated().allSatisfy { rank, left in table.lookup(left, 7) == UInt64(rank) << 32 | UInt64(rank) })
        #expect(Date().timeIntervalSince(start) < 10)
    }

    /// Each pre-tokenizer step is a level of recursion per piece: thousands
    /// would overflow the stack, so more than 64 (nested sequences counted by
    /// their steps) are refused when the file is read.
    @Test("a tokenizer.json larger than any real one is refused before it is read")
    func oversizedFileIsRefusedUnread() throws {
        let scratch = try TokenizerScratch()
        let file = try scratch.write(json: [:], to: "tokenizer.json")
        // Sparse: a gigabyte that costs no disk, and must cost no memory either.
        let handle = try FileHandle(forWritingTo: file)
        try handle.truncate(atOffset: 1 << 30)
        try handle.close()
        let error = #expect(throws: DroptraceError.self) { try Tokenizer(contentsOf: file) }
        #expect(error?.path == file.path && error?.message.contains("larger than") == true, "\(String(describing: error))")
    }

    @Test("too many pre-tokenizer steps are refused when tokenizer.json is read")
    func tooManyPreTokenizerSteps() throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: TokenizerFixtures.tokenizerFile("llama3"))) as! [String: Any]
        let split: [String: Any] = ["type": "Split", "pattern": ["String": "x"], "behavior": "Isolated", "invert": false]
        let nested: [String: Any] = ["type": "Sequence", "pretokenizers": Array(repeating: split, count: 40)]
        for steps in [[Any](repeating: split, count: 3000), [nested, nested]] {
            json["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": steps]
            let file = try scratch.write(json: json, to: "tokenizer.json")
            let error = #expect(throws: DroptraceError.self) { try Tokenizer(contentsOf: file) }
            #expect(error?.path == file.path)
            #expect(error?.message.contains("at most 64") == true, "\(String(describing: error))")
        }
        json["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [nested]]
        let file = try scratch.write(json: json, to: "tokenizer.json")
        #expect(try !Tokenizer(contentsOf: file).encode("a text without the letter").isEmpty)
    }

    /// A long text through the regex engine: the per-attempt budget grows
    /// with the text, and the whole search's with its length, so a 2 MB text
    /// (and one match spanning 1 MB) is no error, and the ids are those of
    /// the hand-written scanner for the same regex.
    @Test("long legitimate texts still tokenise")
    func longTextsWork() throws {
        let scratch = try TokenizerScratch()
        let regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        let (viaRegexEngine, _) = try tokenizer(splittingOn: "(?:\(regex))", in: scratch)
        let viaScanner = try Tokenizer(contentsOf: TokenizerFixtures.tokenizerFile("llama3"))
        let calibration = try TokenizerFixtures.text("train.txt")
        let text = String(repeating: calibration, count: 2_000_000 / calibration.utf8.count + 1)
        #expect(try viaRegexEngine.encode(text) == viaScanner.encode(text))

        // One match of a megabyte: letters and single spaces, no newline.
        let scratch2 = try TokenizerScratch()
        let (wholeLine, _) = try tokenizer(splittingOn: #"(?:\p{L}+\s?)+"#, in: scratch2)
        let line = String(repeating: "lorem ipsum dolor ", count: 1_000_000 / 18)
        #expect(try !wholeLine.encode(line, addSpecialTokens: false).isEmpty)
    }
}

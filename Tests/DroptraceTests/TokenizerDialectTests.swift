import DroptraceSupport
import Foundation
import Testing
@testable import Tokenization

/// tokenizer.json regexes are Oniguruma's (the `tokenizers` library's
/// engine) but run by ICU: constructs whose meaning differs are rewritten,
/// or refused by name when ICU has no simple spelling for them.
@Suite("Tokenizer regexes mean what they mean in Oniguruma")
struct TokenizerDialectTests {
    /// Where the constructs differ: U+000B, the other line breaks, the
    /// Latin-1 superscripts and fractions, a zero-width joiner, hex digits,
    /// a backspace and a "]".
    static let text = "a\u{0B}b\nc\rd\u{0C}e\u{85}f\u{2028}g Vv 3\u{B2}\u{BD} a\u{200D}b 09AFaf x\u{08}b ]"

    /// The matches the library finds for each pattern in `text`, from
    ///     pre_tokenizers.Split(Regex(pattern), "removed", invert=True).pre_tokenize_str(text)
    /// with tokenizers 0.23.3 (empty matches leave no piece there).
    static let librarySplits: [(pattern: String, matches: [String])] = [
        (#"\v"#, ["\u{0B}"]),
        (#"\V"#, ["V"]),
        (#"[\v]"#, ["\u{0B}"]),
        (#"[^\v\s]+"#, ["a", "b", "c", "d", "e", "f", "g", "Vv", "3\u{B2}\u{BD}", "a\u{200D}b", "09AFaf", "x\u{08}b", "]"]),
        (#"\h+"#, ["a", "b", "c", "d", "e", "f", "3", "a", "b", "09AFaf", "b"]),
        (#"\H+"#, ["\u{0B}", "\n", "\r", "\u{0C}", "\u{85}", "\u{2028}g Vv ", "\u{B2}\u{BD} ", "\u{200D}", " ", " x\u{08}", " ]"]),
        (#"[\h]+"#, ["a", "b", "c", "d", "e", "f", "3", "a", "b", "09AFaf", "b"]),
        (#"[^\h\s]+"#, ["g", "Vv", "\u{B2}\u{BD}", "\u{200D}", "x\u{08}", "]"]),
        (#"\w+"#, ["a", "b", "c", "d", "e", "f", "g", "Vv", "3\u{B2}\u{BD}", "a", "b", "09AFaf", "x", "b"]),
        (#"\W+"#, ["\u{0B}", "\n", "\r", "\u{0C}", "\u{85}", "\u{2028}", " ", " ", " ", "\u{200D}", " ", " ", "\u{08}", " ]"]),
        (#"[\w]+"#, ["a", "b", "c", "d", "e", "f", "g", "Vv", "3", "a", "b", "09AFaf", "x", "b"]),
        (#"[\W]+"#, ["\u{0B}", "\n", "\r", "\u{0C}", "\u{85}", "\u{2028}", " ", " ", "\u{B2}\u{BD} ", "\u{200D}", " ", " ", "\u{08}", " ]"]),
        (#"[\b]"#, ["\u{08}"]),
        (#".+"#, ["a\u{0B}b", "c\rd\u{0C}e\u{85}f\u{2028}g Vv 3\u{B2}\u{BD} a\u{200D}b 09AFaf x\u{08}b ]"]),
        (#"[]\h]+"#, ["a", "b", "c", "d", "e", "f", "3", "a", "b", "09AFaf", "b", "]"]),
        (#"a*"#, ["a", "a", "a"]),
    ]

    /// The non-empty matches of `pattern` (from tokenizer.json) in `text`, as the Split pre-tokenizer finds them.
    static func matches(of pattern: String, in text: String) throws -> [String] {
        let split = try ICURegexSplitPattern(pattern: pattern, source: "tokenizer.json")
        var found: [String] = []
        let bytes = Array(text.utf8)
        try bytes.withUnsafeBufferPointer { buffer in
            try split.forEachSegment(in: buffer) { start, end, isMatch in
                if isMatch && start < end { found.append(String(decoding: buffer[start..<end], as: UTF8.self)) }
            }
        }
        return found
    }

    @Test("translated constructs match as in the library", arguments: librarySplits)
    func translatedConstruct(pattern: String, matches: [String]) throws {
        #expect(try Self.matches(of: pattern, in: Self.text) == matches)
    }

    /// Brackets, control escapes and properties where ICU's reading
    /// differs: "-" between a range and a class, "\\pL" without braces (the
    /// letters pL in Oniguruma), "\\c?" (DEL), "&", "$" and "{" in brackets,
    /// "\\p{^..}" and "In_" blocks. Matches from the library (tokenizers
    /// 0.23.3) on `text` plus the characters below.
    static let bracketText = text + " pL \u{7F}\u{1C}\u{01} &$-{} \u{391}\u{3B1}"
    static let bracketSplits: [(pattern: String, matches: [String])] = [
        (#"[a-z-\d]+"#, ["a", "b", "c", "d", "e", "f", "g", "v", "3", "a", "b", "09", "af", "x", "b", "p", "-"]),
        (#"\pL+"#, ["pL"]),
        (#"[\pL-z]+"#, ["a", "b", "c", "d", "e", "f", "g", "Vv", "a", "b", "af", "x", "b", "]", "pL"]),
        (#"\c?"#, ["\u{7F}"]),
        (#"[\cA-\cZ]+"#, ["\u{0B}", "\n", "\r", "\u{0C}", "\u{08}", "\u{01}"]),
        (#"[&$-{}]+"#, ["a", "b", "c", "d", "e", "f", "g", "Vv", "3", "a", "b", "09AFaf", "x", "b", "]", "pL", "&$-{}"]),
        (#"[-\d]+"#, ["3", "09", "-"]),
        (#"[\d-]+"#, ["3", "09", "-"]),
        (#"[!--]+"#, ["&$-"]),
        (#"\p{In_Greek_and_Coptic}+"#, ["\u{391}\u{3B1}"]),
        (#"[\p{^Lu}&&\p{Greek}]+"#, ["\u{3B1}"]),
        (#"[a-&&b]+"#, []),
    ]

    @Test("brackets, control escapes and property names match as in the library", arguments: bracketSplits)
    func bracketConstruct(pattern: String, matches: [String]) throws {
        let split = try ICURegexSplitPattern(pattern: pattern, source: "tokenizer.json")
        var found: [String] = []
        let bytes = Array(Self.bracketText.utf8)
        try bytes.withUnsafeBufferPointer { buffer in
            try split.split(buffer, behavior: .removed, invert: true) { range in
                found.append(String(decoding: buffer[range], as: UTF8.self))
            }
        }
        #expect(found == matches)
    }

    /// Repeat counts Oniguruma reads where ICU refuses them: `{,m}` from 0,
    /// `{n,m}` with n > m as the possessive `{m,n}+`, and a "{" that starts
    /// no count as itself. Matches from the library (tokenizers 0.23.3) on
    /// `countText`.
    static let countText = "aaa ab{ a{b} x{,2}y aaaaa {} a{1,} a{,} a{ 2} a{}"
    static let countSplits: [(pattern: String, matches: [String])] = [
        (#"a{,2}"#, ["aa", "a", "a", "a", "aa", "aa", "a", "a", "a", "a", "a"]),
        (#"a{2,1}"#, ["aa", "a", "a", "a", "aa", "aa", "a", "a", "a", "a", "a"]),
        (#"a{3,1}b"#, ["ab"]),
        (#"a{2,1}a"#, ["aaa", "aaa"]),
        (#"a{1,2}a"#, ["aaa", "aaa", "aa"]),
        (#"(a){,2}"#, ["aa", "a", "a", "a", "aa", "aa", "a", "a", "a", "a", "a"]),
        (#"x{,2}y"#, ["y"]),
        (#"a{,2}?"#, []),
        (#"a{,0}"#, []),
        (#"a{1,}"#, ["aaa", "a", "a", "aaaaa", "a", "a", "a", "a"]),
        (#"a{b}"#, ["a{b}"]),
        (#"a{,}"#, ["a{,}"]),
        (#"a{ 2}"#, ["a{ 2}"]),
        (#"{"#, ["{", "{", "{", "{", "{", "{", "{", "{"]),
        (#"}"#, ["}", "}", "}", "}", "}", "}", "}"]),
        (#"a{}"#, ["a{}"]),
        (#"a{2,1}|b{,1}c"#, ["aa", "a", "a", "a", "aa", "aa", "a", "a", "a", "a", "a"]),
    ]

    @Test("repeat counts and literal braces match as in the library", arguments: countSplits)
    func repeatCount(pattern: String, matches: [String]) throws {
        #expect(try Self.matches(of: pattern, in: Self.countText) == matches)
    }

    /// Patterns Oniguruma rejects, so the library refuses the file: a class
    /// as a range's end or start, a lone trailing \\c or backslash, unknown
    /// property names (ICU knows gc=L, Bidi_M, In_Greek and more).
    @Test("patterns the library refuses are refused", arguments: [
        #"[\d-z]"#, #"[a-\d]"#, #"[\w-z]"#, #"[\p{L}-z]"#, #"[a-\p{L}]"#, "[[:alpha:]-z]", "[a-[:alpha:]]", #"[\d-\w]"#,
        #"[\h-z]"#, #"\c"#, #"a\c"#, #"a\"#, #"\s$*\p{Digit}+"#, "x^+", #"\b{2}"#, #"a\z?"#, #"\p{gc=L}"#, #"\p{Script=Latin}"#, #"\p{Bidi_M}"#, #"\p{L&}"#,
        #"\p{In_Greek}"#, #"\p{Age=6.0}"#, #"[\p{Lé}]"#, "[[:foo:]]",
    ])
    func libraryRefusal(pattern: String) throws {
        let error = #expect(throws: DroptraceError.self) { try ICURegexSplitPattern.translatedToICU(pattern) }
        #expect(error?.message.contains("the tokenizers library refuses it") == true, "\(error?.message ?? "no error")")
    }

    /// Each of these loads in the library with another meaning than ICU
    /// gives it (checked with tokenizers 0.23.3; (?s) the library refuses).
    @Test("constructs without an ICU spelling are refused by name", arguments: [
        // Grapheme clusters: ICU 72 keeps "\u{915}\u{94D}\u{937}" as one, the library as two.
        (#"\X+"#, #"\X"#), (#"\y"#, #"\y"#), (#"\Y"#, #"\Y"#), (#"\N{LATIN SMALL LETTER A}"#, #"\N"#), (#"\O"#, #"\O"#),
        (#"a\Kb"#, #"\K"#), (#"\G"#, #"\G"#), (#"a|\G"#, #"\G"#), (#"\o{101}"#, #"\o"#), (#"(a)\g<1>"#, #"\g"#), (#"\Qa.\E"#, #"\Q"#),
        (#"\C-a"#, #"\C"#), (#"\M-a"#, #"\M"#), (#"\0101"#, #"\0"#), (#"\101"#, #"\1"#), (#"[\1]"#, #"\1"#),
        (#"\p{Word}+"#, #"\p{Word}"#), (#"[\P{X_Digit}]"#, #"\P{X_Digit}"#),
        ("[[:punct:]]", "[:punct:]"), ("[a[:^word:]]", "[:^word:]"), ("[[:xdigit:]]", "[:xdigit:]"),
        ("[:alpha:]", "[:alpha:]"), ("[a-z--[aeiou]]", "a range ending in brackets"),
        ("(?m).", "the option (?m)"), ("(?x)[ a]", "the option (?x)"), ("(?s:.)", "the option (?s)"),
        ("(?i-m)a", "the option (?m)"),
        // (?:a{2})+ and (?:a{2})? in Oniguruma, a possessive and a lazy count in ICU.
        ("a{2}+", "a repeat count followed by \"+\""), ("a{1,3}+", "a repeat count followed by \"+\""),
        // (?:a{1,2}+)?, (?:a{1,2}+)* ... in Oniguruma; ICU refuses a repeat after a possessive count.
        ("a{2,1}?", "a repeat count followed by \"?\""), ("a{2,1}*", "a repeat count followed by \"*\""),
        ("a{2,1}{2}", "a repeat count followed by \"{\""), ("a{,2}+", "a repeat count followed by \"+\""),
        ("x{2}?", "a repeat count followed by \"?\""),
        // Under (?i) Oniguruma's [ß] also matches "ss", [\x{FB00}-\x{FB06}] "ff" and "st"; ICU's do not.
        ("(?i)[ß]", "a character whose case folding is several characters"), (#"(?i:x[\x{C0}-\x{FF}])"#, "a character whose case folding is several characters"),
        (#"(?i)[a-z\u00DF]"#, "a character whose case folding is several characters"), (#"(?i)[\x{FB00}-\x{FB06}]"#, "a character whose case folding is several characters"),
        // \xHH from 0x80 on is one byte of UTF-8 to Oniguruma (never a whole character), U+00HH to ICU.
        (#"[\x80-\xff]"#, #"\x80"#), (#"\xC3\xA9"#, #"\xC3"#),
    ])
    func refusedConstruct(pattern: String, construct: String) throws {
        let error = #expect(throws: DroptraceError.self) { try ICURegexSplitPattern.translatedToICU(pattern) }
        #expect(error?.message.contains("uses \(construct)") == true, "\(error?.message ?? "no error")")
    }

    /// Oniguruma refuses a repeat count above 100000, and the library with
    /// it the whole file; `\{` is a brace, not a count.
    @Test("repeat counts beyond Oniguruma's limit are refused")
    func repeatCountLimit() throws {
        for pattern in ["a{1,100001}", "a{100001}", "a{,200000}", "b{2}a{99999999999999999999}"] {
            let error = #expect(throws: DroptraceError.self) { try ICURegexSplitPattern.translatedToICU(pattern) }
            #expect(error?.message.contains("beyond Oniguruma's 100000") == true, "\(pattern): \(error?.message ?? "no error")")
        }
        for pattern in ["a{1,100000}", #"\{100001}"#, "\\p{N}{1,3}"] {
            #expect(throws: Never.self, "\(pattern)") { _ = try ICURegexSplitPattern.translatedToICU(pattern) }
        }
    }

    /// The constructs both engines read alike pass through unchanged (with
    /// ICU's Unicode data at the library's version; `TokenizerUnicodeVersionTests`
    /// covers the others).
    @Test("shared constructs are left alone", arguments: [
        #"(?i:'s|'t)|\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#,
        #"\R\d\D\s\S\A\z\Z\x41\x{1F600}\u00E9\cA\e\t"#, "a++(?>b+)(?<=c)(?<!d)(?=e)(?!f)", "[[:alpha:]\\p{Han}]+",
        "[:;]", "(?i:k)", "(?-i:a)", "a{1,2}?b{2,}", "[ß]", #"(?i:[\p{Ll}a-z])"#,
    ])
    func sharedConstruct(pattern: String) throws {
        #expect(try ICURegexSplitPattern.translatedToICU(pattern, classes: ICUCharacterClasses(icuVersion: 1600)).pattern == pattern)
    }

    /// A Split on `{"Regex": ""}` is the library's Split on `{"String": ""}`
    /// (both an empty match at every boundary); the fixture's ids for the
    /// String spelling come from the library (tokenizer-cases/expected.json).
    @Test("an empty Split pattern splits between every two characters, in either spelling")
    func emptySplitPattern() throws {
        let file = TokenizerFixtures.caseFile("split-empty-pattern.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as! [String: Any]
        var split = json["pre_tokenizer"] as! [String: Any]
        split["pattern"] = ["Regex": ""]
        json["pre_tokenizer"] = split
        let scratch = try TokenizerScratch()
        let regexSpelling = try Tokenizer(contentsOf: scratch.write(json: json, to: "tokenizer.json"))
        let expectations = TokenizerFixtures.caseExpectations.filter { $0.file == "split-empty-pattern.json" }
        #expect(!expectations.isEmpty)
        for expectation in expectations {
            try expectation.check(regexSpelling, file: regexSpelling.sourcePath)
        }
    }

    /// The library's Prepend of "" fails, and so does a Replace that
    /// inserts its content at an empty match at the text's start once a
    /// later step rewrites each character: the llama3 fixture's ByteLevel
    /// pre-tokenizer, or a normalizer such as NFC or Lowercase after it
    /// (found with tokenizers 0.23.3: a panic, or a stray token). Without
    /// such a step the library encodes it (tokenizer-cases/replace-empty-matches.json).
    @Test("Prepend of nothing and Replace of an empty match before a rewriting step are refused", arguments: [
        (#"{"type": "Prepend", "prepend": ""}"#, "normalizer: Prepend of an empty string"),
        (#"{"type": "Replace", "pattern": {"String": ""}, "content": "x"}"#, "matches empty text at the start"),
        (#"{"type": "Replace", "pattern": {"Regex": "x*"}, "content": "y"}"#, "matches empty text at the start"),
        (#"{"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"Regex": "(?=a)"}, "content": "y"}, {"type": "Lowercase"}]}"#,
         "matches empty text at the start"),
    ])
    func emptyNormalizerSteps(normalizer: String, phrase: String) throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: TokenizerFixtures.tokenizerFile("llama3"))) as! [String: Any]
        json["normalizer"] = try JSONSerialization.jsonObject(with: Data(normalizer.utf8))
        let file = try scratch.write(json: json, to: "tokenizer.json")
        let error = #expect(throws: DroptraceError.self) { try Tokenizer(contentsOf: file).encode("ab") }
        #expect(error?.path == file.path)
        #expect(error?.message.contains(phrase) == true, "\(error?.message ?? "no error")")
    }

    /// Content a Replace inserts at the start, then a right Strip: tokenizers
    /// 0.23.3 inserts it twice ("Hello there.\n" → "ZZHello there.") or
    /// panics (two characters of content); a left Strip is harmless.
    @Test(arguments: [(true, true), (false, false)])
    func emptyMatchAtTheStartBeforeARightStrip(stripRight: Bool, refused: Bool) throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: TokenizerFixtures.tokenizerFile("llama3"))) as! [String: Any]
        json["pre_tokenizer"] = NSNull()
        json["normalizer"] = try JSONSerialization.jsonObject(with: Data("""
            {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"Regex": "^"}, "content": "Z"},
             {"type": "Strip", "strip_left": true, "strip_right": \(stripRight)}]}
            """.utf8))
        let file = try scratch.write(json: json, to: "tokenizer.json")
        let tokenizer = try Tokenizer(contentsOf: file)
        if refused {
            let error = #expect(throws: DroptraceError.self) { try tokenizer.encode("Hello there.\n") }
            #expect(error?.message.contains("a right Strip") == true, "\(error?.message ?? "no error")")
        } else {
            #expect(throws: Never.self) { try tokenizer.encode("Hello there.\n") }
        }
    }

    /// The library removes continuing_subword_prefix's length in bytes from
    /// the right part of every merge and panics when that part is shorter
    /// (or the cut splits a character), so such a file is refused by name.
    @Test("a continuing_subword_prefix longer than a merge's right part is refused", arguments: ["Unigram", "ab"])
    func prefixLongerThanMergePart(prefix: String) throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: TokenizerFixtures.tokenizerFile("qwen2"))) as! [String: Any]
        var model = json["model"] as! [String: Any]
        model["continuing_subword_prefix"] = prefix
        if prefix == "ab" {
            // Two bytes off "x\u{E9}" end inside the "\u{E9}".
            var vocab = model["vocab"] as! [String: Any]
            vocab["x\u{E9}"] = 600
            vocab["xx\u{E9}"] = 601
            model["vocab"] = vocab
            model["merges"] = [["x", "x\u{E9}"]]
        }
        json["model"] = model
        let file = try scratch.write(json: json, to: "tokenizer.json")
        let error = #expect(throws: DroptraceError.self) { try Tokenizer(contentsOf: file) }
        #expect(error?.path == file.path)
        #expect(error?.message.contains("continuing_subword_prefix") == true, "\(error?.message ?? "no error")")
    }

    /// A post-processor's special-token id past 2^31 − 1 is refused naming
    /// tokenizer.json, as a vocabulary id is; it was taken and then blamed on
    /// the calibration file as outside the model's vocabulary.
    @Test("post-processor special-token ids past the id range are refused", arguments: [
        #"{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [4294967808], "tokens": ["<s>"]}}}"#,
        #"{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [2147483648], "tokens": ["<s>"]}}}"#,
        #"{"type": "BertProcessing", "cls": ["<s>", 4294967296], "sep": ["</s>", 1]}"#,
    ])
    func oversizedSpecialTokenIds(postProcessor: String) throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: TokenizerFixtures.tokenizerFile("llama3"))) as! [String: Any]
        json["post_processor"] = try JSONSerialization.jsonObject(with: Data(postProcessor.utf8))
        let file = try scratch.write(json: json, to: "tokenizer.json")
        let error = #expect(throws: DroptraceError.self) { try Tokenizer(contentsOf: file).encode("ab") }
        #expect(error?.path == file.path)
        #expect(error?.message.contains("post_processor") == true, "\(error?.message ?? "no error")")
    }
}

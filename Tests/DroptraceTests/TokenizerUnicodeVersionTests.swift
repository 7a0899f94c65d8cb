import DroptraceSupport
import Foundation
import Testing
@testable import Tokenization

/// Tokenizer regexes run by ICU match what they match in the tokenizers
/// library (Oniguruma with Unicode 16.0 tables) although ICU's Unicode data
/// is another version (Debian bookworm's ICU 72: Unicode 15.0), and where
/// Oniguruma's rules differ (word boundaries, case folding, option scopes).
@Suite("Tokenizer regexes read Unicode as the library does")
struct TokenizerUnicodeVersionTests {
    /// The matches the library finds for each pattern in its text, from
    ///     pre_tokenizers.Split(Regex(pattern), "removed", invert=True).pre_tokenize_str(text)
    /// with tokenizers 0.23.3. U+1C89 (a capital letter), U+16D43 (Kirat Rai
    /// letter), U+16130 and U+11BF0 (digits), U+0363 and U+113B8 (marks,
    /// alphabetic in 16.0), U+1CC00 (a symbol) are new or changed in Unicode
    /// 16.0; U+1171E is a spacing mark in 16.0, a nonspacing one in 15.0.
    static let librarySplits: [(pattern: String, text: String, matches: [String])] = [
        (#"\p{L}+"#, "a\u{1C89}b \u{16D43}x", ["a\u{1C89}b", "\u{16D43}x"]),
        (#"[^\s\p{L}\p{N}]+"#, "a\u{1C89}b \u{16130}! \u{1CC00}", ["!", "\u{1CC00}"]),
        (#"\d+"#, "1\u{16130} \u{11BF0}", ["1\u{16130}", "\u{11BF0}"]),
        (#"[[:alpha:]]+"#, "a\u{1C89}b \u{363}", ["a\u{1C89}b", "\u{363}"]),
        (#"[[:^alpha:]]+"#, "a\u{1C89}b1", ["1"]),
        (#"\w+"#, "a\u{1C89}b \u{113B8}", ["a\u{1C89}b", "\u{113B8}"]),
        (#"\W+"#, "a\u{1C89}b ", [" "]),
        (#"\p{^L}+"#, "a\u{1C89}b1", ["1"]),
        (#"\P{Cn}+"#, "a\u{1C89}b", ["a\u{1C89}b"]),
        (#"\p{Mn}+"#, "a\u{1171E}\u{897}", ["\u{897}"]),
        // \b is \w on one side only; a mark after a space starts a word.
        (#"\b\w+"#, " \u{301}ab c", ["\u{301}ab", "c"]),
        (#"\w+\b."#, "ab\u{301} c\u{1C89}d e", ["ab\u{301} ", "c\u{1C89}d "]),
        (#"\B."#, " \u{301}ab", [" ", "a", "b"]),
        // Under (?i) a property outside brackets keeps its case.
        (#"(?i)\p{Lu}"#, "aAb", ["A"]),
        (#"(?i)\P{Lu}+"#, "aAb1", ["a", "b1"]),
        // (?i:..) ends with its group; "(?i)" reaches over the alternatives after it.
        (#"(?i:x)[\x{C0}-\x{FF}]"#, "x\u{DF} Xss X\u{DF}", ["x\u{DF}", "X\u{DF}"]),
        (#"a(?i)b|c"#, "aB C c ac aC", ["aB", "ac", "aC"]),
        (#"(a(?i)b|c)d"#, "aBd cd Cd CD", ["aBd"]),
        (#"(?i:'s|'t)|\p{L}+"#, "'S \u{19B}\u{A7DC} abc", ["'S", "\u{19B}\u{A7DC}", "abc"]),
    ]

    @Test("classes, boundaries and case folding match as in the library", arguments: librarySplits)
    func librarySplit(pattern: String, text: String, matches: [String]) throws {
        #expect(try TokenizerDialectTests.matches(of: pattern, in: text) == matches)
    }

    /// The library folds U+019B with U+A7DC (new in 16.0); ICU 72 knows
    /// neither partner. A text holding one, met by a caseless class, is
    /// refused naming the character; without (?i) or with ASCII only under
    /// it, the same text is read.
    @Test("a character whose case partners changed is refused where a caseless class meets it")
    func caseMappingChange() throws {
        let caseless = [#"(?i)[\p{Lu}]+"#, #"(?i)\x{19B}"#, #"(?i:[^\x{19B}])"#]
        for pattern in caseless {
            #expect(try ICURegexSplitPattern.translatedToICU(pattern, classes: ICUCharacterClasses(icuVersion: 1500)).checksCaseMapping)
            #expect(try !ICURegexSplitPattern.translatedToICU(pattern, classes: ICUCharacterClasses(icuVersion: 1600)).checksCaseMapping)
        }
        let outside = #"[\p{Lu}]+|(?i:'s)"#
        #expect(try !ICURegexSplitPattern.translatedToICU(outside, classes: ICUCharacterClasses(icuVersion: 1500)).checksCaseMapping)
        #expect(try TokenizerDialectTests.matches(of: outside, in: "x\u{A7DC}'S") == ["\u{A7DC}", "'S"])
        // With the ICU linked here, a checked pattern refuses such text by name.
        for pattern in caseless where try ICURegexSplitPattern.translatedToICU(pattern).checksCaseMapping {
            let error = #expect(throws: DroptraceError.self) { try TokenizerDialectTests.matches(of: pattern, in: "x\u{A7DC}") }
            #expect(error?.message.contains("U+A7DC") == true, "\(pattern): \(error?.message ?? "no error")")
            #expect(error?.path == "tokenizer.json")
        }
    }

    /// With ICU's Unicode at the library's version, classes keep ICU's
    /// spelling; at a version without a table, a class is refused naming
    /// the version, and a pattern without classes still runs.
    @Test("classes follow the ICU version: the library's, the table's, or refused")
    func icuVersions() throws {
        let same = try ICURegexSplitPattern.translatedToICU(#"\p{L}+\d"#, classes: ICUCharacterClasses(icuVersion: 1600))
        #expect(same.pattern == #"\p{L}+\d"#)
        let table = try ICURegexSplitPattern.translatedToICU(#"\p{L}+\d"#, classes: ICUCharacterClasses(icuVersion: 1500))
        #expect(table.pattern.contains(#"\x{1C89}-\x{1C8A}"#) && table.pattern.contains(#"\x{16130}-\x{16139}"#))
        let error = #expect(throws: DroptraceError.self) {
            try ICURegexSplitPattern.translatedToICU(#"\p{L}+"#, classes: ICUCharacterClasses(icuVersion: 1501))
        }
        #expect(error?.message.contains("Unicode 15.1") == true, "\(error?.message ?? "no error")")
        #expect(try ICURegexSplitPattern.translatedToICU("'s|[a-z]+", classes: ICUCharacterClasses(icuVersion: 1501)).pattern == "'s|[a-z]+")
    }
}

import Testing
@testable import Tokenization

/// The `tokenizers` library's Unicode data is not Swift's or Foundation's:
/// its normalization tables are of an older Unicode version, and its Rust
/// crates have their own character tables. Each case is a character where
/// the two part ways.
@Suite("Unicode data as the tokenizers library has it")
struct LibraryUnicodeDataTests {
    /// From `normalizers.NFC().normalize_str(text)` (and NFD, NFKC, NFKD)
    /// with tokenizers 0.23.3.
    static let normalizations: [(form: String, text: String, library: String)] = [
        // Decompositions newer than the library's tables: left as they are.
        ("NFKC", "\u{32FF}", "\u{32FF}"),
        ("NFKD", "\u{A7F2}", "\u{A7F2}"),
        ("NFKC", "\u{10781}", "\u{10781}"),
        ("NFKD", "x\u{AB69}y", "x\u{AB69}y"),
        ("NFD", "\u{11938}", "\u{11938}"),
        ("NFD", "\u{C4}\u{11938}\u{E9}", "A\u{308}\u{11938}e\u{301}"),
        // A composition newer than the library's tables: not made.
        ("NFC", "\u{11935}\u{11930}", "\u{11935}\u{11930}"),
        // Marks newer than the library's tables are starters to it: they
        // neither reorder nor let a mark after them compose past them.
        ("NFD", "a\u{301}\u{1ABF}", "a\u{301}\u{1ABF}"),
        ("NFD", "\u{C15}\u{C4D}\u{C3C}", "\u{C15}\u{C4D}\u{C3C}"),
        ("NFD", "\u{345}\u{10D24}", "\u{345}\u{10D24}"),
        ("NFC", "e\u{C3C}\u{301}", "e\u{C3C}\u{301}"),
        ("NFKC", "e\u{1DF6}\u{334}\u{301}", "e\u{1DF6}\u{334}\u{301}"),
        // Decompositions whose marks the library reorders with the marks
        // around them and Foundation does not.
        ("NFD", "\u{345}\u{F73}", "\u{F71}\u{F72}\u{345}"),
        ("NFC", "\u{345}\u{F75}", "\u{F71}\u{F74}\u{345}"),
        ("NFD", "\u{F81}\u{F71}", "\u{F71}\u{F71}\u{F80}"),
        ("NFKD", "\u{385}\u{334}", " \u{334}\u{308}\u{301}"),
        ("NFKC", "\u{1FED}\u{334}", " \u{334}\u{308}\u{300}"),
        ("NFKD", "\u{FC5E}\u{334}", " \u{334}\u{64C}\u{651}"),
        ("NFKC", "\u{30AB}\u{301}\u{FF9E}", "\u{30AC}\u{301}"),
        ("NFKD", "\u{F77}\u{345}", "\u{FB2}\u{F71}\u{F80}\u{345}"),
    ]

    @Test("NFC, NFD, NFKC and NFKD give the library's scalars", arguments: normalizations)
    func normalization(form: String, text: String, library: String) throws {
        let normalizer = UnicodeFormNormalizer(form: try #require(.init(rawValue: form)))
        let normalized = String(decoding: normalizer.normalize(utf8: Array(text.utf8)[...]), as: UTF8.self)
        // String == compares canonical equivalence; the scalars must be the library's.
        #expect(Array(normalized.unicodeScalars) == Array(library.unicodeScalars))
    }

    /// `normalizers.StripAccents().normalize_str(text)` with tokenizers
    /// 0.23.3: the marks of its older tables, so U+0C3C, U+11F00 and U+1ABF
    /// (marks since Unicode 14, 15 and 14) stay and U+1CF2, U+1CF3 (marks
    /// until Unicode 10) go.
    @Test("StripAccents removes the library's combining marks")
    func stripAccents() {
        let text = "a\u{301}b\u{C3C}c\u{11F00}d\u{1CF2}e\u{1CF3}f\u{1ABF}g"
        let library = "ab\u{C3C}c\u{11F00}def\u{1ABF}g"
        #expect(Array(StripAccentsNormalizer().normalize(text).unicodeScalars) == Array(library.unicodeScalars))
    }

    /// `pre_tokenizers.Digits(individual_digits=...).pre_tokenize_str(text)`
    /// with tokenizers 0.23.3: Rust's `char::is_numeric` counts the Unicode 17
    /// digits U+11DE0-11DE9 and U+16FF4-16FF6.
    static let digitSplits: [(individually: Bool, text: String, pieces: [String])] = [
        (true, "a\u{11DE3}b\u{663}c\u{16FF4}d12", ["a", "\u{11DE3}", "b", "\u{663}", "c", "\u{16FF4}", "d", "1", "2"]),
        (false, "a\u{11DE3}\u{11DE4}b", ["a", "\u{11DE3}\u{11DE4}", "b"]),
    ]

    @Test("Digits splits off the library's numbers", arguments: digitSplits)
    func digits(individually: Bool, text: String, pieces: [String]) throws {
        var found: [String] = []
        try PatternPreTokenizer.digits(individually: individually).split(TextPiece(Array(text.utf8)[...])) { piece in
            found.append(String(decoding: piece.bytes, as: UTF8.self))
        }
        #expect(found == pieces)
    }

    /// Whether a single_word added token "X" matches in `text`, from
    /// `tokenizer.encode(text, add_special_tokens=False).ids` (the token's id
    /// among them) with tokenizers 0.23.3, for a WordLevel tokenizer with
    /// `AddedToken("X", single_word=True, normalized=False)` added. The
    /// regex crate's \w does not have the Unicode 17 letters U+A7CE, U+10940
    /// and U+088F.
    static let singleWordMatches: [(text: String, matches: Bool)] = [
        ("X\u{A7CE}", true),
        ("\u{10940}X", true),
        ("X\u{88F}", true),
        ("Xa", false),
        ("\u{301}X", false),
        ("X\u{1AB0}", false),
    ]

    @Test("a single_word added token sees the library's word characters", arguments: singleWordMatches)
    func singleWord(text: String, matches: Bool) throws {
        let token = AddedToken(content: "X", id: 1, singleWord: true, leftStrip: false, rightStrip: false,
                               normalized: false, special: false)
        var matched = false
        try AddedTokenMatcher([("X", token)]).split(Array(text.utf8)[...], source: "tokenizer.json") { segment in
            if case .token = segment { matched = true }
        }
        #expect(matched == matches)
    }
}

/// Foundation on Linux drops the marks of a combining sequence past its 64th
/// when it must decompose or reorder them; such runs are normalised by
/// Unicode's algorithm instead, with the tokenizers library's results.
@Suite struct LongCombiningRunTests {
    @Test func everyMarkOfALongRunIsKept() {
        let nfc = UnicodeFormNormalizer(form: .nfc)
        // tokenizers 0.23.3: U+0340 is U+0300 in every form, and "a" + U+0300 composes to "à".
        #expect(nfc.normalize(String(repeating: "\u{0340}", count: 65)) == String(repeating: "\u{0300}", count: 65))
        #expect(nfc.normalize("a" + String(repeating: "\u{0340}", count: 65) + " b")
            == "\u{E0}" + String(repeating: "\u{0300}", count: 64) + " b")
        for form in [UnicodeFormNormalizer.Form.nfd, .nfkc, .nfkd] {
            let marks = UnicodeFormNormalizer(form: form).normalize(String(repeating: "\u{0344}", count: 40))
            #expect(marks.unicodeScalars.count == 80, "\(form)")
        }
    }

    /// Where Foundation is right (runs shorter than 64), the algorithm gives its results.
    @Test(arguments: [UnicodeFormNormalizer.Form.nfc, .nfd, .nfkc, .nfkd])
    func theAlgorithmAgreesWithFoundationOnShortRuns(_ form: UnicodeFormNormalizer.Form) {
        let normalizer = UnicodeFormNormalizer(form: form)
        let texts = [
            "e\u{0301}\u{0327} ñ Å\u{0316}\u{0301}\u{0300} ﬁ ①", "가\u{11A8} 가 \u{1100}\u{1161}\u{11A8} ﾊﾟ",
            "a\u{0344}\u{0340}\u{0323}\u{0302}b\u{05B0}\u{05B1}\u{0591}", "ǅ Ω K Å \u{2126}\u{0301} ẛ\u{0323} \u{0F73}\u{0F71}",
        ]
        for text in texts {
            let foundation: String
            switch form {
            case .nfc: foundation = text.decomposedStringWithCanonicalMapping.precomposedStringWithCanonicalMapping
            case .nfd: foundation = text.decomposedStringWithCanonicalMapping
            case .nfkc: foundation = text.decomposedStringWithCompatibilityMapping.precomposedStringWithCanonicalMapping
            case .nfkd: foundation = text.decomposedStringWithCompatibilityMapping
            }
            #expect(Array(normalizer.longRunForm(text).unicodeScalars) == Array(foundation.unicodeScalars), "\(text)")
        }
    }
}

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
}

import CICURegex
import DroptraceSupport

/// Character classes spelled for ICU so that they hold what they hold in the
/// tokenizers library, whose Oniguruma has Unicode 16.0 tables, whatever
/// Unicode version ICU's data has.
///
/// - ICU with Unicode 16.0: its classes are the library's.
/// - ICU with the version `RegexUnicodeTables` was made against (15.0,
///   Debian bookworm's ICU 72): each class gets the code points the table
///   lists for it added or removed (`\p{L}` also holds U+1C89, new in 16.0).
///   Under (?i), the library folds a few characters with partners ICU does
///   not know (U+019B with U+A7DC); a regex that could meet one in a
///   caseless set reports them (`caseMappingDiffers`).
/// - Any other version: every construct whose matches depend on Unicode
///   data is refused, naming the version; running
///   scripts/unicode/generate_regex_unicode_table.py with that ICU makes its table.
struct ICUCharacterClasses: Sendable {
    /// ICU's Unicode version, major * 100 + minor (1500 for 15.0).
    let icuVersion: Int32

    /// The classes of the ICU droptrace is linked with.
    static let linked = ICUCharacterClasses(icuVersion: droptrace_icu_unicode_version())

    private static func number(_ version: String) -> Int32 {
        let parts = version.split(separator: ".").compactMap { Int32($0) }
        return parts.count == 2 ? parts[0] * 100 + parts[1] : -1
    }
    private var matchesLibrary: Bool { icuVersion == Self.number(RegexUnicodeTables.libraryUnicodeVersion) }
    private var hasTable: Bool { icuVersion == Self.number(RegexUnicodeTables.icuUnicodeVersion) }
    private var versionName: String { "\(icuVersion / 100).\(icuVersion % 100)" }

    private func unsupported(_ construct: String) -> DroptraceError {
        DroptraceError(
            "\(construct) reads Unicode data, and this ICU's (Unicode \(versionName)) differs from the tokenizers "
                + "library's (Unicode \(RegexUnicodeTables.libraryUnicodeVersion)) in ways droptrace has no table for "
                + "(it has one for ICU with Unicode \(RegexUnicodeTables.icuUnicodeVersion))")
    }

    /// The class `members` (ICU set syntax that can stand inside brackets:
    /// `\p{L}`, `[:alpha:]`, `\p{Alphabetic}\p{M}`) as one ICU set holding
    /// the library's characters for `key` (a `RegexUnicodeTables.differences`
    /// key), or nil when ICU's class already is the library's.
    ///
    /// - Throws: `DroptraceError` naming `construct` when ICU's Unicode
    ///   version has no table.
    func adjusted(_ members: String, key: String, construct: String) throws(DroptraceError) -> String? {
        if matchesLibrary { return nil }
        guard hasTable else { throw unsupported(construct) }
        guard let difference = RegexUnicodeTables.differences[key] else { return nil }
        var set = "[\(members)\(Self.spelled(difference.added))]"
        if !difference.removed.isEmpty { set = "[\(set)--[\(Self.spelled(difference.removed))]]" }
        return set
    }

    /// Whether characters in `values`, under (?i), fold with other partners
    /// in the library than in ICU.
    ///
    /// - Throws: `DroptraceError` naming `construct` for non-ASCII values
    ///   when ICU's Unicode version has no table.
    func caseMappingDiffers(in values: ClosedRange<UInt32>, construct: String) throws(DroptraceError) -> Bool {
        if matchesLibrary || values.upperBound < 0x80 { return false }
        guard hasTable else { throw unsupported(construct) }
        return RegexUnicodeTables.caseMappingChanged.contains { $0.overlaps(values) }
    }

    /// The first character of UTF-8 `text` whose case mapping differs.
    static func firstCaseMappingChange(in text: UnsafeBufferPointer<UInt8>) -> UInt32? {
        var index = 0
        while index < text.count {
            if text[index] < 0x80 {
                index += 1
                continue
            }
            let (value, length) = UTF8Scalars.decode(text, at: index)
            if RegexUnicodeTables.caseMappingChanged.containsScalar(value) { return value }
            index += length
        }
        return nil
    }

    private static func spelled(_ ranges: [ClosedRange<UInt32>]) -> String {
        ranges.map { range in
            let low = "\\x{\(String(range.lowerBound, radix: 16, uppercase: true))}"
            return range.count == 1 ? low : "\(low)-\\x{\(String(range.upperBound, radix: 16, uppercase: true))}"
        }.joined()
    }
}

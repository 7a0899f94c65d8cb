import Foundation

/// Any other regex from a tokenizer.json, run by Foundation's ICU engine.
///
/// The Rust library uses Oniguruma. For \p{..} classes, \s, \d, (?i:..),
/// look-ahead and alternation the two agree (checked character by character
/// against the Python package); the shorthands that differ are rewritten
/// by `translatedToICU`. `^` and `$` match at line breaks in Oniguruma's
/// default (Ruby) syntax, hence `.anchorsMatchLines`.
struct ICURegexSplitPattern: SplitPattern, @unchecked Sendable {
    // NSRegularExpression is immutable after creation and documented as
    // safe to use from several threads.
    let regex: NSRegularExpression

    init(pattern: String) throws {
        regex = try NSRegularExpression(pattern: Self.translatedToICU(pattern), options: [.anchorsMatchLines])
    }

    /// Rewrites Oniguruma shorthands whose ICU meaning differs:
    /// Oniguruma's \w is ICU's without the zero-width joiners and with the
    /// superscript digits and vulgar fractions of Latin-1 (its Latin-1 table
    /// counts them as word characters), \h is a hex
    /// digit (ICU: horizontal space), and `.` excludes only \n (ICU also
    /// excludes \r, \v, \f, U+0085, U+2028, U+2029). Inside brackets the
    /// positive sets are spliced in and the negated ones nested, which ICU
    /// reads as a union.
    static func translatedToICU(_ pattern: String) -> String {
        let word = #"\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\u00B2\u00B3\u00B9\u00BC-\u00BE"#
        var output = ""
        var classDepth = 0
        var scalars = pattern.unicodeScalars.makeIterator()
        while let scalar = scalars.next() {
            switch scalar {
            case "\\":
                guard let escaped = scalars.next() else {
                    output.unicodeScalars.append(scalar)
                    break
                }
                let inClass = classDepth > 0
                switch escaped {
                case "w": output += inClass ? word : "[\(word)]"
                case "W": output += "[^\(word)]"
                case "h": output += inClass ? "0-9a-fA-F" : "[0-9a-fA-F]"
                case "H": output += "[^0-9a-fA-F]"
                default:
                    output.unicodeScalars.append(scalar)
                    output.unicodeScalars.append(escaped)
                }
            case "[":
                classDepth += 1
                output.unicodeScalars.append(scalar)
            case "]":
                classDepth = max(0, classDepth - 1)
                output.unicodeScalars.append(scalar)
            case "." where classDepth == 0:
                output += #"[^\n]"#
            default:
                output.unicodeScalars.append(scalar)
            }
        }
        return output
    }

    func forEachSegment(in text: UnsafeBufferPointer<UInt8>, _ body: (Int, Int, Bool) -> Void) {
        let string = String(decoding: text, as: UTF8.self)
        var offsets = UTF16ToUTF8Offsets(string)
        var gapStart = 0
        let whole = NSRange(location: 0, length: string.utf16.count)
        // `matches` rather than `enumerateMatches`, whose block is escaping
        // on Linux and so cannot call `body`.
        for result in regex.matches(in: string, options: [], range: whole) {
            let range = result.range
            let start = offsets.utf8Offset(forUTF16Offset: range.location)
            let end = offsets.utf8Offset(forUTF16Offset: range.location + range.length)
            if gapStart < start { body(gapStart, start, false) }
            body(start, end, true)
            gapStart = end
        }
        if gapStart < text.count { body(gapStart, text.count, false) }
    }
}

/// Translates the UTF-16 offsets NSRegularExpression reports into UTF-8
/// offsets, walking forward only (matches arrive in order).
struct UTF16ToUTF8Offsets {
    private let scalars: [Unicode.Scalar]
    private var scalarIndex = 0
    private var utf16Offset = 0
    private var utf8Offset = 0

    init(_ string: String) {
        scalars = Array(string.unicodeScalars)
    }

    mutating func utf8Offset(forUTF16Offset target: Int) -> Int {
        if target < utf16Offset { rewind() }
        while utf16Offset < target && scalarIndex < scalars.count {
            let scalar = scalars[scalarIndex]
            utf16Offset += UTF16.width(scalar)
            utf8Offset += UTF8.width(scalar)
            scalarIndex += 1
        }
        return utf8Offset
    }

    private mutating func rewind() {
        scalarIndex = 0
        utf16Offset = 0
        utf8Offset = 0
    }
}

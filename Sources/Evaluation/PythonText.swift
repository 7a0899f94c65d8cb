import DroptraceSupport

/// The few Python `str` operations the harness's task definitions apply to
/// documents, with Python's meaning: positions and lengths count Unicode
/// scalars (code points), "whitespace" is `str.isspace()`, and comparisons
/// are by code points (Swift's `==` on `String` would also equate
/// canonically equivalent text).
enum PythonText {
    /// `str.isspace()` for one code point: general category Zs or
    /// bidirectional class WS, B or S (CPython's `_PyUnicode_IsWhitespace`).
    static func isSpace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    /// `text.strip()`.
    static func strip(_ text: String) -> String {
        rstrip(lstrip(text))
    }

    /// `text.lstrip()`.
    static func lstrip(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.drop(while: isSpace)))
    }

    /// `text.rstrip()`.
    static func rstrip(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        var end = scalars.count
        while end > 0 && isSpace(scalars[end - 1]) { end -= 1 }
        return String(String.UnicodeScalarView(scalars[..<end]))
    }

    /// `int(value)` of a value `json.load` gave, nil where Python raises or
    /// the result is beyond `Int`: an int itself, a bool 1 or 0, a float
    /// truncated toward zero, a string of ASCII decimal digits with an
    /// optional sign, single underscores between digits and surrounding
    /// whitespace (other scripts' digits, which Python also reads, are nil).
    static func integer(_ value: JSONValue) -> Int? {
        switch value {
        case .integer(let number): return number
        case .bool(let flag): return flag ? 1 : 0
        case .number(let real) where real.isFinite: return Int(exactly: real.rounded(.towardZero))
        case .string(let text):
            var digits = Substring(strip(text))
            let negative = digits.first == "-"
            if digits.first == "-" || digits.first == "+" { digits = digits.dropFirst() }
            let groups = digits.split(separator: "_", omittingEmptySubsequences: false)
            guard groups.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }),
                  let magnitude = Int(groups.joined())
            else { return nil }
            return negative ? -magnitude : magnitude
        default: return nil
        }
    }

    /// `len(text)`.
    static func length(_ text: String) -> Int {
        text.unicodeScalars.count
    }

    /// `a == b`.
    static func equal(_ a: String, _ b: String) -> Bool {
        a.unicodeScalars.elementsEqual(b.unicodeScalars)
    }

    /// `text.replace(old, new)`: non-overlapping occurrences, left to right.
    static func replace(_ text: String, _ old: String, with new: String) -> String {
        let scalars = Array(text.unicodeScalars), pattern = Array(old.unicodeScalars)
        guard !pattern.isEmpty else { return text }
        var out = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            if i + pattern.count <= scalars.count && scalars[i..<(i + pattern.count)].elementsEqual(pattern) {
                out.append(contentsOf: new.unicodeScalars)
                i += pattern.count
            } else {
                out.append(scalars[i])
                i += 1
            }
        }
        return String(out)
    }

    /// `text.capitalize()` (Python 3.8+): the first code point in title
    /// case, the rest in lower case, full case mappings; a capital sigma
    /// becomes final ς at the end of a word as `str.lower()` does.
    static func capitalize(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        guard let first = scalars.first else { return text }
        var out = mapped(first, first.properties.titlecaseMapping)
        for i in scalars.indices.dropFirst() {
            let scalar = scalars[i]
            if scalar == "\u{03A3}" {
                out.append(isFinalSigma(scalars, at: i) ? "\u{03C2}" : "\u{03C3}")
            } else {
                out.append(contentsOf: mapped(scalar, scalar.properties.lowercaseMapping))
            }
        }
        return String(out)
    }

    /// Whether CPython 3.11–3.13 know the code point: their case data is
    /// Unicode 14.0–15.1 (no case mapping changed between them), Swift's is
    /// newer. Later code points are unassigned there: uncased, unmapped.
    private static func knownToPython(_ scalar: Unicode.Scalar) -> Bool {
        guard let age = scalar.properties.age else { return false }
        return (age.major, age.minor) <= (15, 1)
    }

    /// `mapping` of `scalar`, unless it involves a code point Python does not
    /// know (ɤ → Ɤ, U+A7CB, came with Unicode 16): then the scalar itself.
    private static func mapped(_ scalar: Unicode.Scalar, _ mapping: String) -> String.UnicodeScalarView {
        guard knownToPython(scalar), mapping.unicodeScalars.allSatisfy(knownToPython) else { return String(scalar).unicodeScalars }
        return mapping.unicodeScalars
    }

    private static func isCased(_ scalar: Unicode.Scalar) -> Bool { knownToPython(scalar) && scalar.properties.isCased }

    private static func isCaseIgnorable(_ scalar: Unicode.Scalar) -> Bool {
        knownToPython(scalar) && scalar.properties.isCaseIgnorable
    }

    /// CPython's `handle_capital_sigma`: preceded by a cased letter and not
    /// followed by one (case-ignorable code points skipped both ways).
    private static func isFinalSigma(_ scalars: [Unicode.Scalar], at index: Int) -> Bool {
        var before = index - 1
        while before >= 0 && isCaseIgnorable(scalars[before]) { before -= 1 }
        guard before >= 0 && isCased(scalars[before]) else { return false }
        var after = index + 1
        while after < scalars.count && isCaseIgnorable(scalars[after]) { after += 1 }
        return after == scalars.count || !isCased(scalars[after])
    }

    /// `text.index(character)` in code points, or nil (Python raises ValueError).
    static func index(of character: Unicode.Scalar, in text: String) -> Int? {
        text.unicodeScalars.firstIndex(of: character).map { text.unicodeScalars.distance(from: text.unicodeScalars.startIndex, to: $0) }
    }

    /// `text[start:end]` in code points (bounds already valid).
    static func slice(_ text: String, _ range: Range<Int>) -> String {
        String(String.UnicodeScalarView(Array(text.unicodeScalars)[range]))
    }
}

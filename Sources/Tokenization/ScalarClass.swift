/// The character classes the pre-tokenizer regexes are written in:
/// \p{L}, \p{N} and \s (Unicode White_Space, as in Oniguruma).
enum ScalarClass: UInt8 {
    case letter, number, whitespace, other

    /// Unicode version of the character tables in the Oniguruma that the
    /// `tokenizers` library links (`RegexUnicodeTables.libraryUnicodeVersion`); Swift's own tables are newer, and a
    /// character the regex engine has never heard of is neither \p{L} nor \p{N}.
    private static let regexUnicodeVersion: (major: Int, minor: Int) = {
        let parts = RegexUnicodeTables.libraryUnicodeVersion.split(separator: ".").map { Int($0)! }
        return (parts[0], parts[1])
    }()

    static func fromProperties(_ value: UInt32) -> ScalarClass {
        if value < 0x80 { return ascii(UInt8(value)) }
        guard let scalar = Unicode.Scalar(value) else { return .other }
        let properties = scalar.properties
        if properties.isWhitespace { return .whitespace }
        let kind: ScalarClass
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            kind = .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            kind = .number
        default:
            return .other
        }
        guard let age = properties.age,
              (age.major, age.minor) <= (regexUnicodeVersion.major, regexUnicodeVersion.minor)
        else { return .other }
        return kind
    }

    private static func ascii(_ code: UInt8) -> ScalarClass {
        switch code {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"): return .letter
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return .number
        case 0x09...0x0D, 0x20: return .whitespace
        default: return .other
        }
    }
}

/// `ScalarClass` with the basic plane looked up in a table built once:
/// classifying through `Unicode.Scalar.Properties` is a table search per
/// character. Scanners keep their own copy of the (shared) table so the hot
/// loop does not go through a lazily initialised global each time.
struct ScalarClassifier: Sendable {
    static let shared = ScalarClassifier()
    private let basicPlane: [ScalarClass]

    private init() {
        basicPlane = (0..<0x10000).map { ScalarClass.fromProperties(UInt32($0)) }
    }

    @inline(__always)
    func classify(_ value: UInt32) -> ScalarClass {
        if value < 0x10000 { return basicPlane[Int(value)] }
        return ScalarClass.fromProperties(value)
    }
}

/// Reading UTF-8 one scalar at a time. Buffers here always hold valid UTF-8
/// (they come from Swift strings), so no validation is repeated.
enum UTF8Scalars {
    @inline(__always)
    static func decode(_ text: UnsafeBufferPointer<UInt8>, at index: Int) -> (value: UInt32, length: Int) {
        let lead = UInt32(text[index])
        if lead < 0x80 { return (lead, 1) }
        if lead < 0xE0 {
            return ((lead & 0x1F) << 6 | UInt32(text[index + 1] & 0x3F), 2)
        }
        if lead < 0xF0 {
            return ((lead & 0x0F) << 12 | UInt32(text[index + 1] & 0x3F) << 6
                | UInt32(text[index + 2] & 0x3F), 3)
        }
        return ((lead & 0x07) << 18 | UInt32(text[index + 1] & 0x3F) << 12
            | UInt32(text[index + 2] & 0x3F) << 6 | UInt32(text[index + 3] & 0x3F), 4)
    }

    /// Start of the scalar that ends at `end`.
    @inline(__always)
    static func startOfScalar(endingAt end: Int, in text: UnsafeBufferPointer<UInt8>) -> Int {
        var start = end - 1
        while start > 0 && text[start] & 0xC0 == 0x80 { start -= 1 }
        return start
    }
}

extension Array where Element == ClosedRange<UInt32> {
    /// Whether sorted, disjoint ranges of scalars (a generated table) hold
    /// `value`: a binary search, after one comparison for values below them all.
    func containsScalar(_ value: UInt32) -> Bool {
        guard let first, value >= first.lowerBound else { return false }
        var low = 0
        var high = count
        while low < high {
            let middle = (low + high) / 2
            if self[middle].upperBound < value { low = middle + 1 } else { high = middle }
        }
        return low < count && self[low].lowerBound <= value
    }
}

/// A small JSON reader producing native Swift values: `JSONObject`,
/// `[Any]`, `String`, `Int` (integer literals that fit), `Double` (other
/// numbers), `Bool` and `JSONNull`.
///
/// Foundation's JSONSerialization on Linux builds NSDictionary/NSArray
/// values that are bridged again on every cast, which made loading a
/// 128k-token vocabulary take seconds; it also reports 1, 1.0 and true as
/// the same NSNumber, while token ids must be told apart from the rest.
/// Objects keep their members in order instead of hashing String keys:
/// Swift compares strings by canonical equivalence, which would merge
/// vocabulary entries such as "é" and "e\u{301}" that are distinct tokens.
public struct JSONParser {
    public struct Failure: Error {
        public var offset: Int
        public var reason: String
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private let allowsNonFinite: Bool
    private let serde: Bool
    private let reader: DatasetsJSONReader?
    private let arrayLimit: Int
    private var position = 0
    private var depth = 0

    /// Parses one JSON document. With `allowingNonFinite`, also the
    /// `NaN`, `Infinity` and `-Infinity` Python's json module writes and
    /// reads (as Doubles): files Python tools write for Python tools, such
    /// as the Trainer's trainer_state.json after a loss turned NaN. With
    /// `serde`, as Rust's serde_json reads files (the safetensors and
    /// tokenizers libraries): a lone surrogate escape (`"\ud800"`) is an
    /// error, not U+FFFD, `-0` is a float (-0.0), not the integer 0, and a
    /// number beyond float64 (`1e400`) is an error, not infinity.
    /// With `reader`, as that reader of the datasets library's json loader
    /// reads files (`DatasetsJSONReader`). An array of more than
    /// `arrayLimit` values is an error (formats whose arrays are small: a
    /// huge one would only cost memory before the document is refused).
    public static func parse(
        _ data: [UInt8], allowingNonFinite: Bool = false, serde: Bool = false, reader: DatasetsJSONReader? = nil,
        arrayLimit: Int = .max
    ) throws(Failure) -> Any {
        try data.withUnsafeBufferPointer { (buffer) throws(Failure) -> Any in
            var parser = JSONParser(
                bytes: buffer, allowsNonFinite: allowingNonFinite || reader != nil, serde: serde, reader: reader, arrayLimit: arrayLimit)
            parser.skipWhitespace()
            let value = try parser.parseValue()
            parser.skipWhitespace()
            guard parser.position == buffer.count else { throw parser.failure("unexpected text after the value") }
            return value
        }
    }

    private init(bytes: UnsafeBufferPointer<UInt8>, allowsNonFinite: Bool, serde: Bool, reader: DatasetsJSONReader?, arrayLimit: Int) {
        self.bytes = bytes
        self.allowsNonFinite = allowsNonFinite
        self.serde = serde
        self.reader = reader
        self.arrayLimit = arrayLimit
    }

    private func failure(_ reason: String) -> Failure {
        Failure(offset: position, reason: reason)
    }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    private mutating func parseValue() throws(Failure) -> Any {
        guard position < bytes.count else { throw failure("unexpected end of input") }
        switch bytes[position] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return try parseString()
        case UInt8(ascii: "t"): try expectLiteral("true"); return true
        case UInt8(ascii: "f"): try expectLiteral("false"); return false
        case UInt8(ascii: "n"): try expectLiteral("null"); return JSONNull()
        case UInt8(ascii: "N") where allowsNonFinite: try expectLiteral("NaN"); return nonFinite(Double.nan)
        case UInt8(ascii: "I") where allowsNonFinite: try expectLiteral("Infinity"); return nonFinite(Double.infinity)
        case UInt8(ascii: "-") where allowsNonFinite && position + 1 < bytes.count && bytes[position + 1] == UInt8(ascii: "I"):
            position += 1
            try expectLiteral("Infinity")
            return nonFinite(-Double.infinity)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw failure("unexpected character")
        }
    }

    /// ujson reads a value float64 cannot hold finitely, and datasets writes it back, as null.
    private func nonFinite(_ value: Double) -> Any { reader == .ujson ? JSONNull() : value }

    private mutating func expectLiteral(_ literal: StaticString) throws(Failure) {
        let count = literal.utf8CodeUnitCount
        guard position + count <= bytes.count else { throw failure("unexpected end of input") }
        for index in 0..<count where bytes[position + index] != literal.utf8Start[index] {
            throw failure("unexpected character")
        }
        position += count
    }

    private mutating func enter() throws(Failure) {
        depth += 1
        if depth > 512 { throw failure("nested too deeply") }
    }

    private mutating func parseObject() throws(Failure) -> JSONObject {
        try enter()
        position += 1
        var object = JSONObject()
        var keys: [[UInt8]: Int] = [:]  // as bytes: Swift's String equality would join canonically equivalent keys
        skipWhitespace()
        if position < bytes.count && bytes[position] == UInt8(ascii: "}") {
            position += 1
            depth -= 1
            return object
        }
        while true {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw failure("expected a key") }
            let key = try parseString()
            let earlier = reader == nil ? nil : keys.updateValue(object.members.count, forKey: Array(key.utf8))
            if reader == .pyarrow, earlier != nil {
                throw failure("key \"\(SystemError.oneLine(String(key.prefix(40))))\" given twice in one object")
            }
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw failure("expected ':'") }
            position += 1
            skipWhitespace()
            let value = try parseValue()
            if reader == .ujson, let earlier {
                // A Python dict: the key keeps its first place and takes the last value.
                object.members[earlier].value = value
                keys[Array(key.utf8)] = earlier
            } else {
                object.members.append((key, value))
            }
            skipWhitespace()
            guard position < bytes.count else { throw failure("unexpected end of input") }
            if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
            guard bytes[position] == UInt8(ascii: "}") else { throw failure("expected ',' or '}'") }
            position += 1
            depth -= 1
            return object
        }
    }

    private mutating func parseArray() throws(Failure) -> [Any] {
        try enter()
        position += 1
        var array: [Any] = []
        skipWhitespace()
        if position < bytes.count && bytes[position] == UInt8(ascii: "]") {
            position += 1
            depth -= 1
            return array
        }
        while true {
            skipWhitespace()
            guard array.count < arrayLimit else { throw failure("an array of more than \(arrayLimit) values") }
            array.append(try parseValue())
            skipWhitespace()
            guard position < bytes.count else { throw failure("unexpected end of input") }
            if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
            guard bytes[position] == UInt8(ascii: "]") else { throw failure("expected ',' or ']'") }
            position += 1
            depth -= 1
            return array
        }
    }

    private mutating func parseString() throws(Failure) -> String {
        position += 1
        let start = position
        // Common case: no escapes, so the bytes are the string.
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                // JSON text is UTF-8; the reference readers refuse other bytes rather than replace them.
                guard let text = String(validating: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self) else {
                    throw failure("invalid UTF-8 in a string")
                }
                position += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw failure("control character in string") }
            position += 1
        }
        var decoded = Array(bytes[start..<position])
        while position < bytes.count {
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "\""):
                position += 1
                guard let text = String(validating: decoded, as: UTF8.self) else { throw failure("invalid UTF-8 in a string") }
                return text
            case UInt8(ascii: "\\"):
                position += 1
                guard position < bytes.count else { throw failure("unexpected end of input") }
                let escape = bytes[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(escape)
                case UInt8(ascii: "b"): decoded.append(0x08)
                case UInt8(ascii: "f"): decoded.append(0x0C)
                case UInt8(ascii: "n"): decoded.append(0x0A)
                case UInt8(ascii: "r"): decoded.append(0x0D)
                case UInt8(ascii: "t"): decoded.append(0x09)
                case UInt8(ascii: "u"): try parseUnicodeEscape().map { decoded.append(contentsOf: String($0).utf8) }
                default: throw failure("invalid escape")
                }
            default:
                if byte < 0x20 { throw failure("control character in string") }
                decoded.append(byte)
                position += 1
            }
        }
        throw failure("unterminated string")
    }

    /// After "\u": four hex digits, joined with a following low surrogate
    /// escape when they are a high surrogate. A lone surrogate becomes U+FFFD
    /// (an error for serde and pyarrow; dropped, nil, for ujson).
    private mutating func parseUnicodeEscape() throws(Failure) -> Unicode.Scalar? {
        let first = try parseHex4()
        if (0xD800..<0xDC00).contains(first), position + 6 <= bytes.count,
           bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") {
            let saved = position
            position += 2
            let second = try parseHex4()
            if (0xDC00..<0xE000).contains(second) {
                return Unicode.Scalar(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))!
            }
            position = saved
        }
        if (0xD800..<0xE000).contains(first) {
            if serde || reader == .pyarrow { throw failure("lone surrogate in a \\u escape") }
            if reader == .ujson { return nil }
        }
        return Unicode.Scalar(first) ?? "\u{FFFD}"
    }

    private mutating func parseHex4() throws(Failure) -> UInt32 {
        guard position + 4 <= bytes.count else { throw failure("unexpected end of input") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw failure("invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        return value
    }

    private mutating func parseNumber() throws(Failure) -> Any {
        let start = position
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        let integerStart = position
        skipDigits()
        guard position > integerStart else { throw failure("invalid number") }
        if bytes[integerStart] == UInt8(ascii: "0"), position - integerStart > 1 {
            position = integerStart
            throw failure("number with a leading zero")
        }
        var isInteger = true
        if position < bytes.count && bytes[position] == UInt8(ascii: ".") {
            isInteger = false
            position += 1
            let fractionStart = position
            skipDigits()
            guard position > fractionStart else { throw failure("invalid number") }
        }
        if position < bytes.count && (bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E")) {
            isInteger = false
            position += 1
            if position < bytes.count && (bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-")) {
                position += 1
            }
            let exponentStart = position
            skipDigits()
            guard position > exponentStart else { throw failure("invalid number") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        if isInteger, let integer = Int(text), !(serde && integer == 0 && bytes[start] == UInt8(ascii: "-")) { return integer }
        if serde {
            // serde_json refuses a literal beyond float64 (`1e400`, 400 digits) where Python reads ±inf.
            guard let real = SerdeFloat.value(of: UnsafeBufferPointer(rebasing: bytes[start..<position])) else {
                position = start
                throw failure("number out of range")
            }
            return real
        }
        guard let real = Double(text) else { throw failure("invalid number") }
        if !isInteger, !real.isFinite {
            if reader == .pyarrow { throw failure("number too big to be stored in a double") }
            if reader == .ujson { return JSONNull() }
        }
        if isInteger, reader == .ujson, UInt64(text) == nil { throw failure("integer beyond 64 bits") }
        // Python keeps such a literal an int; readers that check kinds must know.
        if isInteger, !serde { return JSONBigInteger(text: text, value: real) }
        return real
    }

    private mutating func skipDigits() {
        while position < bytes.count && bytes[position] >= UInt8(ascii: "0") && bytes[position] <= UInt8(ascii: "9") {
            position += 1
        }
    }
}

/// The JSON readers behind the datasets library's json loader (datasets 5.2),
/// as `JSONParser.parse` follows them.
public enum DatasetsJSONReader: Sendable {
    /// pyarrow's, for JSON Lines: NaN and ±Infinity are numbers; a lone
    /// surrogate escape, a decimal beyond float64 (`1e400`) and a key given
    /// twice in one object are errors.
    case pyarrow
    /// ujson's, for a file holding one JSON array (datasets loads it whole and
    /// writes each element back as a line): a key given twice keeps its first
    /// place and its last value, a lone surrogate escape is dropped, NaN,
    /// ±Infinity and decimals beyond float64 are null, and an integer outside
    /// [−2⁶³, 2⁶⁴ − 1] is an error.
    case ujson
}

/// JSON's null.
/// An integer literal too large for `Int` (Python's json module reads it as
/// an int of any size): its text, and the nearest Double.
public struct JSONBigInteger: Sendable, CustomStringConvertible {
    public var text: String
    public var value: Double
    public var description: String { text }
}

public struct JSONNull: Sendable {
    public init() {}
}

/// A JSON object, members in file order.
public struct JSONObject {
    public var members: [(key: String, value: Any)] = []

    public init(members: [(key: String, value: Any)] = []) {
        self.members = members
    }

    /// A repeated key keeps its last value, as serde does. Linear: every
    /// object looked up by key in a tokenizer.json is small.
    public subscript(key: String) -> Any? {
        members.last { $0.key.utf8.elementsEqual(key.utf8) }?.value
    }
}

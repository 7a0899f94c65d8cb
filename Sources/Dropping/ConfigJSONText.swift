import DroptraceSupport
import Foundation

/// The text of a JSON object (config.json) edited member by member: every
/// byte outside the members changed stays as written, so key order,
/// indentation and number spellings survive. A JSONSerialization round trip
/// would write `"rope_theta": 10000.0` back as `10000`, which transformers
/// refuses for a float field.
struct ConfigJSONText {
    private(set) var bytes: [UInt8]
    private let path: String

    /// One member: where its key starts and where its value lies.
    private struct Member {
        var key: String
        var keyStart: Int
        var value: Range<Int>
    }

    /// `data` must be a JSON object; `path` names it in errors.
    init(_ data: Data, path: String) throws {
        bytes = [UInt8](data)
        self.path = path
        _ = try members()
    }

    var data: Data { Data(bytes) }

    /// The decoded value of member `key` (numbers as NSNumber, as JSONSerialization gives them).
    func value(_ key: String) throws -> Any? {
        guard let member = try members().first(where: { $0.key == key }) else { return nil }
        return try decode(member.value)
    }

    /// The raw text of each element of array member `key`, or nil when it is
    /// absent or not an array.
    func elementTexts(_ key: String) throws -> [String]? {
        guard let member = try members().first(where: { $0.key == key }), bytes[member.value.lowerBound] == UInt8(ascii: "[") else {
            return nil
        }
        return try elements(member.value).map { String(decoding: bytes[$0], as: UTF8.self) }
    }

    /// The object a dotted path of members names (`thinker_config.text_config`),
    /// as `section(_:)` gives each; nil when one on the way is absent or not an object.
    func section(path name: String) throws -> ConfigJSONText? {
        var object: ConfigJSONText? = self
        for key in name.split(separator: ".") { object = try object?.section(String(key)) }
        return object
    }

    /// Puts `text` at a dotted path of members, as `set(_:text:)` puts it in
    /// one, spelling out from nothing each member on the way that is absent or not an object.
    mutating func set(path name: String, text: String) throws {
        let keys = name.split(separator: ".").map(String.init)
        guard keys.count > 1 else { return try set(name, text: text) }
        var inner = try section(keys[0]) ?? ConfigJSONText(Data("{}".utf8), path: path)
        try inner.set(path: keys.dropFirst().joined(separator: "."), text: text)
        try set(keys[0], text: inner.text)
    }

    /// The object member `key` as text of its own, to edit and put back with
    /// `set(key, text:)`; nil when it is absent or not an object.
    func section(_ key: String) throws -> ConfigJSONText? {
        guard let member = try members().first(where: { $0.key == key }), bytes[member.value.lowerBound] == UInt8(ascii: "{") else {
            return nil
        }
        return try ConfigJSONText(Data(bytes[member.value]), path: path)
    }

    /// Each member's key and the raw text of its value, in order.
    func memberTexts() throws -> [(key: String, text: String)] {
        try members().map { ($0.key, String(decoding: bytes[$0.value], as: UTF8.self)) }
    }

    /// The JSON text.
    var text: String { String(decoding: bytes, as: UTF8.self) }

    /// Replaces member `key`'s value by `text` (JSON), or appends the member
    /// after the last one, indented like the first.
    mutating func set(_ key: String, text: String) throws {
        let members = try members()
        if let member = members.first(where: { $0.key == key }) {
            bytes.replaceSubrange(member.value, with: Array(text.utf8))
            return
        }
        let keyText = String(decoding: try JSONSerialization.data(withJSONObject: key, options: .fragmentsAllowed), as: UTF8.self)
        guard let last = members.last else {
            let open = bytes.firstIndex(of: UInt8(ascii: "{"))!
            bytes.insert(contentsOf: Array("\(keyText): \(text)".utf8), at: open + 1)
            return
        }
        // The whitespace before the first key (newline and indentation, or none).
        var indentStart = members[0].keyStart
        while indentStart > 0, Self.isWhitespace(bytes[indentStart - 1]) { indentStart -= 1 }
        let indent = String(decoding: bytes[indentStart..<members[0].keyStart], as: UTF8.self)
        bytes.insert(contentsOf: Array(",\(indent.isEmpty ? " " : indent)\(keyText): \(text)".utf8), at: last.value.upperBound)
    }

    /// Sets member `key` to `value` written by JSONSerialization (integers,
    /// strings, booleans and lists of them, which it spells faithfully).
    mutating func set(_ key: String, value: Any) throws {
        let text = try JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .withoutEscapingSlashes, .sortedKeys])
        try set(key, text: String(decoding: text, as: UTF8.self))
    }

    /// Removes member `key` and its separator, when present.
    mutating func remove(_ key: String) throws {
        let members = try members()
        guard let index = members.firstIndex(where: { $0.key == key }) else { return }
        let member = members[index]
        if index > 0 {
            bytes.removeSubrange(members[index - 1].value.upperBound..<member.value.upperBound)
        } else if members.count > 1 {
            bytes.removeSubrange(member.keyStart..<members[1].keyStart)
        } else {
            bytes.removeSubrange(member.keyStart..<member.value.upperBound)
        }
    }

    // MARK: Scanning

    private func invalid(_ reason: String) -> DroptraceError {
        DroptraceError("not a JSON object (\(reason))", path: path)
    }

    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }

    private func skipWhitespace(_ i: inout Int) {
        while i < bytes.count, Self.isWhitespace(bytes[i]) { i += 1 }
    }

    private func decode(_ range: Range<Int>) throws -> Any {
        do {
            return try JSONSerialization.jsonObject(with: Data(bytes[range]), options: .fragmentsAllowed)
        } catch {
            throw invalid("a value does not parse")
        }
    }

    /// The end of the value starting at `start`: strings skipped with their
    /// escapes, brackets counted, scalars up to the next separator.
    private func valueEnd(from start: Int) throws -> Int {
        var i = start, depth = 0
        while i < bytes.count {
            switch bytes[i] {
            case UInt8(ascii: "\""):
                i += 1
                while i < bytes.count, bytes[i] != UInt8(ascii: "\"") { i += bytes[i] == UInt8(ascii: "\\") ? 2 : 1 }
                guard i < bytes.count else { throw invalid("unterminated string") }
                i += 1
                if depth == 0 { return i }
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                i += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if depth == 0 { return i }
                depth -= 1
                i += 1
                if depth == 0 { return i }
            case UInt8(ascii: ","), UInt8(ascii: ":"):
                if depth == 0 { return i }
                i += 1
            case let byte:
                if depth == 0, Self.isWhitespace(byte) { return i }
                i += 1
            }
        }
        guard depth == 0 else { throw invalid("unexpected end") }
        return i
    }

    /// The top-level members, in order.
    private func members() throws -> [Member] {
        var i = 0
        skipWhitespace(&i)
        guard i < bytes.count, bytes[i] == UInt8(ascii: "{") else { throw invalid("it does not start with {") }
        i += 1
        var found: [Member] = []
        skipWhitespace(&i)
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") { return found }
        while true {
            skipWhitespace(&i)
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw invalid("a key is not a string") }
            let keyStart = i
            let keyEnd = try valueEnd(from: i)
            guard let key = try decode(keyStart..<keyEnd) as? String else { throw invalid("a key is not a string") }
            i = keyEnd
            skipWhitespace(&i)
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw invalid("a key has no value") }
            i += 1
            skipWhitespace(&i)
            let valueStart = i
            i = try valueEnd(from: i)
            found.append(Member(key: key, keyStart: keyStart, value: valueStart..<i))
            skipWhitespace(&i)
            guard i < bytes.count else { throw invalid("unexpected end") }
            if bytes[i] == UInt8(ascii: "}") { return found }
            guard bytes[i] == UInt8(ascii: ",") else { throw invalid("members are not separated by commas") }
            i += 1
        }
    }

    /// The ranges of the elements of the array at `range`.
    private func elements(_ range: Range<Int>) throws -> [Range<Int>] {
        var i = range.lowerBound + 1
        var found: [Range<Int>] = []
        skipWhitespace(&i)
        if bytes[i] == UInt8(ascii: "]") { return found }
        while i < range.upperBound {
            skipWhitespace(&i)
            let start = i
            i = try valueEnd(from: i)
            found.append(start..<i)
            skipWhitespace(&i)
            guard i < range.upperBound else { throw invalid("unexpected end") }
            if bytes[i] == UInt8(ascii: "]") { return found }
            guard bytes[i] == UInt8(ascii: ",") else { throw invalid("elements are not separated by commas") }
            i += 1
        }
        return found
    }
}

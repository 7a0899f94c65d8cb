import DroptraceSupport
import Foundation
import Tokenization

/// One line of a task file: a JSON object with the dataset's own fields, as
/// `datasets.Dataset.to_json` writes them. Accessors throw
/// `DroptraceError("line N: …", path: file)` for a missing field or a wrong type.
struct TaskDocument: Sendable {
    let fields: JSONValue
    let path: String
    /// 1-based line number in the file.
    let line: Int

    func failure(_ message: String) -> DroptraceError {
        DroptraceError("line \(line): \(message)", path: path)
    }

    func value(_ key: String) throws -> JSONValue {
        guard let value = fields.member(key), !value.isNull else { throw failure("missing field \"\(key)\"") }
        return value
    }

    func string(_ key: String) throws -> String {
        guard case .string(let text) = try value(key) else { throw failure("\"\(key)\" should be a string") }
        return text
    }

    func integer(_ key: String) throws -> Int {
        guard case .integer(let number) = try value(key) else { throw failure("\"\(key)\" should be an integer") }
        return number
    }

    /// A list of strings, at `key` or inside `within` (e.g. ARC's `choices.text`).
    func strings(_ key: String, within parent: String? = nil) throws -> [String] {
        let name = parent.map { "\($0).\(key)" } ?? key
        let holder = try parent.map { try value($0) } ?? fields
        guard let list = holder.member(key) else { throw failure("missing field \"\(name)\"") }
        guard case .array(let items) = list else { throw failure("\"\(name)\" should be a list of strings") }
        return try items.enumerated().map { index, item in
            guard case .string(let text) = item else { throw failure("\"\(name)\"[\(index)] should be a string") }
            return text
        }
    }

    /// A label that indexes `count` choices. The harness scores a row of
    /// another label (-1 marks the unlabelled rows of a test split) as
    /// answered wrongly, an accuracy that measures nothing: refused.
    func label(_ value: Int, field: String, choices count: Int) throws -> Int {
        guard value != -1 else {
            throw failure("\"\(field)\" is -1: the row is unlabelled (a test split?), and cannot be scored; "
                + "use the split with labels (lm-evaluation-harness would count it as answered wrongly)")
        }
        guard (0..<count).contains(value) else {
            throw failure("\"\(field)\" is \(value), not among the \(count) choices (0...\(count - 1))")
        }
        return value
    }

    /// The document as Python compares dicts (`x != eval_doc` in the harness's
    /// sampler): keys in order, numbers by value (1 == 1.0 == True), a
    /// null field the same as a missing one (datasets fills missing columns with None).
    var identity: String {
        var text = ""
        Self.canonical(fields, into: &text)
        return text
    }

    private static func canonical(_ value: JSONValue, into text: inout String) {
        switch value {
        case .null: text += "n"
        case .bool(let flag): text += flag ? "#1" : "#0"
        case .integer(let number): text += "#\(number)"
        case .number(let real):
            if real.rounded() == real, abs(real) < 9.0e18 { text += "#\(Int(real))" } else { text += "#\(real)" }
        case .string(let string):
            text += "\"\(string.unicodeScalars.count):"
            text.unicodeScalars.append(contentsOf: string.unicodeScalars)
        case .array(let items):
            text += "[\(items.count)"
            for item in items { canonical(item, into: &text) }
        case .object(let members):
            var latest: [(key: String, value: JSONValue)] = []
            for member in members where !member.value.isNull {
                latest.removeAll { PythonText.equal($0.key, member.key) }
                latest.append(member)
            }
            latest.sort { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) }
            text += "{\(latest.count)"
            for member in latest {
                canonical(.string(member.key), into: &text)
                canonical(member.value, into: &text)
            }
        }
    }

    /// Hands every document of a JSONL task file to `body`, in order (blank
    /// lines skipped), one at a time so only what `body` keeps stays in memory.
    /// Read as the `datasets` json loader lm-eval uses for local files reads
    /// it (datasets 5.2, pyarrow 26): a UTF-8 byte-order mark at the start
    /// skipped (datasets strips one, pyarrow's reader one more), and lines
    /// ending in LF, CRLF or CR alone, mixed within a file too.
    /// - Throws: `DroptraceError` naming the file (and line): missing or
    ///   unreadable, not UTF-8, a line over `maximumLineLength` or not a JSON
    ///   object, no documents;
    ///   and whatever `body` throws.
    /// The longest line read as one document: a HellaSwag or MMLU document is
    /// a few kilobytes, a BoolQ passage a few more.
    static let maximumLineLength = 1 << 20

    static func forEach(in url: URL, _ body: (TaskDocument) throws -> Void) throws {
        let path = url.path
        let data = [UInt8](try RegularFile.contents(path: path))
        var start = 0
        for _ in 0..<2 where data[start...].starts(with: UTF8.byteOrderMark) { start += UTF8.byteOrderMark.count }
        var count = 0
        var lineNumber = 0
        for line in lines(data[start...]) {
            lineNumber += 1
            // Parsing holds a line many times over; no benchmark's document comes near this.
            guard line.count <= maximumLineLength else {
                throw DroptraceError("line \(lineNumber) is longer than \(maximumLineLength >> 20) MiB, more than any task document", path: path)
            }
            let bytes = [UInt8](line)
            if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            guard String(validating: bytes, as: UTF8.self) != nil else {
                throw DroptraceError("line \(lineNumber): not UTF-8 text", path: path)
            }
            let value: JSONValue
            do {
                value = try JSONValue.parse(bytes)
            } catch {
                throw DroptraceError("line \(lineNumber): invalid JSON (\(error.reason) at byte \(error.offset + 1))", path: path)
            }
            guard case .object = value else {
                throw DroptraceError("line \(lineNumber): not a JSON object", path: path)
            }
            try body(TaskDocument(fields: value, path: path, line: lineNumber))
            count += 1
        }
        guard count > 0 else { throw DroptraceError("no documents (an empty task file)", path: path) }
    }

    /// The lines of `bytes`, each ended by LF, CRLF or CR (or the end).
    static func lines(_ bytes: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        var lines: [ArraySlice<UInt8>] = []
        var start = bytes.startIndex, i = bytes.startIndex
        while i < bytes.endIndex {
            switch bytes[i] {
            case UInt8(ascii: "\n"):
                lines.append(bytes[start..<i])
                i += 1
                start = i
            case UInt8(ascii: "\r"):
                lines.append(bytes[start..<i])
                i += i + 1 < bytes.endIndex && bytes[i + 1] == UInt8(ascii: "\n") ? 2 : 1
                start = i
            default:
                i += 1
            }
        }
        lines.append(bytes[start..<bytes.endIndex])
        return lines
    }
}

extension JSONValue {
    var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

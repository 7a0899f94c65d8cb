import DroptraceSupport
import Foundation
import Tokenization

/// Where a document starts in its task file, for messages: "line 3", or
/// "line 1, element 4" in a file holding one JSON array.
struct DocumentLocation: Sendable, Equatable, CustomStringConvertible {
    /// 1-based line of the document's first byte.
    var line: Int
    /// 1-based position in the file's JSON array; nil in a JSON Lines file.
    var element: Int? = nil

    var description: String { element.map { "line \(line), element \($0)" } ?? "line \(line)" }
}

/// The JSON kinds each top-level field of one task file holds (null aside),
/// each with the first document holding it.
///
/// `datasets` loads a task's evaluation and few-shot files as one table: a
/// field of one kind in one file and another in the other is converted to
/// one type (an `"ind"` of 7 becomes `"7"`, and then equals the evaluation
/// document the sampler must leave out) or fails to load, depending on the
/// files' order. droptrace reads each file as written, so such a pair is
/// refused rather than scored otherwise than the harness scores it.
struct FieldKinds {
    let path: String
    private(set) var kinds: [String: [(kind: String, location: DocumentLocation)]] = [:]

    init(path: String) { self.path = path }

    mutating func add(_ document: TaskDocument) {
        guard case .object(let members) = document.fields else { return }
        for (key, value) in members {
            guard let kind = Self.kind(of: value), !(kinds[key]?.contains { $0.kind == kind } ?? false) else { continue }
            kinds[key, default: []].append((kind, document.location))
        }
    }

    /// - Throws: `DroptraceError` naming this file, the field and both
    ///   files' kinds where a field present in both holds other kinds.
    func checkSame(as evaluation: FieldKinds) throws {
        for key in kinds.keys.sorted() {
            guard let theirs = evaluation.kinds[key], let ours = kinds[key],
                  Set(theirs.map(\.kind)) != Set(ours.map(\.kind))
            else { continue }
            func described(_ seen: [(kind: String, location: DocumentLocation)]) -> String {
                seen.map { "\($0.kind) (\($0.location))" }.joined(separator: " and ")
            }
            throw DroptraceError(
                "field \"\(SystemError.oneLine(key))\" holds \(described(ours)) where the evaluation file \(evaluation.path) holds "
                    + "\(described(theirs)): datasets loads both as one table, converting one file's values to the other's type "
                    + "or failing, which droptrace does not follow; write the field with the same kind in both files",
                path: path)
        }
    }

    private static func kind(of value: JSONValue) -> String? {
        switch value {
        case .null: nil
        case .bool: "a boolean"
        case .integer, .bigInteger: "an integer"
        case .number: "a float"
        case .string: "a string"
        case .array: "a list"
        case .object: "an object"
        }
    }
}

/// One document of a task file: a JSON object with the dataset's own fields,
/// as `datasets.Dataset.to_json` writes them. Accessors throw
/// `DroptraceError("line N: …", path: file)` for a missing field or a wrong type.
struct TaskDocument: Sendable {
    let fields: JSONValue
    let path: String
    let location: DocumentLocation

    func failure(_ message: String) -> DroptraceError {
        DroptraceError("\(location): \(message)", path: path)
    }

    func value(_ key: String) throws -> JSONValue {
        guard let value = fields.member(key) else { throw failure("missing field \"\(key)\"") }
        guard !value.isNull else { throw failure("field \"\(key)\" is null") }
        return value
    }

    func string(_ key: String) throws -> String {
        guard case .string(let text) = try value(key) else { throw failure("\"\(key)\" should be a string") }
        return text
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

    /// The gold index of a task whose `doc_to_target` is the field `key`
    /// itself (BoolQ, PIQA, MMLU), read as the harness's multiple-choice
    /// scoring (`ConfigurableTask.process_results`) reads the value: an
    /// integer, or a boolean (a Python int), is the index; a string is
    /// `choices.index(value)`. A string that is no choice matches no
    /// prediction (the harness warns and counts the document wrong), and a
    /// float fails the harness (`is_greedy[gold]`): both refused.
    func target(_ key: String, choices: [String]) throws -> Int {
        switch try value(key) {
        case .integer(let number):
            return try label(number, field: key, choices: choices.count)
        case .bool(let flag):
            return try label(flag ? 1 : 0, field: key, choices: choices.count)
        case .string(let text):
            guard let index = choices.firstIndex(where: { PythonText.equal($0, text) }) else {
                throw failure("\"\(key)\" is \(text.debugDescription), neither a choice's index nor the text of one "
                    + "(lm-evaluation-harness would count it as answered wrongly)")
            }
            return index
        case .number(let real), .bigInteger(let real):
            throw failure("\"\(key)\" is \(real), not an integer (lm-evaluation-harness fails on a float label, "
                + "and datasets reads every label of the file as a float once one is): write labels as integers")
        default:
            throw failure("\"\(key)\" should be a choice's index (an integer) or its text")
        }
    }

    /// The document as Python compares dicts (`x != eval_doc` in the harness's
    /// sampler): keys in order, numbers by value (1 == 1.0 == True), a
    /// null field the same as a missing one (datasets fills missing columns
    /// with None); nil for a document holding a NaN, which equals no other
    /// (NaN != NaN, and each row's values are objects of their own).
    var identity: String? {
        var text = ""
        var comparable = true
        Self.canonical(fields, into: &text, comparable: &comparable)
        return comparable ? text : nil
    }

    private static func canonical(_ value: JSONValue, into text: inout String, comparable: inout Bool) {
        switch value {
        case .null: text += "n"
        case .bool(let flag): text += flag ? "#1" : "#0"
        case .integer(let number): text += "#\(number)"
        case .number(let real), .bigInteger(let real):
            if real.isNaN { comparable = false }
            if real.rounded() == real, abs(real) < 9.0e18 { text += "#\(Int(real))" } else { text += "#\(real)" }
        case .string(let string):
            text += "\"\(string.unicodeScalars.count):"
            text.unicodeScalars.append(contentsOf: string.unicodeScalars)
        case .array(let items):
            text += "[\(items.count)"
            for item in items { canonical(item, into: &text, comparable: &comparable) }
        case .object(let members):
            var latest: [(key: String, value: JSONValue)] = []
            for member in members where !member.value.isNull {
                latest.removeAll { PythonText.equal($0.key, member.key) }
                latest.append(member)
            }
            latest.sort { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) }
            text += "{\(latest.count)"
            for member in latest {
                canonical(.string(member.key), into: &text, comparable: &comparable)
                canonical(member.value, into: &text, comparable: &comparable)
            }
        }
    }

    /// Hands every document of a task file to `body`, in order, one at a time
    /// so only what `body` keeps stays in memory. Read as the `datasets` json
    /// loader lm-eval uses for local files reads it (datasets 5.2, pyarrow
    /// 26): a UTF-8 byte-order mark at the start skipped (datasets strips
    /// one, pyarrow's reader one more); then either JSON objects separated by
    /// whitespace (JSON Lines as `to_json` writes them, but pyarrow also
    /// reads two objects on one line, or one spread over several, and lines
    /// ending in LF, CRLF or CR alone), or one JSON array of objects
    /// (`to_json(lines=False)`, which datasets converts to JSON Lines).
    /// Each document is JSON as datasets reads it (`DatasetsJSONReader`):
    /// pyarrow's rules in JSON Lines, ujson's in a JSON array. A field whose
    /// kind changes between documents is read as written: datasets stores
    /// such a column as JSON (`on_mixed_types="use_json"`), though it then
    /// re-reads the lines with ujson, which this does not follow.
    /// - Throws: `DroptraceError` naming the file (and line): missing or
    ///   unreadable, not UTF-8, a document over `maximumDocumentLength`, not a
    ///   JSON object or not JSON, text after the array, no documents;
    ///   and whatever `body` throws.
    static func forEach(in url: URL, _ body: (TaskDocument) throws -> Void) throws {
        let path = url.path
        var scanner = TaskFileScanner([UInt8](try RegularFile.contents(path: path)), path: path)
        var count = 0
        func read(_ element: Int?) throws {
            let location = scanner.location(element)
            let fields = try scanner.object(element: element)
            // pyarrow's schema recursion limit: datasets fails on the file ("Recursion level in ArrowSchema struct exceeded").
            if fields.nestingDepth > maximumNesting {
                throw DroptraceError(
                    "\(location): nests objects and lists \(fields.nestingDepth) deep, more than the \(maximumNesting) the datasets "
                        + "json loader reads (pyarrow's limit): lm-eval cannot load this file", path: path)
            }
            try body(TaskDocument(fields: fields, path: path, location: location))
            count += 1
        }
        if scanner.startsArray() {
            // datasets loads the whole array and writes each element as a line.
            var element = 1
            while try !scanner.closesArray(before: element) {
                try read(element)
                element += 1
            }
            guard scanner.atEnd else { throw scanner.failure("text after the JSON array") }
        } else {
            while !scanner.atEnd { try read(nil) }
        }
        guard count > 0 else { throw DroptraceError("no documents (an empty task file)", path: path) }
    }

    /// The longest document read: a HellaSwag or MMLU document is a few
    /// kilobytes, a BoolQ passage a few more. Parsing holds a document many
    /// times over, so its extent is found before it is parsed.
    static let maximumDocumentLength = 1 << 20

    /// The deepest nesting of objects and lists in a document (the document
    /// itself is 1) that datasets loads (datasets 5.2, pyarrow 26: a value
    /// 62 lists or objects deep in a field loads, 63 fails).
    static let maximumNesting = 63
}

/// Walks a task file's JSON values without parsing more than one document
/// at a time, counting lines as editors do (LF, CRLF, CR).
private struct TaskFileScanner {
    let bytes: [UInt8]
    let path: String
    private(set) var position = 0
    /// Line of `position` once counted up to `counted`.
    private var line = 1, counted = 0

    init(_ bytes: [UInt8], path: String) {
        self.bytes = bytes
        self.path = path
        for _ in 0..<2 where bytes[position...].starts(with: UTF8.byteOrderMark) { position += UTF8.byteOrderMark.count }
        counted = position
        skipWhitespace()
    }

    var atEnd: Bool { position == bytes.count }

    mutating func location(_ element: Int?) -> DocumentLocation {
        DocumentLocation(line: lineOfPosition(), element: element)
    }

    mutating func failure(_ message: String, element: Int? = nil) -> DroptraceError {
        DroptraceError("\(location(element)): \(message)", path: path)
    }

    /// Whether the file is one JSON array; consumes its `[`.
    mutating func startsArray() -> Bool { consume(UInt8(ascii: "[")) }

    /// Before the array's `element`th element (1-based): consumes the closing
    /// `]` (true), or the `,` after the element before.
    mutating func closesArray(before element: Int) throws -> Bool {
        if consume(UInt8(ascii: "]")) { return true }
        guard !atEnd else { throw failure("the JSON array ends without its \"]\"") }
        guard element == 1 || consume(UInt8(ascii: ",")) else {
            throw failure("expected \",\" or \"]\" after an element of the JSON array", element: element)
        }
        return false
    }

    /// The JSON object starting here, parsed, and the whitespace after it.
    mutating func object(element: Int?) throws -> JSONValue {
        let start = position
        guard var end = Self.valueEnd(bytes, from: start, limit: TaskDocument.maximumDocumentLength) else {
            throw failure("a document longer than \(TaskDocument.maximumDocumentLength >> 20) MiB, more than any task document", element: element)
        }
        // A stray closing bracket: parsed alone, so the parser names it.
        if end == start && start < bytes.count { end += 1 }
        let text = Array(bytes[start..<end])
        guard String(validating: text, as: UTF8.self) != nil else { throw failure("not UTF-8 text", element: element) }
        let value: JSONValue
        do {
            // datasets reads JSON Lines with pyarrow, and a JSON array with ujson (then writes it as lines).
            value = try JSONValue.parse(text, reader: element == nil ? .pyarrow : .ujson)
        } catch {
            throw failure("invalid JSON (\(error.reason) at byte \(error.offset + 1))", element: element)
        }
        guard case .object = value else { throw failure("not a JSON object", element: element) }
        position = end
        skipWhitespace()
        return value
    }

    private mutating func consume(_ byte: UInt8) -> Bool {
        guard position < bytes.count, bytes[position] == byte else { return false }
        position += 1
        skipWhitespace()
        return true
    }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    private mutating func lineOfPosition() -> Int {
        var i = counted
        while i < position {
            if bytes[i] == UInt8(ascii: "\n") {
                line += 1
            } else if bytes[i] == UInt8(ascii: "\r") {
                line += 1
                if i + 1 < position, bytes[i + 1] == UInt8(ascii: "\n") { i += 1 }
            }
            i += 1
        }
        counted = position
        return line
    }

    /// One past the last byte of the JSON value starting at `start`, found
    /// by matching brackets outside strings without building the value; nil
    /// when it runs past `limit` bytes. A malformed value ends somewhere, and
    /// parsing that slice says why.
    static func valueEnd(_ bytes: [UInt8], from start: Int, limit: Int) -> Int? {
        var depth = 0, inString = false, i = start
        while i < bytes.count {
            guard i - start < limit else { return nil }
            let byte = bytes[i]
            if inString {
                if byte == UInt8(ascii: "\\") {
                    i += 2
                    continue
                }
                if byte == UInt8(ascii: "\"") {
                    inString = false
                    if depth == 0 { return i + 1 }
                }
            } else {
                switch byte {
                case UInt8(ascii: "\""): inString = true
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    if depth == 0 { return i }
                    depth -= 1
                    if depth == 0 { return i + 1 }
                case 0x20, 0x09, 0x0A, 0x0D, UInt8(ascii: ","):
                    if depth == 0 { return i }
                default: break
                }
            }
            i += 1
        }
        return min(i, bytes.count)
    }
}

extension JSONValue {
    /// 1 for an object or list holding no object or list, 0 for a scalar.
    var nestingDepth: Int {
        switch self {
        case .array(let items): 1 + (items.lazy.map(\.nestingDepth).max() ?? 0)
        case .object(let members): 1 + (members.lazy.map(\.value.nestingDepth).max() ?? 0)
        default: 0
        }
    }

    var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

import DroptraceSupport

/// Typed, located access to one JSON object of a tokenizer.json, so every
/// complaint names the file and the field ("pre_tokenizer.pretokenizers[1]").
struct JSONFields {
    let values: JSONObject
    /// Where this object sits in the document, for messages.
    let location: String
    /// The file being read, carried into every error.
    let file: String

    init(_ values: JSONObject, location: String, file: String) {
        self.values = values
        self.location = location
        self.file = file
    }

    /// Wraps `value` as an object or explains that it is not one.
    init(_ value: Any, location: String, file: String) throws {
        guard let values = value as? JSONObject else {
            throw DroptraceError("\(location) should be a JSON object", path: file)
        }
        self.init(values, location: location, file: file)
    }

    func failure(_ message: String) -> DroptraceError {
        DroptraceError("\(location): \(message)", path: file)
    }

    func fieldName(_ key: String) -> String {
        location.isEmpty ? key : "\(location).\(key)"
    }

    /// Absent and null are both "not given": tokenizer.json writes null for
    /// every unset option.
    func isGiven(_ key: String) -> Bool {
        guard let value = values[key] else { return false }
        return !(value is JSONNull)
    }

    func string(_ key: String) throws -> String? {
        guard isGiven(key) else { return nil }
        guard let text = values[key] as? String else {
            throw DroptraceError("\(fieldName(key)) should be a string", path: file)
        }
        return text
    }

    func requiredString(_ key: String) throws -> String {
        guard let text = try string(key) else {
            throw DroptraceError("\(fieldName(key)) is missing", path: file)
        }
        return text
    }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard isGiven(key) else { return fallback }
        guard let flag = JSONFields.boolean(values[key]!) else {
            throw DroptraceError("\(fieldName(key)) should be true or false", path: file)
        }
        return flag
    }

    /// A flag the library requires (it has no default for it): absent or null is refused.
    func requiredBool(_ key: String) throws -> Bool {
        guard isGiven(key) else { throw DroptraceError("\(fieldName(key)) is missing", path: file) }
        return try bool(key, default: false)
    }

    /// A flag the library defaults when absent but cannot read as null.
    func nonNullBool(_ key: String, default fallback: Bool) throws -> Bool {
        values[key] == nil ? fallback : try requiredBool(key)
    }

    func int(_ key: String) throws -> Int? {
        guard isGiven(key) else { return nil }
        guard let number = JSONFields.integer(values[key]!) else {
            throw DroptraceError("\(fieldName(key)) should be an integer", path: file)
        }
        return number
    }

    /// A non-negative integer the library requires (usize, or u32 up to `limit`).
    func requiredCount(_ key: String, limit: Int = Int.max) throws -> Int {
        guard let count = try int(key), (0...limit).contains(count) else {
            throw DroptraceError("\(fieldName(key)) should be an integer from 0 to \(limit)", path: file)
        }
        return count
    }

    func object(_ key: String) throws -> JSONFields? {
        guard isGiven(key) else { return nil }
        return try JSONFields(values[key]!, location: fieldName(key), file: file)
    }

    func array(_ key: String) throws -> [Any]? {
        guard isGiven(key) else { return nil }
        guard let items = values[key] as? [Any] else {
            throw DroptraceError("\(fieldName(key)) should be a list", path: file)
        }
        return items
    }

    /// Like `objects`, for a list the library requires: absent or null is
    /// refused, as the library refuses to load such a file.
    func requiredObjects(_ key: String) throws -> [JSONFields] {
        guard isGiven(key) else { throw DroptraceError("\(fieldName(key)) should be a list", path: file) }
        return try objects(key)
    }

    /// Each element of a list of objects, located as "key[i]".
    func objects(_ key: String) throws -> [JSONFields] {
        guard let items = try array(key) else { return [] }
        return try items.enumerated().map { index, item in
            try JSONFields(item, location: "\(fieldName(key))[\(index)]", file: file)
        }
    }

    /// An integer literal (not 1.0, not true), as `JSONParser` produced it.
    static func integer(_ value: Any) -> Int? {
        type(of: value) == Int.self ? value as? Int : nil
    }

    static func boolean(_ value: Any) -> Bool? {
        type(of: value) == Bool.self ? value as? Bool : nil
    }

    /// Parses a whole JSON document, or explains where it is broken.
    static func parseDocument(_ bytes: [UInt8], file: String, what: String) throws -> Any {
        do {
            return try JSONParser.parse(bytes, serde: true)
        } catch {
            let before = bytes[..<min(error.offset, bytes.count)]
            let line = before.reduce(1) { $1 == 0x0A ? $0 + 1 : $0 }
            let column = before.count - (before.lastIndex(of: 0x0A).map { $0 + 1 } ?? 0) + 1
            throw DroptraceError("\(what) is not valid JSON (line \(line), column \(column): \(error.reason))", path: file)
        }
    }
}

import DroptraceSupport

/// Typed, located access to one JSON object of a tokenizer.json, so every
/// complaint names the file and the field ("pre_tokenizer.pretokenizers[1]").
struct JSONFields {
    let values: JSONObject
    /// Where this object sits in the document, for messages.
    let location: String
    /// The file being read, carried into every error.
    let file: String
    /// What a key given twice means here, as the library's reader of this object takes it.
    let repeatedKeys: RepeatedKeys

    /// A key given twice in one object, as tokenizers 0.23.3 reads it
    /// (serde): a struct whose Deserialize is derived refuses a field it
    /// knows given twice ("duplicate field `content`"; an untagged enum of
    /// such structs, the post-processor, then matches no variant), while
    /// serde_json's `Value` and maps (HashMap) keep the last value, as do
    /// the library's hand-written readers of the top level and the model.
    /// The normalizer, pre-tokenizer and decoder sections are read through
    /// `Value` first, so repeats anywhere within them keep the last value.
    enum RepeatedKeys: Sendable {
        /// The top level: its own sections differ (`sectionsReadAsStructs`).
        case document
        case lastWins
        case refused
    }

    /// The top-level sections the library reads with derived
    /// deserializers all the way down (but for maps, `entries`).
    static let sectionsReadAsStructs: Set = ["added_tokens", "post_processor", "truncation", "padding"]

    init(_ values: JSONObject, location: String, file: String, repeatedKeys: RepeatedKeys = .lastWins) {
        self.values = values
        self.location = location
        self.file = file
        self.repeatedKeys = repeatedKeys
    }

    /// Wraps `value` as an object or explains that it is not one.
    init(_ value: Any, location: String, file: String, repeatedKeys: RepeatedKeys = .lastWins) throws {
        guard let values = value as? JSONObject else {
            throw DroptraceError("\(location) should be a JSON object", path: file)
        }
        self.init(values, location: location, file: file, repeatedKeys: repeatedKeys)
    }

    /// The object `value` found at `key` of this one (or in its list at
    /// `key`), located at `location`, reading repeated keys as the library
    /// reads that part of the file.
    func child(_ value: Any, key: String, location: String) throws -> JSONFields {
        let mode: RepeatedKeys
        switch repeatedKeys {
        case .document: mode = Self.sectionsReadAsStructs.contains(key) ? .refused : .lastWins
        case .lastWins, .refused: mode = repeatedKeys
        }
        return try JSONFields(value, location: location, file: file, repeatedKeys: mode)
    }

    /// The value of `key` (the last when repeated), nil when absent.
    /// - Throws: `DroptraceError` naming the field when it is given twice
    ///   in an object the library refuses that in.
    func value(_ key: String) throws -> Any? {
        if repeatedKeys == .refused { try refuseRepeated(key) }
        return values[key]
    }

    /// Refuses `key` given more than once, as serde's derived
    /// deserializers do ("duplicate field"); also used where one field of a
    /// last-wins object is read by such a deserializer.
    /// - Throws: `DroptraceError` naming the field.
    func refuseRepeated(_ key: String) throws {
        guard values.members.lazy.filter({ $0.key.utf8.elementsEqual(key.utf8) }).count > 1 else { return }
        throw DroptraceError("\(fieldName(key)) is given twice (the tokenizers library refuses a repeated field)", path: file)
    }

    func failure(_ message: String) -> DroptraceError {
        DroptraceError("\(location): \(message)", path: file)
    }

    func fieldName(_ key: String) -> String {
        location.isEmpty ? key : "\(location).\(key)"
    }

    /// Absent and null are both "not given": tokenizer.json writes null for
    /// every unset option.
    func isGiven(_ key: String) throws -> Bool {
        guard let value = try value(key) else { return false }
        return !(value is JSONNull)
    }

    func string(_ key: String) throws -> String? {
        guard try isGiven(key) else { return nil }
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
        guard try isGiven(key) else { return fallback }
        guard let flag = JSONFields.boolean(values[key]!) else {
            throw DroptraceError("\(fieldName(key)) should be true or false", path: file)
        }
        return flag
    }

    /// A flag the library requires (it has no default for it): absent or null is refused.
    func requiredBool(_ key: String) throws -> Bool {
        guard try isGiven(key) else { throw DroptraceError("\(fieldName(key)) is missing", path: file) }
        return try bool(key, default: false)
    }

    /// A flag the library defaults when absent but cannot read as null.
    func nonNullBool(_ key: String, default fallback: Bool) throws -> Bool {
        try value(key) == nil ? fallback : try requiredBool(key)
    }

    func int(_ key: String) throws -> Int? {
        guard try isGiven(key) else { return nil }
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
        guard try isGiven(key) else { return nil }
        return try child(values[key]!, key: key, location: fieldName(key))
    }

    /// The object at `key` read as a map (serde's HashMap, e.g.
    /// TemplateProcessing's `special_tokens`): a name given twice keeps its
    /// last value, in the place of its first; each value an object read as this one is.
    func entries(_ key: String) throws -> [(name: String, fields: JSONFields)]? {
        guard let map = try object(key) else { return nil }
        // Keyed by bytes: Swift's String equality would merge canonically equivalent names.
        var order: [[UInt8]] = []
        var last: [[UInt8]: (name: String, value: Any)] = [:]
        for (name, value) in map.values.members {
            let bytes = Array(name.utf8)
            if last.updateValue((name, value), forKey: bytes) == nil { order.append(bytes) }
        }
        return try order.map { bytes in
            let (name, value) = last[bytes]!
            return (name, try child(value, key: key, location: "\(map.location).\(name)"))
        }
    }

    func array(_ key: String) throws -> [Any]? {
        guard try isGiven(key) else { return nil }
        guard let items = values[key] as? [Any] else {
            throw DroptraceError("\(fieldName(key)) should be a list", path: file)
        }
        return items
    }

    /// Like `objects`, for a list the library requires: absent or null is
    /// refused, as the library refuses to load such a file.
    func requiredObjects(_ key: String) throws -> [JSONFields] {
        guard try isGiven(key) else { throw DroptraceError("\(fieldName(key)) should be a list", path: file) }
        return try objects(key)
    }

    /// Each element of a list of objects, located as "key[i]".
    func objects(_ key: String) throws -> [JSONFields] {
        guard let items = try array(key) else { return [] }
        return try items.enumerated().map { index, item in
            try child(item, key: key, location: "\(fieldName(key))[\(index)]")
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

import DroptraceSupport

/// The column types a task file's documents imply, inferred as pyarrow's
/// JSON reader (which the `datasets` json loader lm-eval uses reads with)
/// infers them: every document's field is a column, and a column keeps one
/// kind over the whole file. null fits any kind, integers and decimals are
/// both numbers, lists and objects are typed by what they hold (an object's
/// fields merge over documents). A column that holds a number in one
/// document and text in another (`"label": 1` then `"label": "1"`, or
/// `[1]` then `["a"]`) makes pyarrow fail ("Column(/label) changed from
/// number to string"), so lm-eval cannot load the file.
struct TaskColumnKinds {
    indirect enum Kind: Equatable {
        case null, boolean, number, text
        case list(Kind)
        case object([String: Kind])

        var name: String {
            switch self {
            case .null: "null"
            case .boolean: "true or false"
            case .number: "a number"
            case .text: "text"
            case .list: "a list"
            case .object: "an object"
            }
        }
    }

    /// A column whose kind changed: its path (`label`, `choices.text[]`) and both kinds.
    struct Conflict: Error {
        var column: String
        var earlier: Kind
        var here: Kind

        var message: String {
            "column \"\(column)\" holds \(here.name) here but \(earlier.name) in an earlier document or element; "
                + "the datasets library (pyarrow's JSON reader) refuses a column that changes kind, so lm-eval cannot load this file"
        }
    }

    private var columns: [String: Kind] = [:]

    /// Merges one document's fields into the file's columns.
    /// - Throws: `Conflict` naming the first column whose kind changed.
    mutating func add(_ document: JSONValue) throws(Conflict) {
        guard case .object(let members) = document else { return }
        columns = try Self.merge(columns, Self.fields(members), under: "")
    }

    private static func kind(of value: JSONValue, at path: String) throws(Conflict) -> Kind {
        switch value {
        case .null: return .null
        case .bool: return .boolean
        case .integer, .number, .bigInteger: return .number
        case .string: return .text
        case .array(let items):
            var element = Kind.null
            for item in items { element = try unify(element, kind(of: item, at: path + "[]"), at: path + "[]") }
            return .list(element)
        case .object(let members): return .object(try fields(members, under: path + "."))
        }
    }

    private static func fields(_ members: [(key: String, value: JSONValue)], under prefix: String = "") throws(Conflict) -> [String: Kind] {
        var fields: [String: Kind] = [:]
        for (key, value) in members { fields[key] = try kind(of: value, at: prefix + key) }  // a repeated key: the last
        return fields
    }

    private static func merge(_ earlier: [String: Kind], _ here: [String: Kind], under prefix: String) throws(Conflict) -> [String: Kind] {
        var merged = earlier
        for (key, kind) in here { merged[key] = try unify(earlier[key] ?? .null, kind, at: prefix + key) }
        return merged
    }

    private static func unify(_ earlier: Kind, _ here: Kind, at path: String) throws(Conflict) -> Kind {
        switch (earlier, here) {
        case (.null, _): return here
        case (_, .null): return earlier
        case (.list(let a), .list(let b)): return .list(try unify(a, b, at: path + "[]"))
        case (.object(let a), .object(let b)): return .object(try merge(a, b, under: path + "."))
        case _ where earlier == here: return earlier
        default: throw Conflict(column: path, earlier: earlier, here: here)
        }
    }
}

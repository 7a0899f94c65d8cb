/// A parsed JSON value, typed (task files, config.json checks): the same
/// parser as tokenizer.json and calibration JSONL (depth limit,
/// integers told apart from 1.0 and true, object members in file order).
public indirect enum JSONValue: Sendable {
    case null
    case bool(Bool)
    /// An integer literal that fits in `Int`.
    case integer(Int)
    /// Any other number.
    case number(Double)
    /// An integer literal beyond `Int` (Python reads it as an int, of any
    /// size), held as the nearest Double.
    case bigInteger(Double)
    case string(String)
    case array([JSONValue])
    /// Members in file order; a repeated key is kept as written (`member(_:)` takes the last).
    case object([(key: String, value: JSONValue)])

    /// Parses one JSON document (`serde`: as Rust's serde_json reads it;
    /// `reader`: as that reader of the datasets library reads it; `arrayLimit`:
    /// the most values an array may hold; `allowingNonFinite`: Python's NaN
    /// and ±Infinity; see `JSONParser.parse`).
    /// - Throws: `JSONValue.Malformed` with the byte offset and the reason.
    public static func parse(
        _ bytes: [UInt8], allowingNonFinite: Bool = false, serde: Bool = false, reader: DatasetsJSONReader? = nil,
        arrayLimit: Int = .max
    ) throws(Malformed) -> JSONValue {
        do {
            return JSONValue(parsed: try JSONParser.parse(
                bytes, allowingNonFinite: allowingNonFinite, serde: serde, reader: reader, arrayLimit: arrayLimit))
        } catch {
            throw Malformed(offset: error.offset, reason: error.reason)
        }
    }

    /// Why a document is not JSON.
    public struct Malformed: Error, Sendable {
        public var offset: Int
        public var reason: String
    }

    init(parsed value: Any) {
        if let object = value as? JSONObject {
            self = .object(object.members.map { ($0.key, JSONValue(parsed: $0.value)) })
        } else if let items = value as? [Any] {
            self = .array(items.map { JSONValue(parsed: $0) })
        } else if let text = value as? String {
            self = .string(text)
        } else if type(of: value) == Bool.self, let flag = value as? Bool {
            self = .bool(flag)
        } else if type(of: value) == Int.self, let integer = value as? Int {
            self = .integer(integer)
        } else if let big = value as? JSONBigInteger {
            self = .bigInteger(big.value)
        } else if let real = value as? Double {
            self = .number(real)
        } else {
            self = .null
        }
    }

    /// The value of `key` in an object (the last one when repeated); nil
    /// for other values or a missing key. Keys compare by Unicode scalars.
    public func member(_ key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.last { $0.key.unicodeScalars.elementsEqual(key.unicodeScalars) }?.value
    }

    /// The value at a dotted path of object members (`thinker_config.text_config`:
    /// `member("thinker_config")?.member("text_config")`); nil when one on the way is missing.
    public func member(path: String) -> JSONValue? {
        path.split(separator: ".").reduce(Optional(self)) { $0?.member(String($1)) }
    }

    /// Python's truth value of the value: null, false, 0, 0.0, "", [] and {}
    /// are false, everything else true (NaN too).
    public var isTruthy: Bool {
        switch self {
        case .null: false
        case .bool(let flag): flag
        case .integer(let number): number != 0
        case .number(let number), .bigInteger(let number): number != 0
        case .string(let text): !text.isEmpty
        case .array(let entries): !entries.isEmpty
        case .object(let members): !members.isEmpty
        }
    }

    /// The dotted path (`attn_config.clip_qkv`, `time_step_limit[1]`) of
    /// the first number within this value that is not finite, where the
    /// members of this object named in `infiniteBounds` may hold ±infinity
    /// (bounds Python writes as `Infinity`, GraniteMoeHybridConfig's default
    /// `time_step_limit` (0.0, inf)), never NaN; nil when there is none.
    public func nonFiniteNumberPath(allowingInfinityIn infiniteBounds: Set<String> = [], under path: String = "") -> String? {
        switch self {
        case .number(let value), .bigInteger(let value):
            return value.isFinite ? nil : path
        case .array(let items):
            for (index, item) in items.enumerated() {
                if let found = item.nonFiniteNumberPath(under: "\(path)[\(index)]") { return found }
            }
            return nil
        case .object(let members):
            for (key, value) in members {
                let name = path.isEmpty ? key : "\(path).\(key)"
                let found = infiniteBounds.contains(key) ? value.nanPath(under: name) : value.nonFiniteNumberPath(under: name)
                if let found { return found }
            }
            return nil
        default:
            return nil
        }
    }

    /// `nonFiniteNumberPath` for NaN alone.
    private func nanPath(under path: String) -> String? {
        switch self {
        case .number(let value), .bigInteger(let value): return value.isNaN ? path : nil
        case .array(let items):
            return items.enumerated().lazy.compactMap { $0.element.nanPath(under: "\(path)[\($0.offset)]") }.first
        case .object(let members):
            return members.lazy.compactMap { $0.value.nanPath(under: "\(path).\($0.key)") }.first
        default: return nil
        }
    }

    /// The dotted path (`rope_parameters.factor`, `layers[2].name`) of the
    /// first key an object within this value gives twice, compared by
    /// Unicode scalars; nil when none is.
    public func repeatedKey(under path: String = "") -> String? {
        switch self {
        case .object(let members):
            var seen: Set<[Unicode.Scalar]> = []
            for (key, value) in members {
                let name = path.isEmpty ? key : "\(path).\(key)"
                if !seen.insert(Array(key.unicodeScalars)).inserted { return name }
                if let repeated = value.repeatedKey(under: name) { return repeated }
            }
            return nil
        case .array(let items):
            for (index, item) in items.enumerated() {
                if let repeated = item.repeatedKey(under: "\(path)[\(index)]") { return repeated }
            }
            return nil
        default:
            return nil
        }
    }
}

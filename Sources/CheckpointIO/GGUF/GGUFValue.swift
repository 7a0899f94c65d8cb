/// A GGUF metadata value type (the spec's `gguf_metadata_value_type`). Values
/// keep the type they were stored as: llama.cpp reads each key as one type
/// and refuses the file when it has another ("key ... has wrong type").
public enum GGUFType: UInt32, Sendable, Equatable {
    case uint8 = 0, int8, uint16, int16, uint32, int32, float32, bool, string, array, uint64, int64, float64

    /// The spec's name (`UINT32`), as gguf-py spells it.
    public var name: String {
        switch self {
        case .uint8: "UINT8"
        case .int8: "INT8"
        case .uint16: "UINT16"
        case .int16: "INT16"
        case .uint32: "UINT32"
        case .int32: "INT32"
        case .float32: "FLOAT32"
        case .bool: "BOOL"
        case .string: "STRING"
        case .array: "ARRAY"
        case .uint64: "UINT64"
        case .int64: "INT64"
        case .float64: "FLOAT64"
        }
    }
}

/// One metadata value of a GGUF file (the spec's `gguf_metadata_value_t`).
public enum GGUFValue: Sendable, Equatable {
    /// UINT8, UINT16, UINT32 or UINT64.
    case unsigned(UInt64, GGUFType)
    /// INT8, INT16, INT32 or INT64.
    case signed(Int64, GGUFType)
    /// FLOAT32 or FLOAT64.
    case float(Double, GGUFType)
    case bool(Bool)
    case string(String)
    /// The elements and their type (known even when there are none).
    case array([GGUFValue], of: GGUFType)

    public var type: GGUFType {
        switch self {
        case .unsigned(_, let type), .signed(_, let type), .float(_, let type): type
        case .bool: .bool
        case .string: .string
        case .array: .array
        }
    }

    /// The type as errors name it: `UINT32`, `ARRAY of STRING`.
    public var typeName: String {
        if case .array(_, let element) = self { return "ARRAY of \(element.name)" }
        return type.name
    }

    /// Any integer type, when it fits an Int.
    public var int: Int? {
        switch self {
        case .unsigned(let v, _): v <= UInt64(Int.max) ? Int(v) : nil
        case .signed(let v, _): Int(v)
        default: nil
        }
    }

    /// Any number, floats and integers alike.
    public var double: Double? {
        switch self {
        case .float(let v, _): v
        case .unsigned(let v, _): Double(v)
        case .signed(let v, _): Double(v)
        default: nil
        }
    }

    public var bool: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    public var string: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    public var array: [GGUFValue]? {
        if case .array(let v, _) = self { return v }
        return nil
    }
}

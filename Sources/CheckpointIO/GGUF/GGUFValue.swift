/// One metadata value of a GGUF file (the spec's `gguf_metadata_value_t`).
public enum GGUFValue: Sendable, Equatable {
    case unsigned(UInt64)
    case signed(Int64)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array([GGUFValue])

    /// Any integer type, when it fits an Int.
    public var int: Int? {
        switch self {
        case .unsigned(let v): v <= UInt64(Int.max) ? Int(v) : nil
        case .signed(let v): Int(v)
        default: nil
        }
    }

    /// Any number, floats and integers alike.
    public var double: Double? {
        switch self {
        case .float(let v): v
        case .unsigned(let v): Double(v)
        case .signed(let v): Double(v)
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
        if case .array(let v) = self { return v }
        return nil
    }
}

import DroptraceSupport

/// Typed access to a GGUF file's metadata, with errors naming the file and key.
///
/// Each key is read as the type llama.cpp reads it: its loader's `get_key`
/// refuses a key of any other type ("key ... has wrong type"), so a count
/// stored as FLOAT32 or an epsilon stored as UINT32 describes no model
/// llama.cpp would run, and is refused here too rather than converted.
public struct GGUFMetadata: Sendable {
    public let values: [String: GGUFValue]
    public let path: String

    public init(values: [String: GGUFValue], path: String) {
        self.values = values
        self.path = path
    }

    /// A count or size: llama.cpp's hyperparameters are `uint32_t`, read from UINT32 keys only.
    public func uint32(_ key: String) throws -> Int {
        guard let value = values[key] else { throw missing(key) }
        guard case .unsigned(let number, .uint32) = value else { throw wrongType(key, value, expected: "UINT32") }
        return Int(number)
    }

    public func optionalUInt32(_ key: String) throws -> Int? {
        guard values[key] != nil else { return nil }
        return try uint32(key)
    }

    /// An epsilon, rope base or factor: llama.cpp's `float` hyperparameters, read from FLOAT32 keys only.
    func float32(_ key: String) throws -> Double {
        guard let value = values[key] else { throw missing(key) }
        guard case .float(let number, .float32) = value else { throw wrongType(key, value, expected: "FLOAT32") }
        return number
    }

    func optionalFloat32(_ key: String) throws -> Double? {
        guard values[key] != nil else { return nil }
        return try float32(key)
    }

    public func optionalBool(_ key: String) throws -> Bool? {
        guard let value = values[key] else { return nil }
        guard let flag = value.bool else { throw wrongType(key, value, expected: "BOOL") }
        return flag
    }

    public func string(_ key: String) throws -> String {
        guard let value = values[key] else { throw missing(key) }
        guard let text = value.string else { throw wrongType(key, value, expected: "STRING") }
        return text
    }

    public func optionalString(_ key: String) throws -> String? {
        guard values[key] != nil else { return nil }
        return try string(key)
    }

    /// An array of one of the `accepted` element types. llama.cpp reads a
    /// vocabulary's arrays as one type: lists as strings, scores and token
    /// types as the raw 4-byte floats and ints they hold (so a UINT32 token
    /// type reads as its INT32, and a FLOAT32 score in no other type).
    public func optionalArray(_ key: String, of accepted: [GGUFType]) throws -> [GGUFValue]? {
        guard let value = values[key] else { return nil }
        guard case .array(let items, let element) = value, accepted.contains(element) else {
            throw wrongType(key, value, expected: "ARRAY of " + accepted.map(\.name).joined(separator: " or "))
        }
        return items
    }

    /// An integer that some files store per layer (e.g. `head_count_kv`):
    /// droptrace's architectures need it equal across layers. llama.cpp reads
    /// it as a UINT32, or as an array of UINT32 or INT32 holding one value for
    /// each of the `layers` blocks ("wrong array length"): a shorter one leaves
    /// blocks without a value, a longer one describes another model.
    func uniformInt(_ key: String, layers: Int) throws -> Int? {
        guard let value = values[key] else { return nil }
        let expected = "UINT32, or an ARRAY of UINT32 or INT32 with one value per block"
        let items: [GGUFValue]
        switch value {
        case .unsigned(let number, .uint32): return Int(number)
        case .array(let array, .uint32), .array(let array, .int32): items = array
        default: throw wrongType(key, value, expected: expected)
        }
        if items.count != layers {
            throw DroptraceError(
                "metadata key '\(key)' holds \(items.count) per-layer values, but the model has \(layers) blocks (block_count)",
                path: path)
        }
        guard let first = items.first?.int, items.allSatisfy({ $0.int == first }) else {
            throw DroptraceError("metadata key '\(key)' differs between layers, which droptrace does not support", path: path)
        }
        return first
    }

    /// A real parameter per layer (Apertus' `xielu.*`): a FLOAT32 for every
    /// block, or an ARRAY of FLOAT32 with one finite value per block, as
    /// llama.cpp's `get_key_or_arr` reads it.
    func perLayerFloat32(_ key: String, layers: Int) throws -> [Double] {
        guard let value = values[key] else { throw missing(key) }
        let numbers: [Double]
        switch value {
        case .float(let number, .float32): numbers = Array(repeating: number, count: layers)
        case .array(let items, .float32) where items.count == layers: numbers = items.compactMap(\.double)
        case .array(let items, .float32):
            throw DroptraceError(
                "metadata key '\(key)' holds \(items.count) per-layer values, but the model has \(layers) blocks (block_count)", path: path)
        default: throw wrongType(key, value, expected: "FLOAT32, or an ARRAY of FLOAT32 with one value per block")
        }
        guard numbers.count == layers, numbers.allSatisfy(\.isFinite) else {
            throw DroptraceError("metadata key '\(key)' must hold finite numbers", path: path)
        }
        return numbers
    }

    private func missing(_ key: String) -> DroptraceError {
        DroptraceError("missing GGUF metadata key '\(key)'", path: path)
    }

    private func wrongType(_ key: String, _ value: GGUFValue, expected: String) -> DroptraceError {
        Self.wrongType(key, value, expected: expected, path: path)
    }

    /// The error for a key stored as another type than llama.cpp reads it as.
    static func wrongType(_ key: String, _ value: GGUFValue, expected: String, path: String) -> DroptraceError {
        DroptraceError("GGUF metadata key '\(key)' has type \(value.typeName), but llama.cpp reads it as \(expected)", path: path)
    }
}

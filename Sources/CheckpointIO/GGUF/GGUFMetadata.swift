import DroptraceSupport

/// Typed access to a GGUF file's metadata, with errors naming the file and key.
struct GGUFMetadata {
    let values: [String: GGUFValue]
    let path: String

    func int(_ key: String) throws -> Int {
        guard let value = values[key] else { throw missing(key) }
        guard let number = value.int else { throw wrongType(key, "an integer") }
        return number
    }

    func optionalInt(_ key: String) throws -> Int? {
        guard values[key] != nil else { return nil }
        return try int(key)
    }

    func double(_ key: String) throws -> Double {
        guard let value = values[key] else { throw missing(key) }
        guard let number = value.double else { throw wrongType(key, "a number") }
        return number
    }

    func optionalDouble(_ key: String) throws -> Double? {
        guard values[key] != nil else { return nil }
        return try double(key)
    }

    func optionalBool(_ key: String) throws -> Bool? {
        guard let value = values[key] else { return nil }
        guard let flag = value.bool else { throw wrongType(key, "a bool") }
        return flag
    }

    func string(_ key: String) throws -> String {
        guard let value = values[key] else { throw missing(key) }
        guard let text = value.string else { throw wrongType(key, "a string") }
        return text
    }

    func optionalString(_ key: String) throws -> String? {
        guard values[key] != nil else { return nil }
        return try string(key)
    }

    /// An integer that some files store per layer (e.g. `head_count_kv`):
    /// droptrace's architectures need it equal across layers. A per-layer
    /// array must hold one value for each of the `layers` blocks, as llama.cpp
    /// requires ("wrong array length"): a shorter one leaves blocks without a
    /// value, a longer one describes another model.
    func uniformInt(_ key: String, layers: Int) throws -> Int? {
        guard let value = values[key] else { return nil }
        if let number = value.int { return number }
        if let items = value.array, items.count != layers {
            throw DroptraceError(
                "metadata key '\(key)' holds \(items.count) per-layer values, but the model has \(layers) blocks (block_count)",
                path: path)
        }
        guard let items = value.array?.map(\.int), let first = items.first ?? nil,
              items.allSatisfy({ $0 == first })
        else {
            throw DroptraceError("metadata key '\(key)' differs between layers, which droptrace does not support", path: path)
        }
        return first
    }

    private func missing(_ key: String) -> DroptraceError {
        DroptraceError("missing GGUF metadata key '\(key)'", path: path)
    }

    private func wrongType(_ key: String, _ expected: String) -> DroptraceError {
        DroptraceError("GGUF metadata key '\(key)' is not \(expected)", path: path)
    }
}

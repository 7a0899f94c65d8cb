/// A decoding path as a reader writes it: `layer_types[3]`,
/// `rope_parameters.factor` (the decoder's own spelling of an array
/// position, "Index 3", is an implementation name).
public func codingPathText(_ path: [any CodingKey]) -> String {
    path.reduce("") { text, key in
        if let index = key.intValue { return text + "[\(index)]" }
        return text.isEmpty ? key.stringValue : text + "." + key.stringValue
    }
}

import CheckpointIO

/// `mlp_layer_types` (GLM-4.7-Flash's and K-EXAONE's config key): each
/// layer's MLP, "dense" or "sparse" (routed experts), as the decoder layer
/// of the layer's index reads it.
enum MLPLayerTypes {
    static let key = "mlp_layer_types"

    /// Refuses an entry other than "dense" or "sparse".
    static func checkEntries(_ types: [String]?) throws {
        if let bad = types?.first(where: { $0 != "dense" && $0 != "sparse" }) {
            throw InvalidConfigValue(key: key, problem: "must list \"dense\" or \"sparse\" per layer, got \"\(bad.forErrorMessage)\"")
        }
    }

    /// Refuses a list shorter than the layers (the decoder layer of a
    /// missing index fails in transformers) or, when `validated`, one of
    /// any other length: `validate_layer_type` checks this key of classes
    /// that always fill `layer_types` (MiMo-V2-Flash's).
    static func checkCount(_ types: [String]?, layers: Int, validated: Bool = false) throws {
        if let types, types.count < layers || (validated && types.count != layers) {
            throw InvalidConfigValue(key: key, problem: "lists \(types.count) layers, but num_hidden_layers is \(layers)")
        }
    }

    /// The written list, else the first `firstDense` of `layers` layers dense and the others sparse.
    static func resolved(_ types: [String]?, layers: Int, firstDense: Int) -> [String] {
        types ?? (0..<layers).map { $0 < firstDense ? "dense" : "sparse" }
    }
}

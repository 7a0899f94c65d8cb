import Architectures
import CheckpointIO
import Foundation

/// A fixture model copied into a scratch directory with its config.json edited.
enum EditedModel {
    /// Sets (or, for nil, removes) the value at a dotted path
    /// (`text_config.rope_parameters.full_attention.factor`), creating objects on the way.
    static func set(_ value: Any?, at path: String, in object: inout [String: Any]) {
        let keys = path.split(separator: ".").map(String.init)
        func assign(_ keys: ArraySlice<String>, _ object: inout [String: Any]) {
            guard let key = keys.first else { return }
            if keys.count == 1 {
                object[key] = value
                return
            }
            var nested = object[key] as? [String: Any] ?? [:]
            assign(keys.dropFirst(), &nested)
            object[key] = nested
        }
        assign(keys[...], &object)
    }

    /// A copy of fixture `fixture` whose config.json has each path set to its
    /// value (JSON text; nil removes the key).
    static func copy(_ fixture: String, in scratch: ScratchDirectory, as name: String = "model", _ edits: [(String, String?)]) throws -> URL {
        let model = try scratch.copyOfModel(fixture, as: name)
        let configURL = model.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        for (path, text) in edits {
            let value = try text.map { try JSONSerialization.jsonObject(with: Data($0.utf8), options: .fragmentsAllowed) }
            set(value, at: path, in: &config)
        }
        try KindPreservingJSON.data(config).write(to: configURL)
        return model
    }

    /// Loads `directory` as a model.
    static func load(_ directory: URL) throws -> any LanguageModel {
        try ModelRegistry.load(try Checkpoint(directory: directory))
    }
}

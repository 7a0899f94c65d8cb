import DroptraceSupport
import Foundation

/// A Hugging Face checkpoint directory: `config.json` plus the weights, either
/// one `model.safetensors` or shards listed in `model.safetensors.index.json`.
///
/// All weight files are opened (mapped and their headers validated) up front,
/// so a truncated or corrupt checkpoint fails before any work is done.
public final class Checkpoint: @unchecked Sendable {
    public let directory: URL
    public let configURL: URL
    /// The raw bytes of config.json; each architecture decodes its own view.
    public let configData: Data
    public let modelType: String
    private let tensors: [String: TensorSlice]

    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    public init(directory: URL) throws {
        self.directory = directory
        let dirPath = directory.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dirPath, isDirectory: &isDirectory) else {
            throw DroptraceError("checkpoint not found", path: dirPath)
        }
        guard isDirectory.boolValue else {
            throw DroptraceError("expected a checkpoint directory (config.json and safetensors)", path: dirPath)
        }
        configURL = directory.appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: configURL.path) else {
            throw DroptraceError("missing config.json in the checkpoint directory", path: configURL.path)
        }
        configData = data
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw DroptraceError("not valid JSON", path: configURL.path)
        }
        guard let type = object["model_type"] as? String else {
            throw DroptraceError("no \"model_type\" key", path: configURL.path)
        }
        modelType = type

        var tensors: [String: TensorSlice] = [:]
        for file in try Self.weightFiles(in: directory) {
            for (name, slice) in try SafetensorsFile(path: file.path).tensors {
                tensors[name] = slice
            }
        }
        self.tensors = tensors
    }

    /// The safetensors files of the checkpoint, validating the shard index.
    static func weightFiles(in directory: URL) throws -> [URL] {
        let index = directory.appendingPathComponent(indexFileName)
        let single = directory.appendingPathComponent(singleFileName)
        if let data = FileManager.default.contents(atPath: index.path) {
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let weightMap = object["weight_map"] as? [String: String]
            else {
                throw DroptraceError("not a valid safetensors index (needs a \"weight_map\" object)", path: index.path)
            }
            let shardNames = Set(weightMap.values).sorted()
            for name in shardNames where !FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path) {
                throw DroptraceError("shard \(name) named in the index is missing", path: index.path)
            }
            return shardNames.map { directory.appendingPathComponent($0) }
        }
        if FileManager.default.fileExists(atPath: single.path) { return [single] }
        throw DroptraceError("no \(singleFileName) or \(indexFileName) in the checkpoint directory", path: directory.path)
    }

    public var tensorNames: [String] { tensors.keys.sorted() }

    public func hasTensor(_ name: String) -> Bool { tensors[name] != nil }

    public func tensor(_ name: String) throws -> TensorSlice {
        guard let slice = tensors[name] else {
            throw DroptraceError("missing tensor '\(name)'", path: directory.path)
        }
        return slice
    }

    /// A tensor whose shape must be `shape`, as the config implies.
    public func tensor(_ name: String, shape: [Int]) throws -> TensorSlice {
        let slice = try tensor(name)
        guard slice.shape == shape else {
            throw DroptraceError(
                "tensor '\(name)' has shape \(slice.shape) but config.json implies \(shape)", path: slice.path)
        }
        return slice
    }

    /// Decodes config.json into an architecture's configuration type.
    public func decodeConfig<Config: Decodable>(_ type: Config.Type) throws -> Config {
        do {
            return try JSONDecoder().decode(type, from: configData)
        } catch let DecodingError.keyNotFound(key, _) {
            throw DroptraceError("missing key \"\(key.stringValue)\" for model_type \(modelType)", path: configURL.path)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw DroptraceError("key \"\(key)\" has the wrong type", path: configURL.path)
        } catch let DecodingError.dataCorrupted(context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw DroptraceError("invalid value at \"\(key)\": \(context.debugDescription)", path: configURL.path)
        } catch {
            throw DroptraceError("cannot read: \(error)", path: configURL.path)
        }
    }
}

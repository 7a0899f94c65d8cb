import CheckpointIO
import DroptraceSupport
import Foundation

/// A checkpoint of a training run, as found on disk.
public struct DiscoveredCheckpoint: Sendable, Equatable {
    public var name: String
    public var directory: URL
    /// Training step, −1 when unknown.
    public var step: Int64
    /// Tokens seen in training, −1 when unknown.
    public var tokens: Int64
}

/// Finds the checkpoints of a training run and tells finished ones from
/// ones still being written.
public enum CheckpointDiscovery {
    public struct Result: Sendable {
        public var ready: [DiscoveredCheckpoint]
        /// Checkpoints skipped for now, with the reason; a later run picks them up.
        public var incomplete: [(name: String, reason: String)]
    }

    /// Subdirectories of `seriesDirectory` named like checkpoints
    /// (`checkpoint-<step>`, `step<N>`, `global_step<N>`, …), ordered by step.
    public static func scan(_ seriesDirectory: URL) throws -> Result {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: seriesDirectory.path, isDirectory: &isDirectory),
              isDirectory.boolValue
        else {
            throw DroptraceError("series directory not found", path: seriesDirectory.path)
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: seriesDirectory.path)
            .filter { CheckpointName.step($0) != nil }
        return inspect(names.map { seriesDirectory.appendingPathComponent($0) })
    }

    /// An explicit list of checkpoint directories, in step order where steps
    /// are known (unknown steps keep their given order, after the known ones).
    public static func inspect(_ directories: [URL]) -> Result {
        var ready: [DiscoveredCheckpoint] = []
        var incomplete: [(String, String)] = []
        for directory in directories {
            let name = directory.standardizedFileURL.lastPathComponent
            if let reason = incompleteness(of: directory) {
                incomplete.append((name, reason))
                continue
            }
            let state = TrainerState(directory: directory)
            ready.append(DiscoveredCheckpoint(
                name: name, directory: directory,
                step: state?.globalStep ?? CheckpointName.step(name) ?? -1,
                tokens: state?.tokensSeen ?? CheckpointName.tokens(name) ?? -1))
        }
        let ordered = ready.enumerated().sorted { a, b in
            let (x, y) = (a.element.step < 0 ? Int64.max : a.element.step, b.element.step < 0 ? Int64.max : b.element.step)
            return x != y ? x < y : a.offset < b.offset
        }.map(\.element)
        return Result(ready: ordered, incomplete: incomplete.sorted { $0.0 < $1.0 })
    }

    /// Why `directory` is not a finished checkpoint yet, or nil when it is.
    /// The weight files are the ones `CheckpointLayout` would open; each must
    /// be as long as its own header (or zip directory) says.
    static func incompleteness(of directory: URL) -> String? {
        let layout: CheckpointLayout
        do {
            layout = try CheckpointLayout.resolve(directory)
        } catch let error as DroptraceError {
            return error.message
        } catch {
            return "\(error)"
        }
        // A GGUF file carries its own configuration: no config.json to wait for.
        if layout.format != .gguf,
           !FileManager.default.fileExists(atPath: directory.appendingPathComponent("config.json").path) {
            return "no config.json yet"
        }
        for file in layout.weightFiles {
            let name = file.lastPathComponent
            let expected: Int?
            switch layout.format {
            case .safetensors: expected = SafetensorsFile.expectedLength(path: file.path)
            case .pytorch: expected = TorchCheckpointFile.expectedLength(path: file.path)
            case .gguf: expected = GGUFCheckpoint.expectedLength(path: file.path)
            }
            guard let expected else {
                return layout.format == .pytorch
                    ? "\(name) is not complete yet (it ends before its zip directory or last storage)"
                    : "\(name) has an incomplete header"
            }
            let size = ((try? FileManager.default.attributesOfItem(atPath: file.path))?[.size] as? NSNumber)?.intValue ?? 0
            if size < expected { return "\(name) has \(size) of \(expected) bytes" }
        }
        return nil
    }
}

/// The parts of the Trainer's trainer_state.json droptrace uses.
struct TrainerState {
    var globalStep: Int64?
    var tokensSeen: Int64?

    init?(directory: URL) {
        guard let data = try? RegularFile.contents(path: directory.appendingPathComponent("trainer_state.json").path, limit: 1 << 26),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return nil }
        globalStep = (object["global_step"] as? NSNumber)?.int64Value
        // Recent transformers keep the count at the top level; older ones only in log_history.
        let history = (object["log_history"] as? [[String: Any]]) ?? []
        let seen = (object["num_input_tokens_seen"] as? NSNumber)?.int64Value
            ?? history.compactMap { ($0["num_input_tokens_seen"] as? NSNumber)?.int64Value }.last
        tokensSeen = seen.flatMap { $0 > 0 ? $0 : nil }
    }
}

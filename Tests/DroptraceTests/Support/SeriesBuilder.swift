import CheckpointIO
import Foundation

/// Builds checkpoint series on disk from the fixture models.
struct SeriesBuilder {
    let directory: URL

    init(in scratch: ScratchDirectory, name: String = "series") throws {
        directory = scratch.path(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// Adds `checkpoint-<step>` as a copy of fixture `model`, optionally with
    /// a Trainer state recording the tokens seen.
    @discardableResult
    func add(step: Int, model: String = "llama-f32", name: String? = nil, tokensSeen: Int? = nil) throws -> URL {
        let destination = directory.appendingPathComponent(name ?? "checkpoint-\(step)")
        try FileManager.default.copyItem(at: FixtureFiles.model(model), to: destination)
        if let tokensSeen {
            let state: [String: Any] = ["global_step": step, "num_input_tokens_seen": tokensSeen, "log_history": []]
            try JSONSerialization.data(withJSONObject: state).write(to: destination.appendingPathComponent("trainer_state.json"))
        }
        return destination
    }

    /// Which dimension of a tensor `widen` pads.
    enum Widened { case rows, columns }

    /// Rewrites a checkpoint as a wider model computing the same function:
    /// config.json's `key` from `old` to `new`, and each tensor `along`
    /// names (nil: kept) padded with zeros from `old` to `new` rows (the
    /// first dimension) or columns (the last).
    func widen(_ checkpoint: URL, key: String, from old: Int, to new: Int, along: (String) -> Widened?) throws {
        let weights = checkpoint.appendingPathComponent("model.safetensors")
        let entries = try SafetensorsFile(path: weights.path).tensors.values.map { slice in
            guard let widened = along(slice.name) else {
                return SafetensorsWriter.Entry(name: slice.name, shape: slice.shape) { try slice.floats() }
            }
            var shape = slice.shape
            let axis = widened == .rows ? 0 : shape.count - 1
            shape[axis] = new
            return SafetensorsWriter.Entry(name: slice.name, shape: shape) {
                let values = try slice.floats()
                if widened == .rows { return values + [Float](repeating: 0, count: values.count / old * (new - old)) }
                return stride(from: 0, to: values.count, by: old).flatMap {
                    Array(values[$0..<$0 + old]) + [Float](repeating: 0, count: new - old)
                }
            }
        }
        try SafetensorsWriter.write(entries, to: weights)
        let config = checkpoint.appendingPathComponent("config.json")
        try String(contentsOf: config, encoding: .utf8).replacingOccurrences(of: "\"\(key)\": \(old)", with: "\"\(key)\": \(new)")
            .write(to: config, atomically: true, encoding: .utf8)
    }

    /// Rewrites a checkpoint's weights with layer i holding what layer
    /// (i + 1) mod `layers` held: another model of the same shape, whose
    /// importances (and drop sets) are those of the old layers moved.
    func rotateLayers(of checkpoint: URL, layers: Int) throws {
        let url = checkpoint.appendingPathComponent("model.safetensors")
        let entries = try SafetensorsFile(path: url.path).tensors.map { name, slice in
            let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard let at = parts.firstIndex(of: "layers"), at + 1 < parts.count, let layer = Int(parts[at + 1]) else {
                return SafetensorsWriter.Entry(slice)
            }
            var moved = parts
            moved[at + 1] = String((layer + layers - 1) % layers)
            return SafetensorsWriter.Entry(slice, renamedTo: moved.joined(separator: "."))
        }
        try SafetensorsWriter.encode(entries).write(to: url, options: .atomic)
    }

    func swapWeights(of checkpoint: URL, withThoseOf model: String) throws {
        let target = checkpoint.appendingPathComponent("model.safetensors")
        try FileManager.default.removeItem(at: target)
        try FileManager.default.copyItem(at: FixtureFiles.model(model).appendingPathComponent("model.safetensors"), to: target)
    }
}

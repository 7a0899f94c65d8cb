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

    /// Replaces a checkpoint's weights with another fixture's, so a rescore
    /// would change its row.
    func swapWeights(of checkpoint: URL, withThoseOf model: String) throws {
        let target = checkpoint.appendingPathComponent("model.safetensors")
        try FileManager.default.removeItem(at: target)
        try FileManager.default.copyItem(at: FixtureFiles.model(model).appendingPathComponent("model.safetensors"), to: target)
    }
}

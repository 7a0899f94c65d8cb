import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation

/// Writes a dropped model as a checkpoint directory people can load.
///
/// - Attention / MLP drops: the same layers, minus the dropped modules'
///   tensors (norms included), with LLM-Drop's `drop_attn_list` /
///   `drop_mlp_list` in config.json.
/// - Block drops: a plain Hugging Face checkpoint with the blocks removed,
///   the remaining layers renumbered and the layer count updated, which
///   transformers loads as it is.
public enum DroppedModelExport {
    /// Files of a training checkpoint that do not describe the model.
    static let trainingState: Set<String> = [
        "optimizer.pt", "scheduler.pt", "training_args.bin", "trainer_state.json", "rng_state.pth",
    ]

    public static func write(model: any LanguageModel, plan requested: DropPlan, to directory: URL) throws {
        let files = FileManager.default
        if let existing = try? files.contentsOfDirectory(atPath: directory.path), !existing.isEmpty {
            throw DroptraceError("export directory exists and is not empty; choose a new one", path: directory.path)
        }
        let plan = requested.union(model.configuredDrops)
        let naming = model.layerNaming
        let staging = directory.deletingLastPathComponent()
            .appendingPathComponent(".\(directory.lastPathComponent).tmp-\(getpid())")
        try? files.removeItem(at: staging)
        do {
            try files.createDirectory(at: staging, withIntermediateDirectories: true)
            let renumber = Renumbering(removing: plan.blocks, layers: model.layerCount)
            var entries: [SafetensorsWriter.Entry] = []
            for name in model.checkpoint.tensorNames {
                guard let newName = exportedName(name, plan: plan, naming: naming, renumber: renumber) else { continue }
                entries.append(SafetensorsWriter.Entry(try model.checkpoint.tensor(name), renamedTo: newName))
            }
            try SafetensorsWriter.write(entries, to: staging.appendingPathComponent(Checkpoint.singleFileName))
            try exportedConfig(model.checkpoint, plan: plan, naming: naming, renumber: renumber)
                .write(to: staging.appendingPathComponent("config.json"))
            // A GGUF file's companions are inside it; the files beside it belong to something else.
            if model.checkpoint.gguf == nil {
                try copyCompanionFiles(from: model.checkpoint.directory, to: staging)
            }
            if files.fileExists(atPath: directory.path) { try files.removeItem(at: directory) }
            try files.moveItem(at: staging, to: directory)
        } catch {
            try? files.removeItem(at: staging)
            if let error = error as? DroptraceError { throw error }
            throw DroptraceError("cannot write the export: \(SystemError.summary(of: error))", path: directory.path)
        }
    }

    /// Layer indices after removing blocks.
    struct Renumbering {
        let mapping: [Int: Int]
        init(removing blocks: Set<Int>, layers: Int) {
            var mapping: [Int: Int] = [:]
            for layer in 0..<layers where !blocks.contains(layer) { mapping[layer] = mapping.count }
            self.mapping = mapping
        }
        var remaining: Int { mapping.count }
    }

    /// The tensor's name in the export, or nil when its module is dropped.
    static func exportedName(_ name: String, plan: DropPlan, naming: LayerNaming, renumber: Renumbering) -> String? {
        guard let (layer, rest) = naming.split(name) else { return name }
        guard let newLayer = renumber.mapping[layer] else { return nil }
        if plan.attention.contains(layer), naming.attention.contains(where: rest.hasPrefix) { return nil }
        if plan.mlp.contains(layer), naming.mlp.contains(where: rest.hasPrefix) { return nil }
        return "\(naming.prefix)\(newLayer).\(rest)"
    }

    static func exportedConfig(
        _ checkpoint: Checkpoint, plan: DropPlan, naming: LayerNaming, renumber: Renumbering
    ) throws -> Data {
        guard var config = try JSONSerialization.jsonObject(with: checkpoint.configData) as? [String: Any] else {
            throw DroptraceError("not a JSON object", path: checkpoint.configURL.path)
        }
        if !plan.blocks.isEmpty {
            for key in naming.layerCountKeys where config[key] != nil { config[key] = renumber.remaining }
            // Configs that leave layer_types to a rule (even layers slide in
            // Gemma-2) get it spelled out, or renumbering would move windows.
            if let types = (config["layer_types"] as? [Any]) ?? naming.layerTypes?.map({ $0 as Any }) {
                config["layer_types"] = types.enumerated().filter { renumber.mapping[$0.offset] != nil }.map(\.element)
            }
        }
        let attention = plan.attention.compactMap { renumber.mapping[$0] }.sorted()
        let mlp = plan.mlp.compactMap { renumber.mapping[$0] }.sorted()
        config[DropPlan.attentionKey] = attention.isEmpty ? nil : attention
        config[DropPlan.mlpKey] = mlp.isEmpty ? nil : mlp
        return try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
    }

    /// Tokenizer and generation files travel with the weights.
    static func copyCompanionFiles(from source: URL, to destination: URL) throws {
        for name in try FileManager.default.contentsOfDirectory(atPath: source.path) {
            let isWeights = CheckpointLayout.format(ofFile: URL(fileURLWithPath: name)) != nil
                || [CheckpointLayout.safetensorsIndex, CheckpointLayout.pytorchIndex].contains(name)
            if isWeights || name == "config.json" || trainingState.contains(name) || name.hasPrefix("rng_state") { continue }
            var isDirectory: ObjCBool = false
            let path = source.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: path.path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            try FileManager.default.copyItem(at: path, to: destination.appendingPathComponent(name))
        }
    }
}

import DroptraceSupport
import Foundation

/// The on-disk formats droptrace reads weights from.
public enum WeightFormat: String, Sendable {
    /// `model.safetensors`, or shards listed in `model.safetensors.index.json`.
    case safetensors
    /// torch.save's `pytorch_model.bin`, or shards listed in `pytorch_model.bin.index.json`.
    case pytorch
    /// One llama.cpp GGUF file, which carries its own configuration and tokenizer.
    case gguf
}

/// Where a checkpoint's weights and configuration are: the files behind a
/// directory (the Hugging Face layouts) or a single weight file.
public struct CheckpointLayout: Sendable {
    public var format: WeightFormat
    /// The weight files, in the order they are opened.
    public var weightFiles: [URL]
    /// The folder holding config.json, tokenizer.json and the other companions.
    public var directory: URL

    public static let safetensorsFile = "model.safetensors"
    public static let safetensorsIndex = "model.safetensors.index.json"
    public static let pytorchFile = "pytorch_model.bin"
    public static let pytorchIndex = "pytorch_model.bin.index.json"

    /// Resolves a directory or a single weight file (`.safetensors`, `.bin`, `.gguf`).
    public static func resolve(_ location: URL) throws -> CheckpointLayout {
        let path = location.path
        switch PathKind.of(path) {
        case .missing: throw DroptraceError("checkpoint not found", path: path)
        case .other:
            // An Ollama blob (sha256-<digest>) is a GGUF file without the extension.
            guard let format = format(ofFile: location) ?? (startsLikeGGUF(location) ? .gguf : nil) else {
                throw DroptraceError("not a checkpoint: expected a directory or a .safetensors, .bin or .gguf file", path: path)
            }
            if let parts = shardCount(location.lastPathComponent), parts > 1, format != .gguf {
                throw DroptraceError(
                    "is one of \(parts) shards of a checkpoint, not a model: give the checkpoint's directory", path: path)
            }
            return CheckpointLayout(format: format, weightFiles: [location], directory: location.deletingLastPathComponent())
        case .directory: break
        }
        func file(_ name: String) -> URL { location.appendingPathComponent(name) }
        func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: file(name).path) }
        // With or without the model's weights beside it, a PEFT adapter is part of the model transformers loads.
        if let adapter = UnreadableCheckpointFormat.peftAdapter(location) { throw DroptraceError(adapter, path: path) }
        if let named = try namedWeights(in: location) {
            let url = location.appendingPathComponent(named)
            // transformers joins an index's shard names to the checkpoint directory, wherever the index is.
            let weightFiles = named.hasSuffix(".index.json") ? try shards(index: url, folder: location) : [url]
            return CheckpointLayout(format: .safetensors, weightFiles: weightFiles, directory: location)
        }
        // transformers' order (`_get_resolved_checkpoint_files`): a single
        // file before an index, so the index a sharded save leaves behind
        // when the model is saved again unsharded is ignored, as it ignores it.
        if exists(safetensorsFile) {
            return CheckpointLayout(format: .safetensors, weightFiles: [file(safetensorsFile)], directory: location)
        }
        if exists(safetensorsIndex) {
            return CheckpointLayout(format: .safetensors, weightFiles: try shards(index: file(safetensorsIndex)), directory: location)
        }
        if exists(pytorchFile) {
            return CheckpointLayout(format: .pytorch, weightFiles: [file(pytorchFile)], directory: location)
        }
        if exists(pytorchIndex) {
            return CheckpointLayout(format: .pytorch, weightFiles: try shards(index: file(pytorchIndex)), directory: location)
        }
        let ggufFiles = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
            .filter { $0.lowercased().hasSuffix(".gguf") }.sorted()
        if ggufFiles.count == 1 {
            return CheckpointLayout(format: .gguf, weightFiles: [file(ggufFiles[0])], directory: location)
        }
        if ggufFiles.count > 1 {
            throw DroptraceError(
                "the directory holds \(ggufFiles.count) .gguf files (\(ggufFiles.joined(separator: ", "))); pass the one to read",
                path: path)
        }
        if let unreadable = UnreadableCheckpointFormat.diagnose(location) {
            throw DroptraceError(unreadable, path: path)
        }
        // A series directory given where one checkpoint is expected.
        let checkpoints = CheckpointName.entries(in: location)
        let series = checkpoints.isEmpty ? ""
            : "; it holds checkpoint directories (\(checkpoints.shownInMessage(atMost: 2))): "
                + "`droptrace trace` scores a series, `score` one of them"
        throw DroptraceError(
            "no weights in the checkpoint directory (looked for \(safetensorsFile), \(safetensorsIndex), \(pytorchFile), \(pytorchIndex), *.gguf)"
                + series,
            path: path)
    }

    /// Whether `directory` holds no file weights are read from: no
    /// `.safetensors` or `.gguf` file, no `pytorch_model*.bin`, no index.
    /// A checkpoint whose weights were deleted (to free space, or by a
    /// rotation cut short) looks like this; one with bad weight files does not.
    public static func holdsNoWeights(_ directory: URL) -> Bool {
        !((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).contains(where: isWeightFileName)
    }

    /// Whether a file of this name holds (or indexes) weights: `.safetensors`,
    /// `.gguf`, `pytorch_model*.bin`, an `.index.json`.
    static func isWeightFileName(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower.hasSuffix(".safetensors") || lower.hasSuffix(".gguf") || lower.hasSuffix(".index.json")
            || (name.hasPrefix("pytorch_model") && lower.hasSuffix(".bin"))
    }

    /// config.json's `transformers_weights`: the weight file (or safetensors
    /// index) transformers loads instead of looking for the usual names,
    /// which conversions keeping several weight files in one folder set.
    /// Nil when config.json is absent, unreadable (reported where it is
    /// decoded) or does not set it.
    /// - Throws: `DroptraceError` naming config.json when the name is not a
    ///   `.safetensors` / `.safetensors.index.json` path inside the folder
    ///   (transformers refuses those too) or the file is missing.
    static func namedWeights(in directory: URL) throws -> String? {
        let config = directory.appendingPathComponent("config.json")
        guard let data = try? RegularFile.contents(path: config.path, limit: Checkpoint.configSizeLimit),
              let value = (try? JSONValue.parse([UInt8](data)))?.member(weightsKey)
        else { return nil }
        if case .null = value { return nil }
        guard case .string(let name) = value, name.hasSuffix(".safetensors") || name.hasSuffix(".safetensors.index.json") else {
            throw DroptraceError(
                "\(weightsKey) must name a .safetensors file or a .safetensors.index.json index, got \(ConfigValueKinds.spelled(value).forErrorMessage)",
                path: config.path)
        }
        let components = name.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !name.hasPrefix("/"), components.allSatisfy(isPlainFileName) else {
            throw DroptraceError(
                "\(weightsKey) \"\(name.forErrorMessage)\" is not a file inside the checkpoint directory", path: config.path)
        }
        guard FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path) else {
            throw DroptraceError("\(weightsKey) names \"\(name.forErrorMessage)\", which is missing", path: config.path)
        }
        return name
    }

    public static let weightsKey = "transformers_weights"

    /// N of a shard named as transformers names them, `<name>-<i>-of-<N>.<extension>`.
    public static func shardCount(_ name: String) -> Int? {
        func isDigit(_ character: Character) -> Bool { ("0"..."9").contains(character) }
        let stem = (name as NSString).deletingPathExtension
        guard let range = stem.range(of: "-of-", options: .backwards), stem[..<range.lowerBound].last.map(isDigit) == true
        else { return nil }
        let count = stem[range.upperBound...]
        return !count.isEmpty && count.allSatisfy(isDigit) ? Int(count) : nil
    }

    /// What a checkpoint given as `location` is: a directory is itself, and so
    /// is a GGUF file (its configuration inside); a `.safetensors` or `.bin`
    /// file is its directory's, whose config.json it needs. A row is named by
    /// it, and an export may not lie inside it.
    public static func home(of location: URL) -> URL {
        guard PathKind.of(location) == .other, format(ofFile: location) != .gguf, !startsLikeGGUF(location) else {
            return location
        }
        return location.deletingLastPathComponent()
    }

    /// Whether the file is a regular file beginning with GGUF's magic (a FIFO is never waited on).
    static func startsLikeGGUF(_ url: URL) -> Bool {
        (try? RegularFile(path: url.path).bytes(4, at: 0)) == Array("GGUF".utf8)
    }

    /// A single file's format, by its extension.
    public static func format(ofFile url: URL) -> WeightFormat? {
        switch url.pathExtension.lowercased() {
        case "safetensors": .safetensors
        case "bin", "pt", "pth": .pytorch
        case "gguf": .gguf
        default: nil
        }
    }

    /// The shard files a Hugging Face index names, each checked to be a plain
    /// file name in the index's folder (no `/`, `..` or absolute path, so an
    /// index cannot point outside the checkpoint) and to exist. Names appear in
    /// errors only escaped. A shard may be a symlink: the Hugging Face hub cache
    /// stores every snapshot file as one, pointing into its `blobs/` folder.
    /// - Parameter folder: where the shards are, by default the index's folder.
    public static func shards(index: URL, folder: URL? = nil) throws -> [URL] {
        let folder = folder ?? index.deletingLastPathComponent()
        let names = try shardNames(index: index)
        for name in names {
            guard FileManager.default.fileExists(atPath: folder.appendingPathComponent(name).path) else {
                throw DroptraceError("shard \"\(name.forErrorMessage)\" named in the index is missing", path: index.path)
            }
        }
        return names.map { folder.appendingPathComponent($0) }
    }

    /// What is wrong with a shard index of `directory` that waiting cannot
    /// cure: its JSON is complete but it names no usable shards (no
    /// `weight_map`, no `metadata`, a name outside the directory). Nil when
    /// there is none, it is valid, or its JSON is cut short (still being written).
    public static func indexDefect(in directory: URL) -> String? {
        var candidates = [safetensorsIndex, pytorchIndex]
        if let named = try? namedWeights(in: directory), named.hasSuffix(".index.json") { candidates.insert(named, at: 0) }
        for name in candidates {
            let index = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: index.path), !Checkpoint.configIsCutShort(index) else { continue }
            do { _ = try shardNames(index: index) } catch { return "\(name): \((error as? DroptraceError)?.message ?? "\(error)")" }
        }
        return nil
    }

    /// The shard file names `index` gives, checked as names (the files themselves may not exist yet).
    static func shardNames(index: URL) throws -> [String] {
        let data = try RegularFile.contents(path: index.path, limit: indexSizeLimit)
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw DroptraceError("not valid JSON: \(SystemError.summary(of: error))", path: index.path)
        }
        guard let object = parsed as? [String: Any], let weightMap = object["weight_map"] as? [String: String] else {
            throw DroptraceError("not a valid shard index (needs a \"weight_map\" object of file names)", path: index.path)
        }
        // transformers' get_checkpoint_shard_files adds the weight names to index["metadata"].
        guard object["metadata"] is [String: Any] else {
            throw DroptraceError(
                "shard index has no \"metadata\" object (transformers' from_pretrained cannot load it; it writes {\"total_size\": …})",
                path: index.path)
        }
        // `./model-00001-of-00002.safetensors` is the file beside the index, as transformers joins it.
        let names = Set(weightMap.values.map(withoutCurrentDirectoryPrefix)).sorted()
        guard !names.isEmpty else {
            throw DroptraceError("shard index names no shard files", path: index.path)
        }
        if let name = names.first(where: { !isPlainFileName($0) }) {
            throw DroptraceError(
                "shard name \"\(name.forErrorMessage)\" in the index is not a file name in the checkpoint directory", path: index.path)
        }
        // config.json, a tokenizer's or the index itself: JSON, which no weight loader reads (it was
        // opened as a shard, and the error blamed that file for a header "past its end").
        if let name = names.first(where: { $0.lowercased().hasSuffix(".json") }) {
            throw DroptraceError(
                "shard name \"\(name.forErrorMessage)\" in the index is a JSON file of the checkpoint, not a weight shard", path: index.path)
        }
        return names
    }

    /// Indexes of the largest models are a few hundred kilobytes.
    static let indexSizeLimit = 1 << 26

    private static func withoutCurrentDirectoryPrefix(_ name: String) -> String {
        var name = Substring(name)
        while name.hasPrefix("./") { name = name.dropFirst(2) }
        return String(name)
    }

    /// A single path component: not empty, `.` or `..`, without `/` or NUL.
    static func isPlainFileName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && !name.contains("/") && !name.unicodeScalars.contains("\0")
    }
}

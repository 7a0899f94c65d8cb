import DroptraceSupport
import Foundation

/// A checkpoint: config.json plus the weights, in any layout `CheckpointLayout`
/// resolves (safetensors or PyTorch .bin, single or sharded; one GGUF file,
/// which carries its configuration inside).
///
/// All weight files are opened (their headers read and validated) up front,
/// so a truncated or corrupt checkpoint fails before any work is done; tensor
/// data is read when a layer expands it.
public final class Checkpoint: @unchecked Sendable {
    /// The folder holding the companions (tokenizer.json, ...): the checkpoint
    /// directory, or the folder of a single weight file.
    public let directory: URL
    public let layout: CheckpointLayout
    /// config.json, or the GGUF file whose metadata stands in for it.
    public let configURL: URL
    /// The raw bytes of config.json; each architecture decodes its own view.
    public let configData: Data
    /// `configData` as parsed (`JSONValue`: integers told apart from floats,
    /// `48` from `48.0`, and members in file order), read once.
    public let configDocument: JSONValue
    /// config.json as the families decode it: `configData` with the config
    /// class's aliases read as the keys they stand for and the defaults of
    /// keys configs omit (`ConfigValueKinds.decodable`); `configKeysWrittenAs`
    /// maps each key added for an alias to the alias the file holds (dotted
    /// paths for a section's, `text_config.n_routed_experts`), for messages.
    let decodedConfigData: Data
    let configKeysWrittenAs: [String: String]
    /// The aliases of each sub-config's class, by the sub-config's dotted
    /// path (`ConfigValueKinds.sectionAliases`), read by `configObject`.
    let sectionAliases: [String: [String: String]]
    public let modelType: String
    /// The GGUF file itself, when the checkpoint is one (its tokenizer lives there).
    public let gguf: GGUFCheckpoint?
    private let tensors: [String: TensorSlice]
    /// Tensors of dtypes droptrace does not expand (masks, `position_ids`): their dtype and file.
    private let otherTensors: [String: (dtype: String, path: String)]
    /// Those of `otherTensors` a dequantiser reads (U8, F8_E4M3, F8_E5M2).
    private let scaledTensors: [String: TensorSlice]
    /// The stored name of each tensor read under another name
    /// (`TensorRenamings`: transformers' renaming of some model types).
    private let storedNames: [String: String]
    /// Names asked of `tensor(_:)` and `storedTensor(_:)` so far, and the
    /// layer prefixes found fully read (see `requireLayerRead(_:)`).
    private var readNames: Set<String> = []
    private var layersRead: Set<String> = []
    private let readLock = NSLock()

    public static let singleFileName = CheckpointLayout.safetensorsFile
    public static let indexFileName = CheckpointLayout.safetensorsIndex

    public convenience init(directory: URL) throws {
        try self.init(location: directory)
    }

    /// Opens a checkpoint directory or a single weight file.
    public init(location: URL) throws {
        layout = try CheckpointLayout.resolve(location)
        directory = layout.directory

        var tensors: [String: TensorSlice] = [:]
        var otherTensors: [String: (dtype: String, path: String)] = [:]
        var scaledTensors: [String: TensorSlice] = [:]
        var gguf: GGUFCheckpoint?
        // The shard each tensor name was found in: a name stored in two shards
        // is refused, since which copy is read would depend on the shards'
        // order (transformers keeps whichever shard it loads last).
        var shardOf: [String: String] = [:]
        for file in layout.weightFiles {
            let found: [String: TensorSlice]
            var others: [String: String] = [:]
            switch layout.format {
            case .safetensors:
                let opened = try SafetensorsFile(path: file.path)
                found = opened.tensors
                others = opened.otherTensors
                scaledTensors.merge(opened.scaledTensors) { first, _ in first }
            case .pytorch:
                let opened = try TorchCheckpointFile(path: file.path)
                found = opened.tensors
                others = opened.otherTensors
            case .gguf:
                let opened = try GGUFCheckpoint(path: file.path)
                gguf = opened
                found = opened.tensors
            }
            if layout.weightFiles.count > 1 {
                for name in Array(found.keys) + Array(others.keys) {
                    if let first = shardOf.updateValue(file.path, forKey: name) {
                        throw DroptraceError(
                            "tensor '\(name.forErrorMessage)' is stored both here and in \((first as NSString).lastPathComponent.forErrorMessage); each tensor of a sharded checkpoint belongs in one shard",
                            path: file.path)
                    }
                }
            }
            otherTensors.merge(others.mapValues { ($0, file.path) }) { first, _ in first }
            tensors.merge(found) { first, _ in first }
        }
        if gguf == nil, let problem = Self.placeholderProblem(tensors.values.map(\.shape), others: otherTensors.count) {
            throw DroptraceError(problem, path: layout.weightFiles.count == 1 ? layout.weightFiles[0].path : directory.path)
        }
        self.gguf = gguf

        if let gguf {
            configURL = URL(fileURLWithPath: gguf.path)
            configData = gguf.configData
        } else {
            configURL = directory.appendingPathComponent("config.json")
            guard FileManager.default.fileExists(atPath: configURL.path) else {
                throw DroptraceError("missing config.json beside the weights", path: configURL.path)
            }
            configData = try RegularFile.contents(path: configURL.path, limit: Self.configSizeLimit)
        }
        let untagged = Self.untaggedFloats(configData)
        let document = try Self.configDocument(untagged, path: configURL.path, keysOnce: gguf == nil)
        configDocument = document
        guard case .string(let type)? = document.member("model_type") else {
            throw DroptraceError("no \"model_type\" key", path: configURL.path)
        }
        modelType = type
        let (decoded, writtenAs) = ConfigValueKinds.decodable(Self.finiteSpelling(untagged), document: document, modelType: type)
        decodedConfigData = decoded
        let sections = ConfigValueKinds.sectionAliases(document, modelType: type)
        sectionAliases = sections.aliases
        configKeysWrittenAs = writtenAs.merging(sections.writtenAs, uniquingKeysWith: { top, _ in top })

        let others = otherTensors.filter { tensors[$0.key] == nil }
        let storedNames = gguf != nil ? nil
            : try TensorRenamings.storedNames(of: Array(tensors.keys) + Array(others.keys), modelType: type, path: directory.path)
        let renamed = Dictionary(uniqueKeysWithValues: (storedNames ?? [:]).map { ($0.value, $0.key) })
        func renaming<Value>(_ byName: [String: Value]) -> [String: Value] {
            renamed.isEmpty ? byName : Dictionary(uniqueKeysWithValues: byName.map { (renamed[$0.key] ?? $0.key, $0.value) })
        }
        self.storedNames = storedNames ?? [:]
        self.tensors = renaming(tensors)
        self.otherTensors = renaming(others)
        self.scaledTensors = renaming(scaledTensors.filter { others[$0.key]?.path == $0.value.path })
    }

    /// What weight files holding no weights hold, one sentence; nil when
    /// some tensor of `shapes` (the float tensors' shapes) has elements.
    /// DeepSpeed ZeRO-3 saves each parameter as an empty placeholder, or
    /// saves no state dict at all, unless the weights are gathered first.
    static func placeholderProblem(_ shapes: [[Int]], others: Int) -> String? {
        let gather = "as DeepSpeed ZeRO-3 saves a model without gathering its weights; save it with "
            + "`stage3_gather_16bit_weights_on_model_save: true`, or consolidate the ZeRO shards with zero_to_fp32.py"
        if shapes.isEmpty, others == 0 { return "holds no tensors (an empty state dict), " + gather }
        guard !shapes.isEmpty, shapes.allSatisfy({ $0.contains(0) }) else { return nil }
        return "every tensor is empty (shape \(shapes[0]) and the like): placeholders, " + gather
    }

    /// config.json's top-level object, read as strictly as Python's json
    /// reads it (no byte-order mark, no UTF-16), with each key once when
    /// `keysOnce` (a GGUF file's derived config has no text of its own):
    /// Python keeps a repeated key's last value, Foundation its first, and
    /// which was meant is not for droptrace to guess. NaN, Infinity and
    /// 1e400, which Python takes, fit no setting but the bounds of
    /// `infiniteBoundKeys`; the error names their key.
    /// - Throws: `DroptraceError` naming `path`.
    static func configDocument(_ data: Data, path: String, keysOnce: Bool) throws -> JSONValue {
        func invalid(_ detail: String?) -> DroptraceError {
            let detail = ConfigNumbers.nonFiniteMember(in: data) ?? detail
            return DroptraceError("not valid JSON" + (detail.map { " (\($0))" } ?? ""), path: path)
        }
        let document: JSONValue
        do {
            document = try JSONValue.parse([UInt8](data), allowingNonFinite: true)
        } catch {
            throw invalid("byte \(error.offset): \(error.reason)")
        }
        if keysOnce, let repeated = document.repeatedKey() {
            throw DroptraceError("key \"\(repeated)\" is given twice", path: path)
        }
        guard case .object = document else { throw DroptraceError("is JSON but not an object of settings", path: path) }
        if let keyPath = nonFiniteNumberPath(document) {
            // Named by its whole path (`attn_config.clip_qkv`), with the number as written where the text shows it.
            let leaf = keyPath.split(separator: ".").last.map { String($0.prefix { $0 != "[" }) } ?? keyPath
            let holds = ConfigNumbers.nonFiniteLiteral(in: data, key: leaf).map { "holds \($0), which is not a finite number" }
                ?? "holds a number that is not finite"
            throw DroptraceError("not valid JSON (key \"\(keyPath)\" \(holds))", path: path)
        }
        return document
    }

    /// Top-level keys whose numbers may be ±Infinity, as Python writes an
    /// unbounded bound (the Mamba-2 configs' `time_step_limit`, (0.0, inf) by default;
    /// NemotronHConfig's legacy `mamba_dt_limit`).
    static let infiniteBoundKeys: Set<String> = ["time_step_limit", "mamba_dt_limit"]
    /// Sections whose own keys of `infiniteBoundKeys` may hold them too: a
    /// wrapper's text config (Nemotron 3 Nano Omni's Nemotron-H, under
    /// `text_config` or its legacy name `llm_config`).
    static let boundedSections: Set<String> = ["text_config", "llm_config"]

    /// The path of the first number of `document` that is not finite, but
    /// the infinite bounds of `infiniteBoundKeys` at the top level or in
    /// `boundedSections`; nil when there is none.
    static func nonFiniteNumberPath(_ document: JSONValue) -> String? {
        guard case .object(let members) = document else { return document.nonFiniteNumberPath() }
        for (key, value) in members {
            let found = boundedSections.contains(key)
                ? value.nonFiniteNumberPath(allowingInfinityIn: infiniteBoundKeys, under: key)
                : JSONValue.object([(key, value)]).nonFiniteNumberPath(allowingInfinityIn: infiniteBoundKeys)
            if let found { return found }
        }
        return nil
    }

    /// config.json with each float transformers tags as an object,
    /// `{"__float__": "Infinity"}` (also "-Infinity" and "NaN": how
    /// `PreTrainedConfig.to_json_string` writes what JSON has no number
    /// for, and `_decode_special_floats` reads back), written as the bare
    /// literal Python's json writes, so both spellings meet the same rules.
    /// A tag inside a string is escaped (`\"`) and left alone.
    static func untaggedFloats(_ data: Data) -> Data {
        guard let text = String(data: data, encoding: .utf8), text.contains("\"__float__\"") else { return data }
        let untagged = floatTag.stringByReplacingMatches(
            in: text, range: NSRange(text.startIndex..., in: text), withTemplate: "$1")
        return Data(untagged.utf8)
    }

    private static let floatTag = try! NSRegularExpression(
        pattern: #"\{\s*"__float__"\s*:\s*"(Infinity|-Infinity|NaN)"\s*\}"#)

    /// config.json with each `Infinity` outside strings (which only
    /// `infiniteBoundKeys` may hold) spelled 1e308, a number Foundation's
    /// decoder reads, infinite in float32 as the engine uses the bounds.
    static func finiteSpelling(_ data: Data) -> Data {
        let literal = Array("Infinity".utf8)
        var bytes = [UInt8](data), i = 0, inString = false, changed = false
        while i < bytes.count {
            let byte = bytes[i]
            if inString {
                if byte == UInt8(ascii: "\\") { i += 2; continue }
                if byte == UInt8(ascii: "\"") { inString = false }
                i += 1
            } else if byte == UInt8(ascii: "\"") {
                inString = true
                i += 1
            } else if byte == literal[0], i + literal.count <= bytes.count, Array(bytes[i..<(i + literal.count)]) == literal {
                bytes.replaceSubrange(i..<(i + literal.count), with: Array("1e308".utf8))
                changed = true
                i += 5
            } else {
                i += 1
            }
        }
        return changed ? Data(bytes) : data
    }

    /// config.json files are a few kilobytes (a long `quantization_config`
    /// list of modules, some hundreds); this bounds a hostile one, which
    /// takes seconds to read at this size (Foundation writes one out again
    /// to name a number it cannot decode, `ConfigNumbers`: 4 s at 4 MiB).
    static let configSizeLimit = 1 << 22

    /// Whether the config.json at `url` is cut short: empty, or ending
    /// inside its JSON, as while it is copied or saved in place (any text
    /// before the end that is not JSON is another problem).
    public static func configIsCutShort(_ url: URL) -> Bool {
        guard let data = try? RegularFile.contents(path: url.path, limit: configSizeLimit) else { return false }
        do {
            _ = try JSONValue.parse([UInt8](data))
            return false
        } catch {
            return error.offset >= data.count
        }
    }

    /// What a configuration error calls the configuration: config.json, or
    /// the GGUF metadata that stands in for it.
    public var configName: String { gguf == nil ? "config.json" : "the GGUF metadata" }

    /// The name an export writes tensor `name` (as read) under, moved to
    /// `newName` (another layer's index): `newName`, unless transformers'
    /// renaming of the model type (`TensorRenamings`) would read it as
    /// another name (Mistral Large 4's `.experts.` becomes `.mlp.experts.`
    /// again); then the stored name with the layer index `name` has moved
    /// as it moved, when transformers reads that as `newName`.
    public func exportedName(of name: String, movedTo newName: String) -> String {
        guard let stored = storedNames[name], let rules = TensorRenamings.compiled[modelType],
              TensorRenamings.rename(newName, rules) != newName else { return newName }
        let old = name.split(separator: ".", omittingEmptySubsequences: false)
        let new = newName.split(separator: ".", omittingEmptySubsequences: false)
        guard old.count == new.count, let moved = zip(old, new).first(where: { $0.0 != $0.1 }) else {
            return TensorRenamings.rename(stored, rules) == newName ? stored : newName
        }
        var parts = stored.split(separator: ".", omittingEmptySubsequences: false)
        guard Int(moved.0) != nil, let index = parts.firstIndex(of: moved.0) else { return newName }
        parts[index] = moved.1
        let candidate = parts.joined(separator: ".")
        return TensorRenamings.rename(candidate, rules) == newName ? candidate : newName
    }

    /// A tensor as errors name it: a GGUF file's tensor, or one transformers
    /// renames (`TensorRenamings`), by its stored name (which the user can
    /// look up in the file) and the name it is read as (`aside` adds to
    /// that); others as stored.
    func quotedName(_ name: String, aside: String = "") -> String {
        guard let stored = gguf?.ggufName(of: name) ?? storedNames[name] else { return "'\(name)'" }
        return "'\(stored)' (read as '\(name)'\(aside))"
    }

    /// What errors about the weights name: the GGUF file when the checkpoint
    /// is one (weights, configuration and tokenizer all come from it, and the
    /// folder holding it may hold anything else), else the checkpoint directory.
    public var weightsPath: String { gguf?.path ?? directory.path }

    /// The name the weight files store tensor `name` (as droptrace reads
    /// it) under: itself, unless transformers renames it (`TensorRenamings`).
    public func storedName(of name: String) -> String { storedNames[name] ?? name }

    /// The tensors droptrace can expand (floating-point ones), sorted.
    public var tensorNames: [String] { tensors.keys.sorted() }

    /// Every tensor the weight files store, whatever its dtype, sorted.
    public var storedTensorNames: [String] { (Array(tensors.keys) + otherTensors.keys).sorted() }

    /// Whether the checkpoint stores `name`, in any dtype (so that a buffer of
    /// another dtype under a weight's name is an error, never a fallback).
    public func hasTensor(_ name: String) -> Bool { tensors[name] != nil || otherTensors[name] != nil }

    /// Throws when the tensor is missing or of a dtype droptrace does not read
    /// as weights (BOOL, integers, F64 in safetensors): such buffers are
    /// ignored unless a model needs them.
    public func tensor(_ name: String) throws -> TensorSlice {
        noteRead(name)
        guard let slice = tensors[name] else {
            if let (dtype, path) = otherTensors[name] {
                throw DroptraceError(
                    "tensor '\(name.forErrorMessage)' has unsupported dtype \(dtype) for weights (droptrace reads F32, F16 and BF16; buffers of other dtypes are ignored unless the model needs them)",
                    path: path)
            }
            throw DroptraceError("missing tensor \(quotedName(name))" + whyMissing(name), path: weightsPath)
        }
        return slice
    }

    /// Why weight `name` is missing when the file stores the layer in another
    /// form: a PEFT model saved without merging its adapters keeps
    /// `<layer>.base_layer.weight` beside `lora_A` / `lora_B` matrices
    /// (transformers leaves such a layer randomly initialised; the base weight
    /// alone would drop the adapter), and a module it trains whole
    /// (`modules_to_save`) as `<layer>.original_module.weight` beside
    /// `<layer>.modules_to_save.<adapter>.weight`; GPTQ and AWQ keep packed integers
    /// `<layer>.qweight` with `qzeros` and `scales` (read by their own kernels,
    /// which droptrace does not implement). Empty otherwise.
    public func whyMissing(_ name: String) -> String {
        guard name.hasSuffix(".weight") else { return "" }
        let layer = String(name.dropLast(".weight".count))
        let peftForm = [layer + ".base_layer.weight", layer + ".original_module.weight"].first(where: hasTensor)
            ?? storedTensorNames.first { $0.hasPrefix(layer + ".modules_to_save.") }
        if let peftForm {
            return ": it is stored as '\(peftForm.forErrorMessage)', a PEFT model saved without merging its adapters; "
                + "save the model from PEFT's merge_and_unload() instead"
        }
        if hasTensor(layer + ".qweight") {
            return ": the layer is stored quantised as '\((layer + ".qweight").forErrorMessage)' with qzeros and scales"
                + ", which droptrace does not read (it reads F32, F16 and BF16 weights, FP8 and MXFP4); score the unquantised model"
        }
        return ""
    }

    /// A tensor as stored, also of the dtypes that are not weights by
    /// themselves (U8 MXFP4 blocks and scales, F8_E4M3 / F8_E5M2 weights):
    /// for the dequantisers (`MXFP4.dequantize`, `FP8.dequantize`) and
    /// nothing else. Throws when the tensor is missing or of a dtype droptrace
    /// cannot read at all (BOOL, integers other than U8, F64, ...).
    public func storedTensor(_ name: String) throws -> TensorSlice {
        noteRead(name)
        if let slice = tensors[name] ?? scaledTensors[name] { return slice }
        if let (dtype, path) = otherTensors[name] {
            throw DroptraceError("tensor '\(name.forErrorMessage)' has dtype \(dtype), which droptrace cannot read", path: path)
        }
        throw DroptraceError("missing tensor '\(name)'", path: weightsPath)
    }

    /// The tensors whose names satisfy `included`, as stored, for reading
    /// their bytes ahead (not counted as read by `requireLayerRead(_:)`); nil
    /// when one of them cannot be read as stored.
    public func storedSlices(where included: (String) -> Bool) -> [TensorSlice]? {
        let names = storedTensorNames.filter(included)
        let slices = names.compactMap { tensors[$0] ?? scaledTensors[$0] }
        return slices.count == names.count ? slices : nil
    }

    private func noteRead(_ name: String) {
        readLock.withLock { _ = readNames.insert(name) }
    }

    /// The names of the tensors read so far (as droptrace reads them, after
    /// transformers' renamings), sorted: once a model has run through every
    /// layer, those it computes with.
    public var tensorsRead: [String] { readLock.withLock { readNames }.sorted() }

    /// The layers' tensors read so far and their shapes, one
    /// "<name from the layer index on> <shape>" line each, sorted
    /// ("3.mlp.down_proj.weight [64, 172]"): what a model's layers are made
    /// of, whatever prefix the file puts before the layer index
    /// (`model.layers.`, a wrapper's `model.model.layers.`) and whatever the
    /// dtype. Tensors whose names hold no index (embedding, final norm,
    /// head) are left out. Read once a model has run through every layer.
    public var layerTensorShapes: String {
        let names = readLock.withLock { readNames }
        return names.compactMap { name -> String? in
            let parts = name.split(separator: ".", omittingEmptySubsequences: false)
            guard let index = parts.firstIndex(where: { !$0.isEmpty && $0.utf8.allSatisfy { (48...57).contains($0) } }),
                  let shape = (tensors[name] ?? scaledTensors[name])?.shape
            else { return nil }
            return parts[index...].joined(separator: ".") + " \(shape)"
        }.sorted().joined(separator: "\n")
    }

    /// Throws when a GGUF file holds a tensor named `<layerPrefix>…` (a
    /// layer's, `model.layers.3.`) that building the layer did not read: the
    /// Hugging Face model the metadata describes has no place for it (a bias
    /// in block 3 of a file whose block 0 has none, an MLP bias Qwen3 has no
    /// place for), while llama.cpp refuses it ("wrong number of tensors") or,
    /// where its architecture creates the tensor as optional (llama's output
    /// and down-projection biases), reads it: either way droptrace would
    /// compute another model than llama.cpp does. Call
    /// once the layer was built with nothing dropped. Other formats follow
    /// transformers, which ignores unused tensors. A layer found fully read is
    /// not looked at again (reads only accumulate), so evaluation's many
    /// passes scan the tensors once.
    /// - Throws: `DroptraceError` naming the GGUF file and the tensor as stored.
    public func requireLayerRead(_ layerPrefix: String) throws {
        guard let gguf else { return }
        let unread: Set<String> = readLock.withLock {
            guard !layersRead.contains(layerPrefix) else { return [] }
            let unread = Set(tensors.keys.filter { $0.hasPrefix(layerPrefix) && !readNames.contains($0) }.map { gguf.storedNames[$0] ?? $0 })
            if unread.isEmpty { layersRead.insert(layerPrefix) }
            return unread
        }
        guard let name = unread.min() else { return }
        let more = unread.count - 1
        throw DroptraceError(
            "tensor '\(name.forErrorMessage)'\(more > 0 ? " (and \(more) more of its block)" : "") is not used by the \(modelType) model the metadata describes, "
                + "as transformers builds it; " + GGUFCheckpoint.unusedTensorConsequence,
            path: gguf.path)
    }

    /// Whether a stored tensor of shape `stored` has shape `expected`: the
    /// same sizes, or for GGUF as llama.cpp compares them, where a dimension
    /// of 1 more or less on the outside is the same shape (`GGUFFile.sameShape`).
    public func shape(_ stored: [Int], matches expected: [Int]) -> Bool {
        stored == expected || (gguf != nil && GGUFFile.sameShape(stored, expected))
    }

    /// A tensor whose shape must be `shape`, as the config implies (for
    /// GGUF, as llama.cpp compares shapes: `shape(_:matches:)`; the slice
    /// then has `shape`).
    public func tensor(_ name: String, shape: [Int]) throws -> TensorSlice {
        let slice = try tensor(name)
        if slice.shape != shape, slice.storedOrder == .asShaped, self.shape(slice.shape, matches: shape) {
            return TensorSlice(name: slice.name, dtype: slice.dtype, shape: shape, path: slice.path, storage: slice.storage)
        }
        guard slice.shape == shape else {
            throw DroptraceError(
                "tensor \(quotedName(name, aside: ", shapes in Hugging Face order")) has shape \(slice.shape) but \(configName) implies \(shape)", path: slice.path)
        }
        return slice
    }

    /// Decodes config.json into an architecture's configuration type.
    public func decodeConfig<Config: Decodable>(_ type: Config.Type) throws -> Config {
        try decodeConfig(type, from: decodedConfigData)
    }

    /// The JSON kind a decoded Swift type stands for, for errors.
    static func spelledType(_ type: Any.Type) -> String {
        switch type {
        case is Bool.Type: "a boolean"
        case is Int.Type: "an integer"
        case is Double.Type, is Float.Type: "a number"
        case is String.Type: "a string"
        case is [Int].Type: "a list of integers"
        case is [String].Type: "a list of strings"
        case is [Double].Type: "a list of numbers"
        default: type is [Any].Type ? "a list" : "another kind of value"
        }
    }

    /// A key's path as config.json writes it: an alias's own name where the
    /// key was read from it (`decodedConfigData`, `configObject`).
    private func keyText(_ path: [any CodingKey]) -> String {
        let text = codingPathText(path)
        // The longest key read from an alias that the path starts with, as a whole member.
        let read = configKeysWrittenAs.keys.filter { key in
            text.hasPrefix(key) && (text.count == key.count || [".", "["].contains(text[text.index(text.startIndex, offsetBy: key.count)]))
        }
        guard let key = read.max(by: { $0.count < $1.count }), let alias = configKeysWrittenAs[key] else { return text }
        return alias + text.dropFirst(key.count)
    }

    /// `error` with each key it quotes that was read from an alias
    /// (`configKeysWrittenAs`: `"text_config.n_routed_experts"` of a
    /// config writing `num_experts`) named as config.json writes it.
    public func namingKeysAsWritten(_ error: DroptraceError) -> DroptraceError {
        var error = error
        for (key, alias) in configKeysWrittenAs {
            error.message = error.message.replacingOccurrences(of: "\"\(key)\"", with: "\"\(alias)\"")
        }
        return error
    }

    /// Decodes `data` (config.json, or JSON derived from it: see
    /// `ConfigSection`) with errors naming config.json and the key's path.
    /// - Parameter respelled: `data` is already JSONSerialization's spelling (`ConfigNumbers.respelled`).
    func decodeConfig<Config: Decodable>(_ type: Config.Type, from data: Data, respelled: Bool = false) throws -> Config {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            let path = keyText(context.codingPath + [key])
            // A reason a configuration type gives (Foundation's own starts "No value associated").
            let reason = context.debugDescription.hasPrefix("No value") ? "" : " (\(context.debugDescription))"
            throw DroptraceError("missing key \"\(path)\" for model_type \(modelType)\(reason)", path: configURL.path)
        } catch let DecodingError.typeMismatch(expected, context), let DecodingError.valueNotFound(expected, context) {
            let key = keyText(context.codingPath)
            throw DroptraceError("key \"\(key)\" has the wrong type (expected \(Self.spelledType(expected)))", path: configURL.path)
        } catch let DecodingError.dataCorrupted(context) {
            if context.codingPath.isEmpty, !respelled, let spelled = ConfigNumbers.respelled(data), spelled != data {
                // Numbers Python reads that Foundation's decoder does not (0e5, 1e-400), written as JSONSerialization reads them.
                return try decodeConfig(type, from: spelled, respelled: true)
            }
            if context.codingPath.isEmpty,
               let problem = ConfigNumbers.unfitMember(in: data, decode: { _ = try JSONDecoder().decode(type, from: $0) }) {
                throw DroptraceError(problem, path: configURL.path)
            }
            let key = keyText(context.codingPath)
            throw DroptraceError("invalid value at \"\(key)\": \(context.debugDescription)", path: configURL.path)
        } catch {
            throw DroptraceError("cannot read: \(error)", path: configURL.path)
        }
    }
}

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

    /// Refuses an export path that is a file, a symbolic link or a non-empty
    /// directory (checked before any work, and again when writing), or a new
    /// one that cannot be created where it is named. A link is refused rather
    /// than followed: the export is renamed into place, which would not go
    /// where the link points. Missing parents are created when the export is
    /// written, as `save_pretrained` creates them.
    /// - Throws: `DroptraceError` naming `directory`.
    public static func checkDestination(_ directory: URL) throws {
        // Its files are written in a staging directory named after it (the weights under a temporary name too).
        try TemporaryFileName.checkFits(directory.path, room: 64)
        var status = stat()
        if lstat(directory.path, &status) == 0, status.st_mode & S_IFMT == S_IFLNK {
            throw DroptraceError("export path is a symbolic link; give a new directory's own path", path: directory.path)
        }
        switch PathKind.of(directory) {
        case .missing:
            try checkCreatable(directory)
            return
        case .other:
            throw DroptraceError("export path exists and is not a directory; choose a new one", path: directory.path)
        case .directory: break
        }
        guard (try? FileManager.default.contentsOfDirectory(atPath: directory.path))?.isEmpty == true else {
            throw DroptraceError("export directory exists and is not empty; choose a new one", path: directory.path)
        }
    }

    /// Whether a directory can be made where `directory` will go: the nearest
    /// existing ancestor takes a probe directory, removed at once (modes alone
    /// do not tell: root, read-only and virtual file systems). It was found
    /// only when the export was written, after every measurement.
    private static func checkCreatable(_ directory: URL) throws {
        var ancestor = directory.deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: ancestor.path), ancestor.path != "/" {
            ancestor = ancestor.deletingLastPathComponent()
        }
        let probe = ancestor.appendingPathComponent(".droptrace-probe-\(getpid())").path
        guard mkdir(probe, 0o700) == 0 else {
            throw DroptraceError(
                "cannot create the export under \(ancestor.path): \(SystemError.describe()); choose a writable place",
                path: directory.path)
        }
        rmdir(probe)
    }

    /// Refuses an export path that is the source checkpoint directory or lies
    /// inside it (through symbolic links too), as `trace` refuses an output
    /// inside a checkpoint: training replaces and deletes checkpoint
    /// directories (`save_total_limit`), the export with them. A
    /// `.safetensors` or `.bin` file given as the checkpoint is its
    /// directory's (config.json is there); a GGUF file is its own, and its
    /// neighbours may hold the export (`CheckpointLayout.home`). Checked from
    /// the paths alone, before any work.
    /// - Throws: `DroptraceError` naming `directory` and the checkpoint.
    public static func checkOutsideSource(_ directory: URL, checkpoint given: URL) throws {
        let checkpoint = CheckpointLayout.home(of: given)
        guard PathKind.of(checkpoint) == .directory, ResolvedPath.isWithin(directory, checkpoint)
        else { return }
        let relation = ResolvedPath.of(directory) == ResolvedPath.of(checkpoint) ? "is" : "lies inside"
        throw DroptraceError(
            "\(relation) \(checkpoint.path), the checkpoint the modules are dropped from, which training may replace "
                + "or delete with the export in it; choose an export directory outside the checkpoint",
            path: directory.path)
    }

    /// Writes the export into a staging directory beside `directory` and
    /// renames it into place once complete (`moveIntoPlace`).
    /// - Throws: `DroptraceError` naming `directory` when it is taken (also
    ///   when it was taken while the export was written: nothing there is
    ///   replaced) or cannot be written, or naming an input that cannot be read.
    public static func write(model: any LanguageModel, plan requested: DropPlan, to directory: URL) throws {
        let files = FileManager.default
        try checkDestination(directory)
        let modelPlan = model.exportedPlan(requested)
        if let problem = model.exportProblem(modelPlan) { throw DroptraceError(problem, path: model.checkpoint.configURL.path) }
        let naming = model.layerNaming
        // From here on, layers are stored layers (each of `sublayers` of the model's).
        let plan = naming.storedPlan(modelPlan)
        let parent = directory.deletingLastPathComponent()
        let staging = parent.appendingPathComponent(TemporaryFileName.forTarget(directory.lastPathComponent))
        removeStaleStaging(of: directory)
        // Interrupted (Ctrl-C, kill, a closed terminal), the export leaves no partial directory behind.
        let interruption = InterruptCleanup(
            signals: [SIGINT, SIGTERM, SIGHUP],
            notice: "\(directory.path): interrupted; the export under way was removed, nothing was exported")
        defer { withExtendedLifetime(interruption) {} }
        // Parent directories the export creates go with it when it fails (removed once empty, deepest first).
        var missing: [URL] = []
        var ancestor = parent
        while ancestor.path != "/", PathKind.of(ancestor) == .missing {
            missing.insert(ancestor, at: 0)
            ancestor = ancestor.deletingLastPathComponent()
        }
        missing.forEach { interruption.add($0.path) }
        interruption.add(staging.path)
        do {
            try files.createDirectory(at: staging, withIntermediateDirectories: true)
            let weights = staging.appendingPathComponent(Checkpoint.singleFileName).path
            // The weights are written under a temporary name first (`AtomicFileReplacement`): removed first.
            for path in [weights, AtomicFileReplacement.temporaryPath(for: weights), staging.appendingPathComponent("config.json").path] {
                interruption.add(path)
            }
            let renumber = Renumbering(removing: plan.blocks, layers: model.layerCount / naming.sublayers)
            // Layers whose dropped attention still makes the keys and values later layers reuse keep those weights.
            let keysValuesKept = Set(
                try model.attentionSharing(skipping: modelPlan).keysValues.enumerated().compactMap { $0.element?.storesOnly == true ? $0.offset : nil })
            func exportedName(_ name: String) -> String? {
                Self.exportedName(name, plan: plan, naming: naming, renumber: renumber, keysValuesKept: keysValuesKept)
            }
            var entries: [SafetensorsWriter.Entry] = []
            // FP8 weights travel as stored, with their scales; MXFP4 pairs are
            // written as the float tensors transformers expects
            // (`dequantizedEntries`); buffers droptrace cannot read stay behind.
            let mxfp4 = Set(mxfp4Pairs(model.checkpoint).flatMap { [$0 + "_blocks", $0 + "_scales"] })
            for name in model.checkpoint.storedTensorNames where !mxfp4.contains(name) {
                guard let moved = exportedName(name), let slice = try? model.checkpoint.storedTensor(name) else { continue }
                // Under the name transformers reads as the moved one (the stored spelling where its renaming is not idempotent).
                let newName = model.checkpoint.exportedName(of: name, movedTo: moved)
                entries.append(
                    rescaledQuery(slice, renamedTo: newName, naming: naming, renumber: renumber)
                        ?? keptPieces(slice, naming: naming, renumber: renumber)
                        ?? SafetensorsWriter.Entry(slice, renamedTo: newName))
            }
            entries += try dequantizedEntries(model.checkpoint, rename: exportedName)
            try SafetensorsWriter.write(entries, to: staging.appendingPathComponent(Checkpoint.singleFileName))
            try exportedConfig(model.checkpoint, plan: plan, naming: naming, renumber: renumber)
                .write(to: staging.appendingPathComponent("config.json"))
            // A GGUF file's companions are inside it; the files beside it belong to something else.
            if model.checkpoint.gguf == nil {
                try copyCompanionFiles(from: model.checkpoint.directory, to: staging) { interruption.add($0.path) }
            }
            try moveIntoPlace(staging, to: directory)
        } catch {
            try? files.removeItem(at: staging)
            for created in missing.reversed() { rmdir(created.path) }
            // An error about an input names it; one about what was being written names the export.
            if let error = error as? DroptraceError, error.path.map({ !$0.hasPrefix(staging.path) }) ?? false { throw error }
            let reason = (error as? DroptraceError)?.message ?? SystemError.summary(of: error)
            // The file as it would have been named in the export.
            let file = (error as? DroptraceError)?.path.flatMap { path in
                path.hasPrefix(staging.path + "/") ? directory.path + path.dropFirst(staging.path.count) : nil
            }
            throw DroptraceError("cannot write the export: \(reason)", path: file ?? directory.path)
        }
    }

    /// Renames the complete `staging` directory to `directory`, which the
    /// export takes only while it is free or an empty directory: whatever
    /// was created there while the export was written (a user's directory,
    /// another drop's export) stays as it is, never replaced or removed.
    /// - Throws: `DroptraceError` naming `directory`; `staging` is left for the caller to remove.
    static func moveIntoPlace(_ staging: URL, to directory: URL) throws {
        do {
            try DirectoryPlacement.move(staging.path, to: directory.path)
        } catch .taken(let code) {
            throw DroptraceError(
                "was created or filled while the export was being written (\(SystemError.describe(code))); left as it is "
                    + "and the export discarded: choose a new path",
                path: directory.path)
        } catch .failed(let code) {
            throw DroptraceError("cannot move the export into place: \(SystemError.describe(code))", path: directory.path)
        }
    }

    /// Removes staging directories an export to `directory` left when its
    /// process was killed outright (SIGKILL, a crash): named by
    /// `TemporaryFileName` for this target, their process gone.
    static func removeStaleStaging(of directory: URL) {
        let parent = directory.deletingLastPathComponent()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []
        where TemporaryFileName.leftoverTarget(name) == directory.lastPathComponent {
            try? FileManager.default.removeItem(at: parent.appendingPathComponent(name))
        }
    }

    /// A moved layer's query projection multiplied by (new index + 1) / (old
    /// index + 1), in float32, where attention divides its scores by the
    /// layer's index + 1 (`LayerNaming.inverseLayerIndexQuery`): the exported
    /// layer computes the scores the original layer did. Nil for other tensors.
    static func rescaledQuery(
        _ slice: TensorSlice, renamedTo newName: String, naming: LayerNaming, renumber: Renumbering
    ) -> SafetensorsWriter.Entry? {
        guard let query = naming.inverseLayerIndexQuery, let (layer, rest) = naming.split(slice.name),
            let newLayer = renumber.mapping[layer], newLayer != layer, rest == query.weight || rest == query.bias,
            let columns = slice.shape.last, columns >= query.queryWidth
        else { return nil }
        let factor = Float(newLayer + 1) / Float(layer + 1)
        return SafetensorsWriter.Entry(name: newName, shape: slice.shape) {
            var values = try slice.floats()
            for row in 0..<(values.count / columns) {
                for column in 0..<query.queryWidth { values[row * columns + column] *= factor }
            }
            return values
        }
    }

    /// Layer indices after removing blocks.
    struct Renumbering {
        let mapping: [Int: Int]
        /// The layer count before removing blocks.
        let layers: Int
        init(removing blocks: Set<Int>, layers: Int) {
            self.layers = layers
            var mapping: [Int: Int] = [:]
            for layer in 0..<layers where !blocks.contains(layer) { mapping[layer] = mapping.count }
            self.mapping = mapping
        }
        var remaining: Int { mapping.count }
    }

    /// A tensor packing one piece per layer (`LayerNaming.packedPerLayerTensors`)
    /// with the removed blocks' pieces left out, in its stored type; nil
    /// for other tensors, or when no block is removed.
    static func keptPieces(_ slice: TensorSlice, naming: LayerNaming, renumber: Renumbering) -> SafetensorsWriter.Entry? {
        guard renumber.remaining < renumber.layers, let packed = naming.packedPerLayerTensors.first(where: { $0.name == slice.name }),
            slice.shape.count == 2, slice.shape[packed.axis] == renumber.layers * packed.width
        else { return nil }
        let kept = (0..<renumber.layers).filter { renumber.mapping[$0] != nil }
        // [outer, layers, inner] elements: each kept piece is a run of `inner` elements.
        let (outer, inner) = packed.axis == 0 ? (1, packed.width * slice.shape[1]) : (slice.shape[0], packed.width)
        var shape = slice.shape
        shape[packed.axis] = kept.count * packed.width
        let runs = (0..<outer).flatMap { row in kept.map { (row * renumber.layers + $0) * inner } }
        // Quantised or reordered tensors are written as float32, as `SafetensorsWriter.Entry` writes them.
        guard !slice.dtype.isBlockQuantized, slice.storedOrder == .asShaped else {
            return SafetensorsWriter.Entry(name: slice.name, shape: shape) {
                let values = try slice.floats()
                return runs.flatMap { values[$0..<($0 + inner)] }
            }
        }
        let size = slice.dtype.byteCount(elements: 1)
        return SafetensorsWriter.Entry(name: slice.name, dtype: slice.dtype, shape: shape) {
            let bytes = try slice.storedBytes()
            var selected = Data(capacity: runs.count * inner * size)
            for start in runs { selected.append(bytes[(bytes.startIndex + start * size)..<(bytes.startIndex + (start + inner) * size)]) }
            return selected
        }
    }

    /// The tensor's name in the export, or nil when its module is dropped.
    /// `keysValuesKept`: layers whose dropped attention keeps the weights of
    /// the keys and values later layers reuse (`LayerNaming.keyValueParts`).
    static func exportedName(
        _ name: String, plan: DropPlan, naming: LayerNaming, renumber: Renumbering, keysValuesKept: Set<Int> = []
    ) -> String? {
        guard let (layer, rest) = naming.split(name) else { return name }
        if layer == 0, naming.firstLayerParts.contains(where: rest.hasPrefix) {
            return renumber.remaining > 0 ? naming.storedName(layer: 0, rest, layers: renumber.remaining) : nil
        }
        guard let newLayer = renumber.mapping[layer] else { return nil }
        if plan.attention.contains(layer), naming.attentionParts(layer).contains(where: rest.hasPrefix),
            !(keysValuesKept.contains(layer) && naming.keyValueParts.contains(where: rest.hasPrefix))
        {
            return nil
        }
        if plan.mlp.contains(layer), naming.mlpParts(layer).contains(where: rest.hasPrefix) { return nil }
        return naming.storedName(layer: newLayer, rest, layers: renumber.remaining)
    }

    /// config.json per-layer keys holding one entry per layer (Qwen2/Gemma's
    /// `layer_types`, SmolLM3/Llama 4's `no_rope_layers` flags, Granite SWA's
    /// `layer_rope_theta`, GLM-4.7-Flash's `mlp_layer_types`, GraniteMoeHybrid's
    /// `layers_block_type`, its config class's alias of `layer_types`, HunYuan MoE's
    /// `moe_topk` when a list, GLM-5's `indexer_types`, Laguna's `num_attention_heads_per_layer`):
    /// the kept layers' entries stay.
    static let perLayerListKeys = [
        "layer_types", "no_rope_layers", "attention_layers", "layer_rope_theta", "mlp_layer_types", "moe_topk", "indexer_types",
        "layers_block_type", "num_attention_heads_per_layer",
        "expert_swiglu_limit_list", "share_expert_swiglu_limit_list", "swiglu_limits", "swiglu_limits_shared",
        // Gemma 3n's per-layer MLP widths (when a list) and sparsities.
        "intermediate_size", "activation_sparsity_pattern",
    ]
    /// Strings of one character per layer (Nemotron-H's legacy
    /// `hybrid_override_pattern`): the kept layers' characters stay.
    static let perLayerCharacterKeys = ["hybrid_override_pattern"]
    /// Objects keyed by layer index (transformers' heterogeneous
    /// `per_layer_config`, Gemma 4's per-layer head shapes): the kept layers'
    /// entries stay, under their new indices (zero-padded to one width, as
    /// transformers writes them).
    static let layerIndexObjectKeys = ["per_layer_config"]
    /// Keys listing layer indices (Qwen-MoE's `mlp_only_layers`, Llama 4's
    /// `moe_layers`, Bamba's `attn_layer_indices`, LFM2's `full_attn_idxs`, Kolibri 1.1's `index_layers`, Zamba2's `hybrid_layer_ids`,
    /// Mllama's `cross_attention_layers`, Molmo2's `rope_scaling_layers`):
    /// renumbered, removed layers left out (and entries naming no layer).
    static let layerIndexListKeys = [
        "mlp_only_layers", "moe_layers", "attn_layer_indices", "full_attn_idxs", "index_layers", "hybrid_layer_ids", "cross_attention_layers",
        "rope_scaling_layers",
    ]
    /// Lists of one-indexed layers (Qwen4-Exp's per-layer embedding layers), renumbered likewise.
    static let oneIndexedLayerListKeys = ["ple_layer_ids"]
    /// Keys giving a layer index below which the layers differ (Qwen2's
    /// `max_window_layers`, DeepSeek's `first_k_dense_replace`; a family's
    /// own in its naming's `layerThresholds`, AFMoE's and LFM2-MoE's
    /// `num_dense_layers`): the number of kept layers below it.
    static let layerThresholdKeys = ["max_window_layers", "first_k_dense_replace"]

    /// LLM-Drop's classes for a model with dropped modules, by `model_type`:
    /// its `post_layers_drop` names them in config.json's `auto_map` and puts
    /// their files (`configuration_dropped_llama.py`,
    /// `modeling_dropped_llama.py`) beside the weights. Plain transformers
    /// reads no `drop_attn_list`: it would fill the dropped modules with
    /// random weights. droptrace cannot ship LLM-Drop's files; with them
    /// copied in, `from_pretrained(…, trust_remote_code=True)` runs the
    /// dropped model.
    static let llmDropClasses: [String: [String: String]] = [
        "llama": ["AutoConfig": "configuration_dropped_llama.LlamaConfig",
                  "AutoModelForCausalLM": "modeling_dropped_llama.LlamaForCausalLM"],
        "mistral": ["AutoConfig": "configuration_dropped_mistral.MistralConfig",
                    "AutoModelForCausalLM": "modeling_dropped_mistral.MistralForCausalLM"],
    ]
    static let autoMapKey = "auto_map"

    /// The source config.json with the layer count, every per-layer key and
    /// the drop lists rewritten for the kept layers, edited in its own text:
    /// key order, layout and float spellings (`10000.0`) stay as written.
    /// The layer count and per-layer keys are those of the naming's config
    /// section (a multimodal checkpoint's `text_config`); the drop lists stay
    /// at the top level.
    static func exportedConfig(
        _ checkpoint: Checkpoint, plan: DropPlan, naming: LayerNaming, renumber: Renumbering
    ) throws -> Data {
        var file = try ConfigJSONText(checkpoint.configData, path: checkpoint.configURL.path)
        if !plan.blocks.isEmpty {
            let layers = try LayerSection(checkpoint, naming: naming, renumber: renumber)
            if let section = naming.configSection {
                try file.set(path: section, text: layers.renumbered.text)
            } else {
                file = layers.renumbered
            }
        }
        let attention = plan.attention.compactMap { renumber.mapping[$0] }.sorted()
        let mlp = plan.mlp.compactMap { renumber.mapping[$0] }.sorted()
        for (key, layers) in [(DropPlan.attentionKey, attention), (DropPlan.mlpKey, mlp)] {
            if layers.isEmpty { try file.remove(key) } else { try file.set(key, value: layers) }
        }
        if let classes = (try file.value("model_type") as? String).flatMap({ llmDropClasses[$0] }) {
            if plan.dropsModulesOfKeptBlocks {
                try file.set(autoMapKey, value: classes)
            } else if (try file.value(autoMapKey) as? [String: String]) == classes {
                try file.remove(autoMapKey)  // every module drop was a block drop: plain transformers loads it
            }
        }
        try rewriteFrequencyFactors(inConfig: &file, naming: naming, checkpoint: checkpoint)
        // Dequantised MXFP4 weights (`dequantizedEntries`) are plain floats now.
        if !mxfp4Pairs(checkpoint).isEmpty { try file.remove("quantization_config") }
        // The export's weights have the usual name, whatever file the source's config named.
        try file.remove(CheckpointLayout.weightsKey)
        return file.data
    }

    /// Refuses, before any work, an export transformers would load with
    /// other rotary frequencies than droptrace computes: per-frequency rope
    /// divisors (`frequency_factors`, from a GGUF file's `rope_freqs.weight`)
    /// that no Llama 3 `rope_parameters` reproduce (`exportedConfig` writes
    /// those that do).
    /// - Throws: `DroptraceError` naming the checkpoint's config.
    public static func checkRope(_ model: any LanguageModel) throws {
        var file = try ConfigJSONText(model.checkpoint.configData, path: model.checkpoint.configURL.path)
        try rewriteFrequencyFactors(inConfig: &file, naming: model.layerNaming, checkpoint: model.checkpoint)
    }

    /// `rewriteFrequencyFactors` where the model's settings are: the
    /// family's config section (`text_config`) when it has one, else the top.
    @discardableResult
    static func rewriteFrequencyFactors(inConfig file: inout ConfigJSONText, naming: LayerNaming, checkpoint: Checkpoint) throws -> Bool {
        guard let section = naming.configSection, var config = try file.section(path: section) else {
            return try rewriteFrequencyFactors(in: &file, checkpoint: checkpoint)
        }
        guard try rewriteFrequencyFactors(in: &config, checkpoint: checkpoint) else { return false }
        try file.set(path: section, text: config.text)
        return true
    }

    /// Replaces per-frequency rope divisors (`frequency_factors`, which
    /// transformers does not read: it would rotate by the default
    /// frequencies) in `config`'s `rope_parameters` (or 4.x `rope_scaling`)
    /// by the Llama 3 parameters that reproduce them
    /// (`Llama3RopeParameters.recovering`), or drops them when they are all
    /// 1. Returns whether `config` changed.
    /// - Throws: `DroptraceError` when no Llama 3 parameters reproduce them,
    ///   or they come with another rope type.
    @discardableResult
    static func rewriteFrequencyFactors(in config: inout ConfigJSONText, checkpoint: Checkpoint) throws -> Bool {
        let path = checkpoint.configURL.path
        guard let key = try ["rope_parameters", "rope_scaling"].first(where: { try config.section($0) != nil }),
            var rope = try config.section(key), let divisors = (try rope.value("frequency_factors") as? [NSNumber])?.map(\.doubleValue)
        else { return false }
        func refuse(_ reason: String) -> DroptraceError {
            DroptraceError(
                "--export: the rope frequency factors (llama.cpp's rope_freqs.weight) \(reason); transformers would load "
                    + "the export with other rotary frequencies than droptrace computes, so it is not written",
                path: path)
        }
        let type = try (rope.value("rope_type") ?? rope.value("type")) as? String ?? "default"
        guard type == "default" else { throw refuse("come with rope type \"\(type)\", which transformers cannot combine with them") }
        let theta = try (rope.value("rope_theta") ?? config.value("rope_theta")) as? NSNumber
        let share = try (rope.value("partial_rotary_factor") ?? config.value("partial_rotary_factor")) as? NSNumber
        let heads = try config.value("num_attention_heads") as? NSNumber, hidden = try config.value("hidden_size") as? NSNumber
        guard let headDim = try (config.value("head_dim") as? NSNumber)?.intValue
            ?? hidden.flatMap({ hidden in heads.map { hidden.intValue / max($0.intValue, 1) } })
        else { throw refuse("come with no head width in the config") }
        let rotaryDim = Int(Double(headDim) * (share?.doubleValue ?? 1))
        try rope.remove("frequency_factors")
        if divisors.allSatisfy({ abs($0 - 1) <= Llama3RopeParameters.tolerance }) {
            try config.set(key, text: rope.text)
            return true
        }
        let hint = try ((rope.value("original_max_position_embeddings") ?? config.value("original_max_position_embeddings")) as? NSNumber)?.intValue
        guard let llama3 = Llama3RopeParameters.recovering(
            divisors, base: theta?.doubleValue ?? 10_000, rotaryDim: rotaryDim, originalHint: hint)
        else { throw refuse("are not Llama 3 scaling (rope_type llama3), the only kind transformers' config can express") }
        try rope.set(try rope.value("rope_type") == nil && rope.value("type") != nil ? "type" : "rope_type", value: "llama3")
        // Spelled as floats (8.0), as transformers' config class declares them.
        try rope.set("factor", text: "\(llama3.factor)")
        try rope.set("low_freq_factor", text: "\(llama3.lowFrequencyFactor)")
        try rope.set("high_freq_factor", text: "\(llama3.highFrequencyFactor)")
        try rope.set("original_max_position_embeddings", value: llama3.originalMaxPositions)
        try config.set(key, text: rope.text)
        return true
    }

    /// The part of config.json that describes the layers — the naming's
    /// config section (a multimodal checkpoint's `text_config`, spelled out
    /// from nothing where left to its defaults), else the whole file — as
    /// written and as an export keeping `renumber`'s layers writes it.
    struct LayerSection {
        let source: ConfigJSONText
        let renumbered: ConfigJSONText
        /// The keys that hold the layer count (with an alias written for one, EXAONE 3's `num_layers`).
        let countKeys: [String]

        init(_ checkpoint: Checkpoint, naming: LayerNaming, renumber: Renumbering) throws {
            let file = try ConfigJSONText(checkpoint.configData, path: checkpoint.configURL.path)
            var naming = naming
            if let section = naming.configSection {
                source = try file.section(path: section) ?? ConfigJSONText(Data("{}".utf8), path: checkpoint.configURL.path)
            } else {
                source = file
                naming.layerCountKeys += naming.layerCountKeys.flatMap { ConfigValueKinds.aliases(of: $0, modelType: checkpoint.modelType) }
            }
            var renumbered = source
            try renumberLayers(in: &renumbered, naming: naming, renumber: renumber)
            self.renumbered = renumbered
            countKeys = naming.layerCountKeys
        }
    }

    /// Rewrites the layer count and the per-layer keys of `config` for the kept layers.
    static func renumberLayers(in config: inout ConfigJSONText, naming: LayerNaming, renumber: Renumbering) throws {
        let layers = renumber.layers, entries = naming.configEntriesPerLayer
        // Layers stored in stacks are counted per stack (the family's exportProblem keeps as many of each).
        let counted = renumber.remaining / max(naming.stackPrefixes.count, 1)
        // A count the section leaves to its default is written out.
        var written = false
        for key in naming.layerCountKeys {
            if try config.value(key) != nil {
                try config.set(key, value: counted * entries)
                written = true
            }
        }
        if !written { try config.set(naming.layerCountKeys[0], value: counted * entries) }
        for (key, factor) in naming.perStackMultiples.sorted(by: { $0.key < $1.key }) {
            try config.set(key, value: counted * factor)
        }
        // Runs of layers counted apart (Dory's input, recurrent and output sections), defaults included.
        for section in naming.layerSections {
            try config.set(section.key, value: section.layers.filter { renumber.mapping[$0] != nil }.count * entries)
        }
        for key in perLayerListKeys {
            guard let written = try config.elementTexts(key) else { continue }
            let kept = written.enumerated().filter { renumber.mapping[$0.offset / entries] != nil }.map(\.element)
            try config.set(key, text: "[" + kept.joined(separator: ", ") + "]")
        }
        for key in perLayerCharacterKeys {
            guard let pattern = try config.value(key) as? String else { continue }
            try config.set(key, value: String(pattern.enumerated().filter { renumber.mapping[$0.offset] != nil }.map(\.element)))
        }
        // Configs that leave layer_types to a rule get it spelled out, or
        // renumbering would move windows: Gemma-2 (even layers slide),
        // Gemma-3 (`sliding_window_pattern`: every n-th is global), Qwen2
        // (`max_window_layers`). Only as the family resolved them: a list
        // where its model reads none would still build transformers' cache
        // layer by layer (sliding layers without a window fail there).
        if try config.value("layer_types") == nil, let types = naming.layerTypes {
            try config.set("layer_types", value: types.enumerated().filter { renumber.mapping[$0.offset] != nil }.map(\.element))
        }
        // Qwen-MoE's sparse beat (every n-th layer sparse) would shift
        // with renumbering: the dense layers it implies are listed instead.
        if let step = try config.value("decoder_sparse_step") as? NSNumber, step.intValue > 1 {
            // A list left to the class's default (FlintConfig's [0, 1]) is the one the family read.
            let listed = try (config.value("mlp_only_layers") as? [NSNumber])?.map(\.intValue) ?? naming.layerIndexLists["mlp_only_layers"] ?? []
            let dense = (0..<layers).filter { listed.contains($0) || ($0 + 1) % step.intValue != 0 }
            try config.set("mlp_only_layers", value: dense)
            try config.set("decoder_sparse_step", value: 1)
        }
        // Likewise rotary flags left to no_rope_layer_interval (SmolLM3; Llama 4,
        // which reads an empty list as none).
        if (try config.value("no_rope_layers") as? [Any])?.isEmpty ?? true, let flags = naming.noRopeLayers {
            try config.set("no_rope_layers", value: flags.enumerated().filter { renumber.mapping[$0.offset] != nil }.map(\.element))
        }
        // Likewise per-layer lists left to the class's rule (GLM-4.7-Flash's MLP types, GLM-5's indexer types).
        for (key, entries) in naming.perLayerLists.sorted(by: { $0.key < $1.key }) where try config.value(key) == nil {
            try config.set(key, value: entries.enumerated().filter { renumber.mapping[$0.offset] != nil }.map(\.element))
        }
        for (key, entries) in naming.cycledLists.sorted(by: { $0.key < $1.key }) {
            try config.set(key, value: entries.enumerated().filter { renumber.mapping[$0.offset] != nil }.map(\.element))
        }
        for (key, entries) in naming.perLayerNumberLists.sorted(by: { $0.key < $1.key }) where try config.value(key) == nil || config.value(key) is NSNull {
            let kept = entries.enumerated().filter { renumber.mapping[$0.offset] != nil }.map { "\($0.element)" }
            try config.set(key, text: "[" + kept.joined(separator: ", ") + "]")
        }
        // Routed layers given by a range and a beat (ERNIE 4.5): the range and beat that keep every
        // kept layer's MLP (the family's exportProblem refuses plans none keeps).
        if let range = naming.sparseLayerRange, renumber.remaining < layers {
            let removed = Set((0..<layers).filter { renumber.mapping[$0] == nil })
            if let fit = SparseLayerRange.fitting(range.kept(removing: removed)) {
                try config.set(range.startKey, value: fit.start)
                try config.set(range.endKey, value: fit.end)
                try config.set(range.intervalKey, value: fit.interval)
            }
        }
        // Layers picked by a period and an offset (Jamba): the period and offset that keep every kept
        // layer's kind (the family's exportProblem refuses plans none keeps).
        if renumber.remaining < layers {
            let removed = Set((0..<layers).filter { renumber.mapping[$0] == nil })
            for rule in naming.periodicLayers {
                guard let fit = rule.fitting(removing: removed) else { continue }
                try config.set(rule.periodKey, value: fit.period)
                try config.set(rule.offsetKey, value: fit.offset)
            }
        }
        // GPT-Neo's attention_types, runs of [types, repeats] that GPTNeoConfig
        // expands to one type per layer: one run per kept layer.
        if let types = naming.attentionTypeRuns {
            let kept = types.enumerated().filter { renumber.mapping[$0.offset] != nil }.map(\.element)
            try config.set("attention_types", value: kept.map { [[$0], 1] as [Any] })
        }
        for key in layerIndexObjectKeys {
            guard let object = try config.section(key) else { continue }
            let kept = try object.memberTexts().compactMap { member in
                Int(member.key).flatMap { renumber.mapping[$0] }.map { (layer: $0, text: member.text) }
            }.sorted { $0.layer < $1.layer }
            let width = String(kept.last?.layer ?? 0).count
            let entries = try kept.map { entry -> String in
                let digits = String(entry.layer)
                let name = String(repeating: "0", count: width - digits.count) + digits
                let keyText = String(decoding: try JSONSerialization.data(withJSONObject: name, options: .fragmentsAllowed), as: UTF8.self)
                return "\(keyText): \(entry.text)"
            }
            try config.set(key, text: "{" + entries.joined(separator: ", ") + "}")
        }
        for key in layerIndexListKeys {
            guard let indices = try config.value(key) as? [NSNumber] else { continue }
            try config.set(key, value: indices.compactMap { renumber.mapping[$0.intValue] }.sorted())
        }
        for key in oneIndexedLayerListKeys {
            guard let indices = try config.value(key) as? [NSNumber] else { continue }
            try config.set(key, value: indices.compactMap { renumber.mapping[$0.intValue - 1].map { $0 + 1 } }.sorted())
        }
        // Index lists left to a rule (Llama 4's sparse interleave), written renumbered.
        for (key, indices) in naming.layerIndexLists.sorted(by: { $0.key < $1.key }) where try config.value(key) == nil || config.value(key) is NSNull {
            try config.set(key, value: indices.compactMap { renumber.mapping[$0] }.sorted())
        }
        // Per-layer lists of layer indices (Kolibri 1.1's key/value sources): the kept layers' entries,
        // renumbered (the family's exportProblem refuses plans that remove a kept layer's source).
        for (key, sources) in naming.layerSourceLists.sorted(by: { $0.key < $1.key }) {
            try config.set(key, value: sources.enumerated().compactMap { layer, source in
                renumber.mapping[layer].map { renumber.mapping[source] ?? $0 }
            })
        }
        for (key, multiplier) in naming.depthScaledMultipliers.sorted(by: { $0.key < $1.key }) where renumber.remaining < layers {
            try config.set(key, value: multiplier * (Double(renumber.remaining) / Double(layers)).squareRoot())
        }
        for (key, count) in naming.trailingLayerCounts.sorted(by: { $0.key < $1.key }) {
            try config.set(key, value: renumber.mapping.keys.filter { $0 >= layers - count }.count)
        }
        for key in Set(layerThresholdKeys).union(naming.layerThresholds.keys).sorted() {
            // Also one the family read as its default: transformers would apply it to the new indices.
            guard let threshold = (try config.value(key) as? NSNumber)?.intValue ?? naming.layerThresholds[key],
                  threshold < layers else { continue }
            try config.set(key, value: renumber.mapping.keys.filter { $0 < threshold }.count)
        }
    }

    /// Whether the file `name` beside a checkpoint's weights travels with
    /// them into an export (tokenizer, generation and model-card files, custom
    /// code). Left behind: the undropped model's weights in any framework's
    /// format (safetensors, PyTorch, GGUF; TensorFlow/Keras `.h5`, Flax
    /// `.msgpack`, ONNX) and their shard indexes (`*.index.json`), which
    /// would hold another model than the export's; HDF5 files (a droptrace
    /// store written beside them); the Trainer's training state; hidden files
    /// (a run lock, `.gitattributes`); `config.json`, which the export writes.
    /// Qwen2.5-Omni's speaker table `spk_dict.pt` travels: no weights of the
    /// model, it is a file its from_pretrained requires beside them.
    static func travelsWithWeights(_ name: String) -> Bool {
        if name == "spk_dict.pt" { return true }
        let url = URL(fileURLWithPath: name)
        let otherWeights = ["h5", "hdf5", "msgpack", "onnx"].contains(url.pathExtension.lowercased())
            || name.hasSuffix(".index.json")
        let isWeights = CheckpointLayout.format(ofFile: url) != nil || otherWeights
        return !(isWeights || name == "config.json" || name.hasPrefix(".")
            || trainingState.contains(name) || name.hasPrefix("rng_state"))
    }

    /// The files of checkpoint directory `source` that travel with the
    /// weights (`travelsWithWeights`), each opened once to check it
    /// can be copied: `drop` calls this before any work, so an export that
    /// cannot be written is refused before the measurements, not after.
    /// Symbolic links count as their targets (a Hugging Face cache snapshot
    /// links each file to a blob); subdirectories stay behind.
    /// - Throws: `DroptraceError` naming a file that is no regular file (a
    ///   FIFO would block the copy forever), a link to nothing, or unreadable.
    static func companionFiles(of source: URL) throws -> [URL] {
        var files: [URL] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: source.path).sorted() where travelsWithWeights(name) {
            let path = source.appendingPathComponent(name)
            switch PathKind.of(path) {
            case .missing:
                // A link to nothing would leave the export without that file, said nowhere.
                throw DroptraceError("is a symbolic link to a missing file; cannot copy it into the export", path: path.path)
            case .directory: continue
            case .other: break
            }
            do {
                _ = try RegularFile(path: path.path)
            } catch let error as DroptraceError {
                throw DroptraceError(error.message + "; cannot copy it into the export", path: error.path, isTransient: error.isTransient)
            }
            files.append(path)
        }
        return files
    }

    /// Copies `companionFiles(of: source)` into `destination`, their bytes.
    /// - Parameter willCreate: called with each copy's path before it is created.
    /// - Throws: `DroptraceError` as `companionFiles`, or when a copy cannot be written.
    static func copyCompanionFiles(from source: URL, to destination: URL, willCreate: (URL) -> Void = { _ in }) throws {
        for file in try companionFiles(of: source) {
            let copy = destination.appendingPathComponent(file.lastPathComponent)
            willCreate(copy)
            try RegularFile(path: file.path).copy(to: copy.path)
        }
    }
}

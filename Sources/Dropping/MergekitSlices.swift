import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation

/// A block drop written as a mergekit `passthrough` configuration: the kept
/// layers as `slices`, each a `layer_range: [start, end]` of the source
/// model, 0-based and end-exclusive as mergekit reads it (`[0, 24]` is
/// layers 0–23). `mergekit-yaml FILE OUT_DIR` then writes the pruned model.
public enum MergekitSlices {
    /// The YAML text.
    /// - Parameters:
    ///   - model: the source checkpoint as mergekit names it (a path).
    ///   - layers: L, the source's layer count.
    ///   - dropped: the dropped blocks, each in 0..<L, fewer than L of them.
    ///   - dtype: mergekit's `dtype` (`float32`, `float16`, `bfloat16`).
    public static func yaml(model: String, layers: Int, dropped: Set<Int>, dtype: String) -> String {
        var text = "\(header)\(DroptraceVersion.string): layers \(list(dropped.sorted())) "
            + "(0-based) of \(layers) dropped.\n"
            + "# layer_range is 0-based and end-exclusive, as mergekit reads it.\n"
            + "slices:\n"
        for range in keptRanges(layers: layers, dropped: dropped) {
            text += "  - sources:\n"
                + "      - model: \(quoted(model))\n"
                + "        layer_range: [\(range.lowerBound), \(range.upperBound)]\n"
        }
        return text + "merge_method: passthrough\ndtype: \(dtype)\n"
    }

    /// The maximal runs of kept layers, ascending.
    static func keptRanges(layers: Int, dropped: Set<Int>) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start: Int?
        for layer in 0...layers {
            let kept = layer < layers && !dropped.contains(layer)
            if kept, start == nil { start = layer }
            if !kept, let first = start {
                ranges.append(first..<layer)
                start = nil
            }
        }
        return ranges
    }

    /// Refuses what a passthrough merge cannot express, before any work is
    /// done: a GGUF source (mergekit reads Hugging Face checkpoints), a
    /// checkpoint that already drops attention or MLP modules inside its
    /// layers, one whose attention scales by the layer's index (GPT-2's
    /// `scale_attn_by_inverse_layer_idx`: layers a passthrough moves would
    /// change their scale; `--export` rescales them), and one with layers
    /// listed by index that it would not renumber (Mllama's cross-attention
    /// layers), one of an architecture mergekit does not slice
    /// (`Definition`) or lacking a tensor its definition needs
    /// (`Definition.missing`), and one whose config.json no passthrough of fewer
    /// layers leaves right (`staleKeys`: a per-layer list such as
    /// `layer_types`). What depends on the plan is `checkPlan`'s.
    public static func checkSource(_ model: any LanguageModel) throws {
        let checkpoint = model.checkpoint
        if let gguf = checkpoint.gguf {
            throw DroptraceError(
                "--export-mergekit needs a Hugging Face checkpoint; mergekit cannot read GGUF files", path: gguf.path)
        }
        if model.layerNaming.inverseLayerIndexQuery != nil {
            throw DroptraceError(
                "--export-mergekit: attention scales by 1/(layer index + 1) (scale_attn_by_inverse_layer_idx), "
                    + "so a passthrough merge changes every layer it moves; use --export, which rescales them",
                path: checkpoint.configURL.path)
        }
        if model.layerNaming.sublayers > 1 {
            throw DroptraceError(
                "--export-mergekit: each of the model's decoder layers holds \(model.layerNaming.sublayers) of the layers droptrace "
                    + "scores and drops, which mergekit's slices of whole layers cannot express; use --export",
                path: checkpoint.configURL.path)
        }
        if model.layerLoop?.stacks != nil {
            throw DroptraceError(
                "--export-mergekit: the model runs two stacks of layers (L_module, H_module) in cycles, "
                    + "which mergekit's slices of one list of layers cannot express",
                path: checkpoint.configURL.path)
        }
        if model.layerLoop != nil {
            throw DroptraceError(
                "--export-mergekit: the model runs some of its layers in a loop whose sections config.json counts "
                    + "(n_input_layers, n_recurrent_layers, n_output_layers), which a mergekit passthrough does not rewrite; use --export",
                path: checkpoint.configURL.path)
        }
        if (0..<model.layerCount).contains(where: model.lacksBothModules) {
            throw DroptraceError(
                "--export-mergekit: the model has layers transformers skips on text (Mllama's cross_attention_layers), whose "
                    + "indices a mergekit passthrough does not renumber; use --export, which does",
                path: checkpoint.configURL.path)
        }
        let definition = try Definition(of: model)
        let missing = definition.missing()
        if let first = missing.first {
            throw DroptraceError(
                "--export-mergekit: mergekit \(mergekitVersion)'s definition of \(definition.architecture) needs a tensor \(first)"
                    + "\(missing.count > 1 ? " (and \(missing.count - 1) more)" : "") the checkpoint does not store, so mergekit "
                    + "would refuse it; use --export",
                path: checkpoint.configURL.path)
        }
        // Plan by plan in DropRun; here what no single-layer drop survives (a per-layer list, a depth-scaled multiplier).
        // The last layer's drop first: where it leaves nothing stale (most models), no other is looked at.
        func stale(_ layer: Int) throws -> [String] { try staleKeys(model, dropping: [layer], countKey: definition.countKey) }
        let last = try stale(model.layerCount - 1)
        if !last.isEmpty, try (0..<(model.layerCount - 1)).allSatisfy({ try !stale($0).isEmpty }) {
            throw DroptraceError(passthroughProblem(last, dropping: nil), path: checkpoint.configURL.path)
        }
        if !model.configuredDrops.attention.isEmpty || !model.configuredDrops.mlp.isEmpty {
            throw DroptraceError(
                "--export-mergekit: the checkpoint's config.json already drops attention or MLP modules "
                    + "(\(DropPlan.attentionKey) / \(DropPlan.mlpKey)), which a mergekit passthrough cannot express",
                path: checkpoint.configURL.path)
        }
    }

    /// mergekit's definition of the checkpoint's architecture, picked as its
    /// `arch_info_for_config` picks it: by config.json's one `architectures`
    /// entry, and by model_type where several definitions share the name.
    struct Definition {
        /// config.json's `architectures` entry it defines.
        let architecture: String
        /// The config key (a dotted path) its passthrough sets to the merged layer count.
        let countKey: String
        /// The names of the tensors it copies, and of those it cannot do without (`tensorTemplates`).
        let tensors: [String]
        let required: [String]
        /// The ends of the names of the tensors transformers' conversion mapping builds from others (`convertedTensors`).
        let converted: [String]
        /// transformers' renamings of the model_type's names, which mergekit applies first (`renamings`).
        let renamings: [(pattern: NSRegularExpression, template: String)]
        /// The checkpoint it was picked for.
        let checkpoint: Checkpoint
        /// The model types whose conversion mappings collect per-expert tensors (`WeightConversions.modelTypes`).
        let conversions: [String]?

        /// - Throws: `DroptraceError` naming config.json when config.json
        ///   does not name one architecture, or mergekit has no one-module
        ///   definition of it (it would infer one that sets no count, so the
        ///   merged model would keep the source's layer count and transformers
        ///   would fill the missing layers with random weights; a definition
        ///   of several modules refuses `slices:`).
        init(of model: any LanguageModel) throws {
            let checkpoint = model.checkpoint, path = checkpoint.configURL.path
            guard case .array(let names)? = checkpoint.configDocument.member("architectures"), names.count == 1,
                  case .string(let name) = names[0]
            else {
                throw DroptraceError(
                    "--export-mergekit: config.json must name one architecture in \"architectures\", as mergekit reads it", path: path)
            }
            func pick<T>(_ table: [String: T]?) -> T? {
                table.flatMap { $0.count == 1 ? $0.values.first : $0[checkpoint.modelType] }
            }
            if let key = pick(layerCountKeys[name]), let templates = pick(tensorTemplates[name]) {
                architecture = name
                self.checkpoint = checkpoint
                conversions = WeightConversions.modelTypes(checkpoint, section: ConfigSection(model.layerNaming.configSection))
                countKey = key
                tensors = templates.map(\.name)
                required = templates.filter(\.required).map(\.name)
                converted = convertedTensors[checkpoint.modelType] ?? []
                renamings = try (MergekitSlices.renamings[checkpoint.modelType] ?? []).map { rule in
                    let template = NSRegularExpression.escapedTemplate(for: rule.replacement).replacingOccurrences(of: "\\\\1", with: "$1")
                    return (try NSRegularExpression(pattern: rule.pattern), template)
                }
                return
            }
            let reason = multiModuleArchitectures.contains(name)
                ? "defines \(name) as several modules (a vision tower beside the text decoder), which it does not merge from slices"
                : "has no definition of \(name) (model_type \(checkpoint.modelType)): its passthrough would keep the source's "
                    + "layer count, and transformers would fill the layers the merged model lacks with random weights"
            throw DroptraceError("--export-mergekit: mergekit \(mergekitVersion) \(reason); use --export", path: path)
        }

        /// The tensors of `names` that no name of the definition covers,
        /// sorted: the passthrough leaves them out. Names are read as
        /// mergekit reads them (`readings`). Per-expert tensors that
        /// transformers' conversion mapping collects into fused experts
        /// (`WeightConversions.collects`) are covered by the fused names, as
        /// mergekit converts them with that mapping.
        func uncovered(_ names: [String]) -> [String] {
            names.filter { name in
                let spellings = readings(name)
                return !tensors.contains { template in spellings.contains { Self.matches($0, template) } } && !collected(name)
            }
        }

        /// The names it cannot do without that none of the checkpoint's
        /// tensors gives, sorted, each number as `<n>`: mergekit would
        /// refuse the checkpoint. A tensor the conversion mapping builds
        /// (fused experts) counts as given where some name is collected into one.
        func missing() -> [String] {
            let names = checkpoint.storedTensorNames
            let read = names.flatMap(readings), collects = names.contains(where: collected)
            return required.filter { template in
                !read.contains { Self.matches($0, template) } && !(collects && converted.contains { template.hasSuffix($0) })
            }.map { $0.replacingOccurrences(of: "{n}", with: "<n>") }.sorted()
        }

        /// The names mergekit finds tensor `name` (as droptrace reads it)
        /// under: as the file stores it, and through transformers' renamings
        /// (its `can_convert_checkpoint_keys`).
        func readings(_ name: String) -> [String] {
            let stored = checkpoint.storedName(of: name)
            let renamed = renamings.reduce(stored) { name, rule in
                guard let match = rule.pattern.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) else { return name }
                return (name as NSString).replacingCharacters(
                    in: match.range, with: rule.pattern.replacementString(for: match, in: name, offset: 0, template: rule.template))
            }
            return [stored, renamed]
        }

        /// Whether transformers' conversion mapping collects per-expert tensor `name` into fused experts.
        func collected(_ name: String) -> Bool {
            conversions.map { WeightConversions.collects(name, modelTypes: $0) } ?? false
        }

        /// Whether `name` is `template` with a decimal number for each `{n}`.
        static func matches(_ name: String, _ template: String) -> Bool {
            var rest = Substring(name)
            for (index, piece) in template.components(separatedBy: "{n}").enumerated() {
                if index > 0 {
                    let digits = rest.prefix(while: \.isASCII).prefix(while: \.isNumber)
                    guard !digits.isEmpty else { return false }
                    rest = rest.dropFirst(digits.count)
                }
                guard rest.hasPrefix(piece) else { return false }
                rest = rest.dropFirst(piece.count)
            }
            return rest.isEmpty
        }
    }

    /// Refuses `dropped`, the blocks of a plan, when a passthrough of the
    /// kept layers would leave config.json describing other layers
    /// (`staleKeys`), or leave out a tensor the model computes with (one no
    /// name of mergekit's definition covers: `Definition.uncovered`, over
    /// the tensors read, so called once the model has run): checked once
    /// the plan is chosen, before it is evaluated.
    /// - Throws: `DroptraceError` naming the checkpoint's config and the keys or the tensor.
    public static func checkPlan(_ model: any LanguageModel, dropping dropped: Set<Int>) throws {
        let checkpoint = model.checkpoint, definition = try Definition(of: model)
        let keys = try staleKeys(model, dropping: dropped, countKey: definition.countKey)
        guard keys.isEmpty else {
            throw DroptraceError(passthroughProblem(keys, dropping: dropped), path: checkpoint.configURL.path)
        }
        // The tensors the full model computes with, all read by now (scoring ran every layer).
        let left = definition.uncovered(checkpoint.tensorsRead)
        if let first = left.first {
            let others = left.count > 1 ? " and \(left.count - 1) more" : ""
            throw DroptraceError(
                "--export-mergekit: mergekit \(mergekitVersion)'s definition of \(definition.architecture) copies no tensor \(first)\(others), "
                    + "which the model computes with: the merged model would lack them and transformers would fill them "
                    + "with random weights; use --export",
                path: checkpoint.configURL.path)
        }
    }

    /// The keys of config.json's layer section (`DroppedModelExport.LayerSection`)
    /// that a passthrough dropping `dropped` would leave wrong, sorted.
    /// mergekit writes the config transformers builds from the source's,
    /// with only the layer count set (its `_model_out_config`), while the
    /// kept layers move down: every other key `--export` rewrites for them
    /// is stale, and so is a per-layer list the config class derives where
    /// config.json has none (`ConfigValueKinds.derivedPerLayerLists`: saved
    /// with the source's layer count). Lists of layer indices
    /// (`DroppedModelExport.layerIndexListKeys`; where absent, as the
    /// family resolved them) are compared as transformers reads them at the
    /// new indices, so entries past the kept layers name none (Molmo2's
    /// `rope_scaling_layers` listing every layer stays right).
    static func staleKeys(_ model: any LanguageModel, dropping dropped: Set<Int>, countKey: String) throws -> [String] {
        let naming = model.layerNaming, checkpoint = model.checkpoint
        let renumber = DroppedModelExport.Renumbering(removing: dropped, layers: model.layerCount)
        let section = try DroppedModelExport.LayerSection(checkpoint, naming: naming, renumber: renumber)
        // The count mergekit sets, where droptrace reads it (under an alias too: transformers' attribute map writes it there).
        let prefix = naming.configSection.map { $0 + "." } ?? ""
        let counted = countKey.hasPrefix(prefix) && section.countKeys.contains(String(countKey.dropFirst(prefix.count)))
        let written = Set(try section.source.memberTexts().map(\.key))
        let derived = ConfigValueKinds.derivedPerLayerLists(
            modelType: checkpoint.modelType, section: naming.configSection, document: checkpoint.configDocument)
        let keys = written.union(try section.renumbered.memberTexts().map(\.key)).union(derived)
        return try keys.subtracting(counted ? section.countKeys : []).sorted().filter { key in
            let (source, needed) = (try section.source.value(key), try section.renumbered.value(key))
            let base = DroppedModelExport.layerIndexListKeys.contains(key) ? 0
                : DroppedModelExport.oneIndexedLayerListKeys.contains(key) ? 1 : nil
            if let base {
                let layers = base..<(renumber.remaining + base)
                func named(_ indices: [Int]?) -> Set<Int>? { indices.map { Set($0.filter(layers.contains)) } }
                let kept = (source as? [NSNumber])?.map(\.intValue) ?? naming.layerIndexLists[key]
                return named(kept) != named((needed as? [NSNumber])?.map(\.intValue))
            }
            return !written.contains(key) && derived.contains(key) || canonical(source) != canonical(needed)
        }
    }

    /// The line refusing a passthrough that leaves `keys` stale, for the
    /// plan dropping `dropped` (nil: every plan).
    static func passthroughProblem(_ keys: [String], dropping dropped: Set<Int>?) -> String {
        let which = dropped.map { "with layer\($0.count == 1 ? "" : "s") \(list($0.sorted())) dropped" } ?? "whichever layers are dropped"
        return "--export-mergekit: a mergekit passthrough keeps the source's config.json with only the layer count changed: "
            + "\(which), its \(keys.joined(separator: ", ")) would describe other layers than the kept ones; "
            + "use --export, which rewrites \(keys.count == 1 ? "it" : "them")"
    }

    /// A decoded JSON value as sorted-key JSON, to compare (nil when absent).
    private static func canonical(_ value: Any?) -> Data? {
        value.map { (try? JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys, .fragmentsAllowed])) ?? Data() }
    }

    /// mergekit's name of the checkpoint's weight type: that of its
    /// floating-point tensors (float32 for quantised or FP8 weights, which
    /// mergekit would widen anyway).
    public static func dtype(of checkpoint: Checkpoint) -> String {
        let dtypes = checkpoint.tensorNames.lazy.compactMap { try? checkpoint.tensor($0).dtype }
        switch dtypes.first(where: { [.float32, .float16, .bfloat16].contains($0) }) {
        case .float16: return "float16"
        case .bfloat16: return "bfloat16"
        default: return "float32"
        }
    }

    /// Writes the YAML for `plan`'s blocks of `model` to `url`, replacing
    /// it atomically (never through a symbolic link).
    public static func write(model: any LanguageModel, plan: DropPlan, to url: URL) throws {
        let blocks = model.exportedPlan(plan).blocks
        let text = yaml(
            model: model.checkpoint.directory.standardizedFileURL.path, layers: model.layerCount, dropped: blocks,
            dtype: dtype(of: model.checkpoint))
        let directory = try outputDirectory(for: url)
        try directory.replaceFile(url.lastPathComponent, with: Array(text.utf8))
        try directory.sync()
    }

    /// How every file this writes begins: only such a file is replaced.
    static let header = "# Written by droptrace "

    /// The existing directory `url` goes in.
    /// - Throws: `DroptraceError` naming `url` when it does not exist, `url` names a directory, or
    ///   `url` holds a file that is not an earlier output of this writer (`ReplaceableOutput`).
    public static func outputDirectory(for url: URL) throws -> DirectoryHandle {
        if PathKind.of(url) == .directory {
            throw DroptraceError("is a directory; --export-mergekit takes a file name", path: url.path)
        }
        // Also refuses a missing parent directory.
        try ReplaceableOutput.check(url.path, signatures: [Array(header.utf8)])
        return try DirectoryHandle.create(at: url.deletingLastPathComponent().path)
    }

    private static func list(_ layers: [Int]) -> String { layers.map(String.init).joined(separator: ", ") }

    /// A YAML double-quoted scalar (JSON's string escapes are valid YAML).
    private static func quoted(_ text: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [text], options: [.withoutEscapingSlashes])) ?? Data("[\"\"]".utf8)
        let array = String(decoding: data, as: UTF8.self)
        return String(array.dropFirst().dropLast())
    }
}

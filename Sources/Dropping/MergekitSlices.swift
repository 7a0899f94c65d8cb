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
    /// listed by index that it would not renumber (Mllama's cross-attention layers,
    /// Molmo2's scaled layers when some layer is not among them).
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
        // Molmo2's scaled layers, listed by index in its config section: all alike need no renumbering.
        let section = try checkpoint.configObject(ConfigSection(model.layerNaming.configSection))
        if let listed = section["rope_scaling_layers"] as? [Any],
           !(0..<model.layerCount).allSatisfy({ layer in listed.contains { ($0 as? NSNumber)?.intValue == layer } }) {
            throw DroptraceError(
                "--export-mergekit: rope_scaling_layers picks the layers that rotate by the scaled table by index, "
                    + "which a mergekit passthrough does not renumber; use --export, which does",
                path: checkpoint.configURL.path)
        }
        if !model.configuredDrops.attention.isEmpty || !model.configuredDrops.mlp.isEmpty {
            throw DroptraceError(
                "--export-mergekit: the checkpoint's config.json already drops attention or MLP modules "
                    + "(\(DropPlan.attentionKey) / \(DropPlan.mlpKey)), which a mergekit passthrough cannot express",
                path: checkpoint.configURL.path)
        }
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

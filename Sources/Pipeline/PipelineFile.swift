import DroptraceSupport
import Evaluation
import Foundation
import ScoreStore
import Scoring
import TensorEngine
import Yams

/// A pipeline file (YAML), the declarative form of `droptrace trace`.
/// Relative paths are relative to the pipeline file itself, so a file in
/// `pipelines/` runs the same from any working directory.
///
///     title: Demo series
///     series: ../data/demo-series          # or: checkpoints: [a, b, ...]
///     calibration: ../data/calibration.txt
///     tokenizer: ../base-model                # optional: see `trace --tokenizer`
///     seq_len: 128
///     samples: 16
///     drop_k: [2, 4]
///     eval: ../data/eval.txt               # optional: perplexity full vs dropped
///     tasks:                               # optional: task accuracy full vs dropped
///       hellaswag: {eval: ../data/tasks/hellaswag.jsonl}
///       arc_easy:
///         eval: ../data/arc/ARC-Easy-Test.jsonl
///         fewshot: ../data/arc/ARC-Easy-Train.jsonl
///     num_fewshot: 0                       # optional: few-shot examples per prompt
///     settle_minutes: 30                   # optional: see `trace --settle-minutes`
///     precision: bf16                      # optional: f32 (default) or bf16, see `trace --precision`
///     output: ../reports/demo
public struct PipelineFile: Decodable {
    public var title: String?
    public var series: String?
    public var checkpoints: [String]?
    public var calibration: String
    /// The directory whose tokenizer reads text instead of each checkpoint's (`trace --tokenizer`).
    public var tokenizer: String?
    public var seqLen: Int?
    public var samples: Int?
    public var dropK: [Int]?
    public var output: String
    /// Evaluation text or JSONL: perplexity per checkpoint, full and dropped.
    public var eval: String?
    /// Minutes an incomplete checkpoint may rest unchanged before it counts
    /// as corrupt rather than still being written (`trace --settle-minutes`).
    public var settleMinutes: Double?
    /// lm-evaluation-harness tasks: accuracy per checkpoint, full and dropped
    /// (`trace --task`), in the order written. Read from the YAML nodes by
    /// `PipelineYAML.tasks`, not by the decoder.
    public var tasks: [PipelineTask] = []
    /// Few-shot examples per prompt for tasks without their own count (`trace --num-fewshot`).
    public var numFewshot: Int?
    /// Defaults for `droptrace slurm submit` (`PipelineSlurmSection`); `run` ignores them.
    public var slurm: PipelineSlurmSection?
    /// The arithmetic of the matrix products (`trace --precision`); nil: f32.
    public var precision: Precision?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case title, series, checkpoints, calibration, tokenizer, samples, output, eval, slurm, precision
        case seqLen = "seq_len"
        case dropK = "drop_k"
        case settleMinutes = "settle_minutes"
        case numFewshot = "num_fewshot"
    }

    /// Settings read outside the decoder.
    static let tasksKey = "tasks"

    /// Reads and checks a pipeline file; every problem names the file.
    ///
    /// A pipeline file is a small flat mapping, so anything that could make
    /// the YAML library crash, recurse without bound or expand aliases
    /// without bound is refused before values are decoded: files over 1 MiB,
    /// nesting deeper than 64, complex (non-scalar) keys, more than 10,000
    /// values counting every alias expansion, and tags outside YAML's core
    /// schema.
    public static func load(_ url: URL) throws -> PipelineFile {
        let text = try PipelineYAML.read(url)
        let top: Node?
        do { top = try Yams.compose(yaml: text) } catch {
            throw DroptraceError("not valid YAML: \(PipelineYAML.problem(error))", path: url.path)
        }
        guard let mapping = top?.mapping else {
            throw DroptraceError("expected a mapping of pipeline settings", path: url.path)
        }
        try PipelineYAML.checkShape(mapping, path: url.path)
        let keys = mapping.keys.compactMap(\.string)
        let known = Set(CodingKeys.allCases.map(\.rawValue) + [tasksKey])
        if let unknown = keys.sorted().first(where: { !known.contains($0) }) {
            // A quoted or multi-line key may hold line breaks; the error stays one line.
            throw DroptraceError(
                "unknown setting \"\(SystemError.oneLine(unknown))\" (known: \(known.sorted().joined(separator: ", ")))",
                path: url.path)
        }
        if let section = mapping["slurm"] {
            guard let inner = section.mapping else {
                throw DroptraceError("setting \"slurm\" must be a mapping of sbatch settings", path: url.path)
            }
            let names = PipelineSlurmSection.settingNames
            if let unknown = inner.keys.compactMap(\.string).sorted().first(where: { !names.contains($0) }) {
                throw DroptraceError(
                    "unknown setting \"slurm.\(SystemError.oneLine(unknown))\" (known: \(names.sorted().joined(separator: ", ")))",
                    path: url.path)
            }
            // A quoted empty value ("") decodes as absent (as a YAML null does, which leaves the setting out):
            // it would leave the setting out of every job unsaid.
            if let empty = inner.first(where: { $0.value.scalar.map { $0.string.isEmpty && $0.style != .plain } == true })?.key.string {
                throw DroptraceError("slurm.\(SystemError.oneLine(empty)) is empty; give a value or leave the setting out", path: url.path)
            }
        }
        try PipelineYAML.checkDecimalNumbers(mapping, path: url.path)
        try PipelineYAML.checkPaths(mapping, path: url.path)
        try PipelineYAML.checkQuotedTitle(mapping, path: url.path)
        // Checked before decoding, which would only say that the value cannot be read.
        if let node = mapping[CodingKeys.precision.rawValue],
           node.null != nil || node.scalar.flatMap({ Precision(rawValue: $0.string) }) == nil {
            throw DroptraceError(
                "precision must be \(Precision.allCases.map(\.rawValue).joined(separator: " or "))", path: url.path)
        }
        var file = try PipelineYAML.decode(PipelineFile.self, from: text, path: url.path)
        guard (file.series == nil) != (file.checkpoints == nil) else {
            throw DroptraceError("give exactly one of \"series\" (a directory) or \"checkpoints\" (a list)", path: url.path)
        }
        if let problem = file.title.flatMap(TraceOptions.titleProblem) { throw DroptraceError(problem, path: url.path) }
        if let seqLen = file.seqLen, seqLen < 1 { throw DroptraceError("seq_len must be at least 1", path: url.path) }
        if let samples = file.samples, samples < 1 { throw DroptraceError("samples must be at least 1", path: url.path) }
        if file.checkpoints?.isEmpty == true { throw DroptraceError("checkpoints lists no checkpoint", path: url.path) }
        if file.dropK?.isEmpty == true { throw DroptraceError("drop_k lists no value", path: url.path) }
        if let dropK = file.dropK, dropK.contains(where: { $0 < 1 }) {
            throw DroptraceError("drop_k values must be at least 1", path: url.path)
        }
        if let minutes = file.settleMinutes, !(minutes >= 0 && minutes <= 1e6) {
            throw DroptraceError("settle_minutes must be between 0 and 1000000", path: url.path)
        }
        if let numFewshot = file.numFewshot, !(0...TaskSuite.maxFewshot).contains(numFewshot) {
            throw DroptraceError("num_fewshot must be a whole number from 0 to \(TaskSuite.maxFewshot)", path: url.path)
        }
        if let node = mapping.first(where: { $0.key.scalar?.string == tasksKey })?.value {
            file.tasks = try PipelineYAML.tasks(node, path: url.path)
            // Unknown task names are refused now, naming this file, not at run time.
            for task in file.tasks { _ = try task.request(relativeTo: url.deletingLastPathComponent(), path: url.path) }
        }
        try file.slurm?.validate(path: url.path)
        return file
    }

    /// The trace these settings describe, paths resolved against the
    /// directory of `pipeline`, the file they were read from.
    public func options(of pipeline: URL, force: Bool) -> TraceOptions {
        let base = pipeline.deletingLastPathComponent()
        func resolve(_ path: String) -> URL {
            path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path).standardizedFileURL
        }
        func textSource(_ url: URL) -> CalibrationSource {
            var source = CalibrationSource(url: url, seqLen: seqLen, samples: samples, tokenizer: tokenizer.map(resolve))
            source.seqLenSetting = UserSetting(name: "seq_len", file: pipeline.path)
            return source
        }
        var options = TraceOptions(
            checkpoints: series.map { .series(resolve($0)) } ?? .list((checkpoints ?? []).map(resolve)),
            calibration: textSource(resolve(calibration)),
            output: resolve(output), dropK: dropK, force: force, title: title,
            evaluation: eval.map { textSource(resolve($0)) })
        options.dropKSetting = UserSetting(name: "drop_k", file: pipeline.path)
        if let settleMinutes { options.settleTime = settleMinutes * 60 }
        // `load` checked every task name, so none is left out here.
        options.tasks = tasks.compactMap { try? $0.request(relativeTo: base, path: "") }
        options.numFewshot = numFewshot
        options.precision = precision ?? .f32
        return options
    }
}

/// The guards `PipelineFile.load` puts around the YAML library.
enum PipelineYAML {
    /// `text` decoded as `type`, decoding errors as one line naming the setting.
    static func decode<T: Decodable>(_ type: T.Type, from text: String, path: String) throws -> T {
        do { return try YAMLDecoder().decode(type, from: text) } catch let DecodingError.keyNotFound(key, _) {
            throw DroptraceError("missing setting \"\(key.stringValue)\"", path: path)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            // Yams reports a quoted "2" where a number goes as a missing value: the type is what is wrong.
            throw DroptraceError(
                "setting \"\(codingPathText(context.codingPath))\" has the wrong type", path: path)
        } catch {
            throw DroptraceError("cannot read: \(SystemError.oneLine("\(error)"))", path: path)
        }
    }

    /// The YAML library's error in one line: where, what, and while doing
    /// what (its description spreads these over lines with a snippet).
    static func problem(_ error: Error) -> String {
        func located(_ context: YamlError.Context?, _ problem: String, _ mark: Mark) -> String {
            let during = context.map { " (\($0.text) at line \($0.mark.line), column \($0.mark.column))" } ?? ""
            return "line \(mark.line), column \(mark.column): \(problem)\(during)"
        }
        switch error as? YamlError {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return SystemError.oneLine(located(context, problem, mark))
        case .reader(let problem, let offset, let value, _):
            let at = offset.map { "byte \($0): " } ?? ""
            let character = value >= 0 ? String(format: " (U+%04X)", value) : ""
            return SystemError.oneLine("\(at)\(problem)\(character)")
        default:
            return SystemError.oneLine(String(describing: error).split(separator: "\n").first.map(String.init) ?? "")
        }
    }

    /// A core tag as written (`!!str` for tag:yaml.org,2002:str); others as they are.
    static func shortTag(_ tag: Tag) -> String {
        let core = "tag:yaml.org,2002:"
        return tag.description.hasPrefix(core) ? "!!" + tag.description.dropFirst(core.count) : tag.description
    }

    static let maxBytes = 1 << 20
    static let maxDepth = 64
    static let maxValues = 10_000

    /// The file's text, refusing what is not a regular file of at most
    /// `maxBytes` bytes of UTF-8, and nesting deeper than `maxDepth`
    /// (Yams composes recursively, so deep nesting would overflow the stack).
    static func read(_ url: URL) throws -> String {
        let path = url.path
        guard FileManager.default.fileExists(atPath: path) else {
            throw DroptraceError("pipeline file not found", path: path)
        }
        let file = try RegularFile(path: path)
        guard file.size <= maxBytes else {
            throw DroptraceError("is larger than 1 MiB; a pipeline file is a short list of settings", path: path)
        }
        let bytes = try file.bytes(file.size, at: 0)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw DroptraceError("is not UTF-8 text", path: path)
        }
        if nestingBound(bytes) > maxDepth {
            throw DroptraceError(
                "nests lists or mappings more than \(maxDepth) deep; a pipeline file is a short mapping of settings",
                path: path)
        }
        // YAML allows a byte-order mark, which editors on Windows write.
        return text.hasPrefix("\u{FEFF}") ? String(text.dropFirst()) : text
    }

    /// An upper bound on how deeply the document nests collections, from
    /// the text alone: the deepest `[`/`{` nesting plus, for the worst line,
    /// its indentation and its block indicators (`- `, `? `, `: `). Each
    /// level of block nesting needs one of those, so the bound holds; it
    /// overcounts brackets and indicators inside strings, which only makes
    /// it safer.
    static func nestingBound(_ text: [UInt8]) -> Int {
        let bytes = lineBreaksAsLF(text)
        var flow = 0, deepestFlow = 0, worstLine = 0
        var indent = 0, indicators = 0, atLineStart = true
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            let next = index + 1 < bytes.count ? bytes[index + 1] : 0x0A
            switch byte {
            case 0x0A:
                worstLine = max(worstLine, indent + indicators)
                indent = 0
                indicators = 0
                atLineStart = true
            case 0x20 where atLineStart:
                indent += 1
            case UInt8(ascii: "#") where atLineStart || bytes[index - 1] == 0x20:
                // A comment runs to the end of the line.
                while index + 1 < bytes.count && bytes[index + 1] != 0x0A { index += 1 }
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                flow += 1
                deepestFlow = max(deepestFlow, flow)
                atLineStart = false
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                flow = max(0, flow - 1)
                atLineStart = false
            case UInt8(ascii: "-"), UInt8(ascii: "?"), UInt8(ascii: ":"):
                if next == 0x20 || next == 0x0A || next == 0x0D || next == 0x09 { indicators += 1 }
                atLineStart = false
            default:
                atLineStart = false
            }
            index += 1
        }
        return deepestFlow + max(worstLine, indent + indicators)
    }

    /// `bytes` with every line break libyaml knows (CR, NEL, U+2028,
    /// U+2029, in UTF-8) as LF: each starts a line as LF does (NEL-separated
    /// lines nested past the bound unseen).
    static func lineBreaksAsLF(_ bytes: [UInt8]) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 0x0D {
                result.append(0x0A)
            } else if byte == 0xC2, index + 1 < bytes.count, bytes[index + 1] == 0x85 {
                result.append(0x0A)
                index += 1
            } else if byte == 0xE2, index + 2 < bytes.count, bytes[index + 1] == 0x80, bytes[index + 2] == 0xA8 || bytes[index + 2] == 0xA9 {
                result.append(0x0A)
                index += 2
            } else {
                result.append(byte)
            }
            index += 1
        }
        return result
    }

    /// The `tasks:` setting: a mapping from task name to a mapping with
    /// `eval` (the evaluation file) and optionally `fewshot` (the file
    /// few-shot examples are drawn from) and `num_fewshot` (this task's
    /// count, over the file's `num_fewshot`), e.g.
    ///
    ///     tasks:
    ///       piqa: {eval: piqa/valid.jsonl, fewshot: piqa/train.jsonl, num_fewshot: 5}
    ///
    /// Task names are checked against the supported tasks later, by
    /// `PipelineTask.request`; here only the shape: no other keys, every
    /// file a non-empty string, counts whole numbers 0...1000 (a key given
    /// twice was refused by `checkShape`).
    static func tasks(_ node: Node, path: String) throws -> [PipelineTask] {
        let shape = "tasks must map each task name to {eval: FILE, fewshot: FILE, num_fewshot: N} (fewshot and num_fewshot optional)"
        guard let mapping = node.mapping, !mapping.isEmpty else { throw DroptraceError(shape, path: path) }
        var tasks: [PipelineTask] = []
        for (key, value) in mapping {
            guard let name = key.scalar?.string, !name.isEmpty, key.null == nil else {
                throw DroptraceError(shape, path: path)
            }
            let quoted = "\"\(SystemError.oneLine(name))\""
            guard let files = value.mapping else {
                throw DroptraceError("task \(quoted): \(shape)", path: path)
            }
            var found: [String: String] = [:]
            var shots: Int?
            for (fileKey, fileValue) in files {
                let label = fileKey.scalar?.string ?? ""
                guard ["eval", "fewshot", "num_fewshot"].contains(label) else {
                    throw DroptraceError(
                        "task \(quoted): unknown key \"\(SystemError.oneLine(label))\" (known: eval, fewshot, num_fewshot)",
                        path: path)
                }
                if label == "num_fewshot" {
                    guard let count = fileValue.int, (0...TaskSuite.maxFewshot).contains(count) else {
                        throw DroptraceError("task \(quoted): num_fewshot must be a whole number from 0 to \(TaskSuite.maxFewshot)", path: path)
                    }
                    shots = count
                    found[label] = String(count)
                    continue
                }
                guard fileValue.null == nil, let file = fileValue.scalar?.string, !file.isEmpty else {
                    throw DroptraceError("task \(quoted): \(label) must be a file path", path: path)
                }
                if let problem = pathProblem(file) { throw DroptraceError("task \(quoted): \(label) \(problem)", path: path) }
                found[label] = file
            }
            guard let evaluation = found["eval"] else {
                throw DroptraceError("task \(quoted) has no eval file", path: path)
            }
            tasks.append(PipelineTask(name: name, evaluation: evaluation, fewshot: found["fewshot"], numFewshot: shots))
        }
        return tasks
    }

    /// The settings that are numbers (`slurm.` ones in the section, `tasks`
    /// counts under each task): whole numbers, and `settle_minutes`, which
    /// may have a fraction.
    static let wholeNumberSettings = ["seq_len", "samples", "drop_k", "num_fewshot",
                                      "slurm.shards", "slurm.array_parallelism", "slurm.cpus_per_task"]
    static let fractionalSettings = ["settle_minutes"]

    /// Refuses numbers not written in decimal. Yams reads YAML 1.1, where
    /// 0x10, 0o20, 0b10000, 020 (octal: 16), 1_6 and 0:16 (base 60) are all
    /// numbers, and a hexadecimal fraction (0x1p4) is read too; YAML 1.2
    /// and most readers take 020 for 20 and the others for text, so the
    /// value droptrace would use is not the one the file seems to say.
    /// Leading zeros are refused for the same reason. Values that are not
    /// plain scalars are left to the decoder, which names their type.
    static func checkDecimalNumbers(_ mapping: Node.Mapping, path: String) throws {
        let whole = #/[-+]?(0|[1-9][0-9]*)/#
        // YAML 1.1's float (PyYAML's too) has a point and a signed exponent:
        // 1e1 and 1.0e1 are text there, numbers in YAML 1.2.
        let fractional = #/[-+]?(0|[1-9][0-9]*)(\.[0-9]*([eE][-+][0-9]+)?)?|[-+]?\.[0-9]+([eE][-+][0-9]+)?/#
        func check(_ node: Node, setting: String, fraction: Bool) throws {
            let items = node.sequence.map(Array.init) ?? [node]
            for item in items {
                // Quoted empty text decodes as absent (the default): a value meant, and lost.
                if let scalar = item.scalar, scalar.style != .plain, scalar.string.isEmpty {
                    throw DroptraceError("setting \"\(setting)\" is empty text; write a number, or leave the setting out", path: path)
                }
                guard let scalar = item.scalar, scalar.style == .plain, item.null == nil else { continue }
                let text = scalar.string
                let decimal = fraction ? text.wholeMatch(of: fractional) != nil : text.wholeMatch(of: whole) != nil
                // Text that is no number at all ("five") is the decoder's to name.
                if !decimal, item.int != nil || item.float != nil {
                    throw DroptraceError(
                        "setting \"\(setting)\" is \"\(SystemError.oneLine(String(text.prefix(40))))\"; write it as a "
                            + (fraction ? "decimal number" : "whole number in decimal")
                            + (fraction ? " with a point and a signed exponent if any (1.0e+1: YAML 1.1 reads 1e1 as text, 1.2 as a number;"
                                + " and hexadecimal, octal, binary, base-60 and leading-zero numbers in other bases)"
                                : " (YAML reads hexadecimal, octal, binary, base-60 and leading-zero numbers in other bases)"),
                        path: path)
                }
            }
        }
        for (key, value) in mapping {
            guard let name = key.scalar?.string else { continue }
            if let inner = value.mapping, name == "slurm" || name == PipelineFile.tasksKey {
                for (innerKey, innerValue) in inner {
                    if name == PipelineFile.tasksKey, let task = innerValue.mapping {
                        for (field, count) in task where field.scalar?.string == "num_fewshot" {
                            try check(count, setting: "tasks.\(SystemError.oneLine(innerKey.scalar?.string ?? "")).num_fewshot",
                                      fraction: false)
                        }
                    } else if let field = innerKey.scalar?.string, wholeNumberSettings.contains("\(name).\(field)") {
                        try check(innerValue, setting: "\(name).\(field)", fraction: false)
                    }
                }
            } else if wholeNumberSettings.contains(name) || fractionalSettings.contains(name) {
                try check(value, setting: name, fraction: fractionalSettings.contains(name))
            }
        }
    }

    /// Settings naming one file or directory, and lists of them.
    static let pathSettings = ["series", "calibration", "tokenizer", "output", "eval"]
    static let pathListSettings = ["checkpoints", "compare"]

    /// Refuses path settings that would name another place than written:
    /// YAML's null (`~`, `null`), which the decoder turns into the text
    /// "~" or "null" for a setting that must be given (an optional one given
    /// as null is absent), an empty path (the pipeline file's own
    /// directory), and the paths `pathProblem` names. Values of other kinds
    /// are left to the decoder, which names their type.
    /// Refuses a quoted `title` that titles nothing (`title: ""`): Yams
    /// decodes quoted empty text as absent, the default title, though one was written.
    static func checkQuotedTitle(_ mapping: Node.Mapping, path: String) throws {
        if let title = mapping["title"]?.scalar, title.style != .plain, let problem = TraceOptions.titleProblem(title.string) {
            throw DroptraceError(problem, path: path)
        }
    }

    static func checkPaths(_ mapping: Node.Mapping, path: String) throws {
        for (key, value) in mapping {
            guard let name = key.scalar?.string else { continue }
            let isList = pathListSettings.contains(name)
            guard isList || pathSettings.contains(name) else { continue }
            let items = isList ? value.sequence.map(Array.init) ?? [] : [value]
            for item in items {
                let setting = isList ? "an entry of \"\(name)\"" : "setting \"\(name)\""
                // Yams reads a quoted '' or 'null' as null too; only a plain one is YAML's null.
                if item.null != nil, item.scalar?.style == .plain {
                    // An optional setting given as null is absent, as the decoder reads it.
                    if isList || !["series", "eval"].contains(name) {
                        throw DroptraceError("\(setting) is null (YAML reads ~, null and nothing as no value); give a path", path: path)
                    }
                    continue
                }
                guard let text = item.scalar?.string else { continue }
                if text.isEmpty { throw DroptraceError("\(setting) is empty; give a path", path: path) }
                if let problem = pathProblem(text) { throw DroptraceError("\(setting) \(problem)", path: path) }
                // A listed checkpoint's directory name is its row's name in the store, which holds one line of text.
                let checkpointName = CheckpointDiscovery.rowName(of: URL(fileURLWithPath: text))
                if name == "checkpoints", !ScoreFileMetadata.isOneLine(checkpointName, atMost: 4096) {
                    throw DroptraceError(
                        "\(setting) names checkpoint '\(SystemError.oneLine(String(checkpointName.prefix(40))))', which is no line of text "
                            + "(a control character or line break, or over 4096 bytes): its name would be its row's in the store; "
                            + "rename the directory, or list a link to it under another name", path: path)
                }
            }
        }
    }

    /// Why `text` cannot be a path of a pipeline file, nil when it can: a
    /// NUL character (no file name holds one; Foundation would write
    /// `%00` instead), or a leading `~`, which only a shell expands to a
    /// home directory (here it would be a directory named `~`).
    static func pathProblem(_ text: String) -> String? {
        if text.contains("\u{0}") { return "holds a NUL character, which no path can hold" }
        if text.hasPrefix("~") {
            return "begins with ~, which only a shell expands to a home directory; write the path in full"
        }
        return nil
    }

    /// Refuses complex keys, a key given twice in any mapping (the top
    /// level, `slurm`, `tasks` and each task, any other; Yams would keep
    /// the last value), tags outside the core schema (or core tags that
    /// change a value's type) and documents
    /// whose aliases expand to more than `maxValues` values, walking the
    /// composed nodes (aliases are shared there, so nothing has been
    /// expanded yet) and stopping at the first excess.
    /// - Throws: `DroptraceError` naming `path`; a repeated key as its dotted
    ///   setting (`gives setting "slurm.shards" twice`).
    static func checkShape(_ mapping: Node.Mapping, path: String) throws {
        let coreTags = Set([Tag.Name.str, .seq, .map, .bool, .float, .null, .int, .implicit, .nonSpecific].map(\.rawValue))
        var seen = 0
        if mapping.keys.contains(where: { $0.scalar == nil }) {
            throw DroptraceError("has a setting whose name is a list or mapping (a YAML complex key)", path: path)
        }
        func visit(_ node: Node, setting: String) throws {
            seen += 1
            if seen > maxValues {
                throw DroptraceError(
                    "holds more than \(maxValues) values (aliases counted as often as they are used); a pipeline file is a short list of settings",
                    path: path)
            }
            if !coreTags.contains(node.tag.description) {
                throw DroptraceError("uses the YAML tag \"\(shortTag(node.tag))\"; pipeline settings are plain values", path: path)
            }
            switch node {
            case .scalar(let scalar):
                // A core tag that gives a value another type than it is written as
                // (`!!str 32`, `!!float 32`): the decoder would read what is written.
                let written = scalar.style == .plain ? Resolver.default.resolveTag(of: Node(scalar.string)) : Tag.Name.str
                if node.tag.description != written.rawValue {
                    throw DroptraceError(
                        "uses the YAML tag \"\(shortTag(node.tag))\" on \"\(SystemError.oneLine(scalar.string))\"; pipeline settings are plain values",
                        path: path)
                }
            case .sequence(let sequence):
                for (index, item) in sequence.enumerated() { try visit(item, setting: "\(setting)[\(index)]") }
            case .mapping(let inner):
                var keys = Set<String>()
                for (key, value) in inner {
                    guard case .scalar(let scalar) = key else {
                        throw DroptraceError("has a mapping key that is a list or mapping (a YAML complex key)", path: path)
                    }
                    let name = setting.isEmpty ? scalar.string : "\(setting).\(scalar.string)"
                    if !keys.insert(scalar.string).inserted {
                        throw DroptraceError("gives setting \"\(SystemError.oneLine(name))\" twice", path: path)
                    }
                    try visit(key, setting: name)
                    try visit(value, setting: name)
                }
            }
        }
        try visit(.mapping(mapping), setting: "")
    }
}

/// One entry of a pipeline file's `tasks:`, paths as written.
public struct PipelineTask: Sendable, Equatable {
    public var name: String
    public var evaluation: String
    public var fewshot: String?
    /// This task's few-shot count; nil: the file's `num_fewshot`.
    public var numFewshot: Int?

    public init(name: String, evaluation: String, fewshot: String? = nil, numFewshot: Int? = nil) {
        self.name = name
        self.evaluation = evaluation
        self.fewshot = fewshot
        self.numFewshot = numFewshot
    }

    /// The task with its files resolved against `base` (absolute paths stay).
    /// - Throws: `DroptraceError` naming `path` when the task is not supported.
    func request(relativeTo base: URL, path: String) throws -> TaskRequest {
        func resolve(_ file: String) -> URL {
            file.hasPrefix("/") ? URL(fileURLWithPath: file) : base.appendingPathComponent(file).standardizedFileURL
        }
        guard TaskRequest.supportedNames.contains(name) else {
            throw DroptraceError(
                "tasks: unknown task \"\(SystemError.oneLine(name))\" (supported: \(TaskRequest.supportedNames.joined(separator: ", ")))",
                path: path)
        }
        return TaskRequest(name: name, evaluationFile: resolve(evaluation), fewshotFile: fewshot.map(resolve), numFewshot: numFewshot)
    }
}

import DroptraceSupport
import Foundation

/// Multiple-choice task accuracy of every checkpoint of a series, in full
/// and without its own drop-k attention layers, as `trace --task` measures
/// it and the report plots it. In the score file (C = checkpoints, in the
/// order of `/checkpoints/name`):
///
///     /evaluation/tasks/<task>              group, one per task (lm-evaluation-harness name)
///       acc_full            float64 [C]   the full model's acc
///       acc_own_k<k>        float64 [C]   without the checkpoint's own drop-k attention layers
///       acc_norm_full       float64 [C]   the same for acc_norm, for tasks that define it
///       acc_norm_own_k<k>   float64 [C]
///       @evaluation_sha256  string        sha256 of the evaluation file's bytes
///       @fewshot_sha256     string        sha256 of the few-shot file's bytes, "" without one
///       @num_fewshot        int64         few-shot examples per prompt
///
/// NaN where a value was not measured (the run that needed it did not
/// evaluate the task, or the checkpoint was no longer on disk); a task with
/// no value left is not written. In memory a missing value is nil, so a record equals
/// its own round trip through a file.
public struct TaskAccuracyRecord: Sendable, Equatable {
    /// One model's `acc` and, for tasks that define it, `acc_norm` (fractions in [0, 1]).
    public struct Accuracy: Sendable, Equatable {
        public var acc: Double
        public var accNorm: Double?

        public init(acc: Double, accNorm: Double?) {
            self.acc = acc
            self.accNorm = accNorm
        }
    }

    /// One checkpoint's values on one task.
    public struct Values: Sendable, Equatable {
        public var full: Accuracy?
        /// By drop-k: the model without the checkpoint's own k least important attention layers.
        public var own: [Int: Accuracy] = [:]

        public init(full: Accuracy? = nil, own: [Int: Accuracy] = [:]) {
            self.full = full
            self.own = own
        }
    }

    /// What a task's values were measured on; values measured on other
    /// files or another number of few-shot examples are not comparable.
    public struct Settings: Sendable, Equatable {
        public var evaluationSHA256: String
        /// "" without a few-shot file.
        public var fewshotSHA256: String
        public var numFewshot: Int

        public init(evaluationSHA256: String, fewshotSHA256: String, numFewshot: Int) {
            self.evaluationSHA256 = evaluationSHA256
            self.fewshotSHA256 = fewshotSHA256
            self.numFewshot = numFewshot
        }
    }

    public struct Task: Sendable, Equatable {
        public var settings: Settings
        /// Whether the task defines `acc_norm` (then every stored value has it).
        public var hasNormalized: Bool
        /// By checkpoint name.
        public var byCheckpoint: [String: Values] = [:]

        public init(settings: Settings, hasNormalized: Bool, byCheckpoint: [String: Values] = [:]) {
            self.settings = settings
            self.hasNormalized = hasNormalized
            self.byCheckpoint = byCheckpoint
        }

        /// The drop-k sizes with at least one stored value, ascending.
        public var dropK: [Int] { Set(byCheckpoint.values.flatMap(\.own.keys)).sorted() }
    }

    /// By task name.
    public var tasks: [String: Task] = [:]

    public init(tasks: [String: Task] = [:]) { self.tasks = tasks }

    public var isEmpty: Bool { tasks.isEmpty }

    /// What `write(into:rows:dropK:)` keeps of this record, i.e. what reading
    /// the written file gives back: values of `rows` and of `dropK` only.
    public func stored(rows: [String], dropK: [Int]) -> TaskAccuracyRecord {
        let (names, sizes) = (Set(rows), Set(dropK))
        var kept = self
        for (name, task) in tasks {
            var values: [String: Values] = [:]
            for (checkpoint, value) in task.byCheckpoint where names.contains(checkpoint) {
                let trimmed = Values(full: value.full, own: value.own.filter { sizes.contains($0.key) })
                if trimmed.full != nil || !trimmed.own.isEmpty { values[checkpoint] = trimmed }
            }
            // A task none of whose values are left (every row rescored by a run without it, --force) is not kept
            // as a table of nothing, as perplexities are not.
            kept.tasks[name]?.byCheckpoint = values
            if values.isEmpty { kept.tasks[name] = nil }
        }
        return kept
    }

    /// Writes `/evaluation/tasks/...` for `rows` (values of other checkpoints
    /// are left out) and the drop-k sizes `dropK`. Meant for
    /// `ScoreFile.write(to:extra:)`; writes nothing for an empty record.
    public func write(into file: HDF5File, rows: [String], dropK: [Int]) throws {
        typealias Names = ScoreFileLayout.TaskAccuracy
        for (name, task) in stored(rows: rows, dropK: dropK).tasks.sorted(by: { $0.key < $1.key }) {
            let group = try file.createGroup("\(ScoreFileLayout.evaluationTasks)/\(name)")
            let values = rows.map { task.byCheckpoint[$0] ?? Values() }
            for metric in task.hasNormalized ? [Names.acc, Names.accNorm] : [Names.acc] {
                let pick: (Accuracy?) -> Double = metric == Names.acc ? { $0?.acc ?? .nan } : { $0?.accNorm ?? .nan }
                try group.createDataset(Names.full(metric), values: values.map { pick($0.full) }, storage: ScoreFileLayout.storage)
                for k in dropK {
                    try group.createDataset(
                        Names.own(metric, k: k), values: values.map { pick($0.own[k]) }, storage: ScoreFileLayout.storage)
                }
            }
            try group.setAttribute(Names.evaluationSHA256, task.settings.evaluationSHA256)
            try group.setAttribute(Names.fewshotSHA256, task.settings.fewshotSHA256)
            try group.setAttribute(Names.numFewshot, Int64(task.settings.numFewshot))
        }
    }

    /// Reads what `write(into:rows:dropK:)` stored, for the checkpoints
    /// `rows` (`/checkpoints/name` of the same file); an empty record when
    /// the file holds none. Every dataset must be float64 of shape [C].
    /// - Throws: `DroptraceError` naming the file and the offending dataset or attribute.
    public static func read(from file: HDF5File, rows: [String]) throws -> TaskAccuracyRecord {
        typealias Names = ScoreFileLayout.TaskAccuracy
        let root = ScoreFileLayout.evaluationTasks
        guard try file.exists(root) else { return TaskAccuracyRecord() }
        guard try file.kind(of: root) == .group else {
            throw DroptraceError("/\(root) is not a group", path: file.filePath)
        }
        var record = TaskAccuracyRecord()
        let names = try file.group(root).childNames().sorted()
        let strange = names.filter { !ScoreFileLayout.isLowercaseName($0) }
        if names.count > 256 || !strange.isEmpty {
            let shown = (strange.isEmpty ? names : strange).map { SystemError.oneLine(String($0.prefix(40))) }.shownInMessage()
            throw DroptraceError(
                "/\(root) holds \(names.count > 256 ? "\(names.count) groups" : "groups") that name no task (\(shown)): the file was changed by other software",
                path: file.filePath)
        }
        // Drop-k columns beyond the model's layers are refused (read once for every task).
        let layers = try file.scalarAttribute(ScoreFileLayout.Attribute.numLayers, as: Int64.self)
        for name in names {
            let path = "\(root)/\(name)"
            guard try file.kind(of: path) == .group else {
                throw DroptraceError("/\(path) is not a group", path: file.filePath)
            }
            let group = try file.group(path)
            let numFewshot = try group.scalarAttribute(Names.numFewshot, as: Int64.self)
            guard numFewshot >= 0, numFewshot <= Int64(Int32.max) else {
                throw DroptraceError("/\(path) attribute \(Names.numFewshot) is \(numFewshot)", path: file.filePath)
            }
            let settings = Settings(
                evaluationSHA256: try group.stringAttribute(Names.evaluationSHA256),
                fewshotSHA256: try group.stringAttribute(Names.fewshotSHA256), numFewshot: Int(numFewshot))
            // The files' SHA-256 in hex; no few-shot file: empty.
            for (attribute, value) in [(Names.evaluationSHA256, settings.evaluationSHA256), (Names.fewshotSHA256, settings.fewshotSHA256)]
            where !ScoreFileMetadata.isDigest(value) && !(attribute == Names.fewshotSHA256 && value.isEmpty) {
                throw DroptraceError("/\(path) attribute \(attribute) is not 64 lowercase hex digits", path: file.filePath)
            }
            // Few-shot examples come from a few-shot file (the evaluation file never lends them).
            if settings.numFewshot > 0, settings.fewshotSHA256.isEmpty {
                throw DroptraceError(
                    "/\(path) attribute \(Names.numFewshot) is \(numFewshot) with no few-shot file (\(Names.fewshotSHA256) empty), "
                        + "which no evaluation runs: the file was changed by other software", path: file.filePath)
            }
            func column(_ dataset: String) throws -> [Double] {
                try group.measurements(dataset, count: rows.count, groupPath: path, expected: "an accuracy in 0...1") { (0...1).contains($0) }
            }
            let children = try group.childNames()
            let hasNormalized = children.contains(Names.full(Names.accNorm))
            var task = Task(settings: settings, hasNormalized: hasNormalized)
            let accuracies: (String?) throws -> [Accuracy?] = { suffix in
                let acc = try column(suffix.map { "\(Names.acc)_\($0)" } ?? Names.full(Names.acc))
                let norm = hasNormalized ? try column(suffix.map { "\(Names.accNorm)_\($0)" } ?? Names.full(Names.accNorm)) : nil
                return acc.indices.map { index in
                    acc[index].isNaN ? nil : Accuracy(acc: acc[index], accNorm: norm.map { $0[index] }.flatMap { $0.isNaN ? nil : $0 })
                }
            }
            let full = try accuracies(nil)
            for (index, row) in rows.enumerated() where full[index] != nil {
                task.byCheckpoint[row, default: Values()].full = full[index]
            }
            for child in children {
                guard let k = Names.dropK(fromOwn: child) else { continue }
                guard k <= layers else {
                    throw DroptraceError("/\(path)/\(child) is for drop-\(k), which a model of \(layers) layers has not", path: file.filePath)
                }
                for (index, value) in try accuracies("own_k\(k)").enumerated() {
                    if let value { task.byCheckpoint[rows[index], default: Values()].own[k] = value }
                }
            }
            record.tasks[name] = task
        }
        return record
    }
}

extension ScoreFileLayout {
    /// The group of per-task accuracy (`TaskAccuracyRecord`), one subgroup per task.
    public static let evaluationTasks = "evaluation/tasks"

    /// Names inside `/evaluation/tasks/<task>`.
    public enum TaskAccuracy {
        /// Metric names, as lm-evaluation-harness spells them.
        public static let acc = "acc"
        public static let accNorm = "acc_norm"
        public static func full(_ metric: String) -> String { "\(metric)_full" }
        public static func own(_ metric: String, k: Int) -> String { "\(metric)_own_k\(k)" }
        public static let evaluationSHA256 = "evaluation_sha256"
        public static let fewshotSHA256 = "fewshot_sha256"
        public static let numFewshot = "num_fewshot"

        /// k of an `acc_own_k<k>` dataset name (k ≥ 1), nil for any other name.
        static func dropK(fromOwn name: String) -> Int? {
            let prefix = "\(acc)_own_k"
            guard name.hasPrefix(prefix), let k = Int(name.dropFirst(prefix.count)), k >= 1,
                  String(k) == name.dropFirst(prefix.count) else { return nil }
            return k
        }
    }
}

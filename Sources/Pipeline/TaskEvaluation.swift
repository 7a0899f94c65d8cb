import Analysis
import Architectures
import CheckpointIO
import Crypto
import DroptraceSupport
import Evaluation
import Foundation
import ScoreStore
import Scoring
import Tokenization

/// Task accuracy of each checkpoint in full and without its own drop-k
/// attention layers (`trace --task`), kept in a `TaskAccuracyRecord` that
/// lives in the store. Like `DropEvaluation` for perplexity, each run fills
/// in only what is missing or stale for the checkpoints on disk: a task whose
/// files or few-shot count changed is measured again from scratch, a
/// rescored checkpoint loses its values (see `TraceRun`), values of
/// checkpoints no longer on disk are kept.
struct TaskEvaluation {
    let requests: [TaskRequest]
    let numFewshot: Int?
    /// The tokenizer directory read instead of each checkpoint's (`--tokenizer`).
    let tokenizer: URL?
    /// Every requested task, loaded once.
    let suite: TaskSuite
    /// What each requested task is measured on, by task name.
    let settings: [String: TaskAccuracyRecord.Settings]

    /// Reads and checks every task file once (before any checkpoint is loaded).
    /// - Throws: `DroptraceError` naming the offending file.
    init(requests: [TaskRequest], numFewshot: Int?, tokenizer: URL? = nil) throws {
        self.requests = requests
        self.numFewshot = numFewshot
        self.tokenizer = tokenizer
        suite = try TaskSuite(requests, numFewshot: numFewshot)
        var settings: [String: TaskAccuracyRecord.Settings] = [:]
        for request in requests {
            settings[request.name] = TaskAccuracyRecord.Settings(
                evaluationSHA256: try Self.sha256(of: request.evaluationFile),
                fewshotSHA256: try request.fewshotFile.map(Self.sha256(of:)) ?? "",
                numFewshot: request.numFewshot ?? numFewshot ?? 0)
        }
        self.settings = settings
    }

    /// Fills in `record` for the checkpoints of `store` that are on disk.
    func update(
        _ record: inout TaskAccuracyRecord, store: ScoreFile, analysis: SeriesAnalysis,
        onDisk: [DiscoveredCheckpoint], log: (String) -> Void
    ) -> [(name: String, error: String)] {
        for request in requests where record.tasks[request.name]?.settings != settings[request.name] {
            if record.tasks[request.name] != nil {
                log("\(request.name): its files or num_fewshot changed; measuring every checkpoint again")
            }
            record.tasks[request.name] = TaskAccuracyRecord.Task(settings: settings[request.name]!, hasNormalized: false)
        }
        let checkpoints = Dictionary(onDisk.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        // Suites of the tasks a checkpoint lacks, by their names (usually all of them).
        var suites: [[String]: TaskSuite] = [requests.map(\.name): suite]
        var failures: [(name: String, error: String)] = []
        for (index, row) in store.rows.enumerated() {
            guard let checkpoint = checkpoints[row.name] else { continue }
            // nil: the full model; k: without the checkpoint's own drop-k attention set.
            var missing: [(k: Int?, tasks: [String])] = []
            let full = requests.map(\.name).filter { record.tasks[$0]?.byCheckpoint[row.name]?.full == nil }
            if !full.isEmpty { missing.append((nil, full)) }
            for k in analysis.attentionDropK {
                let own = requests.map(\.name).filter { record.tasks[$0]?.byCheckpoint[row.name]?.own[k] == nil }
                if !own.isEmpty { missing.append((k, own)) }
            }
            guard !missing.isEmpty else { continue }
            do {
                try measure(missing, of: row.name, index: index, directory: checkpoint.directory, into: &record, suites: &suites,
                            analysis: analysis, log: log)
            } catch {
                DropEvaluation.record(error, of: checkpoint, in: &failures, log: log)
            }
        }
        return failures
    }

    /// The `missing` accuracies of checkpoint `row` (at `index`); those
    /// measured before a failure are kept.
    private func measure(
        _ missing: [(k: Int?, tasks: [String])], of row: String, index: Int, directory: URL,
        into record: inout TaskAccuracyRecord, suites: inout [[String]: TaskSuite], analysis: SeriesAnalysis,
        log: (String) -> Void
    ) throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: directory))
        let tokenizer = try EvaluationTokenizer.load(
            for: model.checkpoint, from: tokenizer, purpose: "task accuracy", requestedBy: directory.path)
        for (k, names) in missing {
            let suite = try suites[names] ?? TaskSuite(requests.filter { names.contains($0.name) }, numFewshot: numFewshot)
            suites[names] = suite
            let plan = k.map { DropPlan(attention: Set(analysis.attention.dropSet(checkpoint: index, k: $0))) } ?? .none
            log("task accuracy of \(row)" + (k.map { " without its own drop-\($0) attention layers" } ?? ""))
            let result = try suite.evaluate(model: model, plan: plan, tokenizer: tokenizer)
            for name in names {
                guard let metrics = result.tasks[name] else { continue }
                let accuracy = TaskAccuracyRecord.Accuracy(acc: metrics.acc, accNorm: metrics.acc_norm)
                record.tasks[name]?.hasNormalized = metrics.acc_norm != nil
                if let k {
                    record.tasks[name]?.byCheckpoint[row, default: .init()].own[k] = accuracy
                } else {
                    record.tasks[name]?.byCheckpoint[row, default: .init()].full = accuracy
                }
            }
        }
    }

    /// Hex sha256 of a file's bytes, read in pieces.
    static func sha256(of url: URL) throws -> String {
        let file = try RegularFile(path: url.path)
        var hash = SHA256()
        var offset = 0
        while offset < file.size {
            let piece = try file.bytes(min(1 << 20, file.size - offset), at: offset)
            hash.update(data: piece)
            offset += piece.count
        }
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

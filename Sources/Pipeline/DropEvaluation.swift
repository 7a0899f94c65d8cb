import Analysis
import Architectures
import CheckpointIO
import DroptraceSupport
import Dropping
import Foundation
import Scoring
import ScoreStore
import Tokenization

/// Computing `DropEvaluation` (stored and reported by the Analysis and
/// Reporting modules) needs the models, so it lives here.
extension DropEvaluation {
    /// Fills in what is missing or stale for the checkpoints on disk. Every
    /// value computed on other evaluation tokens than the source gives now
    /// (another file, other contents, other windows) is dropped first.
    /// - Returns: the checkpoints that failed, one line each naming its
    ///   directory (a model that does not load, a tokenizer missing or
    ///   turning the text into other tokens than the first checkpoint's);
    ///   their values stay as they were, the others' are computed.
    mutating func update(
        store: ScoreFile, analysis: SeriesAnalysis, onDisk: [DiscoveredCheckpoint], source: CalibrationSource,
        log: (String) -> Void
    ) -> [(name: String, error: String)] {
        guard let final = store.rows.last else { return [] }
        let directories = Dictionary(onDisk.map { ($0.name, $0.directory) }, uniquingKeysWith: { a, _ in a })
        var failures: [(name: String, error: String)] = []
        var failed: Set<String> = []
        var loaded: (name: String, model: any LanguageModel, windows: CalibrationSet)?
        /// The model and windows of `name`, nil (a failure recorded once) when they cannot be had.
        func load(_ name: String) -> (model: any LanguageModel, windows: CalibrationSet)? {
            if let loaded, loaded.name == name { return (loaded.model, loaded.windows) }
            guard !failed.contains(name), let directory = directories[name] else { return nil }
            do {
                let model = try ModelRegistry.load(try Checkpoint(directory: directory))
                let windows = try CheckpointScoring.loadCalibration(source, for: model, as: .evaluation, warn: log)
                loaded = (name, model, windows)
                return (model, windows)
            } catch {
                failed.insert(name)
                Self.record(error, of: name, directory: directory, in: &failures, log: log)
                return nil
            }
        }
        // The tokens are those of the first checkpoint on disk that loads (each is tokenised with its own tokenizer).
        var firstSHA: String?
        for row in store.rows where firstSHA == nil { firstSHA = load(row.name)?.windows.sha256 }
        if let sha = firstSHA {
            if !evaluationSHA256.isEmpty, evaluationSHA256 != sha, !byCheckpoint.isEmpty {
                log("the evaluation tokens changed (sha256 \(evaluationSHA256.prefix(12))…, now \(sha.prefix(12))…): "
                    + "every perplexity is computed again")
                byCheckpoint = [:]
                finalCheckpoint = ""
            }
            evaluationSHA256 = sha
        }
        let finalChanged = final.name != finalCheckpoint
        if finalChanged {
            // Values against an older final set are stale, for checkpoints rotated away or failing now too.
            for name in byCheckpoint.keys { byCheckpoint[name]?.final = [:] }
            finalCheckpoint = final.name
        }
        for (index, row) in store.rows.enumerated() {
            guard let directory = directories[row.name] else { continue }
            var values = byCheckpoint[row.name] ?? Perplexities()
            let needed = values.full.isNaN || analysis.dropK.contains { values.own[$0] == nil || values.final[$0] == nil }
            guard needed, let (model, windows) = load(row.name) else { continue }
            guard windows.sha256 == evaluationSHA256 else {
                failures.append((row.name, DroptraceError(
                    "its tokenizer turns the evaluation text into other tokens than the series' first checkpoint's "
                        + "(sha256 \(windows.sha256.prefix(12))…, not \(evaluationSHA256.prefix(12))…): no perplexity",
                    path: directory.path).description))
                continue
            }
            func perplexity(_ attention: [Int]) throws -> Double {
                try LanguageModelLoss.evaluate(
                    model: model, plan: DropPlan(attention: Set(attention)), windows: windows.sequences,
                    sourcePath: source.url.path
                ).perplexity
            }
            log("perplexity of \(row.name)")
            do {
                if values.full.isNaN { values.full = try perplexity([]) }
                for k in analysis.dropK {
                    if values.own[k] == nil { values.own[k] = try perplexity(analysis.attention.dropSet(checkpoint: index, k: k)) }
                    if values.final[k] == nil {
                        values.final[k] = try perplexity(analysis.attention.dropSet(checkpoint: store.rows.count - 1, k: k))
                    }
                }
            } catch {
                Self.record(error, of: row.name, directory: directory, in: &failures, log: log)
            }
            // What was computed before a failure is kept.
            byCheckpoint[row.name] = values
        }
        return failures
    }

    /// `failures` with one line for a checkpoint whose evaluation failed:
    /// the error as it is when it names a file, else with the checkpoint's
    /// directory. A checkpoint deleted meanwhile (`save_total_limit`) is no
    /// failure: it is `log`ged, as one deleted before the run.
    static func record(
        _ error: Error, of name: String, directory: URL, in failures: inout [(name: String, error: String)],
        log: (String) -> Void
    ) {
        guard FileManager.default.fileExists(atPath: directory.path) else {
            log("\(directory.path): deleted during the evaluation; its values stay as they were")
            return
        }
        let line = (error as? DroptraceError).map { error in
            error.path == nil ? DroptraceError(error.message, path: directory.path).description : error.description
        } ?? "\(directory.path): \(error)"
        failures.append((name, line))
    }
}

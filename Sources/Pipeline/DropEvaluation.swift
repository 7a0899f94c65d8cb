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
    /// Fills in what is missing or stale for the checkpoints on disk. Each
    /// checkpoint tokenises the source with its own tokenizer; the tokens
    /// every perplexity is measured on are the final checkpoint's (the
    /// newest on disk that loads, when the final does not), so an early
    /// checkpoint saved with another tokenizer fails alone rather than every
    /// later one. Every value computed on other evaluation tokens than those
    /// (another file, other contents, other windows, a new final checkpoint
    /// whose tokenizer gives others) is dropped first.
    /// - Returns: the checkpoints that failed, one line each naming its
    ///   directory (a model that does not load, a tokenizer missing or
    ///   turning the text into other tokens than the final checkpoint's);
    ///   their values stay as they were, the others' are computed.
    mutating func update(
        store: ScoreFile, analysis: SeriesAnalysis, onDisk: [DiscoveredCheckpoint], source: CalibrationSource,
        log: (String) -> Void
    ) -> [(name: String, error: String)] {
        guard let final = store.rows.last else { return [] }
        let checkpoints = Dictionary(onDisk.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var failures: [(name: String, error: String)] = []
        var failed: Set<String> = []
        typealias Loaded = (name: String, model: any LanguageModel, windows: CalibrationSet)
        // The last one loaded, and the one whose tokens are the reference (kept, not loaded twice).
        var loaded: Loaded?
        var reference: Loaded?
        /// The model and windows of `name`, nil (a failure recorded once) when they cannot be had.
        func load(_ name: String) -> (model: any LanguageModel, windows: CalibrationSet)? {
            for kept in [loaded, reference] { if let kept, kept.name == name { return (kept.model, kept.windows) } }
            guard !failed.contains(name), let checkpoint = checkpoints[name] else { return nil }
            do {
                let model = try ModelRegistry.load(try Checkpoint(directory: checkpoint.directory))
                let windows = try CheckpointScoring.loadCalibration(source, for: model, as: .evaluation, warn: log)
                loaded = (name, model, windows)
                return (model, windows)
            } catch {
                failed.insert(name)
                Self.record(error, of: checkpoint, in: &failures, log: log)
                return nil
            }
        }
        // The tokens are the final checkpoint's, else those of the newest checkpoint on disk that loads.
        for row in store.rows.reversed() where reference == nil {
            if let (model, windows) = load(row.name) { reference = (row.name, model, windows) }
        }
        if let sha = reference?.windows.sha256 {
            if !evaluationSHA256.isEmpty, evaluationSHA256 != sha, !byCheckpoint.isEmpty {
                log("the evaluation tokens changed (sha256 \(evaluationSHA256.prefix(12))…, now \(sha.prefix(12))…): "
                    + "every perplexity is computed again")
                byCheckpoint = [:]
                finalCheckpoint = ""
            }
            evaluationSHA256 = sha
        }
        settleFinal(final.name)
        for (index, row) in store.rows.enumerated() {
            guard let checkpoint = checkpoints[row.name] else { continue }
            var values = byCheckpoint[row.name] ?? Perplexities()
            let needed = values.full.isNaN || analysis.attentionDropK.contains { values.own[$0] == nil || values.final[$0] == nil }
            guard needed, let (model, windows) = load(row.name) else { continue }
            guard windows.sha256 == evaluationSHA256 else {
                let owner = reference.map { "that of \($0.name), " + ($0.name == final.name ? "the series' final checkpoint" : "the newest that loads") }
                failures.append((row.name, DroptraceError(
                    "its tokenizer turns the evaluation text into other tokens than \(owner ?? "the reference") "
                        + "(sha256 \(windows.sha256.prefix(12))…, not \(evaluationSHA256.prefix(12))…): no perplexity",
                    path: checkpoint.directory.path).description))
                continue
            }
            func perplexity(_ attention: [Int]) throws -> Double {
                let value = try LanguageModelLoss.evaluate(
                    model: model, plan: DropPlan(attention: Set(attention)), windows: windows.sequences,
                    sourcePath: source.url.path
                ).perplexity
                // exp of a mean loss above ~709 is infinite: no number a store (or a reader of it) can use.
                guard value.isFinite else {
                    throw DroptraceError(
                        "its perplexity on \(source.url.lastPathComponent)\(attention.isEmpty ? "" : " without attention layers \(attention.sorted())") "
                            + "is \(value) (a mean loss beyond float64's exp: check the checkpoint's weights); not stored",
                        path: checkpoint.directory.path)
                }
                return value
            }
            log("perplexity of \(row.name)")
            do {
                if values.full.isNaN { values.full = try perplexity([]) }
                for k in analysis.attentionDropK {
                    if values.own[k] == nil { values.own[k] = try perplexity(analysis.attention.dropSet(checkpoint: index, k: k)) }
                    if values.final[k] == nil {
                        values.final[k] = try perplexity(analysis.attention.dropSet(checkpoint: store.rows.count - 1, k: k))
                    }
                }
            } catch {
                Self.record(error, of: checkpoint, in: &failures, log: log)
            }
            // What was computed before a failure is kept.
            byCheckpoint[row.name] = values
        }
        return failures
    }

    /// `failures` with one line for a checkpoint whose evaluation failed:
    /// the error as it is when it names a file, else with the checkpoint's
    /// directory. A checkpoint removed or saved again meanwhile
    /// (`save_total_limit`, `DiscoveredCheckpoint.changedSinceDiscovery`) is
    /// no failure: it is `log`ged, as one deleted before the run.
    static func record(
        _ error: Error, of checkpoint: DiscoveredCheckpoint, in failures: inout [(name: String, error: String)],
        log: (String) -> Void
    ) {
        let (name, directory) = (checkpoint.name, checkpoint.directory)
        guard !checkpoint.changedSinceDiscovery else {
            log("\(directory.path): removed or changed during the evaluation; its values stay as they were")
            return
        }
        let line = (error as? DroptraceError).map { error in
            error.path == nil ? DroptraceError(error.message, path: directory.path).description : error.description
        } ?? "\(directory.path): \(error)"
        failures.append((name, line))
    }
}

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
    mutating func update(
        store: ScoreFile, analysis: SeriesAnalysis, onDisk: [DiscoveredCheckpoint], source: CalibrationSource,
        log: (String) -> Void
    ) throws {
        guard let final = store.rows.last else { return }
        let directories = Dictionary(onDisk.map { ($0.name, $0.directory) }, uniquingKeysWith: { a, _ in a })
        var loaded: (name: String, model: any LanguageModel, windows: CalibrationSet)?
        func load(_ name: String, _ directory: URL) throws -> (model: any LanguageModel, windows: CalibrationSet) {
            if let loaded, loaded.name == name { return (loaded.model, loaded.windows) }
            let model = try ModelRegistry.load(try Checkpoint(directory: directory))
            let windows = try CheckpointScoring.loadCalibration(source, for: model, warn: log)
            loaded = (name, model, windows)
            return (model, windows)
        }
        // The tokens are those of the first checkpoint on disk (each is tokenised with its own tokenizer).
        if let first = store.rows.first(where: { directories[$0.name] != nil }) {
            let sha = try load(first.name, directories[first.name]!).windows.sha256
            if !evaluationSHA256.isEmpty, evaluationSHA256 != sha, !byCheckpoint.isEmpty {
                log("the evaluation tokens changed (sha256 \(evaluationSHA256.prefix(12))…, now \(sha.prefix(12))…): "
                    + "every perplexity is computed again")
                byCheckpoint = [:]
                finalCheckpoint = ""
            }
            evaluationSHA256 = sha
        }
        let finalChanged = final.name != finalCheckpoint
        for (index, row) in store.rows.enumerated() {
            guard let directory = directories[row.name] else { continue }
            var values = byCheckpoint[row.name] ?? Perplexities()
            let needed = values.full.isNaN || analysis.dropK.contains { values.own[$0] == nil }
                || finalChanged || analysis.dropK.contains { values.final[$0] == nil }
            guard needed else { continue }
            let (model, windows) = try load(row.name, directory)
            func perplexity(_ attention: [Int]) throws -> Double {
                try LanguageModelLoss.evaluate(
                    model: model, plan: DropPlan(attention: Set(attention)), windows: windows.sequences,
                    sourcePath: source.url.path
                ).perplexity
            }
            log("perplexity of \(row.name)")
            if values.full.isNaN { values.full = try perplexity([]) }
            for k in analysis.dropK {
                if values.own[k] == nil { values.own[k] = try perplexity(analysis.attention.dropSet(checkpoint: index, k: k)) }
                if finalChanged || values.final[k] == nil {
                    values.final[k] = try perplexity(analysis.attention.dropSet(checkpoint: store.rows.count - 1, k: k))
                }
            }
            byCheckpoint[row.name] = values
        }
        if finalChanged {
            // Values against an older final set are stale for rotated-away checkpoints too.
            for name in byCheckpoint.keys where directories[name] == nil { byCheckpoint[name]?.final = [:] }
            finalCheckpoint = final.name
        }
    }
}

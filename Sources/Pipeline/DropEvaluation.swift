import Analysis
import Architectures
import CheckpointIO
import DroptraceSupport
import Dropping
import Foundation
import Scoring
import ScoreStore

/// Computing `DropEvaluation` (stored and reported by the Analysis and
/// Reporting modules) needs the models, so it lives here.
extension DropEvaluation {
    /// Fills in what is missing or stale for the checkpoints on disk.
    mutating func update(
        store: ScoreFile, analysis: SeriesAnalysis, onDisk: [DiscoveredCheckpoint], source: CalibrationSource,
        log: (String) -> Void
    ) throws {
        guard let final = store.rows.last else { return }
        let finalChanged = final.name != finalCheckpoint
        var sha: String?
        let directories = Dictionary(onDisk.map { ($0.name, $0.directory) }, uniquingKeysWith: { a, _ in a })
        for (index, row) in store.rows.enumerated() {
            guard let directory = directories[row.name] else { continue }
            var values = byCheckpoint[row.name] ?? Perplexities()
            let needed = values.full.isNaN || analysis.dropK.contains { values.own[$0] == nil }
                || finalChanged || analysis.dropK.contains { values.final[$0] == nil }
            guard needed else { continue }
            let model = try ModelRegistry.load(try Checkpoint(directory: directory))
            let windows = try CheckpointScoring.loadCalibration(source, for: model, warn: log)
            if sha == nil { sha = windows.sha256 }
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
        if let sha { evaluationSHA256 = sha }
    }
}

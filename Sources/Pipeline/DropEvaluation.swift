import Analysis
import Architectures
import CheckpointIO
import DroptraceSupport
import Dropping
import Foundation
import Scoring
import ScoreStore

/// Perplexity of each checkpoint in full, without its own drop-k attention
/// set, and without the final checkpoint's — whether dropping works at every
/// stage of training and whether the final set transfers back in time.
///
/// Stored in the score file as
///
///     /evaluation                      group
///       perplexity_full        float64 [C]
///       perplexity_own_k<k>    float64 [C]   own drop-k attention set removed
///       perplexity_final_k<k>  float64 [C]   the final checkpoint's set removed
///       @final_checkpoint      string        the checkpoint the final sets come from
///       @evaluation_sha256     string        hash of the evaluation tokens
///
/// NaN where a checkpoint was no longer on disk when a value was needed.
struct DropEvaluation: Equatable {
    struct Perplexities: Equatable {
        var full = Double.nan
        var own: [Int: Double] = [:]
        var final: [Int: Double] = [:]
    }

    var byCheckpoint: [String: Perplexities] = [:]
    var finalCheckpoint = ""
    var evaluationSHA256 = ""

    static let group = "evaluation"

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

    func write(into file: HDF5File, rows: [CheckpointRow], dropK: [Int]) throws {
        guard !byCheckpoint.isEmpty else { return }
        let group = try file.requireGroup(Self.group)
        let values = rows.map { byCheckpoint[$0.name] ?? Perplexities() }
        try group.createDataset("perplexity_full", values: values.map(\.full), shape: [rows.count], storage: .contiguous)
        for k in dropK {
            try group.createDataset("perplexity_own_k\(k)", values: values.map { $0.own[k] ?? .nan }, shape: [rows.count], storage: .contiguous)
            try group.createDataset("perplexity_final_k\(k)", values: values.map { $0.final[k] ?? .nan }, shape: [rows.count], storage: .contiguous)
        }
        try group.setAttribute("final_checkpoint", finalCheckpoint)
        try group.setAttribute("evaluation_sha256", evaluationSHA256)
    }

    static func read(from file: HDF5File, rows: [CheckpointRow]) throws -> DropEvaluation? {
        // `/evaluation` may hold only task accuracy (`TaskAccuracyRecord`).
        guard try file.exists("\(group)/perplexity_full") else { return nil }
        let group = try file.group(Self.group)
        var evaluation = DropEvaluation()
        evaluation.finalCheckpoint = try group.stringAttribute("final_checkpoint")
        evaluation.evaluationSHA256 = try group.stringAttribute("evaluation_sha256")
        let full = try group.dataset("perplexity_full").read(as: Double.self)
        for (index, row) in rows.enumerated() where index < full.count {
            evaluation.byCheckpoint[row.name] = Perplexities(full: full[index])
        }
        for name in try group.childNames() {
            for (prefix, isOwn) in [("perplexity_own_k", true), ("perplexity_final_k", false)] where name.hasPrefix(prefix) {
                guard let k = Int(name.dropFirst(prefix.count)) else { continue }
                let values = try group.dataset(name).read(as: Double.self)
                for (index, row) in rows.enumerated() where index < values.count && !values[index].isNaN {
                    if isOwn { evaluation.byCheckpoint[row.name]?.own[k] = values[index] } else { evaluation.byCheckpoint[row.name]?.final[k] = values[index] }
                }
            }
        }
        return evaluation
    }

    /// The report's table of these numbers.
    func reportSection(rows: [CheckpointRow], dropK: [Int]) -> String {
        var header = "| Step | Checkpoint | Full |"
        var rule = "| ---: | --- | ---: |"
        for k in dropK {
            header += " Own drop-\(k) | Final's drop-\(k) |"
            rule += " ---: | ---: |"
        }
        var lines = [
            "Perplexity of each checkpoint on the evaluation set: the full model, the model without its own drop-k attention "
                + "layers, and without the final checkpoint's (\(finalCheckpoint)) drop-k attention layers. Evaluation tokens: "
                + "sha256 `\(evaluationSHA256.prefix(16))…`.",
            "", header, rule,
        ]
        func format(_ value: Double?) -> String { value.map { $0.isNaN ? "–" : String(format: "%.3f", $0) } ?? "–" }
        for row in rows {
            let values = byCheckpoint[row.name] ?? Perplexities()
            var line = "| \(row.step) | \(row.name) | \(format(values.full)) |"
            for k in dropK { line += " \(format(values.own[k])) | \(format(values.final[k])) |" }
            lines.append(line)
        }
        lines.append("")
        lines.append("– : the checkpoint was no longer on disk when this value was needed.")
        return lines.joined(separator: "\n")
    }
}

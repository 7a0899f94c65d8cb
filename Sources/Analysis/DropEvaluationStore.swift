import DroptraceSupport
import ScoreStore

/// Perplexity of each checkpoint in full, without its own drop-k attention
/// set, and without the final checkpoint's — whether dropping works at every
/// stage of training and whether the final set transfers back in time.
/// `trace --eval` computes it (Pipeline); the report shows it from the store.
///
/// Stored in the score file as
///
///     /evaluation                      group
///       perplexity_full        float64 [C]
///       perplexity_own_k<k>    float64 [C]   own drop-k attention set removed
///       perplexity_final_k<k>  float64 [C]   the final checkpoint's set removed
///       @final_checkpoint      string        the checkpoint the final sets come from
///       @evaluation_sha256     string        hash of the evaluation tokens: the final
///                                            checkpoint's tokenisation, which every
///                                            value is measured on
///
/// NaN where a value was not measured: the run that needed it had no
/// `--eval`, or the checkpoint was no longer on disk.
public struct DropEvaluation: Equatable, Sendable {
    public struct Perplexities: Equatable, Sendable {
        public var full = Double.nan
        /// k → perplexity without the checkpoint's own drop-k attention set.
        public var own: [Int: Double] = [:]
        /// k → perplexity without the final checkpoint's drop-k attention set.
        public var final: [Int: Double] = [:]

        public init(full: Double = .nan, own: [Int: Double] = [:], final: [Int: Double] = [:]) {
            self.full = full
            self.own = own
            self.final = final
        }
    }

    /// Checkpoint name → its perplexities.
    public var byCheckpoint: [String: Perplexities] = [:]
    /// The checkpoint whose drop-k sets the `final` values leave out; "" before any.
    public var finalCheckpoint = ""
    /// sha256 of the evaluation tokens every value was measured on (the final
    /// checkpoint's tokenisation of the file, `CalibrationSet.sha256`); "" before any.
    public var evaluationSHA256 = ""

    public static let group = "evaluation"

    public init() {}

    /// Forgets the values of checkpoint `name`, whose row is replaced (its
    /// files changed). When it is the final checkpoint, every checkpoint's
    /// values without the final's sets are forgotten too: those sets come
    /// from the row being replaced.
    public mutating func forget(_ name: String) {
        byCheckpoint.removeValue(forKey: name)
        guard name == finalCheckpoint else { return }
        for other in byCheckpoint.keys { byCheckpoint[other]?.final = [:] }
        finalCheckpoint = ""
    }

    /// Makes `name` the checkpoint whose drop sets the `final` values leave
    /// out; when it was another's, every such value is forgotten (measured
    /// without an older final's sets, for checkpoints rotated away or
    /// failing now too).
    public mutating func settleFinal(_ name: String) {
        guard name != finalCheckpoint else { return }
        for other in byCheckpoint.keys { byCheckpoint[other]?.final = [:] }
        finalCheckpoint = name
    }

    /// Writes `/evaluation` (nothing when no checkpoint has a value), one
    /// entry per row in row order.
    public func write(into file: HDF5File, rows: [CheckpointRow], dropK: [Int]) throws {
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

    /// What `write` stored, for `rows` of the same file; nil without an
    /// `/evaluation` group.
    /// - Throws: `DroptraceError` naming the file when a dataset is missing,
    ///   not one float per checkpoint, or holds no perplexity.
    public static func read(from file: HDF5File, rows: [CheckpointRow]) throws -> DropEvaluation? {
        // `/evaluation` may hold only task accuracy (`TaskAccuracyRecord`).
        guard try file.exists("\(group)/perplexity_full") else { return nil }
        let group = try file.group(Self.group)
        var evaluation = DropEvaluation()
        evaluation.finalCheckpoint = try group.stringAttribute("final_checkpoint")
        evaluation.evaluationSHA256 = try group.stringAttribute("evaluation_sha256")
        // The tokens' hash as the writer records it (it is printed in the report).
        guard ScoreFileMetadata.isDigest(evaluation.evaluationSHA256) else {
            throw DroptraceError("/\(Self.group) attribute evaluation_sha256 is not 64 lowercase hex digits", path: file.filePath)
        }
        guard evaluation.finalCheckpoint.isEmpty || ScoreFileMetadata.isOneLine(evaluation.finalCheckpoint, atMost: 4096) else {
            throw DroptraceError("/\(Self.group) attribute final_checkpoint is not one line of text", path: file.filePath)
        }
        // exp(mean negative log-likelihood): at least 1 up to rounding.
        func column(_ name: String) throws -> [Double] {
            try group.measurements(name, count: rows.count, groupPath: Self.group, expected: "a perplexity ≥ 1") { $0.isFinite && $0 > 0.999 }
        }
        let full = try column("perplexity_full")
        for (index, row) in rows.enumerated() {
            evaluation.byCheckpoint[row.name] = Perplexities(full: full[index])
        }
        let layers = rows.first?.attention.count ?? 0
        for name in try group.childNames() {
            for (prefix, isOwn) in [("perplexity_own_k", true), ("perplexity_final_k", false)] where name.hasPrefix(prefix) {
                guard let k = Int(name.dropFirst(prefix.count)) else { continue }
                guard (1...max(1, layers)).contains(k) else {
                    throw DroptraceError("/\(Self.group)/\(name) is for drop-\(k), which a model of \(layers) layers has not", path: file.filePath)
                }
                let values = try column(name)
                for (index, row) in rows.enumerated() where !values[index].isNaN {
                    if isOwn { evaluation.byCheckpoint[row.name]?.own[k] = values[index] } else { evaluation.byCheckpoint[row.name]?.final[k] = values[index] }
                }
            }
        }
        // Values without another checkpoint's sets than the final row's, or of no named checkpoint, are not
        // the final's (a store from before runs without --eval settled them, or edited): read as not measured.
        if let last = rows.last?.name, last != evaluation.finalCheckpoint {
            evaluation.settleFinal(last)
        }
        if let problem = evaluation.twiceMeasuredApart(rows) { throw DroptraceError(problem, path: file.filePath) }
        return evaluation
    }

    /// Where a checkpoint whose own drop-k set is the final checkpoint's
    /// (the final checkpoint's always) holds two perplexities apart: both
    /// measure one model, the same layers removed, on the same windows, so
    /// they agree up to summation order (runs with other threads).
    private func twiceMeasuredApart(_ rows: [CheckpointRow]) -> String? {
        guard let last = rows.last, last.name == finalCheckpoint else { return nil }
        func dropSet(_ row: CheckpointRow, _ k: Int) -> [Int] {
            DropSets.dropSet(ranking: RankStatistics.ranking(ModuleKind.attention.importance(in: row).map(Double.init)), k: k)
        }
        let finalSets = Dictionary(uniqueKeysWithValues: Set(byCheckpoint.values.flatMap(\.own.keys)).map { ($0, dropSet(last, $0)) })
        for row in rows {
            guard let values = byCheckpoint[row.name] else { continue }
            for (k, own) in values.own.sorted(by: { $0.key < $1.key }) {
                guard let final = values.final[k], abs(own - final) > 1e-5 * max(own, final), dropSet(row, k) == finalSets[k] else { continue }
                return "/\(Self.group)/perplexity_own_k\(k) and perplexity_final_k\(k) of checkpoint '\(SystemError.oneLine(row.name))' are "
                    + "\(own) and \(final), though its own drop-\(k) set is the final checkpoint's: one model measured twice; "
                    + "the file was changed by other software"
            }
        }
        return nil
    }
}

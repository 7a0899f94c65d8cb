import Analysis
import DroptraceSupport
import Foundation
import ScoreStore

/// The report as one function of the store: everything report.md and its
/// figures show is read from `scores.h5` (rows, calibration, analysis,
/// perplexities, task accuracy, title), so `trace` and `droptrace report` write the same
/// bytes from the same store.
extension ReportWriter {
    /// Root attribute of the store holding the report title, when one was given.
    public static let titleAttribute = "report_title"

    /// The title stored in `file`, nil when none was given.
    public static func storedTitle(in file: HDF5File) throws -> String? {
        try file.hasAttribute(titleAttribute) ? try file.stringAttribute(titleAttribute) : nil
    }

    /// The report of the store at `url`.
    /// - Parameter title: overrides the stored title for this report only
    ///   (the store is not changed).
    /// - Throws: `DroptraceError` naming the store when it cannot be read or
    ///   its analysis does not belong to its rows.
    public static func load(store url: URL, title: String? = nil) throws -> ReportWriter {
        // Every message names the store: the analysis and the records checked against its rows
        // ("cannot analyse a run without checkpoints") do not know the file.
        do {
            let scoreFile = try ScoreFile.read(from: url)
            let file = try HDF5File.open(at: url)
            defer { try? file.close() }
            let analysis = try SeriesAnalysis.isStored(in: file)
                ? try SeriesAnalysis.read(from: file, rows: scoreFile.rows) : try SeriesAnalysis(rows: scoreFile.rows)
            let storedTitle = try storedTitle(in: file)
            let evaluation = try DropEvaluation.read(from: file, rows: scoreFile.rows)
            let taskAccuracy = try TaskAccuracyRecord.read(from: file, rows: scoreFile.rows.map(\.name))
            return try ReportWriter(title: title ?? storedTitle, scoreFile: scoreFile, analysis: analysis,
                                    evaluation: evaluation, taskAccuracy: taskAccuracy,
                                    unscored: try UnscoredCheckpoints.read(from: file))
        } catch let error as DroptraceError where error.path == nil {
            throw DroptraceError(error.message, path: url.path)
        }
    }
}

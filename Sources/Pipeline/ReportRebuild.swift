import Analysis
import DroptraceSupport
import Foundation
import Reporting
import ScoreStore

/// `droptrace report`: the report from the store alone.
public enum ReportRebuild {
    public static func run(outDir: URL, title: String?) throws -> URL {
        let lock = try RunLock(directory: outDir)
        defer { withExtendedLifetime(lock) {} }
        let storeURL = outDir.appendingPathComponent("scores.h5")
        guard FileManager.default.fileExists(atPath: storeURL.path) else {
            throw DroptraceError("no scores.h5 here; run `droptrace trace` first", path: outDir.path)
        }
        let store = try ScoreFile.read(from: storeURL)
        let file = try HDF5File.open(at: storeURL)
        let analysis = try SeriesAnalysis.isStored(in: file)
            ? try SeriesAnalysis.read(from: file) : try SeriesAnalysis(rows: store.rows)
        let storedTitle = try file.hasAttribute(TraceRun.titleAttribute)
            ? try file.stringAttribute(TraceRun.titleAttribute) : nil
        let taskAccuracy = try TaskAccuracyRecord.read(from: file, rows: store.rows.map(\.name))
        try file.close()
        return try ReportWriter(title: title ?? storedTitle, scoreFile: store, analysis: analysis, taskAccuracy: taskAccuracy)
            .write(to: outDir)
    }
}

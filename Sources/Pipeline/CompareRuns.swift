import Analysis
import DroptraceSupport
import Foundation
import Reporting
import ScoreStore

/// `droptrace compare`: several runs' stores side by side in one report.
public enum CompareRuns {
    /// Reads the stores, compares them and writes `output/report.md` with
    /// `output/figures/`, holding `output`'s lock.
    /// - Parameters:
    ///   - stores: output directories of `trace` (holding scores.h5) or
    ///     score files; at least two, each once.
    ///   - title: the report title; nil: "droptrace compare: <model>, <L> layers, <R> runs".
    /// - Returns: the URL of report.md.
    /// - Throws: `RunLock.Held`; `DroptraceError` naming the store or
    ///   directory at fault. Nothing is written unless every store was read
    ///   and the comparison made.
    public static func run(stores: [URL], output: URL, title: String?) throws -> URL {
        let paths = try stores.map(storePath)
        var seen: [String: String] = [:]
        for (path, store) in zip(paths, stores) {
            let canonical = ResolvedPath.of(URL(fileURLWithPath: path))
            if let earlier = seen[canonical] {
                throw DroptraceError("is given twice (also as \(earlier))", path: store.path)
            }
            seen[canonical] = store.path
        }
        try checkOutput(output, stores: paths)
        let labels = labels(for: stores)
        let runs = try zip(paths, labels).map { path, label in try read(path, label: label) }
        try checkOutput(output, runs: runs)
        let comparison = try RunComparison(runs: runs)
        // Before the lock is taken (it creates the directory and its lock file): a report.md or figure
        // droptrace did not write refuses the directory as the writer will, and leaves it as it was.
        try ReportOwnership.checkReplaceable(in: output, figureNames: ComparisonReportWriter.figureFileNames)

        let lock = try RunLock(directory: output)
        defer { withExtendedLifetime(lock) {} }
        ReportWriter.removeStaleTemporaryFiles(in: output, figureNames: ComparisonReportWriter.figureFileNames)
        return try ComparisonReportWriter(title: title, comparison: comparison).write(to: output)
    }

    /// The score file of a trace's output directory, or the file itself.
    static func storePath(_ url: URL) throws -> String {
        switch PathKind.of(url) {
        case .missing: throw DroptraceError("does not exist", path: url.path)
        case .other: return url.path
        case .directory: break
        }
        let store = url.appendingPathComponent("scores.h5")
        guard FileManager.default.fileExists(atPath: store.path) else {
            throw DroptraceError("no scores.h5 here; run `droptrace trace` first", path: url.path)
        }
        return store.path
    }

    /// The output may not be one of the compared directories or lie inside
    /// one, nor be any trace's output: its report.md would replace that run's.
    /// Nor may it lie inside a checkpoint directory, as `trace` refuses
    /// (`CheckpointPlacement`; the compared runs' own checkpoints are
    /// checked once their stores are read).
    static func checkOutput(_ output: URL, stores: [String]) throws {
        let directory = ResolvedPath.of(output)
        for store in stores {
            let storeDirectory = ResolvedPath.of(URL(fileURLWithPath: store).deletingLastPathComponent())
            if storeDirectory == directory {
                throw DroptraceError(
                    "holds \(URL(fileURLWithPath: store).lastPathComponent), one of the compared stores; its report "
                        + "would be replaced: choose another --output directory", path: output.path)
            }
            // A trace's output directory (not any folder a score file lies in): its figures/ and report are droptrace's.
            if URL(fileURLWithPath: store).lastPathComponent == ScoreFile.outputFileName, directory.hasPrefix(storeDirectory + "/") {
                throw DroptraceError(
                    "lies inside \(storeDirectory), the output directory of a compared run (its figures/ and report are "
                        + "droptrace's own): choose another --output directory", path: output.path)
            }
        }
        if FileManager.default.fileExists(atPath: output.appendingPathComponent("scores.h5").path) {
            throw DroptraceError(
                "holds a trace's scores.h5; its report would be replaced: choose another --output directory",
                path: output.path)
        }
        try CheckpointPlacement.checkOutside(output, checkpoints: [], contents: "the report")
    }

    /// Once the stores are read: the output may not lie inside a checkpoint
    /// of a compared run's series (as its store records the series
    /// directory), linked elsewhere or not yet finished.
    static func checkOutput(_ output: URL, runs: [ComparedRun]) throws {
        let series = runs.compactMap { $0.scoreFile.metadata.seriesDirectory.map { URL(fileURLWithPath: $0) } }
        try CheckpointPlacement.checkOutside(
            output, checkpoints: series.flatMap(CheckpointPlacement.checkpoints(inSeries:)), series: series, contents: "the report")
    }

    /// Each run's name in the report: its directory's name (the score file's
    /// directory for a file), or the path as given where names repeat.
    static func labels(for stores: [URL]) -> [String] {
        let names = stores.map { url -> String in
            let standard = url.standardizedFileURL
            let base = standard.pathExtension == "h5" ? standard.deletingLastPathComponent() : standard
            return base.lastPathComponent.isEmpty ? url.path : base.lastPathComponent
        }
        let repeated = Set(names.filter { name in names.filter { $0 == name }.count > 1 })
        return zip(names, stores).map { repeated.contains($0) ? $1.path : $0 }
    }

    /// One run as its store holds it: rows, and the stored analysis (or the
    /// analysis of its rows when none was stored). A `trace` of that run may
    /// replace the store meanwhile (a rename: another file at the path), so
    /// the two reads are taken again until both came from one version.
    public static func read(_ path: String, label: String) throws -> ComparedRun {
        for _ in 1...10 {
            let version = FileVersion.current(path)
            do {
                let run = try readOnce(path, label: label)
                if FileVersion.current(path) == version { return run }
            } catch {
                if FileVersion.current(path) == version { throw error }
            }
        }
        throw DroptraceError("was replaced each of 10 times it was read (a trace writing it?): run again", path: path)
    }

    private static func readOnce(_ path: String, label: String) throws -> ComparedRun {
        let scoreFile = try ScoreFile.read(from: URL(fileURLWithPath: path))
        guard !scoreFile.rows.isEmpty else { throw DroptraceError("holds no checkpoints", path: path) }
        let file = try HDF5File.open(at: path)
        defer { try? file.close() }
        let analysis: SeriesAnalysis
        let stored = try SeriesAnalysis.isStored(in: file)
        do {
            analysis = stored ? try SeriesAnalysis.read(from: file, rows: scoreFile.rows) : try SeriesAnalysis(rows: scoreFile.rows)
        } catch let error as DroptraceError where error.path == nil {
            throw DroptraceError(error.message, path: path)
        }
        return ComparedRun(label: label, path: path, scoreFile: scoreFile, analysis: analysis, analysisStored: stored)
    }
}

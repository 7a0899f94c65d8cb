import Foundation
import Analysis
import DroptraceSupport
import ScoreStore

/// An extra Markdown section supplied by the caller, e.g. a per-checkpoint
/// perplexity table (full model / without its own attention drop-k set /
/// without the final checkpoint's drop-k set).
public struct ReportSection: Sendable, Equatable {
    public enum Placement: Sendable, Equatable {
        /// Right after the per-checkpoint drop-set table it refers to.
        case afterDropSets
        /// After all tables, before the description of the rule and method.
        case end
    }

    /// Rendered as a level-2 heading.
    public var title: String
    /// GitHub-flavoured Markdown, inserted as is.
    public var body: String
    public var placement: Placement

    public init(title: String, body: String, placement: Placement = .afterDropSets) {
        self.title = title
        self.body = body
        self.placement = placement
    }
}

/// Writes `OUT_DIR/report.md` with its SVG figures in `OUT_DIR/figures/`.
public struct ReportWriter: Sendable {
    public static let reportFileName = "report.md"
    public static let figuresDirectory = "figures"

    public var title: String
    public var scoreFile: ScoreFile
    public var analysis: SeriesAnalysis
    /// Perplexities of `trace --eval`, shown after the drop-set table; nil: none.
    public var evaluation: DropEvaluation?
    public var extraSections: [ReportSection]
    /// Task accuracy per checkpoint (`trace --task`): a figure and a section
    /// after the drop sets when it holds any task.
    public var taskAccuracy: TaskAccuracyRecord
    /// The checkpoints the last run failed on or left for later: a section
    /// after the verdict's criteria for each list that has any.
    public var unscored: UnscoredCheckpoints

    /// - Parameter title: defaults to "droptrace report: <model_type>, <L> layers".
    /// - Throws: `DroptraceError` when the analysis is not of these scores
    ///   (different checkpoint or layer count).
    public init(title: String? = nil, scoreFile: ScoreFile, analysis: SeriesAnalysis,
                evaluation: DropEvaluation? = nil, extraSections: [ReportSection] = [],
                taskAccuracy: TaskAccuracyRecord = TaskAccuracyRecord(), unscored: UnscoredCheckpoints = UnscoredCheckpoints()) throws {
        guard analysis.checkpointCount == scoreFile.rows.count, analysis.layers == scoreFile.metadata.numLayers,
              analysis.steps == scoreFile.rows.map(\.step) else {
            throw DroptraceError(
                "the analysis (\(analysis.checkpointCount) checkpoints, \(analysis.layers) layers) does not belong "
                    + "to these scores (\(scoreFile.rows.count) checkpoints, \(scoreFile.metadata.numLayers) layers); "
                    + "rerun the analysis")
        }
        let layers = scoreFile.metadata.numLayers
        self.title = title
            ?? "droptrace report: \(scoreFile.metadata.modelType), \(layers) layer\(layers == 1 ? "" : "s")"
        self.scoreFile = scoreFile
        self.analysis = analysis
        self.evaluation = evaluation
        self.extraSections = extraSections
        self.taskAccuracy = taskAccuracy
        self.unscored = unscored
    }

    /// The caller's sections, then those made from the stored task accuracy.
    var sections: [ReportSection] {
        extraSections + [TaskAccuracyReport.section(taskAccuracy, rows: scoreFile.rows)].compactMap { $0 }
    }

    /// The figures, rendered.
    public func figures() -> [ReportFigure] {
        ReportFigures.make(scoreFile: scoreFile, analysis: analysis)
            + TaskAccuracyReport.figures(
                taskAccuracy, rows: scoreFile.rows,
                progress: TrainingProgress(steps: analysis.steps, tokens: scoreFile.rows.map(\.tokens)))
    }

    /// The report text; links point at `figures` (rendered if not given).
    public func markdown(figures: [ReportFigure]? = nil) -> String {
        ReportOwnership.marked(ReportMarkdown(writer: self, figures: figures ?? self.figures()).render())
    }

    /// Writes figures first and report.md last, each through a temporary
    /// file and a rename, replacing only files droptrace wrote (`ReportOwnership`), so a crash never leaves a half-written file or a
    /// report that links to figures not yet written. Figures an earlier run
    /// wrote that this report no longer has are removed afterwards.
    /// Nothing is written through a symbolic link: a `figures` link (or a
    /// link planted under a temporary name) is refused.
    /// - Returns: the URL of report.md.
    /// - Throws: `DroptraceError` naming the file or directory that could
    ///   not be written.
    @discardableResult
    public func write(to outDir: URL) throws -> URL {
        let figures = self.figures()
        return try Self.write(markdown: markdown(figures: figures), figures: figures,
                              knownFigureNames: ReportFigures.knownFileNames, to: outDir)
    }

    /// Throws unless a run's report may be written into `outDir`: its
    /// report.md and figures are absent or droptrace's (`ReportOwnership`).
    /// Cheap; `trace` checks before any work, the writer again before it writes.
    public static func checkReplaceable(in outDir: URL) throws {
        try ReportOwnership.checkReplaceable(in: outDir, figureNames: ReportFigures.knownFileNames)
        // A comparison's output (no store, its own figures) is not a trace's to replace, as compare refuses a trace's.
        let figures = outDir.appendingPathComponent(figuresDirectory)
        if !FileManager.default.fileExists(atPath: outDir.appendingPathComponent(ScoreFile.outputFileName).path),
           let figure = ComparisonFigures.knownFileNames.first(where: {
               FileManager.default.fileExists(atPath: figures.appendingPathComponent($0).path)
           }) {
            throw DroptraceError(
                "holds a droptrace compare report (\(figuresDirectory)/\(figure)), which a trace's report would replace: "
                    + "choose another output directory", path: outDir.path)
        }
    }

    /// Writes `figures` into `outDir/figures/` and `outDir/report.md`, as
    /// `write(to:)` describes, all or none; removes figures named in
    /// `knownFigureNames` that are not in `figures`.
    static func write(markdown: String, figures: [ReportFigure], knownFigureNames: [String], to outDir: URL) throws
        -> URL {
        try ReportOwnership.checkReplaceable(in: outDir, figureNames: knownFigureNames + figures.map(\.fileName))
        let directory = try DirectoryHandle.create(at: outDir.path)
        let figuresDirectory = try directory.subdirectory(Self.figuresDirectory)
        // Every file is written before any is moved into place: a full disk
        // midway leaves the previous report whole, never new figures beside it.
        let files = figures.map { (figuresDirectory, $0.fileName, Array($0.svg.utf8)) }
            + [(directory, Self.reportFileName, Array(markdown.utf8))]
        var written = 0
        do {
            for (folder, name, bytes) in files {
                try folder.writeTemporary(for: name, bytes)
                written += 1
            }
        } catch {
            for (folder, name, _) in files.prefix(written) { folder.discardTemporary(of: name) }
            throw error
        }
        for (folder, name, _) in files { try folder.moveTemporaryIntoPlace(name) }
        try figuresDirectory.sync()
        try directory.sync()

        let current = Set(figures.map(\.fileName))
        for name in knownFigureNames where !current.contains(name) {
            figuresDirectory.removeRegularFile(name)
        }
        return outDir.appendingPathComponent(Self.reportFileName)
    }

    /// Removes temporary files that runs killed while writing a report into
    /// `outDir` left behind (see `DirectoryHandle.removeStaleTemporaryFiles`);
    /// `otherTargets` names further files of `outDir` written the same way,
    /// `figureNames` the figures (default: those of a run's report).
    public static func removeStaleTemporaryFiles(in outDir: URL, otherTargets: Set<String> = [],
                                                 figureNames: [String]? = nil) {
        guard let directory = try? DirectoryHandle.create(at: outDir.path) else { return }
        directory.removeStaleTemporaryFiles(targets: otherTargets.union([reportFileName]))
        // A missing or symlinked figures/ holds nothing of ours.
        if let figuresDirectory = try? directory.subdirectory(figuresDirectory, create: false) {
            figuresDirectory.removeStaleTemporaryFiles(targets: Set(figureNames ?? ReportFigures.knownFileNames))
        }
    }
}

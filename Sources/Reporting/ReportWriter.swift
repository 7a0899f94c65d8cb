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
    public var extraSections: [ReportSection]

    /// - Parameter title: defaults to "droptrace report: <model_type>, <L> layers".
    /// - Throws: `DroptraceError` when the analysis is not of these scores
    ///   (different checkpoint or layer count).
    public init(title: String? = nil, scoreFile: ScoreFile, analysis: SeriesAnalysis,
                extraSections: [ReportSection] = []) throws {
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
        self.extraSections = extraSections
    }

    /// The figures, rendered.
    public func figures() -> [ReportFigure] {
        ReportFigures.make(scoreFile: scoreFile, analysis: analysis)
    }

    /// The report text; links point at `figures` (rendered if not given).
    public func markdown(figures: [ReportFigure]? = nil) -> String {
        ReportMarkdown(writer: self, figures: figures ?? self.figures()).render()
    }

    /// Writes figures first and report.md last, each through a temporary
    /// file and a rename, so a crash never leaves a half-written file or a
    /// report that links to figures not yet written. Figures an earlier run
    /// wrote that this report no longer has are removed afterwards.
    /// - Returns: the URL of report.md.
    @discardableResult
    public func write(to outDir: URL) throws -> URL {
        let figuresURL = outDir.appendingPathComponent(Self.figuresDirectory, isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: figuresURL, withIntermediateDirectories: true)
        } catch {
            throw DroptraceError("cannot create the report directory: \(error.localizedDescription)",
                                 path: figuresURL.path)
        }
        let figures = self.figures()
        for figure in figures {
            try AtomicTextFile.write(figure.svg, to: figuresURL.appendingPathComponent(figure.fileName))
        }
        try AtomicTextFile.syncDirectory(figuresURL)
        let reportURL = outDir.appendingPathComponent(Self.reportFileName)
        try AtomicTextFile.write(markdown(figures: figures), to: reportURL)
        try AtomicTextFile.syncDirectory(outDir)

        let current = Set(figures.map(\.fileName))
        for name in ReportFigures.knownFileNames where !current.contains(name) {
            try? FileManager.default.removeItem(at: figuresURL.appendingPathComponent(name))
        }
        return reportURL
    }
}

import Analysis
import DroptraceSupport
import Foundation
import ScoreStore

/// Writes the report of `droptrace compare`: `DIR/report.md` with its SVG
/// figures in `DIR/figures/`, from a `RunComparison` alone.
public struct ComparisonReportWriter: Sendable {
    public var title: String
    public var comparison: RunComparison

    /// - Parameter title: defaults to "droptrace compare: <model_type>, <L> layers, <R> runs".
    public init(title: String? = nil, comparison: RunComparison) {
        let layers = comparison.layers
        self.title = title ?? "droptrace compare: \(comparison.modelType), \(layers) layer\(layers == 1 ? "" : "s"), "
            + "\(comparison.runs.count) runs"
        self.comparison = comparison
    }

    /// Every figure file name a comparison may write.
    public static var figureFileNames: [String] { ComparisonFigures.knownFileNames }

    public func figures() -> [ReportFigure] { ComparisonFigures.make(comparison) }

    /// The report text; links point at `figures` (rendered if not given).
    public func markdown(figures: [ReportFigure]? = nil) -> String {
        ReportOwnership.marked(ComparisonMarkdown(title: title, comparison: comparison, figures: figures ?? self.figures()).render())
    }

    /// Figures first, report.md last, each through a temporary file and a
    /// rename (see `ReportWriter.write(to:)`): an interrupted run never
    /// leaves a half-written file or a report linking to missing figures.
    /// - Returns: the URL of report.md.
    /// - Throws: `DroptraceError` naming what could not be written.
    @discardableResult
    public func write(to outDir: URL) throws -> URL {
        let figures = self.figures()
        return try ReportWriter.write(markdown: markdown(figures: figures), figures: figures,
                                      knownFigureNames: Self.figureFileNames, to: outDir)
    }
}

/// How a comparison names its positions (points of training) in tables and
/// on chart axes.
extension RunComparison {
    var progress: TrainingProgress {
        switch alignment {
        case .tokens: TrainingProgress(values: positions.map(\.value), unit: .tokens)
        case .step: TrainingProgress(values: positions.map(\.value), unit: .steps)
        case .name: TrainingProgress(values: positions.map { _ in -1 }, unit: .steps)
        }
    }

    /// Header cells naming a position, and the cells of position `index`.
    var positionHeaders: [String] {
        switch alignment {
        case .tokens: ["Tokens", "Checkpoint"]
        case .step: ["Step", "Checkpoint"]
        case .name: ["Checkpoint"]
        }
    }

    func positionCells(_ index: Int) -> [String] {
        let position = positions[index]
        let name = Markdown.escape(position.name)
        switch alignment {
        case .tokens: return [NumberFormatting.grouped(position.value), name]
        case .step: return [NumberFormatting.step(position.value), name]
        case .name: return [name]
        }
    }

    /// "step 1000 (checkpoint-1000)", for prose.
    func positionLabel(_ index: Int) -> String {
        let position = positions[index]
        let name = Markdown.escape(position.name)
        switch alignment {
        case .tokens: return "\(NumberFormatting.grouped(position.value)) tokens (\(name))"
        case .step: return "step \(position.value) (\(name))"
        case .name: return name
        }
    }
}

/// The figures of a comparison.
enum ComparisonFigures {
    static let knownFileNames: [String] =
        ModuleKind.allCases.flatMap { [meanHeatmap($0), rangeHeatmap($0)] }
        + ["mean_importance_runs.svg", "drop_set_agreement.svg"]

    /// Okabe–Ito colours for runs (colour-vision-deficiency safe); past
    /// eight runs they repeat dashed.
    static let runColours = ["#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442", "#000000"]

    static func meanHeatmap(_ module: ModuleKind) -> String { "importance_mean_\(module.rawValue).svg" }
    static func rangeHeatmap(_ module: ModuleKind) -> String { "importance_range_\(module.rawValue).svg" }

    static func make(_ comparison: RunComparison) -> [ReportFigure] {
        let progress = comparison.progress
        var figures: [ReportFigure] = []
        for module in ModuleKind.allCases {
            let spreads = comparison.importance[module] ?? []
            func grid(_ value: (Spread) -> Double) -> [[Double]] {
                (0..<comparison.layers).map { layer in spreads.map { value($0[layer]) } }
            }
            let mean = Heatmap(
                title: "\(module.displayName) importance per layer, mean over runs", values: grid(\.mean),
                columnLabels: progress.columnLabels, xTitle: progress.columnTitle,
                colorbarTitle: "Mean importance (1 − cos)")
            figures.append(ReportFigure(
                fileName: meanHeatmap(module), heading: "Importance per layer, mean over runs",
                altText: "Heatmap of \(module.displayName) importance averaged over runs, layers by checkpoints",
                caption: "Rows are layers (0 at the top), columns checkpoints in training order; each cell is the "
                    + "mean over the runs that have the checkpoint (see Gaps). Darker is more redundant.",
                svg: mean.render()))
        }
        for module in ModuleKind.allCases {
            let spreads = comparison.importance[module] ?? []
            let values = (0..<comparison.layers).map { layer in
                spreads.map { $0[layer].count >= 2 ? $0[layer].range : .nan }
            }
            let range = Heatmap(
                title: "\(module.displayName) importance per layer, max − min over runs", values: values,
                columnLabels: progress.columnLabels, xTitle: progress.columnTitle,
                colorbarTitle: "Max − min across runs", undefinedLabel: "< 2 runs")
            figures.append(ReportFigure(
                fileName: rangeHeatmap(module), heading: "Spread of importance across runs",
                altText: "Heatmap of the range of \(module.displayName) importance across runs",
                caption: "How far the runs disagree on each layer's importance (largest minus smallest value). "
                    + "Grey: fewer than two runs have the checkpoint, or a score is undefined.",
                svg: range.render()))
        }

        let meanPanel = LinePanel(
            title: "Mean importance over layers: mean over runs, band from min to max", yTitle: "Mean importance",
            series: ModuleKind.allCases.map { module in
                let spreads = comparison.meanImportance[module] ?? []
                var line = module.line(spreads.map(\.mean))
                line.band = spreads.map { ConfidenceInterval(low: $0.min, high: $0.max) }
                return line
            })
        // Each run's own line, broken where the run lacks the checkpoint.
        let runPanel = LinePanel(
            title: "Attention mean importance in each run (breaks: the run lacks the checkpoint)",
            yTitle: "Mean importance",
            series: comparison.runs.indices.map { run in
                let values = comparison.positions.map { position in
                    position.rows[run].map { comparison.runs[run].analysis.attention.meanImportance[$0] } ?? .nan
                }
                return LineSeries(label: comparison.runs[run].label, colour: runColours[run % runColours.count],
                                  dash: run < runColours.count ? nil : "6 4", width: 1.5, markerRadius: 2.5,
                                  values: values)
            })
        let meanChart = LineChart(title: "Mean importance by module type across runs", progress: progress,
                                  panels: [meanPanel, runPanel])
        figures.append(ReportFigure(
            fileName: "mean_importance_runs.svg", heading: "Mean importance by module type across runs",
            altText: "Mean importance of attention, MLP and block over training, mean and range across runs",
            caption: "Top: the mean over runs, shaded from the lowest to the highest run. Bottom: each run's attention "
                + "mean importance; a break is a checkpoint that run lacks (see Gaps) or an undefined score." + (meanChart.axis.zeroNote.map { " " + $0 } ?? ""),
            svg: meanChart.render()))

        let panels = comparison.dropK.map { k in
            LinePanel(title: "Drop-\(k) sets: mean pairwise Jaccard across runs", yTitle: "Jaccard", yDomain: (0, 1),
                      series: ModuleKind.allCases.compactMap { module in comparison.agreement[module]?[k].map(module.line) })
        }
        let agreementChart = LineChart(title: "Agreement of drop sets across runs", progress: progress, panels: panels)
        figures.append(ReportFigure(
            fileName: "drop_set_agreement.svg", heading: "Agreement of drop sets across runs",
            altText: "Mean pairwise Jaccard overlap of the runs' drop-k sets at each checkpoint",
            caption: "1 means every run would drop exactly the same layers at that checkpoint. Gaps: fewer than two "
                + "runs have the checkpoint." + (agreementChart.axis.zeroNote.map { " " + $0 } ?? ""),
            svg: agreementChart.render()))
        return figures
    }
}

import Analysis
import DroptraceSupport
import ScoreStore

/// One SVG figure of the report.
public struct ReportFigure: Sendable, Equatable {
    /// File name inside `figures/`.
    public var fileName: String
    /// Consecutive figures with the same heading share it (and the caption
    /// of the last of them) in the report.
    public var heading: String
    /// Alternative text for the Markdown image.
    public var altText: String
    /// A sentence or two under the figure on how to read it.
    public var caption: String
    public var svg: String

    /// Path relative to the report, as linked from report.md.
    public var relativePath: String { "\(ReportWriter.figuresDirectory)/\(fileName)" }
}

extension ModuleKind {
    /// Okabe–Ito colours: distinguishable with every common colour-vision deficiency.
    var chartColour: String {
        switch self {
        case .attention: "#0072B2"
        case .mlp: "#D55E00"
        case .block: "#009E73"
        }
    }

    /// The module's line in every chart. Module lines often coincide (a
    /// Jaccard of 1, a correlation of 1), so they differ in more than colour:
    /// attention is wide and solid and drawn first, MLP dashed, block dotted
    /// and thinnest on top, and marker sizes shrink in the same order, so
    /// coinciding lines still show every colour.
    func line(_ values: [Double]) -> LineSeries {
        switch self {
        case .attention:
            LineSeries(label: displayName, colour: chartColour, width: 3, markerRadius: 4.5, values: values)
        case .mlp:
            LineSeries(label: displayName, colour: chartColour, dash: "8 5", width: 2, markerRadius: 3.2,
                       values: values)
        case .block:
            LineSeries(label: displayName, colour: chartColour, dash: "2 4", width: 2, markerRadius: 2,
                       values: values)
        }
    }
}

/// Builds the report's figures from the scores and the analysis.
enum ReportFigures {
    /// Every file name the report may write, so a rerun can remove figures
    /// an earlier run wrote and this one does not (e.g. after C drops to 1).
    static let knownFileNames: [String] =
        ModuleKind.allCases.map(heatmapFileName) + ["rank_correlation_final.svg", "mean_importance.svg",
                                                    "jaccard_final.svg", TaskAccuracyReport.figureFileName]
        + BlockGapMetric.allCases.map(blockGapFileName)

    static func heatmapFileName(_ module: ModuleKind) -> String { "importance_\(module.rawValue).svg" }

    static func make(scoreFile: ScoreFile, analysis: SeriesAnalysis) -> [ReportFigure] {
        let rows = scoreFile.rows
        let progress = TrainingProgress(steps: analysis.steps, tokens: rows.map(\.tokens))
        let single = rows.count == 1
        var figures: [ReportFigure] = []

        let columnLabels = progress.columnLabels
        let xTitle = progress.columnTitle
        for module in ModuleKind.allCases {
            let layers = analysis.layers
            let values = (0..<layers).map { layer in rows.map { Double(module.importance(in: $0)[layer]) } }
            var heatmap = Heatmap(
                title: "\(module.displayName) importance per layer", values: values, columnLabels: columnLabels,
                xTitle: xTitle, colorbarTitle: "Importance (1 − cos)")
            if let uncertainty = analysis.uncertainty {
                let k = markedK(analysis)
                heatmap.marked = (0..<layers).map { layer in
                    rows.indices.map { uncertainty[module].isUnstable(checkpoint: $0, layer: layer, k: k) }
                }
                heatmap.markLabel = "unstable drop-\(k)"
            }
            figures.append(ReportFigure(
                fileName: heatmapFileName(module), heading: "Importance per layer over training",
                altText: "Heatmap of \(module.displayName) importance, layers by checkpoints",
                caption: "Rows are layers (0 at the top), columns checkpoints in training order; darker is more "
                    + "redundant. Each module type has its own colour scale; where a few layers dwarf the rest the "
                    + "scale ends at the 95th percentile (marked ≥ on the colour bar)."
                    + (analysis.uncertainty == nil ? "" : " A white dot marks a layer whose membership in that "
                        + "checkpoint's drop-\(markedK(analysis)) set is unstable under resampling of the calibration "
                        + "sequences: it is in the set in more than 5% but fewer than 95% of the bootstrap replicates."),
                svg: heatmap.render()))
        }

        if !single {
            let panels = [
                ("Spearman ρ with the final checkpoint", "Spearman ρ", \ModuleSeries.spearmanFinal),
                ("Kendall τ-b with the final checkpoint", "Kendall τ-b", \ModuleSeries.kendallFinal),
            ].map { title, yTitle, keyPath in
                LinePanel(title: title, yTitle: yTitle, yDomain: correlationDomain(analysis, keyPath),
                          series: ModuleKind.allCases.map { module in
                    var line = module.line(analysis[module][keyPath: keyPath])
                    line.band = correlationBand(analysis, module, keyPath)
                    return line
                })
            }
            let chart = LineChart(title: "Rank correlation with the final checkpoint", progress: progress, panels: panels)
            figures.append(ReportFigure(
                fileName: "rank_correlation_final.svg", heading: "Rank agreement with the final checkpoint",
                altText: "Spearman and Kendall rank correlation of each checkpoint's importance with the final one",
                caption: "How closely each checkpoint orders the layers like the final checkpoint (1 = same order). "
                    + "Gaps are undefined correlations (a constant importance vector)." + bandNote(analysis)
                    + (chart.axis.zeroNote.map { " " + $0 } ?? ""),
                svg: chart.render()))
        }

        let meanPanel = LinePanel(
            title: "Mean importance over layers", yTitle: "Mean importance",
            series: ModuleKind.allCases.map { module in
                var line = module.line(analysis[module].meanImportance)
                line.band = analysis.uncertainty?[module].meanImportance ?? []
                return line
            })
        let meanChart = LineChart(title: "Mean importance by module type", progress: progress, panels: [meanPanel])
        figures.append(ReportFigure(
            fileName: "mean_importance.svg", heading: "Mean importance by module type",
            altText: "Mean importance of attention, MLP and block over training",
            caption: "Lower means more redundant. Attention below MLP at ≥ 80% of checkpoints is the first criterion "
                + "of the verdict." + bandNote(analysis) + (meanChart.axis.zeroNote.map { " " + $0 } ?? ""),
            svg: meanChart.render()))

        if !single {
            let panels = analysis.dropK.map { k in
                LinePanel(title: "Drop-\(k) set overlap with the final checkpoint", yTitle: "Jaccard",
                          yDomain: (0, 1), series: ModuleKind.allCases.compactMap { module in
                              // A module in fewer than k layers has no drop-k set.
                              analysis[module].jaccardFinal[k].map(module.line)
                          })
            }
            let chart = LineChart(title: "Drop-set overlap (Jaccard) with the final checkpoint", progress: progress,
                                  panels: panels)
            figures.append(ReportFigure(
                fileName: "jaccard_final.svg", heading: "Drop-set overlap with the final checkpoint",
                altText: "Jaccard overlap of each checkpoint's drop-k sets with the final checkpoint's",
                caption: "1 means the checkpoint would drop exactly the layers the final checkpoint drops."
                    + (chart.axis.zeroNote.map { " " + $0 } ?? ""),
                svg: chart.render()))
        }
        return figures + blockGapFigures(scoreFile)
    }

    /// The caption's word on the shaded bands, when there are any.
    static func bandNote(_ analysis: SeriesAnalysis) -> String {
        analysis.uncertainty.map { uncertainty in
            " Shaded bands are \(NumberFormatting.fixed(uncertainty.settings.confidence * 100, 0))% bootstrap "
                + "intervals (calibration sequences resampled)."
        } ?? ""
    }

    /// The drop-k whose unstable members the heatmaps mark: the verdict's k
    /// when analysed, else the largest analysed k.
    static func markedK(_ analysis: SeriesAnalysis) -> Int {
        analysis.dropK.contains(analysis.verdict.k) ? analysis.verdict.k : analysis.dropK.last ?? analysis.verdict.k
    }

    /// Up to 1, down to the next multiple of 0.5 below the data and its
    /// bootstrap intervals (a band cut at the axis would understate them),
    /// but at least to 0: correlations in 0.8...1 would be a flat line on
    /// −1...1, while 0 stays in view as the "no agreement" reference.
    static func correlationDomain(_ analysis: SeriesAnalysis, _ keyPath: KeyPath<ModuleSeries, [Double]>)
        -> (Double, Double) {
        let lowest = ModuleKind.allCases.flatMap { module in
            analysis[module][keyPath: keyPath] + correlationBand(analysis, module, keyPath).map(\.low)
        }.filter(\.isFinite).min() ?? 0
        return (max(-1, min(0, (lowest * 2).rounded(.down) / 2)), 1)
    }

    /// The bootstrap intervals of `module`'s correlation `keyPath` with the
    /// final checkpoint (Spearman or Kendall); none without a bootstrap.
    static func correlationBand(_ analysis: SeriesAnalysis, _ module: ModuleKind, _ keyPath: KeyPath<ModuleSeries, [Double]>)
        -> [ConfidenceInterval] {
        guard let spread = analysis.uncertainty?[module] else { return [] }
        return keyPath == \ModuleSeries.spearmanFinal ? spread.spearmanFinal : spread.kendallFinal
    }
}

import Analysis
import DroptraceSupport
import ScoreStore

/// The text of a comparison's report.md, section by section.
struct ComparisonMarkdown {
    let title: String
    let comparison: RunComparison
    let figures: [ReportFigure]

    private var runs: [ComparedRun] { comparison.runs }

    func render() -> String {
        [
            "# \(Markdown.escape(title))\n", summary(), runTable(), ReportMarkdown.figureList(figures), gaps(),
            perCheckpoint(), layers(), method(),
        ].joined(separator: "\n")
    }

    // MARK: - Summary

    private func summary() -> String {
        let layers = comparison.layers
        var text = "Comparing \(runs.count) runs of \(Markdown.escape(comparison.modelType)), \(layers) "
            + "layer\(layers == 1 ? "" : "s"): \(runs.map { Markdown.escape($0.label) }.joined(separator: ", ")).\n\n"
        text += verdicts() + "\n\n"
        if let last = comparison.lastCommonPosition {
            let k = comparison.verdictK
            let agreement = comparison.agreement[.attention]?[k]?[last] ?? .nan
            let attention = spread(comparison.meanImportance[.attention]?[last], present: runs.count)
            let mlp = spread(comparison.meanImportance[.mlp]?[last], present: runs.count)
            text += "At the last checkpoint every run has, \(comparison.positionLabel(last)), the runs' attention "
                + "drop-\(k) sets overlap with a mean pairwise Jaccard of \(NumberFormatting.correlation(agreement)); "
                + "mean importance is \(attention) for attention and \(mlp) for MLP (mean over runs, min–max).\n\n"
        } else {
            text += "No checkpoint is present in every run, so the runs' final states are not compared directly; "
                + "see the gaps below.\n\n"
        }
        text += calibration() + precision() + "\n\n" + alignment() + "\n"
        return text
    }

    private func verdicts() -> String {
        let outcomes = Verdict.Outcome.allCases.compactMap { outcome -> (Verdict.Outcome, [String])? in
            let labels = runs.filter { $0.analysis.verdict.outcome == outcome }.map { Markdown.escape($0.label) }
            return labels.isEmpty ? nil : (outcome, labels)
        }
        if comparison.verdictHoldsInEveryRun, let outcome = outcomes.first?.0 {
            return "**The verdict holds in every run: \(outcome.rawValue)** (\(runs.count) of \(runs.count) runs; "
                + "each run's verdict is the one its store holds, by the rule of a single run's report)."
        }
        let parts = outcomes.map { outcome, labels in
            "\(outcome.rawValue) in \(labels.count) (\(labels.joined(separator: ", ")))"
        }
        return "**The verdict differs across runs:** \(parts.joined(separator: "; ")). A finding that holds in only "
            + "some runs is not one the recipe can be said to produce."
    }

    private func calibration() -> String {
        let hashes = runs.map(\.scoreFile.metadata.calibrationSHA256)
        if comparison.sameCalibration {
            let metadata = runs[0].scoreFile.metadata
            return "Every run was scored on the same calibration tokens "
                + "(\(NumberFormatting.grouped(metadata.calibrationTokens)) tokens, sha256 `\(hashes[0].prefix(16))…`), "
                + "so the spread below is between the runs alone."
        }
        return "The runs were scored on different calibration tokens (\(Set(hashes).count) different sets, see the "
            + "table): the spread below mixes the differences between runs with the calibration sample's own variation."
    }

    /// Said only when the runs differ: scores of two precisions differ by the rounding too.
    private func precision() -> String {
        let byPrecision = Dictionary(grouping: runs, by: \.scoreFile.metadata.precision)
        guard byPrecision.count > 1 else { return "" }
        let groups = byPrecision.sorted { $0.key < $1.key }.map { precision, runs in
            "\(precision): \(runs.map { Markdown.escape($0.label) }.joined(separator: ", "))"
        }
        return " The runs were scored in different precisions (\(groups.joined(separator: "; "))): the spread also "
            + "holds the difference between bfloat16 and float32 matrix products."
    }

    private func alignment() -> String {
        let how: String
        switch comparison.alignment {
        case .tokens: how = "by tokens seen (every checkpoint of every run records them)"
        case .step: how = "by training step (not every checkpoint records its tokens seen)"
        case .name: how = "by checkpoint name (not every checkpoint has a known step, or the steps of a run do not increase)"
        }
        let total = comparison.positions.count
        let everywhere = comparison.positions.filter { $0.present == runs.count }.count
        return "Checkpoints are matched across runs \(how): \(total) checkpoint\(total == 1 ? "" : "s"), "
            + "\(everywhere) of them in every run."
            + (everywhere < total ? " The others are gaps in the runs that lack them (listed under Gaps)." : "")
    }

    // MARK: - Tables

    private func runTable() -> String {
        let k = comparison.verdictK
        var table = MarkdownTable(
            ["Run", "Store", "Checkpoints", "Steps", "Calibration", "Verdict",
             ReportMarkdown.criterionName("attention_below_mlp", k: k) ?? "",
             ReportMarkdown.criterionName("drop_set_agreement", k: k) ?? "",
             ReportMarkdown.criterionName("early_stabilisation", k: k) ?? ""],
            alignments: [.left, .left, .right, .left, .left, .left, .right, .right, .right])
        for run in runs {
            let rows = run.scoreFile.rows
            let steps = rows.map(\.step)
            let known = steps.allSatisfy { $0 >= 0 }
            let metadata = run.scoreFile.metadata
            func criterion(_ id: String) -> String {
                guard let criterion = run.analysis.verdict.criteria.first(where: { $0.id == id }) else {
                    return NumberFormatting.undefined
                }
                // The status the run's own report gives: within noise is inconclusive, not pass.
                return "\(NumberFormatting.correlation(criterion.value)) (\(criterion.status.rawValue))"
            }
            table.add([
                Markdown.escape(run.label), Markdown.escape(run.path), String(rows.count),
                known ? "\(steps.first ?? 0)–\(steps.last ?? 0)" : "unknown",
                "\(NumberFormatting.grouped(metadata.calibrationTokens)) tokens, `\(metadata.calibrationSHA256.prefix(12))…`",
                run.analysis.verdict.outcome.rawValue + (run.analysisStored ? "" : " (from its rows)"),
                criterion("attention_below_mlp"), criterion("drop_set_agreement"), criterion("early_stabilisation"),
            ])
        }
        return "## Runs and their verdicts\n\nEach run's verdict and criteria as its own store holds them (see a run's "
            + "report for the rule; the verdict uses k = round(A/2) = \(k), A the layers with attention); a file without a stored analysis "
            + "(`droptrace score`'s) is analysed from its rows, marked \"from its rows\".\n\n" + table.render()
    }

    private func gaps() -> String {
        var table = MarkdownTable(comparison.positionHeaders + ["Present in", "Missing from"])
        for (index, position) in comparison.positions.enumerated() where position.present < runs.count {
            let present = position.rows.enumerated().filter { $0.element != nil }.map { Markdown.escape(runs[$0.offset].label) }
            let missing = position.rows.enumerated().filter { $0.element == nil }.map { Markdown.escape(runs[$0.offset].label) }
            table.add(comparison.positionCells(index) + [present.joined(separator: ", "), missing.joined(separator: ", ")])
        }
        let intro = "## Gaps\n\n"
        guard !table.rows.isEmpty else { return intro + "Every checkpoint is present in every run.\n" }
        return intro + "Checkpoints that some runs lack. Means and spreads there are over the runs that have them; "
            + "agreement needs at least two.\n\n" + table.render()
    }

    private func perCheckpoint() -> String {
        var headers = comparison.positionHeaders + ["Runs"]
        headers += ModuleKind.allCases.map { "\($0.displayName) mean importance" }
        let attentionK = comparison.dropK.filter { comparison.agreement[.attention]?[$0] != nil }
        headers += attentionK.map { "Attention drop-\($0) agreement" }
        var table = MarkdownTable(headers, alignments: comparison.positionHeaders.map { _ in .left }
                                    + Array(repeating: .right, count: headers.count - comparison.positionHeaders.count))
        for (index, position) in comparison.positions.enumerated() {
            var cells = comparison.positionCells(index) + ["\(position.present)/\(runs.count)"]
            cells += ModuleKind.allCases.map { spread(comparison.meanImportance[$0]?[index], present: position.present) }
            cells += attentionK.map { k in
                NumberFormatting.correlation(comparison.agreement[.attention]?[k]?[index] ?? .nan)
            }
            table.add(cells)
        }
        return "## Per checkpoint across runs\n\nMean importance over layers: mean over runs (lowest–highest run; "
            + "\"2 of 3 runs\" where a run that has the checkpoint has no defined value there, left out of the mean). "
            + "Agreement: the mean Jaccard overlap |A ∩ B| / |A ∪ B| over every pair of runs' attention drop-k sets; "
            + "— where fewer than two runs have the checkpoint.\n\n" + table.render()
    }

    private func layers() -> String {
        guard let last = comparison.lastCommonPosition else { return "" }
        let k = comparison.verdictK
        var table = MarkdownTable(
            ["Layer"] + ModuleKind.allCases.map { "\($0.displayName) mean ± sd (min–max)" }
                + ["Runs dropping its attention (k=\(k))"],
            alignments: [.right, .right, .right, .right, .right])
        for layer in 0..<comparison.layers {
            var cells = [String(layer)]
            for module in ModuleKind.allCases {
                guard let value = comparison.importance[module]?[last][layer] else {
                    cells.append(NumberFormatting.undefined)
                    continue
                }
                let sd = value.standardDeviation.isNaN ? "" : " ± \(NumberFormatting.score(value.standardDeviation))"
                cells.append(value.count == 0 ? NumberFormatting.undefined
                             : "\(NumberFormatting.score(value.mean))\(sd) (\(NumberFormatting.score(value.min))–"
                                + "\(NumberFormatting.score(value.max))\(Self.partial(value, present: runs.count)))")
            }
            let dropping = comparison.dropCounts[.attention]?[k]?[last][layer] ?? 0
            cells.append("\(dropping)/\(runs.count)")
            table.add(cells)
        }
        return "## Layers at \(comparison.positionLabel(last))\n\nThe last checkpoint every run has. Importance per "
            + "layer across runs (sd: sample standard deviation), and in how many runs the layer's attention is in the "
            + "drop-\(k) set.\n\n" + table.render()
    }

    private func method() -> String {
        """
        ## Method

        - Each run's rows, analysis and verdict are read from its own store (`droptrace trace` wrote them; a file \
        without an analysis is analysed from its rows as `trace` would); nothing is rescored.
        - Checkpoints are matched by tokens seen when every checkpoint of every run records them, else by step when \
        every step is known, else by name. A checkpoint missing from a run is a gap there: it is left out of that \
        checkpoint's means and spreads, never filled in.
        - Per checkpoint, layer and module type: the mean, the sample standard deviation (n − 1) and the lowest and \
        highest importance across the runs that have the checkpoint.
        - Drop-k sets (the k least important layers, ties to the lower index) for k = 25% and 50% of the layers; \
        agreement is their Jaccard overlap averaged over every pair of runs.
        - The runs must share model_type, num_layers, hidden_size and layer shapes: only one architecture's layers are compared layer by layer.

        """
    }

    // MARK: - Helpers

    /// "0.1234 (0.1200–0.1300)", "—" where no run has a value.
    private func spread(_ value: Spread?, present: Int) -> String {
        guard let value, value.count > 0 else { return NumberFormatting.undefined }
        return "\(NumberFormatting.score(value.mean)) (\(NumberFormatting.score(value.min))–"
            + "\(NumberFormatting.score(value.max))\(Self.partial(value, present: present)))"
    }

    /// "; 2 of 3 runs" when a run that has the checkpoint has no defined
    /// value there (left out of the mean), else nothing.
    private static func partial(_ value: Spread, present: Int) -> String {
        value.count < present ? "; \(value.count) of \(present) runs" : ""
    }
}

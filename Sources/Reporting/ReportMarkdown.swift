import Analysis
import DroptraceSupport
import ScoreStore

/// The text of report.md, section by section.
struct ReportMarkdown {
    let writer: ReportWriter
    let figures: [ReportFigure]

    private var analysis: SeriesAnalysis { writer.analysis }
    private var rows: [CheckpointRow] { writer.scoreFile.rows }
    private var metadata: ScoreFileMetadata { writer.scoreFile.metadata }
    private var count: Int { rows.count }
    private var final: Int { rows.count - 1 }

    static let verdictAnchor = "#how-the-verdict-is-decided"

    func render() -> String {
        var parts = ["# \(Markdown.escape(writer.title))\n", summary(), criteriaTable()]
        if !writer.unscored.failed.isEmpty { parts.append(failedCheckpoints()) }
        if !writer.unscored.pending.isEmpty { parts.append(pendingCheckpoints()) }
        parts += [run(), figureSection(), dropSetTable()]
        if let evaluation = writer.evaluation {
            parts.append(EvaluationSection(evaluation: evaluation, rows: rows, dropK: analysis.attentionDropK).render())
        }
        parts += extra(.afterDropSets)
        parts += [finalScores(), peerMetrics(), stabilisation()]
        if let uncertainty = analysis.uncertainty { parts.append(uncertaintySection(uncertainty)) }
        parts.append(agreement())
        parts += extra(.end)
        parts += [rule(), method()]
        return parts.joined(separator: "\n")
    }

    // MARK: - Summary

    private func summary() -> String {
        let verdict = analysis.verdict
        let k = verdict.k
        var text: String
        switch verdict.outcome {
        case .inherent:
            text = "**Verdict: inherent.** Attention redundancy is present early and stable across this run: "
                + "all three criteria of the rule pass."
        case .notInherent:
            text = "**Verdict: not inherent.** By the rule below, attention redundancy is not shown to be inherent "
                + "in this run. \(verdict.reason)"
        case .inconclusive:
            text = "**Verdict: inconclusive.** \(verdict.reason)"
        }
        if let uncertainty = analysis.uncertainty {
            text += " Intervals in this report are \(confidence(uncertainty)) bootstrap intervals from "
                + "\(uncertainty.settings.replicates) resamples of the \(uncertainty.sequences) calibration sequences "
                + "(see [Uncertainty](#uncertainty))."
        } else if rows.allSatisfy({ $0.sums?.sequenceCount == 1 }) {
            text += " The calibration is one sequence, so there are no bootstrap intervals (resampling needs two "
                + "or more); the numbers below carry no measure of how they move with the calibration sample."
        }
        let attention = analysis.attention, mlp = analysis.mlp
        // From the ranking: the verdict's k need not be among the analysed drop-k values.
        let finalSet = NumberFormatting.layers(DropSets.dropSet(ranking: attention.rankings[final], k: k))
        if count == 1 {
            text += "\n\nOnly one checkpoint (\(checkpointLabel(0))) of this run (\(runDescription())) was "
                + "scored, so there is no trend over training to judge; the tables describe that checkpoint alone. "
                + "Its attention drop-\(k) set is layers \(finalSet)."
            return text + "\n"
        }
        // Counted as the verdict counts: checkpoints with an undefined mean are left out.
        let comparable = zip(attention.meanImportance, mlp.meanImportance).filter { !$0.isNaN && !$1.isNaN }
        let below = comparable.filter { $0 < $1 }.count
        let defined = comparable.count < count ? " with defined scores" : ""
        let settled = verdictStabilisation()
        text += "\n\nAcross the \(count) checkpoints of this run (\(runDescription()), steps \(stepRange())), "
            + "attention's mean importance was below MLP's at \(below) of \(comparable.count) checkpoints\(defined). "
            + "The final checkpoint's attention drop-\(k) set is layers \(finalSet); earlier checkpoints matched it "
            + "with a median Jaccard overlap of "
            + "\(NumberFormatting.correlation(criterion("drop_set_agreement")?.value ?? .nan)), and it stopped "
            + "changing at \(settled)."
        text += " Mean importance moved from \(meanMove(.attention)) for attention, \(meanMove(.mlp)) for MLP "
            + "and \(meanMove(.block)) for whole blocks (first → final checkpoint)."
        let settling = ModuleKind.allCases.compactMap { module in
            analysis[module].stabilisation[k].map { settled in
                "\(stepOrIndex(settled)) for \(module.inProse)"
            }
        }
        if settling.count == 3 {
            text += " The drop-\(k) sets stop changing at \(settling[0]), \(settling[1]) and \(settling[2])."
        }
        return text + "\n"
    }

    private func criteriaTable() -> String {
        let withIntervals = analysis.verdict.criteria.contains { $0.interval != nil }
        let intervalHeader = analysis.uncertainty.map { "\(confidence($0)) interval" } ?? "Interval"
        var table = MarkdownTable(["Criterion", "Measured"] + (withIntervals ? [intervalHeader] : [])
                                    + ["Threshold", "Result", "Numbers behind it"],
                                  alignments: [.left, .right] + (withIntervals ? [.right] : [])
                                    + [.right, .center, .left])
        for criterion in analysis.verdict.criteria {
            table.add([
                Self.criterionName(criterion.id, k: analysis.verdict.k) ?? criterion.description,
                NumberFormatting.correlation(criterion.value),
            ] + (withIntervals ? [NumberFormatting.interval(criterion.interval ?? .undefined, 3)] : []) + [
                "\(criterion.comparison.symbol) \(NumberFormatting.correlation(criterion.threshold))",
                criterion.status == .inconclusive ? "inconclusive (interval straddles the threshold)"
                    : criterion.status.rawValue,
                criterion.detail,
            ])
        }
        return table.render() + "\nThe rule and why it tests the paper's claim: see "
            + "[How the verdict is decided](\(Self.verdictAnchor)).\n"
    }

    static func criterionName(_ id: String, k: Int) -> String? {
        switch id {
        case "attention_below_mlp": "Attention less important than MLP (share of checkpoints)"
        case "drop_set_agreement": "Attention drop-\(k) set agrees with the final one (median Jaccard)"
        case "early_stabilisation": "Attention drop-\(k) set settles early (share of the run)"
        default: nil
        }
    }

    // MARK: - The run

    /// What the last run failed on, so a report read later says what it
    /// lacks: a checkpoint that failed to score has no row here.
    private func failedCheckpoints() -> String {
        let scored = Set(rows.map(\.name))
        var table = MarkdownTable(["Checkpoint", "In this report", "Error"])
        for failure in writer.unscored.failed {
            table.add([Markdown.escape(failure.name), scored.contains(failure.name) ? "yes" : "no",
                       Markdown.escape(failure.reason)])
        }
        let count = writer.unscored.failed.count
        return "## Failed checkpoints\n\nThe last run that updated this store failed on \(count) checkpoint"
            + "\(count == 1 ? "" : "s"), with the error it logged. One marked \"no\" failed to score: "
            + "the verdict and tables above and below are of the other checkpoints. The next run tries again.\n\n" + table.render()
    }

    /// What the last run left for a later one (still being written, or
    /// scored by Slurm jobs not merged yet), and whether each is in this
    /// report as last scored (saved again in place) or not at all.
    private func pendingCheckpoints() -> String {
        let scored = Set(rows.map(\.name))
        var table = MarkdownTable(["Checkpoint", "In this report", "Why"])
        for entry in writer.unscored.pending {
            table.add([Markdown.escape(entry.name), scored.contains(entry.name) ? "as last scored" : "no", Markdown.escape(entry.reason)])
        }
        let count = writer.unscored.pending.count
        return "## Checkpoints not scored yet\n\nThe last run that updated this store left \(count) checkpoint"
            + "\(count == 1 ? "" : "s") for a later run, which scores \(count == 1 ? "it" : "them"). One marked \"no\" "
            + "is not in the verdict and tables; one saved again in place is there as it was last scored.\n\n" + table.render()
    }

    private func run() -> String {
        var table = MarkdownTable(["", ""])
        table.add(["Model type", Markdown.escape(metadata.modelType)])
        table.add(["Layers", String(metadata.numLayers)])
        table.add(["Checkpoints", String(count)])
        table.add(["Steps", stepRange()])
        table.add(["Tokens at the final checkpoint", NumberFormatting.grouped(rows[final].tokens)])
        table.add(["Calibration", "\(NumberFormatting.grouped(metadata.calibrationTokens)) tokens, sha256 "
                    + "`\(metadata.calibrationSHA256.prefix(16))…`"])
        table.add(["Similarity metric", metadata.metric])
        table.add(["Precision", "\(metadata.precision), matrix products on "
                    + (metadata.matrixKernel.map(Markdown.escape) ?? "kernels not recorded")])
        // A module in fewer layers than the model has (Nemotron-H's attention) has drop-k sets up to its count.
        let fewer = ModuleKind.allCases.filter { analysis[$0].layers.count < analysis.layers }.map { module in
            "\(module.displayName) is in \(analysis[module].layers.count) of the \(analysis.layers) layers, "
                + "so k ≤ \(analysis[module].layers.count) for it; "
        }
        table.add(["Drop-k analysed", analysis.dropK.map(String.init).joined(separator: ", ")
                    + " (\(fewer.joined())verdict uses k = \(analysis.verdict.k))"])
        table.add(["Scores written by", "droptrace \(metadata.droptraceVersion)"])
        table.add(["Report written by", "droptrace \(DroptraceVersion.string)"])
        return "## The run\n\n" + table.render()
    }

    // MARK: - Figures

    private func figureSection() -> String {
        var text = Self.figureList(figures)
        if count == 1 {
            text += "\nWith a single checkpoint there are no rank correlations or drop-set overlaps to plot.\n"
        }
        return text
    }

    /// "## Figures" with each heading once and each caption after the last
    /// figure under its heading.
    static func figureList(_ figures: [ReportFigure]) -> String {
        var text = "## Figures\n"
        for (index, figure) in figures.enumerated() {
            if index == 0 || figures[index - 1].heading != figure.heading {
                text += "\n### \(figure.heading)\n"
            }
            text += "\n![\(figure.altText)](\(figure.relativePath))\n"
            if index == figures.count - 1 || figures[index + 1].heading != figure.heading {
                text += "\n\(figure.caption)\n"
            }
        }
        return text
    }

    // MARK: - Tables

    /// The analysed k `module` has drop-k sets for.
    private func analysedK(_ module: ModuleKind) -> [Int] {
        analysis[module].analysedK(analysis.dropK)
    }

    private func dropSetTable() -> String {
        let modules = ModuleKind.allCases
        var headers = ["Step", "Tokens", "Checkpoint"]
        for module in modules {
            headers += analysedK(module).map { "\(module.displayName) k=\($0)" }
        }
        var table = MarkdownTable(headers, alignments: [.right, .right, .left]
                                    + Array(repeating: .left, count: headers.count - 3))
        for index in rows.indices {
            var cells = [NumberFormatting.step(rows[index].step), NumberFormatting.grouped(rows[index].tokens),
                         Markdown.escape(rows[index].name)]
            for module in modules {
                cells += analysedK(module).map { k in
                    NumberFormatting.layers(analysis[module].dropSet(checkpoint: index, k: k))
                }
            }
            table.add(cells)
        }
        return "## Drop sets per checkpoint\n\nThe k least important layers of each checkpoint (0-based layer "
            + "indices, ascending), i.e. the layers LLM-Drop would remove.\n\n" + table.render()
    }

    private func finalScores() -> String {
        var table = MarkdownTable(["Layer", "Attention", "MLP", "Block"], alignments: [.right, .right, .right, .right])
        let row = rows[final]
        for layer in 0..<analysis.layers {
            var cells = [String(layer)]
            for module in ModuleKind.allCases {
                let score = Double(module.importance(in: row)[layer])
                let value = NumberFormatting.score(score)
                let ks = analysedK(module).filter { analysis[module].dropSet(checkpoint: final, k: $0).contains(layer) }
                let interval = NumberFormatting.scoreInterval(
                    of: score, analysis.uncertainty.map { $0[module].importance(checkpoint: final, layer: layer) })
                cells.append((ks.isEmpty ? value : "**\(value)** (k=\(ks.map(String.init).joined(separator: ", ")))")
                                + interval)
            }
            table.add(cells)
        }
        let intervals = analysis.uncertainty.map { " [low, high] is the \(confidence($0)) interval." } ?? ""
        return "## Final checkpoint scores\n\nImportance per layer at \(checkpointLabel(final)). **Bold** values are "
            + "in the final drop-k set; (k=…) lists the k values whose drop set contains the layer.\(intervals)\n\n"
            + table.render()
    }

    private func stabilisation() -> String {
        var table = MarkdownTable(["Module", "k", "Settles at step", "Checkpoint", "Unchanged over"],
                                  alignments: [.left, .right, .right, .left, .left])
        for module in ModuleKind.allCases {
            for k in analysedK(module) {
                guard let settled = analysis[module].stabilisation[k] else { continue }
                let unchanged = count - settled.index
                table.add([module.displayName, String(k), NumberFormatting.step(settled.step),
                           Markdown.escape(rows[settled.index].name),  // its 0-based index read as an ordinal, one off
                           "last \(unchanged) of \(count) checkpoint\(count == 1 ? "" : "s")"])
            }
        }
        return "## Stabilisation\n\nThe first checkpoint from which the drop-k set is the same at every later "
            + "checkpoint (a set that changes and changes back counts from its last change).\n\n" + table.render()
    }

    private func uncertaintySection(_ uncertainty: SeriesUncertainty) -> String {
        let settings = uncertainty.settings
        let tail = NumberFormatting.fixed((1 - settings.confidence) / 2 * 100, 1)
        let head = NumberFormatting.fixed((1 + settings.confidence) / 2 * 100, 1)
        var text = """
            ## Uncertainty

            How much these numbers move with the calibration sample. Each of \(settings.replicates) bootstrap \
            replicates draws \(uncertainty.sequences) of the \(uncertainty.sequences) calibration sequences with \
            replacement (the same draw for every checkpoint and module, SplitMix64 seeded with \(settings.seed)) and \
            recomputes importance = 1 − Σcos / Σtokens over the drawn sequences, then everything derived from it. \
            An interval is the \(tail)th to \(head)th percentile over the replicates. A layer's drop-k probability \
            is the share of replicates in which it is in that checkpoint's drop-k set; a drop set is **stable** when \
            every member's probability is ≥ \(NumberFormatting.fixed(SeriesUncertainty.stableProbability, 2)).


            """
        if uncertainty.sequences < SeriesUncertainty.fewSequences {
            // A resample of S sequences varies by (S − 1)/S of the sample's own variance, and with few
            // sequences only a handful of distinct resamples exist: intervals come out too narrow.
            text += "With only \(uncertainty.sequences) calibration sequences these intervals are rough and likely too "
                + "narrow (the bootstrap understates the spread of so small a sample); calibrate on at least "
                + "\(SeriesUncertainty.fewSequences) sequences for intervals to rely on.\n\n"
        }
        var table = MarkdownTable(["Module", "k", "Final drop set", "Member probabilities", "Stable",
                                   "Checkpoints with a stable set"],
                                  alignments: [.left, .right, .left, .left, .center, .right])
        for module in ModuleKind.allCases {
            for k in analysedK(module) {
                let series = analysis[module], spread = uncertainty[module]
                let set = series.dropSet(checkpoint: final, k: k)
                let probabilities = set.map { layer in
                    "\(layer): " + NumberFormatting.fixed(spread.dropProbability(checkpoint: final, layer: layer, k: k), 2)
                }.joined(separator: ", ")
                let stableCount = rows.indices.filter { spread.isStable(series.dropSet(checkpoint: $0, k: k),
                                                                         checkpoint: $0, k: k) }.count
                table.add([module.displayName, String(k), NumberFormatting.layers(set), probabilities,
                           spread.isStable(set, checkpoint: final, k: k) ? "yes" : "no", "\(stableCount) of \(count)"])
            }
        }
        text += "Drop sets of the final checkpoint under resampling:\n\n" + table.render()
        return text
    }

    private func agreement() -> String {
        var text = "## Rank agreement per checkpoint\n\n"
        guard count > 1 else {
            return text + "Only one checkpoint: there is nothing to correlate, so no rank correlations or drop-set "
                + "overlaps are reported.\n"
        }
        text += "Spearman ρ (average ranks for ties) and Kendall τ-b of each checkpoint's importance vector; "
            + "— marks an undefined value (no previous checkpoint, or a constant vector)."
            + (analysis.uncertainty.map { " [low, high] is the \(confidence($0)) interval of a correlation with the "
                + "final checkpoint (each replicate correlated with the same replicate of the final one)." } ?? "")
            + "\n\n"
        for (heading, spearman, kendall) in [
            ("With the final checkpoint", \ModuleSeries.spearmanFinal, \ModuleSeries.kendallFinal),
            ("With the previous checkpoint", \ModuleSeries.spearmanPrevious, \ModuleSeries.kendallPrevious),
        ] {
            var headers = ["Step", "Checkpoint"]
            for module in ModuleKind.allCases { headers += ["\(module.displayName) ρ", "\(module.displayName) τ"] }
            var table = MarkdownTable(headers, alignments: [.right, .left] + Array(repeating: .right, count: 6))
            for index in rows.indices {
                var cells = [NumberFormatting.step(rows[index].step), Markdown.escape(rows[index].name)]
                for module in ModuleKind.allCases {
                    let (rhoValue, tauValue) = (analysis[module][keyPath: spearman][index], analysis[module][keyPath: kendall][index])
                    var rho = NumberFormatting.correlation(rhoValue), tau = NumberFormatting.correlation(tauValue)
                    if spearman == \ModuleSeries.spearmanFinal, let uncertainty = analysis.uncertainty?[module] {
                        rho += NumberFormatting.intervalAfter(rhoValue, uncertainty.spearmanFinal[index], 3)
                        tau += NumberFormatting.intervalAfter(tauValue, uncertainty.kendallFinal[index], 3)
                    }
                    cells += [rho, tau]
                }
                table.add(cells)
            }
            text += "### \(heading)\n\n" + table.render() + "\n"
        }
        var headers = ["Step", "Checkpoint"]
        for module in ModuleKind.allCases { headers += analysedK(module).map { "\(module.displayName) k=\($0)" } }
        var table = MarkdownTable(headers, alignments: [.right, .left]
                                    + Array(repeating: .right, count: headers.count - 2))
        for index in rows.indices {
            var cells = [NumberFormatting.step(rows[index].step), Markdown.escape(rows[index].name)]
            for module in ModuleKind.allCases {
                cells += analysedK(module).map { k in
                    NumberFormatting.correlation(analysis[module].jaccardFinal[k]?[index] ?? .nan)
                }
            }
            table.add(cells)
        }
        text += "### Jaccard overlap with the final drop sets\n\nJaccard overlap |A ∩ B| / |A ∪ B| of each "
            + "checkpoint's drop-k set with the final checkpoint's.\n\n" + table.render()
        return text
    }

    private func extra(_ placement: ReportSection.Placement) -> [String] {
        writer.sections.filter { $0.placement == placement }.map { section in
            "## \(section.title)\n\n\(section.body)" + (section.body.hasSuffix("\n") ? "" : "\n")
        }
    }

    // MARK: - Rule and method

    private func rule() -> String {
        func number(_ value: Double) -> String { NumberFormatting.fixed(value, 2) }
        return """
            ## How the verdict is decided

            The paper (He et al. 2024, *What Matters in Transformers? Not All Attention is Needed*) finds a large \
            share of attention layers far more redundant than MLP layers and, tracing checkpoints through training, \
            calls this redundancy inherent and consistent across training stages. The rule tests three parts of \
            that claim with the attention drop-k set at k = round(A/2) = \(analysis.verdict.k), A the layers with \
            attention (a layer scored at no checkpoint lacks it or had it dropped, and is left out), whatever k \
            values were asked for:

            1. **Attention is the more redundant module type:** attention's mean importance is below MLP's at \
            ≥ \(NumberFormatting.percent(Verdict.attentionBelowMLPFraction)) of checkpoints (checkpoints with \
            undefined scores left out).
            2. **The drop set is the final one early on:** the median, over all checkpoints except the final one, \
            of the Jaccard overlap between the checkpoint's attention drop-k set and the final checkpoint's is \
            ≥ \(number(Verdict.medianJaccardThreshold)).
            3. **The drop set settles early:** the attention drop-k set stops changing within the first half of \
            the run, (stabilisation step − first step) / (last step − first step) ≤ \
            \(number(Verdict.stabilisationFraction)); with unknown steps, checkpoint index / (C − 1).

            **Inherent** when all three pass, **not inherent** when any fails; **inconclusive** with fewer than \
            \(Verdict.minimumCheckpoints) checkpoints, for attention in one layer (its drop set is that layer), or \
            when no criterion fails but one cannot be measured (undefined scores; for criteria 2 and 3 also a \
            final drop set decided by a tie at its edge, one layer inside and one outside with equal importance).

            """ + (analysis.uncertainty == nil ? "" : """

            The calibration sample is noise too: each criterion is also measured in every bootstrap replicate \
            (see [Uncertainty](#uncertainty)). A criterion passes or fails only when its value and its whole \
            interval lie on the same side of the threshold; when the interval straddles the threshold the \
            criterion is **inconclusive**, and so is the verdict unless another criterion fails.

            """)
    }

    private func method() -> String {
        """
        ## Method

        - Importance of a module (LLM-Drop): 1 − the mean cosine similarity between its input and its output on \
        the residual stream over the calibration tokens; low importance means the module barely changes the hidden \
        state and can be dropped.
        - Rankings sort layers by ascending importance (ties to the lower layer index); the drop-k set is the \
        first k of the ranking.
        - Spearman ρ is the Pearson correlation of average ranks; Kendall τ-b corrects for ties on either side.
        - Everything here is also stored in the score file under `/analysis/`: per module \
        (`attention`, `mlp`, `block`) the datasets `rankings`, `drop_k<k>`, `spearman_final`, `kendall_final`, \
        `spearman_previous`, `kendall_previous`, `jaccard_final_k<k>` and `mean_importance`, with \
        `stabilisation_step_k<k>` attributes; the verdict and its criteria (JSON) are attributes of `/analysis`. \
        `droptrace report` rebuilds this report from the file alone.

        """ + (analysis.uncertainty == nil ? "" : """
        - The bootstrap is stored there too: per module `importance_ci_low`, `importance_ci_high`, \
        `drop_k<k>_probability`, and `<statistic>_ci_low`, `<statistic>_ci_high` for `mean_importance`, \
        `spearman_final` and `kendall_final`; attributes `bootstrap_replicates`, `bootstrap_seed`, \
        `bootstrap_confidence` and `bootstrap_sequences` on `/analysis`.

        """)
    }

    // MARK: - Helpers

    private func criterion(_ id: String) -> VerdictCriterion? {
        analysis.verdict.criteria.first { $0.id == id }
    }

    /// The checkpoint's name, with its step unless the name already says it.
    private func checkpointLabel(_ index: Int) -> String {
        let row = rows[index]
        let name = Markdown.escape(row.name)
        return row.step >= 0 && !row.name.contains(String(row.step)) ? "\(name) (step \(row.step))" : name
    }

    /// "llama, 32 layers".
    private func runDescription() -> String {
        "\(Markdown.escape(metadata.modelType)), \(metadata.numLayers) layer\(metadata.numLayers == 1 ? "" : "s")"
    }

    private func stepRange() -> String {
        let first = rows[0].step, last = rows[final].step
        if first < 0 || last < 0 { return "unknown" }
        return count == 1 ? "\(first)" : "\(first)–\(last)"
    }

    /// Where the verdict's attention drop-k set settles, in words.
    private func verdictStabilisation() -> String {
        let k = analysis.verdict.k
        let sets = analysis.attention.rankings.map { DropSets.dropSet(ranking: $0, k: k) }
        let index = DropSets.stabilisationIndex(sets) ?? 0
        let share = NumberFormatting.percent(criterion("early_stabilisation")?.value ?? .nan)
        let place = stepOrIndex(Stabilisation(index: index, step: rows[index].step))
        return "\(place) (\(share) into the run)"
    }

    /// A checkpoint by its step when steps place checkpoints (known and
    /// increasing), else by its place in the series and name (two branches
    /// of a run may share a step), counted from 1 as the verdict counts.
    private func stepOrIndex(_ settled: Stabilisation) -> String {
        let steps = rows.map(\.step)
        return steps == [settled.step] && settled.step >= 0 || Verdict.stepsAreUsable(steps) ? "step \(settled.step)"
            : "the \(Verdict.ordinal(settled.index + 1)) checkpoint (\(Markdown.escape(rows[settled.index].name)))"
    }

    private func meanMove(_ module: ModuleKind) -> String {
        let means = analysis[module].meanImportance
        func mean(_ index: Int) -> String {
            NumberFormatting.score(means[index])
                + NumberFormatting.scoreInterval(of: means[index], analysis.uncertainty.map { $0[module].meanImportance[index] })
        }
        return "\(mean(0)) to \(mean(final))"
    }

    /// "95%".
    private func confidence(_ uncertainty: SeriesUncertainty) -> String {
        NumberFormatting.fixed(uncertainty.settings.confidence * 100, 0) + "%"
    }
}

private extension ModuleKind {
    /// How the module type reads mid-sentence.
    var inProse: String {
        switch self {
        case .attention: "attention"
        case .mlp: "MLP"
        case .block: "whole blocks"
        }
    }
}

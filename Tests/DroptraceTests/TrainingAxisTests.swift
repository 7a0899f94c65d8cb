import Foundation
import Testing
import Analysis
import ScoreStore
@testable import Reporting

/// The x axis of charts over training: tokens seen when known, a log scale
/// past two decades, and where step 0 goes on it. Pythia's schedule is the
/// case in point: 0, 1, 2, 4, ..., 512, 1000, 2000, ..., 143000, with
/// 2,097,152 tokens per step.
@Suite struct TrainingAxisTests {
    static let pythiaSteps: [Int64] = [0] + (0...9).map { Int64(1) << $0 } + (1...143).map { Int64($0) * 1000 }
    static let tokensPerStep: Int64 = 2_097_152

    /// Labelled ticks of `axis` on 0...1000 px, left to right.
    private func labelled(_ axis: StepAxis) -> [(position: Double, label: String)] {
        axis.ticks(from: 0, to: 1000).compactMap { tick in tick.label.map { (tick.position, $0) } }
    }

    /// Coordinates are printed whatever the value: 1e30 trapped converting
    /// to Int (a crafted store's Kendall τ drew a chart), NaN printed "nan".
    @Test func coordinatesOfAnyValueAreValidNumbers() {
        #expect(SVG.number(12.345) == "12.35" && SVG.number(-3) == "-3")
        #expect(SVG.number(1e30) == "1000000000" && SVG.number(-.infinity) == "0" && SVG.number(.nan) == "0")
        // Table cells too: a perplexity of 1e300 took 301 digits.
        #expect(NumberFormatting.fixed(1e300, 2) == "1.00e+300" && NumberFormatting.fixed(12.5, 2) == "12.50")
        // A legend entry too long for the room right of the plot keeps its end (a run's path), never cut at the edge.
        #expect(LineChart.legendLabels(["seed1", "seed2"]) == ["seed1", "seed2"])
        #expect(LineChart.legendLabels(["/data/droptrace/pythia-160m/seed1"]) == ["…pythia-160m/seed1"])
        #expect(LineChart.legendLabels([String(repeating: "x", count: 40)])[0].count == LineChart.legendCharacters)
        // What runs share at their start and end gives way to what tells them apart: their ends alone
        // ("…160m-deduped-lr6e-4") read the same for every seed.
        #expect(LineChart.legendLabels(["seed1-pythia-160m-deduped-lr6e-4", "seed2-pythia-160m-deduped-lr6e-4"]) == ["seed1…", "seed2…"])
        #expect(LineChart.legendLabels(["/data/runs/pythia-160m/seed1/out", "/data/runs/pythia-160m/seed2/out", "/data/runs/pythia-410m/seed1/out"])
                    == ["…160m/seed1…", "…160m/seed2…", "…410m/seed1…"])
        #expect(LineChart.legendLabels(["a-very-long-name-for-a-baseline-run", "b"]) == ["a-very-long-name-…", "b"])
        #expect(LineChart.legendLabels(["same-long-name-for-two-runs", "same-long-name-for-two-runs"]).allSatisfy { $0.count == LineChart.legendCharacters })
        // A short colour bar (a 5-layer model's heatmap) gets a scale, not one lone tick.
        #expect(Ticks.values(0.01, 0.3, target: 2).values.map { ($0 * 10).rounded() } == [1, 2, 3])
        #expect(Ticks.values(0, 1, target: 5).values.count == 6)
        // Near-identity modules (importances ~1e-7) get distinct tick labels: six decimals read 0.000000.
        let tiny = Ticks.values(4.5e-8, 9.7e-8, target: 5)
        let labels = tiny.values.map { Ticks.label($0, step: tiny.step) }
        #expect(labels == ["6e−8", "8e−8"], "\(labels)")
        #expect(Ticks.label(2.5e-7, step: 5e-8) == "2.5e−7" && Ticks.label(0, step: 5e-8) == "0" && Ticks.label(0.25, step: 0.05) == "0.25")
        // Figure text shows a bidirectional override by its code, as reports do.
        #expect(SVG.escape("a\u{202E}<b") == "a[U+202E]&lt;b")
        // So do zero-width characters ("fin\u{200B}al" read as "final") and the noncharacters XML does not
        // allow (a run named with U+FFFE made the comparison's figure invalid XML).
        #expect(SVG.escape("run\u{FFFE}a fin\u{200B}al\u{FEFF}") == "run[U+FFFE]a fin[U+200B]al[U+FEFF]")
        #expect(Markdown.escape("fi\u{2060}nal\u{1}") == "fi\\[U+2060\\]nal\\[U+0001\\]")
        #expect(SVG.escape("tab\tstays é 🚀") == "tab\tstays é 🚀")
    }

    /// A near-identity module's importance (3e-6) is small, not zero: it
    /// printed 0.0000. An undefined score stands alone, without "— —".
    @Test func smallScoresReadAsSmallAndUndefinedOnesOnce() {
        #expect(NumberFormatting.score(3.21e-6) == "3.21e-06" && NumberFormatting.score(-4e-5) == "-4.00e-05")
        #expect(NumberFormatting.score(0) == "0.0000" && NumberFormatting.score(5e-5) == "0.0001"
                && NumberFormatting.score(0.12345) == "0.1235")
        let interval = ConfidenceInterval(low: 2e-6, high: 0.25)
        #expect(NumberFormatting.score(3.21e-6) + NumberFormatting.scoreInterval(of: 3.21e-6, interval)
                == "3.21e-06 [2.00e-06, 0.2500]")
        #expect(NumberFormatting.scoreInterval(of: .nan, interval) == "" && NumberFormatting.scoreInterval(of: 0.1, nil) == "")
        #expect(NumberFormatting.scoreInterval(of: 0.1, .undefined) == " —")
    }

    @Test func pythiaStepsGetALogAxisWithZeroBeforeTheBreak() throws {
        let axis = StepAxis.choose(steps: Self.pythiaSteps)
        #expect(axis == .log(lo: 1, hi: 143_000, hasZero: true))
        #expect(axis.title(.steps) == "Training step (log scale)")
        let ticks = labelled(axis)
        #expect(ticks.map(\.label) == ["0", "1", "10", "100", "1k", "10k", "100k"])
        // 0 at the left edge; the log scale starts after the gap kept for it.
        #expect(ticks[0].position == 0)
        let start = 1000 * StepAxis.zeroGap
        #expect(abs(ticks[1].position - start) < 1e-9)
        // Decades equally spaced from step 1 to the last step at the right edge.
        let decade = (1000 - start) / log10(143_000)
        for (index, tick) in ticks.dropFirst().enumerated() {
            #expect(abs(tick.position - (start + Double(index) * decade)) < 1e-6, "\(tick.label)")
        }
        #expect(abs(axis.position(step: 143_000, index: 0, from: 0, to: 1000) - 1000) < 1e-9)
        // Minor ticks (2..9 × each decade) are unlabelled and inside the axis.
        let minor = axis.ticks(from: 0, to: 1000).filter { $0.label == nil }
        #expect(minor.count == 8 * 5)  // 2–9 × 1, 10, 100, 1k and 10k; 200k is past the end
        #expect(minor.allSatisfy { $0.position > start && $0.position < 1000 })
        // Every checkpoint lands at a distinct place, in order.
        let positions = Self.pythiaSteps.enumerated().map { axis.position(step: $1, index: $0, from: 0, to: 1000) }
        #expect(zip(positions, positions.dropFirst()).allSatisfy { $0 < $1 })
        #expect(axis.zeroNote?.contains("0, which a log scale cannot place, sits at the left edge") == true)
    }

    @Test func pythiaTokensAreOnTheAxisWhenEveryCheckpointRecordsThem() throws {
        let tokens = Self.pythiaSteps.map { $0 * Self.tokensPerStep }
        let progress = TrainingProgress(steps: Self.pythiaSteps, tokens: tokens)
        #expect(progress.unit == .tokens && progress.values == tokens)
        let axis = StepAxis.choose(steps: progress.values)
        #expect(axis == .log(lo: 2_097_152, hi: 143_000 * 2_097_152, hasZero: true))
        #expect(axis.title(.tokens) == "Tokens seen (log scale)")
        #expect(labelled(axis).map(\.label) == ["0", "10M", "100M", "1B", "10B", "100B"])
        #expect(progress.columnTitle == "Checkpoint (tokens seen)")
        #expect(progress.columnLabels.last == "300B")
    }

    @Test func stepsWhenTokensAreNotKnownEverywhere() {
        var tokens = Self.pythiaSteps.map { $0 * Self.tokensPerStep }
        tokens[3] = -1
        #expect(TrainingProgress(steps: Self.pythiaSteps, tokens: tokens).unit == .steps)
        // Tokens that do not increase (a restart counting from zero) are not an axis either.
        let flat = TrainingProgress(steps: [1, 2, 3], tokens: [100, 100, 200])
        #expect(flat.unit == .steps && flat.values == [1, 2, 3])
        #expect(TrainingProgress(steps: [-1, -1], tokens: [-1, -1]).columnTitle == "Checkpoint (index; steps unknown)")
    }

    /// Steps all known but not increasing (OLMo 2's stage-2 ingredients,
    /// each restarting from the stage-1 step) place checkpoints by index, and
    /// the axis says why: it said the steps were unknown.
    @Test func stepsThatDoNotIncreaseAreNamedSo() {
        let axis = StepAxis.choose(steps: [100, 200, 300, 400, 300, 400])
        #expect(axis == .index(count: 6, stepsKnown: true))
        #expect(axis.title(.steps) == "Checkpoint index (steps not increasing)")
        #expect(StepAxis.choose(steps: [100, -1]).title(.steps) == "Checkpoint index (steps unknown)")
    }

    /// Steps near 2^53 whose Double values differ by less than the tick
    /// step: ticks were made by adding the step, which changed nothing there,
    /// and the loop grew without end (a report aborted allocating 35 GB).
    @Test func ticksOfStepsBeyondDoublesResolutionAreFew() {
        let steps: [Int64] = [10_000_000_000_000_000, 10_000_000_000_000_001, 10_000_000_000_000_002, 10_000_000_000_000_003]
        let ticks = StepAxis.choose(steps: steps).ticks(from: 0, to: 600)
        #expect((1...12).contains(ticks.count), "\(ticks.count) ticks")
        for (lo, hi) in [(1e16, 1e16 + 4), (1e300, 1e300 * (1 + 1e-15)), (0.0, 1.0)] {
            let values = Ticks.values(lo, hi, target: 8).values
            #expect((1...40).contains(values.count) && values == values.sorted() && Set(values).count == values.count, "\(lo)…\(hi)")
        }
        #expect(Ticks.values(0, 1, target: 5).values == [0, 0.2, 0.4, 0.6000000000000001, 0.8, 1])
    }

    /// Checkpoints close together late in training all read "100k" (three
    /// significant digits); steps spanning 19 decades drew 19 labels on top
    /// of each other. Labels take the digits that tell checkpoints apart,
    /// and a crowded log axis labels every few decades.
    @Test func closeStepsGetDistinctLabelsAndCrowdedDecadesThinOut() {
        let steps: [Int64] = (0...5).map { 100_000 + Int64($0) * 100 }
        #expect(TrainingProgress(values: steps, unit: .steps).columnLabels == ["100k", "100.1k", "100.2k", "100.3k", "100.4k", "100.5k"])
        #expect(TrainingProgress(values: [1000, -1, 1500], unit: .steps).columnLabels == ["1k", "#1", "1.5k"])
        let linear = labelled(StepAxis.choose(steps: steps)).map(\.label)
        #expect(Set(linear).count == linear.count, "\(linear)")
        let wide = labelled(StepAxis.choose(steps: [0, 1, 2, Int64.max]))
        #expect(wide.count < 12 && zip(wide, wide.dropFirst()).allSatisfy { $1.position - $0.position > 40 }, "\(wide.map(\.label))")
        #expect(labelled(StepAxis.choose(steps: Self.pythiaSteps)).count == 7, "Pythia's five decades are all labelled")
    }

    @Test func twoDecadesOrLessStayLinearUnlessTheEarlyCheckpointsCrowd() {
        #expect(StepAxis.choose(steps: [0, 1000, 50_000, 100_000]) == .linear(lo: 0, hi: 100_000))
        #expect(StepAxis.choose(steps: [10, 1000, 1001]) == .log(lo: 10, hi: 1001, hasZero: false))
        #expect(StepAxis.choose(steps: [10, 1000, 1001]).zeroNote?.hasSuffix("the early checkpoints crowd together).") == true)
        // Saved more often early: 4 of 8 in the first tenth of a linear axis (at exactly two decades it stayed linear).
        let early: [Int64] = [10, 25, 50, 100, 200, 400, 700, 1000]
        #expect(StepAxis.choose(steps: early) == .log(lo: 10, hi: 1000, hasZero: false))
        #expect(StepAxis.choose(steps: early.map { $0 * 2048 }) == .log(lo: 20_480, hi: 2_048_000, hasZero: false))
        // Evenly spaced, or one decade with the early ones few: linear.
        #expect(StepAxis.choose(steps: [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]) == .linear(lo: 100, hi: 1000))
        #expect(StepAxis.choose(steps: [100, 130, 170, 220, 290, 380, 500, 650, 850, 1000]) == .linear(lo: 100, hi: 1000))
        // Fewer than three decades in view: 2 and 5 are labelled too (100k and 1M alone told little).
        let labels = labelled(StepAxis.choose(steps: early.map { $0 * 2048 })).map(\.label)
        #expect(labels == ["50k", "100k", "200k", "500k", "1M", "2M"], "\(labels)")
        #expect(StepAxis.linear(lo: 0, hi: 1).zeroNote == nil)
    }

    @Test func reportOfAPythiaScheduleUsesTokensOnALogAxis() throws {
        let rows = Self.pythiaSteps.enumerated().map { index, step in
            CheckpointRow(name: "step\(step)", step: step, tokens: step * Self.tokensPerStep,
                          attention: [0.1, 0.2 + Float(index) * 1e-4], mlp: [0.5, 0.6], block: [0.7, 0.8],
                          blockGap: [[.nan, 0.1], [0.1, .nan]])
        }
        let scratch = try ScratchDirectory()
        let scores = AnalysisFixtures.scoreFile(rows)
        let url = try ReportWriter(scoreFile: scores, analysis: try SeriesAnalysis(rows: rows))
            .write(to: scratch.path("out"))
        let markdown = try String(contentsOf: url, encoding: .utf8)
        #expect(markdown.contains("The x axis is logarithmic (on a linear one the early checkpoints crowd together); 0, which a "
                                    + "log scale cannot place, sits at the left edge, before the axis break."))
        let figure = try String(contentsOf: scratch.path("out/figures/mean_importance.svg"), encoding: .utf8)
        for text in ["Tokens seen (log scale)", ">0<", ">10M<", ">100B<"] {
            #expect(figure.contains(text), "\(text)")
        }
        let heatmap = try String(contentsOf: scratch.path("out/figures/importance_attention.svg"), encoding: .utf8)
        #expect(heatmap.contains("Checkpoint (tokens seen)") && heatmap.contains(">0<") && heatmap.contains(">294B<"))
    }
}

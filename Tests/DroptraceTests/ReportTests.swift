import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import Analysis
import DroptraceSupport
@testable import Reporting
import ScoreStore

/// report.md and its SVG figures; one parent suite so
/// `swift test --filter Report` selects exactly these tests.
@Suite struct ReportTests {}

// MARK: - Helpers

/// What an SVG file looks like to an XML parser.
private final class SVGProbe: NSObject, XMLParserDelegate {
    var rootName: String?
    var rootAttributes: [String: String] = [:]
    var elementCounts: [String: Int] = [:]
    var texts: [String] = []
    var parseError: Error?
    private var openText: String?

    static func parse(_ data: Data) -> SVGProbe {
        let probe = SVGProbe()
        let parser = XMLParser(data: data)
        parser.delegate = probe
        if !parser.parse() {
            probe.parseError = probe.parseError ?? parser.parserError ?? DroptraceError("parse failed")
        }
        return probe
    }

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                qualifiedName: String?, attributes: [String: String] = [:]) {
        if rootName == nil {
            rootName = elementName
            rootAttributes = attributes
        }
        elementCounts[elementName, default: 0] += 1
        if elementName == "text" { openText = "" }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        openText? += string
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?,
                qualifiedName: String?) {
        if elementName == "text", let text = openText {
            texts.append(text)
            openText = nil
        }
    }

    func parser(_ parser: XMLParser, parseErrorOccurred parseError: Error) {
        self.parseError = parseError
    }
}

/// The rows of the first table after `heading` ("## Drop sets per checkpoint"),
/// header row first, cells trimmed; escaped pipes stay inside their cell.
private func table(after heading: String, in markdown: String) -> [[String]] {
    guard let start = markdown.range(of: "\n\(heading)\n") else { return [] }
    let lines = markdown[start.upperBound...].split(separator: "\n", omittingEmptySubsequences: false)
    let tableLines = lines.drop { !$0.hasPrefix("|") }.prefix { $0.hasPrefix("|") }
    return tableLines.enumerated().filter { $0.offset != 1 }.map { _, line in
        var cells: [String] = [], current = "", escaped = false
        for character in line.dropFirst() {
            if character == "|" && !escaped {
                cells.append(current.trimmingCharacters(in: .whitespaces))
                current = ""
            } else {
                current.append(character)
            }
            escaped = character == "\\"
        }
        return cells
    }
}

/// Link targets of `[text](target)` and `![alt](target)`.
private func linkTargets(in markdown: String) -> [String] {
    let pattern = try! NSRegularExpression(pattern: #"\]\(([^)\s]+)\)"#)
    let range = NSRange(markdown.startIndex..., in: markdown)
    return pattern.matches(in: markdown, range: range).map { String(markdown[Range($0.range(at: 1), in: markdown)!]) }
}

private func fixed(_ value: Double, _ decimals: Int) -> String {
    value.isFinite ? String(format: "%.\(decimals)f", value) : "—"
}

private struct WrittenReport {
    let scratch: ScratchDirectory
    let directory: URL
    let markdown: String
    let analysis: SeriesAnalysis
    let scores: ScoreFile

    init(rows: [CheckpointRow] = AnalysisFixtures.knownRows, dropK: [Int]? = nil, sections: [ReportSection] = [],
         into existing: ScratchDirectory? = nil) throws {
        scratch = try existing ?? ScratchDirectory()
        directory = scratch.path("out")
        scores = AnalysisFixtures.scoreFile(rows)
        analysis = try SeriesAnalysis(rows: rows, dropK: dropK)
        let reportURL = try ReportWriter(scoreFile: scores, analysis: analysis, extraSections: sections)
            .write(to: directory)
        #expect(reportURL == directory.appendingPathComponent("report.md"))
        markdown = try String(contentsOf: reportURL, encoding: .utf8)
    }

    var figureFiles: [URL] {
        let folder = directory.appendingPathComponent("figures")
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).sorted()
            .map { folder.appendingPathComponent($0) }
    }
}

extension ReportTests {
    @Suite struct FigureTests {
        /// The rank-correlation axis reaches the lowest bootstrap interval,
        /// not only the lowest correlation: bands were cut at 0 (an interval
        /// of [−0.2, 0.8] drawn from 0), understating what the tables say.
        @Test func theCorrelationAxisCoversTheBootstrapBands() throws {
            var synthetic = SyntheticSums(seed: 3)
            let rows = (1...3).map { step in
                synthetic.checkpoint(truth: [0.5, 0.52, 0.54, 0.56], sequences: 6, noise: 0.06, tokenRange: 64...192)
                    .row(step: Int64(step) * 100)
            }
            let analysis = try SeriesAnalysis(rows: rows)
            for keyPath in [\ModuleSeries.spearmanFinal, \ModuleSeries.kendallFinal] {
                let points = ModuleKind.allCases.flatMap { analysis[$0][keyPath: keyPath] }.filter(\.isFinite)
                let lows = ModuleKind.allCases.flatMap { ReportFigures.correlationBand(analysis, $0, keyPath).map(\.low) }
                    .filter(\.isFinite)
                let lowest = try #require(lows.min())
                // The case the axis missed: a band below the points' own floor (0 or the next half below them).
                #expect(lowest < min(0, ((points.min() ?? 0) * 2).rounded(.down) / 2), "\(points) \(lows)")
                #expect(ReportFigures.correlationDomain(analysis, keyPath).0 <= lowest)
            }
        }

        private func expectStandaloneSVG(_ url: URL, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let data = try Data(contentsOf: url)
            let text = String(decoding: data, as: UTF8.self)
            let probe = SVGProbe.parse(data)
            #expect(probe.parseError == nil, "\(url.lastPathComponent): \(String(describing: probe.parseError))",
                    sourceLocation: sourceLocation)
            #expect(probe.rootName == "svg", sourceLocation: sourceLocation)
            #expect(text.contains(#"xmlns="http://www.w3.org/2000/svg""#), sourceLocation: sourceLocation)
            for attribute in ["width", "height", "viewBox", "font-family"] {
                #expect(probe.rootAttributes[attribute] != nil, "\(url.lastPathComponent) lacks \(attribute)",
                        sourceLocation: sourceLocation)
            }
            // Nothing to fetch: no images, no links, no external stylesheets.
            #expect(probe.elementCounts["image"] == nil && probe.elementCounts["style"] == nil,
                    sourceLocation: sourceLocation)
            #expect(!text.contains("http://") || text.components(separatedBy: "http://").count == 2,
                    "only the namespace may be a URL", sourceLocation: sourceLocation)
            #expect(!text.contains("href"), sourceLocation: sourceLocation)
        }

        @Test func everyFigureIsStandaloneSVG() throws {
            let report = try WrittenReport()
            let names = report.figureFiles.map(\.lastPathComponent)
            #expect(names == ["block_gap_cosine.svg", "importance_attention.svg", "importance_block.svg", "importance_mlp.svg",
                              "jaccard_final.svg", "mean_importance.svg", "rank_correlation_final.svg"])
            for file in report.figureFiles { try expectStandaloneSVG(file) }
        }

        @Test func figuresHaveAxisLabelsTicksAndALegend() throws {
            let report = try WrittenReport()
            let folder = report.directory.appendingPathComponent("figures")
            let heatmap = SVGProbe.parse(try Data(contentsOf: folder.appendingPathComponent(
                "importance_attention.svg")))
            #expect(heatmap.texts.contains("Layer"))
            #expect(heatmap.texts.contains("Checkpoint (tokens seen)"))
            #expect(heatmap.texts.contains("Importance (1 − cos)"))
            #expect(heatmap.texts.contains("20.5M"))  // the final checkpoint's tokens seen as a tick label
            #expect(Set(["0", "1", "2", "3", "4"]).isSubset(of: Set(heatmap.texts)))  // every layer labelled
            let correlation = SVGProbe.parse(try Data(contentsOf: folder.appendingPathComponent(
                "rank_correlation_final.svg")))
            #expect(Set(["Attention", "MLP", "Block"]).isSubset(of: Set(correlation.texts)))
            #expect(correlation.texts.contains("Tokens seen"))
            #expect(correlation.texts.contains("Spearman ρ") && correlation.texts.contains("Kendall τ-b"))
        }

        @Test func stepsOverMoreThanTwoDecadesUseALogAxis() throws {
            var rows = AnalysisFixtures.knownRows
            for (index, step) in [Int64(0), 10, 1000, 100_000].enumerated() { (rows[index].step, rows[index].tokens) = (step, -1) }
            let report = try WrittenReport(rows: rows)
            let mean = SVGProbe.parse(try Data(contentsOf: report.directory.appendingPathComponent(
                "figures/mean_importance.svg")))
            #expect(mean.texts.contains("Training step (log scale)"))
            #expect(Set(["0", "10", "100", "1k", "10k", "100k"]).isSubset(of: Set(mean.texts)))
        }

        /// Two branches of a run that share steps (OLMo 2's stage-2
        /// ingredients): the axis says the steps do not increase, and the
        /// prose names where a drop set settles by checkpoint, not by a step
        /// two checkpoints have.
        @Test func stepsThatRepeatPlaceCheckpointsByIndexAndName() throws {
            var rows = AnalysisFixtures.knownRows
            for (index, step) in [Int64(100), 200, 300, 200].enumerated() { (rows[index].step, rows[index].tokens) = (step, -1) }
            let report = try WrittenReport(rows: rows)
            let mean = SVGProbe.parse(try Data(contentsOf: report.directory.appendingPathComponent(
                "figures/mean_importance.svg")))
            #expect(mean.texts.contains("Checkpoint index (steps not increasing)"))
            #expect(report.markdown.contains("stopped changing at the 3rd checkpoint (step1000)"), "\(report.markdown.prefix(1500))")
            #expect(!report.markdown.contains("stopped changing at step"))
        }

        @Test func largeRunsStayLegible() throws {
            // 300 checkpoints × 100 layers with noisy scores.
            var generator = SystemRandomNumberGenerator()
            let steps = (0..<300).map { Int64($0) * 500 }
            let layers = 100
            func noisy(_ base: Float) -> [Float] {
                (0..<layers).map { base + Float($0) / 400 + Float.random(in: 0..<0.01, using: &generator) }
            }
            let rows = steps.map { step in
                let block = noisy(0.3)
                return CheckpointRow(name: "step\(step)", step: step, tokens: step * 4096, attention: noisy(0.05),
                                     mlp: noisy(0.2), block: block, blockGap: blockGap(agreeingWith: block))
            }
            let report = try WrittenReport(rows: rows)
            for file in report.figureFiles {
                try expectStandaloneSVG(file)
                let data = try Data(contentsOf: file)
                #expect(data.count < 1_000_000, "\(file.lastPathComponent) is \(data.count) bytes")
                let probe = SVGProbe.parse(data)
                let width = Double(probe.rootAttributes["width"] ?? "") ?? .infinity
                let height = Double(probe.rootAttributes["height"] ?? "") ?? .infinity
                #expect(width <= 1200 && height <= 1000, "\(file.lastPathComponent) is \(width)×\(height)")
                // Every n-th tick labelled, not all 300 checkpoints or 100 layers.
                #expect(probe.texts.count < 120, "\(file.lastPathComponent) has \(probe.texts.count) labels")
            }
            #expect(report.markdown.contains("| 149500 | 612,352,000 | step149500 |"))
        }

        /// Past `Heatmap.maximumSide` rows or columns, adjacent cells merge
        /// into their mean (NaN left out; a bin of NaN only stays grey): a
        /// 4096-layer n-gap matrix, drawn cell by cell, was 143 MB of SVG.
        @Test func heatmapsOfMoreCellsThanAScreenShowsMergeThem() throws {
            let side = 2 * Heatmap.maximumSide + 1
            var values = (0..<side).map { row in (0..<side).map { Double(row + $0) } }
            values[0][0] = .nan
            for row in side - 2..<side { for column in 0..<3 { values[row][column] = .nan } }
            let heatmap = Heatmap(title: "n-gap", values: values, columnLabels: (1...side).map(String.init),
                                  xTitle: "n", colorbarTitle: "d", marked: values.indices.map { row in values[row].indices.map { row == 5 && $0 == 7 } })
            let merged = try #require(heatmap.binned())
            // Bins of 3: 341 of them and a last one of 2 rows (columns).
            #expect(merged.values.count == 342 && merged.values.allSatisfy { $0.count == 342 })
            #expect(merged.values[0][0] == 18.0 / 8, "the mean of the 8 finite cells of 3 × 3")
            #expect(merged.values[1][1] == 8)
            #expect(merged.values[341][0].isNaN && merged.values[341][1] == 1023.5 + 4, "a bin of NaN only stays NaN")
            #expect(merged.marked[1][2] && merged.marked.joined().filter { $0 }.count == 1)
            #expect(merged.columnLabels[1] == "4" && merged.rowLabels?[1] == "3")
            #expect(merged.binNote == "each cell the mean of 3 × 3 cells (a tick labels the first of them)")
            #expect(merged.binned() == nil)
            let svg = heatmap.render()
            #expect(svg == merged.render() && svg.utf8.count < 4_000_000)
            #expect(SVGProbe.parse(Data(svg.utf8)).texts.contains("each cell the mean of 3 × 3 cells (a tick labels the first of them)"))
            var small = heatmap
            (small.values, small.columnLabels, small.marked) = ([[1, 2]], ["a", "b"], [])
            #expect(small.binned() == nil)
        }
    }

    /// A long title on a small heatmap (the last-token angular distance of
    /// a 6-layer model) ran past the figure's right edge and was cut off.
    @Test func aHeatmapIsWideEnoughForItsTitle() {
        let title = "Angular distance, last token (PruneMe) between h_i and h_i+n, final checkpoint"
        let heatmap = Heatmap(title: title, values: [[0.1, 0.2], [0.3, .nan]], columnLabels: ["1", "2"],
                              xTitle: "n", colorbarTitle: "d", marked: [])
        let probe = SVGProbe.parse(Data(heatmap.render().utf8))
        let width = Double(probe.rootAttributes["width"] ?? "") ?? 0
        #expect(width >= 64 + Double(title.count) * 15 * 0.6, "width \(width)")
    }

    @Suite struct ContentTests {
        @Test func dropSetTableNamesTheRightLayers() throws {
            let report = try WrittenReport()
            let rows = table(after: "## Drop sets per checkpoint", in: report.markdown)
            #expect(rows.first
                == ["Step", "Tokens", "Checkpoint", "Attention k=1", "Attention k=3", "MLP k=1", "MLP k=3", "Block k=1",
                    "Block k=3"])
            // Block: c0's scores are all equal (ties go to the lower layer), then ascending.
            #expect(Array(rows.dropFirst()) == [
                ["0", "0", "step0", "1", "1, 2, 3", "4", "2, 3, 4", "0", "0, 1, 2"],
                ["100", "204,800", "step100", "3", "1, 2, 3", "4", "2, 3, 4", "0", "0, 1, 2"],
                ["1000", "2,048,000", "step1000", "1", "1, 3, 4", "4", "2, 3, 4", "0", "0, 1, 2"],
                ["10000", "20,480,000", "step10000", "1", "1, 3, 4", "4", "2, 3, 4", "0", "0, 1, 2"],
            ])
        }

        @Test func finalScoresMarkTheFinalDropSets() throws {
            let report = try WrittenReport()
            let rows = table(after: "## Final checkpoint scores", in: report.markdown)
            #expect(Array(rows.dropFirst()) == [
                ["0", "0.6000", "0.8700", "**0.5000** (k=1, 3)"],
                ["1", "**0.0500** (k=1, 3)", "0.7700", "**0.6000** (k=3)"],
                ["2", "0.3000", "**0.6700** (k=3)", "**0.7000** (k=3)"],
                ["3", "**0.0800** (k=3)", "**0.5700** (k=3)", "0.8000"],
                ["4", "**0.2500** (k=3)", "**0.4700** (k=1, 3)", "0.9000"],
            ])
        }

        @Test func stabilisationTable() throws {
            let report = try WrittenReport()
            let rows = table(after: "## Stabilisation", in: report.markdown)
            #expect(rows.contains(["Attention", "1", "1000", "step1000", "last 2 of 4 checkpoints"]))
            #expect(rows.contains(["MLP", "3", "0", "step0", "last 4 of 4 checkpoints"]))
            #expect(rows.count == 1 + 3 * 2)
        }

        @Test func correlationAndOverlapNumbersAgreeWithTheAnalysis() throws {
            let report = try WrittenReport()
            let analysis = report.analysis
            let final = table(after: "### With the final checkpoint", in: report.markdown)
            let previous = table(after: "### With the previous checkpoint", in: report.markdown)
            let jaccard = table(after: "### Jaccard overlap with the final drop sets", in: report.markdown)
            #expect(final.count == 5 && previous.count == 5 && jaccard.count == 5)
            for index in 0..<4 {
                var expectedFinal = ["\(AnalysisFixtures.steps[index])", "step\(AnalysisFixtures.steps[index])"]
                var expectedPrevious = expectedFinal
                var expectedJaccard = expectedFinal
                for module in ModuleKind.allCases {
                    let series = analysis[module]
                    expectedFinal += [fixed(series.spearmanFinal[index], 3), fixed(series.kendallFinal[index], 3)]
                    expectedPrevious += [fixed(series.spearmanPrevious[index], 3),
                                         fixed(series.kendallPrevious[index], 3)]
                    expectedJaccard += analysis.dropK.map { fixed(series.jaccardFinal[$0]![index], 3) }
                }
                #expect(final[index + 1] == expectedFinal)
                #expect(previous[index + 1] == expectedPrevious)
                #expect(jaccard[index + 1] == expectedJaccard)
            }
            // Hand-computed values from AnalysisTests, as printed.
            #expect(Array(final[1][2...3]) == ["0.700", "0.600"])
            #expect(Array(final[3][2...3]) == ["0.975", "0.949"])   // 9.5/√95, 9/√90
            #expect(previous[1][2] == "—" && final[1][6] == "—")    // first checkpoint; constant block vector
            #expect(Array(jaccard[1][2...3]) == ["1.000", "0.500"])
        }

        /// Text from outside shows as typed: markup and HTML entities are escaped.
        @Test func titleShowsAsTyped() throws {
            let scratch = try ScratchDirectory()
            let rows = AnalysisFixtures.knownRows
            let url = try ReportWriter(
                title: "R&amp;D *run* <b>", scoreFile: AnalysisFixtures.scoreFile(rows), analysis: try SeriesAnalysis(rows: rows)
            ).write(to: scratch.path("out"))
            let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n")
            #expect(lines[1] == #"# R\&amp;D \*run\* \<b\>"#)
        }

        /// A bidirectional override in a checkpoint name would reorder what
        /// follows it as displayed ("step-\u{202E}0001" shows as another
        /// step): reports and figures show its code instead.
        @Test func bidiControlsShowAsTheirCode() throws {
            let scratch = try ScratchDirectory()
            var rows = AnalysisFixtures.knownRows
            rows[0].name = "step-\u{202E}0001"
            rows[1].name = "isolate\u{2067}x\u{2069}"
            let url = try ReportWriter(
                title: "run \u{200F}A", scoreFile: AnalysisFixtures.scoreFile(rows), analysis: try SeriesAnalysis(rows: rows)
            ).write(to: scratch.path("out"))
            let markdown = try String(contentsOf: url, encoding: .utf8)
            #expect(markdown.contains("# run \\[U+200F\\]A\n") && markdown.contains("step-\\[U+202E\\]0001")
                    && markdown.contains("isolate\\[U+2067\\]x\\[U+2069\\]"))
            var files = [markdown]
            for name in try FileManager.default.contentsOfDirectory(atPath: scratch.path("out/figures").path) {
                files.append(try String(contentsOf: scratch.path("out/figures/\(name)"), encoding: .utf8))
            }
            let bidi = Set([0x061C, 0x200E, 0x200F] + Array(0x202A...0x202E) + Array(0x2066...0x2069))
            #expect(files.allSatisfy { !$0.unicodeScalars.contains { bidi.contains(Int($0.value)) } })
        }

        @Test func summaryLeadsWithTheVerdictAndItsCriteria() throws {
            let report = try WrittenReport()
            let lines = report.markdown.split(separator: "\n")
            #expect(lines[0] == ReportOwnership.marker[...])
            #expect(lines[1] == "# droptrace report: llama, 5 layers")
            #expect(lines[2].hasPrefix("**Verdict: inherent.**"))
            let criteria = table(after: lines[2...].first { $0.hasPrefix("Across") }.map(String.init) ?? "",
                                 in: report.markdown)
            #expect(criteria.count == 4)
            #expect(criteria[1].prefix(4) == ["Attention less important than MLP (share of checkpoints)", "1.000",
                                              "≥ 0.800", "pass"])
            #expect(criteria[2].prefix(4) == ["Attention drop-3 set agrees with the final one (median Jaccard)",
                                              "0.500", "≥ 0.500", "pass"])
            #expect(criteria[3].prefix(4) == ["Attention drop-3 set settles early (share of the run)", "0.100",
                                              "≤ 0.500", "pass"])
            #expect(report.markdown.contains("median Jaccard overlap of 0.500, and it stopped changing at step 1000 "
                                             + "(10% into the run)"))
            let run = table(after: "## The run", in: report.markdown)
            #expect(run.contains(["Model type", "llama"]))
            #expect(run.contains(["Checkpoints", "4"]))
            #expect(run.contains(["Steps", "0–10000"]))
            #expect(run.contains(["Calibration", "65,536 tokens, sha256 `0123456789abcdef…`"]))
            #expect(run.contains(["Report written by", "droptrace \(DroptraceVersion.string)"]))
            #expect(report.markdown.contains("## How the verdict is decided"))
        }

        /// The verdict's k (round(L/2) = 3) need not be an analysed drop-k.
        @Test func summaryNamesTheVerdictsDropSetWhenItsKIsNotAnalysed() throws {
            let report = try WrittenReport(dropK: [1])
            #expect(!report.analysis.dropK.contains(report.analysis.verdict.k))
            #expect(report.markdown.contains("The final checkpoint's attention drop-3 set is layers 1, 3, 4;"))
        }

        @Test func notInherentVerdictSaysWhichCriteriaFailed() throws {
            let report = try WrittenReport(rows: AnalysisFixtures.clearlyNotInherentRows())
            #expect(report.markdown.contains("**Verdict: not inherent.**"))
            #expect(report.markdown.contains("Failed: attention below MLP, early stabilisation."))
            #expect(report.markdown.contains("| fail |"))
        }

        @Test func everyLinkPointsAtAFileOrAHeading() throws {
            let report = try WrittenReport()
            let targets = linkTargets(in: report.markdown)
            #expect(targets.filter { $0.hasSuffix(".svg") }.count == 7)
            for target in targets {
                if target.hasPrefix("#") {
                    // GitHub's anchor for "## How the verdict is decided".
                    #expect(target == "#how-the-verdict-is-decided")
                    #expect(report.markdown.contains("\n## How the verdict is decided\n"))
                } else {
                    #expect(!target.hasPrefix("/") && !target.contains("://"), "\(target) must be relative")
                    let file = report.directory.appendingPathComponent(target)
                    #expect(FileManager.default.fileExists(atPath: file.path), "\(target) does not exist")
                }
            }
        }

        @Test func checkpointNamesCannotBreakTables() throws {
            var rows = AnalysisFixtures.knownRows
            rows[1].name = "run|2 *bold* <b>"
            let report = try WrittenReport(rows: rows)
            let dropSets = table(after: "## Drop sets per checkpoint", in: report.markdown)
            #expect(dropSets.allSatisfy { $0.count == 9 })
            #expect(dropSets[2][2] == #"run\|2 \*bold\* \<b\>"#)
        }
    }

    @Suite struct WritingTests {
        @Test func extraSectionsGoWhereAsked() throws {
            let perplexity = ReportSection(title: "Perplexity", body: "| Step | Full |\n| --- | --- |\n| 0 | 12.5 |")
            let notes = ReportSection(title: "Notes", body: "Run on a laptop.\n", placement: .end)
            let markdown = try WrittenReport(sections: [perplexity, notes]).markdown
            func position(_ text: String) -> String.Index { markdown.range(of: text)!.lowerBound }
            #expect(position("## Drop sets per checkpoint") < position("## Perplexity\n\n| Step | Full |"))
            #expect(position("## Perplexity") < position("## Final checkpoint scores"))
            #expect(position("## Rank agreement per checkpoint") < position("## Notes\n\nRun on a laptop.\n"))
            #expect(position("## Notes") < position("## How the verdict is decided"))
        }

        @Test func singleCheckpointSaysThereIsNothingToCorrelate() throws {
            let report = try WrittenReport(rows: [AnalysisFixtures.knownRows[3]])
            #expect(report.markdown.contains("**Verdict: inconclusive.**"))
            #expect(report.markdown.contains("Only one checkpoint: there is nothing to correlate"))
            #expect(!report.markdown.contains("### With the final checkpoint"))
            #expect(report.figureFiles.map(\.lastPathComponent)
                == ["block_gap_cosine.svg", "importance_attention.svg", "importance_block.svg", "importance_mlp.svg",
                    "mean_importance.svg"])
            for target in linkTargets(in: report.markdown) where !target.hasPrefix("#") {
                #expect(FileManager.default.fileExists(atPath: report.directory.appendingPathComponent(target).path))
            }
            for file in report.figureFiles {
                #expect(SVGProbe.parse(try Data(contentsOf: file)).parseError == nil)
            }
        }

        @Test func rewritingRemovesStaleFiguresAndLeavesNoTemporaryFiles() throws {
            let scratch = try ScratchDirectory()
            _ = try WrittenReport(into: scratch)
            let second = try WrittenReport(rows: [AnalysisFixtures.knownRows[0]], into: scratch)
            #expect(!second.figureFiles.map(\.lastPathComponent).contains("rank_correlation_final.svg"))
            let everything = try FileManager.default.subpathsOfDirectory(atPath: second.directory.path)
            #expect(everything.allSatisfy { !$0.contains(".tmp-") }, "\(everything)")
        }

        @Test func reportRebuildsFromTheStoreAlone() throws {
            let scratch = try ScratchDirectory()
            let url = scratch.path("scores.h5")
            let scores = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
            let analysis = try SeriesAnalysis(rows: scores.rows)
            try scores.write(to: url) { file in try analysis.write(into: file) }

            let storedScores = try ScoreFile.read(from: url)
            let file = try HDF5File.open(at: url)
            let storedAnalysis = try SeriesAnalysis.read(from: file)
            try file.close()
            let fresh = try ReportWriter(scoreFile: scores, analysis: analysis).markdown()
            let rebuilt = try ReportWriter(scoreFile: storedScores, analysis: storedAnalysis).markdown()
            #expect(rebuilt == fresh)
        }

        @Test func oneLayerModelsAndUndefinedScoresStillRender() throws {
            let rows = (0..<3).map { index in
                CheckpointRow(name: "c\(index)", step: Int64(index), attention: [index == 1 ? .nan : 0.1],
                              mlp: [0.5], block: [0.6], blockGap: [[0.4]])
            }
            let report = try WrittenReport(rows: rows)
            // No rank correlation exists with one layer; nothing may crash or print "nan".
            #expect(!report.markdown.lowercased().contains("nan"))
            #expect(report.markdown.contains(
                "attention below MLP at 2 of 2 checkpoints (1 with undefined scores left out)"))
            #expect(report.markdown.hasPrefix(ReportOwnership.marker + "\n# droptrace report: llama, 1 layer\n"))
            let heatmap = SVGProbe.parse(try Data(contentsOf: report.directory.appendingPathComponent(
                "figures/importance_attention.svg")))
            #expect(heatmap.parseError == nil)
            #expect(heatmap.texts.contains("undefined"))  // the grey legend swatch
            for file in report.figureFiles {
                #expect(SVGProbe.parse(try Data(contentsOf: file)).parseError == nil, "\(file.lastPathComponent)")
            }
        }

        @Test func analysisOfOtherScoresIsRejected() throws {
            let analysis = try SeriesAnalysis(rows: AnalysisFixtures.knownRows)
            let fewer = AnalysisFixtures.scoreFile(Array(AnalysisFixtures.knownRows.prefix(3)))
            #expect(throws: DroptraceError.self) { try ReportWriter(scoreFile: fewer, analysis: analysis) }
        }

        @Test func unwritableDirectoryIsReportedWithItsPath() throws {
            let scratch = try ScratchDirectory()
            let blocker = scratch.path("file")
            try Data("x".utf8).write(to: blocker)
            let scores = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
            let writer = try ReportWriter(scoreFile: scores, analysis: try SeriesAnalysis(rows: scores.rows))
            let error = #expect(throws: DroptraceError.self) { try writer.write(to: blocker) }
            #expect(error?.path?.hasPrefix(blocker.path) == true)
        }
    }
}

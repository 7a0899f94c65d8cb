import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import Analysis
import DroptraceSupport
import Pipeline
import Reporting
import ScoreStore

/// `droptrace compare`: several runs' stores in one report.
@Suite struct CompareTests {
    /// A run's output directory holding a store of `rows` with its analysis.
    @discardableResult
    static func writeRun(_ rows: [CheckpointRow], at directory: URL, modelType: String = "llama", hiddenSize: Int? = nil,
                         layerShapes: String? = nil, calibration: String = String(repeating: "0123456789abcdef", count: 4), series: URL? = nil,
                         run: Int = 0) throws -> URL {
        // `run` sets MLP scores apart by 1e-5 per run: another run's numbers, not a copy of one store.
        let rows = rows.map { row in
            var row = row
            row.mlp = row.mlp.map { $0 + 1e-5 * Float(run) }
            return row
        }
        var scores = AnalysisFixtures.scoreFile(rows)
        scores.metadata.modelType = modelType
        scores.metadata.hiddenSize = hiddenSize
        scores.metadata.layerShapesSHA256 = layerShapes.map(ScoreFileMetadata.layerShapesSHA256(of:))
        scores.metadata.seriesDirectory = series?.path
        scores.metadata.calibrationSHA256 = calibration
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let analysis = try SeriesAnalysis(rows: rows)
        try scores.write(to: directory.appendingPathComponent("scores.h5")) { try analysis.write(into: $0) }
        return directory
    }

    /// Three "seeds" of a clearly inherent run: the same schedule (6
    /// checkpoints, steps 0...5000) with seed-dependent noise; seed3 lacks
    /// step 2000 and was scored on other calibration tokens.
    static func threeSeeds(in scratch: ScratchDirectory) throws -> [URL] {
        try (1...3).map { seed in
            var rows = AnalysisFixtures.clearlyInherentRows(checkpoints: 6)
            for index in rows.indices {
                rows[index].attention = rows[index].attention.enumerated().map { layer, value in
                    value + 0.001 * Float(seed) * Float(layer % 2)
                }
            }
            if seed == 3 { rows.remove(at: 2) }
            return try writeRun(rows, at: scratch.path("seed\(seed)"),
                                calibration: seed == 3 ? String(repeating: "f", count: 64) : String(repeating: "0123456789abcdef", count: 4))
        }
    }

    @Test func threeSeedsGiveSpreadAgreementGapsAndEveryVerdict() throws {
        let scratch = try ScratchDirectory()
        let stores = try Self.threeSeeds(in: scratch)
        let output = scratch.path("compare")
        let report = try CompareRuns.run(stores: stores, output: output, title: nil)
        let markdown = try String(contentsOf: report, encoding: .utf8)

        #expect(markdown.hasPrefix(ReportOwnership.marker + "\n# droptrace compare: llama, 5 layers, 3 runs\n"))
        #expect(markdown.contains("**The verdict holds in every run: inherent** (3 of 3 runs"))
        #expect(markdown.contains("Checkpoints are matched across runs by tokens seen"))
        #expect(markdown.contains("6 checkpoints, 5 of them in every run"))
        #expect(markdown.contains("different calibration tokens (2 different sets"))
        // The gap: step 2000 (4,096,000 tokens) is missing from seed3.
        #expect(markdown.contains("| 4,096,000 | step2000 | seed1, seed2 | seed3 |"), "\(markdown)")
        #expect(markdown.contains("| 4,096,000 | step2000 | 2/3 |"))
        for seed in 1...3 {
            #expect(markdown.contains("| seed\(seed) | \(stores[seed - 1].path)/scores.h5 | \(seed == 3 ? 5 : 6) | 0–5000 |"))
        }
        #expect(markdown.contains("## Layers at 10,240,000 tokens (step5000)"))

        let files = try FileManager.default.contentsOfDirectory(atPath: output.appendingPathComponent("figures").path)
        #expect(Set(files) == Set(ComparisonReportWriter.figureFileNames))
        for file in files {
            let data = try Data(contentsOf: output.appendingPathComponent("figures/\(file)"))
            let parser = XMLParser(data: data)
            #expect(parser.parse(), "\(file) is not well-formed XML")
        }
        #expect(try FileManager.default.subpathsOfDirectory(atPath: output.path).allSatisfy { !$0.contains(".tmp-") })

        // seed3's own line breaks at the checkpoint it lacks: two pieces, where the others have one.
        let chart = try String(contentsOf: output.appendingPathComponent("figures/mean_importance_runs.svg"),
                               encoding: .utf8)
        let runLines = chart.components(separatedBy: "<path d=\"").dropFirst()
            .filter { $0.contains(#"stroke-width="1.5""#) }
            .map { $0.prefix { $0 != "\"" }.filter { $0 == "M" }.count }
        #expect(runLines == [1, 1, 2])
        #expect(["seed1", "seed2", "seed3"].allSatisfy { chart.contains(">\($0)<") })
    }

    @Test func spreadAndAgreementNumbers() throws {
        let scratch = try ScratchDirectory()
        let stores = try Self.threeSeeds(in: scratch)
        let runs = try stores.enumerated().map { index, url in
            try CompareRuns.read(url.appendingPathComponent("scores.h5").path, label: "seed\(index + 1)")
        }
        let comparison = try RunComparison(runs: runs)
        #expect(comparison.alignment == .tokens)
        #expect(comparison.positions.map(\.value) == [0, 2_048_000, 4_096_000, 6_144_000, 8_192_000, 10_240_000])
        #expect(comparison.positions[2].rows == [2, 2, nil])
        #expect(comparison.positions[3].rows == [3, 3, 2])
        #expect(comparison.lastCommonPosition == 5)
        // Layer 1 of the first checkpoint: 0.2 + 0.001 × seed.
        let spread = try #require(comparison.importance[.attention]?[0][1])
        #expect(spread.count == 3)
        #expect(abs(spread.mean - 0.202) < 1e-6 && abs(spread.min - 0.201) < 1e-6 && abs(spread.max - 0.203) < 1e-6)
        #expect(abs(spread.standardDeviation - 0.001) < 1e-6)
        // Layer 0 has no seed noise: no spread.
        #expect(comparison.importance[.attention]?[0][0].range == 0)
        // Layers 3 and 4 are every seed's drop-2 set; drop-3 adds 2 everywhere.
        #expect(comparison.dropK == [1, 3])
        #expect(comparison.agreement[.attention]?[3] == Array(repeating: 1, count: 6))
        #expect(comparison.dropCounts[.attention]?[3]?[5] == [0, 0, 3, 3, 3])
        #expect(comparison.dropCounts[.attention]?[3]?[2] == [0, 0, 2, 2, 2])
    }

    @Test func meanPairwiseJaccard() {
        #expect(RunComparison.meanPairwiseJaccard([[1, 2], [1, 2], [2, 3]]) == (1 + 1.0 / 3 + 1.0 / 3) / 3)
        #expect(RunComparison.meanPairwiseJaccard([[1]]).isNaN)
        #expect(Spread([]).mean.isNaN && Spread([1]).standardDeviation.isNaN && Spread([.nan, 2]).count == 1)
    }

    @Test func aVerdictThatDiffersIsSaidWithTheRunsBehindIt() throws {
        let scratch = try ScratchDirectory()
        let inherent = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("a"))
        let not = try Self.writeRun(AnalysisFixtures.clearlyNotInherentRows(), at: scratch.path("b"))
        let report = try CompareRuns.run(stores: [inherent, not], output: scratch.path("out"), title: "Two recipes")
        let markdown = try String(contentsOf: report, encoding: .utf8)
        #expect(markdown.hasPrefix(ReportOwnership.marker + "\n# Two recipes\n"))
        #expect(markdown.contains("**The verdict differs across runs:** inherent in 1 (a); not inherent in 1 (b)."))
        #expect(markdown.contains("Every run was scored on the same calibration tokens"))
        #expect(markdown.contains("Every checkpoint is present in every run."))
    }

    /// A run that has a checkpoint but no defined score there is left out of
    /// the mean, and the cell says how many runs it is over, not the Runs
    /// column's count alone.
    @Test func aRunWithoutAValueIsCountedOutOfItsMean() throws {
        let scratch = try ScratchDirectory()
        let a = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("a"))
        var rows = AnalysisFixtures.clearlyInherentRows()
        rows[5].attention[0] = .nan
        let b = try Self.writeRun(rows, at: scratch.path("b"), run: 1)
        let report = try CompareRuns.run(stores: [a, b], output: scratch.path("out"), title: nil)
        let lines = try String(contentsOf: report, encoding: .utf8).split(separator: "\n")
        let last = try #require(lines.first { $0.hasPrefix("| 10,240,000 | step5000 | 2/2 |") }, "\(lines)")
        #expect(last.contains("; 1 of 2 runs)"), "\(last)")
        #expect(!(lines.first { $0.hasPrefix("| 8,192,000 |") }?.contains(" of 2 runs") ?? true))
        let layer0 = try #require(lines.first { $0.hasPrefix("| 0 | 0.") })
        #expect(layer0.contains("(0.3050–0.3050; 1 of 2 runs)"), "\(layer0)")
        let layer1 = try #require(lines.first { $0.hasPrefix("| 1 | 0.") })
        #expect(!layer1.contains(" of 2 runs"), "\(layer1)")
    }

    /// Runs that name their checkpoints differently (one by the Trainer,
    /// one by another framework) are matched by tokens; each position shows
    /// every run's name, not the first run's alone.
    @Test func positionsMatchedByTokensShowEveryRunsName() throws {
        let scratch = try ScratchDirectory()
        let a = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(checkpoints: 3), at: scratch.path("a"))
        let renamed = AnalysisFixtures.clearlyInherentRows(checkpoints: 3).map { row in
            var row = row
            row.name = "checkpoint-\(row.step)"
            return row
        }
        let b = try Self.writeRun(renamed, at: scratch.path("b"), run: 1)
        let runs = try [a, b].map { try CompareRuns.read($0.appendingPathComponent("scores.h5").path, label: $0.lastPathComponent) }
        let comparison = try RunComparison(runs: runs)
        #expect(comparison.alignment == .tokens)
        #expect(comparison.positions.map(\.name) == ["step0 / checkpoint-0", "step1000 / checkpoint-1000", "step2000 / checkpoint-2000"])
    }

    @Test func checkpointsMatchByStepThenByName() throws {
        let scratch = try ScratchDirectory()
        var rows = AnalysisFixtures.clearlyInherentRows(checkpoints: 4)
        let a = try Self.writeRun(rows, at: scratch.path("a"))
        rows[1].tokens = -1
        let b = try Self.writeRun(rows, at: scratch.path("b"))
        let read = { (urls: [URL]) in
            try RunComparison(runs: urls.map { try CompareRuns.read($0.appendingPathComponent("scores.h5").path, label: $0.lastPathComponent) })
        }
        #expect(try read([a, b]).alignment == .step)
        rows[3].step = -1  // unknown steps come last in series order
        let c = try Self.writeRun(rows, at: scratch.path("c"))
        let byName = try read([a, c])
        #expect(byName.alignment == .name)
        #expect(byName.positions.map(\.name) == ["step0", "step1000", "step2000", "step3000"])
        let report = try CompareRuns.run(stores: [a, c], output: scratch.path("out"), title: nil)
        #expect(try String(contentsOf: report, encoding: .utf8).contains("by checkpoint name"))
    }

    @Test func mismatchedArchitecturesAreRefusedNamingTheStore() throws {
        let scratch = try ScratchDirectory()
        let a = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("a"))
        let fewerLayers = AnalysisFixtures.clearlyInherentRows().map { row in
            CheckpointRow(name: row.name, step: row.step, tokens: row.tokens, attention: Array(row.attention.prefix(4)),
                          mlp: Array(row.mlp.prefix(4)), block: Array(row.block.prefix(4)),
                          blockGap: blockGap(agreeingWith: Array(row.block.prefix(4))))
        }
        let b = try Self.writeRun(fewerLayers, at: scratch.path("b"))
        let c = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("c"), modelType: "qwen2")
        // Another width of the same type and depth: another architecture (the spread would not be the runs' alone).
        let wide = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("wide"), hiddenSize: 64)
        let narrow = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("narrow"), hiddenSize: 48)
        // Another MLP width (or head, expert count) of the same width: the layers' tensor shapes differ.
        let shapes = { (inner: Int) in "0.mlp.down_proj.weight [48, \(inner)]" }
        let mlp96 = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("mlp96"), hiddenSize: 48, layerShapes: shapes(96), run: 1)
        let mlp192 = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("mlp192"), hiddenSize: 48, layerShapes: shapes(192), run: 2)
        let digest192 = ScoreFileMetadata.layerShapesSHA256(of: shapes(192))
        let output = scratch.path("out")
        for (first, other, words) in [
            (a, b, "4 layers"), (a, c, "qwen2"), (wide, narrow, "hidden_size 48"),
            (mlp96, mlp192, "(hidden_size 48) with layer_shapes_sha256 \(digest192.prefix(12))…"),
        ] {
            let result = try DroptraceCommand.run(["compare", first.path, other.path, "--output", output.path])
            #expect(result.status == 1)
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(result.stderr)")
            #expect(result.stderr.contains("\(other.path)/scores.h5: holds") && result.stderr.contains(words)
                    && result.stderr.contains("model_type, num_layers, hidden_size and layer shapes"), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("report.md").path))
        }
        // A store that records no width or layer shapes agrees with both, but they do not with each other:
        // every pair is checked, not each store against the first.
        let unrecorded = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("unrecorded"))
        let result = try DroptraceCommand.run(["compare", unrecorded.path, mlp96.path, mlp192.path, "--output", output.path])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(mlp192.path)/scores.h5: holds") && result.stderr.contains("but \(mlp96.path)/scores.h5 holds"),
                "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("report.md").path))
    }

    /// A file without a stored analysis (`droptrace score`'s) is analysed
    /// from its rows, and the report says so rather than "as its store holds".
    @Test func verdictOfAFileWithoutAnalysisIsMarked() throws {
        let scratch = try ScratchDirectory()
        let traced = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("traced"))
        let bare = scratch.path("bare.h5")
        let other = AnalysisFixtures.clearlyInherentRows().map { row in
            var row = row
            row.mlp = row.mlp.map { $0 + 1e-5 }
            return row
        }
        try AnalysisFixtures.scoreFile(other).write(to: bare, extra: nil)
        let output = scratch.path("o")
        let result = try DroptraceCommand.run(["compare", traced.path, bare.path, "--output", output.path])
        try #require(result.status == 0, "\(result.stderr)")
        let report = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        let rows = report.split(separator: "\n").filter { $0.contains("bare.h5 |") || $0.contains("traced/scores.h5 |") }
        #expect(rows.count == 2)
        #expect(rows.first { $0.contains("bare.h5 |") }?.contains("| inherent (from its rows) |") == true, "\(rows)")
        #expect(rows.first { $0.contains("traced/scores.h5 |") }?.contains("(from its rows)") == false)
    }

    @Test func badInvocationsChangeNothing() throws {
        let scratch = try ScratchDirectory()
        let a = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("a"))
        let b = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("b"), run: 1)
        let traceReport = Data("a run's report".utf8)
        try traceReport.write(to: a.appendingPathComponent("report.md"))
        let cases: [([String], String)] = [
            (["compare", a.path, b.path, "--output", a.path], "one of the compared stores"),
            (["compare", a.path, a.path, "--output", scratch.path("o").path], "given twice"),
            (["compare", a.path, scratch.path("missing").path, "--output", scratch.path("o").path], "does not exist"),
            (["compare", a.path, scratch.url.path, "--output", scratch.path("o").path], "no scores.h5 here"),
            (["compare", a.path, b.path, "--output", scratch.path("c").path], ""),  // fine, then reused:
            (["compare", a.path, b.path, "--output", b.path], "one of the compared stores"),
            (["compare", a.path, b.path, "--output", a.appendingPathComponent("figures").path], "the output directory of a compared run"),
        ]
        for (arguments, words) in cases {
            let result = try DroptraceCommand.run(arguments)
            if words.isEmpty {
                #expect(result.status == 0, "\(result.stderr)")
                continue
            }
            #expect(result.status == 1, "\(arguments): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1 && result.stderr.contains(words), "\(result.stderr)")
        }
        #expect(try Data(contentsOf: a.appendingPathComponent("report.md")) == traceReport)
        // A directory holding a report.md of the user's own is refused and left as it was: no lock file either.
        let mine = scratch.path("mine")
        try FileManager.default.createDirectory(at: mine, withIntermediateDirectories: true)
        try Data("my notes".utf8).write(to: mine.appendingPathComponent("report.md"))
        let refused = try DroptraceCommand.run(["compare", a.path, b.path, "--output", mine.path])
        #expect(refused.status == 1 && refused.stderr.contains("report.md"), "\(refused.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: mine.path) == ["report.md"])
        #expect(!FileManager.default.fileExists(atPath: b.appendingPathComponent("report.md").path))
        // The other way round: a trace into a comparison's output is refused as well (it replaced the comparison).
        let comparison = try Data(contentsOf: scratch.path("c/report.md"))
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let trace = try DroptraceCommand.run([
            "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("c").path,
        ])
        #expect(trace.status == 1 && trace.stderr.contains("holds a droptrace compare report (figures/"), "\(trace.stderr)")
        #expect(try Data(contentsOf: scratch.path("c/report.md")) == comparison)
        #expect(!FileManager.default.fileExists(atPath: scratch.path("c/scores.h5").path))
        // One store is a usage error.
        #expect(try DroptraceCommand.run(["compare", a.path, "--output", scratch.path("o").path]).status == 64)
    }

    /// A copy of a run's store (or a score file of the same checkpoints and
    /// calibration) is not a second run: counted as one, it would show
    /// agreement nobody measured. The same rows scored on other calibration
    /// tokens are another measurement and are compared.
    @Test func aCopyOfARunIsNotAnotherRun() throws {
        let scratch = try ScratchDirectory()
        let a = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("a"))
        let b = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("b"), run: 1)
        let copy = scratch.path("copy-of-a")
        try FileManager.default.copyItem(at: a, to: copy)
        let bare = scratch.path("bare.h5")
        try AnalysisFixtures.scoreFile(AnalysisFixtures.clearlyInherentRows()).write(to: bare, extra: nil)
        let output = scratch.path("o")
        for (stores, original, twin) in [([a, b, copy], a, copy), ([bare, b, a], bare, a.appendingPathComponent("scores.h5"))] {
            let result = try DroptraceCommand.run(["compare"] + stores.map(\.path) + ["--output", output.path])
            #expect(result.status == 1)
            let storePath = { (url: URL) in url.pathExtension == "h5" ? url.path : url.path + "/scores.h5" }
            #expect(result.stderr.split(separator: "\n").count == 1
                    && result.stderr.contains("\(storePath(twin)): holds the same run as \(storePath(original))"), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: output.path))
        }
        let otherCalibration = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("c"),
                                                 calibration: String(repeating: "f", count: 64))
        let result = try DroptraceCommand.run(["compare", a.path, otherCalibration.path, "--output", output.path])
        #expect(result.status == 0, "\(result.stderr)")
    }

    /// `--output` inside a checkpoint is refused as `trace` refuses it
    /// (training deletes checkpoint directories, the report with them):
    /// one of a compared run's series checkpoints (also one still being
    /// written, or linked elsewhere: the target counts), or any other
    /// checkpoint (named like one, holding weight files). Nothing is created. A
    /// folder merely named like a checkpoint, or a model directory of
    /// another name, is no checkpoint.
    @Test func outputInsideACheckpointIsRefused() throws {
        let scratch = try ScratchDirectory()
        let files = FileManager.default
        let series = scratch.path("series"), elsewhere = scratch.path("kept-elsewhere")
        try files.createDirectory(at: series.appendingPathComponent("checkpoint-1"), withIntermediateDirectories: true)
        try files.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        try files.createSymbolicLink(at: series.appendingPathComponent("checkpoint-2"), withDestinationURL: elsewhere)
        let a = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("a"), series: series)
        let b = try Self.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path("b"), run: 1)
        let model = try scratch.copyOfModel("llama-f32", as: "step-7")
        let cases: [(output: URL, checkpoint: String)] = [
            (series.appendingPathComponent("checkpoint-1"), "checkpoint-1"),
            (series.appendingPathComponent("checkpoint-1/compare"), "checkpoint-1"),
            (series.appendingPathComponent("checkpoint-2/compare"), "checkpoint-2"),
            (series.appendingPathComponent("tmp-checkpoint-3"), "tmp-checkpoint-3"),
            (elsewhere.appendingPathComponent("compare"), "checkpoint-2"),
            (model.appendingPathComponent("compare/out"), "step-7"),
        ]
        for (output, checkpoint) in cases {
            let result = try DroptraceCommand.run(["compare", a.path, b.path, "--output", output.path])
            #expect(result.status == 1, "\(output.path): \(result.stderr)")
            let lines = result.stderr.split(separator: "\n").filter { $0.contains("error") }
            #expect(lines.count == 1 && result.stderr.contains(output.path), "\(result.stderr)")
            #expect(result.stderr.contains("inside checkpoint \(checkpoint)"), "\(result.stderr)")
        }
        #expect(!files.fileExists(atPath: series.appendingPathComponent("checkpoint-1/report.md").path))
        for created in ["checkpoint-1/compare", "checkpoint-2/compare"] {
            #expect(!files.fileExists(atPath: series.appendingPathComponent(created).path))
        }
        #expect(!files.fileExists(atPath: model.appendingPathComponent("compare").path))
        // Beside the series, in a directory of its own, is fine; so is a folder named like a step, or a model's of another name.
        #expect(try DroptraceCommand.run(["compare", a.path, b.path, "--output", scratch.path("comparison").path]).status == 0)
        try files.createDirectory(at: scratch.path("step100"), withIntermediateDirectories: true)
        let final = try scratch.copyOfModel("llama-f32", as: "final-model")
        for output in [scratch.path("step100/compare"), final.appendingPathComponent("compare")] {
            let result = try DroptraceCommand.run(["compare", a.path, b.path, "--output", output.path])
            #expect(result.status == 0, "\(output.path): \(result.stderr)")
        }
    }

    @Test func pipelineFormWritesTheSameReport() throws {
        let scratch = try ScratchDirectory()
        let stores = try Self.threeSeeds(in: scratch)
        let pipeline = try scratch.write("""
            title: Three seeds
            compare: [seed1, seed2, seed3]
            output: reports/seeds
            """, to: "compare.yaml")
        let result = try DroptraceCommand.run(["run", pipeline.path])
        try #require(result.status == 0, "\(result.stderr)")
        let fromPipeline = try Data(contentsOf: scratch.path("reports/seeds/report.md"))
        let direct = try DroptraceCommand.run(
            ["compare"] + stores.map(\.path) + ["--output", scratch.path("direct").path, "--title", "Three seeds"])
        try #require(direct.status == 0, "\(direct.stderr)")
        #expect(try Data(contentsOf: scratch.path("direct/report.md")) == fromPipeline)

        for (text, words) in [
            ("compare: [seed1, seed2]\noutput: o\nseries: s\n", "unknown setting \"series\""),
            ("compare: [seed1]\noutput: o\n", "at least two"),
            ("compare: seed1\noutput: o\n", "compare"),
            ("compare: [seed1, seed2]\n", "missing setting \"output\""),
        ] {
            let file = try scratch.write(text, to: "bad.yaml")
            let bad = try DroptraceCommand.run(["run", file.path])
            #expect(bad.status == 1 && bad.stderr.contains("bad.yaml") && bad.stderr.contains(words), "\(bad.stderr)")
        }
    }
}

import Analysis
import Foundation
import Pipeline
import Reporting
import Testing

/// Bugs found by using the new commands as a new user would, each kept from
/// coming back.
struct TryoutRegressionTests {
    /// More shards than calibration windows: every array task would refuse
    /// its shard after queueing, so submit refuses at once and writes nothing.
    @Test func submitRefusesMoreShardsThanSamples() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let pipeline = try scratch.write(
            """
            series: series
            calibration: \(FixtureFiles.calibrationJSONL.path)
            samples: 2
            output: out
            """, to: "pipeline.yaml")
        for extra in [["--shards", "3"], ["--shards", "2"]] {
            let result = try DroptraceCommand.run(["slurm", "submit", pipeline.path, "--dry-run"] + extra)
            if extra[1] == "3" {
                #expect(result.status == 1)
                #expect(result.stderr.contains("\(pipeline.path): 3 shards but samples is 2"), "\(result.stderr)")
                #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
                #expect(!FileManager.default.fileExists(atPath: scratch.path("out").path))
            } else {
                #expect(result.status == 0, "as many shards as samples is fine: \(result.stderr)")
            }
        }
        // Without samples, the windows the calibration gives bound the shards (58 shards of 56 windows
        // were queued, and two tasks failed each time).
        let unbounded = try scratch.write(
            """
            series: series
            calibration: \(FixtureFiles.calibrationJSONL.path)
            output: out2
            """, to: "unbounded.yaml")
        let result = try DroptraceCommand.run(["slurm", "submit", unbounded.path, "--dry-run", "--shards", "4000"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(unbounded.path): 4000 shards but the calibration gives "), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out2/slurm/submissions.json").path))
    }

    /// compare's table of runs gives each criterion the status the run's
    /// own report gives it: one whose interval straddles its threshold is
    /// inconclusive there, not "pass" by its measured value alone.
    @Test func compareShowsACriterionWithinNoiseAsInconclusive() throws {
        let scratch = try ScratchDirectory()
        let rows = AnalysisFixtures.clearlyInherentRows()
        var stores: [URL] = []
        for name in ["a", "b"] {
            let directory = scratch.path(name)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            var analysis = try SeriesAnalysis(rows: rows)
            if name == "b" {
                let index = try #require(analysis.verdict.criteria.firstIndex { $0.id == "drop_set_agreement" })
                let criterion = analysis.verdict.criteria[index]
                #expect(criterion.passed)
                // The verdict droptrace gives with such an interval (a store's verdict must be its rows').
                analysis.verdict = Verdict.evaluate(
                    attention: analysis.attention, mlp: analysis.mlp,
                    attentionImportance: rows.map { $0.attention.map(Double.init) }, steps: analysis.steps,
                    intervals: [criterion.id: ConfidenceInterval(
                        low: criterion.threshold - 0.1, high: max(criterion.value, criterion.threshold + 0.1))])
                #expect(analysis.verdict.outcome == .inconclusive)
            }
            var scores = AnalysisFixtures.scoreFile(rows)
            // Another run: its own calibration tokens (the same rows on the same tokens are a copy, refused).
            if name == "b" { scores.metadata.calibrationSHA256 = String(repeating: "f", count: 64) }
            try scores.write(to: directory.appendingPathComponent("scores.h5")) { try analysis.write(into: $0) }
            stores.append(directory)
        }
        let report = try CompareRuns.run(stores: stores, output: scratch.path("compare"), title: nil)
        let markdown = try String(contentsOf: report, encoding: .utf8)
        let line = try #require(markdown.split(separator: "\n").first { $0.hasPrefix("| b |") }, "\(markdown)")
        #expect(line.contains("(inconclusive)"), "\(line)")
        #expect(line.filter { $0 == "(" }.count == 3)
        let other = try #require(markdown.split(separator: "\n").first { $0.hasPrefix("| a |") })
        #expect(!other.contains("inconclusive"), "\(other)")
    }

    /// A comparison pipeline, which `run` accepts, is refused by slurm
    /// submit for what it is, not as a file with an unknown setting.
    @Test func submitOfAComparisonPipelineSaysWhy() throws {
        let scratch = try ScratchDirectory()
        let pipeline = try scratch.write("compare: [a, b]\noutput: out\n", to: "pipeline.yaml")
        let result = try DroptraceCommand.run(["slurm", "submit", pipeline.path, "--dry-run"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(pipeline.path): compares stored runs"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out").path))
    }
}

import Foundation
import Reporting
import ScoreStore
import Testing

/// `droptrace report` rebuilds, from the store alone, exactly what `trace`
/// wrote: report.md and every figure, byte for byte, evaluation included.
@Suite struct ReportRebuildTests {
    /// report.md and figures/* of `output`, by relative path.
    private func reportFiles(_ output: URL) throws -> [String: Data] {
        var files = ["report.md": try Data(contentsOf: output.appendingPathComponent("report.md"))]
        let figures = output.appendingPathComponent("figures")
        for name in try FileManager.default.contentsOfDirectory(atPath: figures.path) {
            files["figures/\(name)"] = try Data(contentsOf: figures.appendingPathComponent(name))
        }
        return files
    }

    /// Deletes report.md and figures/, runs `report`, and expects the same bytes back.
    private func expectRebuildIsIdentical(_ output: URL, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let traced = try reportFiles(output)
        try FileManager.default.removeItem(at: output.appendingPathComponent("report.md"))
        try FileManager.default.removeItem(at: output.appendingPathComponent("figures"))
        let result = try DroptraceCommand.run(["report", output.path])
        try #require(result.status == 0, "\(result.stderr)", sourceLocation: sourceLocation)
        let rebuilt = try reportFiles(output)
        #expect(rebuilt.keys.sorted() == traced.keys.sorted(), sourceLocation: sourceLocation)
        for (name, bytes) in traced {
            #expect(rebuilt[name] == bytes, "\(name) differs after `report`", sourceLocation: sourceLocation)
        }
    }

    /// A mistyped output directory is named, not created (with a lock file in it).
    @Test func missingOutputDirectoryIsNamedAndNotCreated() throws {
        let scratch = try ScratchDirectory()
        let typo = scratch.path("typo/deep/out")
        let result = try DroptraceCommand.run(["report", typo.path])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(typo.path): no such directory; run `droptrace trace` first"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("typo").path))
        let file = try scratch.write("x", to: "file")
        #expect(try DroptraceCommand.run(["report", file.path]).stderr.contains("\(file.path): not a directory"))
    }

    /// The verdict's wording is this version's, never the store's: a detail
    /// edited in `verdict_criteria` (markup, a false count) passed the check
    /// of the verdict against the rows, which leaves wording aside, and was
    /// printed in the report as it stood.
    @Test func aVerdictDetailEditedInTheStoreIsNotReported() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        for step in [100, 200] { try series.add(step: step) }
        let output = scratch.path("out")
        let traced = try DroptraceCommand.run([
            "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path, "--threads", "1",
        ])
        try #require(traced.status == 0, "\(traced.stderr)")
        let original = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        let file = try HDF5File.open(at: output.appendingPathComponent("scores.h5"), writable: true)
        let analysis = try file.group("analysis")
        let criteria = try analysis.stringAttribute("verdict_criteria")
        let edited = criteria.replacingOccurrences(of: #""detail":""#, with: #""detail":"<script>edited</script> "#)
        try #require(edited != criteria)
        try analysis.removeAttribute("verdict_criteria")
        try analysis.setAttribute("verdict_criteria", edited)
        try file.close()
        try #require(try DroptraceCommand.run(["reseal", output.path]).status == 0)
        let rebuilt = try DroptraceCommand.run(["report", output.path])
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        #expect(try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8) == original)
    }

    @Test func reportRebuildsTraceWithEvaluationByteForByteAlsoAfterAnIncrementalRun() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100, model: "llama-bf16", tokensSeen: 409_600)
        try series.add(step: 200, model: "llama-f32", tokensSeen: 819_200)
        let output = scratch.path("out")
        func trace() throws {
            let result = try DroptraceCommand.run([
                "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path,
                "--output", output.path, "--eval", FixtureFiles.calibrationText.path, "--seq-len", "32",
                "--samples", "4", "--drop-k", "2", "--title", "Rebuild | check", "--threads", "1",
            ])
            try #require(result.status == 0, "\(result.stderr)")
        }
        try trace()
        let markdown = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(markdown.hasPrefix(ReportOwnership.marker + "\n# Rebuild | check\n"))
        #expect(markdown.contains("## Does dropping work at every stage?"))
        // Every value measured: no legend for missing ones (it was printed under every table).
        #expect(!markdown.contains("not measured"))
        try expectRebuildIsIdentical(output)

        // A second, incremental trace: one new checkpoint, the first rotated away.
        try FileManager.default.removeItem(at: series.directory.appendingPathComponent("checkpoint-100"))
        try series.add(step: 300, model: "llama-bf16", tokensSeen: 1_228_800)
        try trace()
        let second = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(second.contains("| 300 | checkpoint-300 |") && second.contains("| 100 | checkpoint-100 | "))
        // checkpoint-100, gone, was never measured without the new final checkpoint's set.
        #expect(second.contains("\n—: not measured: the run that needed this value had no `--eval`"))
        try expectRebuildIsIdentical(output)

        // A title given to `report` is for that report only: the store keeps its own.
        let store = try Data(contentsOf: output.appendingPathComponent("scores.h5"))
        let retitled = try DroptraceCommand.run(["report", output.path, "--title", "Another"])
        try #require(retitled.status == 0, "\(retitled.stderr)")
        #expect(try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
            .hasPrefix(ReportOwnership.marker + "\n# Another\n"))
        #expect(try Data(contentsOf: output.appendingPathComponent("scores.h5")) == store)
        let back = try DroptraceCommand.run(["report", output.path])
        try #require(back.status == 0, "\(back.stderr)")
        #expect(try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8) == second)
    }
}

import DroptraceSupport
import Foundation
@testable import ScoreStore
import Testing

/// Stores that contradict themselves or the run continuing them, made as a
/// file edited by other software and resealed would be: each is refused in
/// one line naming the store, by every command that reads it, before any
/// checkpoint is scored.
@Suite struct StoreContradictionTests {
    /// A traced series of `steps` and its output directory.
    private func tracedSeries(_ scratch: ScratchDirectory, steps: [Int]) throws -> (series: SeriesBuilder, output: URL) {
        let series = try SeriesBuilder(in: scratch)
        for step in steps { try series.add(step: step) }
        let output = scratch.path("out")
        let result = try trace(series.directory, output)
        try #require(result.status == 0, "\(result.stderr)")
        return (series, output)
    }

    private func trace(_ series: URL, _ output: URL) throws -> DroptraceCommand.Result {
        try DroptraceCommand.run([
            "trace", series.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path, "--threads", "1",
        ])
    }

    /// `command` exits 1 with one error line naming `store` and saying `words`.
    private func expectRefused(_ command: [String], _ store: URL, saying words: String) throws {
        let result = try DroptraceCommand.run(command)
        let errors = result.stderr.split(separator: "\n").filter { $0.contains("error") }
        #expect(result.status == 1 && errors.count == 1, "\(command[0]): \(result.stderr)")
        #expect(errors.first?.contains(store.path) == true && errors.first?.contains(words) == true, "\(command[0]): \(result.stderr)")
    }

    /// A calibration shard's partial result (what `slurm task` writes: a
    /// row scored on part of the windows) copied into a run's place was
    /// reported, compared and resealed as the run's scores, and `trace`
    /// scored every new checkpoint before failing each in a line naming no file.
    @Test func aShardsPartialResultIsNoStore() throws {
        let scratch = try ScratchDirectory()
        let (series, output) = try tracedSeries(scratch, steps: [10])
        let store = output.appendingPathComponent(ScoreFile.outputFileName)
        let file = try HDF5File.open(at: store, writable: true)
        try file.setAttribute(ScoreFileLayout.Attribute.shardIndex, Int64(0))
        try file.setAttribute(ScoreFileLayout.Attribute.shardCount, Int64(2))
        try file.close()
        let before = try Data(contentsOf: store)

        let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: store) }
        #expect(error?.message.hasPrefix("is the partial result of calibration shard 0 of 2 written by `droptrace slurm task`, not a store") == true,
                "\(String(describing: error))")
        #expect(try ScoreFile.readPartial(from: store).metadata.shard == (try CalibrationShard(index: 0, count: 2)))
        try series.add(step: 20)
        for command in [["report", output.path], ["reseal", output.path], ["trace", series.directory.path, "--calibration",
                        FixtureFiles.calibrationJSONL.path, "--output", output.path, "--threads", "1"]] {
            try expectRefused(command, store, saying: "partial result of calibration shard 0 of 2")
        }
        #expect(try Data(contentsOf: store) == before, "the partial was changed")
    }

    /// `calibration_tokens` was printed by `report` as stored (2⁶³ − 1
    /// tokens) whatever the rows' per-sequence token counts add up to.
    @Test func calibrationTokensTheRowsDoNotCountAreRefused() throws {
        let scratch = try ScratchDirectory()
        let (_, output) = try tracedSeries(scratch, steps: [10])
        let store = output.appendingPathComponent(ScoreFile.outputFileName)
        let counted = try #require(try ScoreFile.read(from: store).rows.first?.sums?.tokens.reduce(0, +))
        let file = try HDF5File.open(at: store, writable: true)
        try file.removeAttribute(ScoreFileLayout.Attribute.calibrationTokens)
        try file.setAttribute(ScoreFileLayout.Attribute.calibrationTokens, Int64.max)
        try file.close()
        let words = "/per_sequence/tokens of checkpoint 'checkpoint-10' counts \(counted) tokens, but root attribute "
            + "calibration_tokens is \(Int64.max): the file was changed by other software"
        let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: store) }
        #expect(error?.message == words, "\(String(describing: error))")
        try expectRefused(["report", output.path], store, saying: words)
    }

    /// Rows scored on other windows than the calibration's, under its hash
    /// (a store edited to hold them, its attributes made to agree): every
    /// `trace` scored the new checkpoint, then failed it in a line naming
    /// no file, run after run.
    @Test func rowsOfOtherCalibrationWindowsAreRefusedBeforeScoring() throws {
        let scratch = try ScratchDirectory()
        let (series, output) = try tracedSeries(scratch, steps: [10])
        let store = output.appendingPathComponent(ScoreFile.outputFileName)
        var edited = try ScoreFile.read(from: store)
        let sums = try #require(edited.rows[0].sums)
        // Every window twice: means unchanged, twice the sequences and tokens.
        edited.rows[0].sums = try SequenceSums.merged([sums, sums])
        edited.metadata.calibrationTokens *= 2
        try FileManager.default.removeItem(at: store)
        _ = try edited.write(to: store)
        #expect(try ScoreFile.read(from: store) == edited)
        let before = try Data(contentsOf: store)

        try series.add(step: 20)
        let words = "holds checkpoint 'checkpoint-10' scored on \(2 * sums.sequenceCount) sequences of "
            + "\(2 * sums.tokens.reduce(0, +)) tokens, but its calibration (the same sha256) has \(sums.sequenceCount) of "
            + "\(sums.tokens.reduce(0, +)): the file was changed by other software"
        let result = try trace(series.directory, output)
        let errors = result.stderr.split(separator: "\n").filter { $0.contains("error") }
        #expect(result.status == 1 && errors.count == 1 && errors[0].contains(store.path) && errors[0].contains(words), "\(result.stderr)")
        #expect(!result.stderr.contains("scoring checkpoint-20"), "\(result.stderr)")
        #expect(try Data(contentsOf: store) == before)
    }

    /// A verdict criterion's interval no bootstrap gives ([v, −1], high
    /// below low; [1e308, v], beyond a fraction) was reported, the
    /// criterion's status and the verdict sentence following it.
    @Test(arguments: [("interval_high", -1.0, "] is not a part of [0, 1]"), ("interval_low", 1e308, "interval [1e+308, "),
                      ("value", 1.5, "' value 1.5 is outside [0, 1]")])
    func aVerdictCriterionNoRunGivesIsRefused(key: String, value: Double, words: String) throws {
        let scratch = try ScratchDirectory()
        let (_, output) = try tracedSeries(scratch, steps: [10, 20])
        let store = output.appendingPathComponent(ScoreFile.outputFileName)
        let file = try HDF5File.open(at: store, writable: true)
        let analysis = try file.group("analysis")
        let text = try analysis.stringAttribute("verdict_criteria")
        var criteria = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
        try #require(criteria[0]["interval_low"] != nil, "the criterion has a bootstrap interval")
        criteria[0][key] = value
        try analysis.removeAttribute("verdict_criteria")
        try analysis.setAttribute("verdict_criteria", String(decoding: try JSONSerialization.data(withJSONObject: criteria), as: UTF8.self))
        try file.close()
        try expectRefused(["report", output.path], store, saying: words)
        try expectRefused(["report", output.path], store, saying: "verdict_criteria: criterion 'attention_below_mlp' ")
    }
}

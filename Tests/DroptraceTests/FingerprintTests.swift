import Foundation
@testable import Pipeline
import ScoreStore
import Testing

/// A stored row is reused only for the files it was scored from.
@Suite struct FingerprintTests {
    func trace(_ series: URL, _ output: URL) throws -> DroptraceCommand.Result {
        try DroptraceCommand.run([
            "trace", series.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path,
            "--threads", "1",
        ])
    }

    func rows(_ output: URL) throws -> [CheckpointRow] {
        try ScoreFile.read(from: output.appendingPathComponent("scores.h5")).rows
    }

    /// checkpoint-<step> of the llama fixture for each of `steps`, traced
    /// once into out/: the series, its checkpoints, the output and its rows.
    func traced(_ steps: [Int], in scratch: ScratchDirectory) throws
        -> (series: SeriesBuilder, checkpoints: [URL], output: URL, rows: [CheckpointRow]) {
        let series = try SeriesBuilder(in: scratch)
        let checkpoints = try steps.map { try series.add(step: $0) }
        let output = scratch.path("out")
        try #require(try trace(series.directory, output).status == 0)
        return (series, checkpoints, output, try rows(output))
    }

    @Test func storedFingerprintNamesEachFileWithSizeAndTime() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let checkpoint = try series.add(step: 1)
        let fingerprint = try #require(try CheckpointDiscovery.scan(series.directory).ready.first?.fingerprint)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(fingerprint.utf8)) as? [String: [String: Any]])
        #expect(Set(object.keys) == ["config.json", "model.safetensors"])
        let weights = checkpoint.appendingPathComponent("model.safetensors").path
        let size = try FileManager.default.attributesOfItem(atPath: weights)[.size] as? NSNumber
        #expect((object["model.safetensors"]?["size"] as? NSNumber) == size)
        let mtime = try #require(object["model.safetensors"]?["mtime"] as? String)
        let modified = try #require(try FileManager.default.attributesOfItem(atPath: weights)[.modificationDate] as? Date)
        #expect(abs((Double(mtime) ?? 0) - modified.timeIntervalSince1970) < 1e-3)
        #expect(mtime.split(separator: ".").last?.count == 9, "nanoseconds, zero-padded")
    }

    /// A checkpoint removed file by file (save_total_limit's rmtree) or
    /// saved again while a run reads it has changed since discovery: the
    /// error reading it is no failure of it (tokenizer.json went first and
    /// the run failed advising --tokenizer).
    @Test func aCheckpointChangedSinceDiscoveryIsTold() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let checkpoint = try series.add(step: 1)
        func discovered() throws -> DiscoveredCheckpoint { try #require(try CheckpointDiscovery.scan(series.directory).ready.first) }
        let untouched = try discovered()
        #expect(!untouched.changedSinceDiscovery)
        try FileManager.default.removeItem(at: checkpoint.appendingPathComponent("tokenizer.json"))
        #expect(untouched.changedSinceDiscovery)
        let again = try discovered()
        #expect(!again.changedSinceDiscovery)
        // Saved again in place: the same entries, other bytes.
        let config = checkpoint.appendingPathComponent("config.json")
        try (try Data(contentsOf: config) + Data(" ".utf8)).write(to: config)
        #expect(again.changedSinceDiscovery)
        let last = try discovered()
        try FileManager.default.removeItem(at: checkpoint)
        #expect(last.changedSinceDiscovery)
    }

    @Test func checkpointReplacedUnderTheSameNameIsRescored() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let early = try series.add(step: 10)
        try series.add(step: 20, model: "llama-bf16")
        let output = scratch.path("out")
        var run = try trace(series.directory, output)
        try #require(run.status == 0, "\(run.stderr)")
        let first = try rows(output)

        // Same name, other weights (the same model in bfloat16).
        try series.swapWeights(of: early, withThoseOf: "llama-bf16")
        run = try trace(series.directory, output)
        try #require(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("info: rescoring checkpoint-10: its files changed since it was scored (model.safetensors now"))
        #expect(!run.stderr.contains("rescoring checkpoint-20"))
        let second = try rows(output)
        #expect(second[1] == first[1], "the untouched checkpoint keeps its row")
        #expect(second[0].attention != first[0].attention && second[0].fingerprint != first[0].fingerprint)

        // The right value: what a fresh store says about the series as it now is.
        let fresh = scratch.path("fresh")
        try #require(try trace(series.directory, fresh).status == 0)
        #expect(try rows(fresh).map { $0.attention } == second.map { $0.attention })
        #expect(try rows(fresh).map { $0.blockGap.count } == second.map { $0.blockGap.count })
    }

    /// A row whose step or token count is no longer the checkpoint's (its
    /// trainer_state.json written after it was scored, or the store edited)
    /// is rescored and placed where the checkpoint now says, never kept at
    /// the old point of training.
    @Test func rowAtAnotherStepThanTheCheckpointSaysIsRescored() throws {
        let scratch = try ScratchDirectory()
        let (series, checkpoints, output, first) = try traced([20, 30], in: scratch)
        let late = checkpoints[0]
        #expect(first.map(\.step) == [20, 30] && first.map(\.tokens) == [-1, -1])

        try Data(#"{"global_step": 40, "num_input_tokens_seen": 4096}"#.utf8)
            .write(to: late.appendingPathComponent("trainer_state.json"))
        let run = try trace(series.directory, output)
        try #require(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains(
            "info: rescoring checkpoint-20: its stored row is at step 20, tokens -1; the checkpoint now says step 40, tokens 4096"),
            "\(run.stderr)")
        #expect(!run.stderr.contains("rescoring checkpoint-30"))
        let second = try rows(output)
        #expect(second.map(\.name) == ["checkpoint-30", "checkpoint-20"])
        #expect(second.map(\.step) == [30, 40] && second.map(\.tokens) == [-1, 4096])
        #expect(second[1].attention == first[0].attention, "same files, same scores")
    }

    /// A checkpoint replaced by files that cannot join the store (here another
    /// architecture) loses its old row: those numbers belong to a model no
    /// longer on disk. The other rows stay.
    @Test func replacedCheckpointThatFailsLosesItsOldRow() throws {
        let scratch = try ScratchDirectory()
        let (series, checkpoints, output, first) = try traced([10, 20], in: scratch)
        try FileManager.default.removeItem(at: checkpoints[0])
        try series.add(step: 10, model: "gpt2-f32")
        let run = try trace(series.directory, output)
        #expect(run.status == 1)
        #expect(run.stderr.contains("warning: checkpoint-10: removed its stored scores"), "\(run.stderr)")
        let second = try rows(output)
        #expect(second.map(\.name) == ["checkpoint-20"])
        #expect(second[0] == first[1])
    }

    /// Files replaced by ones discovery refuses (a header that does not
    /// parse) fail the checkpoint there: its row of the old files goes too.
    @Test func checkpointReplacedByUnreadableFilesLosesItsOldRow() throws {
        let scratch = try ScratchDirectory()
        let (series, checkpoints, output, first) = try traced([10, 20], in: scratch)
        var bytes = Data([4, 0, 0, 0, 0, 0, 0, 0])
        bytes.append(contentsOf: Array("{no}".utf8) + [UInt8](repeating: 0, count: 64))
        try bytes.write(to: checkpoints[0].appendingPathComponent("model.safetensors"))
        let run = try trace(series.directory, output)
        #expect(run.status == 1)
        #expect(run.stderr.contains("warning: checkpoint-10: removed its stored scores"), "\(run.stderr)")
        #expect(try rows(output) == [first[1]])
        let report = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        // Named only among the failed checkpoints, not in any table of scores.
        #expect(report.components(separatedBy: "| checkpoint-10 |").count == 2 && report.contains("| checkpoint-10 | no |"))
    }

    /// When that checkpoint held the store's only row, the store is set aside
    /// (renamed, not deleted) and the run fails with one error line.
    @Test func replacedOnlyCheckpointSetsTheStoreAside() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let only = try series.add(step: 10)
        let output = scratch.path("out")
        try #require(try trace(series.directory, output).status == 0)
        try FileManager.default.removeItem(at: only)
        try series.add(step: 10, model: "gpt2-f32")
        let run = try trace(series.directory, output)
        #expect(run.status == 1)
        #expect(run.stderr.contains("the store is set aside as scores.h5.replaced-"), "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("scores.h5").path))
        let kept = try FileManager.default.contentsOfDirectory(atPath: output.path).filter { $0.hasPrefix("scores.h5.replaced-") }
        #expect(kept.count == 1)
    }

    @Test func movedSeriesKeepsItsRows() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let output = scratch.path("out")
        try #require(try trace(series.directory, output).status == 0)
        let moved = scratch.path("moved")
        try FileManager.default.moveItem(at: series.directory, to: moved)
        let run = try trace(moved, output)
        try #require(run.status == 0, "\(run.stderr)")
        #expect(!run.stderr.contains("rescoring") && !run.stderr.contains("info: scoring"), "\(run.stderr)")
    }

    /// A store written before fingerprints existed has no /checkpoints/fingerprint:
    /// it still reads, and its rows, which cannot be told from a replaced
    /// checkpoint's, are rescored once and then carry a fingerprint.
    @Test func storeWithoutFingerprintsReadsAndIsRescoredOnce() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        try series.add(step: 20, model: "llama-bf16")
        let output = scratch.path("out")
        try #require(try trace(series.directory, output).status == 0)
        let written = try rows(output)
        #expect(written.allSatisfy { !$0.fingerprint.isEmpty })

        let store = output.appendingPathComponent("scores.h5")
        do {
            let file = try HDF5File.open(at: store, writable: true)
            try file.remove(ScoreFileLayout.checkpointFingerprints)
            try file.close()
        }
        let old = try rows(output)
        #expect(old.map(\.fingerprint) == ["", ""])
        #expect(old.map(\.attention) == written.map(\.attention) && old.map(\.name) == written.map(\.name))

        var run = try trace(series.directory, output)
        try #require(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("rescoring checkpoint-10: its stored row has no fingerprint"))
        #expect(try rows(output) == written)
        run = try trace(series.directory, output)
        #expect(!run.stderr.contains("rescoring"))
    }

    @Test func fingerprintsRoundTripThroughTheStore() throws {
        let scratch = try ScratchDirectory()
        let row = CheckpointRow(
            name: "step1", step: 1, attention: [0.5], mlp: [0.25], block: [0.75], blockGap: [[0.25]],
            fingerprint: #"{"model.safetensors":{"mtime":"1.000000001","size":3}}"#)
        let file = ScoreFile(
            metadata: ScoreFileMetadata(modelType: "llama", numLayers: 1, calibrationSHA256: String(repeating: "0123456789abcdef", count: 4), calibrationTokens: 1, droptraceVersion: "t"),
            rows: [row, CheckpointRow(name: "step2", attention: [0], mlp: [0], block: [0], blockGap: [[1]])])
        let url = scratch.path("s.h5")
        try file.write(to: url)
        #expect(try ScoreFile.read(from: url) == file)
    }
}

import Analysis
import CheckpointIO
import DroptraceSupport
import Foundation
import Pipeline
import ScoreStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `droptrace trace` / `run` / `report` end to end through the executable.
@Suite struct TraceCommandTests {
    func trace(_ series: URL, _ output: URL, _ extra: [String] = []) throws -> DroptraceCommand.Result {
        try DroptraceCommand.run([
            "trace", series.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path,
            "--threads", "1",
        ] + extra)
    }

    @Test func incrementalRunsScoreOnlyNewCheckpointsAndKeepRotatedOnes() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let early = try series.add(step: 10, tokensSeen: 5120)
        try series.add(step: 20, model: "llama-bf16")
        let output = scratch.path("out")

        var result = try trace(series.directory, output)
        try #require(result.status == 0, "\(result.stderr)")
        let first = try ScoreFile.read(from: output.appendingPathComponent("scores.h5"))
        #expect(first.rows.map(\.name) == ["checkpoint-10", "checkpoint-20"])
        #expect(first.rows.map(\.tokens) == [5120, -1])

        // checkpoint-10 is replaced under the same name (its weights now in bfloat16): it is rescored.
        try series.swapWeights(of: early, withThoseOf: "llama-bf16")
        try series.add(step: 30, model: "llama-bf16")
        try series.add(step: 5, model: "llama-f32", name: "step5")
        result = try trace(series.directory, output)
        try #require(result.status == 0, "\(result.stderr)")
        let second = try ScoreFile.read(from: output.appendingPathComponent("scores.h5"))
        #expect(second.rows.map(\.name) == ["step5", "checkpoint-10", "checkpoint-20", "checkpoint-30"])
        #expect(second.rows[1] != first.rows[0] && second.rows[2] == first.rows[1])
        #expect(second.rows[3].attention == first.rows[1].attention, "same weights, same scores")

        // The Trainer rotates old checkpoints away: their rows stay.
        try FileManager.default.removeItem(at: early)
        result = try trace(series.directory, output)
        try #require(result.status == 0, "\(result.stderr)")
        let third = try ScoreFile.read(from: output.appendingPathComponent("scores.h5"))
        #expect(third.rows == second.rows)

        // --force rescores what is on disk and drops rows it cannot rescore, saying so.
        result = try trace(series.directory, output, ["--force"])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("checkpoint-10"))
        let forced = try ScoreFile.read(from: output.appendingPathComponent("scores.h5"))
        #expect(forced.rows.map(\.name) == ["step5", "checkpoint-20", "checkpoint-30"])
    }

    /// A checkpoint the run fails on is named in the report with the error
    /// it logged (read from cron, the report alone showed a gap), as
    /// `report` rebuilds it from the store; once mended, it is scored and no
    /// longer listed.
    @Test func theReportNamesTheCheckpointsTheLastRunFailedOn() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let broken = try series.add(step: 20)
        try series.add(step: 30)
        let weights = broken.appendingPathComponent("model.safetensors")
        let intact = try Data(contentsOf: weights)
        try intact.prefix(100).write(to: weights)
        let output = scratch.path("out")
        let failed = try trace(series.directory, output, ["--settle-minutes", "0"])
        #expect(failed.status == 1)
        let error = try #require(failed.stderr.split(separator: "\n").first { $0.contains(" error: ") })
        let logged = String(error[error.range(of: " error: ")!.upperBound...])
        #expect(logged.hasSuffix("with a settle time of 0 no write in progress is waited for: taken as corrupt"), "\(logged)")
        let report = output.appendingPathComponent("report.md")
        let markdown = try String(contentsOf: report, encoding: .utf8)
        #expect(markdown.contains("## Failed checkpoints\n\nThe last run that updated this store failed on 1 checkpoint,"), "\(markdown)")
        #expect(markdown.contains("| checkpoint-20 | no | \(logged.replacingOccurrences(of: "_", with: "\\_")) |"), "\(logged)")
        let store = output.appendingPathComponent("scores.h5")
        let file = try HDF5File.open(at: store)
        #expect(try UnscoredCheckpoints.read(from: file) == UnscoredCheckpoints(failed: [.init(name: "checkpoint-20", reason: logged)]))
        try file.close()
        // `report` rebuilds the same report from the store alone.
        try FileManager.default.removeItem(at: report)
        #expect(try DroptraceCommand.run(["report", output.path]).status == 0)
        #expect(try String(contentsOf: report, encoding: .utf8) == markdown)
        // Mended: scored, and the record goes.
        try intact.write(to: weights)
        let mended = try trace(series.directory, output, ["--settle-minutes", "0"])
        #expect(mended.status == 0, "\(mended.stderr)")
        #expect(!(try String(contentsOf: report, encoding: .utf8)).contains("Failed checkpoints"))
        let after = try HDF5File.open(at: store)
        #expect(try !after.exists("failed") && !after.exists("pending"))
        try after.close()
        // A message of several lines, or longer than the reader takes, is stored as it reads back.
        let long = UnscoredCheckpoints(
            failed: [.init(name: "c", reason: "first\nsecond " + String(repeating: "é", count: 3000))],
            pending: [.init(name: "d", reason: "still\rbeing written")])
        #expect(long.failed[0].reason.hasPrefix("first second é") && long.failed[0].reason.hasSuffix("…"))
        #expect(long.pending[0].reason == "still being written")
        let record = scratch.path("record.h5")
        let written = try HDF5File.create(at: record)
        try long.write(into: written)
        try written.close()
        let reread = try HDF5File.open(at: record)
        #expect(try UnscoredCheckpoints.read(from: reread) == long)
        try reread.close()
    }

    /// A checkpoint still being written when a cron run comes is skipped
    /// (exit 0: a later run scores it), and the report says so: it was
    /// silent, and read alone it seemed to cover the whole series.
    @Test func theReportNamesTheCheckpointsStillBeingWritten() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let writing = try series.add(step: 20)
        let weights = writing.appendingPathComponent("model.safetensors")
        let whole = try Data(contentsOf: weights)
        try whole.prefix(whole.count / 2).write(to: weights)
        let output = scratch.path("out")
        let first = try trace(series.directory, output)
        #expect(first.status == 0, "\(first.stderr)")
        let report = output.appendingPathComponent("report.md")
        let markdown = try String(contentsOf: report, encoding: .utf8)
        let reason = "still being written: model.safetensors has \(whole.count / 2) of \(whole.count) bytes"
        #expect(markdown.contains("## Checkpoints not scored yet\n\nThe last run that updated this store left 1 checkpoint for a later run"),
                "\(markdown)")
        #expect(markdown.contains("| checkpoint-20 | no | \(reason) |"), "\(markdown)")
        let file = try HDF5File.open(at: output.appendingPathComponent("scores.h5"))
        #expect(try UnscoredCheckpoints.read(from: file) == UnscoredCheckpoints(pending: [.init(name: "checkpoint-20", reason: reason)]))
        try file.close()
        try FileManager.default.removeItem(at: report)
        #expect(try DroptraceCommand.run(["report", output.path]).status == 0)
        #expect(try String(contentsOf: report, encoding: .utf8) == markdown)
        // Written out: scored, and no longer listed.
        try whole.write(to: weights)
        let second = try trace(series.directory, output)
        #expect(second.status == 0 && second.stderr.contains("1 scored, 1 already in the store"), "\(second.stderr)")
        #expect(!(try String(contentsOf: report, encoding: .utf8)).contains("not scored yet"))
        // Saved again in place: its row stays as last scored until the new files are scored, and the table says so.
        try whole.prefix(whole.count / 2).write(to: weights)
        #expect(try trace(series.directory, output).status == 0)
        let rewriting = try String(contentsOf: report, encoding: .utf8)
        #expect(rewriting.contains("| checkpoint-20 | as last scored | \(reason) |"), "\(rewriting)")
    }

    /// `score --output OUT_DIR/scores.h5` would replace the run's history
    /// (rows of checkpoints deleted since) with one checkpoint's file; into a
    /// trace's output directory, `score` writes under its lock.
    @Test func scoreNeverReplacesATraceStore() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let checkpoint = try series.add(step: 10)
        try series.add(step: 20)
        let output = scratch.path("out")
        try #require(try trace(series.directory, output).status == 0)
        let store = output.appendingPathComponent("scores.h5")
        let before = try Data(contentsOf: store)
        let result = try DroptraceCommand.run([
            "score", checkpoint.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", store.path,
        ])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(store.path): refusing to replace a trace's store of 2 checkpoint(s)"), "\(result.stderr)")
        #expect(try Data(contentsOf: store) == before)
        // An earlier score output is still replaced.
        let single = scratch.path("single.h5")
        for _ in 0..<2 {
            let again = try DroptraceCommand.run([
                "score", checkpoint.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", single.path,
            ])
            #expect(again.status == 0, "\(again.stderr)")
        }
        // Into a trace's output directory while a run holds its lock (a trace writing its store there,
        // which the check before scoring did not see yet): the lock's exit code, nothing written.
        let beside = output.appendingPathComponent("single.h5")
        var held: RunLock? = try RunLock(directory: output)
        let locked = try DroptraceCommand.run([
            "score", checkpoint.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", beside.path,
        ])
        #expect(locked.status == 75 && locked.stderr.contains(output.path), "\(locked.stderr)")
        #expect(!FileManager.default.fileExists(atPath: beside.path))
        withExtendedLifetime(held) { held = nil }
        #expect(try DroptraceCommand.run([
            "score", checkpoint.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", beside.path,
        ]).status == 0)
    }

    /// Weights deleted (to free space, a rotation cut short) leave the row
    /// as a deleted checkpoint's; a series path the store cannot record is
    /// refused before anything is created.
    @Test func deletedWeightsKeepTheRowAndAnUnrecordableSeriesPathIsRefused() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let early = try series.add(step: 10)
        try series.add(step: 20)
        let output = scratch.path("out")
        try #require(try trace(series.directory, output).status == 0)
        let rows = try ScoreFile.read(from: output.appendingPathComponent("scores.h5")).rows
        try FileManager.default.removeItem(at: early.appendingPathComponent("model.safetensors"))
        let again = try trace(series.directory, output, ["--settle-minutes", "0"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains("its stored row is kept, as a deleted checkpoint's is"), "\(again.stderr)")
        #expect(try ScoreFile.read(from: output.appendingPathComponent("scores.h5")).rows == rows)

        let odd = scratch.path("run\nA")
        try FileManager.default.createDirectory(at: odd, withIntermediateDirectories: true)
        let refused = try trace(odd, scratch.path("odd-out"))
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("the series directory's path holds a line break"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("odd-out").path))
    }

    @Test func incompleteCheckpointIsSkippedAndPickedUpLater() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100)
        let writing = try series.add(step: 200)
        let weights = writing.appendingPathComponent("model.safetensors")
        let complete = try Data(contentsOf: weights)
        try complete.prefix(complete.count / 2).write(to: weights)
        let noConfigYet = series.directory.appendingPathComponent("checkpoint-300")
        try FileManager.default.createDirectory(at: noConfigYet, withIntermediateDirectories: true)
        let output = scratch.path("out")

        var result = try trace(series.directory, output)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("checkpoint-200") && result.stderr.contains("warning"))
        #expect(try ScoreFile.read(from: output.appendingPathComponent("scores.h5")).rows.map(\.name) == ["checkpoint-100"])

        try complete.write(to: weights)
        result = try trace(series.directory, output)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.read(from: output.appendingPathComponent("scores.h5")).rows.map(\.name)
            == ["checkpoint-100", "checkpoint-200"])
    }

    @Test func secondRunOnTheSameOutputExitsWith75() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let output = scratch.path("out")
        do {
            let lock = try RunLock(directory: output)
            let result = try trace(series.directory, output)
            #expect(result.status == 75)
            #expect(result.stderr.contains("another droptrace run holds the lock"))
            #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("scores.h5").path))
            withExtendedLifetime(lock) {}
        }
        let report = try DroptraceCommand.run(["report", output.path])
        #expect(report.status == 1 && report.stderr.contains("scores.h5"), "lock released, but no store yet")
    }

    @Test func killedRunLeavesTheStoreReadable() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        for step in 1...8 { try series.add(step: step * 10, model: step % 2 == 0 ? "llama-f32" : "llama-bf16") }
        let reference = scratch.path("reference")
        try #require(try trace(series.directory, reference).status == 0)
        let expected = try ScoreFile.read(from: reference.appendingPathComponent("scores.h5")).rows

        let output = scratch.path("out")
        let store = output.appendingPathComponent("scores.h5")
        var killedMidWrite = 0
        for _ in 0..<40 where killedMidWrite < 3 {
            let (process, sawTemporary) = try runAndKillWhenTemporaryFileAppears(series.directory, output)
            #expect(process.terminationReason == .uncaughtSignal || !sawTemporary)
            if sawTemporary { killedMidWrite += 1 }
            if FileManager.default.fileExists(atPath: store.path) {
                let rows = try ScoreFile.read(from: store).rows
                #expect(rows == Array(expected.prefix(rows.count)), "the store must hold a prefix of the full run")
                // With its analysis or, when the run skipped it (`AnalysisPacing`), without: a report either way.
                let report = try DroptraceCommand.run(["report", output.path])
                #expect(report.status == 0, "\(report.stderr)")
            }
            if (try? ScoreFile.read(from: store).rows.count) == expected.count { try FileManager.default.removeItem(at: store) }
        }
        #expect(killedMidWrite > 0, "never caught a write in progress")
        let result = try trace(series.directory, output)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.read(from: store).rows == expected)
        let referenceStore = try HDF5File.open(at: reference.appendingPathComponent("scores.h5"))
        let finalStore = try HDF5File.open(at: store)
        defer { try? referenceStore.close(); try? finalStore.close() }
        #expect(try SeriesAnalysis.read(from: finalStore) == SeriesAnalysis.read(from: referenceStore),
                "the run's last write always analyses")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: output.path).filter { $0.contains(".tmp") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    /// Starts a trace and kills it with SIGKILL as soon as a temporary store
    /// file shows up (a write in progress), or when it ends by itself.
    func runAndKillWhenTemporaryFileAppears(_ series: URL, _ output: URL) throws -> (Process, Bool) {
        let process = Process()
        process.executableURL = DroptraceCommand.executable
        process.arguments = [
            "trace", series.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path, "--threads", "1",
        ]
        process.standardError = FileHandle.nullDevice
        try process.run()
        var sawTemporary = false
        while process.isRunning {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: output.path)) ?? []
            if names.contains(where: { $0.hasPrefix(".scores.h5.tmp") }) {
                kill(process.processIdentifier, SIGKILL)
                sawTemporary = true
                break
            }
            usleep(200)
        }
        process.waitUntilExit()
        return (process, sawTemporary)
    }

    @Test func pipelineFileRunsAndReportRebuildsFromTheStore() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        for (step, model) in [(100, "llama-bf16"), (200, "llama-f32"), (300, "llama-sharded")] {
            try series.add(step: step, model: model)
        }
        let calibration = try scratch.write(try String(contentsOf: FixtureFiles.calibrationJSONL, encoding: .utf8), to: "calib.jsonl")
        _ = calibration
        // A byte-order mark first, as Windows editors write it: YAML allows it.
        let pipeline = try scratch.write("""
            \u{FEFF}title: Test series
            series: series
            calibration: calib.jsonl
            drop_k: [1, 2]
            output: out
            """, to: "pipeline.yaml")
        let result = try DroptraceCommand.run(["run", pipeline.path, "--threads", "1"])
        try #require(result.status == 0, "\(result.stderr)")
        let output = scratch.path("out")
        let report = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(report.contains("Test series"))
        let store = try HDF5File.open(at: output.appendingPathComponent("scores.h5"))
        let analysis = try SeriesAnalysis.read(from: store)
        try store.close()
        #expect(analysis.dropK == [1, 2])

        // `report` rebuilds the same report from the store alone.
        try FileManager.default.removeItem(at: output.appendingPathComponent("report.md"))
        let rebuilt = try DroptraceCommand.run(["report", output.path])
        try #require(rebuilt.status == 0, "\(rebuilt.stderr)")
        #expect(try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8) == report)
    }

    /// A drop-k the model cannot have fails before anything is created, the
    /// output directory included, not after every checkpoint is scored, in
    /// `trace` and `run` alike. It is checked against the first checkpoint
    /// in series order, whose layer count the store takes (a checkpoint of
    /// another count fails against the store).
    @Test func dropKBeyondTheLayersFailsBeforeAnythingIsCreated() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let checkpoint = try series.add(step: 1)
        let output = scratch.path("out")
        func expectRefused(_ result: DroptraceCommand.Result, naming checkpoint: URL, k: Int, layers: Int) {
            #expect(result.status == 1)
            let errors = result.stderr.split(separator: "\n").filter { $0.contains("error:") }
            #expect(errors.count == 1 && errors[0].hasSuffix(
                "\(checkpoint.path): drop-k \(k) is out of range: the model has \(layers) layers, so drop-k is 1 to \(layers)"), "\(result.stderr)")
            #expect(!result.stderr.contains("scoring"), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: output.path))
        }
        expectRefused(try trace(series.directory, output, ["--drop-k", "2", "40"]), naming: checkpoint, k: 40, layers: 5)
        let pipeline = try scratch.write("""
            series: series
            calibration: \(FixtureFiles.calibrationJSONL.path)
            drop_k: [40]
            output: out
            """, to: "pipeline.yaml")
        // From a pipeline file, its key is named, with the file (the checkpoint was blamed).
        let piped = try DroptraceCommand.run(["run", pipeline.path, "--threads", "1"])
        #expect(piped.status == 1 && !FileManager.default.fileExists(atPath: output.path))
        #expect(piped.stderr.split(separator: "\n").filter { $0.contains("error:") }.map { $0.hasSuffix(
            "\(pipeline.path): drop_k 40 is out of range: the model (\(checkpoint.path)) has 5 layers, so drop_k is 1 to 5") }
            == [true], "\(piped.stderr)")

        // The final checkpoint has 5 layers, the first 4: 5 is refused, naming the first.
        let mixed = try SeriesBuilder(in: scratch, name: "mixed")
        let first = try mixed.add(step: 1, model: "llama-v4")
        try mixed.add(step: 2)
        expectRefused(try trace(mixed.directory, output, ["--drop-k", "5"]), naming: first, k: 5, layers: 4)

        // With a store, its layer count is the series': a first checkpoint
        // of another count neither refuses a drop-k the store allows (it fails
        // on its own, the others are stored) nor lets one through that the
        // store does not (refused naming the store, before any scoring; it
        // was checked after scoring, in a line naming no file, twice).
        let stored = try SeriesBuilder(in: scratch, name: "stored")
        _ = try stored.add(step: 2)
        let storedOutput = scratch.path("stored-out")
        try #require(try trace(stored.directory, storedOutput).status == 0)
        _ = try stored.add(step: 1, model: "llama-v4")
        _ = try stored.add(step: 3)
        let store = storedOutput.appendingPathComponent("scores.h5")
        let beyond = try trace(stored.directory, storedOutput, ["--drop-k", "6"])
        #expect(beyond.status == 1)
        let errors = beyond.stderr.split(separator: "\n").filter { $0.contains("error:") }
        #expect(errors.count == 1 && errors[0].hasSuffix("\(store.path): drop-k 6 is out of range: the model has 5 layers, so drop-k is 1 to 5"), "\(beyond.stderr)")
        #expect(!beyond.stderr.contains("scoring"), "\(beyond.stderr)")
        let allowed = try trace(stored.directory, storedOutput, ["--drop-k", "5"])
        #expect(allowed.status == 1, "the 4-layer checkpoint fails")
        #expect(try ScoreFile.read(from: store).rows.map(\.name) == ["checkpoint-2", "checkpoint-3"], "\(allowed.stderr)")
    }

    /// A checkpoint of another width with the same `model_type` and layer
    /// count (a new run saving into the same directory) fails on its own, as
    /// one of another layer count does: it was stored beside the others and
    /// became the final checkpoint every comparison is made against. The
    /// store records `hidden_size`; a store from before takes the first width
    /// scored into it.
    @Test func checkpointOfAnotherWidthIsNotStoredBesideTheOthers() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        _ = try series.add(step: 1)
        let output = scratch.path("out")
        try #require(try trace(series.directory, output).status == 0)
        let store = output.appendingPathComponent("scores.h5")
        #expect(try ScoreFile.read(from: store).metadata.hiddenSize == 48)

        // llama-f32 widened from 48 to 96 with zeros: a valid model of width 96, 5 layers, head_dim kept.
        let wide = try series.add(step: 2)
        try series.widen(wide, key: "hidden_size", from: 48, to: 96) { name in
            ["o_proj", "down_proj", "norm"].contains { name.contains($0) } ? .rows : .columns
        }
        let run = try trace(series.directory, output)
        #expect(run.status == 1)
        #expect(run.stderr.contains("\(wide.path): is llama with 5 layers (hidden_size 96), but the store holds llama with 5 layers (hidden_size 48)"),
                "\(run.stderr)")
        #expect(try ScoreFile.read(from: store).rows.map(\.name) == ["checkpoint-1"])
        // The widened model itself scores (it is refused as another model, not as a broken one).
        let alone = try DroptraceCommand.run([
            "score", wide.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("wide.h5").path])
        #expect(alone.status == 0, "\(alone.stderr)")
    }

    /// A checkpoint whose MLP is wider (`intermediate_size` 96 → 192, the
    /// new units zero, so it computes the same function and scores the
    /// same) is another model of the same type, layer count and width: it
    /// is refused beside the others by the digest of its layers' tensor
    /// shapes, which the store records. The same weights in another dtype
    /// are the same model.
    @Test func checkpointWithLayersOfOtherShapesIsNotStoredBesideTheOthers() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        _ = try series.add(step: 1)
        _ = try series.add(step: 2, model: "llama-bf16")
        let output = scratch.path("out")
        try #require(try trace(series.directory, output).status == 0)
        let store = output.appendingPathComponent("scores.h5")
        let recorded = try #require(try ScoreFile.read(from: store).metadata.layerShapesSHA256)
        #expect(recorded.count == 64)

        let wide = try series.add(step: 3)
        try series.widen(wide, key: "intermediate_size", from: 96, to: 192) { name in
            guard name.contains(".mlp.") else { return nil }
            return name.contains("down_proj") ? .columns : .rows
        }
        let run = try trace(series.directory, output)
        #expect(run.status == 1)
        #expect(run.stderr.contains("\(wide.path): is llama with 5 layers (hidden_size 48) with layer_shapes_sha256 "), "\(run.stderr)")
        #expect(run.stderr.contains("but the store holds llama with 5 layers (hidden_size 48) with layer_shapes_sha256 \(recorded.prefix(12))…"),
                "\(run.stderr)")
        #expect(try ScoreFile.read(from: store).rows.map(\.name) == ["checkpoint-1", "checkpoint-2"])

        // It scores as the narrow model does (the added units are zero): only the shapes tell it apart.
        let alone = scratch.path("wide.h5")
        let narrow = scratch.path("narrow.h5")
        for (checkpoint, file) in [(wide, alone), (series.directory.appendingPathComponent("checkpoint-1"), narrow)] {
            let scored = try DroptraceCommand.run(["score", checkpoint.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", file.path])
            #expect(scored.status == 0, "\(scored.stderr)")
        }
        let (wideFile, narrowFile) = (try ScoreFile.read(from: alone), try ScoreFile.read(from: narrow))
        #expect(zip(wideFile.rows[0].mlp, narrowFile.rows[0].mlp).allSatisfy { abs($0 - $1) < 1e-5 })
        #expect(narrowFile.metadata.layerShapesSHA256 == recorded)
        #expect(wideFile.metadata.layerShapesSHA256 != recorded)
    }

    /// An empty argument named the working directory as a path
    /// (`--calibration ''`, a positional `''`; `slurm task --checkpoint ''`
    /// said the working directory was not finished yet): no option takes one.
    @Test(arguments: [
        (["score", "", "--calibration", "c.txt"], #"an empty argument follows "score""#),
        (["trace", "series", "--calibration=", "--output", "out"], "--calibration is given an empty value"),
        (["slurm", "task", "p.yaml", "--checkpoint", "", "--shard", "0", "--shards", "1"], #"an empty argument follows "--checkpoint""#),
        (["", "score"], "the first argument is empty"),
    ])
    func emptyArgumentsAreUsageErrors(arguments: [String], words: String) throws {
        let result = try DroptraceCommand.run(arguments)
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stderr.contains("\(words): no option or argument of droptrace takes an empty value"), "\(result.stderr)")
    }

    /// `report --title` and `compare --title` took a tab or line break into
    /// the report's heading; `trace --title` refused them.
    @Test(arguments: ["report", "compare"])
    func titleWithControlCharactersIsAUsageError(command: String) throws {
        let scratch = try ScratchDirectory()
        let arguments = command == "report"
            ? ["report", scratch.path("out").path] : ["compare", scratch.path("a").path, scratch.path("b").path, "--output", scratch.path("c").path]
        let result = try DroptraceCommand.run(arguments + ["--title", "a\tb"])
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stderr.contains("title must be one line"), "\(result.stderr)")
        // An empty or blank title wrote an empty heading.
        let empty = try DroptraceCommand.run(arguments + ["--title", ""])
        #expect(empty.status == 64 && empty.stderr.contains("an empty argument follows \"--title\""), "\(empty.stderr)")
        let blank = try DroptraceCommand.run(arguments + ["--title", "  "])
        #expect(blank.status == 64 && blank.stderr.contains("title is empty"), "\(blank.stderr)")
    }

    @Test func badPipelineFilesAreRefused() throws {
        let scratch = try ScratchDirectory()
        let cases: [(String, String)] = [
            ("series: a\ncalibration: c\noutput: o\nseq_lenn: 3\n", "seq_lenn"),
            ("series: a\noutput: o\n", "calibration"),
            ("series: a\ncheckpoints: [b]\ncalibration: c\noutput: o\n", "exactly one"),
            ("series: [\n", "YAML"),
            ("series: a\ncalibration: c\noutput: o\nsamples: many\n", "samples"),
            ("series: a\ncalibration: c\noutput: o\ntitle: \"a\\0b\"\n", "title"),
            ("series: a\ncalibration: c\noutput: \"\"\n", "setting \"output\" is empty"),
            // The parser's reason, where and while doing what, in the one line (the first line of its message lacked the reason).
            ("series: s\ncalibration: c\noutput: o\ndrop_k:\n\t- 2\n",
             "not valid YAML: line 5, column 1: found character that cannot start any token (while scanning for the next token at line 5, column 1)"),
            ("series: s\ncalibration: c\noutput: o\ntitle: \"unterminated\n",
             "not valid YAML: line 5, column 1: found unexpected end of stream (while scanning a quoted scalar at line 4, column 8)"),
            ("series: s\ncalibration: c\noutput: o\n  seq_len: 64\n", "not valid YAML: line 4, column 10: mapping values are not allowed in this context\n"),
            // The reader's complaint, where and which character (it came with a nested "error:" and a dangling colon).
            ("series: s\ncalibration: c\noutput: o\n\u{0}\n", "not valid YAML: byte 35: control characters are not allowed (U+0000)\n"),
        ]
        for (index, (text, word)) in cases.enumerated() {
            let file = try scratch.write(text, to: "p\(index).yaml")
            let result = try DroptraceCommand.run(["run", file.path])
            #expect(result.status == 1)
            #expect(result.stderr.contains("p\(index).yaml") && result.stderr.contains(word), "\(result.stderr)")
        }
    }
}

/// `trace --eval`: perplexity per checkpoint, full and with drop sets removed.
@Suite struct TraceEvaluationTests {
    @Test func perplexitiesAreStoredReportedAndKeptAcrossRuns() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100, model: "llama-bf16")
        try series.add(step: 200, model: "llama-f32")
        let output = scratch.path("out")
        func run() throws {
            let result = try DroptraceCommand.run([
                "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path,
                "--eval", FixtureFiles.calibrationText.path, "--seq-len", "32", "--samples", "4", "--drop-k", "2",
            ])
            try #require(result.status == 0, "\(result.stderr)")
        }
        try run()
        let store = output.appendingPathComponent("scores.h5")
        func column(_ name: String) throws -> [Double] {
            let file = try HDF5File.open(at: store)
            defer { try? file.close() }
            return try file.dataset("evaluation/\(name)").read(as: Double.self)
        }
        // Same windows as the transformers reference (4 × 32 tokens of calib.txt).
        let reference = ((DropTests.section("eval")["llama-f32"] as! [String: Any])["full"] as! NSNumber).doubleValue
        let full = try column("perplexity_full")
        #expect(full.count == 2 && abs(full[1] / reference - 1) < 1e-4)
        // At the final checkpoint its own set is the final set.
        #expect(try column("perplexity_own_k2")[1] == column("perplexity_final_k2")[1])
        let report = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(report.contains("Does dropping work at every stage?") && report.contains(String(format: "%.3f", full[1])))

        // A new final checkpoint: earlier full values are kept, not recomputed after rotation.
        try FileManager.default.removeItem(at: series.directory.appendingPathComponent("checkpoint-100"))
        try series.add(step: 300, model: "llama-bf16")
        try run()
        let after = try column("perplexity_full")
        #expect(after.count == 3 && after[0] == full[0] && after[1] == full[1])
        #expect(try column("perplexity_final_k2")[0].isNaN, "rotated away before the final set changed")
        #expect(try !column("perplexity_final_k2")[1].isNaN)
    }

    /// A new final checkpoint traced without `--eval`: the values measured
    /// without the old final's drop sets are not the final's any more, and go
    /// ("–" in the report, as it says); they were kept and shown as the
    /// final checkpoint's, naming the old one.
    @Test func aNewFinalWithoutEvalForgetsTheOldFinalsSets() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100, model: "llama-bf16")
        try series.add(step: 200)
        let output = scratch.path("out")
        try #require(try trace(series.directory, output, eval: FixtureFiles.calibrationText).status == 0)
        let before = try perplexities(output)
        let measured = try #require(before["perplexity_final_k2"])
        #expect(measured.allSatisfy { $0.isFinite }, "\(measured)")
        try series.add(step: 300, model: "llama-bf16")
        let run = try DroptraceCommand.run([
            "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path,
            "--seq-len", "32", "--samples", "4", "--drop-k", "1", "--drop-k", "2", "--threads", "1",
        ])
        try #require(run.status == 0, "\(run.stderr)")
        let now = try perplexities(output)
        #expect(try #require(now["perplexity_final_k2"]).allSatisfy { $0.isNaN }, "\(now)")
        // What does not depend on the final checkpoint stays.
        #expect(try #require(now["perplexity_full"]).prefix(2).elementsEqual(try #require(before["perplexity_full"])))
        let report = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(report.contains("without the final checkpoint's (checkpoint-300) drop-k attention layers"), "\(report)")
    }

    /// What a store holds for drop-k values no model of its layers has, or
    /// perplexities without another checkpoint's sets than its final row's
    /// (a store edited, or from before runs without `--eval` settled them):
    /// refused, and read as not measured, where they were shown as the
    /// final checkpoint's, naming any string, and as a drop-999 column.
    @Test func evaluationsOfNoDropKOrOfAnotherFinalAreNotReported() throws {
        let scratch = try ScratchDirectory()
        let (file, rows) = try tracedWithEvaluation(in: scratch)
        let group = try file.group("evaluation")
        try group.removeAttribute("final_checkpoint")
        try group.setAttribute("final_checkpoint", "some-other-model")
        let evaluation = try #require(try DropEvaluation.read(from: file, rows: rows))
        #expect(evaluation.finalCheckpoint == "checkpoint-200" && evaluation.byCheckpoint.values.allSatisfy { $0.final.isEmpty })
        try file.createDataset("evaluation/perplexity_own_k999", values: try file.dataset("evaluation/perplexity_own_k1").read(as: Double.self))
        let error = #expect(throws: DroptraceError.self) { try DropEvaluation.read(from: file, rows: rows) }
        #expect(error?.message == "/evaluation/perplexity_own_k999 is for drop-999, which a model of 5 layers has not", "\(String(describing: error))")
        try file.close()
    }

    /// The final checkpoint's own drop-k perplexity and its final-set one
    /// measure one model: a store where they differ was changed by hand
    /// (the report showed both).
    @Test func theFinalCheckpointsOwnAndFinalSetPerplexitiesAgree() throws {
        let scratch = try ScratchDirectory()
        let (file, rows) = try tracedWithEvaluation(in: scratch)
        defer { try? file.close() }
        #expect(try DropEvaluation.read(from: file, rows: rows) != nil)
        var own = try file.dataset("evaluation/perplexity_own_k2").read(as: Double.self)
        own[1] *= 1.01
        try file.remove("evaluation/perplexity_own_k2")
        try file.createDataset("evaluation/perplexity_own_k2", values: own)
        let error = #expect(throws: DroptraceError.self) { try DropEvaluation.read(from: file, rows: rows) }
        #expect(error?.message.hasPrefix("/evaluation/perplexity_own_k2 and perplexity_final_k2 of checkpoint 'checkpoint-200' are ") == true,
                "\(String(describing: error))")
    }

    /// A checkpoint whose loss is beyond exp's range (its final norm scaled
    /// by 1e4): its infinite perplexity was stored, which every reader then
    /// refused — no report, and --force wrote it again. It is a failure of
    /// that checkpoint's evaluation now; the store and report stand.
    @Test func anInfinitePerplexityIsAFailureNotAValue() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100)
        let broken = try series.add(step: 200)
        let weights = broken.appendingPathComponent("model.safetensors")
        var bytes = try Data(contentsOf: weights)
        let headerLength = Int(bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian)
        let header = try JSONSerialization.jsonObject(with: bytes[8..<(8 + headerLength)]) as! [String: Any]
        let offsets = ((header["model.norm.weight"] as! [String: Any])["data_offsets"] as! [NSNumber]).map(\.intValue)
        for offset in stride(from: 8 + headerLength + offsets[0], to: 8 + headerLength + offsets[1], by: 4) {
            let value = bytes[offset..<(offset + 4)].withUnsafeBytes { Float(bitPattern: $0.loadUnaligned(as: UInt32.self)) } * 1e4
            bytes.replaceSubrange(offset..<(offset + 4), with: withUnsafeBytes(of: value.bitPattern) { Array($0) })
        }
        try bytes.write(to: weights)
        let output = scratch.path("out")
        let result = try trace(series.directory, output, eval: FixtureFiles.calibrationText)
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(broken.path): its perplexity on ") && result.stderr.contains(" is inf"), "\(result.stderr)")
        let store = output.appendingPathComponent("scores.h5")
        let rows = try ScoreFile.read(from: store).rows
        let file = try HDF5File.open(at: store)
        defer { try? file.close() }
        let evaluation = try #require(try DropEvaluation.read(from: file, rows: rows))
        #expect(evaluation.byCheckpoint["checkpoint-100"]?.full.isFinite == true)
        #expect(evaluation.byCheckpoint["checkpoint-200"]?.full.isNaN ?? true)
        #expect(FileManager.default.fileExists(atPath: output.appendingPathComponent("report.md").path))
    }

    /// A series of two checkpoints traced with `--eval`: its store, open to
    /// be changed, and its rows.
    func tracedWithEvaluation(in scratch: ScratchDirectory) throws -> (HDF5File, [CheckpointRow]) {
        let series = try SeriesBuilder(in: scratch)
        for step in [100, 200] { try series.add(step: step) }
        let output = scratch.path("out")
        try #require(try trace(series.directory, output, eval: FixtureFiles.calibrationText).status == 0)
        let store = output.appendingPathComponent("scores.h5")
        let rows = try ScoreFile.read(from: store).rows
        return (try HDF5File.open(at: store, writable: true), rows)
    }

    func trace(_ series: URL, _ output: URL, eval: URL) throws -> DroptraceCommand.Result {
        try DroptraceCommand.run([
            "trace", series.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path,
            "--eval", eval.path, "--seq-len", "32", "--samples", "4", "--drop-k", "1", "--drop-k", "2", "--threads", "1",
        ])
    }

    /// A checkpoint that cannot be evaluated — its tokenizer gives other
    /// evaluation tokens than the final checkpoint's, or it has none for the
    /// tasks — fails the run with one line naming it; the others' values are
    /// stored and reported. An early checkpoint saved with another tokenizer
    /// fails alone: the final checkpoint's tokens are the reference.
    @Test func aCheckpointFailingEvaluationLeavesTheOthersStored() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let odd = try series.add(step: 100)
        try series.add(step: 200)
        let tokenizer = try Self.giveOtherTokens(odd)
        let output = scratch.path("out")
        let result = try trace(series.directory, output, eval: FixtureFiles.calibrationText)
        #expect(result.status == 1)
        #expect(result.stderr.contains(
            "\(odd.path): its tokenizer turns the evaluation text into other tokens than that of checkpoint-200, the series' final checkpoint"),
            "\(result.stderr)")
        let full = try #require(try perplexities(output)["perplexity_full"])
        #expect(full.count == 2 && full[0].isNaN && full[1].isFinite, "\(full)")
        #expect(FileManager.default.fileExists(atPath: output.appendingPathComponent("report.md").path))

        try FileManager.default.removeItem(at: tokenizer)
        let tasks = try DroptraceCommand.run([
            "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", scratch.path("tasks").path, "--threads", "1",
        ] + TaskDropTraceTests.taskArguments)
        #expect(tasks.status == 1)
        #expect(tasks.stderr.contains("error: \(odd.path): task accuracy needs the checkpoint's tokenizer.json"), "\(tasks.stderr)")
        let record = try HDF5File.open(at: scratch.path("tasks").appendingPathComponent("scores.h5"))
        defer { try? record.close() }
        let accuracy = try record.dataset("evaluation/tasks/piqa/acc_full").read(as: Double.self)
        #expect(accuracy.count == 2 && accuracy[0].isNaN && accuracy[1].isFinite, "\(accuracy)")
    }

    /// Cuts the merges of `checkpoint`'s tokenizer.json to ten, so that it
    /// turns the evaluation text into other tokens; returns the file.
    @discardableResult static func giveOtherTokens(_ checkpoint: URL) throws -> URL {
        let tokenizer = checkpoint.appendingPathComponent("tokenizer.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: tokenizer)) as! [String: Any]
        var model = json["model"] as! [String: Any]
        model["merges"] = Array((model["merges"] as! [Any]).prefix(10))
        json["model"] = model
        try FileManager.default.removeItem(at: tokenizer)
        try JSONSerialization.data(withJSONObject: json).write(to: tokenizer)
        return tokenizer
    }

    /// The reference tokens follow the final checkpoint from run to run: a
    /// new final checkpoint whose tokenizer gives other tokens makes every
    /// perplexity be computed again on its tokens (none measured on the old
    /// ones is kept beside them), as a fresh store would hold them.
    @Test func aNewFinalCheckpointWithOtherTokensComputesEveryPerplexityAgain() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try Self.giveOtherTokens(try series.add(step: 100))
        let usual = try series.add(step: 200)
        let output = scratch.path("out")
        #expect(try trace(series.directory, output, eval: FixtureFiles.calibrationText).status == 1)
        let first = try #require(try perplexities(output)["perplexity_full"])
        #expect(first.count == 2 && first[0].isNaN && first[1].isFinite, "\(first)")

        try Self.giveOtherTokens(try series.add(step: 300))
        let run = try trace(series.directory, output, eval: FixtureFiles.calibrationText)
        #expect(run.status == 1)
        #expect(run.stderr.contains("the evaluation tokens changed"), "\(run.stderr)")
        #expect(run.stderr.contains("\(usual.path): its tokenizer turns the evaluation text into other tokens than that of checkpoint-300"),
                "\(run.stderr)")
        let now = try perplexities(output)
        let full = try #require(now["perplexity_full"])
        #expect(full.count == 3 && full[0].isFinite && full[1].isNaN && full[2].isFinite, "\(full)")

        let fresh = scratch.path("fresh")
        #expect(try trace(series.directory, fresh, eval: FixtureFiles.calibrationText).status == 1)
        // NaN (no perplexity) compared as absent.
        func values(_ columns: [String: [Double]]) -> [String: [Double?]] { columns.mapValues { $0.map { $0.isNaN ? nil : $0 } } }
        #expect(values(try perplexities(fresh)) == values(now), "\(now)")
    }

    /// An evaluation file no checkpoint can read (not UTF-8 text, or too
    /// short for one window) fails the run before anything is scored, with
    /// one line naming it, not once per checkpoint after scoring them all.
    @Test func anUnreadableEvaluationFileFailsBeforeAnythingIsScored() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100)
        try series.add(step: 200)
        let binary = scratch.path("binary.txt")
        try Data([0x62, 0xFF, 0x0A]).write(to: binary)
        let short = try scratch.write("two words\n", to: "short.txt")
        for (file, problem) in [(binary, "is not valid UTF-8 text (bad byte at offset 1)"), (short, "text gives 9 tokens with \(series.directory.path)/checkpoint-100/tokenizer.json, not enough for one window of 32 tokens")] {
            let output = scratch.path("out-\(file.lastPathComponent)")
            let result = try trace(series.directory, output, eval: file)
            #expect(result.status == 1)
            let errors = result.stderr.split(separator: "\n").filter { $0.contains("error:") }
            #expect(errors.count == 1 && errors[0].hasSuffix("error: \(file.path): \(problem)"), "\(result.stderr)")
            #expect(!result.stderr.contains("scoring"), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: output.appendingPathComponent("scores.h5").path))
        }
    }

    /// Evaluation text is tokenised with each checkpoint's tokenizer.json:
    /// a checkpoint without one is named in an error about evaluation text
    /// (not text calibration), in `trace` and `drop` alike; an empty
    /// evaluation file is named as such, not as calibration.
    @Test func evaluationTextWithoutATokenizerIsNamedAsEvaluation() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100)
        let bare = try series.add(step: 200)
        let tokenizer = bare.appendingPathComponent("tokenizer.json")
        try FileManager.default.removeItem(at: tokenizer)
        let eval = FixtureFiles.calibrationText.path
        let expected = "\(eval): evaluation text needs the checkpoint's tokenizer.json (missing: \(tokenizer.path))"
        let traced = try trace(series.directory, scratch.path("out"), eval: FixtureFiles.calibrationText)
        #expect(traced.status == 1 && traced.stderr.contains(expected), "\(traced.stderr)")
        func drop(_ checkpoint: URL, eval: String) throws -> DroptraceCommand.Result {
            try DroptraceCommand.run([
                "drop", checkpoint.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "attention",
                "--count", "1", "--eval", eval, "--seq-len", "32", "--speed-max-rounds", "1",
            ])
        }
        let dropped = try drop(bare, eval: eval)
        #expect(dropped.status == 1 && dropped.stderr.contains(expected), "\(dropped.stderr)")
        #expect(!(traced.stderr + dropped.stderr).contains("calibration needs"))
        let empty = try scratch.write("", to: "empty.txt")
        let emptyEval = try drop(FixtureFiles.model("llama-f32"), eval: empty.path)
        #expect(emptyEval.status == 1 && emptyEval.stderr.contains("error: \(empty.path): is empty\n"), "\(emptyEval.stderr)")
    }

    /// Checkpoints saved without their tokenizer (a training loop given no
    /// tokenizer) read text with the one `--tokenizer` names — calibration,
    /// evaluation text and tasks, in `trace`, pipeline files, `drop` and
    /// `eval` — and score exactly as the same checkpoints with theirs.
    @Test func checkpointsWithoutTokenizerReadTextWithTheOneGiven() throws {
        let scratch = try ScratchDirectory()
        let (full, bare) = (try SeriesBuilder(in: scratch, name: "full"), try SeriesBuilder(in: scratch, name: "bare"))
        for series in [full, bare] {
            try series.add(step: 100)
            try series.add(step: 200, model: "llama-bf16")
        }
        for step in [100, 200] {
            for file in ["tokenizer.json", "tokenizer_config.json"] {
                try? FileManager.default.removeItem(at: bare.directory.appendingPathComponent("checkpoint-\(step)/\(file)"))
            }
        }
        let base = FixtureFiles.model("llama-f32")
        let text = ["--calibration", FixtureFiles.calibrationText.path, "--eval", FixtureFiles.calibrationText.path,
                    "--seq-len", "32", "--samples", "4", "--drop-k", "1", "--threads", "1"]
        func traced(_ series: SeriesBuilder, _ name: String, _ extra: [String] = []) throws -> DroptraceCommand.Result {
            try DroptraceCommand.run(["trace", series.directory.path, "--output", scratch.path(name).path] + text + extra)
        }
        try #require(try traced(full, "full-out").status == 0)
        let refused = try traced(bare, "refused")
        #expect(refused.status == 1 && refused.stderr.contains("pass --tokenizer DIR"), "\(refused.stderr)")
        let given = try traced(bare, "given", ["--tokenizer", base.path])
        try #require(given.status == 0, "\(given.stderr)")
        let expected = try ScoreFile.read(from: scratch.path("full-out/scores.h5"))
        #expect(try ScoreFile.read(from: scratch.path("given/scores.h5")).rows.map(\.attention) == expected.rows.map(\.attention))
        #expect(try perplexities(scratch.path("given")) == perplexities(scratch.path("full-out")))

        // A pipeline file names it relative to itself; the directory need hold nothing else.
        let tokenizerOnly = scratch.path("tokenizer")
        try FileManager.default.createDirectory(at: tokenizerOnly, withIntermediateDirectories: true)
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: base.appendingPathComponent(file), to: tokenizerOnly.appendingPathComponent(file))
        }
        let pipeline = try scratch.write("""
            series: bare
            calibration: \(FixtureFiles.calibrationText.path)
            tokenizer: tokenizer
            seq_len: 32
            samples: 4
            output: piped
            """, to: "pipeline.yaml")
        let piped = try DroptraceCommand.run(["run", pipeline.path, "--threads", "1"])
        try #require(piped.status == 0, "\(piped.stderr)")
        #expect(try ScoreFile.read(from: scratch.path("piped/scores.h5")).rows.map(\.attention) == expected.rows.map(\.attention))

        // Tasks and drop's evaluation text too.
        let task = ["--task", "piqa=\(FixtureFiles.root.appendingPathComponent("tasks/piqa.jsonl").path)", "--json"]
        let checkpoint = bare.directory.appendingPathComponent("checkpoint-100").path
        let evaluated = try DroptraceCommand.run(["eval", checkpoint, "--tokenizer", base.path] + task)
        let reference = try DroptraceCommand.run(["eval", full.directory.appendingPathComponent("checkpoint-100").path] + task)
        #expect(evaluated.status == 0 && evaluated.stdout == reference.stdout, "\(evaluated.stderr)")
        let noTokenizer = try DroptraceCommand.run(["eval", checkpoint, "--tokenizer", scratch.path("none").path] + task)
        #expect(noTokenizer.status == 1 && noTokenizer.stderr.contains("\(scratch.path("none").path): the tokenizer directory given (--tokenizer) does not exist"),
                "\(noTokenizer.stderr)")
        // A mistyped one is said even where the calibration is token ids, before anything is created.
        let unused = try DroptraceCommand.run([
            "trace", full.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("unused").path,
            "--tokenizer", scratch.path("none").path,
        ])
        #expect(unused.status == 1 && unused.stderr.contains("the tokenizer directory given (--tokenizer) does not exist"), "\(unused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("unused").path))
        let dropped = try DroptraceCommand.run([
            "drop", checkpoint, "--calibration", FixtureFiles.calibrationText.path, "--eval", FixtureFiles.calibrationText.path,
            "--seq-len", "32", "--target", "attention", "--count", "1", "--speed-max-rounds", "1", "--tokenizer", base.path,
        ])
        #expect(dropped.status == 0, "\(dropped.stderr)")
    }

    /// Every /evaluation column of the store in `output`.
    func perplexities(_ output: URL) throws -> [String: [Double]] {
        let file = try HDF5File.open(at: output.appendingPathComponent("scores.h5"))
        defer { try? file.close() }
        return try Dictionary(uniqueKeysWithValues: file.group("evaluation").childNames().filter { $0.hasPrefix("perplexity") }.map {
            ($0, try file.dataset("evaluation/\($0)").read(as: Double.self))
        })
    }

    /// Perplexities of other evaluation tokens are never kept beside the new
    /// ones: a run on another --eval file computes every value again, as a
    /// fresh store would.
    @Test func anotherEvaluationFileComputesEveryPerplexityAgain() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100, model: "llama-bf16")
        try series.add(step: 200)
        let text = try String(contentsOf: FixtureFiles.calibrationText, encoding: .utf8)
        let other = try scratch.write(String(text.split(separator: "\n").reversed().joined(separator: "\n")), to: "other.txt")
        let output = scratch.path("out")
        try #require(try trace(series.directory, output, eval: FixtureFiles.calibrationText).status == 0)
        let first = try perplexities(output)
        try series.add(step: 300, model: "llama-bf16")
        let run = try trace(series.directory, output, eval: other)
        try #require(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("the evaluation tokens changed"), "\(run.stderr)")

        let fresh = scratch.path("fresh")
        try #require(try trace(series.directory, fresh, eval: other).status == 0)
        let (now, right) = (try perplexities(output), try perplexities(fresh))
        #expect(now == right && now.keys.count == 5)
        #expect(now["perplexity_full"]?.prefix(2) != first["perplexity_full"]?[...])
    }

    /// The final checkpoint replaced under the same name changes the final
    /// drop sets: every checkpoint's values without them are computed again.
    @Test func finalCheckpointReplacedUnderItsNameRenewsEveryFinalSetPerplexity() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100, model: "llama-bf16")
        let final = try series.add(step: 200)
        let output = scratch.path("out")
        try #require(try trace(series.directory, output, eval: FixtureFiles.calibrationText).status == 0)
        let first = try perplexities(output)
        try series.rotateLayers(of: final, layers: 5)
        let run = try trace(series.directory, output, eval: FixtureFiles.calibrationText)
        try #require(run.status == 0, "\(run.stderr)")

        let fresh = scratch.path("fresh")
        try #require(try trace(series.directory, fresh, eval: FixtureFiles.calibrationText).status == 0)
        let (now, right) = (try perplexities(output), try perplexities(fresh))
        #expect(now == right)
        #expect(now["perplexity_full"]?[0] == first["perplexity_full"]?[0], "checkpoint-100's own values are kept")
    }
}

import Analysis
import DroptraceSupport
import Foundation
import ScoreStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `droptrace slurm task` and `slurm finalize` end to end through the
/// executable: sharded stores equal one-machine runs, tasks are idempotent
/// and leave nothing when interrupted, finalize names what it cannot merge.
@Suite struct SlurmStepsTests {
    /// A series with checkpoints at steps 10 (float32) and 20 (bfloat16) and
    /// a pipeline file over it writing to `out`.
    struct Series {
        let scratch: ScratchDirectory
        let builder: SeriesBuilder
        let pipeline: URL
        var output: URL { scratch.path("out") }
        var store: URL { output.appendingPathComponent("scores.h5") }
        func checkpoint(_ step: Int) -> URL { builder.directory.appendingPathComponent("checkpoint-\(step)") }
        func partial(_ step: Int, _ shard: Int, of count: Int) -> URL {
            output.appendingPathComponent("partials/checkpoint-\(step)/shard-\(shard)-of-\(count).h5")
        }

        init(steps: [(Int, String)] = [(10, "llama-f32"), (20, "llama-bf16")], calibration: String? = nil) throws {
            scratch = try ScratchDirectory()
            builder = try SeriesBuilder(in: scratch)
            for (step, model) in steps { try builder.add(step: step, model: model) }
            _ = try scratch.write(
                calibration ?? (try String(contentsOf: FixtureFiles.calibrationJSONL, encoding: .utf8)), to: "calib.jsonl")
            pipeline = try Self.pipeline(in: scratch, output: "out")
        }

        static func pipeline(in scratch: ScratchDirectory, output: String, name: String = "pipeline.yaml", extra: String = "") throws -> URL {
            try scratch.write("series: series\ncalibration: calib.jsonl\ndrop_k: [1, 2]\noutput: \(output)\n\(extra)", to: name)
        }

        func task(_ step: Int, _ shard: Int, of count: Int, pipeline: URL? = nil) throws -> DroptraceCommand.Result {
            try DroptraceCommand.run([
                "slurm", "task", (pipeline ?? self.pipeline).path, "--checkpoint", checkpoint(step).path,
                "--shard", "\(shard)", "--shards", "\(count)", "--threads", "1",
            ])
        }

        func finalize() throws -> DroptraceCommand.Result {
            try DroptraceCommand.run(["slurm", "finalize", pipeline.path, "--threads", "1"])
        }

        func run(_ pipeline: URL? = nil) throws -> DroptraceCommand.Result {
            try DroptraceCommand.run(["run", (pipeline ?? self.pipeline).path, "--threads", "1"])
        }

        /// Every task of every checkpoint in `steps` with `count` shards, each required to succeed.
        func runTasks(_ steps: [Int], shards count: Int) throws {
            for step in steps {
                for shard in 0..<count {
                    let result = try task(step, shard, of: count)
                    try #require(result.status == 0, "\(result.stderr)")
                }
            }
        }
    }

    /// Same rows, metadata and verdict; scores within 1e-9 relative of each
    /// other (float32 scores: within one rounding). Fingerprints are equal
    /// only for stores of the same series (`sameFiles`): copies differ in mtime and directory.
    static func expectSameStore(
        _ a: URL, _ b: URL, sameFiles: Bool = true, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let (x, y) = (try ScoreFile.read(from: a), try ScoreFile.read(from: b))
        var (m, n) = (x.metadata, y.metadata)
        // Copies of one series in other directories: all but where they were traced from.
        if !sameFiles { (m.seriesDirectory, n.seriesDirectory) = (nil, nil) }
        #expect(m == n, sourceLocation: sourceLocation)
        #expect(x.rows.map(\.name) == y.rows.map(\.name), sourceLocation: sourceLocation)
        for (p, q) in zip(x.rows, y.rows) {
            #expect(p.step == q.step && p.tokens == q.tokens, sourceLocation: sourceLocation)
            #expect(!sameFiles || p.fingerprint == q.fingerprint, sourceLocation: sourceLocation)
            func floats(_ row: CheckpointRow) -> [Double] {
                (row.attention + row.mlp + row.block + row.blockGap.flatMap { $0 }).map(Double.init)
            }
            #expect(SequenceSumsTests.close(floats(p), floats(q), relative: 1.2e-7), "\(p.name)", sourceLocation: sourceLocation)
            let (s, t) = (try #require(p.sums), try #require(q.sums))
            #expect(SequenceSumsTests.close(s, t), "\(p.name): sums", sourceLocation: sourceLocation)
        }
        func analysis(_ url: URL) throws -> SeriesAnalysis {
            let file = try HDF5File.open(at: url)
            defer { try? file.close() }
            return try SeriesAnalysis.read(from: file)
        }
        #expect(try analysis(a).verdict == analysis(b).verdict, sourceLocation: sourceLocation)
    }

    @Test(arguments: [1, 2, 3])
    func shardedStoreEqualsOneMachineRun(shards: Int) throws {
        let series = try Series()
        let local = try Series.pipeline(in: series.scratch, output: "local", name: "local.yaml")
        let run = try series.run(local)
        try #require(run.status == 0, "\(run.stderr)")

        try series.runTasks([10, 20], shards: shards)
        #expect(FileManager.default.fileExists(atPath: series.partial(20, shards - 1, of: shards).path))
        let finalize = try series.finalize()
        try #require(finalize.status == 0, "\(finalize.stderr)")
        try Self.expectSameStore(series.store, series.scratch.path("local/scores.h5"))
        #expect(FileManager.default.fileExists(atPath: series.output.appendingPathComponent("report.md").path))
        #expect(!FileManager.default.fileExists(atPath: series.output.appendingPathComponent("partials/checkpoint-10").path))
        #expect(!FileManager.default.fileExists(atPath: series.output.appendingPathComponent("partials/checkpoint-20").path))
    }

    @Test func taskIsIdempotent() throws {
        let series = try Series()
        var result = try series.task(10, 1, of: 2)
        try #require(result.status == 0, "\(result.stderr)")
        let partial = series.partial(10, 1, of: 2)
        let before = try FileManager.default.attributesOfItem(atPath: partial.path)
        let written = try ScoreFile.readPartial(from: partial)
        #expect(written.metadata.shard == (try CalibrationShard(index: 1, count: 2)))
        #expect(written.rows.count == 1 && written.rows[0].sums?.sequenceCount == 2)

        result = try series.task(10, 1, of: 2)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("done already"))
        let after = try FileManager.default.attributesOfItem(atPath: partial.path)
        #expect(before[.systemFileNumber] as? Int == after[.systemFileNumber] as? Int, "the partial was not rewritten")

        // Once the checkpoint is stored, its tasks have nothing to do.
        try series.runTasks([10, 20], shards: 2)
        try #require(try series.finalize().status == 0)
        result = try series.task(10, 0, of: 2)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("in the store already"))
        #expect(!FileManager.default.fileExists(atPath: series.partial(10, 0, of: 2).path))
    }

    @Test func badShardNumbersAreInvalidUsage() throws {
        let series = try Series()
        for (shard, count) in [(2, 2), (-1, 2), (0, 0)] {
            let result = try series.task(10, shard, of: count)
            #expect(result.status == 64, "\(shard) of \(count): \(result.stderr)")
        }
        // More shards than the calibration's 4 windows.
        let result = try series.task(10, 0, of: 5)
        #expect(result.status == 1)
        #expect(result.stderr.contains("calib.jsonl") && result.stderr.contains("fewer than the 5 shards"), "\(result.stderr)")
    }

    /// A checkpoint that is not the pipeline's: its partial was written,
    /// never merged nor mentioned by finalize, and shown by `slurm status`
    /// as waiting for finalize, for good.
    @Test func aCheckpointOutsideThePipelineIsRefused() throws {
        let series = try Series()
        try FileManager.default.createDirectory(at: series.scratch.path("elsewhere"), withIntermediateDirectories: true)
        let foreign = try series.scratch.copyOfModel("llama-f32", as: "elsewhere/checkpoint-10")
        let result = try DroptraceCommand.run([
            "slurm", "task", series.pipeline.path, "--checkpoint", foreign.path, "--shard", "0", "--shards", "1", "--threads", "1",
        ])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(foreign.path): is not a checkpoint of the series "), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: series.output.appendingPathComponent("partials").path))
        // The series' own, through another spelling of its path, is one.
        let spelled = series.builder.directory.appendingPathComponent("./checkpoint-10")
        let own = try DroptraceCommand.run([
            "slurm", "task", series.pipeline.path, "--checkpoint", spelled.path, "--shard", "0", "--shards", "1", "--threads", "1",
        ])
        #expect(own.status == 0, "\(own.stderr)")
        // An entry of the series that links to a checkpoint elsewhere is the series' own.
        let linked = series.builder.directory.appendingPathComponent("checkpoint-30")
        try FileManager.default.createSymbolicLink(at: linked, withDestinationURL: foreign)
        let viaLink = try DroptraceCommand.run([
            "slurm", "task", series.pipeline.path, "--checkpoint", linked.path, "--shard", "0", "--shards", "1", "--threads", "1",
        ])
        #expect(viaLink.status == 0, "\(viaLink.stderr)")
    }

    /// SIGTERM or SIGUSR1 while scoring: exit 75, no partial, no temporary file.
    @Test(arguments: [SIGTERM, SIGUSR1])
    func interruptedTaskLeavesNoPartial(signal number: Int32) throws {
        // Enough windows that scoring outlasts the time to deliver the signal.
        let lines = (0..<16).map { sequence in
            "{\"input_ids\": [\((0..<255).map { String(($0 * 7 + sequence) % 500) }.joined(separator: ", "))]}"
        }
        let series = try Series(steps: [(10, "llama-f32")], calibration: lines.joined(separator: "\n") + "\n")
        var interrupted = false
        for _ in 0..<3 where !interrupted {
            let process = Process()
            process.executableURL = DroptraceCommand.executable
            process.arguments = [
                "slurm", "task", series.pipeline.path, "--checkpoint", series.checkpoint(10).path,
                "--shard", "0", "--shards", "1", "--threads", "1",
            ]
            let err = Pipe()
            process.standardError = err
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            var stderr = Data()
            while !String(decoding: stderr, as: UTF8.self).contains("calibration windows") {
                let chunk = err.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                stderr.append(chunk)
            }
            kill(process.processIdentifier, number)
            stderr.append(err.fileHandleForReading.readDataToEndOfFile())
            process.waitUntilExit()
            let partial = series.partial(10, 0, of: 1)
            let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: partial.deletingLastPathComponent().path)) ?? []
            if process.terminationStatus == 75 {
                interrupted = true
                #expect(leftovers.isEmpty, "\(leftovers)")
            } else {
                // Finished before the signal came: then the partial is whole.
                #expect(process.terminationStatus == 0, "\(String(decoding: stderr, as: UTF8.self))")
                #expect(throws: Never.self) { try ScoreFile.readPartial(from: partial) }
                #expect(leftovers == [partial.lastPathComponent])
                try FileManager.default.removeItem(at: partial)
            }
        }
        #expect(interrupted, "the task always finished before the signal")
        // A rerun (the requeued task) starts over and completes.
        let rerun = try series.task(10, 0, of: 1)
        #expect(rerun.status == 0, "\(rerun.stderr)")
    }

    @Test func finalizeNamesMissingShardsAndStoresTheOthers() throws {
        let series = try Series()
        try series.runTasks([10], shards: 2)
        try #require(try series.task(20, 0, of: 2).status == 0)

        var result = try series.finalize()
        #expect(result.status == 1)
        let errors = result.stderr.split(separator: "\n").filter { $0.contains("error") }
        #expect(errors.count == 1, "\(result.stderr)")
        #expect(errors.first?.contains(series.checkpoint(20).path) == true && errors.first?.contains("shards 1 of 2") == true,
                "\(result.stderr)")
        #expect(try ScoreFile.read(from: series.store).rows.map(\.name) == ["checkpoint-10"])
        #expect(!FileManager.default.fileExists(atPath: series.partial(10, 0, of: 2).path), "merged partials are removed")
        #expect(FileManager.default.fileExists(atPath: series.partial(20, 0, of: 2).path), "unmerged partials stay")

        try #require(try series.task(20, 1, of: 2).status == 0)
        result = try series.finalize()
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.read(from: series.store).rows.map(\.name) == ["checkpoint-10", "checkpoint-20"])
    }

    /// A store begun by `run` is continued by tasks and finalize, and the other way round.
    @Test func runAndFinalizeContinueEachOther() throws {
        // run, then finalize.
        let first = try Series(steps: [(10, "llama-f32")])
        try #require(try first.run().status == 0)
        try first.builder.add(step: 20, model: "llama-bf16")
        try first.runTasks([20], shards: 2)
        var result = try first.finalize()
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("1 checkpoints already scored"), "\(result.stderr)")

        // finalize, then run.
        let second = try Series(steps: [(10, "llama-f32")])
        try second.runTasks([10], shards: 3)
        try #require(try second.finalize().status == 0)
        try second.builder.add(step: 20, model: "llama-bf16")
        result = try second.run()
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("1 checkpoints already scored"), "\(result.stderr)")

        // Both equal one run over the whole series.
        let whole = try Series()
        try #require(try whole.run().status == 0)
        try Self.expectSameStore(first.store, whole.store, sameFiles: false)
        try Self.expectSameStore(second.store, whole.store, sameFiles: false)
    }

    @Test func hostilePartialsAreRefusedWithOneLine() throws {
        let series = try Series()
        try #require(try series.run().status == 0)  // a store of both checkpoints
        try series.builder.add(step: 30, model: "llama-f32")
        try series.runTasks([30], shards: 2)
        let partial = series.partial(30, 0, of: 2)
        let original = try Data(contentsOf: partial)
        let good = try ScoreFile.readPartial(from: partial)

        var otherTokens = good
        otherTokens.metadata.calibrationSHA256 = String(repeating: "0", count: 64)
        var otherModel = good
        otherModel.metadata.modelType = "gpt2"
        var otherFiles = good
        otherFiles.rows[0].fingerprint = #"{"model.safetensors":{"mtime":"1.000000000","size":1}}"#
        var otherShard = good
        otherShard.metadata.shard = try CalibrationShard(index: 1, count: 2)
        let cases: [(String, (URL) throws -> Void)] = [
            ("not", { try Data("not HDF5 at all".utf8).write(to: $0) }),
            ("truncated", { try original.prefix(original.count / 2).write(to: $0) }),
            ("other calibration tokens", { try otherTokens.write(to: $0) }),
            ("gpt2", { try otherModel.write(to: $0) }),
            ("other files", { try otherFiles.write(to: $0) }),
            ("shard 1 of 2", { try otherShard.write(to: $0) }),
        ]
        let storeBefore = try ScoreFile.read(from: series.store)
        for (word, damage) in cases {
            try damage(partial)
            let result = try series.finalize()
            #expect(result.status == 1, "\(word): \(result.stderr)")
            let errors = result.stderr.split(separator: "\n").filter { $0.contains("error") }
            #expect(errors.count == 1, "\(word): \(result.stderr)")
            #expect(errors.first?.contains(partial.path) == true, "\(word): \(result.stderr)")
            if word != "not" && word != "truncated" {
                #expect(errors.first?.contains(word) == true, "\(word): \(result.stderr)")
            }
            #expect(try ScoreFile.read(from: series.store).rows == storeBefore.rows, "\(word): the store keeps its rows")
        }
        // The task replaces a partial that does not belong, and finalize then merges it.
        let rerun = try series.task(30, 0, of: 2)
        try #require(rerun.status == 0, "\(rerun.stderr)")
        #expect(rerun.stderr.contains("scoring it again"))
        let result = try series.finalize()
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.read(from: series.store).rows.map(\.name) == ["checkpoint-10", "checkpoint-20", "checkpoint-30"])
    }
}

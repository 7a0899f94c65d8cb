import Cluster
import Foundation
import ScoreStore
import Testing

/// Whole Slurm runs on the one-node cluster of scripts/slurm-cluster.sh:
/// array tasks score calibration shards, the finalize job merges them, and
/// the store equals a local `droptrace run` of the same pipeline.
@Suite(.serialized) struct SlurmRunTests {
    func write(_ scratch: ScratchDirectory, output: String) throws -> URL {
        try scratch.write("""
            title: Slurm run
            series: series
            calibration: \(FixtureFiles.calibrationJSONL.path)
            output: \(output)
            slurm:
              shards: 2
            """, to: "\(output).yaml")
    }

    /// Checkpoints 10 (llama-f32) and 20 (llama-bf16) in `scratch`'s series,
    /// submitted with two shards each but held, so a test can act on the
    /// array tasks before they may run, into `scratch.path("cluster")`, whose
    /// jobs the caller cancels when done.
    struct HeldSubmission {
        let series: SeriesBuilder
        let pipeline: URL
        let submission: SubmissionRecord.Submission
        let array: SubmissionRecord.ArrayJob
        let finalizeJob: Int
    }

    func submitHeld(_ scratch: ScratchDirectory) throws -> HeldSubmission {
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        try series.add(step: 20, model: "llama-bf16")
        let pipeline = try write(scratch, output: "cluster")
        let result = try DroptraceCommand.run(["slurm", "submit", pipeline.path, "--sbatch-arg=--hold"])
        try #require(result.status == 0, "\(result.stderr)")
        let layout = ClusterLayout(outDir: scratch.path("cluster"))
        let submission = try #require(try SubmissionRecord.read(layout).submissions.last)
        return HeldSubmission(
            series: series, pipeline: pipeline, submission: submission,
            array: try #require(submission.arrays.first), finalizeJob: try #require(submission.finalizeJob))
    }

    /// Rows of two stores agree: same names, steps and fingerprints, scores within 1e-6.
    func expectSameStore(_ slurm: URL, _ local: URL, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let a = try ScoreFile.read(from: slurm.appendingPathComponent("scores.h5"))
        let b = try ScoreFile.read(from: local.appendingPathComponent("scores.h5"))
        #expect(a.rows.map(\.name) == b.rows.map(\.name), sourceLocation: sourceLocation)
        #expect(a.rows.map(\.fingerprint) == b.rows.map(\.fingerprint), sourceLocation: sourceLocation)
        #expect(a.metadata == b.metadata, sourceLocation: sourceLocation)
        for (x, y) in zip(a.rows, b.rows) {
            for (u, v) in [(x.attention, y.attention), (x.mlp, y.mlp), (x.block, y.block), (x.blockGap.flatMap { $0 }, y.blockGap.flatMap { $0 })] {
                #expect(u.count == v.count && zip(u, v).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) || abs($0 - $1) <= 1e-6 }, "\(x.name)", sourceLocation: sourceLocation)
            }
        }
        let verdict = { (url: URL) in
            try String(contentsOf: url.appendingPathComponent("report.md"), encoding: .utf8)
                .split(separator: "\n").first { $0.lowercased().contains("verdict") }
        }
        #expect(try verdict(slurm) == verdict(local), sourceLocation: sourceLocation)
    }

    @Test func shardedRunWithARequeuedTaskEqualsALocalRunAndANewCheckpointIsTheOnlyNewWork() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        // Submitted held, so a task can be requeued before the finalize job may start.
        let out = scratch.path("cluster")
        defer { SlurmCluster.cancelAll(out) }
        let held = try submitHeld(scratch)
        let (series, pipeline, submission, array, finalize) =
            (held.series, held.pipeline, held.submission, held.array, held.finalizeJob)
        let localPipeline = try write(scratch, output: "local")
        var result: DroptraceCommand.Result
        #expect(array.units.count == 4)
        _ = try SlurmCluster.client.check("scontrol", ["release", String(array.jobID)])
        // Task 1 runs (or has even finished): requeue it; it starts over and must end the same.
        #expect(try SlurmCluster.waitUntil(seconds: 60) {
            try !SlurmCluster.queue(out).contains { $0.jobID == array.jobID && $0.arrayTaskID == 1 && $0.state == "PENDING" }
        })
        _ = try SlurmCluster.client.check("scontrol", ["requeue", "\(array.jobID)_1"])
        // A requeued job waits a while before it may start again (Slurm's credential lifetime);
        // the test has no time for that. But not less than 2 s: slurmd refuses to launch a job
        // whose credential is not newer, in whole seconds, than its kill ("already killed, do
        // not launch"), and the task would fail without running. Back to PENDING, the task is
        // killed already. (Set before that, the requeue would override the start time.)
        #expect(try SlurmCluster.waitUntil(seconds: 20) {
            try SlurmCluster.queue(out).contains { $0.jobID == array.jobID && $0.arrayTaskID == 1 && $0.state == "PENDING" }
                && (try? SlurmCluster.client.check("scontrol", ["update", "JobId=\(array.jobID)_1", "StartTime=now+2"])) != nil
        })
        _ = try SlurmCluster.client.check("scontrol", ["release", String(finalize)])

        // A second submit while the first runs submits nothing and waits for its finalize job.
        result = try DroptraceCommand.run(["slurm", "submit", pipeline.path, "--wait"])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("nothing new to submit (finalize job \(finalize) is queued)"), "\(result.stdout)")
        #expect(try SubmissionRecord.read(ClusterLayout(outDir: out)).submissions.count == 1)
        let log = try String(contentsOf: out.appendingPathComponent("slurm/\(submission.id)/logs/array-0-\(array.jobID)_1.out"), encoding: .utf8)
        #expect(log.contains("restart 1"), "the requeued task ran again: \(log)")

        result = try DroptraceCommand.run(["run", localPipeline.path, "--threads", "1"])
        try #require(result.status == 0, "\(result.stderr)")
        try expectSameStore(out, scratch.path("local"))
        #expect(!ClusterLayout(outDir: out).hasUnmergedPartials, "finalize removes the partials it merged")

        var status = try DroptraceCommand.run(["slurm", "status", out.path])
        #expect(status.status == 0 && status.stdout.contains("shard tasks: 4 stored"), "\(status.stdout)")

        // A checkpoint written since: the only new work, and again the same as a local run.
        try series.add(step: 30)
        result = try DroptraceCommand.run(["slurm", "submit", pipeline.path, "--wait"])
        try #require(result.status == 0, "\(result.stderr)")
        let second = try #require(try SubmissionRecord.read(ClusterLayout(outDir: out)).submissions.last)
        #expect(second.arrays.flatMap(\.units).map(\.checkpoint) == ["checkpoint-30", "checkpoint-30"])
        result = try DroptraceCommand.run(["run", localPipeline.path, "--threads", "1"])
        try #require(result.status == 0, "\(result.stderr)")
        try expectSameStore(out, scratch.path("local"))
        status = try DroptraceCommand.run(["slurm", "status", out.path])
        #expect(status.stdout.contains("shard tasks: 6 stored"), "\(status.stdout)")
    }

    /// A finalize job cancelled (or lost) while its shards are queued is
    /// replaced by the next submit, which found "nothing new" and left the
    /// shards to no one; a partial finalize would refuse (damaged, or of
    /// files re-saved since) is no shard done: status says so and a submit
    /// scores it again, where both counted it done for good.
    @Test func aLostFinalizeIsReplacedAndAStalePartialScoredAgain() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        let out = scratch.path("cluster")
        defer { SlurmCluster.cancelAll(out) }
        let held = try submitHeld(scratch)
        _ = try SlurmCluster.client.check("scancel", [String(held.finalizeJob)])
        // Not "ENDED", as if it had run: it never wrote its exit code.
        let cancelled = try DroptraceCommand.run(["slurm", "status", out.path])
        #expect(cancelled.stdout.contains("finalize job \(held.finalizeJob): ENDED without an exit code (")
                    && !cancelled.stdout.contains("ENDED  log"), "\(cancelled.stdout)")
        var result = try DroptraceCommand.run(["slurm", "submit", held.pipeline.path, "--sbatch-arg=--hold"])
        try #require(result.status == 0, "\(result.stderr)")
        let replacement = try #require(try SubmissionRecord.read(ClusterLayout(outDir: out)).submissions.last)
        #expect(replacement.arrays.isEmpty && replacement.finalizeJob != nil && replacement.finalizeJob != held.finalizeJob)
        // checkpoint-10 saved again after the submit (a new modification time): its tasks score it as it is then.
        let weights = held.series.directory.appendingPathComponent("checkpoint-10/model.safetensors")
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -3600)], ofItemAtPath: weights.path)
        // The shards run; the new finalize is kept back, so their partials stay.
        _ = try SlurmCluster.client.check("scontrol", ["release", String(held.array.jobID)])
        #expect(try SlurmCluster.waitUntil(seconds: 120) { try SlurmCluster.queue(out).count == 1 })
        let layout = ClusterLayout(outDir: out)
        let damaged = layout.partial(checkpoint: "checkpoint-20", shard: 1, shards: 2)
        let bytes = try Data(contentsOf: damaged)
        try bytes.prefix(3000).write(to: damaged)
        let status = try DroptraceCommand.run(["slurm", "status", out.path])
        #expect(status.stdout.contains("3 partial done") && status.stdout.contains("1 failed"), "\(status.stdout)")
        #expect(status.stdout.contains("its partial"), "\(status.stdout)")
        _ = try SlurmCluster.client.check("scancel", [String(replacement.finalizeJob!)])
        result = try DroptraceCommand.run(["slurm", "submit", held.pipeline.path, "--wait"])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("\(damaged.path): ") && result.stderr.contains("its shard is submitted again"), "\(result.stderr)")
        let resubmitted = try #require(try SubmissionRecord.read(layout).submissions.last)
        #expect(resubmitted.arrays.flatMap(\.units) == [held.array.units[3]])
        #expect(try ScoreFile.read(from: out.appendingPathComponent("scores.h5")).rows.map(\.name) == ["checkpoint-10", "checkpoint-20"])
        // Every shard is stored, checkpoint-10's too though its row holds other files than it was submitted with.
        let final = try DroptraceCommand.run(["slurm", "status", out.path])
        #expect(final.stdout.contains("shard tasks: 4 stored") && !final.stdout.contains("failed"), "\(final.stdout)")
        // A checkpoint saved since the last submit is the next submit's, not a failure of this finalize.
        try held.series.add(step: 30)
        let finalize = try DroptraceCommand.run(["slurm", "finalize", held.pipeline.path])
        #expect(finalize.status == 0 && finalize.stderr.contains("leaving checkpoint-30 for later"), "\(finalize.stderr)")
        #expect(try ScoreFile.read(from: out.appendingPathComponent("scores.h5")).rows.map(\.name) == ["checkpoint-10", "checkpoint-20"])
    }

    @Test func cancelledTaskFailsFinalizeKeepsTheRestAndAResubmitCompletesIt() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        let out = scratch.path("cluster")
        defer { SlurmCluster.cancelAll(out) }
        let held = try submitHeld(scratch)
        let (pipeline, submission, array) = (held.pipeline, held.submission, held.array)
        // checkpoint-20's second shard is cancelled before it runs.
        _ = try SlurmCluster.client.check("scancel", ["\(array.jobID)_3"])
        _ = try SlurmCluster.client.check("scontrol", ["release", String(array.jobID)])
        _ = try SlurmCluster.client.check("scontrol", ["release", String(held.finalizeJob)])
        // The finalize job runs after the three others and fails, naming the checkpoint whose shard is missing.
        #expect(try SlurmCluster.waitUntil(seconds: 120) { try SlurmCluster.queue(out).isEmpty })
        let exit = try String(contentsOf: out.appendingPathComponent("slurm/\(submission.id)/finalize.exit"), encoding: .utf8)
        #expect(exit.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        let finalizeLog = try String(
            contentsOf: out.appendingPathComponent("slurm/\(submission.id)/logs/finalize-\(submission.finalizeJob!).out"), encoding: .utf8)
        #expect(finalizeLog.contains("checkpoint-20"), "\(finalizeLog)")
        #expect(try ScoreFile.read(from: out.appendingPathComponent("scores.h5")).rows.map(\.name) == ["checkpoint-10"])
        let status = try DroptraceCommand.run(["slurm", "status", out.path])
        #expect(status.stdout.contains("1 partial done, 1 failed"), "\(status.stdout)")

        // The resubmit sends only the cancelled shard.
        let result = try DroptraceCommand.run(["slurm", "submit", pipeline.path, "--wait"])
        try #require(result.status == 0, "\(result.stderr)")
        let resubmitted = try #require(try SubmissionRecord.read(ClusterLayout(outDir: out)).submissions.last)
        #expect(resubmitted.arrays.flatMap(\.units) == [array.units[3]])
        #expect(try ScoreFile.read(from: out.appendingPathComponent("scores.h5")).rows.map(\.name) == ["checkpoint-10", "checkpoint-20"])
    }
}

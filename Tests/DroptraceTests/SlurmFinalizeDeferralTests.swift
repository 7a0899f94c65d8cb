import Cluster
import Foundation
import Pipeline
import ScoreStore
import Testing

/// A finalize job that starts while shard tasks it should follow are still
/// queued defers to a new finalize job instead of merging part of the
/// submission (`FinalizeDeferral`), on the one-node cluster of
/// scripts/slurm-cluster.sh. The submissions are held (`--hold`), so nothing
/// runs before the test releases it.
@Suite(.serialized) struct SlurmFinalizeDeferralTests {
    let slurmRun = SlurmRunTests()

    func record(_ out: URL) throws -> SubmissionRecord { try SubmissionRecord.read(ClusterLayout(outDir: out)) }

    func release(_ jobs: String...) throws {
        _ = try SlurmCluster.client.check("scontrol", ["release"] + jobs)
    }

    @Test func finalizeStartedWhileAShardIsQueuedDefersAndEndsWithTheFullStore() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        let out = scratch.path("cluster")
        defer { SlurmCluster.cancelAll(out) }
        let held = try slurmRun.submitHeld(scratch)
        let (array, first) = (held.array, held.finalizeJob)
        let localPipeline = try slurmRun.write(scratch, output: "local")
        #expect(held.submission.finalizeOptions?.contains("--hold") == true, "the options of the next finalize job are recorded")

        // Task 1 (checkpoint-10's second shard) stays held; the finalize job's dependency is
        // lifted as if Slurm had found it fulfilled before the task was requeued.
        try release("\(array.jobID)_0", "\(array.jobID)_2", "\(array.jobID)_3")
        _ = try SlurmCluster.client.check("scontrol", ["update", "JobId=\(first)", "Dependency="])
        try release(String(first))
        #expect(try SlurmCluster.waitUntil(seconds: 120) { try record(out).submissions[0].finalizeJob != first })

        // It merged nothing, handed over to a new finalize job after the array, and left no exit code.
        let submission = try record(out).submissions[0]
        let second = try #require(submission.finalizeJob)
        #expect(submission.deferredFinalizeJobs == [first])
        let directory = out.appendingPathComponent("slurm/\(submission.id)")
        #expect(try SlurmCluster.waitUntil(seconds: 60) { try !SlurmCluster.queue(out).contains { $0.jobID == first } })
        let log = try String(contentsOf: directory.appendingPathComponent("logs/finalize-\(first).out"), encoding: .utf8)
        #expect(log.contains("job(s) \(array.jobID) still queued") && log.contains("finalize job \(second) runs after them"), "\(log)")
        #expect(!log.contains("error"), "\(log)")
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("scores.h5").path))
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("finalize.exit").path))
        let script = try String(contentsOf: directory.appendingPathComponent("finalize.sbatch"), encoding: .utf8)
        #expect(script.contains("-eq \(FinalizeDeferral.exitCode) ]; then exit 0"))

        var status = try DroptraceCommand.run(["slurm", "status", out.path])
        try #require(status.status == 0, "\(status.stderr)")
        #expect(status.stdout.contains("finalize job \(first): DEFERRED to finalize job \(second)"), "\(status.stdout)")
        #expect(status.stdout.contains("finalize job \(second): PENDING"), "\(status.stdout)")
        // A cron submit meanwhile knows both finalize jobs and submits nothing.
        let again = try DroptraceCommand.run(["slurm", "submit", held.pipeline.path])
        try #require(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.contains("nothing new to submit (finalize job \(second) is queued)"), "\(again.stdout)")

        // The held task runs, then the new finalize job (held like the first: the same sbatch
        // options). Waiting for the first finalize job follows the hand-over.
        try release("\(array.jobID)_1", String(second))
        let submit = try SlurmSubmit(pipeline: held.pipeline, overrides: PipelineSlurmSection(), executable: DroptraceCommand.executable)
        let waited = try submit.waitForFinalize(first, poll: 0.5)
        #expect(waited.job == second && waited.exitCode == 0)
        let exit = try String(contentsOf: directory.appendingPathComponent("finalize.exit"), encoding: .utf8)
        #expect(exit.trimmingCharacters(in: .whitespacesAndNewlines) == "0")

        let result = try DroptraceCommand.run(["run", localPipeline.path, "--threads", "1"])
        try #require(result.status == 0, "\(result.stderr)")
        try slurmRun.expectSameStore(out, scratch.path("local"))
        status = try DroptraceCommand.run(["slurm", "status", out.path])
        #expect(status.stdout.contains("shard tasks: 4 stored"), "\(status.stdout)")
    }

    /// `droptrace slurm finalize` run as the recorded finalize job (SLURM_JOB_ID)
    /// while the submission's tasks are queued, without Slurm starting it.
    func finalizeAsJob(_ job: Int, _ pipeline: URL) throws -> DroptraceCommand.Result {
        try DroptraceCommand.run(["slurm", "finalize", pipeline.path], environment: ["SLURM_JOB_ID": String(job)])
    }

    @Test func deferralsAreBoundedAndEndInOneLine() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        let out = scratch.path("cluster")
        defer { SlurmCluster.cancelAll(out) }
        let held = try slurmRun.submitHeld(scratch)
        let layout = ClusterLayout(outDir: out)

        // As the recorded finalize job: defers with exit code 3, and records the next job.
        var result = try finalizeAsJob(held.finalizeJob, held.pipeline)
        #expect(result.status == FinalizeDeferral.exitCode, "\(result.stderr)")
        var submission = try record(out).submissions[0]
        #expect(submission.deferredFinalizeJobs == [held.finalizeJob])
        let second = try #require(submission.finalizeJob)
        #expect(try SlurmCluster.queue(out).contains { $0.jobID == second && $0.arrayTaskID == nil })
        // Run by anyone else (no such job in the record), it merges what is finished, as always.
        result = try finalizeAsJob(held.finalizeJob, held.pipeline)
        #expect(result.status == 1 && result.stderr.contains("checkpoint-10"), "\(result.stderr)")
        #expect(try record(out).submissions[0] == submission, "the record is untouched")

        // After the limit, one line naming the record, and nothing merged or submitted.
        var updated = try record(out)
        // (The first finalize job, still queued here, must stay in the record.)
        submission.deferredFinalizeJobs = Array(1..<FinalizeDeferral.maxDeferrals) + [held.finalizeJob]
        updated.submissions[0] = submission
        let text = try JSONEncoder().encode(updated)
        try text.write(to: layout.record)
        func queue() throws -> [String] { try SlurmCluster.queue(out).map { "\($0.jobID)_\($0.arrayTaskID ?? -1)" }.sorted() }
        let queued = try queue()
        result = try finalizeAsJob(second, held.pipeline)
        #expect(result.status == 1, "\(result.stderr)")
        let errors = result.stderr.split(separator: "\n").filter { $0.contains("error:") }
        #expect(errors.count == 1 && errors[0].contains("\(layout.record.path): finalize job \(second)")
            && errors[0].contains("after deferring \(FinalizeDeferral.maxDeferrals) times"), "\(result.stderr)")
        #expect(try queue() == queued, "nothing submitted")
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("scores.h5").path))
    }

    /// Runs the shard tasks of `array` by hand, then cancels the array, as if Slurm had run them.
    func runByHand(_ array: SubmissionRecord.ArrayJob, _ pipeline: URL, out: URL) throws {
        for unit in array.units {
            let result = try DroptraceCommand.run([
                "slurm", "task", pipeline.path, "--checkpoint", unit.directory, "--shard", "\(unit.shard)",
                "--shards", "\(unit.shards)", "--threads", "1",
            ])
            try #require(result.status == 0, "\(result.stderr)")
        }
        try cancel(array.jobID, out: out)
    }

    /// Cancels job `job` and waits until it has left the queue.
    func cancel(_ job: Int, out: URL) throws {
        _ = try SlurmCluster.client.check("scancel", [String(job)])
        try #require(try SlurmCluster.waitUntil(seconds: 30) { try !SlurmCluster.queue(out).contains { $0.jobID == job } })
    }

    /// A cron job submits checkpoints while an earlier submission's finalize
    /// job has yet to run: that job merges its own and leaves the later
    /// submission's (still queued) to their finalize job, failing none.
    @Test func earlierFinalizeLeavesCheckpointsQueuedUnderALaterSubmission() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        let out = scratch.path("cluster")
        defer { SlurmCluster.cancelAll(out) }
        let held = try slurmRun.submitHeld(scratch)
        let submit = ["slurm", "submit", held.pipeline.path, "--sbatch-arg=--hold"]
        // The first array is cancelled before it runs; the next submit queues its checkpoints again.
        try cancel(held.array.jobID, out: out)
        var result = try DroptraceCommand.run(submit)
        try #require(result.status == 0, "\(result.stderr)")
        let second = try #require(try record(out).submissions.last)
        #expect(Set(second.arrays.flatMap(\.units).map(\.checkpoint)) == ["checkpoint-10", "checkpoint-20"])

        // The first finalize job: every checkpoint waits for the second submission; nothing fails.
        result = try finalizeAsJob(held.finalizeJob, held.pipeline)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("leaving checkpoint-10, checkpoint-20 for later: shard tasks of theirs are still queued"), "\(result.stderr)")
        #expect(!result.stderr.contains("error"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("scores.h5").path))
        try cancel(held.finalizeJob, out: out)

        // The second submission's tasks run; a checkpoint written meanwhile is submitted a third time.
        try runByHand(try #require(second.arrays.first), held.pipeline, out: out)
        try held.series.add(step: 30)
        result = try DroptraceCommand.run(submit)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try record(out).submissions.last?.arrays.flatMap(\.units).map(\.checkpoint) == ["checkpoint-30", "checkpoint-30"])

        // The second finalize job merges its checkpoints and leaves checkpoint-30 to the third.
        result = try finalizeAsJob(try #require(second.finalizeJob), held.pipeline)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("leaving checkpoint-30 for later: shard tasks of theirs are still queued"), "\(result.stderr)")
        #expect(result.stderr.contains("2 merged") && result.stderr.contains("1 left for later (queued, or not submitted yet)"), "\(result.stderr)")
        #expect(!result.stderr.contains("error"), "\(result.stderr)")
        #expect(try ScoreFile.read(from: out.appendingPathComponent("scores.h5")).rows.map(\.name) == ["checkpoint-10", "checkpoint-20"])
    }

    @Test func recordsOfEarlierVersionsStillRead() throws {
        // A record written before finalize jobs could defer: no finalizeOptions, no deferredFinalizeJobs.
        let scratch = try ScratchDirectory()
        let layout = ClusterLayout(outDir: scratch.path("out"))
        try FileManager.default.createDirectory(at: layout.slurmDirectory, withIntermediateDirectories: true)
        try Data("""
            {"version": 1, "submissions": [{"id": "20261130T000000Z", "submitted": "2026-11-30T00:00:00Z",
              "pipeline": "/p.yaml", "arrays": [], "finalizeJob": 7}]}
            """.utf8).write(to: layout.record)
        var record = try SubmissionRecord.read(layout)
        #expect(record.submissions[0].finalizeOptions == nil && record.submissions[0].deferredFinalizeJobs == nil)
        #expect(record.finalizeJobs == [7])
        record.submissions[0].deferredFinalizeJobs = [5, 6]
        #expect(record.finalizeJobs == [5, 6, 7])
        #expect(record.submission(ofFinalize: 5)?.finalizeJob == 7 && record.submission(ofFinalize: 8) == nil)
    }
}

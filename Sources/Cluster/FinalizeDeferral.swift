import DroptraceSupport
import Foundation
import Logging
import Pipeline

/// Keeps the finalize job of a submission from merging while shard tasks it
/// is meant to follow are still queued.
///
/// Slurm starts a finalize job once every array it depends on has ended
/// (`--dependency=afterany`), and a task requeued while it runs keeps that
/// dependency unfulfilled. But Slurm tests a dependency only until it is
/// fulfilled, never again: a task requeued after that (`scontrol requeue`
/// of a finished task), a dependency edited with `scontrol update`, or the
/// deferral of an earlier submission's finalize job (which the later one
/// depends on) lets a finalize job start while shards it should merge are
/// pending or running. Merging then would name those checkpoints as failed
/// and leave them out of the store. Instead the finalize job submits its
/// successor — the same script and sbatch options, with
/// `--dependency=afterany` on what is still queued — records it as the
/// submission's finalize job, and ends; `submit --wait` and `status` follow
/// the record.
///
/// A finalize job waits for the queued shard tasks of its own and earlier
/// submissions and for the finalize jobs of earlier submissions (so finalize
/// jobs still take the store's lock one after another); never for later
/// submissions, which have finalize jobs of their own, so deferrals cannot
/// wait on each other in a circle.
public struct FinalizeDeferral {
    /// Deferrals of one submission's finalize job before it fails instead.
    public static let maxDeferrals = 10
    /// `droptrace slurm finalize` exits with this when it deferred; the
    /// finalize script then ends the job successfully without leaving an
    /// exit code (its successor leaves one).
    public static let exitCode: Int32 = 3

    public enum Decision: Sendable, Equatable {
        /// Nothing it should wait for is queued: merge, leaving alone the
        /// checkpoints in `leaving`, whose shard tasks are queued under later
        /// submissions (their finalize jobs merge them).
        case proceed(leaving: Set<String> = [])
        /// Finalize job `successor` runs after the queued `jobs` instead.
        case deferred(successor: Int, after: [Int])
    }

    public let layout: ClusterLayout
    public var client = SlurmClient()
    /// Seconds to wait for a running `slurm submit` to release OUT_DIR/slurm's lock.
    public var lockWait: TimeInterval = 120

    public init(layout: ClusterLayout) {
        self.layout = layout
    }

    /// The `--dependency` option of a job that runs after `jobs` (job ids,
    /// or in a dry run's scripts the shell expansions that hold them).
    static func dependency(on jobs: [String]) -> String {
        "--dependency=afterany:" + jobs.joined(separator: ":")
    }

    /// Decides, for Slurm job `job` about to finalize, whether it merges now
    /// or defers. A job that is not a recorded finalize job (your own sbatch
    /// file, a shell) always merges. A check that cannot be made (squeue
    /// fails, the lock stays held, an older record) is a warning in `log`,
    /// and the job merges what is finished, as without this check.
    /// - Throws: `DroptraceError` naming the submission record when the job
    ///   has deferred `maxDeferrals` times already, or when its successor
    ///   cannot be submitted or recorded.
    public func decide(job: Int, log: Logger) throws -> Decision {
        // Read once without the lock: a job the record does not name leaves OUT_DIR/slurm alone.
        guard FileManager.default.fileExists(atPath: layout.record.path),
              (try? SubmissionRecord.read(layout))?.submissions.contains(where: { $0.finalizeJob == job }) == true
        else { return .proceed() }
        guard let lock = takeLock(log: log) else { return .proceed() }
        defer { withExtendedLifetime(lock) {} }

        let record: SubmissionRecord
        let queue: ClusterQueue
        do {
            record = try SubmissionRecord.read(layout)
            queue = try ClusterQueue(layout: layout, record: record, client: client)
        } catch let error as DroptraceError {
            log.warning("\(error.description); merging what is finished without knowing what is still queued")
            return .proceed()
        }
        guard let index = record.submissions.firstIndex(where: { $0.finalizeJob == job }) else { return .proceed() }
        let after = Self.queuedPredecessors(of: index, in: record, queue: queue)
        guard !after.isEmpty else { return .proceed(leaving: Set(queue.units.keys.map(\.checkpoint))) }

        var submission = record.submissions[index]
        let deferred = submission.deferredFinalizeJobs ?? []
        let jobs = after.map(String.init).joined(separator: ", ")
        guard deferred.count < Self.maxDeferrals else {
            throw DroptraceError(
                "finalize job \(job) of submission \(submission.id) found job(s) \(jobs) still queued after deferring \(deferred.count) times (requeued again and again?); wait for them to end, then run `droptrace slurm submit` again",
                path: layout.record.path)
        }
        guard let options = submission.finalizeOptions else {
            log.warning("job(s) \(jobs) are still queued, but submission \(submission.id) was recorded by an earlier droptrace, which kept no finalize options to defer with; merging what is finished")
            return .proceed()
        }
        let script = layout.slurmDirectory.appendingPathComponent(submission.id).appendingPathComponent("finalize.sbatch")
        // Before the user's own options, as `submit` orders them.
        let successor = try client.submit(script: script.path, options: [Self.dependency(on: after.map(String.init))] + options)
        submission.deferredFinalizeJobs = deferred + [job]
        submission.finalizeJob = successor
        var updated = record
        updated.submissions[index] = submission
        try updated.write(layout)
        return .deferred(successor: successor, after: after)
    }

    /// The queued jobs the finalize job of submission `index` must follow:
    /// the array jobs of queued shard tasks of that and earlier
    /// submissions, and earlier submissions' finalize jobs; sorted.
    static func queuedPredecessors(of index: Int, in record: SubmissionRecord, queue: ClusterQueue) -> [Int] {
        let arrays = Set(record.submissions[...index].flatMap { $0.arrays.map(\.jobID) })
        var jobs = Set(queue.units.values.map(\.job).filter(arrays.contains))
        jobs.formUnion(record.submissions[..<index].compactMap(\.finalizeJob).filter { queue.finalizeJobs[$0] != nil })
        return jobs.sorted()
    }

    /// OUT_DIR/slurm's lock, which `slurm submit` holds while it reads the
    /// queue and rewrites the record; nil (with a warning) when it stays
    /// held for `lockWait` seconds or cannot be taken.
    private func takeLock(log: Logger) -> RunLock? {
        let deadline = Date().addingTimeInterval(lockWait)
        while true {
            do {
                _ = try layout.openSlurmDirectory()
                return try RunLock(directory: layout.slurmDirectory)
            } catch is RunLock.Held where Date() < deadline {
                Thread.sleep(forTimeInterval: 1)
            } catch {
                log.warning("\(error); merging what is finished without knowing what is still queued")
                return nil
            }
        }
    }
}

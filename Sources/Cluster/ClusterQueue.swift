import DroptraceSupport
import Foundation

/// Which of an output directory's submitted units and finalize jobs are
/// still in Slurm's queue: the submission record read against `squeue`.
public struct ClusterQueue: Sendable {
    /// Each queued unit with its array job, task id and Slurm state.
    public var units: [WorkUnit: QueuedTask] = [:]
    /// Finalize jobs still queued, with their state.
    public var finalizeJobs: [Int: String] = [:]
    /// Every queued job of this directory (array jobs and finalize jobs).
    public var jobIDs: [Int] = []

    public struct QueuedTask: Sendable, Equatable {
        public var job: Int
        public var task: Int
        public var state: String
    }

    public init() {}

    /// Reads the queue for `layout`'s job name.
    /// - Throws: `DroptraceError` when squeue fails, or when a job of this
    ///   directory is queued that the record does not know (a record lost or
    ///   replaced): droptrace cannot tell what it runs, so it submits nothing.
    public init(layout: ClusterLayout, record: SubmissionRecord, client: SlurmClient) throws {
        let tasks = record.tasks
        let finalize = Set(record.finalizeJobs)
        var unknown: Set<Int> = []
        var jobs: Set<Int> = []
        for job in try client.queue(name: layout.jobName) {
            jobs.insert(job.jobID)
            if let task = job.arrayTaskID, let unit = tasks[SubmissionRecord.TaskKey(job: job.jobID, task: task)] {
                units[unit] = QueuedTask(job: job.jobID, task: task, state: job.state)
            } else if job.arrayTaskID == nil, finalize.contains(job.jobID) {
                finalizeJobs[job.jobID] = job.state
            } else {
                unknown.insert(job.jobID)
            }
        }
        if !unknown.isEmpty {
            throw DroptraceError(
                "Slurm job(s) \(unknown.sorted().map(String.init).joined(separator: ", ")) named \(layout.jobName) are queued for this directory but not in its submission record; wait for them to end or scancel them",
                path: layout.record.path)
        }
        jobIDs = jobs.sorted()
    }

    /// Whether any shard of `checkpoint` is queued (with any shard count).
    public func hasQueuedShard(of checkpoint: String) -> Bool {
        units.keys.contains { $0.checkpoint == checkpoint }
    }
}

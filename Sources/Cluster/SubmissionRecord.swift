import DroptraceSupport
import Foundation
import ScoreStore

/// What `droptrace slurm submit` submitted for an output directory
/// (OUT_DIR/slurm/submissions.json), rewritten atomically after every
/// sbatch, so a submit killed half-way still knows the jobs it made.
/// With the queue (`squeue`) it tells which units are queued; with the
/// partials and the store, which are done (`SlurmStatus`).
public struct SubmissionRecord: Codable, Sendable, Equatable {
    public var version = 1
    public var submissions: [Submission] = []

    public struct Submission: Codable, Sendable, Equatable {
        /// The directory under OUT_DIR/slurm holding its scripts and logs.
        public var id: String
        /// UTC, ISO 8601.
        public var submitted: String
        public var pipeline: String
        public var arrays: [ArrayJob] = []
        /// Its finalize job: the latest, when earlier ones deferred.
        public var finalizeJob: Int?
        /// The sbatch options of its finalize job, without the dependency, so
        /// a finalize job that defers can submit the next one alike (nil in
        /// records of earlier droptrace versions: such a job does not defer).
        public var finalizeOptions: [String]?
        /// Its finalize jobs that found shard tasks still queued and handed
        /// over to a later one (`FinalizeDeferral`), oldest first; nil when none.
        public var deferredFinalizeJobs: [Int]?
    }

    /// One array job: array task i runs `units[i]`.
    public struct ArrayJob: Codable, Sendable, Equatable {
        public var jobID: Int
        public var units: [WorkUnit]
    }

    /// The largest record read (a hundred thousand units is a few tens of MiB).
    static let maxBytes = 256 << 20

    public init() {}

    /// The record in `layout`, empty when there is none yet.
    /// - Throws: `DroptraceError` naming the file when it is not a record
    ///   (then nothing is submitted: droptrace would not know what is queued).
    public static func read(_ layout: ClusterLayout) throws -> SubmissionRecord {
        let path = layout.record.path
        guard FileManager.default.fileExists(atPath: path) else { return SubmissionRecord() }
        let data = try RegularFile.contents(path: path, limit: maxBytes)
        do {
            let record = try JSONDecoder().decode(SubmissionRecord.self, from: data)
            guard record.version == 1 else {
                throw DroptraceError("is a record of version \(record.version); this droptrace reads version 1", path: path)
            }
            if let problem = record.problem {
                throw DroptraceError(
                    "is not a droptrace submission record (\(problem)); move it away once no droptrace job of this directory is queued",
                    path: path)
            }
            return record
        } catch let error as DroptraceError {
            throw error
        } catch {
            throw DroptraceError(
                "is not a droptrace submission record (\(SystemError.oneLine("\(error)"))); move it away once no droptrace job of this directory is queued",
                path: path)
        }
    }

    /// What no submit records, nil when nothing: a submission directory
    /// that is not a plain name inside the Slurm directory, a job id that
    /// is not positive, a unit whose checkpoint is not a directory name,
    /// whose directory is not an absolute path on one line, or whose shard
    /// is no calibration shard.
    var problem: String? {
        func isPlainName(_ name: String) -> Bool {
            ScoreFileMetadata.isOneLine(name, atMost: 255) && !name.contains("/") && name != "." && name != ".."
        }
        for submission in submissions {
            let id = SystemError.oneLine(String(submission.id.prefix(40)))
            guard isPlainName(submission.id) else { return "submission '\(id)' names no directory of its own" }
            let jobs = submission.arrays.map(\.jobID) + (submission.finalizeJob.map { [$0] } ?? []) + (submission.deferredFinalizeJobs ?? [])
            if let job = jobs.first(where: { $0 < 1 }) { return "submission '\(id)' records job id \(job)" }
            for unit in submission.arrays.flatMap(\.units) {
                let name = SystemError.oneLine(String(unit.checkpoint.prefix(40)))
                guard isPlainName(unit.checkpoint) else { return "submission '\(id)' records checkpoint '\(name)', not a directory name" }
                guard ScoreFileMetadata.canRecord(seriesDirectory: unit.directory) else {
                    return "submission '\(id)' records checkpoint '\(name)' at a directory that is not an absolute path on one line"
                }
                if (try? CalibrationShard(index: unit.shard, count: unit.shards)) == nil {
                    return "submission '\(id)' records checkpoint '\(name)' shard \(unit.shard) of \(unit.shards)"
                }
            }
        }
        return nil
    }

    /// Replaces the record file atomically.
    func write(_ layout: ClusterLayout) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(self)
        let directory = try layout.openSlurmDirectory()
        try directory.replaceFile(layout.recordName, with: [UInt8](data))
        try directory.sync()
    }

    /// Every array task ever submitted: (array job, task id) → unit.
    public var tasks: [TaskKey: WorkUnit] {
        var tasks: [TaskKey: WorkUnit] = [:]
        for submission in submissions {
            for array in submission.arrays {
                for (index, unit) in array.units.enumerated() { tasks[TaskKey(job: array.jobID, task: index)] = unit }
            }
        }
        return tasks
    }

    /// The finalize jobs, deferred ones included, oldest first.
    public var finalizeJobs: [Int] {
        submissions.flatMap { ($0.deferredFinalizeJobs ?? []) + ($0.finalizeJob.map { [$0] } ?? []) }
    }

    /// The submission whose finalize job `job` is or was (before it deferred).
    public func submission(ofFinalize job: Int) -> Submission? {
        submissions.first { $0.finalizeJob == job || ($0.deferredFinalizeJobs ?? []).contains(job) }
    }

    public struct TaskKey: Hashable, Sendable {
        public var job: Int
        public var task: Int
    }
}

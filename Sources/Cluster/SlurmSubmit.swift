import DroptraceSupport
import Foundation
import Logging
import Pipeline
import ScoreStore

/// `droptrace slurm submit`: finds the checkpoints of a pipeline's series
/// that are neither stored, nor queued, nor already scored shard by shard,
/// and submits one Slurm array task per (checkpoint, calibration shard)
/// plus a finalize job that runs after them all (`--dependency=afterany`).
public struct SlurmSubmit {
    /// The pipeline file, absolute.
    public var pipeline: URL
    /// The pipeline's `slurm:` section with the command line's options over it.
    public var settings: PipelineSlurmSection
    /// The droptrace executable the scripts run, absolute.
    public var executable: URL
    /// Write the scripts, submit nothing.
    public var dryRun = false
    public var client = SlurmClient()
    let file: PipelineFile
    let options: TraceOptions

    /// What a submit did.
    public struct Result: Sendable {
        /// The directory holding this submission's scripts and logs; nil when nothing was new.
        public var directory: URL?
        /// Each array job: its id (nil in a dry run), task count and script.
        public var arrays: [(jobID: Int?, tasks: Int, script: URL)] = []
        /// The finalize job, when one was submitted (or written, in a dry run).
        public var finalize: (jobID: Int?, script: URL)?
        /// A finalize job already queued for this directory that covers what is queued.
        public var queuedFinalize: Int?
        /// A dry run's script that submits its jobs in order, each with its dependencies.
        public var submitScript: URL?
        public var stored = 0
        public var queued = 0
        public var partial = 0
        /// Checkpoints that waiting will not make readable, one line `path: problem` each.
        public var failed: [String] = []
    }

    /// Loads the pipeline file and checks the settings.
    /// - Throws: `DroptraceError` naming the pipeline file for any bad value
    ///   (`overrides` are the command line's options, named as such).
    public init(pipeline: URL, overrides: PipelineSlurmSection, executable: URL) throws {
        self.pipeline = pipeline.standardizedFileURL
        try overrides.validate(path: self.pipeline.path, asOptions: true)
        guard case .trace(let file) = try PipelineDocument.load(self.pipeline) else {
            throw DroptraceError(
                "compares stored runs, which scores nothing: there is nothing to submit to Slurm; use droptrace run",
                path: self.pipeline.path)
        }
        self.file = file
        settings = (file.slurm ?? PipelineSlurmSection()).overridden(by: overrides)
        options = file.options(of: self.pipeline, force: false)
        // Every shard needs a window: refuse here what every array task would refuse after queueing.
        if let samples = options.calibration.samples, let shards = settings.shards, shards > samples {
            throw DroptraceError(
                "\(shards) shards but samples is \(samples): each shard needs a calibration window; use at most \(samples) shards",
                path: self.pipeline.path)
        }
        self.executable = executable
    }

    public var layout: ClusterLayout { ClusterLayout(outDir: options.output) }

    /// Discovers, decides and submits (or only writes, in a dry run).
    public func run(log: Logger) throws -> Result {
        let layout = self.layout
        for path in [pipeline.path, executable.path, layout.outDir.path] { try WorkUnit.checkRepresentable(path) }
        // One submit at a time per output directory: the second waits for
        // nothing and fails with RunLock.Held, so it never double-submits.
        let slurmDirectory = try layout.openSlurmDirectory()
        let lock = try RunLock(directory: layout.slurmDirectory)
        defer { withExtendedLifetime(lock) {} }
        // A record replacement killed half-way leaves its temporary file; the lock is ours.
        slurmDirectory.removeStaleTemporaryFiles(targets: [layout.recordName])

        let discovered = try CheckpointDiscovery.find(options.checkpoints, settleTime: options.settleTime)
        for warning in discovered.warnings { log.warning("\(warning)") }
        for (name, reason) in discovered.incomplete { log.warning("skipping \(name) for now: \(reason); a later submit will pick it up") }
        for (_, error) in discovered.failed { log.error("\(error)") }

        let stored = try storedFingerprints(found: discovered.ready)
        var record = try SubmissionRecord.read(layout)
        let queue: ClusterQueue
        if dryRun && !SlurmClient.isInstalled("squeue") {
            log.warning("squeue not found: the dry run assumes nothing of this directory is queued")
            queue = ClusterQueue()
        } else {
            queue = try ClusterQueue(layout: layout, record: record, client: client)
        }

        var result = Result()
        let shards = settings.shards ?? 1
        var units: [WorkUnit] = []
        // (checkpoint, shard, shard count) of every queued unit, whatever files it was submitted for.
        func key(_ name: String, _ shard: Int, _ count: Int = shards) -> String { "\(name)\u{0}\(shard)\u{0}\(count)" }
        let queued = Set(queue.units.keys.map { key($0.checkpoint, $0.shard, $0.shards) })
        result.failed = discovered.failed.map(\.error)
        for checkpoint in discovered.ready {
            if let fingerprint = stored[checkpoint.name], checkpoint.isScored(asFingerprint: fingerprint) {
                result.stored += 1
                continue
            }
            try WorkUnit.checkRepresentable(checkpoint.directory.path)
            if queue.hasQueuedShard(of: checkpoint.name), !(0..<shards).contains(where: { queued.contains(key(checkpoint.name, $0)) }) {
                log.warning("\(checkpoint.name): shards of another shard count are queued; it is left to them")
                result.queued += 1
                continue
            }
            for shard in 0..<shards {
                let unit = WorkUnit(
                    checkpoint: checkpoint.name, directory: checkpoint.directory.path, shard: shard, shards: shards,
                    fingerprint: checkpoint.fingerprint)
                let partial = layout.partial(checkpoint: checkpoint.name, shard: shard, shards: shards)
                if queued.contains(key(checkpoint.name, shard)) {
                    result.queued += 1
                } else if FileManager.default.fileExists(atPath: partial.path) {
                    // A partial finalize would refuse (damaged, or of files replaced since) is scored again.
                    if let stale = ShardPartials.staleness(of: partial, checkpoint: checkpoint.name, fingerprint: checkpoint.fingerprint) {
                        log.warning("\(partial.path): \(stale); its shard is submitted again")
                        units.append(unit)
                    } else {
                        result.partial += 1
                    }
                } else {
                    units.append(unit)
                }
            }
        }
        // Every shard needs a window: refuse here what every array task of these checkpoints would refuse.
        if shards > 1, !units.isEmpty {
            let names = Set(units.map(\.checkpoint))
            let windows = try options.calibrationWindows(of: discovered.ready.filter { names.contains($0.name) }, log: log)
            guard shards <= windows else {
                throw DroptraceError(
                    "\(shards) shards but the calibration gives \(windows) windows: each shard needs a calibration window; "
                        + "use at most \(windows) shards", path: pipeline.path)
            }
        }
        result.queuedFinalize = queue.finalizeJobs.keys.max()
        // A finalize is needed for new work, or for queued or finished shards no queued finalize will merge
        // (its finalize job cancelled or lost).
        let needsFinalize = !units.isEmpty || (queue.finalizeJobs.isEmpty && (layout.hasUnmergedPartials || result.queued > 0))
        log.info("\(discovered.ready.count) finished checkpoints: \(result.stored) stored; shard tasks: \(result.queued) queued, \(result.partial) done awaiting finalize, \(units.count) to submit")
        guard needsFinalize else { return result }

        let maxArraySize: Int
        if dryRun && !SlurmClient.isInstalled("scontrol") {
            maxArraySize = 1001  // Slurm's default
        } else {
            maxArraySize = try client.maxArraySize()
        }
        var submission = SubmissionRecord.Submission(
            id: try newSubmissionDirectory(layout), submitted: ISO8601DateFormatter().string(from: Date()),
            pipeline: pipeline.path)
        let directory = layout.slurmDirectory.appendingPathComponent(submission.id)
        let logs = directory.appendingPathComponent("logs")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        // sbatch expands %-patterns (%j, %A, ...) in --output; "%%" is a literal % in the directory's path.
        let logPattern = logs.path.replacingOccurrences(of: "%", with: "%%")
        result.directory = directory

        // Arrays of at most MaxArraySize tasks (ids 0…MaxArraySize−1). With a
        // throttle, each split array waits for the one before, so at most
        // W tasks run in all.
        var arrayJobs: [Int] = []
        // How the finalize job and the next array name each array: its job id, or in a dry run the
        // variable submit.sh keeps it in.
        var arrayReferences: [String] = []
        var dryRunArrays: [(variable: String, command: [String])] = []
        for (index, start) in stride(from: 0, to: units.count, by: maxArraySize).enumerated() {
            let chunk = Array(units[start..<min(start + maxArraySize, units.count)])
            let unitsFile = directory.appendingPathComponent("array-\(index).units")
            let script = directory.appendingPathComponent("array-\(index).sbatch")
            try Data(chunk.map { $0.line + "\n" }.joined().utf8).write(to: unitsFile, options: .withoutOverwriting)
            var sbatch = common(name: layout.jobName)
            let range = chunk.count == 1 ? "0" : "0-\(chunk.count - 1)"
            sbatch += ["--array=\(range)" + (settings.arrayParallelism.map { "%\($0)" } ?? "")]
            sbatch += ["--output=\(logPattern)/array-\(index)-%A_%a.out", "--open-mode=append", "--requeue", "--signal=B:USR1@60"]
            if settings.arrayParallelism != nil, let previous = arrayReferences.last {
                sbatch.append(FinalizeDeferral.dependency(on: [previous]))
            }
            sbatch += settings.sbatchArgs ?? []
            let command = ["sbatch", "--parsable"] + sbatch + [script.path]
            let text = BatchScript.array(droptrace: executable.path, pipeline: pipeline.path, units: unitsFile.path, command: command)
            try Data(text.utf8).write(to: script, options: .withoutOverwriting)
            var job: Int?
            if !dryRun {
                job = try submitJob(script, sbatch, nothingSubmittedYet: arrayJobs.isEmpty, directory: directory)
                arrayJobs.append(job!)
                arrayReferences.append(String(job!))
                submission.arrays.append(SubmissionRecord.ArrayJob(jobID: job!, units: chunk))
                try save(submission, into: &record)
            } else {
                let variable = "ARRAY_\(index)"
                arrayReferences.append(BatchScript.expansion(of: variable))
                dryRunArrays.append((variable, command))
            }
            result.arrays.append((job, chunk.count, script))
        }

        // The finalize job: after every array of this directory still queued
        // and every finalize before it (finalize jobs take the store's lock
        // one after another).
        let script = directory.appendingPathComponent("finalize.sbatch")
        let after = Set(queue.jobIDs).sorted().map(String.init) + arrayReferences
        let base = common(name: layout.jobName) + ["--output=\(logPattern)/finalize-%j.out", "--open-mode=append"]
        var sbatch = base
        if !after.isEmpty { sbatch.append(FinalizeDeferral.dependency(on: after)) }
        sbatch += settings.sbatchArgs ?? []
        submission.finalizeOptions = base + (settings.sbatchArgs ?? [])
        let command = ["sbatch", "--parsable"] + sbatch + [script.path]
        let text = BatchScript.finalize(
            droptrace: executable.path, pipeline: pipeline.path,
            exitFile: directory.appendingPathComponent("finalize.exit").path, command: command)
        try Data(text.utf8).write(to: script, options: .withoutOverwriting)
        var job: Int?
        if !dryRun {
            job = try submitJob(script, sbatch, nothingSubmittedYet: arrayJobs.isEmpty, directory: directory)
            submission.finalizeJob = job
            try save(submission, into: &record)
        } else {
            // What a submit without --dry-run would sbatch, in its order, for the user to run by hand.
            let submitScript = directory.appendingPathComponent("submit.sh")
            try Data(BatchScript.dryRunSubmit(arrays: dryRunArrays, finalize: command).utf8).write(to: submitScript, options: .withoutOverwriting)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: submitScript.path)
            result.submitScript = submitScript
        }
        result.finalize = (job, script)
        return result
    }

    /// Submits `script` with sbatch. A job sbatch refuses is an error naming
    /// the pipeline whose settings it came from; when it was this submit's
    /// first, the submission's directory (scripts, no jobs) is removed.
    private func submitJob(_ script: URL, _ options: [String], nothingSubmittedYet: Bool, directory: URL) throws -> Int {
        do {
            return try client.submit(script: script.path, options: options)
        } catch let error as DroptraceError {
            if nothingSubmittedYet { try? FileManager.default.removeItem(at: directory) }
            throw DroptraceError(
                "sbatch refused a job (\(error.description)); check the slurm settings (partition, time, cpus_per_task, "
                    + "mem, sbatch_args) or the cluster\(nothingSubmittedYet ? "; nothing was submitted" : "")", path: pipeline.path)
        }
    }

    /// sbatch options every job of this submit gets.
    private func common(name: String) -> [String] {
        var options = ["--job-name=\(name)"]
        if let partition = settings.partition { options.append("--partition=\(partition)") }
        if let time = settings.time { options.append("--time=\(time)") }
        if let cpus = settings.cpusPerTask { options.append("--cpus-per-task=\(cpus)") }
        if let mem = settings.mem { options.append("--mem=\(mem)") }
        return options
    }

    /// Records `submission` (replacing its earlier state) atomically.
    private func save(_ submission: SubmissionRecord.Submission, into record: inout SubmissionRecord) throws {
        record.submissions.removeAll { $0.id == submission.id }
        record.submissions.append(submission)
        try record.write(layout)
    }

    /// Row name → fingerprint of the store's rows (none without a store).
    /// - Throws: `DroptraceError` naming the store when it was scored in
    ///   another precision than the pipeline's or holds another series than
    ///   the one `found` in: finalize would refuse to continue it, so nothing is submitted.
    private func storedFingerprints(found: [DiscoveredCheckpoint]) throws -> [String: String] {
        let url = layout.store
        guard FileManager.default.fileExists(atPath: url.path) else { return [:] }
        let store = try ScoreFile.read(from: url)
        try store.metadata.checkContinued(in: options.precision, store: url.path)
        _ = try store.checkContinued(bySeriesIn: options.checkpoints.seriesDirectory, found: found, store: url.path)
        return Dictionary(store.rows.map { ($0.name, $0.fingerprint) }, uniquingKeysWith: { _, last in last })
    }

    /// A new directory name under OUT_DIR/slurm: the UTC time, made unique.
    private func newSubmissionDirectory(_ layout: ClusterLayout) throws -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        let base = formatter.string(from: Date())
        for attempt in 0..<1000 {
            let name = attempt == 0 ? base : "\(base)-\(attempt)"
            let path = layout.slurmDirectory.appendingPathComponent(name).path
            if mkdir(path, 0o777) == 0 { return name }
            guard errno == EEXIST else { throw DroptraceError("cannot create directory: \(SystemError.describe())", path: path) }
        }
        throw DroptraceError("cannot find a free submission directory name", path: layout.slurmDirectory.path)
    }

    /// Blocks until finalize job `job` ends — or, when it deferred
    /// (`FinalizeDeferral`), the finalize job that took over from it — and
    /// returns that job and its exit code (0 when it completed). Polls the
    /// controller, then the exit file the finalize script leaves, for when
    /// Slurm has already forgotten the job.
    /// - Throws: `DroptraceError` when Slurm has forgotten the job and it left no exit code.
    public func waitForFinalize(_ job: Int, poll: TimeInterval = 2) throws -> (job: Int, exitCode: Int32) {
        var job = job
        var followed = 0
        while true {
            // Slurm's state first, then the record: a deferring job records its successor before it ends.
            let state = try client.jobState(job)
            let base = state.map { $0.state.split(separator: "+").first.map(String.init) ?? $0.state }
            let ended = base.map(SlurmClient.endedStates.contains) ?? true
            let submission = ended ? try? SubmissionRecord.read(layout).submission(ofFinalize: job) : nil
            // Bounded, against a record whose jobs hand over in a circle.
            if let next = submission?.finalizeJob, next != job, followed <= FinalizeDeferral.maxDeferrals {
                job = next
                followed += 1
                continue
            }
            let directory = submission.map { layout.slurmDirectory.appendingPathComponent($0.id) }
            if let (_, code) = state {
                if ended { return (job, base == "COMPLETED" ? 0 : code != 0 ? code : 1) }
            } else if let exitFile = directory?.appendingPathComponent("finalize.exit"),
                      let data = try? RegularFile.contents(path: exitFile.path, limit: 64),
                      let code = Int32(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) {
                return (job, code)
            } else {
                throw DroptraceError("Slurm no longer knows finalize job \(job) and it left no exit code; see its log", path: (directory ?? layout.slurmDirectory).path)
            }
            Thread.sleep(forTimeInterval: poll)
        }
    }
}

import ArgumentParser
import Cluster
import DroptraceSupport
import Foundation
import Pipeline
import TensorEngine

struct SlurmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slurm",
        abstract: "Score a series on a Slurm cluster: job arrays over checkpoints and calibration shards.",
        discussion: """
            `submit` sends one array task per (checkpoint, calibration shard) and a finalize job that merges \
            the shards into OUT_DIR/scores.h5, analyses and reports; `status` shows where each shard stands. \
            `task` and `finalize` are those two steps, usable in your own sbatch files. \
            OUT_DIR must be on a file system every node sees.
            """,
        subcommands: [SlurmSubmitCommand.self, SlurmStatusCommand.self, SlurmTaskCommand.self, SlurmFinalizeCommand.self]
    )
}

struct SlurmSubmitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Submit the checkpoints of a pipeline's series that are neither stored nor queued.",
        discussion: """
            Discovers the series like `run`, and for every finished checkpoint that is neither in \
            OUT_DIR/scores.h5 (with the same files), nor queued by an earlier submit, nor already scored shard by \
            shard, writes a units file and an sbatch script under OUT_DIR/slurm/<time>/ and submits a job array \
            (one task per checkpoint and shard, `droptrace slurm task`; split into several arrays above the \
            cluster's MaxArraySize), then a finalize job (`droptrace slurm finalize`) that runs after every array \
            of OUT_DIR (--dependency=afterany). Prints the job ids. Safe to run from cron: a second submit submits \
            only new work, never the same shard twice.

            Options may also stand in a `slurm:` section of the pipeline file (shards, array_parallelism, \
            partition, time, cpus_per_task, mem, sbatch_args); the command line wins.

            Exit codes: 0 submitted (or nothing new); with --wait, the finalize job's exit code; 1 error, one line \
            naming the file (also when some checkpoint cannot be read, after the others were submitted); 64 invalid \
            usage; 75 another submit for OUT_DIR is running.
            """
    )

    @Argument(help: "Pipeline file, e.g. pipelines/demo.yaml.")
    var pipeline: String

    @Option(help: ArgumentHelp("Calibration shards per checkpoint: array tasks that each score 1/N of the windows (default 1).", valueName: "N"))
    var shards: Int?

    @Option(name: .customLong("array-parallelism"), help: ArgumentHelp("At most W array tasks at once (sbatch --array=…%W).", valueName: "W"))
    var arrayParallelism: Int?

    @Option(help: ArgumentHelp("Slurm partition (sbatch --partition).", valueName: "P"))
    var partition: String?

    @Option(help: ArgumentHelp("Time limit of each task and of finalize (sbatch --time), e.g. 02:00:00.", valueName: "T"))
    var time: String?

    @Option(name: .customLong("cpus-per-task"), help: ArgumentHelp("CPUs per task (sbatch --cpus-per-task).", valueName: "C"))
    var cpusPerTask: Int?

    @Option(help: ArgumentHelp("Memory per node (sbatch --mem), e.g. 64G.", valueName: "M"))
    var mem: String?

    @Option(name: .customLong("sbatch-arg"), help: ArgumentHelp("An extra sbatch option for every job, e.g. --sbatch-arg=--account=proj42 (repeatable).", valueName: "ARG"))
    var sbatchArgs: [String] = []

    @Flag(help: "Block until the finalize job ends and exit with its exit code.")
    var wait = false

    @Flag(name: .customLong("dry-run"), help: "Write the units files and sbatch scripts, and submit.sh to sbatch them in order with their dependencies; submit nothing.")
    var dryRun = false

    /// The settings given on the command line, over the pipeline file's.
    var overrides: PipelineSlurmSection {
        PipelineSlurmSection(
            shards: shards, arrayParallelism: arrayParallelism, partition: partition, time: time,
            cpusPerTask: cpusPerTask, mem: mem, sbatchArgs: sbatchArgs.isEmpty ? nil : sbatchArgs)
    }

    /// A bad option value is a usage error, as in the other commands.
    func validate() throws {
        do { try overrides.validate(path: pipeline, asOptions: true) } catch let error as DroptraceError {
            throw ValidationError(error.message)
        }
    }

    func run() throws {
        try runReportingErrors { log in
            var submit = try SlurmSubmit(
                pipeline: URL(commandLinePath: pipeline), overrides: overrides, executable: Self.executable)
            submit.dryRun = dryRun
            let result: SlurmSubmit.Result
            do { result = try submit.run(log: log) } catch let held as RunLock.Held {
                log.error("\(held.description)")
                throw ExitCode(lockHeldExitCode)
            }
            for array in result.arrays {
                print(array.jobID.map { "array job \($0): \(array.tasks) tasks" } ?? "dry run: \(array.script.path) (\(array.tasks) tasks)")
            }
            if let finalize = result.finalize {
                print(finalize.jobID.map { "finalize job \($0)" } ?? "dry run: \(finalize.script.path)")
                if let script = result.submitScript { print("dry run: \(script.path) submits these jobs in order, each after the jobs it depends on") }
            } else {
                print("nothing new to submit" + (result.queuedFinalize.map { " (finalize job \($0) is queued)" } ?? ""))
            }
            // Like `run`: unreadable checkpoints make the exit code 1, after the rest was submitted.
            let failure: ExitCode? = result.failed.isEmpty ? nil : .failure
            guard wait, !dryRun, let job = result.finalize?.jobID ?? result.queuedFinalize else {
                if let failure { throw failure }
                return
            }
            let (last, code) = try submit.waitForFinalize(job)
            log.info("finalize job \(last)\(last == job ? "" : " (which took over from finalize job \(job))") ended with exit code \(code)")
            if code != 0 { throw ExitCode(code) }
            if let failure { throw failure }
        }
    }

    /// The running executable's absolute path, which the scripts call.
    static var executable: URL {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            return URL(fileURLWithPath: path)
        }
        return Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
    }
}

struct SlurmStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what is stored, done, running, pending and failed, per checkpoint and shard.",
        discussion: """
            States: stored (in scores.h5), partial done (shard finished, waiting for finalize), running, pending, \
            failed (ended without a result: cancelled, failed, timed out; a new submit resubmits it). Then the \
            finalize jobs and their logs.

            Exit codes: 0 shown; 1 error, one line naming the file; 64 invalid usage.
            """
    )

    @Argument(help: "Output directory of a pipeline submitted with `slurm submit` (OUT_DIR, not the pipeline file).")
    var outDir: String

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        try runReportingErrors { _ in
            let status = try SlurmStatus(outDir: URL(commandLinePath: outDir))
            print(json ? status.json : status.table, terminator: "")
        }
    }
}

struct SlurmTaskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "task",
        abstract: "Score one calibration shard of one checkpoint (the step of one array task).",
        discussion: """
            Scores shard I (0-based) of N of the pipeline's calibration windows — windows [I·S/N, (I+1)·S/N) \
            of S — on the checkpoint directory DIR and writes the partial result OUT_DIR/partials/<checkpoint>/shard-<I>-of-<N>.h5 \
            atomically (a one-row score file with the shard's per-sequence sums). `droptrace slurm finalize` merges \
            the partials; the result equals `droptrace run` up to the order of float64 additions.

            Idempotent: exits 0 at once when that partial exists for the checkpoint's current files and the same \
            calibration tokens, or the store holds the checkpoint already. Takes no lock, so the tasks of an array \
            run side by side. On SIGTERM or SIGUSR1 (preemption, `--signal=USR1@<seconds>` before the time limit) \
            it exits at once with 75 and leaves no partial; have Slurm requeue that code (`RequeueExit=75` in \
            slurm.conf, or `scontrol requeue $SLURM_JOB_ID` in the batch script) and the task starts over.

            Example (an array of 2 shards of one checkpoint):
              droptrace slurm task pipelines/my-run.yaml --checkpoint runs/step1000 --shard $SLURM_ARRAY_TASK_ID --shards 2

            Exit codes: 0 done (also when nothing was left to do); 1 error, one line naming the file; 64 invalid \
            usage; 75 interrupted by SIGTERM/SIGUSR1, nothing written: run it again.
            """
    )

    @Argument(help: "Pipeline file (the same as for `droptrace run`).")
    var pipeline: String

    @Option(help: ArgumentHelp("The checkpoint directory to score.", valueName: "dir"))
    var checkpoint: String

    @Option(help: ArgumentHelp("Which shard, from 0 to N − 1.", valueName: "I"))
    var shard: Int

    @Option(help: ArgumentHelp("How many shards the calibration windows are split into.", valueName: "N"))
    var shards: Int

    @OptionGroup var engine: EngineOptions

    func validate() throws {
        do { _ = try CalibrationShard(index: shard, count: shards) } catch let error as DroptraceError {
            throw ValidationError("--shard \(shard) --shards \(shards): \(error.message)")
        }
    }

    func run() throws {
        try runReportingErrors { log in
            try engine.apply()
            let url = URL(commandLinePath: pipeline)
            let options = try PipelineFile.load(url).options(of: url, force: false)
            EnginePrecision.set(options.precision)
            let progress = ProgressBar(label: "shard \(shard)/\(shards)")
            _ = try TraceRun(options: options, log: log).scoreShard(
                checkpoint: URL(commandLinePath: checkpoint), shard: try CalibrationShard(index: shard, count: shards),
                progress: progress.update)
            progress.finished()
        }
    }
}

struct SlurmFinalizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finalize",
        abstract: "Merge the shards' partial results into the store, then analyse and report (the job after the array).",
        discussion: """
            Takes OUT_DIR's lock, merges, for every finished checkpoint the store lacks, one complete set of its \
            partial results (OUT_DIR/partials/<checkpoint>/shard-<I>-of-<N>.h5, all I of one N) into \
            OUT_DIR/scores.h5 in series order, removes the merged partials, and writes the analysis and the report \
            exactly as `droptrace run` does. A store begun by `run` is continued, and `run` continues one begun here.

            A checkpoint whose shards are missing (a task failed or has not run) or refused (damaged, other \
            calibration tokens, other files or another model) is named in one line each, after the others are \
            stored; rerun those tasks and finalize again.

            As the finalize job of a `slurm submit` (SLURM_JOB_ID is the one recorded), it first reads the queue: \
            when shard tasks of its submission or an earlier one, or an earlier finalize job, are still queued \
            (a task requeued after Slurm released this job), it merges nothing, submits a new finalize job that \
            runs after them, records it for `status` and `submit --wait`, and exits with 3 (the script ends the \
            job successfully). After \(FinalizeDeferral.maxDeferrals) such deferrals it fails instead. Checkpoints \
            whose shard tasks are queued under a later submission (a cron job submitted new checkpoints meanwhile) \
            are left to that submission's finalize job, not counted as failed; so are checkpoints saved after \
            the last submit (in no submission, without partial results), which the next submit scores.

            Exit codes: 0 done; 1 some checkpoint could not be merged, or an error, one line naming the file; \
            3 deferred to a new finalize job; 64 invalid usage; 75 another run holds the lock.
            """
    )

    @Argument(help: "Pipeline file (the same as for `droptrace run` and `slurm task`).")
    var pipeline: String

    @OptionGroup var engine: EngineOptions

    func run() throws {
        var options: TraceOptions?
        var decision = FinalizeDeferral.Decision.proceed()
        try runReportingErrors { log in
            let url = URL(commandLinePath: pipeline)
            options = try PipelineFile.load(url).options(of: url, force: false)
            guard let job = ProcessInfo.processInfo.environment["SLURM_JOB_ID"].flatMap({ Int($0) }) else { return }
            decision = try FinalizeDeferral(layout: ClusterLayout(outDir: options!.output)).decide(job: job, log: log)
            if case .deferred(let successor, let after) = decision {
                log.info("job(s) \(after.map(String.init).joined(separator: ", ")) still queued (a shard task requeued?): merging nothing; finalize job \(successor) runs after them")
            }
        }
        guard case .proceed(let queued) = decision else { throw ExitCode(FinalizeDeferral.exitCode) }
        try runLocked { log in
            try engine.apply()
            EnginePrecision.set(options!.precision)
            let record = try SubmissionRecord.read(ClusterLayout(outDir: options!.output))
            let submitted = record.submissions.isEmpty ? nil : Set(record.tasks.values.map(\.checkpoint))
            let summary = try TraceRun(options: options!, log: log).finalize(leaving: queued, submitted: submitted)
            log.info("done: \(summary.scored.count) merged, \(summary.reused.count) already in the store, \(summary.incomplete.count) still being written, \(summary.queued.count) left for later (queued, or not submitted yet), \(summary.failed.count) not merged")
            if !summary.failed.isEmpty { throw ExitCode.failure }
        }
    }
}

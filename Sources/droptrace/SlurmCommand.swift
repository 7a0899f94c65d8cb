import ArgumentParser
import DroptraceSupport
import Foundation
import Pipeline

struct SlurmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slurm",
        abstract: "Run a pipeline file on a Slurm cluster: one array task per checkpoint and calibration shard, then a finalize job.",
        subcommands: [SlurmTaskCommand.self, SlurmFinalizeCommand.self]
    )
}

struct SlurmTaskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "task",
        abstract: "Score one calibration shard of one checkpoint (the step of one array task).",
        discussion: """
            Scores shard I (0-based) of N of the pipeline's calibration windows — windows [I·S/N, (I+1)·S/N) \
            of S — on CHECKPOINT_DIR and writes the partial result OUT_DIR/partials/<checkpoint>/shard-<I>-of-<N>.h5 \
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
            engine.apply()
            let url = URL(fileURLWithPath: pipeline)
            let options = try PipelineFile.load(url).options(relativeTo: url.deletingLastPathComponent(), force: false)
            let progress = ProgressBar(label: "shard \(shard)/\(shards)")
            _ = try TraceRun(options: options, log: log).scoreShard(
                checkpoint: URL(fileURLWithPath: checkpoint), shard: try CalibrationShard(index: shard, count: shards),
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

            Exit codes: 0 done; 1 some checkpoint could not be merged, or an error, one line naming the file; \
            64 invalid usage; 75 another run holds the lock.
            """
    )

    @Argument(help: "Pipeline file (the same as for `droptrace run` and `slurm task`).")
    var pipeline: String

    @OptionGroup var engine: EngineOptions

    func run() throws {
        var options: TraceOptions?
        try runReportingErrors { _ in
            let url = URL(fileURLWithPath: pipeline)
            options = try PipelineFile.load(url).options(relativeTo: url.deletingLastPathComponent(), force: false)
        }
        try runLocked { log in
            engine.apply()
            let summary = try TraceRun(options: options!, log: log).finalize()
            log.info("done: \(summary.scored.count) merged, \(summary.reused.count) already in the store, \(summary.incomplete.count) still being written, \(summary.failed.count) not merged")
            if !summary.failed.isEmpty { throw ExitCode.failure }
        }
    }
}

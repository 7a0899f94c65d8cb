import ArgumentParser
import DroptraceSupport
import Evaluation
import Foundation
import Logging
import Pipeline
import Scoring
import TensorEngine

/// Exit status when another run holds the output directory's lock
/// (EX_TEMPFAIL: try again later).
let lockHeldExitCode: Int32 = 75

struct TraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Score every checkpoint of a training run, analyse the series and write a report.",
        discussion: """
            Finds checkpoints in SERIES_DIR (checkpoint-<N>, step<N>, step-<N>, step_<N>, global_step<N>, \
            step<N>-tokens<M>B, stage<S>-[ingredient<K>-]step<N>-tokens<M>B, step-<N>k-token-<M>B, step-<N>-<M>BT, \
            ckpt_<N>), skips ones still being written (a checkpoint left incomplete longer than --settle-minutes \
            fails), scores those not yet in OUT_DIR/scores.h5 or replaced since, \
            analyses the series (rankings, drop-k sets, rank correlation with the final checkpoint, \
            stabilisation step, verdict on whether attention redundancy is inherent) and writes \
            OUT_DIR/report.md with figures in OUT_DIR/figures/.

            Safe to run from cron while training is still writing checkpoints: each run adds what is new, \
            the store is replaced atomically after every checkpoint, and a second run on the same OUT_DIR \
            exits at once with code 75.

            Exit codes: 0 done (also when nothing was new); 1 error, one line naming the file (also when some \
            checkpoint failed, after the others were stored); 64 invalid usage; 75 another run holds the lock.
            """
    )

    @Argument(help: "Directory holding the run's checkpoints.")
    var seriesDir: String

    @OptionGroup var calibration: CalibrationOptions

    @Option(name: .shortAndLong, help: "Output directory for scores.h5, report.md and figures/.")
    var output: String

    @Option(name: .customLong("drop-k"), parsing: .upToNextOption,
            help: ArgumentHelp(
                "Drop-set sizes to analyse, each at most the layer count of the series' first checkpoint (default: 25% and 50% of the layers each module is in, together; a module has drop sets for the sizes up to its own layer count).",
                valueName: "k"))
    var dropK: [Int] = []

    @Flag(help: "Rescore every checkpoint, even those already in the store (a store scored with other calibration tokens or in the other precision, otherwise refused, is rescored in this run's); a store that cannot be read is renamed to scores.h5.damaged-<UTC time> (never deleted) and the run starts over.")
    var force = false

    @Option(help: "Report title.")
    var title: String?

    @Option(help: ArgumentHelp(
        "Evaluation text or JSONL: the report adds each checkpoint's perplexity in full, without its own drop-k attention layers and without the final checkpoint's, all on the final checkpoint's tokens (one whose tokenizer gives others gets none).",
        valueName: "file"))
    var eval: String?

    @Option(name: .customLong("task"), help: ArgumentHelp(
        "An lm-evaluation-harness task and its local files: NAME[:N]=EVAL_FILE[,FEWSHOT_FILE], N its own few-shot count; repeatable. The store and the report add each checkpoint's accuracy in full and without its own drop-k attention layers.",
        valueName: "name=file[,file]"))
    var tasks: [String] = []

    @Option(name: .customLong("num-fewshot"), help: ArgumentHelp(
        "Few-shot examples per prompt for tasks without their own count (default 0).", valueName: "n"))
    var numFewshot: Int?

    @Option(name: .customLong("settle-minutes"), help: ArgumentHelp(
        "Minutes an incomplete checkpoint may rest unchanged and still count as being written (default 30); after that it fails.",
        valueName: "minutes"), transform: decimalNumber)
    var settleMinutes: Double = CheckpointDiscovery.defaultSettleTime / 60

    @OptionGroup var engine: EngineOptions

    @OptionGroup var precision: PrecisionOptions

    func validate() throws {
        if dropK.contains(where: { $0 < 1 }) { throw ValidationError("--drop-k values must be at least 1") }
        if let problem = title.flatMap(TraceOptions.titleProblem) { throw ValidationError("--\(problem)") }
        if !(settleMinutes >= 0 && settleMinutes <= 1e6) { throw ValidationError("--settle-minutes must be between 0 and 1000000") }
        try validateTaskOptions(tasks: tasks, numFewshot: numFewshot)
    }

    func run() throws {
        var options = TraceOptions(
            checkpoints: .series(URL(commandLinePath: seriesDir)), calibration: calibration.source,
            output: URL(commandLinePath: output), dropK: dropK.isEmpty ? nil : dropK, force: force, title: title,
            evaluation: eval.map(calibration.textSource))
        options.settleTime = settleMinutes * 60
        options.numFewshot = numFewshot
        options.precision = precision.precision
        var parsed: [TaskRequest]?
        try runReportingErrors { _ in parsed = try tasks.map { try TaskRequest(argument: $0) } }
        options.tasks = parsed!
        try runTrace(options, engine: engine)
    }
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a pipeline file (YAML): the declarative form of `trace`.",
        discussion: """
            Settings: title, series (a directory) or checkpoints (a list of directories), calibration, \
            tokenizer (a directory, as `trace --tokenizer`), seq_len, samples, drop_k (a list), eval (optional evaluation data), tasks (optional: a mapping from \
            task name to {eval: FILE, fewshot: FILE, num_fewshot: N}), num_fewshot, precision (f32 or bf16, as \
            `trace --precision`; a store is never continued in the other one), settle_minutes (as \
            `trace --settle-minutes`), output, slurm (settings for `droptrace slurm submit`: see its --help). \
            Relative paths are \
            relative to the pipeline file. A file with `compare` (a list of trace output directories), `output` and \
            optionally `title` runs `droptrace compare` instead. See pipelines/ for documented examples.

            Exit codes: 0 done; 1 error, one line naming the file; 64 invalid usage; 75 another run holds the lock.
            """
    )

    @Argument(help: "Pipeline file, e.g. pipelines/demo.yaml.")
    var pipeline: String

    @Flag(help: "Rescore every checkpoint, even those already in the store (a store scored with other calibration tokens or in the other precision, otherwise refused, is rescored in this run's); a store that cannot be read is renamed to scores.h5.damaged-<UTC time> (never deleted) and the run starts over.")
    var force = false

    @OptionGroup var engine: EngineOptions

    func run() throws {
        let url = URL(commandLinePath: pipeline)
        var document: PipelineDocument?
        try runReportingErrors { _ in document = try PipelineDocument.load(url) }
        switch document {
        case .trace(let file)?:
            try runTrace(file.options(of: url, force: force), engine: engine)
        case .compare(let file)?:
            let (stores, output) = file.paths(relativeTo: url.deletingLastPathComponent())
            try runLocked { log in
                if force { log.warning("--force has no effect on a comparison: it reads the runs' stores and changes none") }
                let report = try CompareRuns.run(stores: stores, output: output, title: file.title)
                log.info("report: \(report.path)")
            }
        case nil:
            throw ExitCode.failure
        }
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Rebuild OUT_DIR/report.md and its figures from OUT_DIR/scores.h5 alone.",
        discussion: """
            Everything the report shows (rows, calibration, analysis, verdict, perplexities of --eval, title) is \
            read from the store, so the rebuilt report.md and figures are byte for byte what `trace` wrote \
            (the same droptrace version).

            Exit codes: 0 done; 1 error, one line naming the file; 64 invalid usage; 75 another run holds the lock.
            """
    )

    @Argument(help: "Output directory of an earlier trace or run.")
    var outDir: String

    @Option(help: "Report title for this rebuild only (default: the title stored by trace); the store is not changed.")
    var title: String?

    func validate() throws {
        if let problem = title.flatMap(TraceOptions.titleProblem) { throw ValidationError("--\(problem)") }
    }

    func run() throws {
        try runLocked { log in
            let report = try ReportRebuild.run(outDir: URL(commandLinePath: outDir), title: title)
            log.info("report: \(report.path)")
        }
    }
}

/// Runs a trace with a terminal progress bar; exit code 1 if any checkpoint failed.
func runTrace(_ options: TraceOptions, engine: EngineOptions) throws {
    try runLocked { log in
        try engine.apply()
        EnginePrecision.set(options.precision)
        let summary = try TraceRun(options: options, log: log).run(progress: ProgressBar())
        log.info("done: \(summary.scored.count) scored, \(summary.reused.count) already in the store, \(summary.incomplete.count) still being written, \(summary.failed.count) failed")
        if !summary.failed.isEmpty { throw ExitCode.failure }
    }
}

/// Like `runReportingErrors`, with the lock's own exit code.
func runLocked(_ body: (Logger) throws -> Void) throws {
    try runReportingErrors { log in
        do {
            try body(log)
        } catch let held as RunLock.Held {
            log.error("\(held.description)")
            throw ExitCode(lockHeldExitCode)
        }
    }
}

import ArgumentParser
import Dropping
import DroptraceSupport
import Evaluation
import Foundation
import Scoring

extension DropTarget: ExpressibleByArgument {}
extension BlockGapMetric: ExpressibleByArgument {}

struct DropCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drop",
        abstract: "Drop the most redundant attention layers, MLPs or blocks, and measure what it costs and saves.",
        discussion: """
            Selection follows LLM-Drop: modules are ranked by similarity (1 − importance) on the calibration \
            data and the K most similar are dropped, all at once (default) or one at a time with the dropped \
            model rescored in between (--iterative). --target joint ranks attention and MLP layers together \
            (Joint Layer Drop); --target block --consecutive drops the K contiguous blocks whose boundary \
            states are most similar (--block-metric: by mean cosine as LLM-Drop, or by the angular distance \
            over all tokens or at the last token as Gromov et al. and PruneMe). A dropped attention layer or MLP passes its residual through unchanged; \
            a dropped block is the identity.

            Measures perplexity (--eval), accuracy on lm-evaluation-harness tasks (--task, as `droptrace eval` \
            scores them: acc, acc_norm, their standard errors and the paper's average over the tasks), and \
            speed (prefill tokens/s and per-token decode latency with a KV cache, analytic FLOPs and \
            KV-cache size) of the full and the dropped model, and the speedup-degradation ratio (SDR: \
            performance lost in % per decode speed-up in %, on the task average when tasks are given, else on \
            perplexity). Speed is timed as LLM-Drop's benchmark does (batch 1, context/generate lengths \
            32/32 up to 512/512 as the model's positions and the budget allow), both models in alternation, \
            round after round until the medians settle (checked from the 8th round on) and the sign test \
            below is decided or can no longer be, at most \
            --speed-max-rounds rounds and within --speed-budget; medians are shown with their interquartile \
            range, and a speed-up the paired rounds cannot tell from zero (sign test, p > 0.01; always with \
            fewer than 8 rounds) is reported as within noise, with no SDR.

            --export DIR writes the dropped model: for block drops a standard Hugging Face checkpoint with \
            the blocks removed; otherwise the weights without the dropped modules and LLM-Drop's \
            drop_attn_list / drop_mlp_list in config.json, which plain transformers ignores (it fills the \
            dropped modules with random weights): load those with LLM-Drop's modeling code (for llama and \
            mistral config.json's auto_map names its classes). droptrace reads both back. \
            --export-mergekit FILE (block drops) also writes the kept layers as a mergekit passthrough \
            configuration, for `mergekit-yaml FILE OUT_DIR`; its layer_range is 0-based and \
            end-exclusive: dropping layers 3-5 of 8 keeps [0, 3] and [6, 8]. It is refused where \
            the passthrough would build another model (an architecture mergekit does not define, a \
            config key or tensor the passthrough would leave wrong or out); --export works there.

            Exit codes: 0 success; 1 bad input or failure, one line naming the file; 64 invalid usage.
            """
    )

    @Argument(help: "Checkpoint directory, or one .safetensors, .bin or .gguf file.")
    var checkpoint: String

    @Option(help: "What to drop: attention, mlp, block or joint.")
    var target: DropTarget

    @Option(help: "How many modules (layers, blocks; for joint: attention and MLP modules together).")
    var count: Int

    @OptionGroup var calibration: CalibrationOptions

    @Flag(help: "Drop one module at a time, rescoring the dropped model in between.")
    var iterative = false

    @Flag(help: "With --target block: drop K contiguous blocks.")
    var consecutive = false

    @Option(help: ArgumentHelp(
        "With --consecutive: rank contiguous blocks by cosine (LLM-Drop, default), angular_distance (Gromov et al.) or angular_distance_last_token (PruneMe).",
        valueName: "metric"))
    var blockMetric: BlockGapMetric = .cosine

    @Option(help: ArgumentHelp("Evaluation text or JSONL for perplexity (cut like the calibration data).", valueName: "file"))
    var eval: String?

    @Option(name: .customLong("task"), help: ArgumentHelp(
        "An lm-evaluation-harness task and its local files (the dataset's own JSONL export): NAME[:N]=EVAL_FILE[,FEWSHOT_FILE], N its own few-shot count; repeatable.",
        valueName: "name=file[,file]"))
    var tasks: [String] = []

    @Option(name: .customLong("num-fewshot"), help: ArgumentHelp(
        "Few-shot examples per prompt for tasks without their own count (default 0).", valueName: "n"))
    var numFewshot: Int?

    @Option(help: ArgumentHelp("Write the dropped model to this new directory.", valueName: "dir"))
    var export: String?

    @Option(help: ArgumentHelp(
        "With --target block: also write the drop as a mergekit passthrough configuration (slices with 0-based, end-exclusive layer_range) to this YAML file.",
        valueName: "file"))
    var exportMergekit: String?

    @Option(help: ArgumentHelp(
        "Wall-time budget for timing both models, warm-up included (default 120); no round starts that would overrun it.",
        valueName: "seconds"), transform: decimalNumber)
    var speedBudget: Double = 120

    // Fewer than 8 rounds are allowed, for runs that want no timing (an export, perplexity only):
    // the help says what they cost, every speed-up within noise.
    @Option(help: ArgumentHelp(
        "At most this many timing rounds; below 8 every speed-up is within noise (the sign test needs 8).",
        valueName: "n"))
    var speedMaxRounds: Int = 20

    @OptionGroup var engine: EngineOptions

    @OptionGroup var precision: PrecisionOptions

    @Flag(help: "Print the result as JSON on standard output.")
    var json = false

    func validate() throws {
        if exportMergekit?.hasSuffix("/") == true {
            throw ValidationError("--export-mergekit names a directory (it ends in /); give the YAML file's path")
        }
        if let problem = DropRequest.exportPathsProblem(
            export: export.map { URL(commandLinePath: $0) }, exportMergekit: exportMergekit.map { URL(commandLinePath: $0) }) {
            throw ValidationError(problem)
        }
        if let problem = DropRequest.optionProblem(
            target: target, count: count, iterative: iterative, consecutive: consecutive, blockMetric: blockMetric,
            exportsMergekit: exportMergekit != nil) {
            throw ValidationError(problem)
        }
        try validateTaskOptions(tasks: tasks, numFewshot: numFewshot)
        if !(speedBudget.isFinite && speedBudget > 0 && speedBudget <= 604_800) {
            throw ValidationError("--speed-budget must be a number of seconds above 0, at most 604800 (a week)")
        }
        if !(1...1000).contains(speedMaxRounds) { throw ValidationError("--speed-max-rounds must be a whole number from 1 to 1000") }
    }

    func run() throws {
        try runReportingErrors { log in
            try engine.apply()
            precision.apply()
            var request = DropRequest(
                checkpoint: URL(commandLinePath: checkpoint), target: target, count: count, calibration: calibration.source)
            request.iterative = iterative
            request.consecutive = consecutive
            request.blockMetric = blockMetric
            request.evaluation = eval.map(calibration.textSource)
            request.tasks = try tasks.map { try TaskRequest(argument: $0) }
            request.numFewshot = numFewshot
            request.export = export.map { URL(commandLinePath: $0) }
            request.exportMergekit = exportMergekit.map { URL(commandLinePath: $0) }
            request.speed.policy.budgetSeconds = speedBudget
            request.speed.policy.maxRounds = speedMaxRounds
            let result: DropResult
            var exportError: Error?
            do {
                result = try DropRun.run(request) { log.info("\($0)") }
            } catch let failed as DropRun.ExportFailed {
                // Hours of measurement are printed even when the export cannot be placed; the run still fails.
                (result, exportError) = (failed.result, failed.error)
            }
            print(json ? try encodeJSON(WithPrecision(result: result, precision: precision.precision)) : DropTable(result).text)
            if let exportError { throw exportError }
        }
    }
}

/// The checks `--task` and `--num-fewshot` share in `drop`, `trace` and
/// `eval`: usage errors (exit 64), before any work.
func validateTaskOptions(tasks: [String], numFewshot: Int?) throws {
    for task in tasks {
        do {
            _ = try TaskRequest(argument: task)
        } catch let error as DroptraceError {
            throw ValidationError("--task: \(error.message)")
        }
    }
    guard let numFewshot else { return }
    if !(0...TaskSuite.maxFewshot).contains(numFewshot) {
        throw ValidationError("--num-fewshot must be a whole number from 0 to \(TaskSuite.maxFewshot)")
    }
    if tasks.isEmpty { throw ValidationError("--num-fewshot applies to --task; give at least one --task") }
}

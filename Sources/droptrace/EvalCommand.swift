import ArgumentParser
import Architectures
import Evaluation
import Foundation

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score a checkpoint on HellaSwag, ARC, PIQA, WinoGrande, BoolQ, OpenBookQA and MMLU as lm-evaluation-harness does.",
        discussion: """
            Each --task names a task and its local files: NAME=EVAL_FILE[,FEWSHOT_FILE], JSONL with one row of \
            the Hugging Face dataset per line in the dataset's own fields (datasets.Dataset.to_json). Tasks:
            \(TaskRequest.datasets.map { "  \($0.name.padding(toLength: 14, withPad: " ", startingAt: 0)) \($0.dataset)" }.joined(separator: "\n"))

            Prompts, few-shot examples, tokenisation and metrics follow the harness's task definitions: acc \
            (highest summed log-likelihood), acc_norm (per character of the answer, where the task has it), their \
            standard errors and n. Few-shot examples come from FEWSHOT_FILE (train; dev for MMLU) drawn with \
            Python's random.Random(1234) exactly as the harness draws them (MMLU: the subject's first n). \
            --num-fewshot sets the count for every task; NAME:N=... sets one task's.

            Example (BoolQ 0-shot, MMLU 5-shot, HellaSwag 10-shot as in the paper):
              droptrace eval model/ --task boolq=boolq_val.jsonl \\
                --task mmlu:5=mmlu_test.jsonl,mmlu_dev.jsonl \\
                --task hellaswag:10=hs_val.jsonl,hs_train.jsonl

            The average is the mean over tasks of acc_norm where the task has it, acc otherwise.

            Exit codes: 0 success; 1 bad input or failure, one line naming the file; 64 invalid usage.
            """
    )

    @Argument(help: "Checkpoint directory, or one .safetensors, .bin or .gguf file.")
    var checkpoint: String

    @Option(name: .customLong("task"), help: ArgumentHelp(
        "A task and its files (repeatable): NAME=EVAL_FILE[,FEWSHOT_FILE]; NAME:N=... for N few-shot examples.",
        valueName: "name=file"))
    var tasks: [String] = []

    @Option(help: ArgumentHelp("Few-shot examples per task (default 0).", valueName: "n"))
    var numFewshot: Int?

    // Repeatable: each list adds its layers (a repeated single-value option would keep only the last).
    @Option(help: ArgumentHelp("Attention layers to drop, e.g. 20,24 (0-based; repeatable, the lists add up).", valueName: "i,j"))
    var dropAttention: [LayerList] = []

    @Option(help: ArgumentHelp("MLP layers to drop (0-based; repeatable).", valueName: "i,j"))
    var dropMlp: [LayerList] = []

    @Option(help: ArgumentHelp("Whole blocks to drop (0-based; repeatable).", valueName: "i,j"))
    var dropBlocks: [LayerList] = []

    @OptionGroup var tokenizer: TokenizerOption

    @OptionGroup var engine: EngineOptions

    @OptionGroup var precision: PrecisionOptions

    @Flag(help: "Print {\"tasks\": {NAME: {acc, acc_norm, acc_stderr, acc_norm_stderr, n}}, \"average\"} as JSON.")
    var json = false

    func validate() throws {
        if tasks.isEmpty { throw ValidationError("give at least one --task NAME=EVAL_FILE[,FEWSHOT_FILE]") }
        try validateTaskOptions(tasks: tasks, numFewshot: numFewshot)
    }

    func run() throws {
        try runReportingErrors { log in
            try engine.apply()
            precision.apply()
            let suite = try TaskSuite(try tasks.map { try TaskRequest(argument: $0) }, numFewshot: numFewshot)
            let plan = DropPlan(
                attention: LayerList.union(dropAttention), mlp: LayerList.union(dropMlp), blocks: LayerList.union(dropBlocks))
            let progress = ProgressBar(label: "eval")
            let result = try EvaluationRun.run(
                checkpoint: URL(commandLinePath: checkpoint), suite: suite, plan: plan, tokenizer: tokenizer.directory,
                warn: { log.warning("\($0)") }, progress: progress.update)
            progress.finished()
            log.info("evaluated in \(precision.summary)")
            print(json ? try encodeJSON(WithPrecision(result: result, precision: precision.precision)) : EvaluationTable(result, order: suite.names).text)
        }
    }
}

/// Comma-separated 0-based layer indices.
struct LayerList: ExpressibleByArgument {
    var layers: Set<Int> = []

    init() {}

    init?(argument: String) {
        var layers: Set<Int> = []
        for part in argument.split(separator: ",", omittingEmptySubsequences: false) {
            guard let layer = Int(part.trimmingCharacters(in: .whitespaces)), layer >= 0 else { return nil }
            layers.insert(layer)
        }
        self.layers = layers
    }

    /// Every layer of `lists`.
    static func union(_ lists: [LayerList]) -> Set<Int> {
        lists.reduce(into: []) { $0.formUnion($1.layers) }
    }
}

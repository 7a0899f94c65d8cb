import Architectures
import DroptraceSupport
import Foundation
import Tokenization

/// lm-evaluation-harness tasks read from local files, evaluated as the
/// harness evaluates them (`simple_evaluate` with model "hf", no chat
/// template): the same prompts, few-shot examples, tokens, log-likelihoods,
/// acc, acc_norm and standard errors.
///
/// Files are read and checked once, when the suite is made; `evaluate` can
/// then run on a full model and on its dropped versions.
public struct TaskSuite: Sendable {
    struct LoadedTask: Sendable {
        let kind: any HarnessTask.Type
        let examples: [TaskExample]
        let fewshotExamples: [TaskExample]
        let shots: Int
    }

    let tasks: [LoadedTask]

    /// Tokens per forward pass: larger passes expand each block's weights
    /// fewer times, smaller ones hold less activation memory (about
    /// tokens × intermediate size × 4 bytes at the widest point).
    public var tokensPerPass = 8192
    /// Evaluation documents whose requests are encoded and scored together,
    /// so a large task file never has all its token sequences in memory.
    public var documentsPerChunk = 256

    /// Most few-shot examples per document (far more than any context holds).
    public static let maxFewshot = 1000

    /// The harness's `fewshot_random_seed` default (`DEFAULT_OTHER_SEED`).
    public static let fewshotSeed: UInt64 = 1234

    /// Task names, in the order given.
    public var names: [String] { tasks.map { $0.kind.name } }

    /// Reads every task file of `requests`; `numFewshot` (default 0) applies
    /// to tasks whose request does not set its own count.
    /// - Throws: `DroptraceError` naming the file and line of the first bad
    ///   document (missing field, wrong type, label outside the choices,
    ///   empty file), a task given twice, or a few-shot count the few-shot
    ///   file cannot supply (or no few-shot file).
    public init(_ requests: [TaskRequest], numFewshot: Int?) throws {
        guard !requests.isEmpty else { throw DroptraceError("no tasks to evaluate") }
        var loaded: [LoadedTask] = []
        for request in requests {
            guard let kind = TaskRegistry.task(named: request.name) else {
                throw DroptraceError(
                    "unknown task \(request.name.debugDescription) (supported: \(TaskRequest.supportedNames.joined(separator: ", ")))")
            }
            guard !loaded.contains(where: { $0.kind.name == kind.name }) else {
                throw DroptraceError("task \(kind.name) is given twice", path: request.evaluationFile.path)
            }
            let shots = request.numFewshot ?? numFewshot ?? 0
            guard (0...Self.maxFewshot).contains(shots) else {
                throw DroptraceError("\(kind.name): the few-shot count \(shots) is not between 0 and \(Self.maxFewshot)")
            }
            let (examples, evaluationKinds) = try Self.read(request.evaluationFile, kind)
            var fewshot: [TaskExample] = []
            if shots > 0 {
                guard let file = request.fewshotFile else {
                    throw DroptraceError(
                        "\(kind.name) with \(shots) few-shot examples needs a few-shot file: \(kind.name)=EVAL_FILE,FEWSHOT_FILE "
                            + "(the \(kind.fewshotRule.splitName) split)",
                        path: request.evaluationFile.path)
                }
                let fewshotKinds: FieldKinds
                (fewshot, fewshotKinds) = try Self.read(file, kind)
                try fewshotKinds.checkSame(as: evaluationKinds)
                try Self.checkFewshotSupply(kind, shots: shots, examples: examples, fewshot: fewshot, file: file.path)
            }
            loaded.append(LoadedTask(
                kind: kind, examples: examples, fewshotExamples: fewshot, shots: shots))
        }
        tasks = loaded
    }

    private static func read(_ url: URL, _ kind: any HarnessTask.Type) throws -> ([TaskExample], FieldKinds) {
        var examples: [TaskExample] = []
        var kinds = FieldKinds(path: url.path)
        let keepsIdentity: Bool
        if case .random(excludingEvaluationDocument: true) = kind.fewshotRule { keepsIdentity = true } else { keepsIdentity = false }
        try TaskDocument.forEach(in: url) { document in
            var example = try kind.example(document)
            if keepsIdentity { example.identity = document.identity }
            example.path = document.path
            example.location = document.location
            examples.append(example)
            kinds.add(document)
        }
        return (examples, kinds)
    }

    private static func checkFewshotSupply(
        _ kind: any HarnessTask.Type, shots: Int, examples: [TaskExample], fewshot: [TaskExample], file: String
    ) throws {
        switch kind.fewshotRule {
        case .random(let excluding):
            // The sampler draws n + 1 when it is given the evaluation document.
            let needed = excluding ? shots + 1 : shots
            guard fewshot.count >= needed else {
                throw DroptraceError(
                    "\(fewshot.count) documents are too few for \(shots)-shot \(kind.name) (the harness draws \(needed))",
                    path: file)
            }
        case .firstOfSubject:
            var available: [String: Int] = [:]
            for example in fewshot { available[example.subject ?? "", default: 0] += 1 }
            for subject in Set(examples.compactMap(\.subject)).sorted() where available[subject, default: 0] < shots {
                throw DroptraceError(
                    "\(available[subject, default: 0]) dev documents of subject \(subject) are too few for \(shots)-shot \(kind.name)",
                    path: file)
            }
        }
    }

    /// Every task's scores on `model` with the modules of `plan` dropped.
    ///
    /// `progress(done, total)` counts evaluation documents over all tasks.
    /// - Throws: `DroptraceError` naming the task file and line when a
    ///   document's prompt encodes to no tokens, or is empty or starts with
    ///   the prefix token's text while that token cannot be placed; a choice
    ///   adds no tokens or is longer than the model's positions; a token id
    ///   outside the model's vocabulary, or an answer's beyond a pruned
    ///   head's logits (`LanguageModel.outputVocabularySize`); or what the
    ///   forward pass throws.
    public func evaluate(
        model: any LanguageModel, plan: DropPlan, tokenizer: EvaluationTokenizer,
        progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }
    ) throws -> EvaluationResult {
        try EvaluationResult(tasks: Dictionary(uniqueKeysWithValues: evaluateInDetail(
            model: model, plan: plan, tokenizer: tokenizer, progress: progress).map { ($0.name, $0.metrics) }))
    }

    /// One task's outcome with what led to it (tests compare the log-likelihoods with the harness's).
    struct TaskOutcome {
        let name: String
        let metrics: TaskMetrics
        /// Per evaluation document, per choice.
        let logLikelihoods: [[Double]]
        /// MMLU: per subject.
        let subjects: [String: TaskMetrics]
    }

    func evaluateInDetail(
        model: any LanguageModel, plan: DropPlan, tokenizer: EvaluationTokenizer,
        progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }
    ) throws -> [TaskOutcome] {
        let scorer = LoglikelihoodScorer(
            model: model, plan: plan, head: try model.head(), maxLength: try Self.harnessMaxLength(of: model),
            tokensPerPass: max(1, tokensPerPass))
        let total = tasks.reduce(0) { $0 + $1.examples.count }
        var done = 0
        progress(0, total)
        return try tasks.map { task in
            var sampler = FewshotSampler(rule: task.kind.fewshotRule, pool: task.fewshotExamples, seed: Self.fewshotSeed)
            var encoder = PairEncoder(tokenizer: tokenizer.tokenizer, prefix: tokenizer.prefix)
            var logLikelihoods: [[Double]] = []
            logLikelihoods.reserveCapacity(task.examples.count)
            var chunkStart = 0
            while chunkStart < task.examples.count {
                let chunk = task.examples[chunkStart..<min(task.examples.count, chunkStart + max(1, documentsPerChunk))]
                var requests: [TokenRequest] = []
                for example in chunk {
                    let prefix = try sampler.prefix(for: example, shots: task.shots)
                    for (choice, pair) in PromptFormat.requests(example, prefix: prefix).enumerated() {
                        let request: TokenRequest
                        do {
                            request = try encoder.encode(context: pair.context, continuation: pair.continuation)
                        } catch let unusable as PrefixToken.Unusable {
                            throw Self.failure(unusable.problem, choice: choice, of: example)
                        }
                        try check(request, choice: choice, of: example, model: model, maxLength: scorer.maxLength)
                        requests.append(request)
                    }
                }
                let scores = try scorer.score(requests)
                var offset = 0
                for example in chunk {
                    let choices = Array(scores[offset..<(offset + example.choices.count)])
                    // The harness takes the argmax of NaNs as choice 1: a wrong answer counted, not an error.
                    if let bad = choices.firstIndex(where: { !$0.isFinite }) {
                        throw Self.failure(
                            "the model gives a log-likelihood of \(choices[bad]) (NaN or Inf in its weights or activations: "
                                + "check the checkpoint's tensors)", choice: bad, of: example)
                    }
                    logLikelihoods.append(choices)
                    offset += example.choices.count
                }
                done += chunk.count
                progress(done, total)
                chunkStart = chunk.endIndex
            }
            return outcome(task, logLikelihoods)
        }
    }

    /// Every document's (context, continuation) strings per choice, by task,
    /// as `evaluate` builds them (the harness logs them as `arguments`).
    func requestTexts() throws -> [[[(context: String, continuation: String)]]] {
        try tasks.map { task in
            var sampler = FewshotSampler(rule: task.kind.fewshotRule, pool: task.fewshotExamples, seed: Self.fewshotSeed)
            return try task.examples.map { PromptFormat.requests($0, prefix: try sampler.prefix(for: $0, shots: task.shots)) }
        }
    }

    /// The harness's asserts, the embedding's bounds and the head's (a pruned one's logits), as errors naming the document.
    /// - Parameter maxLength: the harness's `max_length` (`harnessMaxLength`), the scorer's.
    private func check(
        _ request: TokenRequest, choice: Int, of example: TaskExample, model: any LanguageModel, maxLength: Int
    ) throws {
        func failure(_ problem: String) -> DroptraceError { Self.failure(problem, choice: choice, of: example) }
        guard !request.context.isEmpty else { throw failure("the prompt encodes to no tokens") }
        guard !request.continuation.isEmpty else { throw failure("the answer adds no tokens to the prompt") }
        guard request.continuation.count <= maxLength else {
            throw failure("the answer is \(request.continuation.count) tokens, more than the model's \(maxLength) positions")
        }
        // The harness feeds the last max_length tokens but one; a config's n_positions may allow more than the model has.
        let positions = min(request.context.count + request.continuation.count - 1, maxLength)
        guard positions <= model.maxPositions else {
            throw failure(
                "needs \(positions) positions: the harness's max_length is the config's n_positions, \(maxLength), more than the "
                    + "model's \(model.maxPositions), and droptrace runs no position beyond those (set n_positions to at most \(model.maxPositions))")
        }
        if let bad = (request.context + request.continuation).first(where: { $0 < 0 || $0 >= model.vocabularySize }) {
            throw failure("token id \(bad) is outside the model's vocabulary (vocab_size \(model.vocabularySize))")
        }
        // The harness gathers the answer's log-probabilities from the logits: a head pruned to fewer ids has no column for it.
        if let bad = request.continuation.first(where: { $0 >= model.outputVocabularySize }) {
            throw failure(
                "answer token id \(bad) is beyond the model's \(model.outputVocabularySize) logits (output_vocab_size "
                    + "\(model.outputVocabularySize) of vocab_size \(model.vocabularySize)): lm-evaluation-harness cannot gather its "
                    + "log-probability (index out of bounds)")
        }
    }

    /// The harness's `max_length` (HFLM.max_length → `resolve_max_length`,
    /// 0.4.13): of the config's `text_config` when it has one (Gemma-3's
    /// multimodal checkpoints; the section the family reads), else of its top
    /// level, `n_positions` where it has one before `max_position_embeddings`
    /// — a key the family does not read, which transformers keeps as an
    /// attribute all the same; read as Python's `int()` reads it — else the
    /// model's positions. It may exceed them: requests that would then need
    /// more are refused where they are made.
    /// - Throws: `DroptraceError` naming the config when `n_positions` is
    ///   not a count of at least 1 that `int()` reads.
    public static func harnessMaxLength(of model: any LanguageModel) throws -> Int {
        var config = model.checkpoint.configDocument
        var key = "n_positions"
        if let section = model.layerNaming.configSection, let inner = config.member(path: section) {
            config = inner
            key = "\(section).\(key)"
        }
        guard let value = config.member("n_positions"), !value.isNull else { return model.maxPositions }
        guard let length = PythonText.integer(value), length >= 1 else {
            throw DroptraceError(
                "\(key) is not a count of positions the harness reads (int(n_positions), at least 1, is its max_length)",
                path: model.checkpoint.configURL.path)
        }
        return length
    }

    private static func failure(_ problem: String, choice: Int, of example: TaskExample) -> DroptraceError {
        DroptraceError("\(example.location), choice \(choice + 1): \(problem)", path: example.path)
    }

    /// `process_results` per document, then the task's (or MMLU's groups') aggregation.
    private func outcome(_ task: LoadedTask, _ logLikelihoods: [[Double]]) -> TaskOutcome {
        var correct: [Double] = [], correctNormalized: [Double] = []
        for (example, scores) in zip(task.examples, logLikelihoods) {
            correct.append(Self.argmax(scores) == example.gold ? 1 : 0)
            let normalized = zip(scores, example.choices).map { $0 / Double(PythonText.length($1)) }
            correctNormalized.append(Self.argmax(normalized) == example.gold ? 1 : 0)
        }
        let normalized = task.kind.reportsNormalizedAccuracy ? correctNormalized : nil
        guard case .firstOfSubject = task.kind.fewshotRule else {
            return TaskOutcome(
                name: task.kind.name, metrics: Aggregation.metrics(correct: correct, correctNormalized: normalized),
                logLikelihoods: logLikelihoods, subjects: [:])
        }
        // MMLU: the group aggregates its leaf tasks, the subjects (in the
        // harness's category order), weighting by size and pooling stderrs;
        // the categories in between do not enter the numbers.
        var bySubject: [String: [Double]] = [:]
        for (example, score) in zip(task.examples, correct) { bySubject[example.subject ?? "", default: []].append(score) }
        let subjects = bySubject.mapValues { Aggregation.metrics(correct: $0, correctNormalized: nil) }
        let leaves = MMLU.Category.allCases.flatMap { category in
            subjects.keys.filter { MMLU.categories[$0] == category }.sorted().compactMap { subjects[$0] }
        }
        return TaskOutcome(
            name: task.kind.name, metrics: Aggregation.group(leaves), logLikelihoods: logLikelihoods, subjects: subjects)
    }

    /// numpy's argmax: the first maximum (the first NaN if there is one).
    static func argmax(_ values: [Double]) -> Int {
        if let nan = values.firstIndex(where: \.isNaN) { return nan }
        var best = 0
        for index in values.indices where values[index] > values[best] { best = index }
        return best
    }
}

extension FewshotRule {
    /// The split the harness takes few-shot examples from.
    var splitName: String {
        switch self {
        case .random: return "train"
        case .firstOfSubject: return "dev"
        }
    }
}

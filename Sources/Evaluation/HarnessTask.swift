/// One lm-evaluation-harness task: what its YAML (`doc_to_text`,
/// `doc_to_choice`, `doc_to_target`, `process_docs`, metrics, splits) makes
/// of a document of its dataset. Each task is one small type in Tasks/,
/// listed in `TaskRegistry`.
protocol HarnessTask: Sendable {
    /// The harness's task name, used on the command line and in results.
    static var name: String { get }
    /// The Hugging Face dataset (and configuration) whose rows the task file holds.
    static var dataset: String { get }
    /// Whether the YAML's `metric_list` has `acc_norm` (besides `acc`).
    static var reportsNormalizedAccuracy: Bool { get }
    /// How the harness draws few-shot documents for this task.
    static var fewshotRule: FewshotRule { get }
    /// The document as the YAML reads it.
    /// - Throws: `DroptraceError` naming the file and line for a missing
    ///   field, a wrong type or a label outside the choices.
    static func example(_ document: TaskDocument) throws -> TaskExample
}

/// Where few-shot documents come from (`fewshot_config` / the default sampler).
enum FewshotRule: Sendable {
    /// The default sampler: `Random(1234).sample(fewshot_docs, n)` per
    /// evaluation document, one generator per task. When the task has no
    /// `test_split` the harness passes the evaluation document to the
    /// sampler (its few-shot split equals the test split, both None), which
    /// then draws n + 1 and drops copies of that document.
    case random(excludingEvaluationDocument: Bool)
    /// `sampler: first_n` from the same subject's dev split (MMLU).
    case firstOfSubject
}

/// A document as a prompt: the pieces the harness's `fewshot_context` and
/// `construct_requests` join.
struct TaskExample: Sendable {
    enum Prompt: Sendable {
        /// `doc_to_text` followed by each choice (most tasks).
        case question(String)
        /// One context per choice (the choices themselves) followed by a
        /// shared continuation: WinoGrande's partial evaluation, where
        /// `doc_to_text` is the gold index.
        case sharedContinuation(String)
    }

    var prompt: Prompt
    /// `doc_to_choice`.
    var choices: [String]
    /// The gold choice.
    var gold: Int
    /// MMLU's subject: its task description, few-shot pool and group.
    var subject: String? = nil
    /// The document as Python compares it, kept only where the sampler
    /// excludes the evaluation document.
    var identity: String? = nil
    /// Where the document is, for messages.
    var path = ""
    var location = DocumentLocation(line: 0)
}

/// The harness's defaults for every task here (`TaskConfig`).
enum PromptFormat {
    static let targetDelimiter = " "
    static let fewshotDelimiter = "\n\n"

    /// A few-shot example as `build_qa_turn` renders it: question, target
    /// delimiter, gold answer, few-shot delimiter.
    static func fewshotText(_ example: TaskExample) -> String {
        switch example.prompt {
        case .question(let text):
            return text + targetDelimiter + example.choices[example.gold] + fewshotDelimiter
        case .sharedContinuation(let continuation):
            // The gold context is the question and the continuation the
            // answer; an empty answer leaves only the question (no delimiters).
            let context = example.choices[example.gold]
            return continuation.isEmpty ? context : context + targetDelimiter + continuation + fewshotDelimiter
        }
    }

    /// (context, continuation) per choice, after `prefix` (description and few-shot examples).
    static func requests(_ example: TaskExample, prefix: String) -> [(context: String, continuation: String)] {
        switch example.prompt {
        case .question(let text):
            return example.choices.map { (prefix + text, targetDelimiter + $0) }
        case .sharedContinuation(let continuation):
            return example.choices.map { (prefix + $0, targetDelimiter + continuation) }
        }
    }
}

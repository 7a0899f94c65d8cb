/// `arc_easy` and `arc_challenge` (allenai/ai2_arc, ARC-Easy / ARC-Challenge):
/// `lm_eval/tasks/arc/arc_easy.yaml` (arc_challenge.yaml includes it).
/// Labels are letters or digits ("A"…"E", "1"…"5"); the gold index is
/// `choices.label.index(answerKey)`.
enum ARCEasy: HarnessTask {
    static let name = "arc_easy"
    static let dataset = "allenai/ai2_arc (ARC-Easy)"
    static let reportsNormalizedAccuracy = true
    static let fewshotRule = ARCPrompt.fewshotRule
    static func example(_ document: TaskDocument) throws -> TaskExample { try ARCPrompt.example(document) }
}

enum ARCChallenge: HarnessTask {
    static let name = "arc_challenge"
    static let dataset = "allenai/ai2_arc (ARC-Challenge)"
    static let reportsNormalizedAccuracy = true
    static let fewshotRule = ARCPrompt.fewshotRule
    static func example(_ document: TaskDocument) throws -> TaskExample { try ARCPrompt.example(document) }
}

enum ARCPrompt {
    /// The YAML has a test split, so the sampler is not given the evaluation document.
    static let fewshotRule = FewshotRule.random(excludingEvaluationDocument: false)

    /// "Question: {{question}}\nAnswer:", choices `choices.text`.
    static func example(_ document: TaskDocument) throws -> TaskExample {
        let question = try document.string("question")
        let (choices, gold) = try document.labelledChoices(answerKey: try document.string("answerKey"))
        return TaskExample(prompt: .question("Question: \(question)\nAnswer:"), choices: choices, gold: gold)
    }
}

extension TaskDocument {
    /// `choices.text` and the index of `answerKey` in `choices.label` (ARC, OpenBookQA).
    func labelledChoices(answerKey: String) throws -> (choices: [String], gold: Int) {
        let texts = try strings("text", within: "choices")
        let labels = try strings("label", within: "choices")
        guard !texts.isEmpty, texts.count == labels.count else {
            throw failure("\"choices.text\" and \"choices.label\" should be non-empty lists of the same length")
        }
        guard let gold = labels.firstIndex(where: { PythonText.equal($0, answerKey) }) else {
            throw failure("answerKey \(answerKey.debugDescription) is not among choices.label \(labels)")
        }
        return (texts, gold)
    }

    /// A label written as decimal digits, as a string (HellaSwag's "3") or an
    /// integer; Python's `ast.literal_eval` of the rendered "{{label}}".
    func digitLabel(_ key: String) throws -> Int {
        switch try value(key) {
        case .integer(let number) where number >= 0:
            return number
        case .string(let text):
            guard let number = Int(text), text.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
                  text == "0" || !text.hasPrefix("0") else {
                throw failure("\"\(key)\" is \(text.debugDescription), not a label number (the test split has no labels)")
            }
            return number
        default:
            throw failure("\"\(key)\" should be a label number")
        }
    }
}

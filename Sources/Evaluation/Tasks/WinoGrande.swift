/// `winogrande` (allenai/winogrande, winogrande_xl):
/// `lm_eval/tasks/winogrande/default.yaml` and `preprocess_winogrande.py`.
/// Partial evaluation: each option fills the blank to make one context,
/// and the rest of the sentence after the blank is the shared continuation
/// whose likelihood is compared. acc only.
enum WinoGrande: HarnessTask {
    static let name = "winogrande"
    static let dataset = "allenai/winogrande (winogrande_xl)"
    static let reportsNormalizedAccuracy = false
    static let fewshotRule = FewshotRule.random(excludingEvaluationDocument: true)

    /// choices = sentence[:i] + option, continuation = sentence[i+1:].strip()
    /// for the first "_" at i; gold = {"1": 0, "2": 1}[answer].
    static func example(_ document: TaskDocument) throws -> TaskExample {
        let sentence = try document.string("sentence")
        guard let blank = PythonText.index(of: "_", in: sentence) else {
            throw document.failure("\"sentence\" has no \"_\" blank")
        }
        let length = PythonText.length(sentence)
        let before = PythonText.slice(sentence, 0..<blank)
        let after = PythonText.strip(PythonText.slice(sentence, (blank + 1)..<length))
        let options = [try document.string("option1"), try document.string("option2")]
        let gold: Int
        switch try document.string("answer") {
        case "1": gold = 0
        case "2": gold = 1
        case let other: throw document.failure("\"answer\" is \(other.debugDescription), not \"1\" or \"2\"")
        }
        return TaskExample(prompt: .sharedContinuation(after), choices: options.map { before + $0 }, gold: gold)
    }
}

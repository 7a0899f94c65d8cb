/// `openbookqa` (allenai/openbookqa, main): `lm_eval/tasks/openbookqa/openbookqa.yaml`.
enum OpenBookQA: HarnessTask {
    static let name = "openbookqa"
    static let dataset = "allenai/openbookqa (main)"
    static let reportsNormalizedAccuracy = true
    static let fewshotRule = FewshotRule.random(excludingEvaluationDocument: false)

    /// text `question_stem`, choices `choices.text`, gold
    /// `choices.label.index(answerKey.lstrip())`.
    static func example(_ document: TaskDocument) throws -> TaskExample {
        let stem = try document.string("question_stem")
        let (choices, gold) = try document.labelledChoices(answerKey: PythonText.lstrip(try document.string("answerKey")))
        return TaskExample(prompt: .question(stem), choices: choices, gold: gold)
    }
}

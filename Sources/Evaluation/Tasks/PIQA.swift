/// `piqa` (baber/piqa, ybisk/piqa's fields): `lm_eval/tasks/piqa/piqa.yaml`.
enum PIQA: HarnessTask {
    static let name = "piqa"
    static let dataset = "baber/piqa"
    static let reportsNormalizedAccuracy = true
    static let fewshotRule = FewshotRule.random(excludingEvaluationDocument: true)

    /// "Question: {{goal}}\nAnswer:", choices [sol1, sol2], target `label`.
    static func example(_ document: TaskDocument) throws -> TaskExample {
        let goal = try document.string("goal")
        let choices = [try document.string("sol1"), try document.string("sol2")]
        return TaskExample(
            prompt: .question("Question: \(goal)\nAnswer:"), choices: choices, gold: try document.target("label", choices: choices))
    }
}

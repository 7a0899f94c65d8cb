/// `boolq` (aps/super_glue, boolq): `lm_eval/tasks/super_glue/boolq/default.yaml`. acc only.
enum BoolQ: HarnessTask {
    static let name = "boolq"
    static let dataset = "aps/super_glue (boolq)"
    static let reportsNormalizedAccuracy = false
    static let fewshotRule = FewshotRule.random(excludingEvaluationDocument: true)

    /// "{{passage}}\nQuestion: {{question}}?\nAnswer:", choices ["no", "yes"], target `label`.
    static func example(_ document: TaskDocument) throws -> TaskExample {
        let passage = try document.string("passage"), question = try document.string("question")
        let choices = ["no", "yes"]
        return TaskExample(
            prompt: .question("\(passage)\nQuestion: \(question)?\nAnswer:"), choices: choices,
            gold: try document.target("label", choices: choices))
    }
}

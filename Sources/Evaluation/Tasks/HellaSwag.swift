/// `hellaswag` (Rowan/hellaswag): `lm_eval/tasks/hellaswag/hellaswag.yaml`
/// and its `utils.py` (`process_docs`, `preprocess`).
enum HellaSwag: HarnessTask {
    static let name = "hellaswag"
    static let dataset = "Rowan/hellaswag"
    static let reportsNormalizedAccuracy = true
    static let fewshotRule = FewshotRule.random(excludingEvaluationDocument: true)

    /// query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
    /// choices = preprocess(endings), target = int("{{label}}").
    static func example(_ document: TaskDocument) throws -> TaskExample {
        let context = try document.string("ctx_a") + " " + PythonText.capitalize(try document.string("ctx_b"))
        let query = preprocess(try document.string("activity_label") + ": " + context)
        let choices = try document.strings("endings").map(preprocess)
        guard !choices.isEmpty else { throw document.failure("\"endings\" is empty") }
        let label = try document.digitLabel("label")
        return TaskExample(
            prompt: .question(query), choices: choices,
            gold: try document.label(label, field: "label", choices: choices.count))
    }

    /// `preprocess`: strip, " [title]" → ". ", drop `[...]` (no newline
    /// inside, shortest match), then "  " → " " once, left to right.
    static func preprocess(_ text: String) -> String {
        let titled = PythonText.replace(PythonText.strip(text), " [title]", with: ". ")
        let scalars = Array(titled.unicodeScalars)
        // The first "]" or line break at or after each position, found in one pass from the end (searching
        // forward from every "[" took minutes for 300,000 of them without a "]").
        var stop = [Int](repeating: scalars.count, count: scalars.count + 1)
        for index in scalars.indices.reversed() {
            stop[index] = scalars[index] == "]" || scalars[index] == "\n" ? index : stop[index + 1]
        }
        var kept = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            if scalars[i] == "[", case let close = stop[i + 1], close < scalars.count, scalars[close] == "]" {
                i = close + 1
                continue
            }
            kept.append(scalars[i])
            i += 1
        }
        return PythonText.replace(String(kept), "  ", with: " ")
    }
}

import Analysis
import ScoreStore

/// The report's section on `trace --eval`: perplexity per checkpoint, full
/// and without drop-k attention sets.
struct EvaluationSection {
    let evaluation: DropEvaluation
    let rows: [CheckpointRow]
    let dropK: [Int]

    static let title = "Does dropping work at every stage?"

    func render() -> String {
        var headers = ["Step", "Checkpoint", "Full"]
        for k in dropK { headers += ["Own drop-\(k)", "Final's drop-\(k)"] }
        var table = MarkdownTable(headers, alignments: [.right, .left] + Array(repeating: .right, count: headers.count - 2))
        var missing = false
        func format(_ value: Double?) -> String {
            guard let value, !value.isNaN else {
                missing = true
                return NumberFormatting.undefined
            }
            return NumberFormatting.fixed(value, 3)
        }
        for row in rows {
            let values = evaluation.byCheckpoint[row.name] ?? DropEvaluation.Perplexities()
            var cells = [NumberFormatting.step(row.step), Markdown.escape(row.name), format(values.full)]
            for k in dropK { cells += [format(values.own[k]), format(values.final[k])] }
            table.add(cells)
        }
        return "## \(Self.title)\n\n"
            + "Perplexity of each checkpoint on the evaluation set: the full model, the model without its own drop-k "
            + "attention layers, and without the final checkpoint's (\(Markdown.escape(evaluation.finalCheckpoint))) "
            + "drop-k attention layers. Evaluation tokens: sha256 `\(evaluation.evaluationSHA256.prefix(16))…`.\n\n"
            + table.render()
            + (missing
                ? "\n\(NumberFormatting.undefined): not measured: the run that needed this value had no `--eval` (a drop-k "
                    + "added, a checkpoint rescored, the final drop set changed; `trace --eval` fills it in), or the checkpoint "
                    + "was no longer on disk then.\n"
                : "")
    }
}

import Evaluation
import Foundation

/// The readable form of an evaluation result.
struct EvaluationTable {
    let result: EvaluationResult
    let order: [String]

    init(_ result: EvaluationResult, order: [String]) {
        self.result = result
        self.order = order
    }

    var text: String {
        var lines = [row("task", "acc", "± stderr", "acc_norm", "± stderr", "n")]
        for name in order {
            guard let metrics = result.tasks[name] else { continue }
            lines.append(row(
                name, format(metrics.acc), format(metrics.acc_stderr), metrics.acc_norm.map(format) ?? "-",
                metrics.acc_norm_stderr.map(format) ?? "-", "\(metrics.n)"))
        }
        lines.append("")
        lines.append("average (acc_norm where the task has it, else acc): \(format(result.average))")
        return lines.joined(separator: "\n")
    }

    private func row(_ cells: String...) -> String {
        let widths = [16, 9, 11, 10, 11, 0]
        return zip(cells, widths).map { $1 == 0 ? $0 : $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined()
    }

    private func format(_ value: Double) -> String { value.isNaN ? "N/A" : String(format: "%.4f", value) }
}

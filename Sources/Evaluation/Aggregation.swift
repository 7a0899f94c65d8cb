import Foundation

/// lm-evaluation-harness's aggregations (`lm_eval/api/metrics.py`,
/// `lm_eval/api/group.py`), in its order of operations.
enum Aggregation {
    /// `mean`: sum / len.
    static func mean(_ values: [Double]) -> Double {
        values.reduce(0, +) / Double(values.count)
    }

    /// `mean_stderr`: sample standard deviation / √n; NaN ("N/A") for fewer than two values.
    static func meanStandardError(_ values: [Double]) -> Double {
        guard values.count > 1 else { return .nan }
        let mu = mean(values)
        let squares = values.reduce(0.0) { $0 + ($1 - mu) * ($1 - mu) }
        return (squares / Double(values.count - 1)).squareRoot() / Double(values.count).squareRoot()
    }

    /// `aggregate_subtask_metrics` with `weight_by_size`: Σ metric·size / Σ size.
    static func weightedMean(_ values: [Double], sizes: [Int]) -> Double {
        zip(values, sizes).reduce(0.0) { $0 + $1.0 * Double($1.1) } / Double(sizes.reduce(0, +))
    }

    /// `pooled_sample_stderr`: √(Σ (n−1)·se²·n / (Σn − k) / Σn); NaN when any is NaN.
    static func pooledStandardError(_ stderrs: [Double], sizes: [Int]) -> Double {
        guard !stderrs.contains(where: \.isNaN) else { return .nan }
        let total = sizes.reduce(0, +)
        let pooledVariance = zip(stderrs, sizes).reduce(0.0) { $0 + Double($1.1 - 1) * ($1.0 * $1.0) * Double($1.1) }
            / Double(total - sizes.count)
        return (pooledVariance / Double(total)).squareRoot()
    }

    /// A task's metrics from per-document scores (1 or 0 each).
    static func metrics(correct: [Double], correctNormalized: [Double]?) -> TaskMetrics {
        TaskMetrics(
            acc: mean(correct), acc_norm: correctNormalized.map(mean),
            acc_stderr: meanStandardError(correct), acc_norm_stderr: correctNormalized.map(meanStandardError),
            n: correct.count)
    }

    /// A size-weighted group of tasks (`Group.aggregate` over its leaf tasks:
    /// MMLU's subjects); only acc, as the groups' `aggregate_metric_list` says.
    static func group(_ members: [TaskMetrics]) -> TaskMetrics {
        let sizes = members.map(\.n)
        return TaskMetrics(
            acc: weightedMean(members.map(\.acc), sizes: sizes), acc_norm: nil,
            acc_stderr: pooledStandardError(members.map(\.acc_stderr), sizes: sizes), acc_norm_stderr: nil,
            n: sizes.reduce(0, +))
    }
}

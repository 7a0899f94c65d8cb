import Foundation

/// One task's scores, with lm-evaluation-harness's key names in JSON.
///
/// A standard error the harness reports as "N/A" (a single document, or a
/// group with such a member) is NaN here and null in JSON.
public struct TaskMetrics: Codable, Sendable, Equatable {
    /// Fraction of documents whose gold choice has the highest summed log-likelihood.
    public var acc: Double
    /// Same with each log-likelihood divided by the choice's length in
    /// characters; nil where the task's YAML has no acc_norm.
    public var acc_norm: Double?
    /// Sample standard deviation of the per-document scores / √n (MMLU: pooled over subjects).
    public var acc_stderr: Double
    public var acc_norm_stderr: Double?
    /// Documents evaluated.
    public var n: Int

    public init(acc: Double, acc_norm: Double?, acc_stderr: Double, acc_norm_stderr: Double?, n: Int) {
        self.acc = acc
        self.acc_norm = acc_norm
        self.acc_stderr = acc_stderr
        self.acc_norm_stderr = acc_norm_stderr
        self.n = n
    }

    /// The task's number in the paper's average: acc_norm where the task
    /// has it (HellaSwag, ARC, PIQA, OpenBookQA), acc otherwise (BoolQ,
    /// WinoGrande, MMLU) — the Open LLM Leaderboard's convention.
    public var headline: Double { acc_norm ?? acc }

    public static func == (a: TaskMetrics, b: TaskMetrics) -> Bool {
        func same(_ x: Double?, _ y: Double?) -> Bool {
            switch (x, y) {
            case (nil, nil): return true
            case let (x?, y?): return x == y || (x.isNaN && y.isNaN)
            default: return false
            }
        }
        return same(a.acc, b.acc) && same(a.acc_norm, b.acc_norm) && same(a.acc_stderr, b.acc_stderr)
            && same(a.acc_norm_stderr, b.acc_norm_stderr) && a.n == b.n
    }

    private enum CodingKeys: String, CodingKey { case acc, acc_norm, acc_stderr, acc_norm_stderr, n }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        acc = try container.decode(Double.self, forKey: .acc)
        acc_norm = try container.decodeIfPresent(Double.self, forKey: .acc_norm)
        acc_stderr = try container.decodeIfPresent(Double.self, forKey: .acc_stderr) ?? .nan
        acc_norm_stderr = try container.decodeIfPresent(Double.self, forKey: .acc_norm_stderr)
        if acc_norm != nil && acc_norm_stderr == nil { acc_norm_stderr = .nan }
        n = try container.decode(Int.self, forKey: .n)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(acc, forKey: .acc)
        try container.encodeIfPresent(acc_norm, forKey: .acc_norm)
        if acc_stderr.isNaN { try container.encodeNil(forKey: .acc_stderr) } else { try container.encode(acc_stderr, forKey: .acc_stderr) }
        if let stderr = acc_norm_stderr {
            if stderr.isNaN { try container.encodeNil(forKey: .acc_norm_stderr) } else { try container.encode(stderr, forKey: .acc_norm_stderr) }
        }
        try container.encode(n, forKey: .n)
    }
}

/// Scores of every task of a suite.
public struct EvaluationResult: Codable, Sendable, Equatable {
    /// By task name.
    public var tasks: [String: TaskMetrics]
    /// Mean over tasks of each task's `headline` metric (the paper's Avg.).
    public var average: Double

    public init(tasks: [String: TaskMetrics]) {
        self.tasks = tasks
        // In name order, so the sum is the same on every run.
        let headlines = tasks.sorted { $0.key < $1.key }.map(\.value.headline)
        average = headlines.isEmpty ? .nan : headlines.reduce(0, +) / Double(headlines.count)
    }
}

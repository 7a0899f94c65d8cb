import Foundation

/// The spread of one series of per-round values: median, interquartile range
/// (numpy's default linear interpolation) and range, in the series' unit.
public struct Spread: Sendable, Codable, Equatable {
    public var median: Double
    public var q1: Double
    public var q3: Double
    public var min: Double
    public var max: Double

    /// The spread of `values` (at least one).
    public init(_ values: [Double]) {
        precondition(!values.isEmpty)
        let sorted = values.sorted()
        func quantile(_ p: Double) -> Double {
            let position = p * Double(sorted.count - 1)
            let low = Int(position.rounded(.down)), high = Swift.min(low + 1, sorted.count - 1)
            return sorted[low] + (position - Double(low)) * (sorted[high] - sorted[low])
        }
        median = quantile(0.5)
        q1 = quantile(0.25)
        q3 = quantile(0.75)
        min = sorted[0]
        max = sorted[sorted.count - 1]
    }
}

/// Whether the dropped model is faster than the full one by more than noise.
public enum SpeedVerdict: String, Sendable, Codable {
    case faster
    case slower
    case withinNoise = "within noise"
}

/// One speed metric of the full and the dropped model over paired rounds
/// (each round timed both, one after the other).
public struct PairedSpeed: Sendable, Codable, Equatable {
    /// Per-round values of each model, in the metric's unit.
    public var full: Spread
    public var dropped: Spread
    /// Per-round speed-up of the dropped model in percent (> 0: faster),
    /// from the round's own pair, so drifts of the machine's load cancel.
    public var speedupPercent: Spread
    public var rounds: Int
    public var droppedFasterRounds: Int
    public var droppedSlowerRounds: Int
    /// Two-sided exact sign test over the paired rounds (ties left out).
    public var pValue: Double
    public var verdict: SpeedVerdict

    /// A difference counts as real only at this sign-test level; with fewer
    /// than 8 untied rounds it cannot (8 of 8 one way gives p = 0.0078).
    public static let significance = 0.01

    /// `full[i]` and `dropped[i]` were measured in round i; `higherIsBetter`
    /// says which way is faster (tokens/s: true; ms/token: false).
    public init(full: [Double], dropped: [Double], higherIsBetter: Bool) {
        precondition(!full.isEmpty && full.count == dropped.count)
        let speedups = zip(full, dropped).map { full, dropped in
            100 * ((higherIsBetter ? dropped / full : full / dropped) - 1)
        }
        self.full = Spread(full)
        self.dropped = Spread(dropped)
        speedupPercent = Spread(speedups)
        rounds = full.count
        droppedFasterRounds = speedups.filter { $0 > 0 }.count
        droppedSlowerRounds = speedups.filter { $0 < 0 }.count
        pValue = Self.signTest(droppedFasterRounds, droppedSlowerRounds)
        verdict = pValue > Self.significance ? .withinNoise : droppedFasterRounds > droppedSlowerRounds ? .faster : .slower
    }

    /// P(a split at least as uneven as `a` : `b`) when either model is
    /// equally likely to win a round: 2 · P(X ≤ min(a, b)), X ~ Binomial(a + b, ½).
    static func signTest(_ a: Int, _ b: Int) -> Double {
        let n = a + b
        guard n > 0 else { return 1 }
        // In logarithms: C(n, i) / 2ⁿ overflows a Double long before n does.
        func probability(_ i: Int) -> Double {
            let logChoose: Double = lgamma(Double(n + 1)) - lgamma(Double(i + 1)) - lgamma(Double(n - i + 1))
            return exp(logChoose - Double(n) * log(2.0))
        }
        let tail: Double = (0...Swift.min(a, b)).map(probability).reduce(0, +)
        return Swift.min(1, 2 * tail)
    }

    enum CodingKeys: String, CodingKey {
        case full, dropped, rounds, verdict
        case speedupPercent = "speedup_percent"
        case droppedFasterRounds = "dropped_faster_rounds"
        case droppedSlowerRounds = "dropped_slower_rounds"
        case pValue = "p_value"
    }
}

/// Why the timing rounds ended.
public enum SpeedStop: String, Sendable, Codable {
    /// Every tracked median moved less than `RoundPolicy.tolerance` over the
    /// last two rounds, and each paired sign test is decided or cannot be
    /// within the rounds left.
    case stable
    case maxRounds = "max rounds"
    /// Another round would have overrun the wall-time budget.
    case budget
}

/// When to stop timing rounds.
public struct RoundPolicy: Sendable, Equatable {
    public var minRounds = 8
    public var maxRounds = 20
    /// Relative change of a median that still counts as stable.
    public var tolerance = 0.01
    /// Wall time for the whole measurement, warm-up included, in seconds.
    public var budgetSeconds = 120.0

    public init() {}

    /// Why to stop after the rounds in `series` (each tracked metric's
    /// per-round values, all of equal length, in pairs of the full and the
    /// dropped model's: prefill, then decode), `elapsed` seconds in, the last
    /// round having taken `lastRound` seconds; nil: time another round.
    /// Settled medians stop the rounds only once each pair's sign test is
    /// decided, or no longer can be within `maxRounds`: a steady +20%
    /// faster in 7 of 8 rounds stopped there, reported as within noise.
    public func stop(series: [[Double]], elapsed: Double, lastRound: Double) -> SpeedStop? {
        let rounds = series.first?.count ?? 0
        if rounds >= maxRounds { return .maxRounds }
        if rounds >= Swift.max(minRounds, 3) && series.allSatisfy(Self.isStable(tolerance)) && signTestsSettled(series) {
            return .stable
        }
        if rounds >= 1 && elapsed + lastRound > budgetSeconds { return .budget }
        return nil
    }

    /// Whether each (full, dropped) pair of `series` tells the models apart,
    /// or could not even if every round left went the leading way.
    func signTestsSettled(_ series: [[Double]]) -> Bool {
        stride(from: 0, to: series.count - 1, by: 2).allSatisfy { index in
            let paired = PairedSpeed(full: series[index], dropped: series[index + 1], higherIsBetter: true)
            guard paired.verdict == .withinNoise else { return true }
            let leading = Swift.max(paired.droppedFasterRounds, paired.droppedSlowerRounds)
            let trailing = Swift.min(paired.droppedFasterRounds, paired.droppedSlowerRounds)
            return PairedSpeed.signTest(leading + Swift.max(0, maxRounds - paired.rounds), trailing) > PairedSpeed.significance
        }
    }

    /// The median of all rounds and of all but the last one or two differ by
    /// less than `tolerance` of the latest median.
    static func isStable(_ tolerance: Double) -> ([Double]) -> Bool {
        { values in
            let latest = Spread(values).median
            return (1...2).allSatisfy { abs(Spread(Array(values.dropLast($0))).median - latest) <= tolerance * abs(latest) }
        }
    }
}

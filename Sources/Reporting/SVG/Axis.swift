import Foundation

/// Tick placement and tick labels.
enum Ticks {
    /// A "nice" step (1, 2 or 5 × 10ⁿ) near `raw`.
    static func niceStep(_ raw: Double) -> Double {
        guard raw > 0, raw.isFinite else { return 1 }
        let magnitude = pow(10, floor(log10(raw)))
        let fraction = raw / magnitude
        let nice: Double = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10
        return nice * magnitude
    }

    /// Tick values at multiples of a nice step inside [lo, hi], about `target`
    /// of them and at least two (a short colour bar over 0.01–0.3 got the
    /// one tick 0.2, which shows no scale).
    static func values(_ lo: Double, _ hi: Double, target: Int) -> (values: [Double], step: Double) {
        var ticks = evenlySpaced(lo, hi, target: target)
        for finer in [2, 4] where ticks.values.count < 2 && hi > lo {
            ticks = evenlySpaced(lo, hi, target: max(1, target) * finer)
        }
        return ticks
    }

    private static func evenlySpaced(_ lo: Double, _ hi: Double, target: Int) -> (values: [Double], step: Double) {
        guard hi > lo else { return ([lo], 1) }
        let step = niceStep((hi - lo) / Double(max(1, target)))
        // Ticks by index, not by adding the step: where the step is below
        // the values' resolution (steps near 2^53) adding it changes nothing.
        let first = ceil(lo / step - 1e-9), last = floor(hi / step + 1e-9)
        guard first <= last, last - first <= Double(4 * max(1, target) + 8) else { return ([lo, hi], hi - lo) }
        var values: [Double] = []
        for index in 0...Int(last - first) {
            let tick = (first + Double(index)) * step
            // Snap -0.0; values that no longer differ at this magnitude appear once.
            let value = abs(tick) < step * 1e-9 ? 0 : tick
            if values.last != value { values.append(value) }
        }
        return (values, step)
    }

    /// Enough decimals to tell ticks `step` apart, and no more; a real
    /// minus sign, which is as wide as a digit and reads better than "-".
    /// Steps below 10⁻⁶, past six decimals (near-identity modules'
    /// importances, ~1e-7), take powers of ten, "4.5e−8": six decimals read
    /// 0.000000 for every tick.
    static func label(_ value: Double, step: Double) -> String {
        let text: String
        if step < 1e-6, step > 0, value == 0 {
            text = "0"
        } else if step < 1e-6, step > 0, value.isFinite {
            // Digits after the mantissa's point down to the step's first digit.
            let digits = max(0, Int(floor(log10(abs(value)))) - Int(floor(log10(step) + 1e-9)))
            text = String(format: "%.\(digits)e", value).replacingOccurrences(of: "e-0", with: "e-").replacingOccurrences(of: "e-", with: "e−")
        } else {
            let decimals = step >= 1 ? 0 : min(6, Int(ceil(-log10(step) - 1e-9)))
            text = String(format: "%.\(decimals)f", value)
        }
        return text.hasPrefix("-") ? "−" + text.dropFirst() : text
    }

    /// Short labels for steps and token counts, `significant` digits
    /// (about three by default): 950, 1.5k, 11.5k, 143k, 2M, 1.2B.
    static func compact(_ value: Double, significant: Int = 3) -> String {
        // Round to the significant digits first, so 999,950 becomes "1M", not "1000k".
        var value = value
        if value != 0 && value.isFinite {
            let unit = pow(10, floor(log10(abs(value))) - Double(significant - 1))
            value = (value / unit).rounded() * unit
        }
        let units: [(Double, String)] = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")]
        for (size, suffix) in units where abs(value) >= size {
            return trimmed(value / size, significant: significant) + suffix
        }
        return trimmed(value, significant: significant)
    }

    /// `compact` labels of `values` with as few significant digits (three
    /// or more) as tell them apart: checkpoints 100,000 to 100,500 steps
    /// apart all read "100k" with three.
    static func compactLabels(_ values: [Double]) -> [String] {
        let distinct = Set(values).count
        for significant in 3...16 {
            let labels = values.map { compact($0, significant: significant) }
            if Set(labels).count == distinct { return labels }
        }
        return values.map { compact($0, significant: 17) }
    }

    /// `significant` digits in all (for 3: two decimals below 10, one below
    /// 100, none above); no trailing zeros.
    private static func trimmed(_ value: Double, significant: Int) -> String {
        let integerDigits = abs(value) >= 1 ? Int(floor(log10(abs(value)))) + 1 : 1
        let decimals = max(0, significant - integerDigits)
        var text = String(format: "%.\(decimals)f", value)
        guard decimals > 0 else { return text }
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }
}

/// A linear map from data values to pixels.
struct LinearScale {
    var domain: (Double, Double)
    var range: (Double, Double)

    func position(_ value: Double) -> Double {
        let span = domain.1 - domain.0
        guard span != 0 else { return (range.0 + range.1) / 2 }
        return range.0 + (value - domain.0) / span * (range.1 - range.0)
    }
}

/// The x axis of the charts over training: steps on a linear or log scale,
/// or checkpoint indices when steps are unknown or not increasing.
enum StepAxis: Equatable {
    case linear(lo: Double, hi: Double)
    /// Log scale over the positive steps; step 0, which a log scale cannot
    /// show, sits at the left edge behind a short gap with its own "0" tick.
    case log(lo: Double, hi: Double, hasZero: Bool)
    /// `stepsKnown`: every step is known, but they do not increase (several
    /// branches of one run, such as OLMo 2's stage-2 ingredients).
    case index(count: Int, stepsKnown: Bool)

    /// Log when a linear axis would squeeze the early checkpoints, where
    /// redundancy emerges, into a few pixels: the positive steps span more
    /// than two decades, or at least one and half of them (of four or more)
    /// lie in the first tenth of the span (a schedule saving more often
    /// early, as 10, 25, 50, 100, …, 1000). Linear otherwise; indices when
    /// steps are unknown or not increasing.
    static func choose(steps: [Int64]) -> StepAxis {
        let known = !steps.isEmpty && steps.allSatisfy { $0 >= 0 }
            && zip(steps, steps.dropFirst()).allSatisfy { $0 < $1 }
        guard known else { return .index(count: steps.count, stepsKnown: !steps.isEmpty && steps.allSatisfy { $0 >= 0 }) }
        let positive = steps.filter { $0 > 0 }.map(Double.init)
        if let lo = positive.first, let hi = positive.last, positive.count >= 2 {
            let early = positive.filter { $0 - lo <= (hi - lo) / 10 }.count
            if hi / lo > 100 || (hi / lo >= 10 && positive.count >= 4 && 2 * early >= positive.count) {
                return .log(lo: lo, hi: hi, hasZero: steps.contains(0))
            }
        }
        let lo = Double(steps.first!), hi = Double(steps.last!)
        if lo == hi {
            let pad = max(1, abs(lo) * 0.1)
            return .linear(lo: lo - pad, hi: hi + pad)
        }
        return .linear(lo: lo, hi: hi)
    }

    /// The axis title for values counted in `unit`.
    func title(_ unit: TrainingProgress.Unit) -> String {
        let name = unit == .tokens ? "Tokens seen" : "Training step"
        switch self {
        case .linear: return name
        case .log: return "\(name) (log scale)"
        case .index(_, let stepsKnown): return "Checkpoint index (steps \(stepsKnown ? "not increasing" : "unknown"))"
        }
    }

    /// How a log axis places 0, for a figure's caption; nil on other axes.
    var zeroNote: String? {
        guard case .log(_, _, let hasZero) = self else { return nil }
        return "The x axis is logarithmic (on a linear one the early checkpoints crowd together)"
            + (hasZero ? "; 0, which a log scale cannot place, sits at the left edge, before the axis break." : ".")
    }

    /// Fraction of the axis reserved for step 0 on a log axis.
    static let zeroGap = 0.06

    /// Pixel position of checkpoint `index` at `step`, on an axis from `a` to `b`.
    func position(step: Int64, index: Int, from a: Double, to b: Double) -> Double {
        switch self {
        case .linear(let lo, let hi):
            return LinearScale(domain: (lo, hi), range: (a, b)).position(Double(step))
        case .log(let lo, let hi, let hasZero):
            if step <= 0 { return a }
            let start = hasZero ? a + (b - a) * Self.zeroGap : a
            return LinearScale(domain: (log10(lo), log10(hi)), range: (start, b)).position(log10(Double(step)))
        case .index(let count, _):
            return LinearScale(domain: (0, Double(max(1, count - 1))), range: (a, b)).position(Double(index))
        }
    }

    struct Tick {
        var position: Double
        var label: String?  // nil: a minor tick
    }

    /// Ticks for an axis from `a` to `b`, spaced so labels do not collide.
    func ticks(from a: Double, to b: Double) -> [Tick] {
        let width = b - a
        switch self {
        case .linear(let lo, let hi):
            var target = max(2, Int(width / 90))
            while true {
                let (values, _) = Ticks.values(lo, hi, target: target)
                let labels = Ticks.compactLabels(values)
                let widest = labels.map { SVG.estimatedWidth($0, size: 11) }.max() ?? 0
                let spacing = width / Double(max(1, values.count))
                if spacing >= widest + 10 || target <= 2 {
                    let scale = LinearScale(domain: (lo, hi), range: (a, b))
                    return zip(values, labels).map { Tick(position: scale.position($0), label: $1) }
                }
                target -= 1
            }
        case .log(let lo, let hi, let hasZero):
            var ticks: [Tick] = hasZero ? [Tick(position: a, label: "0")] : []
            let exponents = Int(floor(log10(lo)))...Int(ceil(log10(hi)))
            // Every decade labelled while their labels fit side by side, else every second, third…
            let widest = exponents.map { SVG.estimatedWidth(Ticks.compact(pow(10, Double($0))), size: 11) }.max() ?? 0
            let every = max(1, Int(ceil(Double(exponents.count) * (widest + 10) / max(1, width))))
            // Fewer than three decades in view: 2 and 5 labelled too, where they fit (one label or two told little).
            let decadesInView = exponents.filter { pow(10, Double($0)) >= lo * (1 - 1e-9) && pow(10, Double($0)) <= hi * (1 + 1e-9) }
            let twoFits = log10(2) / max(1e-9, log10(hi / lo)) * width >= widest + 10
            let labelledMultiples: Set<Int> = decadesInView.count < 3 && twoFits ? [1, 2, 5] : [1]
            for exponent in exponents {
                let decade = pow(10, Double(exponent))
                for multiple in 1...9 {
                    let value = decade * Double(multiple)
                    guard value >= lo * (1 - 1e-9), value <= hi * (1 + 1e-9) else { continue }
                    let x = position(step: Int64(value.rounded()), index: 0, from: a, to: b)
                    let labelled = labelledMultiples.contains(multiple) && (exponent - exponents.lowerBound) % every == 0
                    ticks.append(Tick(position: x, label: labelled ? Ticks.compact(value) : nil))
                }
            }
            return ticks
        case .index(let count, _):
            let last = Double(max(1, count - 1))
            var target = max(2, Int(width / 60))
            target = min(target, max(1, count - 1))
            let (values, _) = Ticks.values(0, last, target: target)
            let scale = LinearScale(domain: (0, last), range: (a, b))
            return values.filter { $0 == $0.rounded() }
                .map { Tick(position: scale.position($0), label: String(Int($0))) }
        }
    }
}

/// What charts over training count on their x axis: tokens seen when every
/// checkpoint records them and they increase from checkpoint to checkpoint,
/// else training steps (which `StepAxis` replaces by checkpoint indices when
/// they are unknown too).
struct TrainingProgress: Equatable {
    enum Unit: Equatable { case tokens, steps }

    /// [C] tokens seen or steps (-1 when unknown), in checkpoint order.
    var values: [Int64]
    var unit: Unit

    init(values: [Int64], unit: Unit) {
        self.values = values
        self.unit = unit
    }

    init(steps: [Int64], tokens: [Int64]) {
        let tokensKnown = tokens.count == steps.count && !tokens.isEmpty && tokens.allSatisfy { $0 >= 0 }
            && zip(tokens, tokens.dropFirst()).allSatisfy { $0 < $1 }
        (values, unit) = tokensKnown ? (tokens, Unit.tokens) : (steps, Unit.steps)
    }

    /// Title of a heatmap's checkpoint axis.
    var columnTitle: String {
        if unit == .tokens { return "Checkpoint (tokens seen)" }
        return values.allSatisfy { $0 >= 0 } ? "Checkpoint (training step)" : "Checkpoint (index; steps unknown)"
    }

    /// One label per checkpoint: its tokens or step, compact, or "#<index>" when unknown.
    var columnLabels: [String] {
        var known = Ticks.compactLabels(values.filter { $0 >= 0 }.map(Double.init))[...]
        return values.enumerated().map { index, value in value >= 0 ? known.removeFirst() : "#\(index)" }
    }
}

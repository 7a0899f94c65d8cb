import DroptraceSupport

/// SplitMix64 (Steele, Lea & Flood 2014, as in Vigna's reference C code):
/// a 64-bit state advanced by the golden-ratio constant and mixed by two
/// xor-shift-multiply rounds. Chosen because it is fully specified by a
/// dozen lines of integer arithmetic, so a bootstrap drawn from a given seed
/// is the same on every machine and can be re-derived in any language
/// (Swift's `SystemRandomNumberGenerator` is neither seedable nor portable).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform integer in 0..<bound (bound ≥ 1) by Lemire's multiply-shift
    /// with rejection ("Fast random integer generation in an interval",
    /// 2019): the high 64 bits of x · bound, redrawing x while the low bits
    /// fall below 2^64 mod bound, so every index is exactly equally likely.
    public mutating func index(below bound: Int) -> Int {
        let bound64 = UInt64(bound)
        var product = next().multipliedFullWidth(by: bound64)
        if product.low < bound64 {
            let threshold = (0 &- bound64) % bound64
            while product.low < threshold {
                product = next().multipliedFullWidth(by: bound64)
            }
        }
        return Int(product.high)
    }
}

/// How the calibration sequences are resampled: replicate count, seed and
/// confidence level of the percentile intervals. Recorded with the results
/// (`/analysis` attributes `bootstrap_replicates`, `bootstrap_seed`,
/// `bootstrap_confidence`) so anyone can redraw the same replicates.
public struct BootstrapSettings: Sendable, Equatable {
    /// B, the number of bootstrap replicates.
    public var replicates: Int
    /// Seed of the SplitMix64 generator (0...Int64.max, as it is stored as int64).
    public var seed: UInt64
    /// Two-sided coverage of the percentile intervals, e.g. 0.95.
    public var confidence: Double

    public static let defaultReplicates = 1000
    /// "droptrac" in ASCII: any fixed value works, this one is easy to recognise.
    public static let defaultSeed: UInt64 = 0x6472_6F70_7472_6163
    public static let defaultConfidence = 0.95
    /// Bounds the work and memory (about 3·B·L doubles per thread).
    public static let replicateRange = 10...20_000

    public static let standard = BootstrapSettings()

    /// Unchecked; `validated()` checks the ranges.
    public init(replicates: Int = defaultReplicates, seed: UInt64 = defaultSeed,
                confidence: Double = defaultConfidence) {
        self.replicates = replicates
        self.seed = seed
        self.confidence = confidence
    }

    /// - Throws: `DroptraceError` when `replicates` is outside
    ///   `replicateRange`, `seed` exceeds Int64.max, or `confidence` is not
    ///   strictly between 0 and 1.
    public func validated() throws -> BootstrapSettings {
        guard Self.replicateRange.contains(replicates) else {
            throw DroptraceError("bootstrap replicates must be in \(Self.replicateRange.lowerBound)..."
                                    + "\(Self.replicateRange.upperBound), got \(replicates)")
        }
        guard seed <= UInt64(Int64.max) else {
            throw DroptraceError("bootstrap seed must be in 0...\(Int64.max), got \(seed)")
        }
        guard confidence > 0, confidence < 1 else {
            throw DroptraceError("bootstrap confidence must be strictly between 0 and 1, got \(confidence)")
        }
        return self
    }

    /// The generator of replicate `replicate`: a SplitMix64 whose state is
    /// the (replicate + 1)-th output of SplitMix64(seed). Each replicate has
    /// its own stream, so the draws of replicate r are the same whichever
    /// checkpoint, thread or order asks for them, and can be regenerated
    /// instead of stored.
    public func generator(replicate: Int) -> SplitMix64 {
        // SplitMix64's n-th output depends only on seed + n·γ: jump straight there.
        var outer = SplitMix64(seed: seed &+ UInt64(replicate) &* 0x9E37_79B9_7F4A_7C15)
        return SplitMix64(seed: outer.next())
    }
}

/// A two-sided interval [low, high]; NaN ends when undefined.
public struct ConfidenceInterval: Sendable, Codable {
    public var low: Double
    public var high: Double

    public init(low: Double, high: Double) {
        self.low = low
        self.high = high
    }

    public static let undefined = ConfidenceInterval(low: .nan, high: .nan)

    public var isDefined: Bool { !low.isNaN && !high.isNaN }

    /// Whether `value` lies in [low, high].
    public func contains(_ value: Double) -> Bool { low <= value && value <= high }
}

extension ConfidenceInterval: Equatable {
    // An undefined interval must equal its own round trip through a file.
    public static func == (lhs: ConfidenceInterval, rhs: ConfidenceInterval) -> Bool {
        lhs.agrees(with: rhs, by: sameValue)
    }

    /// Equal, or both NaN.
    static func sameValue(_ a: Double, _ b: Double) -> Bool { a == b || (a.isNaN && b.isNaN) }

    /// Whether both ends are the same by `same`.
    func agrees(with other: ConfidenceInterval, by same: (Double, Double) -> Bool) -> Bool {
        same(low, other.low) && same(high, other.high)
    }
}

/// Percentile bootstrap intervals.
public enum Bootstrap {
    /// The percentile interval of replicate values: the (1 − confidence)/2
    /// and (1 + confidence)/2 quantiles with linear interpolation between
    /// order statistics (Hyndman & Fan type 7, numpy's default), so
    /// `numpy.percentile(values, [2.5, 97.5])` gives the same numbers.
    /// Undefined when `values` is empty or holds a NaN (some resample left
    /// the statistic undefined, so its spread is unknown). Reorders `values`:
    /// the order statistics are found by selection, not a full sort, as this
    /// runs for every layer of every checkpoint.
    public static func percentileInterval(_ values: inout [Double], confidence: Double) -> ConfidenceInterval {
        guard !values.isEmpty, !values.contains(where: \.isNaN) else { return .undefined }
        let count = values.count
        func position(_ p: Double) -> (index: Int, fraction: Double) {
            let exact = Double(count - 1) * p
            let index = min(count - 1, max(0, Int(exact.rounded(.down))))
            return (index, exact - Double(index))
        }
        let tail = (1 - confidence) / 2
        let low = position(tail), high = position(1 - tail)
        // Selecting index i leaves only larger-or-equal values after it, so the
        // next order statistic is their minimum.
        select(&values, low.index, from: 0)
        let lowEnd = interpolate(values[low.index], next(values, after: low.index), low.fraction)
        if high.index > low.index { select(&values, high.index, from: low.index + 1) }
        let highEnd = interpolate(values[high.index], next(values, after: high.index), high.fraction)
        return ConfidenceInterval(low: lowEnd, high: highEnd)
    }

    private static func next(_ values: [Double], after index: Int) -> Double {
        index + 1 < values.count ? values[(index + 1)...].min()! : values[index]
    }

    // Written so equal neighbours give exactly their value (no ∞ − ∞ surprises).
    private static func interpolate(_ below: Double, _ above: Double, _ fraction: Double) -> Double {
        below == above || fraction == 0 ? below : below + fraction * (above - below)
    }

    /// Wirth's selection ("Algorithms + Data Structures = Programs", 1976):
    /// rearranges values[start...] so that values[k] holds the value a full
    /// sort would put there, with nothing larger before it (from `start`)
    /// and nothing smaller after it. NaN-free input.
    static func select(_ values: inout [Double], _ k: Int, from start: Int) {
        values.withUnsafeMutableBufferPointer { a in
            var left = start, right = a.count - 1
            while left < right {
                let pivot = a[k]
                var i = left, j = right
                repeat {
                    while a[i] < pivot { i += 1 }
                    while pivot < a[j] { j -= 1 }
                    if i <= j {
                        a.swapAt(i, j)
                        i += 1
                        j -= 1
                    }
                } while i <= j
                if j < k { left = i }
                if k < i { right = j }
            }
        }
    }
}

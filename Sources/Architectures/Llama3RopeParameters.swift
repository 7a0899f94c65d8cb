import Foundation
import TensorEngine

/// Llama 3's frequency-dependent rope scaling as transformers reads it
/// (`rope_type` "llama3"), recovered from the per-frequency divisors llama.cpp
/// stores instead (`rope_freqs.weight`, which droptrace passes on as
/// `frequency_factors`, a key transformers does not read).
///
/// transformers' `_compute_llama3_parameters` leaves frequencies whose
/// wavelength is below `original_max_position_embeddings / high_freq_factor`
/// alone, divides those above `original / low_freq_factor` by `factor`, and
/// interpolates in between with s = (original / wavelength − low) / (high − low):
/// frequency · ((1 − s) / factor + s). The divisors therefore fix `factor`
/// (the largest) and, through the interpolated ones, s as a linear function
/// of 1 / wavelength; `recovering` finds parameters of that shape and keeps
/// them only when transformers' computation, redone here in Float32 as torch
/// does it, gives every frequency droptrace uses (default ÷ divisor) within
/// `tolerance`.
public struct Llama3RopeParameters: Equatable, Sendable {
    public var factor: Double
    public var lowFrequencyFactor: Double
    public var highFrequencyFactor: Double
    public var originalMaxPositions: Int

    public init(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalMaxPositions: Int) {
        self.factor = factor
        self.lowFrequencyFactor = lowFrequencyFactor
        self.highFrequencyFactor = highFrequencyFactor
        self.originalMaxPositions = originalMaxPositions
    }

    /// Largest relative difference allowed between a frequency transformers
    /// computes from the parameters and the one droptrace computes from the
    /// divisors (llama.cpp's converter computes the divisors in other
    /// precision than transformers: a few float32 ulps apart).
    public static let tolerance = 1e-5

    /// The inverse frequencies transformers computes for these parameters
    /// from the default ones (`scaled`).
    public func inverseFrequencies(base: Double, rotaryDim: Int) -> [Float] {
        scaled(RotaryEmbedding.defaultInverseFrequencies(base: base, rotaryDim: rotaryDim))
    }

    /// `frequencies` scaled step for step as transformers'
    /// `_compute_llama3_parameters` scales them: tensors in Float32, Python
    /// scalars cast to Float32 where they meet one, the two wavelength
    /// bounds and the factors' span computed in Double.
    public func scaled(_ frequencies: [Float]) -> [Float] {
        let factor = Float(factor), low = Float(lowFrequencyFactor), context = Float(originalMaxPositions)
        let lowWavelength = Float(Double(originalMaxPositions) / lowFrequencyFactor)
        let highWavelength = Float(Double(originalMaxPositions) / highFrequencyFactor)
        let span = Float(highFrequencyFactor - lowFrequencyFactor)
        return frequencies.map { frequency in
            let wavelength = Float(2 * Double.pi) / frequency
            if wavelength > lowWavelength { return frequency / factor }
            if wavelength < highWavelength { return frequency }
            let smooth = (context / wavelength - low) / span
            return (1 - smooth) * frequency / factor + smooth * frequency
        }
    }

    /// Whether transformers' frequencies for these parameters are droptrace's
    /// for `divisors` (default frequency ÷ divisor, in Float32) within `tolerance`.
    public func reproduces(_ divisors: [Double], base: Double, rotaryDim: Int) -> Bool {
        guard factor >= 1, lowFrequencyFactor > 0, highFrequencyFactor > lowFrequencyFactor, originalMaxPositions >= 1,
            [factor, lowFrequencyFactor, highFrequencyFactor].allSatisfy(\.isFinite)
        else { return false }
        let defaults = RotaryEmbedding.defaultInverseFrequencies(base: base, rotaryDim: rotaryDim)
        guard divisors.count == defaults.count else { return false }
        let computed = inverseFrequencies(base: base, rotaryDim: rotaryDim)
        return zip(zip(defaults, divisors), computed).allSatisfy { pair, value in
            let expected = Double(pair.0 / Float(pair.1))
            return abs(Double(value) - expected) <= Self.tolerance * abs(expected)
        }
    }

    /// Parameters that reproduce `divisors` (`reproduces`), or nil when no
    /// Llama 3 scaling gives them (or they are all 1: no scaling at all).
    /// Llama's usual low 1 / high 4 are tried first with the original length
    /// the interpolated divisors imply, then any that fit; `originalHint`
    /// (a config's `original_max_position_embeddings`) is preferred as the
    /// original length when it fits too.
    public static func recovering(_ divisors: [Double], base: Double, rotaryDim: Int, originalHint: Int? = nil) -> Self? {
        let defaults = RotaryEmbedding.defaultInverseFrequencies(base: base, rotaryDim: rotaryDim)
        guard !divisors.isEmpty, divisors.count == defaults.count, divisors.allSatisfy({ $0.isFinite && $0 > 0 }),
            let factor = divisors.max(), factor > 1 + tolerance
        else { return nil }
        // x = 1 / wavelength, as transformers computes the wavelength.
        let xs = defaults.map { Double($0 / Float(2 * Double.pi)) }
        var high: [Double] = [], low: [Double] = [], medium: [(x: Double, smooth: Double)] = []
        for (x, divisor) in zip(xs, divisors) {
            if abs(divisor - 1) <= tolerance {
                high.append(x)
            } else if abs(divisor - factor) <= tolerance * factor {
                low.append(x)
            } else if divisor > 1 {
                medium.append((x, (1 / divisor - 1 / factor) / (1 - 1 / factor)))
            } else {
                return nil
            }
        }
        var candidates: [Self] = []
        func add(low lowFactor: Double, high highFactor: Double, original: Int) {
            guard original >= 1 else { return }
            candidates.append(Self(factor: factor, lowFrequencyFactor: lowFactor, highFrequencyFactor: highFactor, originalMaxPositions: original))
        }
        // Llama's low 1 and high 4: s = (original · x − 1) / 3 gives the original length.
        if !medium.isEmpty {
            let implied = medium.map { (3 * $0.smooth + 1) / $0.x }.reduce(0, +) / Double(medium.count)
            if implied.isFinite, implied < 1e12 { add(low: 1, high: 4, original: Int(implied.rounded())) }
        }
        for original in [originalHint, 8192].compactMap({ $0 }) { add(low: 1, high: 4, original: original) }
        // Any s = a · x + b that fits: exact through the interpolated divisors, and
        // at least 1 (left alone) and at most 0 (divided by factor) at the others.
        let a: Double, b: Double
        let lowMax = low.max(), highMin = high.min()
        if medium.count >= 2, let first = medium.first, let last = medium.last, first.x != last.x {
            a = (first.smooth - last.smooth) / (first.x - last.x)
            b = first.smooth - a * first.x
        } else if let point = medium.first {
            var bound = point.smooth / point.x
            if let lowMax, point.x > lowMax { bound = max(bound, point.smooth / (point.x - lowMax)) }
            if let highMin, highMin > point.x { bound = max(bound, (1 - point.smooth) / (highMin - point.x)) }
            a = 2 * bound
            b = point.smooth - a * point.x
        } else if let lowMax {
            let top = highMin ?? 3 * lowMax
            let (zero, one) = (lowMax + (top - lowMax) / 3, lowMax + 2 * (top - lowMax) / 3)
            a = 1 / (one - zero)
            b = -a * zero
        } else {
            return nil
        }
        if a > 0, b < 0, a.isFinite, b.isFinite {
            var originals = [originalHint, 8192].compactMap { $0 }
            let natural = -a / b
            if natural.isFinite, natural >= 1, natural < 1e12 { originals.insert(Int(natural.rounded()), at: originalHint == nil ? 0 : 1) }
            for original in originals {
                let lowFactor = -b * Double(original) / a
                let highFactor = lowFactor + Double(original) / a
                // Round figures first (1.0 rather than 0.99999997), when they still fit.
                add(low: rounded(lowFactor), high: rounded(highFactor), original: original)
                add(low: lowFactor, high: highFactor, original: original)
            }
        }
        return candidates.first { $0.reproduces(divisors, base: base, rotaryDim: rotaryDim) }
    }

    /// `value` to six significant figures.
    private static func rounded(_ value: Double) -> Double {
        guard value.isFinite, value != 0 else { return value }
        let scale = pow(10, 5 - floor(log10(abs(value))))
        return (value * scale).rounded() / scale
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// Rotary embedding settings as config.json spells them in transformers 4.x
/// (top-level `rope_theta` / `rotary_emb_base`, `rope_scaling`, `rotary_pct`,
/// `partial_rotary_factor`) and 5.x (everything inside `rope_parameters`).
///
/// Decoding refuses values that would divide by zero or give NaN angles: a
/// base, factor or frequency factor that is not finite and above 0, a
/// rotary fraction outside (0, 1], `high_freq_factor` not above
/// `low_freq_factor`, an `original_max_position_embeddings` below 1.
public struct RopeSettings: Decodable, Sendable, Equatable {
    public var type: String
    public var theta: Double
    /// The config names a base; otherwise `theta` is 10000, which not every family defaults to.
    public var thetaIsExplicit: Bool
    public var partialRotaryFactor: Double?
    public var factor: Double?
    public var lowFrequencyFactor: Double?
    public var highFrequencyFactor: Double?
    public var originalMaxPositions: Int?
    /// Per-frequency divisors, GGUF's `rope_freqs.weight` (how llama.cpp stores
    /// Llama 3 scaling); the GGUF reader passes them on under this key.
    public var frequencyFactors: [Double]?
    /// YaRN's settings (`rope_type` "yarn"); see `yarnScaled`.
    public var yarn = YarnParameters()

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ string: String) { stringValue = string }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: Decoder) throws {
        let top = try decoder.container(keyedBy: Key.self)
        // 5.x: rope_parameters; 4.x: rope_scaling (may be null).
        let nested = try ["rope_parameters", "rope_scaling"].lazy
            .compactMap { name -> KeyedDecodingContainer<Key>? in
                guard top.contains(Key(name)), try !top.decodeNil(forKey: Key(name)) else { return nil }
                return try top.nestedContainer(keyedBy: Key.self, forKey: Key(name))
            }.first

        // The key each value came from, for the error that refuses it.
        var keys: [String: String] = [:]
        func number(_ names: [String], in container: KeyedDecodingContainer<Key>?) throws -> Double? {
            guard let container else { return nil }
            for name in names where container.contains(Key(name)) {
                if let value = try container.decodeIfPresent(Double.self, forKey: Key(name)) {
                    keys[names[0]] = name
                    return value
                }
            }
            return nil
        }

        type = try nested.flatMap { c in
            try c.decodeIfPresent(String.self, forKey: Key("rope_type")) ?? c.decodeIfPresent(String.self, forKey: Key("type"))
        } ?? "default"
        let configuredTheta = try number(["rope_theta"], in: nested) ?? number(["rope_theta", "rotary_emb_base"], in: top)
        theta = configuredTheta ?? 10_000
        thetaIsExplicit = configuredTheta != nil
        partialRotaryFactor = try number(["partial_rotary_factor"], in: nested)
            ?? number(["partial_rotary_factor", "rotary_pct"], in: top)
        factor = try number(["factor"], in: nested)
        lowFrequencyFactor = try number(["low_freq_factor"], in: nested)
        highFrequencyFactor = try number(["high_freq_factor"], in: nested)
        let originalMax = try number(["original_max_position_embeddings"], in: nested)
        frequencyFactors = try nested?.decodeIfPresent([Double].self, forKey: Key("frequency_factors"))
        yarn = try YarnParameters(
            attentionFactor: number(["attention_factor"], in: nested), betaFast: number(["beta_fast"], in: nested),
            betaSlow: number(["beta_slow"], in: nested), mscale: number(["mscale"], in: nested),
            mscaleAllDim: number(["mscale_all_dim"], in: nested),
            truncate: nested?.decodeIfPresent(Bool.self, forKey: Key("truncate")) ?? true)
        try ConfigRules.decodingChecks {
            func key(_ name: String) -> String { keys[name] ?? name }
            try ConfigRules.positive(theta, key("rope_theta"))
            if let partialRotaryFactor { try ConfigRules.fraction(partialRotaryFactor, key("partial_rotary_factor")) }
            try ConfigRules.positiveIfPresent(factor, "factor")
            try ConfigRules.positiveIfPresent(lowFrequencyFactor, "low_freq_factor")
            try ConfigRules.positiveIfPresent(highFrequencyFactor, "high_freq_factor")
            if let low = lowFrequencyFactor, let high = highFrequencyFactor, !(high > low) {
                throw InvalidConfigValue(key: "high_freq_factor", problem: "must be above low_freq_factor \(low), got \(high)")
            }
            if let originalMax {
                self.originalMaxPositions = try ConfigRules.count(
                    ConfigRules.integer(originalMax, "original_max_position_embeddings"), "original_max_position_embeddings")
            }
            for value in frequencyFactors ?? [] { try ConfigRules.positive(value, "frequency_factors") }
            try yarn.check()
        }
    }

    /// The rotary embedding for heads of `headDim`, or an error naming the
    /// config for scaling types droptrace does not implement. Families differ
    /// in the share of each head they rotate when the config is silent.
    public func embedding(
        headDim: Int, defaultPartialRotaryFactor: Double = 1, defaultTheta: Double = 10_000, configPath: String
    ) throws -> RotaryEmbedding {
        // transformers truncates the rotated width but does not round it to
        // even: an odd width w yields ceil(w/2) frequencies over exponent 2i/w
        // and rotates 2·ceil(w/2) dimensions, which must fit in the head.
        // (The fraction is in (0, 1] and head_dim confirmed by the weights, so
        // neither the product nor the table can blow up.)
        let rotaryDim = Int(Double(headDim) * (partialRotaryFactor ?? defaultPartialRotaryFactor))
        guard rotaryDim + rotaryDim % 2 <= headDim else {
            throw DroptraceError(
                "\"partial_rotary_factor\" gives a rotary width of \(rotaryDim), which rotates \(rotaryDim + 1) dimensions of a head of \(headDim)",
                path: configPath)
        }
        var frequencies = RotaryEmbedding.defaultInverseFrequencies(
            base: thetaIsExplicit ? theta : defaultTheta, rotaryDim: rotaryDim)
        var attentionScaling: Float = 1
        switch type {
        case "default", "dynamic":
            // Dynamic NTK only rescales beyond max_position_embeddings, which
            // droptrace refuses, so within range it is the default rotation.
            break
        case "linear":
            let factor = try require(factor, "factor", configPath)
            frequencies = frequencies.map { $0 / Float(factor) }
        case "llama3":
            frequencies = try llama3Scaled(frequencies, configPath: configPath)
        case "yarn":
            (frequencies, attentionScaling) = try yarnScaled(
                base: thetaIsExplicit ? theta : defaultTheta, rotaryDim: rotaryDim, configPath: configPath)
        default:
            throw DroptraceError(
                "unsupported rope type \"\(type)\" (supported: default, linear, dynamic, llama3, yarn)", path: configPath)
        }
        if let frequencyFactors {
            guard frequencyFactors.count == frequencies.count else {
                throw DroptraceError(
                    "rope frequency_factors has \(frequencyFactors.count) entries, expected \(frequencies.count)", path: configPath)
            }
            frequencies = zip(frequencies, frequencyFactors).map { $0 / Float($1) }
        }
        return RotaryEmbedding(inverseFrequencies: frequencies, headDim: headDim, attentionScaling: attentionScaling)
    }

    /// Llama 3.1's frequency-dependent interpolation, step for step as
    /// transformers computes it in Float32.
    private func llama3Scaled(_ frequencies: [Float], configPath: String) throws -> [Float] {
        let factor = Float(try require(factor, "factor", configPath))
        let low = Float(try require(lowFrequencyFactor, "low_freq_factor", configPath))
        let high = Float(try require(highFrequencyFactor, "high_freq_factor", configPath))
        let context = Float(try require(originalMaxPositions.map(Double.init), "original_max_position_embeddings", configPath))
        let lowWavelength = context / low
        let highWavelength = context / high
        return frequencies.map { frequency in
            let wavelength = 2 * Float.pi / frequency
            if wavelength < highWavelength { return frequency }
            if wavelength > lowWavelength { return frequency / factor }
            let smooth = (context / wavelength - low) / (high - low)
            return (1 - smooth) * frequency / factor + smooth * frequency
        }
    }

    func require(_ value: Double?, _ key: String, _ configPath: String) throws -> Double {
        guard let value else {
            throw DroptraceError("rope type \"\(type)\" needs \"\(key)\"", path: configPath)
        }
        return value
    }
}

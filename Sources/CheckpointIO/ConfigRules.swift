import DroptraceSupport

/// A configuration value that cannot describe a model: its key (a
/// config.json key such as `num_attention_heads`, or the GGUF metadata key
/// it was read from) and what is wrong with it.
public struct InvalidConfigValue: Error, Sendable, Equatable {
    public var key: String
    public var problem: String

    public init(key: String, problem: String) {
        self.key = key
        self.problem = problem
    }

    /// `"key" problem`, e.g. `"num_attention_heads" must be at least 1, got 0`.
    public var message: String { "\"\(key)\" \(problem)" }

    /// The one-line error naming the config (or GGUF) file.
    public func error(path: String) -> DroptraceError { DroptraceError(message, path: path) }
}

/// The checks every model size read from config.json or GGUF metadata goes
/// through before anything is allocated, multiplied or divided by it. The
/// config types run them while decoding (see `decodingChecks`), so no
/// architecture can forget them.
public enum ConfigRules {
    /// A count (layers, heads, widths, vocabulary, positions): at least 1.
    @discardableResult
    public static func count(_ value: Int, _ key: String) throws -> Int {
        guard value >= 1 else { throw InvalidConfigValue(key: key, problem: "must be at least 1, got \(value)") }
        return value
    }

    /// A count that may be 0 (experts of a model without them, shared experts of width 0).
    @discardableResult
    public static func nonNegative(_ value: Int, _ key: String) throws -> Int {
        guard value >= 0 else { throw InvalidConfigValue(key: key, problem: "must be at least 0, got \(value)") }
        return value
    }

    /// An optional count: absent, or at least 1.
    @discardableResult
    public static func countIfPresent(_ value: Int?, _ key: String) throws -> Int? {
        guard let value else { return nil }
        return try count(value, key)
    }

    /// The product of sizes (a weight's element count), refused when it does
    /// not fit in an Int. The error names the keys, the first of which is
    /// the one to blame.
    @discardableResult
    public static func product(_ factors: [(value: Int, key: String)]) throws -> Int {
        var result = 1
        for factor in factors {
            let (product, overflow) = result.multipliedReportingOverflow(by: factor.value)
            guard !overflow else {
                let spelled = factors.map { "\($0.key) \($0.value)" }.joined(separator: " × ")
                throw InvalidConfigValue(key: factors[0].key, problem: "is too large: \(spelled) does not fit in 64 bits")
            }
            result = product
        }
        return result
    }

    /// The sum of `terms`, each named by its key, or an error naming the
    /// first term's key when it does not fit in an Int.
    public static func sum(_ terms: [(value: Int, key: String)]) throws -> Int {
        var result = 0
        for term in terms {
            let (sum, overflow) = result.addingReportingOverflow(term.value)
            guard !overflow else {
                let spelled = terms.map { "\($0.key) \($0.value)" }.joined(separator: " + ")
                throw InvalidConfigValue(key: terms[0].key, problem: "is too large: \(spelled) does not fit in 64 bits")
            }
            result = sum
        }
        return result
    }

    /// `divisor` (named by `key`) must divide `value` (named by `valueKey`):
    /// head counts dividing widths, key/value heads dividing query heads.
    public static func divides(_ divisor: Int, _ key: String, _ value: Int, _ valueKey: String) throws {
        try count(divisor, key)
        guard value % divisor == 0 else {
            throw InvalidConfigValue(key: key, problem: "must divide \(valueKey) \(value), got \(divisor)")
        }
    }

    /// A real parameter that is divided by or scales with (epsilons, rope
    /// bases and factors, soft caps): finite and above 0, also once rounded
    /// to Float32, the engine's arithmetic (1e39 would be infinite there and
    /// 1e-50 zero, each turning every score into a constant).
    @discardableResult
    public static func positive(_ value: Double, _ key: String) throws -> Double {
        guard value.isFinite, value > 0, Float(value).isFinite, Float(value) > 0 else {
            throw InvalidConfigValue(
                key: key, problem: "must be a finite number above 0 that float32 holds (1.4e-45 to 3.4e38), got \(value)")
        }
        return value
    }

    /// A bound that may be 0 (`clip_qkv`: transformers clamps q, k and v to
    /// ±0, so attention adds nothing): finite, at least 0, and finite in
    /// Float32.
    @discardableResult
    public static func bound(_ value: Double, _ key: String) throws -> Double {
        guard value >= 0, Float(value).isFinite else {
            throw InvalidConfigValue(key: key, problem: "must be a finite number of at least 0 that float32 holds, got \(value)")
        }
        return value
    }

    /// An optional real parameter: absent, or finite and above 0.
    @discardableResult
    public static func positiveIfPresent(_ value: Double?, _ key: String) throws -> Double? {
        guard let value else { return nil }
        return try positive(value, key)
    }

    /// A share of a width (`partial_rotary_factor`, `rotary_pct`): in (0, 1].
    @discardableResult
    public static func fraction(_ value: Double, _ key: String) throws -> Double {
        guard value > 0, value <= 1 else {
            throw InvalidConfigValue(key: key, problem: "must be above 0 and at most 1, got \(value)")
        }
        return value
    }

    /// A JSON number used as a count, converted without trapping on values
    /// an Int cannot hold (1e300, 2.5).
    public static func integer(_ value: Double, _ key: String) throws -> Int {
        guard let integer = Int(exactly: value) else {
            // Counts are read through a double: from about 2^63 − 2^9 on, a whole number rounds to 2^63 or beyond.
            let whole = value.isFinite && value.rounded(.towardZero) == value
            throw InvalidConfigValue(
                key: key, problem: whole ? "is too large: read as a JSON number it rounds to \(value), at or past 2^63" : "must be a whole number, got \(value)")
        }
        return integer
    }

    /// Runs `checks` (returning what it returns), turning a refused value
    /// into the one-line error naming `path`.
    @discardableResult
    public static func checks<Result>(path: String, _ checks: () throws -> Result) throws -> Result {
        try Self.checks(path: path, section: .topLevel, checks)
    }

    /// `checks(path:_:)` for the keys of `section`, each refused key named as
    /// config.json writes it (`text_config.hidden_size` in a multimodal checkpoint).
    public static func checks<Result>(path: String, section: ConfigSection, _ checks: () throws -> Result) throws -> Result {
        do {
            return try checks()
        } catch let invalid as InvalidConfigValue {
            throw InvalidConfigValue(key: section.qualified(invalid.key), problem: invalid.problem).error(path: path)
        }
    }

    /// Runs `checks` inside a `Decodable` initialiser, turning a refused
    /// value into the decoding error `Checkpoint.decodeConfig` reports as
    /// `<config>: invalid value at "<key>": <problem>`.
    public static func decodingChecks(_ checks: () throws -> Void) throws {
        do {
            try checks()
        } catch let invalid as InvalidConfigValue {
            // One coding key per member of a dotted path, so a path that already
            // starts at the section (`text_config.rope_parameters.factor`) is not put under it again.
            let path = invalid.key.split(separator: ".").map { ConfigKey(stringValue: String($0)) }
            throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: path, debugDescription: invalid.problem))
        }
    }
}

/// Decoding rules several families' config keys share (the Mamba families'
/// `mamba_*` keys).
extension KeyedDecodingContainer {
    /// A count config.json may leave out (`fallback`) but not give as null:
    /// the config class takes null, its model cannot be built from it.
    public func decodeCount(_ key: Key, default fallback: Int) throws -> Int {
        let null = try contains(key) && decodeNil(forKey: key)
        try ConfigRules.decodingChecks {
            guard !null else { throw InvalidConfigValue(key: key.stringValue, problem: "must be a number, got null") }
        }
        return try decodeIfPresent(Int.self, forKey: key) ?? fallback
    }

    /// A Mamba-2 mixer's `time_step_limit`, the (min, max) Δ is clamped to:
    /// two numbers (config.json may write the upper bound `Infinity`),
    /// (0, ∞) when absent. Null and other lengths are refused naming the key:
    /// the mixer indexes both bounds.
    public func decodeTimeStepLimit(_ key: Key) throws -> (lower: Double, upper: Double) {
        let null = try contains(key) && decodeNil(forKey: key)
        let limit = null ? [] : try decodeIfPresent([Double].self, forKey: key) ?? [0, .infinity]
        try ConfigRules.decodingChecks {
            guard !null else {
                throw InvalidConfigValue(key: key.stringValue, problem: "must be two numbers [min, max], got null (the mixer clamps by it)")
            }
            guard limit.count == 2 else {
                throw InvalidConfigValue(key: key.stringValue, problem: "must be two numbers [min, max], got \(limit.count)")
            }
            // torch.clamp converts each bound to float32: only ±inf may lie beyond it
            // (config.json's Infinity reaches the decoder as 1e308: `Checkpoint.finiteSpelling`).
            if let bound = limit.first(where: { abs($0) < 1e308 && !Float($0).isFinite }) {
                throw InvalidConfigValue(key: key.stringValue, problem: "holds \(bound), beyond float32 (the clamp's bounds are float32 numbers or ±Infinity)")
            }
        }
        return (limit[0], limit[1])
    }

    /// A bias switch: null reads as none, as nn.Linear and nn.Conv1d read it.
    public func decodeBiasFlag(_ key: Key, default fallback: Bool) throws -> Bool {
        if try contains(key) && decodeNil(forKey: key) { return false }
        return try decodeIfPresent(Bool.self, forKey: key) ?? fallback
    }

    /// A width given as a number or "auto" (nil: the family's rule derives
    /// it); null and other strings refused naming the key.
    public func decodeNumberOrAuto(_ key: Key) throws -> Int? {
        if try contains(key) && decodeNil(forKey: key) {
            try ConfigRules.decodingChecks {
                throw InvalidConfigValue(key: key.stringValue, problem: "must be a number or \"auto\", got null")
            }
        }
        guard let text = try? decodeIfPresent(String.self, forKey: key) else { return try decodeIfPresent(Int.self, forKey: key) }
        try ConfigRules.decodingChecks {
            guard text == "auto" else {
                throw InvalidConfigValue(key: key.stringValue, problem: "must be a number or \"auto\", got \"\(text.forErrorMessage)\"")
            }
        }
        return nil
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// Rotary embedding settings as config.json spells them in transformers 4.x
/// (top-level `rope_theta`, `partial_rotary_factor` — GPT-NeoX's
/// `rotary_emb_base`, `rotary_pct` — and `rope_scaling`) and 5.x
/// (everything inside `rope_parameters`).
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
    /// The key the rotary fraction was read from (`rotary_pct` in GPT-NeoX's 4.x configs), and
    /// whether it was written null: checked by `embedding` only where the family reads it.
    var partialRotaryKey = "partial_rotary_factor"
    var partialRotaryFactorIsNull = false
    public var factor: Double?
    public var lowFrequencyFactor: Double?
    public var highFrequencyFactor: Double?
    public var originalMaxPositions: Int?
    /// Per-frequency divisors, GGUF's `rope_freqs.weight` (how llama.cpp stores
    /// Llama 3 scaling); the GGUF reader passes them on under this key.
    public var frequencyFactors: [Double]?
    /// LongRoPE's per-frequency divisors within `original_max_position_embeddings`
    /// (`short_factor`) and beyond it (`long_factor`), one per rotated pair.
    public var shortFactor: [Double]?
    public var longFactor: [Double]?
    /// LongRoPE's factor on cos and sin (`attention_factor`); derived from the factor when absent.
    public var attentionFactor: Double?
    /// YaRN's settings (`rope_type` "yarn"); see `yarnScaled`.
    public var yarn = YarnParameters()
    /// config.json's top-level `max_position_embeddings`, YaRN's default for
    /// `factor`.
    public var maxPositions: Int?

    /// The top-level 4.x keys a family's config class reads for the base and
    /// the rotary fraction (transformers' `convert_rope_params_to_dict`); it
    /// ignores the other spelling.
    public struct TopLevelKeys: Sendable, Equatable {
        let theta: String
        let partialRotaryFactor: String
        /// Every family's but GPT-NeoX's.
        public static let standard = TopLevelKeys(theta: "rope_theta", partialRotaryFactor: "partial_rotary_factor")
        /// GPTNeoXConfig's own spelling (its fraction defaults to 0.25).
        public static let gptNeoX = TopLevelKeys(theta: "rotary_emb_base", partialRotaryFactor: "rotary_pct")
        /// The spelling the family does not read.
        var other: TopLevelKeys { self == .standard ? .gptNeoX : .standard }
    }

    public init(from decoder: Decoder) throws {
        try self.init(from: decoder, topLevelKeys: .standard)
    }

    /// As `init(from:)`, reading the base and rotary fraction at the top
    /// level under `topLevelKeys`.
    public init(from decoder: Decoder, topLevelKeys: TopLevelKeys) throws {
        let top = try decoder.container(keyedBy: ConfigKey.self)
        // 5.x: rope_parameters; 4.x: rope_scaling (may be null).
        let given = try ["rope_parameters", "rope_scaling"].compactMap { name -> KeyedDecodingContainer<ConfigKey>? in
            guard top.contains(ConfigKey(name)), try !top.decodeNil(forKey: ConfigKey(name)) else { return nil }
            return try top.nestedContainer(keyedBy: ConfigKey.self, forKey: ConfigKey(name))
        }
        // transformers merges rope_scaling into rope_parameters, its values
        // over the others: a config holding both is not one it wrote.
        guard given.count < 2 else {
            throw DecodingError.dataCorrupted(DecodingError.Context(
                codingPath: [ConfigKey("rope_scaling")], debugDescription: "given besides rope_parameters; keep one of them"))
        }
        // Settings per attention type are read by the families that rotate
        // their types differently (`LayerTypeRopeSettings`); transformers'
        // other rotary set-ups fail on them (gemma2, qwen2) or ignore them
        // (llama), either way not the rotation the file asks for.
        if let parameters = given.first,
           let type = [AttentionLayerType.full, AttentionLayerType.sliding].first(where: { parameters.contains(ConfigKey($0)) }) {
            throw DecodingError.dataCorrupted(DecodingError.Context(
                codingPath: parameters.codingPath + [ConfigKey(type)],
                debugDescription: "gives rope settings per attention type, which this family's transformers model does not read (it rotates every layer alike)"))
        }
        try self.init(top: top, nested: given.first, topLevelKeys: topLevelKeys)
    }

    /// The settings of `nested` (a `rope_parameters` / `rope_scaling`
    /// object), with the 4.x top-level keys of `top` where `nested` lacks
    /// them (nil: none).
    init(
        top: KeyedDecodingContainer<ConfigKey>?, nested: KeyedDecodingContainer<ConfigKey>?, topLevelKeys: TopLevelKeys = .standard
    ) throws {
        // The key each value came from, for the error that refuses it.
        var keys: [String: String] = [:]
        // A null base or type in the rope parameters is kept as None by
        // transformers, whose rotary initialisers then fail (a null rotary
        // fraction only where the family reads it: `embedding`).
        if let nested {
            for name in ["rope_theta", "rope_type", "type"] where nested.contains(ConfigKey(name)) {
                guard try nested.decodeNil(forKey: ConfigKey(name)) else { continue }
                throw DecodingError.dataCorrupted(DecodingError.Context(
                    codingPath: nested.codingPath + [ConfigKey(name)],
                    debugDescription: "is null, which transformers' rotary embedding cannot run"))
            }
        }
        // So does a null 4.x top-level key the rope parameters do not override.
        if let top {
            let legacy = [topLevelKeys.theta: "rope_theta"]
            for (name, nestedName) in legacy where top.contains(ConfigKey(name)) {
                guard try top.decodeNil(forKey: ConfigKey(name)), !(nested?.contains(ConfigKey(nestedName)) ?? false) else { continue }
                throw DecodingError.dataCorrupted(DecodingError.Context(
                    codingPath: top.codingPath + [ConfigKey(name)],
                    debugDescription: "is null, which transformers' rotary embedding cannot run"))
            }
        }
        // `setting`: the rope parameter a value is, when its key is spelled otherwise.
        func number(_ names: [String], in container: KeyedDecodingContainer<ConfigKey>?, as setting: String? = nil) throws -> Double? {
            guard let container else { return nil }
            for name in names where container.contains(ConfigKey(name)) {
                if let value = try container.decodeIfPresent(Double.self, forKey: ConfigKey(name)) {
                    keys[setting ?? names[0]] = name
                    return value
                }
            }
            return nil
        }

        type = try nested.flatMap { c in
            try c.decodeIfPresent(String.self, forKey: ConfigKey("rope_type")) ?? c.decodeIfPresent(String.self, forKey: ConfigKey("type"))
        } ?? "default"
        // transformers refuses YaRN parameters without a "factor" key; an
        // explicit null asks it to infer the factor (`yarnScaled`).
        if type == "yarn", let nested, !nested.contains(ConfigKey("factor")) {
            throw DecodingError.keyNotFound(
                ConfigKey("factor"), .init(codingPath: nested.codingPath, debugDescription: "rope type \"yarn\" needs it"))
        }
        // transformers' validate_rope compares the original length of the scaled types, which a null cannot be.
        if Self.typesWithOriginalLength.contains(type), let nested, nested.contains(ConfigKey("original_max_position_embeddings")),
           try nested.decodeNil(forKey: ConfigKey("original_max_position_embeddings")) {
            throw DecodingError.dataCorrupted(DecodingError.Context(
                codingPath: nested.codingPath + [ConfigKey("original_max_position_embeddings")],
                debugDescription: "is null, which transformers' rope validation refuses for rope type \"\(type)\""))
        }
        // standardize_rope_params copies a top-level original length present in the config over the rope
        // parameters' own, a null too, which the rotary initialiser then divides by.
        if Self.typesWithOriginalLength.contains(type), let top, top.contains(ConfigKey("original_max_position_embeddings")),
           try top.decodeNil(forKey: ConfigKey("original_max_position_embeddings")) {
            throw DecodingError.dataCorrupted(DecodingError.Context(
                codingPath: top.codingPath + [ConfigKey("original_max_position_embeddings")],
                debugDescription: "is null, which transformers copies into the rope parameters of rope type \"\(type)\", where it cannot run"))
        }
        let nestedTheta = try number(["rope_theta"], in: nested)
        let configuredTheta = try nestedTheta ?? number([topLevelKeys.theta], in: top, as: "rope_theta")
        theta = configuredTheta ?? 10_000
        thetaIsExplicit = configuredTheta != nil
        partialRotaryFactor = try number(["partial_rotary_factor"], in: nested)
            ?? number([topLevelKeys.partialRotaryFactor], in: top, as: "partial_rotary_factor")
        partialRotaryKey = keys["partial_rotary_factor"] ?? "partial_rotary_factor"
        if partialRotaryFactor == nil {
            for (container, name) in [(nested, "partial_rotary_factor"), (top, topLevelKeys.partialRotaryFactor)] {
                guard let container, container.contains(ConfigKey(name)) else { continue }
                partialRotaryFactorIsNull = try container.decodeNil(forKey: ConfigKey(name))
                partialRotaryKey = name
                break
            }
        }
        factor = try number(["factor"], in: nested)
        lowFrequencyFactor = try number(["low_freq_factor"], in: nested)
        highFrequencyFactor = try number(["high_freq_factor"], in: nested)
        let originalMax = try number(["original_max_position_embeddings"], in: nested)
        let topLevelOriginalMax = try number(["original_max_position_embeddings"], in: top)
        let maxPositions = try number(["max_position_embeddings"], in: top)
        frequencyFactors = try nested?.decodeIfPresent([Double].self, forKey: ConfigKey("frequency_factors"))
        shortFactor = try nested?.decodeIfPresent([Double].self, forKey: ConfigKey("short_factor"))
        longFactor = try nested?.decodeIfPresent([Double].self, forKey: ConfigKey("long_factor"))
        attentionFactor = try number(["attention_factor"], in: nested)
        yarn = try YarnParameters(
            attentionFactor: attentionFactor, betaFast: number(["beta_fast"], in: nested),
            betaSlow: number(["beta_slow"], in: nested), mscale: number(["mscale"], in: nested),
            mscaleAllDim: number(["mscale_all_dim"], in: nested),
            // transformers' `rope_parameters.get("truncate", True)`: absent is true, null is false.
            truncate: nested?.contains(ConfigKey("truncate")) == true ? try nested?.decodeIfPresent(Bool.self, forKey: ConfigKey("truncate")) ?? false : true)
        // The other family's spelling is ignored, as transformers ignores it, but only a value that would
        // be a valid setting: a fraction of 10.6 is a broken config, not a key to pass over.
        let ignoredTheta = try number([topLevelKeys.other.theta], in: top)
        let ignoredShare = try number([topLevelKeys.other.partialRotaryFactor], in: top)
        // A value of the rope parameters is named under them (`rope_parameters.factor`).
        let nestedPath = nested.map { $0.codingPath.map(\.stringValue).joined(separator: ".") + "." } ?? ""
        try ConfigRules.decodingChecks {
            if let ignoredTheta { try ConfigRules.positive(ignoredTheta, topLevelKeys.other.theta) }
            if let ignoredShare { try ConfigRules.fraction(ignoredShare, topLevelKeys.other.partialRotaryFactor) }
            func key(_ name: String) -> String { keys[name] ?? name }
            try ConfigRules.positive(theta, nestedTheta != nil ? nestedPath + "rope_theta" : key("rope_theta"))
            try ConfigRules.positiveIfPresent(factor, nestedPath + "factor")
            try ConfigRules.positiveIfPresent(lowFrequencyFactor, nestedPath + "low_freq_factor")
            try ConfigRules.positiveIfPresent(highFrequencyFactor, nestedPath + "high_freq_factor")
            // A high_freq_factor at or below low_freq_factor is run by transformers with a warning: no frequency
            // is smoothed (`Llama3RopeParameters.scaled` follows it).
            if let originalMax {
                let name = nestedPath + "original_max_position_embeddings"
                self.originalMaxPositions = try ConfigRules.count(ConfigRules.integer(originalMax, name), name)
            }
            for value in frequencyFactors ?? [] { try ConfigRules.positive(value, nestedPath + "frequency_factors") }
            for value in shortFactor ?? [] { try ConfigRules.positive(value, nestedPath + "short_factor") }
            for value in longFactor ?? [] { try ConfigRules.positive(value, nestedPath + "long_factor") }
            do { try yarn.check() } catch let invalid as InvalidConfigValue {
                throw InvalidConfigValue(key: nestedPath + invalid.key, problem: invalid.problem)
            }
            if let maxPositions {
                self.maxPositions = try ConfigRules.count(
                    ConfigRules.integer(maxPositions, "max_position_embeddings"), "max_position_embeddings")
            }
            // transformers' `standardize_rope_params` for one set of rope
            // parameters: the scaled types take a top-level original length
            // over theirs, and max_position_embeddings when neither is given.
            if Self.typesWithOriginalLength.contains(type) {
                if let topLevelOriginalMax {
                    self.originalMaxPositions = try ConfigRules.count(
                        ConfigRules.integer(topLevelOriginalMax, "original_max_position_embeddings"), "original_max_position_embeddings")
                }
                self.originalMaxPositions = self.originalMaxPositions ?? self.maxPositions
            }
        }
    }

    /// The rope types `standardize_rope_params` gives an `original_max_position_embeddings`.
    static let typesWithOriginalLength: Set<String> = ["llama3", "yarn", "longrope"]

    /// int(width × share), truncated as Python's int() does, held within
    /// ±Int.max / 2 (NaN as 0): a share far outside (0, 1] is then refused
    /// by the width checks that follow instead of trapping the conversion.
    public static func truncatedWidth(_ width: Int, _ share: Double) -> Int {
        let product = Double(width) * share, bound = Double(Int.max / 2)
        return product.isNaN ? 0 : Int(max(min(product, bound), -bound))
    }

    /// These settings as one layer type's entry of rope parameters nested
    /// by layer type (`rope_parameters.full_attention`), which transformers
    /// standardises differently from a flat set: a scaled type without
    /// `original_max_position_embeddings` takes `maxPositions`, the top-level
    /// keys are not read, and YaRN always truncates its correction range (it
    /// reads `truncate` from the outer, per-type object, where it never is).
    public func forLayerType(maxPositions: Int?) -> RopeSettings {
        var settings = self
        settings.yarn.truncate = true
        // YaRN infers a null factor from the config's max_position_embeddings.
        settings.maxPositions = maxPositions ?? self.maxPositions
        if Self.typesWithOriginalLength.contains(type) {
            settings.originalMaxPositions = originalMaxPositions ?? maxPositions
        }
        return settings
    }

    /// How a family's transformers model reads `partial_rotary_factor`.
    public enum PartialRotary: Sendable {
        /// It rotates that share of each head, `default` when the config is
        /// silent (phi3, gpt_neox: their rotary embedding reads the key).
        case honoured(default: Double)
        /// As `honoured`, for an attention (`attentionClass`) that slices
        /// int(head_dim · share) dimensions against its rotary table, which
        /// is 2·ceil(w/2) wide: an odd width fails there (or, at 1,
        /// broadcasts the heads wider), so it is refused (phi, stablelm).
        case sliced(default: Double, attentionClass: String)
        /// Its rotary embedding ignores the key and rotates the whole head
        /// (llama, qwen3, gemma, ...). With a scaled rope type transformers'
        /// shared initialisers apply the factor and the forward then fails on
        /// mismatched shapes: such a config is refused.
        case ignored
    }

    /// The rotary embedding for heads of `headDim`, or an error naming the
    /// config for scaling types droptrace does not implement, or a partial
    /// rotary factor the family cannot run (`PartialRotary`).
    /// `maxPositions` (max_position_embeddings; by default the one these
    /// settings were read beside) gives LongRoPE its factor when the config
    /// names none. `tableWidth`: the width transformers sizes
    /// the rotary table by when it is not the head's (GPT-NeoX reads the
    /// config's `head_dim` there, its heads being hidden_size / heads wide).
    public func embedding(
        headDim: Int, tableWidth: Int? = nil, partialRotary: PartialRotary = .ignored, defaultTheta: Double = 10_000,
        maxPositions: Int? = nil, configPath: String
    ) throws -> RotaryEmbedding {
        let share: Double
        switch partialRotary {
        case .honoured(let fallback), .sliced(let fallback, _):
            if partialRotaryFactorIsNull {
                throw InvalidConfigValue(key: partialRotaryKey, problem: "is null, which transformers' rotary embedding cannot run").error(path: configPath)
            }
            share = partialRotaryFactor ?? fallback
            try ConfigRules.checks(path: configPath) { _ = try ConfigRules.fraction(share, partialRotaryKey) }
        case .ignored:
            // The family's own rotary set-up never reads the fraction; the shared initialisers of the
            // scaled types do, and their tables then fit no head unless it is 1.
            if type != "default", partialRotaryFactorIsNull || (partialRotaryFactor.map { $0 != 1 } ?? false) {
                throw DroptraceError(
                    "partial_rotary_factor \(partialRotaryFactor.map { "\($0)" } ?? "null") with rope type \"\(type)\": this family's transformers model cannot run it (its rotary tables would not fit the heads)",
                    path: configPath)
            }
            share = 1
        }
        // transformers truncates the rotated width but does not round it to
        // even: an odd width w yields ceil(w/2) frequencies over exponent 2i/w
        // and rotates 2·ceil(w/2) dimensions, which must fit in the head.
        // (The fraction is in (0, 1] and head_dim confirmed by the weights, so
        // neither the product nor the table can blow up.)
        let rotaryDim = Self.truncatedWidth(tableWidth ?? headDim, share)
        guard rotaryDim + rotaryDim % 2 <= headDim else {
            let source = tableWidth.map { "\"head_dim\" \($0) with the rotary fraction \(share)" } ?? "\"partial_rotary_factor\""
            throw DroptraceError(
                "\(source) gives a rotary width of \(rotaryDim), which rotates \(rotaryDim + rotaryDim % 2) dimensions of a head of \(headDim)",
                path: configPath)
        }
        if case .sliced(_, let attentionClass) = partialRotary, rotaryDim % 2 != 0 {
            throw DroptraceError(
                "partial_rotary_factor gives an odd rotary width of \(rotaryDim), which transformers' \(attentionClass) cannot rotate: it slices \(rotaryDim) dimensions against a \(rotaryDim + 1)-wide rotary table (failing, or at width 1 broadcasting the heads wider)",
                path: configPath)
        }
        let base = thetaIsExplicit ? theta : defaultTheta
        var attentionScaling: Float = 1
        var frequencies = RotaryEmbedding.defaultInverseFrequencies(base: base, rotaryDim: rotaryDim)
        switch type {
        case "default":
            break
        case "dynamic":
            // Dynamic NTK only rescales beyond max_position_embeddings, which
            // droptrace refuses, so within range it is the default rotation;
            // transformers still needs the factor (a KeyError without it, a
            // TypeError building the model from a null one).
            _ = try require(factor, "factor", configPath)
        case "linear":
            let factor = try require(factor, "factor", configPath)
            frequencies = frequencies.map { $0 / Float(factor) }
        case "llama3":
            frequencies = try llama3Scaled(frequencies, configPath: configPath)
        case "longrope", "su":
            // "su" is the first Phi-3 configs' name for LongRoPE.
            guard frequencyFactors == nil else {
                throw DroptraceError("rope type \"\(type)\" cannot take frequency_factors", path: configPath)
            }
            return try longRoPE(
                base: base, rotaryDim: rotaryDim, headDim: headDim, maxPositions: maxPositions ?? self.maxPositions,
                configPath: configPath)
        case "yarn":
            (frequencies, attentionScaling) = try yarnScaled(base: base, rotaryDim: rotaryDim, configPath: configPath)
        default:
            throw DroptraceError(
                "unsupported rope type \"\(type)\" (supported: default, linear, dynamic, llama3, longrope, yarn)", path: configPath)
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

    /// Llama 3.1's frequency-dependent interpolation (`Llama3RopeParameters.scaled`).
    private func llama3Scaled(_ frequencies: [Float], configPath: String) throws -> [Float] {
        Llama3RopeParameters(
            factor: try require(factor, "factor", configPath),
            lowFrequencyFactor: try require(lowFrequencyFactor, "low_freq_factor", configPath),
            highFrequencyFactor: try require(highFrequencyFactor, "high_freq_factor", configPath),
            originalMaxPositions: Int(try require(originalMaxPositions.map(Double.init), "original_max_position_embeddings", configPath))
        ).scaled(frequencies)
    }

    /// LongRoPE (Phi-3 128k, Phi-3.5, Phi-4-mini), as transformers'
    /// `_compute_longrope_parameters` and `longrope_frequency_update` define
    /// it: frequency i is 1 / (f_i · base^(2i/d)) with f the `short_factor`,
    /// or the `long_factor` for a sequence longer than
    /// `original_max_position_embeddings` (transformers picks the set per
    /// forward call from its largest position + 1: the sequence's length, or
    /// for one cached decoding step the position reached); cos and sin are
    /// multiplied by `attention_factor`, by default √(1 + ln s / ln original)
    /// for s = `factor`, or max_position_embeddings / original when the
    /// config names none (1 when s ≤ 1).
    private func longRoPE(base: Double, rotaryDim: Int, headDim: Int, maxPositions: Int?, configPath: String) throws -> RotaryEmbedding {
        let original = try require(originalMaxPositions.map(Double.init), "original_max_position_embeddings", configPath)
        // transformers wants ⌊d/2⌋ factors per list but rotates ⌈d/2⌉ pairs: no list fits an odd width.
        guard rotaryDim % 2 == 0 else {
            throw DroptraceError(
                "rope type \"\(type)\" cannot rotate an odd width of \(rotaryDim) dimensions (\(partialRotaryKey) × head width): "
                    + "transformers wants \(rotaryDim / 2) factors per list for it and rotates \((rotaryDim + 1) / 2) pairs, and fails",
                path: configPath)
        }
        let count = rotaryDim / 2
        func frequencies(_ key: String, _ factors: [Double]?) throws -> [Float] {
            guard let factors else { throw DroptraceError("rope type \"\(type)\" needs \"\(key)\"", path: configPath) }
            // One factor is broadcast over every pair, as torch multiplies it.
            guard factors.count == count || factors.count == 1 else {
                throw DroptraceError(
                    "rope \(key) has \(factors.count) entries, expected \(count) (one per rotated pair) or 1 (for all)", path: configPath)
            }
            let perPair = factors.count == 1 ? Array(repeating: factors[0], count: count) : factors
            return zip(perPair, stride(from: 0, to: rotaryDim, by: 2)).map { factor, i in
                1 / (Float(factor) * powf(Float(base), Float(i) / Float(rotaryDim)))
            }
        }
        let short = try frequencies("short_factor", shortFactor)
        let long = try frequencies("long_factor", longFactor)
        var scaling = attentionFactor ?? 1
        if attentionFactor == nil {
            let factor = try require(factor ?? maxPositions.map { Double($0) / original }, "factor", configPath)
            if factor > 1 {
                // ln(original) divides: an original length of 1 leaves no scale.
                guard original > 1 else {
                    throw DroptraceError(
                        "rope type \"\(type)\" needs original_max_position_embeddings above 1 to scale attention, got \(Int(original))",
                        path: configPath)
                }
                scaling = (1 + log(factor) / log(original)).squareRoot()
            }
        }
        return RotaryEmbedding(
            inverseFrequencies: short, headDim: headDim, attentionScaling: Float(scaling),
            longContext: RotaryEmbedding.LongContext(beyondLength: Int(original), inverseFrequencies: long))
    }

    func require(_ value: Double?, _ key: String, _ configPath: String) throws -> Double {
        guard let value else {
            throw DroptraceError("rope type \"\(type)\" needs \"\(key)\"", path: configPath)
        }
        return value
    }
}

extension RopeSettings {
    /// How a 4.x config spells one kind of layer's rope
    /// (`parameters(forLayerType:…)`): the key of its base, whether
    /// `rope_scaling` applies to it, and the base named nowhere.
    struct LegacyLayerTypeRope {
        let thetaKey: String
        let scaling: Bool
        let theta: Double
    }

    /// One rotary table per layer type of `layerTypes`, each read from the
    /// config section `sectionName` (nil: the top level) as
    /// `parameters(forLayerType:…)` gives it, with `full`'s legacy spelling
    /// for full-attention layers and `sliding`'s for the others (Gemma 3,
    /// Gemma 3n, ModernBERT's decoder).
    /// - Throws: `DroptraceError` naming `configPath` as `parameters` and `embedding` do.
    static func tablesByLayerType(
        _ layerTypes: [String], checkpoint: Checkpoint, section sectionName: String?, headDim: Int, maxPositions: Int,
        full: LegacyLayerTypeRope, sliding: LegacyLayerTypeRope, configPath: String
    ) throws -> [String: RotaryEmbedding] {
        let section = try checkpoint.configObject(ConfigSection(sectionName))
        var tables: [String: RotaryEmbedding] = [:]
        for layerType in Set(layerTypes).sorted() {
            let legacy = layerType == AttentionLayerType.full ? full : sliding
            let parameters = try Self.parameters(
                forLayerType: layerType, in: section, legacyThetaKey: legacy.thetaKey, legacyScaling: legacy.scaling,
                defaultTheta: legacy.theta, configPath: configPath)
            tables[layerType] = try checkpoint.decodeConfig(RopeSettings.self, object: ["rope_parameters": parameters], under: sectionName)
                .forLayerType(maxPositions: maxPositions)
                .embedding(headDim: headDim, maxPositions: maxPositions, configPath: configPath)
        }
        return tables
    }

    /// The rope parameters of the layers of `layerType`, as one flat
    /// `rope_parameters` object, from a config section whose layer types
    /// rotate differently (Gemma-3's local and global layers):
    /// - transformers 5.x nests them by layer type,
    ///   `rope_parameters: {"full_attention": {...}, "sliding_attention": {...}}`;
    /// - 4.x configs give the base under `legacyThetaKey` and, when
    ///   `legacyScaling`, the scaling under `rope_scaling`, which then
    ///   overrides the nested values as transformers merges it.
    /// A base named nowhere is `defaultTheta`; a type named nowhere is "default".
    ///
    /// Decode the result with `Checkpoint.decodeConfig(_:object:under:)` as
    /// `["rope_parameters": parameters]`.
    /// - Throws: `DroptraceError` naming `configPath` when `rope_parameters`,
    ///   its member for the layer type, or `rope_scaling` is not an object.
    public static func parameters(
        forLayerType layerType: String, in section: [String: Any], legacyThetaKey: String, legacyScaling: Bool,
        defaultTheta: Double, configPath: String
    ) throws -> [String: Any] {
        func object(_ value: Any?, _ key: String) throws -> [String: Any]? {
            switch value {
            case nil, is NSNull: return nil
            case let object as [String: Any]: return object
            default: throw DroptraceError("key \"\(key)\" has the wrong type (expected an object)", path: configPath)
            }
        }
        let nested = try object(section["rope_parameters"], "rope_parameters")
        var parameters = try object(nested?[layerType], "rope_parameters.\(layerType)") ?? ["rope_type": "default"]
        if legacyScaling, let scaling = try object(section["rope_scaling"], "rope_scaling") {
            parameters.merge(scaling) { _, legacy in legacy }
        }
        if parameters["rope_theta"] == nil {
            parameters["rope_theta"] = section[legacyThetaKey].flatMap { $0 is NSNull ? nil : $0 } ?? defaultTheta
        }
        // transformers' standardize_rope_params gives every layer type a top-level fraction it lacks.
        if parameters["partial_rotary_factor"] == nil, let share = section["partial_rotary_factor"], !(share is NSNull) {
            parameters["partial_rotary_factor"] = share
        }
        return parameters
    }
}

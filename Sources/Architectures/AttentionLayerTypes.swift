import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The attention types config.json's `layer_types` names.
enum AttentionLayerType {
    static let full = "full_attention"
    static let sliding = "sliding_attention"

    /// Qwen2Config's and Qwen3Config's rule when `layer_types` is absent:
    /// with a window, the layers from `max_window_layers` (default 28) on slide.
    static func qwenDefault(layers: Int, window: Int?, maxWindowLayers: Int?) -> [String] {
        (0..<layers).map { window != nil && $0 >= (maxWindowLayers ?? 28) ? sliding : full }
    }

    /// Refuses a type other than full_attention / sliding_attention (the
    /// cache transformers 5 builds from `layer_types` for every family
    /// fails on the others: linear_attention, chunked_attention), and
    /// sliding layers without a window (`hasWindow`; transformers cannot
    /// build their cache or mask). `windowKeys` names the keys that set it,
    /// `listKey` the list (`text_config.layer_types` in a wrapper's config).
    /// - Throws: `DroptraceError` naming `path`.
    static func check(
        _ types: [String], hasWindow: Bool, windowKeys: String = "sliding_window", listKey: String = "layer_types", path: String
    ) throws {
        if let unknown = types.first(where: { $0 != sliding && $0 != full }) {
            throw DroptraceError("unsupported layer type \"\(unknown.forErrorMessage)\" in \(listKey)", path: path)
        }
        if !hasWindow, types.contains(sliding) {
            throw DroptraceError("\(listKey) has sliding_attention layers but \(windowKeys) set no window", path: path)
        }
    }
}

/// The hybrid-attention keys Exaone4Config and Cohere2Config read alike:
/// `sliding_window` (absent: 4096; null: none), `layer_types`, and
/// `sliding_window_pattern` (absent: 4; nil when not an integer: null, "LLLG").
struct SlidingWindowPattern: Decodable {
    var slidingWindow: Int?
    var layerTypes: [String]?
    var pattern: Int?

    enum CodingKeys: String, CodingKey {
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case pattern = "sliding_window_pattern"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // DecoderDimensions checks the window is at least 1 and layer_types' length.
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : 4096
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        pattern = c.contains(.pattern) ? (try? c.decodeIfPresent(Int.self, forKey: .pattern)) ?? nil : 4
    }

    /// `layer_types`, else the config classes' rule (`configClass` names
    /// which): layer i slides unless i + 1 is a multiple of the pattern
    /// (Python's remainder is 0 exactly when Swift's is, whatever the sign).
    /// - Throws: `DroptraceError` naming `path` when the rule is needed and the
    ///   pattern is not a non-zero integer: the config classes fail computing the remainder.
    func resolvedLayerTypes(layers: Int, configClass: String, section: ConfigSection, path: String) throws -> [String] {
        if let layerTypes { return layerTypes }
        return try Self.everyNthFull(
            layers: layers, pattern: pattern, key: section.qualified("sliding_window_pattern"), configClass: configClass, path: path)
    }

    /// The config classes' rule under `key` (Cohere2Config's and
    /// Exaone4Config's `sliding_window_pattern`, AfmoeConfig's
    /// `global_attn_every_n_layers`): layer i slides unless i + 1 is a
    /// multiple of `pattern`.
    /// - Throws: `DroptraceError` naming `path` when `pattern` is not a
    ///   non-zero integer: the config class fails computing the remainder.
    static func everyNthFull(layers: Int, pattern: Int?, key: String, configClass: String, path: String) throws -> [String] {
        guard let pattern, pattern != 0 else {
            throw DroptraceError(
                "\(key) is not a non-zero integer and layer_types is not given: \(configClass) derives "
                    + "layer_types as (i + 1) % \(key), which fails; give layer_types", path: path)
        }
        return (0..<layers).map { ($0 + 1) % pattern == 0 ? AttentionLayerType.full : AttentionLayerType.sliding }
    }
}

extension DecoderParts {
    /// Each layer's attention type: config.json's `layer_types` when given
    /// (`DecoderDimensions` checked it has one entry per layer), else
    /// `rule(layer)`, the family's transformers default.
    ///
    /// - Throws: `DroptraceError` naming config.json for a type other than
    ///   full_attention / sliding_attention, or sliding layers without a
    ///   `sliding_window` (transformers would give them no window at all).
    func layerTypes(_ configured: [String]?, slidingWindow: Int?, default rule: (Int) -> String) throws -> [String] {
        let types = configured ?? (0..<dimensions.numHiddenLayers).map(rule)
        try AttentionLayerType.check(
            types, hasWindow: slidingWindow != nil, windowKeys: section.qualified("sliding_window"),
            listKey: section.qualified("layer_types"), path: configPath)
        return types
    }

    /// Throws when config.json sets no window (`sliding_window: null`) in a
    /// family whose transformers model, `modelClass`, builds a sliding-window
    /// mask for every model (Ministral, Gemma-2, Gemma-3, OLMo-3, gpt-oss;
    /// Qwen2-MoE with `use_sliding_window`): the mask fails there without
    /// one ("Could not find a `sliding_window` argument"), even when every
    /// layer attends fully. `keys` names the keys that set the window (by
    /// default the section's `sliding_window`).
    func requireWindow(_ window: Int?, builtBy modelClass: String, keys: String? = nil) throws {
        guard window == nil else { return }
        let keys = keys ?? section.qualified("sliding_window")
        throw DroptraceError(
            "\(keys) is null, which transformers' \(modelClass) cannot run: it builds a sliding-window mask for "
                + "every model, even when every layer attends fully", path: configPath)
    }
}

/// Rotary settings per attention type, for families whose full-attention
/// and sliding-window layers rotate differently (OLMo-3), as transformers
/// 5.x resolves their config.json (`convert_rope_params_to_dict`):
///
/// - full_attention: `rope_parameters.full_attention`, or 4.x `rope_scaling`;
///   base `rope_theta` inside it, else the top-level `rope_theta`, else the
///   family's default;
/// - sliding_attention: `rope_parameters.sliding_attention`; base inside it,
///   else the family's default (transformers hands the top-level
///   `rope_theta` to the full layers only).
///
/// A missing or null entry is the default rotation. Keys of a flat
/// `rope_parameters` object beside the per-type ones are not read, as
/// transformers does not read them.
struct LayerTypeRopeSettings: Decodable {
    private var byType: [String: RopeSettings] = [:]
    private var topLevelTheta: Double?

    init(from decoder: Decoder) throws {
        typealias Key = ConfigKey
        let top = try decoder.container(keyedBy: Key.self)
        func object(_ container: KeyedDecodingContainer<Key>, _ name: String) throws -> KeyedDecodingContainer<Key>? {
            guard container.contains(Key(name)), try !container.decodeNil(forKey: Key(name)) else { return nil }
            return try container.nestedContainer(keyedBy: Key.self, forKey: Key(name))
        }
        topLevelTheta = try top.decodeIfPresent(Double.self, forKey: Key("rope_theta"))
        // standardize_rope_params gives each type's parameters a top-level fraction they lack.
        let topLevelShare = try top.decodeIfPresent(Double.self, forKey: Key("partial_rotary_factor"))
        try ConfigRules.decodingChecks { try ConfigRules.positiveIfPresent(topLevelTheta, "rope_theta") }
        if let parameters = try object(top, "rope_parameters") {
            for type in [AttentionLayerType.full, AttentionLayerType.sliding] {
                guard let settings = try object(parameters, type) else { continue }
                var rope = try RopeSettings(top: nil, nested: settings)
                if rope.partialRotaryFactor == nil, !rope.partialRotaryFactorIsNull { rope.partialRotaryFactor = topLevelShare }
                byType[type] = rope
            }
        }
        if let scaling = try object(top, "rope_scaling") {
            // transformers merges the two; a config holding both is not one it wrote.
            guard byType[AttentionLayerType.full] == nil else {
                throw DecodingError.dataCorrupted(DecodingError.Context(
                    codingPath: [Key("rope_scaling")],
                    debugDescription: "given besides rope_parameters.full_attention; keep one of them"))
            }
            byType[AttentionLayerType.full] = try RopeSettings(top: nil, nested: scaling)
        }
    }

    /// The rotary embedding of `layerType`'s layers for heads of `headDim`
    /// (`maxPositions`: max_position_embeddings, see `RopeSettings.forLayerType`).
    /// - Throws: `DroptraceError` naming config.json for a scaling type
    ///   droptrace does not implement or a rotary width that does not fit.
    func embedding(
        for layerType: String, headDim: Int, defaultTheta: Double, maxPositions: Int, configPath: String
    ) throws -> RotaryEmbedding {
        let settings = try (byType[layerType] ?? RopeSettings(top: nil, nested: nil)).forLayerType(maxPositions: maxPositions)
        let theta = layerType == AttentionLayerType.full ? topLevelTheta ?? defaultTheta : defaultTheta
        return try settings.embedding(headDim: headDim, defaultTheta: theta, maxPositions: maxPositions, configPath: configPath)
    }
}

extension DecoderParts {
    /// The rotary embedding of each attention type (`LayerTypeRopeSettings`),
    /// for heads whose width q_proj and k_proj of the first kept attention
    /// confirm; tables of width 0 when the config drops every attention layer.
    func rotaryByLayerType(defaultTheta: Double) throws -> (full: RotaryEmbedding, sliding: RotaryEmbedding) {
        try confirmAttentionProjections()
        let headDim = firstKeptAttention == nil ? 0 : dimensions.resolvedHeadDim
        let settings = try config(LayerTypeRopeSettings.self)
        func table(_ type: String) throws -> RotaryEmbedding {
            try settings.embedding(
                for: type, headDim: headDim, defaultTheta: defaultTheta, maxPositions: dimensions.maxPositionEmbeddings,
                configPath: configPath)
        }
        return (try table(AttentionLayerType.full), try table(AttentionLayerType.sliding))
    }
}

extension DecoderParts {
    /// One rotary embedding per layer type in `types`, from its entry of
    /// `rope_parameters` as written, for config classes that do not
    /// standardise those entries and whose rotary embedding (`rotaryClass`)
    /// reads `rope_theta` in each, failing without it (Mellum,
    /// MiMo-V2-Flash); `defaults` are the class's entries when config.json
    /// has no `rope_parameters`. `partialRotary` gives, by rope type, how the
    /// attention reads an entry's `partial_rotary_factor`; nil: it rotates
    /// whole heads (`attentionClass`), and another factor is refused.
    /// `nullIsNoPositions`: a null entry means the type's layers take no
    /// positions (CohereCompass's NoPE layers), and they get no table.
    /// `inheritsPartialRotaryFactor`: the config class standardises the
    /// entries, copying a top-level `partial_rotary_factor` into each entry
    /// without one (CohereCompassTextConfig; a null one is not copied, as
    /// transformers copies only a value that is not None). `inheritedRopeTheta`:
    /// the config class likewise copies the top-level `rope_theta` into each
    /// entry without one (a null too, which its rotary set-up then fails on),
    /// this value (the class's `default_theta`) where config.json has none
    /// (PreTrainedConfig.convert_rope_params_to_dict: DoryConfig, ErgoConfig).
    /// `entries`: the per-type entries where the config class builds them
    /// from another form of config.json's (Ergo's flat parameters, which
    /// describe its sliding layers), in place of `rope_parameters` as written.
    /// `standardised`: the config class standardises the entries
    /// (`standardize_rope_params`), a scaled type without
    /// `original_max_position_embeddings` taking max_position_embeddings;
    /// false where it overrides `convert_rope_params_to_dict` without doing
    /// so (ZayaConfig, LagunaConfig, BeamConfig, MellumConfig,
    /// MiMoV2FlashConfig), whose rope validation then refuses such an entry.
    /// Tables of width 0 when the config drops every attention layer.
    /// - Throws: `DroptraceError` naming config.json and the key.
    func rotariesAsWritten(
        types: Set<String>, defaults: [String: [String: Any]], rotaryClass: String, attentionClass: String,
        partialRotary: ((_ ropeType: String) -> RopeSettings.PartialRotary)? = nil, nullIsNoPositions: Bool = false,
        inheritsPartialRotaryFactor: Bool = false, inheritedRopeTheta: Double? = nil, entries: [String: Any]? = nil,
        standardised: Bool = true
    ) throws -> [String: RotaryEmbedding] {
        let object = try checkpoint.configObject(section)
        let written = entries ?? (object["rope_parameters"] as? [String: Any])
        let topLevelShare = inheritsPartialRotaryFactor ? object["partial_rotary_factor"].flatMap { $0 is NSNull ? nil : $0 } : nil
        let topLevelTheta = inheritedRopeTheta.map { object["rope_theta"] ?? $0 }
        let headDim = firstKeptAttention == nil ? 0 : dimensions.resolvedHeadDim
        var result: [String: RotaryEmbedding] = [:]
        for type in types.sorted() {
            let found = written.map { $0[type] } ?? defaults[type]
            if nullIsNoPositions, found is NSNull { continue }
            let entryKey = "rope_parameters.\(type)"
            let settings = try checks {
                guard var entry = found as? [String: Any] else {
                    throw InvalidConfigValue(
                        key: entryKey,
                        problem: "is not an object\(nullIsNoPositions ? " or null" : ""): \(rotaryClass) reads the rotation of the \(type) layers there")
                }
                if entry["rope_theta"] == nil, let topLevelTheta { entry["rope_theta"] = topLevelTheta }
                guard entry["rope_theta"] is NSNumber else {
                    throw InvalidConfigValue(
                        key: entryKey + ".rope_theta", problem: entry["rope_theta"] == nil ? "is missing: \(rotaryClass) reads it" : "must be a number: \(rotaryClass) raises it to powers")
                }
                if entry["partial_rotary_factor"] == nil, let topLevelShare { entry["partial_rotary_factor"] = topLevelShare }
                let settings: RopeSettings
                do {
                    settings = try checkpoint.decodeConfig(RopeSettings.self, object: ["rope_parameters": entry], under: section.name)
                } catch var error as DroptraceError {
                    // The entry was read as the whole rope_parameters: name its keys under the layer type.
                    error.message = error.message.replacingOccurrences(
                        of: "\"\(section.qualified("rope_parameters")).", with: "\"\(section.qualified(entryKey)).")
                    throw error
                }
                if partialRotary == nil, let share = settings.partialRotaryFactor, share != 1 {
                    throw InvalidConfigValue(
                        key: entryKey + ".partial_rotary_factor",
                        problem: "is \(share): \(attentionClass) rotates whole heads, and a narrower rotary table fails there")
                }
                if !standardised, RopeSettings.typesWithOriginalLength.contains(settings.type), settings.originalMaxPositions == nil {
                    throw InvalidConfigValue(
                        key: entryKey + ".original_max_position_embeddings",
                        problem: "is missing: transformers requires it for rope type \"\(settings.type)\" here, as this family's config "
                            + "class does not take max_position_embeddings for it")
                }
                return settings
            }
            result[type] = try settings.forLayerType(maxPositions: dimensions.maxPositionEmbeddings).embedding(
                headDim: headDim, partialRotary: partialRotary?(settings.type) ?? .honoured(default: 1),
                maxPositions: dimensions.maxPositionEmbeddings, configPath: configPath)
        }
        return result
    }
}

extension DecoderParts {
    /// Refuses a hybrid family's layer kinds that the weights contradict:
    /// each layer whose mixer (or, `mlp`, whose MLP) the config keeps must
    /// hold one of its kind's tensors `probes[type]` (named under
    /// "layers.<index>."); `key` names where the kinds come from.
    /// - Throws: `DroptraceError` naming config.json, the layer and the missing tensor.
    func confirmLayerKinds(_ types: [String], key: String = "layer_types", mlp: Bool = false, probes: [String: [String]]) throws {
        for (index, type) in types.enumerated() where !(mlp ? configuredDrops.dropsMLP(index) : configuredDrops.dropsAttention(index)) {
            guard let names = probes[type], let first = names.first else { continue }
            guard names.contains(where: { weights.has("layers.\(index).\($0)") }) else {
                throw DroptraceError(
                    "\"\(key)\" makes layer \(index) a \(type) layer, but the weights have no '\(weights.prefix)layers.\(index).\(first)'",
                    path: configPath)
            }
        }
    }
}

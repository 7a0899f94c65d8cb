import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// `text_config` of `step3p7` (Step3p7TextConfig, whose own model_type is
/// "step3p5"), with its defaults, each key as `__post_init__` resolves it:
/// the aliases of its `attribute_map` over the fields they stand for
/// (`moe_num_experts`, `moe_top_k`, `share_expert_dims`, `num_mtp_layers`;
/// `num_local_experts` is a field the class sets before `n_routed_experts`,
/// which then replaces it: not read), and the legacy spellings of the
/// releases (`moe_layers_enum`, `attention_other_setting`, per-layer
/// `rope_theta` / `partial_rotary_factors`, `rope_scaling`, every per-layer
/// list padded with `num_nextn_predict_layers` trailing entries).
struct Step3p7Configuration: Decodable {
    var rmsNormEps: Double
    var attentionBias: Bool
    var mlpBias: Bool
    var slidingWindow: Int?
    var layerTypes: [String]?
    var mlpLayerTypes: [String]?
    var slidingHeads: Int?
    var queryPreAttnScalar: Double?
    var experts: Int
    var expertsKey: String
    var expertsPerToken: Int
    var expertsPerTokenKey: String
    var moeIntermediateSize: Int
    var sharedWidth: Int
    var sharedWidthKey: String
    var scalingFactor: Double
    var swigluLimits: [Double?]?
    var swigluLimitsShared: [Double?]?
    /// `num_nextn_predict_layers` (alias `num_mtp_layers`): trailing MTP
    /// layers, stored after the decoder's and never run.
    var predictionLayers: Int
    var predictionLayersKey: String
    /// `gating`: true or "per-head" (anything else: a gate per column, on which transformers fails).
    var gatesPerHead: Bool
    var bidirectional: Bool
    /// `moe_layers_enum`: the sparse layers' indices, read where `mlp_layer_types` is absent.
    var moeLayersEnum: Set<Int>?
    /// `attention_other_setting.num_attention_heads`, read where `num_sliding_attention_heads` is absent.
    var otherSettingHeads: Int?
    var hasLimitAfterAct: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case rmsNormEps = "rms_norm_eps"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case mlpLayerTypes = "mlp_layer_types"
        case slidingHeads = "num_sliding_attention_heads"
        case queryPreAttnScalar = "query_pre_attn_scalar"
        case nRoutedExperts = "n_routed_experts"
        case moeNumExperts = "moe_num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case moeTopK = "moe_top_k"
        case moeIntermediateSize = "moe_intermediate_size"
        case shareExpertDim = "share_expert_dim"
        case shareExpertDims = "share_expert_dims"
        case scalingFactor = "moe_router_scaling_factor"
        case swigluLimits = "swiglu_limits"
        case swigluLimitsShared = "swiglu_limits_shared"
        case nextnPredictLayers = "num_nextn_predict_layers"
        case mtpLayers = "num_mtp_layers"
        case gating
        case bidirectional = "use_bidirectional_attention"
        case moeLayersEnum = "moe_layers_enum"
        case attentionOtherSetting = "attention_other_setting"
        case limitAfterAct = "limit_after_act"
    }

    private enum OtherSettingKeys: String, CodingKey { case numAttentionHeads = "num_attention_heads" }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        /// An alias of `attribute_map`, set after the field it stands for, over it.
        func aliased<T: Decodable>(_ alias: CodingKeys, over field: CodingKeys, _ fallback: T) throws -> (T, String) {
            if let value = try c.decodeIfPresent(T.self, forKey: alias) { return (value, alias.rawValue) }
            return (try c.decodeIfPresent(T.self, forKey: field) ?? fallback, field.rawValue)
        }
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        slidingHeads = try c.decodeIfPresent(Int.self, forKey: .slidingHeads)
        queryPreAttnScalar = try c.decodeIfPresent(Double.self, forKey: .queryPreAttnScalar)
        (experts, expertsKey) = try aliased(.moeNumExperts, over: .nRoutedExperts, 288)
        (expertsPerToken, expertsPerTokenKey) = try aliased(.moeTopK, over: .numExpertsPerTok, 8)
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 1280
        (sharedWidth, sharedWidthKey) = try aliased(.shareExpertDims, over: .shareExpertDim, 1280)
        scalingFactor = try c.decodeIfPresent(Double.self, forKey: .scalingFactor) ?? 1
        swigluLimits = try c.decodeIfPresent([Double?].self, forKey: .swigluLimits)
        swigluLimitsShared = try c.decodeIfPresent([Double?].self, forKey: .swigluLimitsShared)
        (predictionLayers, predictionLayersKey) = try aliased(.mtpLayers, over: .nextnPredictLayers, 0)
        // Step3p7Attention: `gating is True or gating == "per-head"`.
        gatesPerHead = (try? c.decodeIfPresent(Bool.self, forKey: .gating)) ?? (try? c.decodeIfPresent(String.self, forKey: .gating))
            .map { $0 == "per-head" } ?? true
        bidirectional = try c.decodeIfPresent(Bool.self, forKey: .bidirectional) ?? false
        hasLimitAfterAct = c.contains(.limitAfterAct)
        try ConfigRules.decodingChecks { try readLegacyKeys(c) }
        let (hasLimit, bidirectional, gatesPerHead, scalar, scaling) = (hasLimitAfterAct, self.bidirectional, self.gatesPerHead, queryPreAttnScalar, scalingFactor)
        let limits = [(swigluLimits, CodingKeys.swigluLimits), (swigluLimitsShared, .swigluLimitsShared)]
        try ConfigRules.decodingChecks {
            if hasLimit {
                throw InvalidConfigValue(
                    key: CodingKeys.limitAfterAct.rawValue, problem: "is set, which Step3p7TextConfig cannot take (a property without a setter: the clip follows the activation)")
            }
            if bidirectional {
                throw InvalidConfigValue(key: CodingKeys.bidirectional.rawValue, problem: "is true: droptrace scores causal language models only")
            }
            if !gatesPerHead {
                throw InvalidConfigValue(
                    key: CodingKeys.gating.rawValue,
                    problem: "is neither true nor \"per-head\": Step3p7Attention then gates each output column, which its forward cannot broadcast")
            }
            if !Float(scaling).isFinite {
                throw InvalidConfigValue(key: CodingKeys.scalingFactor.rawValue, problem: "must be a finite number that float32 holds, got \(scaling)")
            }
            if let scalar, !(scalar > 0 && scalar.isFinite && Float(pow(scalar, -0.5)).isFinite) {
                throw InvalidConfigValue(
                    key: CodingKeys.queryPreAttnScalar.rawValue, problem: "must be a positive finite number (transformers scales the scores by its -1/2 power), got \(scalar)")
            }
            for (list, key) in limits {
                if let bad = list?.compactMap({ $0 }).first(where: { !Float($0).isFinite }) {
                    throw InvalidConfigValue(key: key.rawValue, problem: "must hold finite numbers that float32 holds, got \(bad)")
                }
            }
        }
    }

    /// `moe_layers_enum` where `mlp_layer_types` is absent (a comma-separated
    /// string or a list; each non-blank item read by int()), and
    /// `attention_other_setting` where `num_sliding_attention_heads` is.
    private mutating func readLegacyKeys(_ c: KeyedDecodingContainer<CodingKeys>) throws {
        if mlpLayerTypes == nil, c.contains(.moeLayersEnum), try !c.decodeNil(forKey: .moeLayersEnum) {
            // A comma-separated string or a list; each non-blank item read by int().
            let items = (try? c.decode(String.self, forKey: .moeLayersEnum)).map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
            var indices = Set<Int>()
            if let items {
                for item in items where !item.trimmingCharacters(in: .whitespaces).isEmpty {
                    guard let index = Int(item.trimmingCharacters(in: .whitespaces)) else {
                        throw InvalidConfigValue(key: CodingKeys.moeLayersEnum.rawValue, problem: "has the item \"\(item.forErrorMessage)\", which is not a layer index")
                    }
                    indices.insert(index)
                }
            } else {
                guard let list = try? c.decode([Int].self, forKey: .moeLayersEnum) else {
                    throw InvalidConfigValue(key: CodingKeys.moeLayersEnum.rawValue, problem: "must be a comma-separated string or a list of layer indices")
                }
                indices = Set(list)
            }
            moeLayersEnum = indices
        }
        if slidingHeads == nil, c.contains(.attentionOtherSetting), try !c.decodeNil(forKey: .attentionOtherSetting) {
            guard let other = try? c.nestedContainer(keyedBy: OtherSettingKeys.self, forKey: .attentionOtherSetting) else {
                throw InvalidConfigValue(key: CodingKeys.attentionOtherSetting.rawValue, problem: "must be an object (transformers reads its num_attention_heads)")
            }
            otherSettingHeads = try other.decodeIfPresent(Int.self, forKey: .numAttentionHeads)
        }
    }

    /// A per-layer list as `__post_init__` trims it: with `predictionLayers`
    /// MTP layers, a list of `layers` + that many entries loses the trailing ones.
    func trimmed<T>(_ list: [T]?, layers: Int) -> [T]? {
        guard let list, predictionLayers != 0, list.count - layers == predictionLayers else { return list }
        return Array(list.prefix(layers))
    }

    /// Each layer's MLP kind: `mlp_layer_types`, else sparse on the layers
    /// `moe_layers_enum` lists, else on layers 3 and on.
    func mlpTypes(layers: Int) -> [String] {
        if let written = trimmed(mlpLayerTypes, layers: layers) { return written }
        let sparse: (Int) -> Bool = moeLayersEnum.map { set in { set.contains($0) } } ?? { $0 >= 3 }
        // Derived over the padded range, then cut to the decoder's layers (fewer when the MTP count is negative).
        let missing = predictionLayers >= 0 ? 0 : predictionLayers < -layers ? layers : -predictionLayers
        return (0..<(layers - missing)).map { sparse($0) ? "sparse" : "dense" }
    }

    /// The head count of `sliding_attention` layers unless `per_layer_config` says otherwise.
    func slidingHeadCount(_ heads: Int) -> Int { slidingHeads ?? otherSettingHeads ?? heads }

    /// Layer `index`'s SwiGLU clip from `limits` (none for 0 or null): the
    /// routed experts' from `swiglu_limits`, the dense and shared MLPs' from `swiglu_limits_shared`.
    func activation(layer index: Int, shared: Bool, layers: Int) -> Activation {
        guard let limits = trimmed(shared ? swigluLimitsShared : swigluLimits, layers: layers), index < limits.count,
              let limit = limits[index], limit != 0 else { return .silu }
        return .clipped(.silu, limit: Float(limit))
    }
}

/// StepFun's Step 3.7 (`step3p7`: Step3p7ForConditionalGeneration,
/// transformers' `models/step3p7/`), read as its language model (keys
/// under `text_config`, which Step3p7Config always builds as
/// Step3p7TextConfig whatever its model_type says; weights under
/// `model.language_model.`, or as released and as transformers saves them:
/// `model.layers.`, `moe.gate_proj` / `moe.up_proj` stacked per expert,
/// `moe.down_proj`, `moe.gate`, `moe.router_bias`, `share_expert.`, which
/// its conversion renames (`TensorRenamings`); the head `lm_head` tied by
/// the top-level `tie_word_embeddings` alone, default false; the vision
/// tower is not read). Its text config's own type, `step3p5`, has no model
/// class in transformers and is not registered. Each layer is Laguna's
/// pre-norm block with Gemma's (1 + w) RMS norms everywhere: per-head
/// (1 + w) q/k norms before rotary, heads of `head_dim` (128) over
/// `num_key_value_heads`, `num_sliding_attention_heads` on
/// "sliding_attention" layers (saved as `per_layer_config`, layer index →
/// `num_attention_heads`, which is read instead when given), q/k/v/o biases
/// by `attention_bias`, each head's output times sigmoid(`g_proj` x), the
/// scores scaled by `query_pre_attn_scalar` ^ -1/2 (default head_dim);
/// sliding layers attend within `sliding_window`; each layer type rotates
/// by its own `rope_parameters` entry (Gemma 3's text model; by default
/// all of each head at 1e4). The MLP by `mlp_layer_types`: a dense SwiGLU
/// (`gate_proj`, `up_proj`, `down_proj` of `intermediate_size`, biases by
/// `mlp_bias`), or MiniMax-M3's sigmoid routing (router `mlp.gate` with
/// its `e_score_correction_bias`, the chosen sigmoids over their sum, the
/// routed sum times `moe_router_scaling_factor`) of DeepSeek-V4-style
/// fused experts (`mlp.experts.gate_up_proj`, gate rows first, and
/// `down_proj`, of `moe_intermediate_size`) beside the shared expert
/// `mlp.shared_experts.` (`share_expert_dim`); every SwiGLU (SiLU: the
/// class sets `hidden_act` to "silu" whatever config.json says) clipped
/// after the activation, min(silu(gate), l) · clamp(up, −l, l), by the
/// layer's `swiglu_limits` entry (routed experts) or `swiglu_limits_shared`
/// entry (dense and shared MLPs), 0 or null none.
struct Step3p7Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    static let full = AttentionLayerType.full
    static let sliding = AttentionLayerType.sliding
    let parts: DecoderParts
    let config: Step3p7Configuration
    let layerTypes: [String]
    let mlpTypes: [String]
    /// Each layer's query, key and value heads.
    let layouts: [QKVLayout]
    let rotaries: [String: RotaryEmbedding]
    /// `query_pre_attn_scalar` ^ -1/2, as Python computes it.
    let scale: Float
    /// A per-layer key config.json gives that a block-dropped export would
    /// not renumber (`exportProblem`), or nil.
    let unexportedPerLayerKey: String?

    init(_ checkpoint: Checkpoint) throws {
        var defaults = ConfigValueKinds.omittedDefaultValues(of: "step3p7.text_config")
        for (key, value) in [("head_dim", 128), ("max_position_embeddings", 128_000), ("num_hidden_layers", 45), ("hidden_size", 4096),
                             ("intermediate_size", 11264), ("num_attention_heads", 64), ("num_key_value_heads", 8), ("vocab_size", 128_815)] {
            defaults[key] = defaults[key] ?? .integer(value)
        }
        defaults["rms_norm_eps"] = defaults["rms_norm_eps"] ?? .number(1e-5)
        let keys = try checkpoint.decodeConfig(MultimodalWrapperKeys.self)
        var placement = TextModelPlacement.wrapped(
            textDefaults: defaults, prefixes: ["model.language_model."], tiedEmbeddings: keys.tieWordEmbeddings ?? false)
        let section = placement.section
        if case .integer(let groups)? = checkpoint.document(of: section)?.member("num_attention_groups") {
            // attribute_map's alias of num_key_value_heads, set after it, over it.
            placement.section.overrides["num_key_value_heads"] = .integer(groups)
        }
        let config = try checkpoint.decodeConfig(Step3p7Configuration.self, section: section)
        // Checked below, once the MTP layers' trailing entries are cut.
        placement.section.overrides["layer_types"] = .null
        let dimensions = try checkpoint.decodeConfig(DecoderDimensions.self, section: placement.section)
        let layers = dimensions.numHiddenLayers
        let mlpTypes = config.mlpTypes(layers: layers)
        let layerTypes = config.trimmed(config.layerTypes, layers: layers) ?? Array(repeating: Self.full, count: layers)
        let configPath = checkpoint.configURL.path
        try ConfigRules.checks(path: configPath) {
            for (list, key) in [(layerTypes, "layer_types"), (mlpTypes, MLPLayerTypes.key)] where list.count != layers {
                throw InvalidConfigValue(
                    key: section.qualified(key),
                    problem: "lists \(list.count) layers, but num_hidden_layers is \(layers)"
                        + (config.predictionLayers == 0 ? "" : " (\(config.predictionLayersKey) \(config.predictionLayers))"))
            }
            try MLPLayerTypes.checkEntries(mlpTypes)
            if let bad = layerTypes.first(where: { $0 != Self.full && $0 != Self.sliding }) {
                throw InvalidConfigValue(
                    key: section.qualified("layer_types"),
                    problem: "must list \"full_attention\" or \"sliding_attention\" per layer, got \"\(bad.forErrorMessage)\" (Step3p7TextModel masks only those)")
            }
            if let window = config.slidingWindow, window < 1 {
                throw InvalidConfigValue(key: section.qualified("sliding_window"), problem: "must be at least 1 (transformers' mask fails below), got \(window)")
            }
        }
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        let parts = try DecoderParts(
            checkpoint, placement: placement, naming: LlamaModel.naming, extraLayers: max(0, config.predictionLayers),
            experts: .gatedMLP(count: config.experts, countKey: config.expertsKey, isSparse: isSparse))
        // Step3p7TextModel builds the sliding-window mask for every model.
        try parts.requireWindow(config.slidingWindow, builtBy: "Step3p7TextModel")
        let d = parts.dimensions
        let heads = try Self.headsPerLayer(parts, config: config, layerTypes: layerTypes)
        try parts.checks {
            for (layer, count) in heads.enumerated() {
                let key = "per_layer_config.\(layer).num_attention_heads or num_attention_heads"
                try ConfigRules.count(count, key)
                try ConfigRules.divides(d.kvHeads, "num_key_value_heads", count, key)
                try ConfigRules.product([(count, key), (d.resolvedHeadDim, "head_dim"), (d.hiddenSize, "hidden_size")])
            }
            for (layer, kind) in mlpTypes.enumerated() {
                for (list, key, reads) in [
                    (config.trimmed(config.swigluLimits, layers: layers), "swiglu_limits", kind == "sparse"),
                    (config.trimmed(config.swigluLimitsShared, layers: layers), "swiglu_limits_shared", true),
                ] where reads {
                    // `if config.swiglu_limits and ...[layer_idx]`: an empty list reads as none, a shorter one fails.
                    if let list, !list.isEmpty, layer >= list.count {
                        throw InvalidConfigValue(key: key, problem: "lists \(list.count) limits, but layer \(layer) reads one (IndexError in transformers)")
                    }
                }
            }
            if mlpTypes.contains("dense") {
                try ConfigRules.count(d.intermediateSize, "intermediate_size")
                try ConfigRules.product([(d.intermediateSize, "intermediate_size"), (3, "gate, up and down"), (d.hiddenSize, "hidden_size")])
            }
            if mlpTypes.contains("sparse") {
                try MixtureOfExperts.checkExpertsPerToken(
                    config.expertsPerToken, of: config.experts, expertsKey: config.expertsKey, key: config.expertsPerTokenKey)
                try ConfigRules.count(config.moeIntermediateSize, "moe_intermediate_size")
                try ConfigRules.count(config.sharedWidth, config.sharedWidthKey)
                try ConfigRules.product([
                    (config.experts, config.expertsKey), (3, "gate, up and down"), (config.moeIntermediateSize, "moe_intermediate_size"),
                    (d.hiddenSize, "hidden_size"),
                ])
                try ConfigRules.product([(config.sharedWidth, config.sharedWidthKey), (3, "gate, up and down"), (d.hiddenSize, "hidden_size")])
            }
        }
        // Only after the checks: a layout of query heads the key/value heads do not divide is a precondition failure.
        layouts = heads.map { QKVLayout(numHeads: $0, numKVHeads: d.kvHeads, headDim: d.resolvedHeadDim) }
        (self.parts, self.config, self.layerTypes, self.mlpTypes) = (parts, config, layerTypes, mlpTypes)
        scale = Float(pow(config.queryPreAttnScalar ?? Double(d.resolvedHeadDim), -0.5))
        if let layer = parts.firstKeptAttention {
            try parts.confirmProjections(layer: layer, [
                ("q_proj", layouts[layer].queryWidth, "the layer's num_attention_heads × head_dim"),
                ("k_proj", layouts[layer].keyWidth, "num_key_value_heads × head_dim"),
            ])
        }
        if mlpTypes.contains("sparse") {
            let sparse = (0..<layers).filter(isSparse)
            try parts.confirmRouter("mlp.gate", experts: config.experts, expertsKey: config.expertsKey, layers: sparse)
        }
        // The first kept MLP of each kind against its widths, before any is read.
        let weights = parts.weights, hidden = d.hiddenSize
        for (kind, tensor, shape, keys) in [
            ("dense", "mlp.gate_proj.weight", [d.intermediateSize, hidden], "intermediate_size, hidden_size"),
            ("sparse", "mlp.shared_experts.gate_proj.weight", [config.sharedWidth, hidden], "\(config.sharedWidthKey), hidden_size"),
            ("sparse", "mlp.experts.down_proj", [config.experts, hidden, config.moeIntermediateSize], "\(config.expertsKey), hidden_size, moe_intermediate_size"),
        ] {
            guard let layer = (0..<layers).first(where: { mlpTypes[$0] == kind && !parts.configuredDrops.dropsMLP($0) }) else { continue }
            try weights.confirmShape("layers.\(layer).\(tensor)", shape, keys: keys, configPath: configPath)
        }
        let entries = try Self.ropeEntries(parts, layerTypes: layerTypes, config: config)
        rotaries = try parts.rotariesAsWritten(
            types: Set(layerTypes), defaults: [:], rotaryClass: "Step3p7RotaryEmbedding", attentionClass: "Step3p7Attention",
            partialRotary: { _ in .honoured(default: 1) }, entries: entries)
        let object = try checkpoint.configObject(section)
        unexportedPerLayerKey = config.predictionLayers != 0
            ? section.qualified(config.predictionLayersKey)
            : entries == nil ? nil : ["rope_theta", "partial_rotary_factors"].first { object[$0] is [Any] }.map(section.qualified)
    }

    /// Block-dropped exports of a config.json with MTP layers (stored after
    /// the decoder's, their entries padding the per-layer lists) or with
    /// per-layer rotary lists are refused: droptrace does not renumber those.
    func exportProblem(_ plan: DropPlan) -> String? {
        guard !plan.blocks.isEmpty, let key = unexportedPerLayerKey else { return nil }
        return "an export cannot drop blocks of a step3p7 checkpoint whose config.json sets \"\(key)\": droptrace does not renumber "
            + "what it gives per layer; the dropped model's perplexity and speed are measured without an export"
    }

    /// Each layer's query heads: `per_layer_config`'s `num_attention_heads`
    /// where config.json has that key (null: none), else
    /// `num_sliding_attention_heads` (or `attention_other_setting`'s) on
    /// sliding layers; `num_attention_heads` elsewhere. Other per-layer
    /// settings are refused: Step3p7Attention would read them for one
    /// layer only, apart from the rotary and masks built for all.
    static func headsPerLayer(_ parts: DecoderParts, config: Step3p7Configuration, layerTypes: [String]) throws -> [Int] {
        let d = parts.dimensions, key = parts.section.qualified("per_layer_config")
        guard let written = parts.sectionDocument?.member("per_layer_config") else {
            return layerTypes.map { $0 == sliding ? config.slidingHeadCount(d.numAttentionHeads) : d.numAttentionHeads }
        }
        var heads = Array(repeating: d.numAttentionHeads, count: layerTypes.count)
        if case .null = written { return heads }
        guard case .object(let entries) = written else {
            throw DroptraceError("\"\(key)\" must be an object of layer index → settings", path: parts.configPath)
        }
        for (name, entry) in entries {
            guard let layer = Int(name), layer >= 0, layer < layerTypes.count else {
                throw DroptraceError(
                    "\"\(key)\" has the entry \"\(name.forErrorMessage)\", which is not a layer index below num_hidden_layers \(layerTypes.count)",
                    path: parts.configPath)
            }
            guard case .object(let settings) = entry else {
                throw DroptraceError("\"\(key).\(name)\" must be an object of settings", path: parts.configPath)
            }
            for (setting, value) in settings {
                guard setting == "num_attention_heads" else {
                    throw DroptraceError(
                        "\"\(key).\(name).\(setting.forErrorMessage)\" is set: droptrace reads only a layer's num_attention_heads there",
                        path: parts.configPath)
                }
                guard case .integer(let count) = value else {
                    throw DroptraceError("\"\(key).\(name).num_attention_heads\" must be an integer", path: parts.configPath)
                }
                heads[layer] = count
            }
        }
        return heads
    }

    /// The rotary settings per layer type as `__post_init__` resolves them:
    /// `rope_parameters` as written when it holds an object for every type in
    /// use (nil: read there), else one built per type from its first layer:
    /// "default" at `rope_theta` (a number, or a list per layer; 1e4) with
    /// that layer's `partial_rotary_factors` entry, `rope_scaling` merged into
    /// the full-attention entry.
    static func ropeEntries(_ parts: DecoderParts, layerTypes: [String], config: Step3p7Configuration) throws -> [String: Any]? {
        let object = try parts.checkpoint.configObject(parts.section), types = Set(layerTypes)
        if let written = object["rope_parameters"] as? [String: Any], types.allSatisfy({ written[$0] is [String: Any] }) { return nil }
        let layers = layerTypes.count
        func list(_ key: String) -> [Any]? {
            guard let values = object[key] as? [Any] else { return nil }
            return config.trimmed(values, layers: layers)
        }
        let key = { (name: String) in parts.section.qualified(name) }
        var entries: [String: Any] = [:]
        for type in types.sorted() {
            let first = layerTypes.firstIndex(of: type)!
            var entry: [String: Any] = ["rope_type": "default"]
            if let thetas = list("rope_theta") {
                guard first < thetas.count else {
                    throw DroptraceError("\"\(key("rope_theta"))\" lists \(thetas.count) values, but layer \(first) reads one (IndexError in transformers)", path: parts.configPath)
                }
                entry["rope_theta"] = thetas[first]
            } else {
                entry["rope_theta"] = object["rope_theta"].flatMap { $0 is NSNull ? nil : $0 } ?? 10_000.0
            }
            if let factors = list("partial_rotary_factors"), !factors.isEmpty {
                guard first < factors.count else {
                    throw DroptraceError(
                        "\"\(key("partial_rotary_factors"))\" lists \(factors.count) values, but layer \(first) reads one (IndexError in transformers)",
                        path: parts.configPath)
                }
                entry["partial_rotary_factor"] = factors[first]
            } else if let factors = object["partial_rotary_factors"], !(factors is NSNull), !(factors is [Any]) {
                throw DroptraceError("\"\(key("partial_rotary_factors"))\" must be a list of one factor per layer", path: parts.configPath)
            }
            if type == full, let scaling = object["rope_scaling"], !(scaling is NSNull) {
                guard let scaling = scaling as? [String: Any] else {
                    throw DroptraceError("\"\(key("rope_scaling"))\" must be an object (transformers merges it into the full-attention rotary)", path: parts.configPath)
                }
                entry.merge(scaling, uniquingKeysWith: { $1 })
            }
            entries[type] = entry
        }
        return entries
    }

    /// Exports without some blocks spell out the kept layers' attention and MLP types.
    var layerNaming: LayerNaming { parts.naming(spellingOut: layerTypes, mlpTypes: mlpTypes) }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.offsetRMSNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps, normKind: .offsetRMS,
            attention: { try attention(layer: index) }, feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s Step3p7Attention.
    func attention(layer index: Int) throws -> SelfAttention {
        let type = layerTypes[index], layout = layouts[index], eps = config.rmsNormEps, weights = parts.weights
        let p = "layers.\(index).self_attn."
        var attention = try parts.attention(
            p, bias: config.attentionBias, rotary: rotaries[type], scale: scale,
            slidingWindow: type == Self.sliding ? config.slidingWindow : nil,
            queryKeyNorm: .perHead(
                query: try weights.offsetRMSNorm(p + "q_norm", size: layout.headDim, eps: eps),
                key: try weights.offsetRMSNorm(p + "k_norm", size: layout.headDim, eps: eps)),
            outputGate: try weights.perHeadGate(p + "g_proj", layout: layout, hidden: hiddenSize), layout: layout)
        attention.outputGateFunction = .sigmoid
        return attention
    }

    /// Layer `index`'s dense MLP, or its router, routed experts and shared expert.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", d = hiddenSize, weights = parts.weights, layers = parts.dimensions.numHiddenLayers
        let shared = config.activation(layer: index, shared: true, layers: layers)
        guard mlpTypes[index] == "sparse" else {
            return try weights.gatedMLP(p, hidden: d, inner: parts.dimensions.intermediateSize, activation: shared, bias: config.mlpBias)
        }
        let count = config.experts, inner = config.moeIntermediateSize
        let routed = config.activation(layer: index, shared: false, layers: layers)
        let experts = try routedExperts(layer: index, count: count, inner: inner, activation: routed)
        let bias = p + "gate.e_score_correction_bias"
        // A bias the checkpoint lacks stays zero, its initial value.
        let routing = GroupLimitedTopK(
            scoring: .sigmoid, groupScore: .best, groups: 1, groupsPerToken: 1,
            selectionBias: weights.has(bias) ? try weights.floats(bias, [count]) : nil,
            normalizesWeights: true, denominatorEpsilon: 0, scalingFactor: Float(config.scalingFactor))
        return .mixture(MixtureOfExperts(
            router: try weights.linear(p + "gate", in: d, out: count, bias: false), experts: experts,
            expertsPerToken: config.expertsPerToken, rule: .groupLimited(routing),
            sharedExperts: [try weights.gatedMLP(p + "shared_experts.", hidden: d, inner: config.sharedWidth, activation: shared, bias: config.mlpBias)]))
    }

    /// Layer `index`'s routed experts: transformers' `mlp.experts.gate_up_proj`,
    /// or the released `moe.gate_proj.weight` and `moe.up_proj.weight`
    /// ([experts, inner, hidden] each), which its conversion concatenates
    /// into it; `mlp.experts.down_proj` (released `moe.down_proj.weight`, renamed).
    func routedExperts(layer index: Int, count: Int, inner: Int, activation: Activation) throws -> [FeedForward] {
        let weights = parts.weights, d = hiddenSize, fused = "layers.\(index).mlp.experts.", released = "layers.\(index).moe."
        guard weights.has(released + "gate_proj.weight") || weights.has(released + "up_proj.weight") else {
            return try weights.fusedGatedExperts(
                gateUp: fused + "gate_up_proj", down: fused + "down_proj", count: count, hidden: d, inner: inner, activation: activation)
        }
        if weights.has(fused + "gate_up_proj") {
            throw DroptraceError(
                "tensors '\(weights.absolute(fused + "gate_up_proj").forErrorMessage)' and '\(weights.absolute(released + "gate_proj.weight").forErrorMessage)' "
                    + "are both read as layer \(index)'s expert gates by transformers' conversion of step3p7 checkpoints; keep one of the two",
                path: weights.checkpoint.weightsPath)
        }
        let gate = try weights.floats(released + "gate_proj.weight", [count, inner, d])
        let up = try weights.floats(released + "up_proj.weight", [count, inner, d])
        let size = inner * d
        var gateUp = [Float]()
        gateUp.reserveCapacity(2 * count * size)
        for e in 0..<count {
            gateUp += gate[(e * size)..<((e + 1) * size)]
            gateUp += up[(e * size)..<((e + 1) * size)]
        }
        let down = try weights.floats(fused + "down_proj", [count, d, inner])
        return zip(
            Weights.expertLinears(gateUp, count: count, in: d, out: 2 * inner), Weights.expertLinears(down, count: count, in: inner, out: d)
        ).map { .gated(gateUp: $0, down: $1, activation: activation) }
    }
}

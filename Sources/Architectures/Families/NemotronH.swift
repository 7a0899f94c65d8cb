import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// What each Nemotron-H layer is: NemotronHConfig's `layers_block_type`
/// (alias `layer_types`), else its legacy `hybrid_override_pattern` (one
/// character per layer: M Mamba-2, * attention, - MLP, E mixture of
/// experts), else the config class's default of four layers.
struct NemotronHLayerTypes: Decodable {
    enum Kind: String, CaseIterable {
        case mamba = "linear_attention"
        case attention = "full_attention"
        case mlp
        case moe

        /// The layer's module is a token mixer (the attention module), not an MLP.
        var isMixer: Bool { self == .mamba || self == .attention }

        /// `hybrid_override_pattern`'s characters.
        static let patternCharacters: [Character: Kind] = ["M": .mamba, "*": .attention, "-": .mlp, "E": .moe]
        /// transformers' earlier names (`remap_legacy_layer_types`).
        static let legacyNames = ["mamba": Kind.mamba, "attention": .attention]
    }

    var kinds: [Kind]
    /// The key the kinds were read from, for errors.
    var key: String

    enum CodingKeys: String, CodingKey {
        case layersBlockType = "layers_block_type"
        case layerTypes = "layer_types"
        case pattern = "hybrid_override_pattern"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func named(_ names: [String], _ key: String) throws -> [Kind] {
            try names.map { name in
                guard let kind = Kind(rawValue: name) ?? Kind.legacyNames[name] else {
                    throw InvalidConfigValue(
                        key: key, problem: "names \"\(name.forErrorMessage)\": the layers are linear_attention, full_attention, mlp or moe")
                }
                return kind
            }
        }
        var kinds: [Kind] = [.mamba, .moe, .attention, .mlp]
        var key = "layers_block_type"
        try ConfigRules.decodingChecks {
            if let names = try c.decodeIfPresent([String].self, forKey: .layersBlockType) {
                kinds = try named(names, key)
            } else if let names = try c.decodeIfPresent([String].self, forKey: .layerTypes) {
                key = "layer_types"
                kinds = try named(names, key)
            } else if c.contains(.pattern), try c.decodeNil(forKey: .pattern) {
                // The config class hands it to its pattern reader, which fails on None.
                throw InvalidConfigValue(key: "hybrid_override_pattern", problem: "is null: each layer is M, *, - or E")
            } else if let pattern = try c.decodeIfPresent(String.self, forKey: .pattern) {
                key = "hybrid_override_pattern"
                kinds = try pattern.map { character in
                    guard let kind = Kind.patternCharacters[character] else {
                        throw InvalidConfigValue(
                            key: key, problem: "has \"\(String(character).forErrorMessage)\": each layer is M, *, - or E")
                    }
                    return kind
                }
            }
            if kinds.isEmpty { throw InvalidConfigValue(key: key, problem: "lists no layers") }
        }
        self.kinds = kinds
        self.key = key
    }
}

/// NemotronHConfig's keys beside the sizes, with its defaults and the
/// legacy names its `__post_init__` reads over them (`mamba_n_groups`,
/// `mamba_d_conv`, `mamba_dt_limit`, `mamba_conv_bias`).
struct NemotronHConfiguration: Decodable {
    /// The legacy keys NemotronHConfig's `__post_init__` reads into its fields.
    static let legacyKeys = [
        "mamba_n_groups": "n_groups", "mamba_d_conv": "conv_kernel", "mamba_expand": "expand", "mamba_dt_min": "time_step_min",
        "mamba_dt_max": "time_step_max", "mamba_dt_limit": "time_step_limit", "mamba_dt_init_floor": "time_step_floor",
        "mamba_conv_bias": "use_conv_bias", "mamba_chunk_size": "chunk_size",
    ]
    var layerNormEpsilon: Double
    var mlpHiddenAct: String
    var mlpBias: Bool
    /// Biases of the Mamba-2 mixers' in_proj and out_proj.
    var useBias: Bool
    var mambaHeads: Int
    var mambaHeadDim: Int
    var stateSize: Int
    var groups: Int
    var convolutionKernel: Int
    var convolutionBias: Bool
    var mambaHiddenAct: String
    /// The (min, max) Δ is clamped to: `time_step_limit` (transformers ≥ 5.25;
    /// earlier releases clamped to (time_step_min, ∞) whatever it said).
    var timeStepLimit: (lower: Double, upper: Double)
    var experts: Int
    var expertsPerToken: Int
    var moeIntermediateSize: Int
    var sharedExpertIntermediateSize: Int
    var moeLatentSize: Int?
    var routedScalingFactor: Double
    var groupCount: Int
    var groupsPerToken: Int
    var normTopKProb: Bool

    enum CodingKeys: String, CodingKey {
        case layerNormEpsilon = "layer_norm_epsilon"
        case mlpHiddenAct = "mlp_hidden_act"
        case mlpBias = "mlp_bias"
        case useBias = "use_bias"
        case mambaHeads = "mamba_num_heads"
        case mambaHeadDim = "mamba_head_dim"
        case stateSize = "ssm_state_size"
        case groups = "n_groups"
        case legacyGroups = "mamba_n_groups"
        case convolutionKernel = "conv_kernel"
        case legacyConvolutionKernel = "mamba_d_conv"
        case convolutionBias = "use_conv_bias"
        case legacyConvolutionBias = "mamba_conv_bias"
        case mambaHiddenAct = "mamba_hidden_act"
        case chunkSize = "chunk_size"
        case legacyChunkSize = "mamba_chunk_size"
        case timeStepLimit = "time_step_limit"
        case legacyTimeStepLimit = "mamba_dt_limit"
        case experts = "n_routed_experts"
        case expertsAlias = "num_local_experts"
        case expertsPerToken = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size"
        case sharedExpertIntermediateSize = "moe_shared_expert_intermediate_size"
        case moeLatentSize = "moe_latent_size"
        case routedScalingFactor = "routed_scaling_factor"
        case groupCount = "n_group"
        case groupsPerToken = "topk_group"
        case normTopKProb = "norm_topk_prob"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        /// The legacy key's value when present (the config class pops it over the current one).
        func value<T: Decodable>(_ key: CodingKeys, legacy: CodingKeys? = nil, default fallback: T) throws -> T {
            if let legacy, c.contains(legacy) { return try c.decode(T.self, forKey: legacy) }
            return try c.decodeIfPresent(T.self, forKey: key) ?? fallback
        }
        layerNormEpsilon = try value(.layerNormEpsilon, default: 1e-5)
        mlpHiddenAct = try value(.mlpHiddenAct, default: "relu2")
        mlpBias = try value(.mlpBias, default: false)
        useBias = try value(.useBias, default: false)
        mambaHeads = try value(.mambaHeads, default: 128)
        mambaHeadDim = try value(.mambaHeadDim, default: 64)
        stateSize = try value(.stateSize, default: 128)
        groups = try value(.groups, legacy: .legacyGroups, default: 8)
        convolutionKernel = try value(.convolutionKernel, legacy: .legacyConvolutionKernel, default: 4)
        convolutionBias = try value(.convolutionBias, legacy: .legacyConvolutionBias, default: true)
        mambaHiddenAct = try value(.mambaHiddenAct, default: "silu")
        // The chunked scan's length changes no number, but the torch path pads by it (modulo by zero, a negative view).
        let chunkSize: Int = try value(.chunkSize, legacy: .legacyChunkSize, default: 128)
        timeStepLimit = try c.decodeTimeStepLimit(c.contains(.legacyTimeStepLimit) ? .legacyTimeStepLimit : .timeStepLimit)
        experts = try c.contains(.experts) ? c.decode(Int.self, forKey: .experts) : value(.expertsAlias, default: 8)
        expertsPerToken = try value(.expertsPerToken, default: 2)
        moeIntermediateSize = try value(.moeIntermediateSize, default: 7688)
        sharedExpertIntermediateSize = try value(.sharedExpertIntermediateSize, default: 7688)
        moeLatentSize = try c.decodeIfPresent(Int.self, forKey: .moeLatentSize)
        routedScalingFactor = try value(.routedScalingFactor, default: 1.0)
        groupCount = try value(.groupCount, default: 1)
        groupsPerToken = try value(.groupsPerToken, default: 1)
        normTopKProb = try value(.normTopKProb, default: true)
        let settings = self
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(settings.layerNormEpsilon, "layer_norm_epsilon")
            try ConfigRules.count(settings.mambaHeads, "mamba_num_heads")
            try ConfigRules.count(settings.mambaHeadDim, "mamba_head_dim")
            try ConfigRules.count(settings.stateSize, "ssm_state_size")
            try ConfigRules.count(settings.groups, "n_groups")
            try ConfigRules.count(settings.convolutionKernel, "conv_kernel")
            try ConfigRules.count(chunkSize, c.contains(.legacyChunkSize) ? "mamba_chunk_size" : "chunk_size")
            if let latent = settings.moeLatentSize { try ConfigRules.count(latent, "moe_latent_size") }
        }
    }

    /// The width the routed experts read and write, with its key for errors:
    /// `moe_latent_size` for latent experts (Nemotron 3 Super), else the
    /// model's `hidden` columns.
    func expertWidth(hidden: Int) -> (size: Int, key: String) {
        moeLatentSize.map { ($0, "moe_latent_size") } ?? (hidden, "hidden_size")
    }

    /// The Mamba-2 mixer's sizes for a model of `hidden` columns.
    /// - Throws: `InvalidConfigValue` naming the key whose value does not fit.
    func mambaHeads(hidden: Int) throws -> Mamba2Heads {
        try Mamba2Heads.checked(
            heads: mambaHeads, headDim: mambaHeadDim, groups: groups, stateSize: stateSize, convolutionKernel: convolutionKernel,
            hidden: hidden,
            keys: .init(heads: "mamba_num_heads", groups: "n_groups", stateSize: "ssm_state_size", convolutionKernel: "conv_kernel",
                        inner: "mamba_head_dim"))
    }

    /// The routed layers' experts and routing, checked as NemotronHTopkRouter
    /// can run them: sigmoid scores, groups ranked by their best two.
    var routing: GroupRoutedMixture {
        GroupRoutedMixture(
            experts: experts, expertsKey: "n_routed_experts", expertsPerToken: expertsPerToken, sharedExperts: 0,
            inner: moeIntermediateSize, scoring: .sigmoid, groupScore: .sumOfBestTwo, groupLimited: true, groups: groupCount,
            groupsPerToken: groupsPerToken, correctsSelection: true, normalizesWeights: normTopKProb,
            scalingFactor: routedScalingFactor)
    }
}

/// NVIDIA's Nemotron-H (`nemotron_h`, transformers' models/nemotron_h:
/// Nemotron-H 4B–56B, Nemotron Nano 2, Nemotron 3 Nano and Super, the
/// latter's experts in a latent space): every layer is one pre-RMSNorm
/// residual branch, x + mixer(norm(x)), whose `mixer` is
/// a Mamba-2 mixer, attention without position embeddings (no rotary),
/// a ReLU² MLP (`up_proj`, `down_proj`) or a mixture of ReLU² experts
/// with a sigmoid group-limited router and a shared expert. The mixers
/// are the attention modules and the MLPs the MLP modules: each layer has
/// one of the two (`absentModules`), so dropping it drops the layer, and
/// an export removes the layer. Weights under `backbone.` as released
/// (transformers renames it `model.`), embedding `embeddings`, final norm
/// `norm_f`; the head `lm_head` is never tied (NemotronHForCausalLM ties
/// nothing, whatever `tie_word_embeddings` says).
///
/// Also the language model of Nemotron 3 Nano Omni (`nemotron_h_omni`,
/// NemotronH_Omni_Reasoning_V3, transformers' models/nemotron_h_omni/),
/// which holds a NemotronHForCausalLM built by AutoModelForCausalLM from
/// `text_config` (its legacy name `llm_config` where `text_config` is
/// absent or null): weights under `language_model.model.` (the released
/// `language_model.backbone.` renamed by `TensorRenamings`), the head
/// `language_model.lm_head`, never tied; the vision and audio towers are
/// not read. Its multi-token-prediction layers (`num_nextn_predict_layers`)
/// are never built into the causal LM.
struct NemotronHModel: DecoderFamily {
    /// Its `layer_types` is the layer list's alias, not attention types.
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: NemotronHConfiguration
    let kinds: [NemotronHLayerTypes.Kind]
    let heads: Mamba2Heads

    init(_ checkpoint: Checkpoint) throws {
        let wrapped = checkpoint.modelType == "nemotron_h_omni"
        let textKey = wrapped ? ConfigValueKinds.textConfigKey(checkpoint.configDocument, modelType: checkpoint.modelType) : nil
        if wrapped { try Self.checkWrapper(checkpoint, textKey: textKey!) }
        let types = try checkpoint.decodeConfig(NemotronHLayerTypes.self, section: ConfigSection(textKey))
        // num_hidden_layers is the layer list's length, whatever config.json says (the config class ignores it).
        let section = ConfigSection(
            textKey,
            defaults: [
                "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                "intermediate_size": 21504, "vocab_size": 131072, "max_position_embeddings": 4096,
            ],
            overrides: ["num_hidden_layers": .integer(types.kinds.count)])
        try ConfigValueKinds.checkLegacyKeys(
            checkpoint.document(of: section) ?? .object([]), NemotronHConfiguration.legacyKeys, modelType: "nemotron_h",
            path: checkpoint.configURL.path, under: textKey.map { $0 + "." } ?? "")
        let settings = try checkpoint.decodeConfig(NemotronHConfiguration.self, section: section)
        parts = try DecoderParts(
            checkpoint, section: section, tiedEmbeddings: false, headNames: wrapped ? TextModelPlacement.legacyHeadNames : ["lm_head"],
            naming: { Self.naming($0, types: types) }, prefixes: wrapped ? ["language_model.model."] : ["backbone.", "model.", ""],
            experts: ExpertNaming(
                parts: ["mixer.experts."], projections: ["up_proj", "down_proj"], count: settings.experts, countKey: "n_routed_experts",
                isSparse: { types.kinds.indices.contains($0) && types.kinds[$0] == .moe }, fusedNames: ["up_proj", "down_proj"]),
            finalNorm: "norm_f", embedding: "embeddings")
        config = settings
        kinds = types.kinds
        let d = parts.dimensions.hiddenSize, drops = parts.configuredDrops
        let kept = { (kind: NemotronHLayerTypes.Kind) in
            types.kinds.indices.filter { types.kinds[$0] == kind && !(kind.isMixer ? drops.dropsAttention($0) : drops.dropsMLP($0)) }
        }
        var heads: Mamba2Heads?
        try parts.checks {
            heads = try settings.mambaHeads(hidden: d)
            if !kept(.moe).isEmpty {
                let width = settings.expertWidth(hidden: d)
                try settings.routing.checkExperts(hidden: width.size, hiddenKey: width.key)
                if let latent = settings.moeLatentSize {
                    try ConfigRules.product([(latent, "moe_latent_size"), (d, "hidden_size")])
                }
                try settings.routing.checkGroups()
                try ConfigRules.count(settings.sharedExpertIntermediateSize, "moe_shared_expert_intermediate_size")
                try ConfigRules.product([(settings.sharedExpertIntermediateSize, "moe_shared_expert_intermediate_size"), (d, "hidden_size")])
            }
        }
        _ = try parts.activation(settings.mambaHiddenAct, key: "mamba_hidden_act")
        _ = try parts.activation(settings.mlpHiddenAct, key: "mlp_hidden_act")
        self.heads = heads!
        // Each kept layer's weights are those of its kind: a list that contradicts them names its key.
        let signature: [NemotronHLayerTypes.Kind: String] = [
            .mamba: "mixer.in_proj.weight", .attention: "mixer.q_proj.weight", .mlp: "mixer.up_proj.weight",
            .moe: "mixer.gate.weight",
        ]
        try parts.checks {
            for (index, kind) in types.kinds.enumerated() where !(kind.isMixer ? drops.dropsAttention(index) : drops.dropsMLP(index)) {
                let p = "layers.\(index)."
                if !parts.weights.has(p + signature[kind]!),
                   let other = signature.first(where: { parts.weights.has(p + $0.value) }) {
                    throw InvalidConfigValue(
                        key: types.key,
                        problem: "makes layer \(index) \(kind.rawValue), but the weights hold a \(other.key.rawValue) layer there ('\(other.value)')")
                }
            }
        }
        try parts.confirmAttentionProjections(attention: "mixer.", layers: kept(.attention))
        if let first = kept(.mamba).first {
            try parts.weights.confirmShape(
                "layers.\(first).mixer.in_proj.weight", [self.heads.projectionWidth, d],
                keys: "2 × mamba_num_heads × mamba_head_dim + 2 × n_groups × ssm_state_size + mamba_num_heads, hidden_size",
                configPath: parts.configPath)
        }
        if let first = kept(.mlp).first {
            try parts.weights.confirmShape(
                "layers.\(first).mixer.up_proj.weight", [parts.dimensions.intermediateSize, d], keys: "intermediate_size, hidden_size",
                configPath: parts.configPath)
        }
        if let first = kept(.moe).first {
            let width = settings.expertWidth(hidden: d), experts = "layers.\(first).mixer.experts."
            let fused = parts.weights.has(experts + "up_proj")
            try parts.weights.confirmShape(
                experts + (fused ? "up_proj" : "0.up_proj.weight"), (fused ? [settings.experts] : []) + [settings.moeIntermediateSize, width.size],
                keys: (fused ? "n_routed_experts, " : "") + "moe_intermediate_size, \(width.key)", configPath: parts.configPath)
            if let latent = settings.moeLatentSize {
                try parts.weights.confirmShape(
                    "layers.\(first).mixer.fc1_latent_proj.weight", [latent, d], keys: "moe_latent_size, hidden_size",
                    configPath: parts.configPath)
            }
        }
    }

    /// What NemotronH_Omni_Reasoning_V3_Config and its model refuse or build
    /// apart from the language model: a text config of another model type
    /// (AutoModelForCausalLM would build that type's model), a
    /// `video_temporal_patch_size` unequal to the vision config's (its
    /// `validate_architecture`; the vision config's is 2 where
    /// `vision_config` is absent, else RadioConfig's default None, which is
    /// refused below 2), and a head stored as `lm_head`, which the wrapper
    /// does not read (its head is `language_model.lm_head`).
    /// - Throws: `DroptraceError` naming config.json or the weights.
    static func checkWrapper(_ checkpoint: Checkpoint, textKey: String) throws {
        let document = checkpoint.configDocument, path = checkpoint.configURL.path
        if let type = document.member(textKey)?.member("model_type"), !Self.isString(type, "nemotron_h") {
            throw DroptraceError(
                "\"\(textKey).model_type\" is \(ConfigValueKinds.spelled(type)): nemotron_h_omni builds its language model by it "
                    + "(AutoModelForCausalLM); droptrace reads a nemotron_h one",
                path: path)
        }
        let topLevel = document.member("video_temporal_patch_size") ?? .integer(2)
        var tower: JSONValue = .integer(2)
        switch document.member("vision_config") {
        case nil, .null?: break
        case let vision?: tower = vision.member("video_temporal_patch_size") ?? .null
        }
        if case .integer(let size) = tower, size < 2 {
            throw DroptraceError(
                "\"vision_config.video_temporal_patch_size\" is \(size), which RadioConfig refuses (at least 2, or null)", path: path)
        }
        var equal = false
        if case .integer(let a) = tower, case .integer(let b) = topLevel { equal = a == b }
        if !equal {
            throw DroptraceError(
                "\"vision_config.video_temporal_patch_size\" (\(ConfigValueKinds.spelled(tower)); RadioConfig's default null where "
                    + "vision_config omits it, 2 where vision_config is absent) and \"video_temporal_patch_size\" "
                    + "(\(ConfigValueKinds.spelled(topLevel))) must be equal, as nemotron_h_omni's config class requires",
                path: path)
        }
        if checkpoint.hasTensor("lm_head.weight") {
            throw DroptraceError(
                "tensor 'lm_head.weight' is stored, which nemotron_h_omni's model does not read: its head is 'language_model.lm_head.weight'",
                path: checkpoint.weightsPath)
        }
    }

    private static func isString(_ value: JSONValue, _ text: String) -> Bool {
        if case .string(let written) = value { return written == text }
        return false
    }

    /// Every layer's module lives under `mixer.`, normalised by `norm`.
    static func naming(_ prefix: String, types: NemotronHLayerTypes) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["mixer.", "norm."], mlp: ["mixer.", "norm."], layerCountKeys: ["num_hidden_layers"],
            layerListKey: types.key, layerTypes: types.kinds.map(\.rawValue))
    }

    /// The export spells the kept layers' types out as `layer_types` only
    /// where config.json leaves them to the class's default: a
    /// `layers_block_type` list or `hybrid_override_pattern` is renumbered
    /// in place.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        let document = parts.sectionDocument ?? .object([])
        let written = ["layers_block_type", "layer_types", "hybrid_override_pattern"].contains { key in
            guard let value = document.member(key) else { return false }
            if case .null = value { return false }
            return true
        }
        if written {
            naming.layerTypes = nil
        }
        return naming
    }

    /// A mixer layer has no MLP module, an MLP layer no attention module.
    var absentModules: DropPlan {
        DropPlan(
            attention: Set(kinds.indices.filter { !kinds[$0].isMixer }), mlp: Set(kinds.indices.filter { kinds[$0].isMixer }))
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm_f", size: hiddenSize, eps: config.layerNormEpsilon))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), kind = kinds[index]
        let p = "layers.\(index).", d = hiddenSize, weights = parts.weights
        func norm() throws -> Normalization { try weights.rmsNorm(p + "norm", size: d, eps: config.layerNormEpsilon) }
        if kind.isMixer {
            return TransformerBlock(
                attention: drops.dropsAttention(index) ? nil : AttentionBranch(inputNorm: try norm(), mixer: try mixer(index)),
                mlp: nil, residual: .sequential)
        }
        return TransformerBlock(
            attention: nil,
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(inputNorm: try norm(), feedForward: try feedForward(index)),
            residual: .sequential)
    }

    /// Layer `index`'s token mixer: NemotronHAttention (no biases, no
    /// rotary) or NemotronHMamba2Mixer (Δ clamped to `time_step_limit`).
    func mixer(_ index: Int) throws -> TokenMixer {
        let p = "layers.\(index).mixer.", weights = parts.weights, d = hiddenSize, h = heads
        if kinds[index] == .attention { return .attention(try parts.attention(p, bias: false, rotary: nil)) }
        return .mamba2(try Mamba2Mixer.stored(
            p, weights: weights, hidden: d, heads: h, projectionBias: config.useBias, convolutionBias: config.convolutionBias,
            activation: try parts.activation(config.mambaHiddenAct, key: "mamba_hidden_act"), timeStepLimit: config.timeStepLimit,
            eps: config.layerNormEpsilon))
    }

    /// Layer `index`'s MLP: NemotronHMLP, down(relu²(up x)), or NemotronHMoE,
    /// the routed experts (each such an MLP, between `fc1_latent_proj` and
    /// `fc2_latent_proj` when `moe_latent_size` is set) plus the shared expert.
    func feedForward(_ index: Int) throws -> FeedForward {
        let p = "layers.\(index).mixer.", weights = parts.weights, d = hiddenSize, bias = config.mlpBias
        let activation = try parts.activation(config.mlpHiddenAct, key: "mlp_hidden_act")
        func mlp(_ prefix: String, inner: Int, bias: Bool, width: Int = d) throws -> FeedForward {
            .plain(
                up: try weights.linear(prefix + "up_proj", in: width, out: inner, bias: bias),
                down: try weights.linear(prefix + "down_proj", in: inner, out: width, bias: bias), activation: activation)
        }
        guard kinds[index] == .moe else { return try mlp(p, inner: parts.dimensions.intermediateSize, bias: bias) }
        let routing = config.routing
        let correctionBias = p + "gate.e_score_correction_bias"
        let rule = GroupLimitedTopK(
            scoring: .sigmoid, groupScore: .sumOfBestTwo, groups: config.groupCount, groupsPerToken: config.groupsPerToken,
            selectionBias: weights.has(correctionBias) ? try weights.floats(correctionBias, [routing.experts]) : nil,
            normalizesWeights: config.normTopKProb, scalingFactor: Float(config.routedScalingFactor))
        return .mixture(MixtureOfExperts(
            router: try weights.linear(p + "gate", in: d, out: routing.experts, bias: false),
            // NemotronHExperts have no biases; the shared expert is a NemotronHMLP.
            experts: try weights.plainExperts(
                p + "experts.", count: routing.experts, width: config.expertWidth(hidden: d).size, inner: config.moeIntermediateSize,
                activation: activation),
            expertsPerToken: config.expertsPerToken, rule: .groupLimited(rule),
            sharedExperts: [try mlp(p + "shared_experts.", inner: config.sharedExpertIntermediateSize, bias: bias)],
            latent: try config.moeLatentSize.map { latent in
                MixtureOfExperts.LatentProjection(
                    down: try weights.linear(p + "fc1_latent_proj", in: d, out: latent, bias: bias),
                    up: try weights.linear(p + "fc2_latent_proj", in: latent, out: d, bias: bias))
            }))
    }
}

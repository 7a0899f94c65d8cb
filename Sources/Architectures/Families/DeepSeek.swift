import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `deepseek_v2` and `deepseek_v3`, or of `youtu`
/// (YoutuConfig: DeepseekV3Config's attention keys and defaults without its
/// mixture-of-experts keys, which it does not read: every layer dense), or
/// of `sarvam_mla` (SarvamMLAConfig: DeepseekV3Config with its own defaults,
/// reading the original config format: `head_dim` ignored, a legacy
/// `deepseek_yarn` rope_scaling read as YaRN), or of `deepseek_ocr2_text`
/// (DeepseekOcr2TextConfig: DeepSeek-V2's mixture keys and defaults, no
/// latent attention keys, each layer's MLP by `mlp_layer_types`), or of
/// `unlimited_ocr_text` (UnlimitedOcrTextConfig: the same, `mlp_layer_types`
/// by default the first `first_k_dense_replace` (1) dense, `layer_types`
/// full or reference sliding attention); absent keys take transformers'
/// defaults of the model type.
struct DeepSeekConfiguration: Decodable {
    /// V3's latent attention (deepseek_v3 and youtu).
    var isV3: Bool
    /// Llama's multi-head attention in place of latent attention
    /// (`deepseek_ocr2_text` and `unlimited_ocr_text`, whose MLPs `mlp_layer_types` lists).
    var multiHeadAttention: Bool
    /// Each layer's MLP, "dense" or "sparse" (read with `multiHeadAttention` only).
    var mlpLayerTypes: [String]?
    /// `unlimited_ocr_text`'s `layer_types` and `sliding_window` (nil: none, as written).
    var referenceSliding: (layerTypes: [String]?, window: Int?)?
    var rmsNormEps: Double
    var hiddenAct: String
    var attentionBias: Bool
    var mlpBias: Bool
    var qLoraRank: Int?
    var kvLoraRank: Int
    var qkNopeHeadDim: Int
    var qkRopeHeadDim: Int
    var vHeadDim: Int
    var ropeInterleave: Bool
    var firstKDenseReplace: Int
    var nRoutedExperts: Int
    var numExpertsPerTok: Int?
    var nSharedExperts: Int
    var moeIntermediateSize: Int
    var routedScalingFactor: Double
    var nGroup: Int?
    var topkGroup: Int?
    /// nil when config.json writes null (V2 then routes to no expert: refused).
    var topkMethod: String?
    var normTopkProb: Bool
    /// V3's head_dim as config.json writes it (nil: absent; .some(nil): null).
    /// DeepseekV3Config sets it to qk_rope_head_dim when absent and sizes the
    /// rotary embedding by it, so another width fails in transformers' forward.
    var writtenHeadDim: Int??

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case qLoraRank = "q_lora_rank"
        case kvLoraRank = "kv_lora_rank"
        case qkNopeHeadDim = "qk_nope_head_dim"
        case qkRopeHeadDim = "qk_rope_head_dim"
        case vHeadDim = "v_head_dim"
        case ropeInterleave = "rope_interleave"
        case firstKDenseReplace = "first_k_dense_replace"
        case nRoutedExperts = "n_routed_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case nSharedExperts = "n_shared_experts"
        case moeIntermediateSize = "moe_intermediate_size"
        case routedScalingFactor = "routed_scaling_factor"
        case nGroup = "n_group"
        case topkGroup = "topk_group"
        case topkMethod = "topk_method"
        case normTopkProb = "norm_topk_prob"
        case headDim = "head_dim"
        case mlpLayerTypes = "mlp_layer_types"
        case layerTypes = "layer_types"
        case slidingWindow = "sliding_window"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let modelType = try c.decode(String.self, forKey: .modelType)
        let sarvam = modelType == "sarvam_mla"
        isV3 = ["deepseek_v3", "youtu", "sarvam_mla"].contains(modelType)
        let unlimited = modelType == "unlimited_ocr_text"
        multiHeadAttention = Self.multiHeadTextTypes.contains(modelType)
        referenceSliding = unlimited ? (
            try c.decodeIfPresent([String].self, forKey: .layerTypes),
            c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : 128) : nil
        mlpLayerTypes = multiHeadAttention ? try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes) : nil
        let types = mlpLayerTypes
        try ConfigRules.decodingChecks { try MLPLayerTypes.checkEntries(types) }
        let v3 = isV3, youtu = modelType == "youtu"
        func value<T: Decodable>(_ key: CodingKeys, v2: T, v3 value3: T) throws -> T {
            try c.decodeIfPresent(T.self, forKey: key) ?? (v3 ? value3 : v2)
        }
        /// A key only its absence defaults: transformers reads a written null
        /// as None (false for a flag, which its `if` tests; no value for a count).
        func written<T: Decodable>(_ key: CodingKeys, absent: T?) throws -> T? {
            c.contains(key) ? try c.decodeIfPresent(T.self, forKey: key) : absent
        }
        rmsNormEps = try value(.rmsNormEps, v2: 1e-6, v3: 1e-6)
        hiddenAct = try value(.hiddenAct, v2: "silu", v3: "silu")
        attentionBias = try value(.attentionBias, v2: false, v3: false)
        // transformers' DeepseekV3MLP has no biases whatever the config says.
        mlpBias = v3 ? false : try value(.mlpBias, v2: false, v3: false)
        // q_lora_rank: null means the direct q_proj.
        qLoraRank = c.contains(.qLoraRank) ? try c.decodeIfPresent(Int.self, forKey: .qLoraRank) : sarvam ? nil : 1536
        kvLoraRank = try value(.kvLoraRank, v2: 512, v3: 512)
        qkNopeHeadDim = try value(.qkNopeHeadDim, v2: 128, v3: 128)
        qkRopeHeadDim = try value(.qkRopeHeadDim, v2: 64, v3: 64)
        vHeadDim = try value(.vHeadDim, v2: 128, v3: 128)
        // V2 rotates interleaved pairs as complex numbers; V3 by rope_interleave.
        ropeInterleave = v3 ? try written(.ropeInterleave, absent: true) ?? false : true
        // Youtu's layers are all dense (YoutuDecoderLayer builds YoutuMLP): no layer routes;
        // DeepSeek-OCR 2's follow mlp_layer_types, Unlimited OCR's where written (else the
        // first first_k_dense_replace, a key its class reads only then, default 1, are dense).
        firstKDenseReplace = youtu ? Int.max : unlimited ? try value(.firstKDenseReplace, v2: 1, v3: 1)
            : multiHeadAttention ? 0 : try value(.firstKDenseReplace, v2: 0, v3: sarvam ? 1 : 3)
        nRoutedExperts = try value(.nRoutedExperts, v2: 64, v3: sarvam ? 128 : 256)
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? (v3 ? 8 : nil)
        nSharedExperts = try value(.nSharedExperts, v2: 2, v3: 1)
        moeIntermediateSize = try value(.moeIntermediateSize, v2: 1407, v3: 2048)
        routedScalingFactor = try value(.routedScalingFactor, v2: 1.0, v3: 2.5)
        nGroup = try written(.nGroup, absent: sarvam ? 1 : v3 ? 8 : nil)
        topkGroup = try written(.topkGroup, absent: sarvam ? 1 : v3 ? 4 : nil)
        // V3's router is always the grouped sigmoid one (its configs' topk_method is not read).
        topkMethod = v3 ? "noaux_tc" : try written(.topkMethod, absent: "greedy")
        // V2's router never renormalises (transformers does not read the key for it).
        normTopkProb = v3 ? try written(.normTopkProb, absent: true) ?? false : false
        // SarvamMLAConfig drops head_dim (`ConfigValueKinds.headDimDropped`).
        writtenHeadDim = v3 && !ConfigValueKinds.headDimDropped.contains(modelType) && c.contains(.headDim) ? .some(try c.decodeIfPresent(Int.self, forKey: .headDim)) : nil
    }

    /// The latent attention's keys.
    var latent: LatentAttentionSettings {
        LatentAttentionSettings(
            qLoraRank: qLoraRank, kvLoraRank: kvLoraRank, qkNopeHeadDim: qkNopeHeadDim, qkRopeHeadDim: qkRopeHeadDim,
            vHeadDim: vHeadDim, ropeInterleave: ropeInterleave, attentionBias: attentionBias)
    }

    /// Whether layer `index` routes: from `first_k_dense_replace` on, or
    /// where `mlp_layer_types` says "sparse".
    func isSparse(_ index: Int) -> Bool {
        guard multiHeadAttention else { return index >= firstKDenseReplace }
        // (DeepSeek-OCR 2's list is required: refused by `check` when absent.)
        guard let types = mlpLayerTypes else { return referenceSliding != nil && index >= firstKDenseReplace }
        return index < types.count && types[index] == "sparse"
    }

    /// The text config types whose layers use Llama's multi-head attention
    /// (DeepseekOcr2TextConfig's, UnlimitedOcrTextConfig's).
    static let multiHeadTextTypes: Set<String> = ["deepseek_ocr2_text", "unlimited_ocr_text"]

    /// The layer types UnlimitedOcrTextModel masks: on a prompt both attend
    /// to every earlier token (the reference window applies to tokens
    /// generated after it, which droptrace never scores).
    static let referenceSlidingTypes = ["full_attention", "reference_sliding_attention"]

    /// Whether experts are chosen within the best groups only.
    var groupLimited: Bool { isV3 || topkMethod == "group_limited_greedy" }

    /// The routed layers: V2's softmax greedy or group-limited greedy
    /// routing, V3's sigmoid routing with `e_score_correction_bias` and
    /// groups scored by their best two.
    var routedMixture: GroupRoutedMixture {
        GroupRoutedMixture(
            experts: nRoutedExperts, expertsKey: "n_routed_experts", expertsPerToken: numExpertsPerTok, sharedExperts: nSharedExperts,
            inner: moeIntermediateSize, scoring: isV3 ? .sigmoid : .softmax, groupScore: isV3 ? .sumOfBestTwo : .best,
            groupLimited: groupLimited, groups: nGroup, groupsPerToken: topkGroup,
            // A V3 checkpoint without the bias gets transformers' zeros: no correction.
            correctsSelection: isV3, normalizesWeights: normTopkProb, scalingFactor: routedScalingFactor)
    }

    /// Refuses sizes and routing settings transformers could not run, before
    /// anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        if let (types, window) = referenceSliding {
            // UnlimitedOcrTextConfig.validate_architecture; the model masks by these two types alone.
            guard window != nil else { throw InvalidConfigValue(key: "sliding_window", problem: "must be set: UnlimitedOcrTextConfig refuses null") }
            if let other = types?.first(where: { !Self.referenceSlidingTypes.contains($0) }) {
                throw InvalidConfigValue(
                    key: "layer_types",
                    problem: "lists \"\(other.forErrorMessage)\", which UnlimitedOcrTextModel has no mask for (it takes \(Self.referenceSlidingTypes.joined(separator: " or ")))")
            }
        }
        if multiHeadAttention {
            // DeepseekOcr2TextConfig's default None leaves its decoder layers no MLP type to read.
            guard mlpLayerTypes != nil || referenceSliding != nil else {
                throw InvalidConfigValue(key: MLPLayerTypes.key, problem: "must list \"dense\" or \"sparse\" per layer (DeepseekOcr2TextConfig's default None builds no layer)")
            }
            try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers)
        } else {
            try latent.check(d)
        }
        if let written = writtenHeadDim, written != qkRopeHeadDim {
            throw InvalidConfigValue(
                key: "head_dim",
                problem: "must equal qk_rope_head_dim \(qkRopeHeadDim) (DeepSeek-V3's rotary embedding is sized by it), got \(written.map(String.init) ?? "null")")
        }
        // (UnlimitedOcrTextConfig's rule takes any integer: below 0 every layer routes.)
        if referenceSliding == nil { try ConfigRules.nonNegative(firstKDenseReplace, "first_k_dense_replace") }
        guard (0..<d.numHiddenLayers).contains(where: isSparse) else { return }
        let routed = routedMixture
        try routed.checkExperts(hidden: d.hiddenSize)
        // A null method leaves transformers' DeepSeek-V2 router without weights (it fails in its forward).
        guard isV3 || ["greedy", "group_limited_greedy"].contains(topkMethod) else {
            throw InvalidConfigValue(
                key: "topk_method", problem: "must be \"greedy\" or \"group_limited_greedy\", got \(topkMethod.map { "\"\($0)\"" } ?? "null")")
        }
        try routed.checkGroups()
    }
}

/// DeepSeek-V3's `num_nextn_predict_layers`: multi-token-prediction layers
/// stored after the decoder's (layer 61 of the released model), which the
/// causal LM does not run and transformers does not load.
struct MultiTokenPredictionLayers: Decodable {
    var count = 0

    enum CodingKeys: String, CodingKey { case count = "num_nextn_predict_layers" }

    init(from decoder: Decoder) throws {
        count = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(Int.self, forKey: .count) ?? 0
        try ConfigRules.decodingChecks {
            try ConfigRules.nonNegative(count, "num_nextn_predict_layers")
        }
    }
}

/// DeepSeek-V2 and V3 (`deepseek_v2`, `deepseek_v3`): pre-RMSNorm blocks with
/// multi-head latent attention (`LatentQKVProjection`; YaRN rope with its
/// softmax-scale correction) and, from layer `first_k_dense_replace` on, a
/// mixture of experts with always-on shared experts (`GroupLimitedTopK`:
/// V2's softmax greedy or group-limited greedy routing, V3's sigmoid routing
/// with `e_score_correction_bias` and groups scored by their best two). The
/// MLP module is router, routed and shared experts together: dropping the
/// MLP drops all of it.
///
/// Routed experts are read per expert (`mlp.experts.<e>.gate_proj|up_proj|
/// down_proj`, DeepSeek's names, which transformers' `save_pretrained`
/// writes) or fused (`mlp.experts.gate_up_proj` / `down_proj`).
///
/// Youtu-LLM (`youtu`, transformers' models/youtu/modeling_youtu.py) is
/// DeepSeek-V3's latent attention in Llama's blocks with a dense SwiGLU MLP
/// in every layer, its head tied to the embedding by default.
///
/// DeepSeek-OCR 2's language model (`deepseek_ocr2`'s `text_config`,
/// DeepseekOcr2TextModel under `model.language_model.`) is DeepSeek-V2's
/// mixture (softmax greedy or group-limited routing, shared experts) on
/// the `mlp_layer_types` layers marked "sparse", a dense SwiGLU MLP on the
/// others, and Llama's multi-head attention (q/k/v/o_proj, biases by
/// `attention_bias`, rotary halves over head_dim = hidden_size /
/// num_attention_heads, which its config class sets whatever `head_dim`
/// says).
struct DeepSeekModel: DecoderFamily {
    /// Unlimited OCR's text model checks its `layer_types` itself (`DeepSeekConfiguration.referenceSlidingTypes`).
    static func readsLayerTypes(_ modelType: String) -> Bool { modelType == "unlimited_ocr_text" }
    let parts: DecoderParts
    let config: DeepSeekConfiguration
    let rotary: RotaryEmbedding
    let scale: Float

    init(_ checkpoint: Checkpoint) throws {
        // Also Kimi K2.5's language model (`Llava`: a deepseek_v3 text config).
        var placement = try TextModelPlacement.topLevelOrWrapped(checkpoint)
        // SarvamMLAConfig drops head_dim whatever it holds (`ConfigValueKinds.headDimDropped`); DeepseekOcr2TextConfig
        // and UnlimitedOcrTextConfig set it to hidden_size / num_attention_heads whatever it holds.
        if try ConfigValueKinds.headDimDropped.contains(checkpoint.modelType)
            || DeepSeekConfiguration.multiHeadTextTypes.contains(Llava.languageModelType(checkpoint)) {
            placement.section.overrides["head_dim"] = .null
        }
        let predictionLayers = try checkpoint.decodeConfig(MultiTokenPredictionLayers.self, section: placement.section).count
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(DeepSeekConfiguration.self, section: placement.section)
        self.config = config
        parts = try DecoderParts(checkpoint, placement: placement, naming: { prefix in
            LayerNaming(
                prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."],
                mlp: ["mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
        }, extraLayers: predictionLayers, experts: .gatedMLP(
            count: config.nRoutedExperts, countKey: "n_routed_experts", isSparse: { config.isSparse($0) }))
        let d = parts.dimensions, configPath = parts.configPath
        try parts.checks { try config.check(d) }
        try Self.confirmShapes(parts, config)
        var rope = try checkpoint.decodeConfig(RopeSettings.self, section: placement.section)
        // SarvamMLAConfig reads its original configs' rope_scaling of type "deepseek_yarn" as YaRN.
        if checkpoint.modelType == "sarvam_mla", case .object(let scaling)? = checkpoint.configDocument.member("rope_scaling"),
           scaling.contains(where: { member in
               guard case .string("deepseek_yarn") = member.value else { return false }
               return ["type", "rope_type"].contains(member.key)
           }) {
            guard scaling.contains(where: { $0.key == "factor" }) else {
                throw DroptraceError("key \"rope_scaling\" of type \"deepseek_yarn\" (read as \"yarn\") has no \"factor\", which YaRN needs", path: configPath)
            }
            rope.type = "yarn"
            // As standardize_rope_params defaults YaRN's original length.
            rope.originalMaxPositions = rope.originalMaxPositions ?? rope.maxPositions
        }
        // No table when the config drops every attention layer: no tensor confirmed its width.
        let rotaryWidth = config.multiHeadAttention ? parts.attentionLayout.headDim : config.qkRopeHeadDim
        rotary = try rope.embedding(headDim: parts.firstKeptAttention == nil ? 0 : rotaryWidth, configPath: configPath)
        scale = config.multiHeadAttention
            ? 1 / Float(parts.attentionLayout.headDim).squareRoot() : try config.latent.scale(rope, configPath: configPath)
    }

    /// An export without some blocks writes `first_k_dense_replace` for the
    /// kept layers also where config.json leaves it to its default.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        if !config.multiHeadAttention { naming.layerThresholds["first_k_dense_replace"] = config.firstKDenseReplace }
        // Unlimited OCR's rule would count first_k_dense_replace from the export's first layer.
        if config.referenceSliding != nil, config.mlpLayerTypes == nil {
            naming.perLayerLists[MLPLayerTypes.key] = (0..<layerCount).map { config.isSparse($0) ? "sparse" : "dense" }
        }
        return naming
    }

    /// The first kept attention's projections and the first kept router
    /// against the config, before anything is sized from them.
    private static func confirmShapes(_ parts: DecoderParts, _ c: DeepSeekConfiguration) throws {
        let d = parts.dimensions, weights = parts.weights, configPath = parts.configPath
        if c.multiHeadAttention { try parts.confirmAttentionProjections() } else { try c.latent.confirmShapes(parts) }
        let routed = (0..<d.numHiddenLayers).lazy.first { c.isSparse($0) && !parts.configuredDrops.dropsMLP($0) }
        if let layer = routed {
            try weights.confirmShape(
                "layers.\(layer).mlp.gate.weight", [c.nRoutedExperts, d.hiddenSize], keys: "n_routed_experts, hidden_size",
                configPath: configPath)
        }
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try attention(layer: index) }, feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s latent attention (DeepSeek-OCR 2's multi-head attention).
    func attention(layer index: Int) throws -> SelfAttention {
        guard config.multiHeadAttention else { return try config.latent.attention(parts, layer: index, rotary: rotary, scale: scale) }
        return try parts.attention("layers.\(index).self_attn.", bias: config.attentionBias, rotary: rotary, scale: scale)
    }

    /// Layer `index`'s MLP: dense before `first_k_dense_replace` (or where
    /// `mlp_layer_types` says so), else router, routed experts and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        let c = config, weights = parts.weights, d = hiddenSize
        let p = "layers.\(index).mlp."
        let activation = try parts.activation(c.hiddenAct)
        guard c.isSparse(index) else {
            return try weights.gatedMLP(p, hidden: d, inner: parts.dimensions.intermediateSize, activation: activation, bias: c.mlpBias)
        }
        return try c.routedMixture.load(weights, p, hidden: d, activation: activation, sharedBias: c.mlpBias)
    }
}

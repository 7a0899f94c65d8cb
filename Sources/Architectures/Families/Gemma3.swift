import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gemma3_text`, or the `text_config` of `gemma3`.
struct Gemma3Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenActivation: String
    var attentionBias: Bool?
    var queryPreAttnScalar: Double
    var slidingWindow: Int?
    var slidingWindowPattern: Int?
    var layerTypes: [String]?
    var finalLogitSoftcapping: Double?
    var useBidirectionalAttention: Bool?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenActivation = "hidden_activation"
        case attentionBias = "attention_bias"
        case queryPreAttnScalar = "query_pre_attn_scalar"
        case slidingWindow = "sliding_window"
        case slidingWindowPattern = "sliding_window_pattern"
        case layerTypes = "layer_types"
        case finalLogitSoftcapping = "final_logit_softcapping"
        case useBidirectionalAttention = "use_bidirectional_attention"
    }

    /// transformers' `Gemma3TextConfig` defaults, for the keys a config
    /// omits (released `gemma3` configs list only a few in `text_config`).
    static let defaults: [String: ConfigDefault] = [
        "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131_072, "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "attention_bias": false,
        "query_pre_attn_scalar": 256, "sliding_window": 4096,
    ]

    /// transformers' rule when `layer_types` is absent: every
    /// `sliding_window_pattern`-th layer (default 6) global, the others sliding.
    func defaultLayerType(_ layer: Int) -> String {
        (layer + 1) % (slidingWindowPattern ?? 6) == 0 ? AttentionLayerType.full : AttentionLayerType.sliding
    }
}

/// Gemma-3, text only (`gemma3_text`, `Gemma3ForCausalLM`) or the language
/// model of a multimodal checkpoint (`gemma3`, `Gemma3ForConditionalGeneration`:
/// sizes under `text_config`, weights under `language_model.model.` as
/// `save_pretrained` writes them, or `model.language_model.` as transformers
/// 5.x names its modules; the vision tower ignored; scored on text), or of
/// ShieldGemma 2 (`shieldgemma2`, `ShieldGemma2ForImageClassification`:
/// the Gemma3ForConditionalGeneration it builds under `model.` with its
/// ShieldGemma2Config, so its language model's weights are one level deeper,
/// `model.model.language_model.`, and its head `model.lm_head`; the names
/// as released and as transformers saves them, `model.language_model.model.`
/// and `model.model.language_model.model.`, read as transformers renames
/// them: `TensorRenamings`). The class returns only the last position's
/// logits of its yes and no tokens, sliced from the full-vocabulary logits
/// of that Gemma3ForConditionalGeneration: droptrace's perplexity is that
/// model's, over the whole vocabulary.
///
/// Gemma-2's sandwich block (`SandwichBlock`) with per-head (1 + weight)
/// RMSNorms of queries and keys (`q_norm`, `k_norm` over head_dim) before
/// rotary, scores scaled by 1/√query_pre_attn_scalar, local (sliding-window)
/// and global layers by `layer_types` or `sliding_window_pattern`, each
/// layer type with its own rotary base and scaling (local
/// `rope_local_base_freq`, 1e4; global `rope_theta`, 1e6, with e.g. linear
/// scaling 8 in Gemma-3 4B and up), embeddings × √hidden, a tied head.
///
/// As in transformers: the attention never soft-caps its scores
/// (`attn_logit_softcapping` is unused), and only the text-only model
/// soft-caps its logits (`final_logit_softcapping`;
/// `Gemma3ForConditionalGeneration` does not, in ShieldGemma 2 too).
struct Gemma3Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Gemma3Configuration
    let layerTypes: [String]
    /// The rotary embedding of each layer type present.
    let rotary: [String: RotaryEmbedding]
    let activation: Activation
    /// A `gemma3` or `shieldgemma2` checkpoint: the language model of `Gemma3ForConditionalGeneration`.
    let multimodal: Bool

    init(_ checkpoint: Checkpoint) throws {
        let shield = checkpoint.modelType == "shieldgemma2"
        multimodal = checkpoint.modelType == "gemma3" || shield
        let sectionName = multimodal ? "text_config" : nil
        // Gemma3Config ties the head by its own tie_word_embeddings (true when absent, untied when null), not the text config's.
        var wrapperTies: Bool?
        if shield {
            wrapperTies = try Self.shieldGemma2Ties(checkpoint)
        } else if multimodal {
            if case .bool(let ties)? = checkpoint.configDocument.member("tie_word_embeddings") { wrapperTies = ties } else {
                wrapperTies = checkpoint.configDocument.member("tie_word_embeddings") == nil
            }
        }
        parts = try DecoderParts(
            checkpoint, section: ConfigSection(sectionName, defaults: Gemma3Configuration.defaults),
            tiedEmbeddings: wrapperTies, headNames: shield ? ["model.lm_head"] : multimodal ? TextModelPlacement.legacyHeadNames : ["lm_head"],
            naming: { SandwichBlock.naming($0) },
            prefixes: shield ? ["model.model.language_model."]
                : multimodal ? TextModelPlacement.withLegacyNames(["language_model.model.", "model.language_model."]) : ["model.", ""])
        let config = try parts.config(Gemma3Configuration.self)
        self.config = config
        let dimensions = parts.dimensions, configPath = parts.configPath
        let key = sectionName.map { $0 + "." } ?? ""
        try parts.checks {
            try ConfigRules.positive(config.queryPreAttnScalar, "query_pre_attn_scalar")
            try ConfigRules.positiveIfPresent(config.finalLogitSoftcapping, "final_logit_softcapping")
            try ConfigRules.countIfPresent(config.slidingWindowPattern, "sliding_window_pattern")
            // Gemma3TextConfig refuses these, explicit head_dim or not.
            try ConfigRules.divides(dimensions.numAttentionHeads, "num_attention_heads", dimensions.hiddenSize, "hidden_size")
        }
        try parts.requireCausal(config.useBidirectionalAttention, keyPrefix: key)
        // DecoderDimensions checked that layer_types, when given, has one entry per layer.
        try parts.requireWindow(config.slidingWindow, builtBy: "Gemma3TextModel")
        layerTypes = try parts.layerTypes(config.layerTypes, slidingWindow: config.slidingWindow, default: config.defaultLayerType)
        activation = try parts.activation(config.hiddenActivation, key: "hidden_activation")

        try parts.confirmAttentionProjections()
        let headDim = parts.firstKeptAttention == nil ? 0 : dimensions.resolvedHeadDim
        rotary = try RopeSettings.tablesByLayerType(
            layerTypes, checkpoint: checkpoint, section: sectionName, headDim: headDim, maxPositions: dimensions.maxPositionEmbeddings,
            full: .init(thetaKey: "rope_theta", scaling: true, theta: 1_000_000),
            sliding: .init(thetaKey: "rope_local_base_freq", scaling: false, theta: 10_000), configPath: configPath)
    }

    /// ShieldGemma2Config's tying: its own `tie_word_embeddings` (false when
    /// absent), made true by its `__post_init__` when the text config's flag
    /// is (Gemma3TextConfig's default true); both are booleans (the schema
    /// table refuses other kinds). Also refuses what the class's model cannot
    /// be built or run from on text: a text model other than `gemma3_text`
    /// (AutoConfig's sub-config, which droptrace does not read under it, or
    /// a null type AutoConfig cannot resolve), and `yes_token_index` /
    /// `no_token_index` (10784 and 3771 when absent, read by `getattr`) that
    /// do not index the logits' last dimension, which its forward slices by
    /// them (torch takes a float truncated toward zero, a boolean as 0 or 1;
    /// fails on null, a string, a list, an index outside the vocabulary).
    /// - Throws: `DroptraceError` naming config.json and the key.
    static func shieldGemma2Ties(_ checkpoint: Checkpoint) throws -> Bool {
        let document = checkpoint.configDocument, path = checkpoint.configURL.path
        switch document.member("text_config")?.member("model_type") {
        case nil, .string("gemma3_text")?: break
        case .null?:
            throw DroptraceError("\"text_config.model_type\" is null: name the text model's type", path: path)
        case let other?:
            throw DroptraceError(
                "\"text_config.model_type\" is \(ConfigValueKinds.spelled(other)): droptrace reads shieldgemma2 checkpoints with a gemma3_text language model",
                path: path)
        }
        var vocabulary = 262_208
        if case .integer(let written)? = document.member("text_config")?.member("vocab_size") { vocabulary = written }
        // A vocabulary of no tokens (or fewer) is refused naming vocab_size by the shared size rules.
        for (key, fallback) in [("yes_token_index", 10_784), ("no_token_index", 3771)] where vocabulary > 0 {
            let value = document.member(key) ?? .integer(fallback)
            // torch indexes by a list of Python numbers: booleans as 0 and 1, floats truncated toward zero.
            let index: Double?
            switch value {
            case .integer(let number): index = Double(number)
            case .bool(let flag): index = flag ? 1 : 0
            case .number(let number) where number.isFinite: index = number.rounded(.towardZero)
            default: index = nil
            }
            guard let index, index >= Double(-vocabulary), index < Double(vocabulary) else {
                throw DroptraceError(
                    "\"\(key)\" is \(ConfigValueKinds.spelled(value)): ShieldGemma2ForImageClassification slices the logits of its "
                        + "\(vocabulary) tokens (text_config.vocab_size) at it, which needs a number in [-\(vocabulary), \(vocabulary))",
                    path: path)
            }
        }
        func flag(_ value: JSONValue?, default fallback: Bool) -> Bool {
            if case .bool(let flag)? = value { return flag }
            return fallback
        }
        return flag(document.member("tie_word_embeddings"), default: false)
            || flag(document.member("text_config")?.member("tie_word_embeddings"), default: true)
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch, scaled: true) }

    /// An export without some blocks spells out the remaining layers' types
    /// (in `text_config` for `gemma3` and `shieldgemma2`), so renumbering cannot move a window.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.offsetRMSNorm("norm", size: hiddenSize, eps: config.rmsNormEps),
            logitSoftcap: multimodal ? nil : config.finalLogitSoftcapping.map { Float($0) })
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let layout = parts.attentionLayout, eps = config.rmsNormEps
        let bias = config.attentionBias == true
        let p = "layers.\(index).self_attn."
        let layerType = layerTypes[index]
        func attention() throws -> SelfAttention { try parts.attention(
            p, bias: bias, rotary: rotary[layerType], scale: Float(1 / config.queryPreAttnScalar.squareRoot()),
            slidingWindow: layerType == "sliding_attention" ? config.slidingWindow : nil,
            queryKeyNorm: .perHead(
                query: try weights.offsetRMSNorm(p + "q_norm", size: layout.headDim, eps: eps),
                key: try weights.offsetRMSNorm(p + "k_norm", size: layout.headDim, eps: eps))) }
        return try SandwichBlock.block(index, parts: parts, drops: drops, eps: eps, activation: activation, attention: attention)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `apertus`.
struct ApertusConfiguration: Decodable {
    /// transformers' rotary settings when config.json has neither
    /// `rope_parameters` nor `rope_scaling` (it then ignores `rope_theta`).
    static let defaultRope = #"""
        {"rope_parameters": {"rope_type": "llama3", "rope_theta": 12000000.0, "factor": 8.0,
         "original_max_position_embeddings": 8192, "low_freq_factor": 1.0, "high_freq_factor": 4.0}}
        """#
    /// transformers' rotary base when the rope settings name none.
    static let defaultTheta = 12_000_000.0

    var rmsNormEps: Double
    var hiddenAct: String?
    var attentionBias: Bool?
    /// config.json holds `rope_parameters` or `rope_scaling` (not null).
    var namesRope: Bool
    /// A top-level fraction, which transformers adds to the default rotary
    /// settings (where it keeps their base over a top-level `rope_theta`).
    var partialRotaryFactor: Double?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case ropeParameters = "rope_parameters"
        case ropeScaling = "rope_scaling"
        case partialRotaryFactor = "partial_rotary_factor"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias)
        namesRope = try [CodingKeys.ropeParameters, .ropeScaling].contains { try c.contains($0) && !c.decodeNil(forKey: $0) }
        partialRotaryFactor = try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor)
    }
}

/// Apertus: pre-RMSNorm blocks (`attention_layernorm`,
/// `feedforward_layernorm`), rotary attention with RMSNorm over each query
/// and key head (`q_norm` / `k_norm`, [head_dim]), and a non-gated MLP
/// down(act(up(x))) whose activation is xIELU with each layer's learned
/// parameters (`mlp.act_fn.alpha_p`, `alpha_n`, `beta`, `eps`).
///
/// Also Apertus 1.5 (transformers' models/apertus1p5/), whose text model is
/// Apertus's with a head that may be pruned (`Apertus1p5.placement`):
/// `apertus1p5_text` (Apertus1p5TextForCausalLM) and the language model of
/// `apertus1p5` (Apertus1p5ForConditionalGeneration; its vision and audio
/// tokenizers are never read: scoring runs on text).
struct ApertusModel: DecoderFamily {
    let parts: DecoderParts
    let config: ApertusConfiguration
    let rotary: RotaryEmbedding
    /// config.json's `hidden_act` when it is not xIELU (then a plain function).
    let namedActivation: Activation?

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, placement: try Apertus1p5.placement(checkpoint)) { prefix in
            LayerNaming(
                prefix: prefix + "layers.", attention: ["self_attn.", "attention_layernorm."],
                mlp: ["mlp.", "feedforward_layernorm."], layerCountKeys: ["num_hidden_layers"])
        }
        config = try parts.config(ApertusConfiguration.self)
        var defaults = config.namesRope
            ? nil : try JSONDecoder().decode(RopeSettings.self, from: Data(ApertusConfiguration.defaultRope.utf8))
        defaults?.partialRotaryFactor = config.partialRotaryFactor
        rotary = try parts.rotary(defaultTheta: ApertusConfiguration.defaultTheta, settings: defaults)
        let act = config.hiddenAct ?? "xielu"
        namedActivation = act == "xielu" ? nil : try parts.activation(act)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    /// Layer `p`'s xIELU from its stored parameters.
    private func xIELU(_ p: String) throws -> Activation {
        let weights = parts.weights
        return .xIELU(XIELU(
            alphaP: try weights.floats(p + "mlp.act_fn.alpha_p", [1])[0],
            alphaN: try weights.floats(p + "mlp.act_fn.alpha_n", [1])[0],
            beta: try weights.floats(p + "mlp.act_fn.beta", [])[0],
            eps: try weights.floats(p + "mlp.act_fn.eps", [])[0]))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, layout = parts.attentionLayout, eps = config.rmsNormEps
        let bias = config.attentionBias == true
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: bias, rotary: rotary,
            queryKeyNorm: .perHead(
                query: try weights.rmsNorm(p + "self_attn.q_norm", size: layout.headDim, eps: eps),
                key: try weights.rmsNorm(p + "self_attn.k_norm", size: layout.headDim, eps: eps))) }
        func feedForward() throws -> FeedForward {
            let inner = parts.dimensions.intermediateSize
            return .plain(
                up: try weights.linear(p + "mlp.up_proj", in: d, out: inner, bias: false),
                down: try weights.linear(p + "mlp.down_proj", in: inner, out: d, bias: false),
                activation: try namedActivation ?? xIELU(p))
        }
        return try parts.preNormBlock(
            index, drops: drops, eps: eps, norms: ("attention_layernorm", "feedforward_layernorm"), attention: attention,
            feedForward: feedForward)
    }
}

/// Apertus 1.5 (transformers' models/apertus1p5/): Apertus's text model
/// (Apertus1p5TextConfig subclasses ApertusConfig, its vocab_size 266752)
/// whose LM head may be pruned to the first `output_vocab_size` ids (the
/// text tokens; the input embedding keeps all `vocab_size` rows for the
/// image and audio codes): `lm_head` [output_vocab_size, hidden_size], its
/// logits that wide, `nn.Linear(hidden_size, output_vocab_size or
/// vocab_size)` in Apertus1p5TextForCausalLM and in
/// Apertus1p5ForConditionalGeneration alike. Apertus1p5TextConfig reads
/// `output_vocab_size` equal to vocab_size as none (unpruned) and refuses
/// one outside [1, vocab_size] (`validate_output_vocab_size`). A tied head
/// is the embedding whatever `output_vocab_size` says (transformers ties the
/// whole parameter: vocab_size logits), unless a head is stored, which is then read.
enum Apertus1p5 {
    /// Apertus1p5Config's defaults (configuration_apertus1p5.py): the vocabulary
    /// offsets of the visual and audio codes, the vision tokenizer's
    /// (Apertus1p5VisionTokenizerConfig) and the audio tokenizer's
    /// (WavTokenizerEncoderConfig) codebook sizes, the audio tokenizer's model type.
    static let defaultImageTokenOffset = 131_272
    static let defaultAudioTokenOffset = 262_344
    static let defaultVisionCodebookSize = 131_072
    static let defaultAudioCodebookSize = 4096
    static let audioModelType = "wavtokenizer_encoder"

    /// Where an Apertus checkpoint keeps its language model:
    /// - `apertus`: the top level, weights under `model.` (or none);
    /// - `apertus1p5_text`: the same, or under `model.language_model.` as the
    ///   wrapper stores them, which its conversion mapping strips
    ///   (`PrefixChange(prefix_to_remove="language_model", model_prefix="model")`,
    ///   as qwen3_5_text's); the head's rows `output_vocab_size`;
    /// - `apertus1p5`: its own text config class (Apertus1p5TextConfig
    ///   whatever `text_config.model_type` says) under `text_config`, weights
    ///   under `model.language_model.` (and the names transformers' legacy
    ///   conversion renames onto it), the head `lm_head` tied by the top-level
    ///   `tie_word_embeddings` alone (default false), its rows the text
    ///   config's `output_vocab_size`; the token ranges checked as
    ///   Apertus1p5Config checks them (`checkTokenRanges`).
    /// - Throws: `DroptraceError` naming config.json for an `output_vocab_size`
    ///   outside [1, vocab_size] or token ranges the wrapper's class refuses.
    static func placement(_ checkpoint: Checkpoint) throws -> TextModelPlacement {
        var placement: TextModelPlacement
        switch checkpoint.modelType {
        case "apertus1p5":
            placement = try .ownTextConfig(checkpoint, textTiesToo: false)
        case "apertus1p5_text":
            placement = .topLevel
            placement.prefixes.append("model.language_model.")
        default:
            return .topLevel
        }
        let sizes = try checkpoint.decodeConfig(HeadSizes.self, section: placement.section)
        if let rows = sizes.outputVocabSize, let vocabulary = sizes.vocabSize, !(1...max(1, vocabulary)).contains(rows) {
            throw InvalidConfigValue(
                key: placement.section.qualified("output_vocab_size"),
                problem: "is \(rows), which Apertus1p5TextConfig refuses: the pruned head keeps 1 to vocab_size (\(vocabulary)) rows"
            ).error(path: checkpoint.configURL.path)
        }
        // Equal to vocab_size it is none (Apertus1p5TextConfig.__post_init__).
        placement.headRows = sizes.outputVocabSize == sizes.vocabSize ? nil : sizes.outputVocabSize
        if checkpoint.modelType == "apertus1p5" { try checkTokenRanges(checkpoint, vocabulary: sizes.vocabSize) }
        return placement
    }

    /// The text config's `vocab_size` and `output_vocab_size` (null or absent: an unpruned head).
    struct HeadSizes: Decodable {
        var vocabSize: Int?
        var outputVocabSize: Int?
        enum CodingKeys: String, CodingKey {
            case vocabSize = "vocab_size"
            case outputVocabSize = "output_vocab_size"
        }
    }

    /// Apertus1p5Config's checks of its sub-configs (`validate_backbones`,
    /// `validate_architecture`), which make `from_pretrained` fail:
    /// `audio_config.model_type` wavtokenizer_encoder where given, the
    /// visual codes ending where the audio codes begin (`image_token_offset`
    /// + `vision_config.codebook_size` = `audio_token_offset`), the audio
    /// codes ending within the text config's `vocab_size`
    /// (`audio_token_offset` + `audio_config.codebook_size`); a sub-config
    /// null or absent takes its class's defaults, and the codebook sizes must
    /// be integers, as the strict classes type them (the top-level offsets'
    /// kinds are checked with every key's, `ConfigValueKinds`).
    /// - Throws: `DroptraceError` naming config.json and the key.
    static func checkTokenRanges(_ checkpoint: Checkpoint, vocabulary: Int?) throws {
        let document = checkpoint.configDocument
        func refuse(_ problem: String) -> DroptraceError { DroptraceError(problem, path: checkpoint.configURL.path) }
        // (A sub-config of another kind is refused with every key's kinds.)
        func subConfig(_ name: String) -> JSONValue? {
            guard case .object? = document.member(name) else { return nil }
            return document.member(name)
        }
        // An integer beyond 64 bits leaves no code range that fits a vocabulary and a model transformers can build.
        func beyond64Bits(_ key: String) -> DroptraceError {
            refuse("key \"\(key)\" is an integer beyond 64 bits, which leaves Apertus 1.5's visual and audio codes no range "
                + "Apertus1p5Config and its model take")
        }
        func integer(_ key: String, in section: String, default value: Int) throws -> Int {
            switch subConfig(section)?.member(key) {
            case nil: return value
            case .integer(let number)?: return number
            case .bigInteger?: throw beyond64Bits("\(section).\(key)")
            default: throw refuse("key \"\(section).\(key)\" must be an integer, as the strict sub-config class types it")
            }
        }
        // (Of another kind the top-level keys are refused with every key's kinds.)
        func topLevel(_ key: String, default value: Int) throws -> Int {
            switch document.member(key) {
            case .integer(let number)?: return number
            case .bigInteger?: throw beyond64Bits(key)
            default: return value
            }
        }
        if let audio = subConfig("audio_config"), let type = audio.member("model_type") {
            guard case .string(audioModelType) = type else {
                throw refuse("key \"audio_config.model_type\" must be \"\(audioModelType)\" (or absent): Apertus 1.5's audio tokens "
                    + "are WavTokenizer encoder codes, which Apertus1p5Config requires")
            }
        }
        let imageOffset = try topLevel("image_token_offset", default: defaultImageTokenOffset)
        let audioOffset = try topLevel("audio_token_offset", default: defaultAudioTokenOffset)
        let visionCodes = try integer("codebook_size", in: "vision_config", default: defaultVisionCodebookSize)
        let audioCodes = try integer("codebook_size", in: "audio_config", default: defaultAudioCodebookSize)
        // (Python's integers do not overflow: a sum beyond Int's is no offset and beyond any vocabulary.)
        let visualEnd = imageOffset.addingReportingOverflow(visionCodes), audioEnd = audioOffset.addingReportingOverflow(audioCodes)
        guard !visualEnd.overflow, visualEnd.partialValue == audioOffset else {
            throw refuse("keys \"image_token_offset\" \(imageOffset) and \"vision_config.codebook_size\" \(visionCodes) (defaults where "
                + "absent) end the visual codes at \(Decimal(imageOffset) + Decimal(visionCodes)), not at \"audio_token_offset\" "
                + "\(audioOffset), which Apertus1p5Config requires")
        }
        if let vocabulary, audioEnd.overflow || audioEnd.partialValue > vocabulary {
            throw refuse("keys \"audio_token_offset\" \(audioOffset) and \"audio_config.codebook_size\" \(audioCodes) (defaults where "
                + "absent) end the audio codes at \(Decimal(audioOffset) + Decimal(audioCodes)), beyond \"text_config.vocab_size\" "
                + "\(vocabulary), which Apertus1p5Config refuses")
        }
    }
}

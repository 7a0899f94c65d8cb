import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gemma3n_text`, or the `text_config` of `gemma3n`.
struct Gemma3nConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenActivation: String
    var attentionBias: Bool?
    var slidingWindow: Int?
    var layerTypes: [String]?
    var finalLogitSoftcapping: Double?
    var hiddenSizePerLayerInput: Int
    var vocabSizePerLayerInput: Int
    var altupActiveIdx: Int
    var altupCorrectScale: Bool
    var altupNumInputs: Int
    var numKVSharedLayers: Int
    var laurelRank: Int

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenActivation = "hidden_activation"
        case attentionBias = "attention_bias"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case finalLogitSoftcapping = "final_logit_softcapping"
        case hiddenSizePerLayerInput = "hidden_size_per_layer_input"
        case vocabSizePerLayerInput = "vocab_size_per_layer_input"
        case altupActiveIdx = "altup_active_idx"
        case altupCorrectScale = "altup_correct_scale"
        case altupNumInputs = "altup_num_inputs"
        case numKVSharedLayers = "num_kv_shared_layers"
        case laurelRank = "laurel_rank"
    }

    /// transformers' `Gemma3nTextConfig` defaults, for the keys a config omits.
    static let defaults: [String: ConfigDefault] = [
        "vocab_size": 262_400, "hidden_size": 2048, "intermediate_size": 16_384, "num_hidden_layers": 35,
        "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 32_768, "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "attention_bias": false,
        "sliding_window": 512, "final_logit_softcapping": 30.0, "vocab_size_per_layer_input": 262_144,
        "hidden_size_per_layer_input": 256, "altup_active_idx": 0, "altup_correct_scale": true, "altup_num_inputs": 4,
        "num_kv_shared_layers": 15, "laurel_rank": 64,
    ]
}

/// Gemma 3n's language model, text only (`gemma3n_text`, `Gemma3nForCausalLM`)
/// or inside the multimodal checkpoint (`gemma3n`,
/// `Gemma3nForConditionalGeneration`: sizes under `text_config`, weights
/// under `model.language_model.`, the head `lm_head`, tied by the top-level
/// `tie_word_embeddings`, default true; the vision and audio towers and
/// their embedders never read, scored on text — a calibration token at or
/// past the vision or audio `vocab_offset` is refused), as transformers'
/// models/gemma3n/modeling_gemma3n.py defines it.
///
/// The residual stream is `altup_num_inputs` AltUp streams (`AltUp`): the
/// embedding (× √hidden) is stream 0, each other stream its projection
/// (`altup_projections`) scaled to its root-mean-square; each layer predicts
/// the streams, runs on the active prediction (`altup_active_idx`),
/// corrects the streams by the result and adds its per-layer input branch
/// to the streams from 1 on; the streams leave through
/// `altup_unembed_projections`, scaled to stream 0's root-mean-square and
/// averaged, before the final norm (`AltUpProjections`). The logits are
/// soft-capped by `final_logit_softcapping`.
///
/// On the active prediction P a layer runs Gemma 4's sandwich branches
/// (plain RMSNorms, weight not 1 + weight) with LAuReL beside the attention:
///
///     H = ((P + post_attn(Attn(n))) + (n + post_laurel(right(left(n))))) / √2,  n = input_layernorm(P)
///     Z = H + post_ffw(MLP(pre_ffw(H)))
///
/// and the streams are then corrected by Z. The attention is Gemma 4's
/// sliding-layer attention (per-head q/k RMSNorms, weightless v norm,
/// unscaled scores) on every layer, heads of `head_dim`, each layer type
/// with its own rotary base (`rope_parameters`, or `rope_theta` 1e6 for the
/// full layers and `rope_local_base_freq` 1e4 for the sliding ones); the
/// MLP's width is `intermediate_size`, one value or one per layer, and where
/// `activation_sparsity_pattern` gives a layer a sparsity s > 0 its gate is
/// cut at its mean plus Φ⁻¹(s) standard deviations before the activation
/// (`FeedForward.sparseGated`; s = 1 cuts at +∞: the gate all zeros; without
/// the list, the first ten layers of a model of more than ten at 0.95).
///
/// Scores, on the active stream (the one the layer runs;
/// `LanguageModel.scoredColumns`): the attention is everything between P
/// and H — its norms, the attention and LAuReL, which reads the
/// attention's own normalised input, with the √2 that joins them — scored
/// cos(P, H), LLM-Drop's attention sublayer from its input norm to the
/// residual the MLP's norm reads; the MLP cos(H, Z); the block cos(X_a, Y_a)
/// of the layer's input and output active streams. The prediction,
/// correction and per-layer input belong to the block: a dropped attention
/// leaves H = P, a dropped MLP Z = H, and the layer still predicts, corrects
/// and adds its per-layer input; a dropped block leaves every stream as it was.
///
/// Per-layer inputs are Gemma 4's (`PerLayerEmbedding`: `embed_tokens_per_layer`
/// of `vocab_size_per_layer_input` rows, a token past them reading row 0;
/// `hidden_size_per_layer_input` 0: none, its tensors zero-sized or absent), the branch (`PerLayerInputBranch`)
/// reading the corrected active stream times `correct_output_scale` where
/// `altup_correct_scale`. Key/value sharing is Gemma 4's: the last
/// `num_kv_shared_layers` layers project queries only and attend to the
/// keys and values of the last earlier layer of their type
/// (`LayerSharing.trailingKeysValues`), which still makes them when its
/// attention is dropped.
struct Gemma3nModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Gemma3nConfiguration
    let layerTypes: [String]
    let rotary: [String: RotaryEmbedding]
    let activation: Activation
    /// Each layer's MLP width.
    let intermediateSizes: [Int]
    /// Each layer's `activation_sparsity_pattern` entry.
    let sparsity: [Double]
    /// Whether config.json lists the sparsity (an export keeps the kept layers' entries) or leaves it to the rule.
    let sparsityListed: Bool
    let perLayerEmbedding: PerLayerEmbedding?
    /// The first layer that reuses keys and values.
    let firstSharedLayer: Int
    /// `altup_active_idx`, Python's negative indices resolved.
    let activeStream: Int
    let streamProjections: AltUpProjections
    /// The first token id a multimodal checkpoint embeds as vision or audio, nil for a text-only one.
    let firstNonTextToken: Int?

    init(_ checkpoint: Checkpoint) throws {
        let multimodal = checkpoint.modelType == "gemma3n"
        let sectionName = multimodal ? "text_config" : nil
        let key = sectionName.map { $0 + "." } ?? ""
        let configPath = checkpoint.configURL.path
        // intermediate_size is one width or one per layer: the dimensions read the widest.
        let plain = ConfigSection(sectionName, defaults: Gemma3nConfiguration.defaults)
        let lists = try checkpoint.decodeConfig(Gemma3nLayerLists.self, section: plain)
        let widest = lists.intermediateSizes.max() ?? 1
        parts = try DecoderParts(
            checkpoint, section: ConfigSection(sectionName, defaults: Gemma3nConfiguration.defaults, overrides: ["intermediate_size": .integer(widest)]),
            tiedEmbeddings: multimodal
                ? try checkpoint.decodeConfig(MultimodalWrapperKeys.self).tieWordEmbeddings ?? ConfigValueKinds.tiesByDefault(checkpoint.modelType)
                : nil,
            naming: { Gemma3nModel.naming($0) },
            prefixes: multimodal ? TextModelPlacement.withLegacyNames(["model.language_model."]) : ["model.", ""])
        let config = try parts.config(Gemma3nConfiguration.self)
        self.config = config
        let dimensions = parts.dimensions, layers = dimensions.numHiddenLayers
        let streams = config.altupNumInputs
        try ConfigRules.checks(path: configPath) {
            // A negative cap gives the positive one's logits (tanh is odd); at 0 transformers' logits / 0 · 0 are all 0.
            if config.finalLogitSoftcapping == 0 {
                throw InvalidConfigValue(
                    key: key + "final_logit_softcapping",
                    problem: "is 0: transformers divides the logits by it and multiplies their tanh by it, making every logit 0 (NaN where one is exactly 0)")
            }
            _ = try ConfigRules.count(streams, key + "altup_num_inputs")
            _ = try ConfigRules.count(config.laurelRank, key + "laurel_rank")
            _ = try ConfigRules.nonNegative(config.hiddenSizePerLayerInput, key + "hidden_size_per_layer_input")
            _ = try ConfigRules.count(config.vocabSizePerLayerInput, key + "vocab_size_per_layer_input")
            // Gemma3nTextConfig refuses these, explicit head_dim or not.
            try ConfigRules.divides(dimensions.numAttentionHeads, key + "num_attention_heads", dimensions.hiddenSize, key + "hidden_size")
            // The AltUp streams side by side, and the per-layer tables.
            _ = try ConfigRules.product([(streams, key + "altup_num_inputs"), (dimensions.hiddenSize, key + "hidden_size")])
            _ = try ConfigRules.product([
                (config.hiddenSizePerLayerInput, key + "hidden_size_per_layer_input"), (layers, key + "num_hidden_layers"),
                (max(dimensions.hiddenSize, config.vocabSizePerLayerInput), key + "vocab_size_per_layer_input"),
            ])
            guard (-streams..<streams).contains(config.altupActiveIdx) else {
                throw InvalidConfigValue(
                    key: key + "altup_active_idx", problem: "is \(config.altupActiveIdx), not a stream of altup_num_inputs \(streams)")
            }
            // transformers' kv_sharing_modes needs an earlier layer of each type to take them from.
            guard (0..<layers).contains(config.numKVSharedLayers) else {
                throw InvalidConfigValue(
                    key: key + "num_kv_shared_layers", problem: "must be between 0 and num_hidden_layers − 1 (\(layers - 1)), got \(config.numKVSharedLayers)")
            }
        }
        activeStream = config.altupActiveIdx < 0 ? streams + config.altupActiveIdx : config.altupActiveIdx
        // Gemma3nTextConfig's rules for the per-layer lists.
        intermediateSizes = try lists.resolvedIntermediateSizes(layers: layers, key: key, configPath: configPath)
        (sparsity, sparsityListed) = try lists.resolvedSparsity(layers: layers, key: key, configPath: configPath)
        try parts.requireWindow(config.slidingWindow, builtBy: "Gemma3nTextModel")
        layerTypes = try parts.layerTypes(
            config.layerTypes, slidingWindow: config.slidingWindow,
            default: { ($0 + 1) % 5 == 0 ? AttentionLayerType.full : AttentionLayerType.sliding })
        activation = try parts.activation(config.hiddenActivation, key: "hidden_activation")
        firstSharedLayer = layers - config.numKVSharedLayers
        if firstSharedLayer < layers, let missing = Set(layerTypes).subtracting(layerTypes[..<firstSharedLayer]).sorted().first {
            throw DroptraceError(
                "\"\(key)num_kv_shared_layers\" is \(config.numKVSharedLayers): no \(missing) layer comes before layer \(firstSharedLayer), and transformers' kv_sharing_modes needs one of every layer type there to make the keys and values the last layers reuse",
                path: configPath)
        }
        let width = config.hiddenSizePerLayerInput
        // Width 0: transformers' per-layer branch adds zeros (the model without it), its tensors zero-sized; stored with values, they do not load.
        let perLayerTensors = ["embed_tokens_per_layer.weight", "per_layer_model_projection.weight", "per_layer_projection_norm.weight"]
            + (0..<layers).flatMap { ["layers.\($0).per_layer_input_gate.weight", "layers.\($0).per_layer_projection.weight"] }
        let tensors = parts.weights
        if width == 0, let stored = try perLayerTensors.first(where: { try tensors.has($0) && !tensors.storedShape($0).contains(0) }) {
            throw DroptraceError(
                "\"\(key)hidden_size_per_layer_input\" is 0, but the checkpoint holds values for the per-layer inputs ('\(stored)'), which transformers cannot load into their zero-width modules",
                path: configPath)
        }
        perLayerEmbedding = width == 0 ? nil : try PerLayerEmbedding(
            weights: parts.weights, tableName: "embed_tokens_per_layer", vocabulary: config.vocabSizePerLayerInput,
            layers: layers, width: width, hiddenSize: dimensions.hiddenSize, eps: config.rmsNormEps, outOfTableReadsRowZero: true)
        let d = dimensions.hiddenSize, weights = parts.weights
        /// Streams 1 ..< streams' projections, read one by one: a count no checkpoint holds stops at its first missing tensor.
        func projections(_ name: String) throws -> [Linear] {
            var list: [Linear] = []
            for s in 1..<max(streams, 1) { list.append(try weights.linear("\(name).\(s - 1)", in: d, out: d, bias: false)) }
            return list
        }
        streamProjections = AltUpProjections(embed: try projections("altup_projections"), unembed: try projections("altup_unembed_projections"))
        if multimodal {
            let offsets = try checkpoint.decodeConfig(Gemma3nMediaOffsets.self)
            firstNonTextToken = min(offsets.vision, offsets.audio)
        } else {
            firstNonTextToken = nil
        }

        try parts.confirmAttentionProjections()
        let headDim = parts.firstKeptAttention == nil ? 0 : dimensions.resolvedHeadDim
        rotary = try RopeSettings.tablesByLayerType(
            layerTypes, checkpoint: checkpoint, section: sectionName, headDim: headDim, maxPositions: dimensions.maxPositionEmbeddings,
            full: .init(thetaKey: "rope_theta", scaling: true, theta: 1_000_000),
            sliding: .init(thetaKey: "rope_local_base_freq", scaling: false, theta: 10_000), configPath: configPath)
    }

    /// The layer naming: each branch owns its norms, the attention LAuReL;
    /// AltUp and the per-layer input branch belong to the block.
    static func naming(_ prefix: String) -> LayerNaming {
        var naming = SandwichBlock.naming(prefix)
        naming.attention.append("laurel.")
        return naming
    }

    var streamWidth: Int { hiddenSize * config.altupNumInputs }
    var scoredColumns: Range<Int>? { activeStream * hiddenSize..<(activeStream + 1) * hiddenSize }

    /// The AltUp streams of the tokens' embeddings (× √hidden).
    func embed(_ batch: TokenBatch) throws -> Matrix {
        if let first = firstNonTextToken, let token = batch.tokenIDs.first(where: { $0 >= first }) {
            throw DroptraceError(
                "the calibration holds token id \(token), which gemma3n's model embeds with its vision or audio embedder (ids from \(first) on, vision_config / audio_config vocab_offset): droptrace scores text; leave them out",
                path: parts.configPath)
        }
        return streamProjections.expand(try parts.embed(batch, scaled: true))
    }

    /// An export without some blocks spells out the remaining layers' types,
    /// sparsities and key/value sharing, and keeps their per-layer inputs.
    var layerNaming: LayerNaming {
        var naming = parts.naming(spellingOut: layerTypes)
        if firstSharedLayer < layerCount {
            naming.trailingLayerCounts = ["num_kv_shared_layers": layerCount - firstSharedLayer]
            naming.keyValueParts = ["input_layernorm.", "self_attn.k_proj.", "self_attn.v_proj.", "self_attn.k_norm."]
        }
        if !sparsityListed { naming.perLayerNumberLists["activation_sparsity_pattern"] = sparsity }
        naming.packedPerLayerTensors = perLayerEmbedding?.packedTensors ?? []
        return naming
    }

    func head() throws -> OutputHead {
        var head = try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps),
            logitSoftcap: config.finalLogitSoftcapping.map { Float($0) })
        head.streamCollapse = streamProjections
        return head
    }

    func attentionSharing(skipping plan: DropPlan) throws -> LayerSharing {
        try LayerSharing.trailingKeysValues(
            layerTypes: layerTypes, firstShared: firstSharedLayer, drops: plan.union(configuredDrops), configPath: parts.configPath)
    }

    func exportProblem(_ plan: DropPlan) -> String? { planProblem(plan) }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let eps = config.rmsNormEps, d = hiddenSize, n = config.altupNumInputs
        let p = "layers.\(index)."
        let sharing = try attentionSharing(skipping: plan).keysValues
        let mine = sharing.isEmpty ? nil : sharing[index]
        func norm(_ name: String) throws -> Normalization { try weights.rmsNorm(p + name, size: d, eps: eps) }
        func attention() throws -> SelfAttention {
            try Gemma4Model.attention(
                p + "self_attn.", weights: weights, hiddenSize: d, layout: parts.attentionLayout, rotary: rotary[layerTypes[index]],
                slidingWindow: layerTypes[index] == AttentionLayerType.full ? nil : config.slidingWindow, eps: eps,
                bias: config.attentionBias == true, sharing: mine)
        }
        func mlp() throws -> MLPBranch {
            var feedForward = try weights.gatedMLP(p + "mlp.", hidden: d, inner: intermediateSizes[index], activation: activation)
            if sparsity[index] > 0, case .gated(let gateUp, let down, let activation) = feedForward {
                feedForward = .sparseGated(
                    gateUp: gateUp, down: down, activation: activation,
                    stdMultiplier: FeedForward.standardNormalQuantile(Float(sparsity[index])))
            }
            return MLPBranch(
                inputNorm: try norm("pre_feedforward_layernorm"), feedForward: feedForward,
                outputNorm: try norm("post_feedforward_layernorm"))
        }
        let rank = config.laurelRank, width = config.hiddenSizePerLayerInput
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try norm("input_layernorm"), attention: try attention(),
                outputNorm: try norm("post_attention_layernorm"),
                join: .learnedAugmented(LearnedAugmentedResidual(
                    left: try weights.linear(p + "laurel.linear_left", in: d, out: rank, bias: false),
                    right: try weights.linear(p + "laurel.linear_right", in: rank, out: d, bias: false),
                    norm: try norm("laurel.post_laurel_norm")))),
            mlp: drops.dropsMLP(index) ? nil : try mlp(),
            residual: .sequential,
            perLayerInput: width == 0 ? nil : PerLayerInputBranch(
                gate: try weights.linear(p + "per_layer_input_gate", in: d, out: width, bias: false),
                activation: activation,
                projection: try weights.linear(p + "per_layer_projection", in: width, out: d, bias: false),
                norm: try norm("post_per_layer_input_norm")),
            sharingProducer: drops.dropsAttention(index) && mine?.storesOnly == true
                ? AttentionBranch(inputNorm: try norm("input_layernorm"), attention: try attention())
                : nil,
            altUp: AltUp(
                streams: n, active: activeStream, routerNorm: try norm("altup.router_norm"),
                router: try weights.linear(p + "altup.modality_router", in: d, out: n, bias: false),
                predictionCoefficients: try weights.linear(p + "altup.prediction_coefs", in: n, out: n * n, bias: false),
                correctionCoefficients: try weights.linear(p + "altup.correction_coefs", in: n, out: n, bias: false),
                correctOutputScale: config.altupCorrectScale ? try weights.floats(p + "altup.correct_output_scale", [d]) : nil))
    }
}

/// Gemma3nTextConfig's per-layer lists: `intermediate_size` (one width or
/// one per layer) and `activation_sparsity_pattern` (one value per layer,
/// or null for the class's rule).
struct Gemma3nLayerLists: Decodable {
    var intermediateSizes: [Int]
    var intermediateIsList: Bool
    /// nil: absent or null.
    var sparsity: [Double]?
    var sparsityIsScalar: Bool

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: ConfigKey.self)
        let inner = ConfigKey("intermediate_size"), pattern = ConfigKey("activation_sparsity_pattern")
        if let list = try? c.decode([Int].self, forKey: inner) {
            (intermediateSizes, intermediateIsList) = (list, true)
        } else {
            (intermediateSizes, intermediateIsList) = ([try c.decode(Int.self, forKey: inner)], false)
        }
        sparsityIsScalar = (try? c.decode(Double.self, forKey: pattern)) != nil
        sparsity = sparsityIsScalar ? nil : try c.decodeIfPresent([Double].self, forKey: pattern)
    }

    func resolvedIntermediateSizes(layers: Int, key: String, configPath: String) throws -> [Int] {
        if intermediateIsList, intermediateSizes.count != layers {
            throw DroptraceError(
                "\"\(key)intermediate_size\" lists \(intermediateSizes.count) widths for \(layers) layers: Gemma3nTextConfig takes one width or one per layer",
                path: configPath)
        }
        try ConfigRules.checks(path: configPath) {
            for (layer, width) in intermediateSizes.enumerated() {
                _ = try ConfigRules.count(width, intermediateIsList ? "\(key)intermediate_size[\(layer)]" : key + "intermediate_size")
            }
        }
        return intermediateIsList ? intermediateSizes : Array(repeating: intermediateSizes[0], count: layers)
    }

    /// Each layer's sparsity, and whether config.json lists them.
    func resolvedSparsity(layers: Int, key: String, configPath: String) throws -> ([Double], Bool) {
        let name = key + "activation_sparsity_pattern"
        if sparsityIsScalar {
            throw DroptraceError("\"\(name)\" is one number: Gemma3nTextConfig takes one value per layer (a list), or null", path: configPath)
        }
        guard let sparsity else {
            let sparse = layers > 10 ? 10 : 0
            return (Array(repeating: 0.95, count: sparse) + Array(repeating: 0, count: layers - sparse), false)
        }
        guard sparsity.count == layers else {
            throw DroptraceError(
                "\"\(name)\" lists \(sparsity.count) values for \(layers) layers: Gemma3nTextConfig needs one per layer", path: configPath)
        }
        // At most 0 the MLP is dense, as in transformers; at 1 the cut is infinite and the gate all zeros.
        if let (layer, value) = sparsity.enumerated().first(where: { $0.element > 1 }) {
            throw DroptraceError(
                "\"\(name)\" gives layer \(layer) \(value): above 1, transformers' cut at its normal quantile is NaN, and so is every output of the layer's MLP",
                path: configPath)
        }
        return (sparsity, true)
    }
}

/// The first token ids `Gemma3nForConditionalGeneration` embeds with its
/// vision and audio embedders (`vision_config.vocab_offset`, 262144;
/// `audio_config.vocab_offset`, 262272).
struct Gemma3nMediaOffsets: Decodable {
    var vision: Int
    var audio: Int

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: ConfigKey.self)
        func offset(_ section: String, default value: Int) throws -> Int {
            guard c.contains(ConfigKey(section)), try !c.decodeNil(forKey: ConfigKey(section)) else { return value }
            let inner = try c.nestedContainer(keyedBy: ConfigKey.self, forKey: ConfigKey(section))
            return try inner.decodeIfPresent(Int.self, forKey: ConfigKey("vocab_offset")) ?? value
        }
        vision = try offset("vision_config", default: 262_144)
        audio = try offset("audio_config", default: 262_272)
    }
}

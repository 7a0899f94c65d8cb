import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `modernbert-decoder`, with ModernBertDecoderConfig's
/// defaults (transformers' `models/modernbert_decoder/configuration_modernbert_decoder.py`).
struct ModernBertDecoderConfiguration: Decodable {
    var normEps: Double
    /// The LayerNorms' biases (off by default).
    var normBias: Bool
    var hiddenActivation: String
    /// Biases on q/k/v_proj and Wo.
    var attentionBias: Bool
    /// Biases on Wi and Wo.
    var mlpBias: Bool
    /// The prediction head's dense bias and activation.
    var classifierBias: Bool
    var classifierActivation: String
    /// The vocabulary projection's bias (`decoder.bias`, on by default).
    var decoderBias: Bool
    /// Twice the sliding window (absent: 128; null: none).
    var localAttention: Int?
    /// config.json's `sliding_window`: nil when absent, `.some(nil)` when
    /// null. ModernBertDecoderConfig derives the window from local_attention,
    /// then sets the keys it does not declare as written, this one included.
    var savedSlidingWindow: Int??
    /// Every n-th layer from 0 attends fully when `layer_types` is absent
    /// (a keyword ModernBertDecoderConfig reads, 3 unless given).
    var globalAttnEveryNLayers: Int
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case normEps = "norm_eps"
        case normBias = "norm_bias"
        case hiddenActivation = "hidden_activation"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case classifierBias = "classifier_bias"
        case classifierActivation = "classifier_activation"
        case decoderBias = "decoder_bias"
        case localAttention = "local_attention"
        case slidingWindow = "sliding_window"
        case globalAttnEveryNLayers = "global_attn_every_n_layers"
        case layerTypes = "layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        normEps = try c.decodeIfPresent(Double.self, forKey: .normEps) ?? 1e-5
        normBias = try c.decodeIfPresent(Bool.self, forKey: .normBias) ?? false
        hiddenActivation = try c.decodeIfPresent(String.self, forKey: .hiddenActivation) ?? "gelu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        classifierBias = try c.decodeIfPresent(Bool.self, forKey: .classifierBias) ?? false
        classifierActivation = try c.decodeIfPresent(String.self, forKey: .classifierActivation) ?? "gelu"
        decoderBias = try c.decodeIfPresent(Bool.self, forKey: .decoderBias) ?? true
        localAttention = c.contains(.localAttention) ? try c.decodeIfPresent(Int.self, forKey: .localAttention) : 128
        savedSlidingWindow = c.contains(.slidingWindow) ? .some(try c.decodeIfPresent(Int.self, forKey: .slidingWindow)) : nil
        globalAttnEveryNLayers = try c.decodeIfPresent(Int.self, forKey: .globalAttnEveryNLayers) ?? 3
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
    }

    /// ModernBertDecoderConfig's `sliding_window`: as config.json writes it
    /// where it does (nil: null), else local_attention // 2 (floor
    /// division), −1 when local_attention is null or 0.
    var slidingWindow: Int? {
        if let saved = savedSlidingWindow { return saved }
        guard let local = localAttention, local != 0 else { return -1 }
        return Int((Double(local) / 2).rounded(.down))
    }
}

/// ModernBERT's decoder (`modernbert-decoder`, ModernBertDecoderForCausalLM),
/// as transformers' `models/modernbert_decoder/modeling_modernbert_decoder.py`
/// runs it: the token embedding normalised by a LayerNorm (`embeddings.norm`);
/// pre-LayerNorm blocks (biases by `norm_bias`, eps `norm_eps`) whose first
/// layer has no norm before its attention (`attn_norm` is the identity
/// there); multi-head attention (every head its own keys and values, heads
/// hidden_size / num_attention_heads wide; q/k/v_proj and `Wo` biased by
/// `attention_bias`) rotating with its layer type's base (full 160000,
/// sliding 10000 unless given) and, on `sliding_attention` layers, within
/// local_attention // 2 tokens (or config.json's `sliding_window`, which
/// overrides it as ModernBertDecoderConfig sets it); a GeGLU MLP act(`Wi` first half) · `Wi`
/// second half through `Wo` (biases by `mlp_bias`); `final_norm`, then the
/// prediction head `lm_head` (dense, `classifier_activation`, LayerNorm)
/// before the vocabulary projection `decoder` (tied to the embedding by
/// default, its bias by `decoder_bias`). Its dropouts act in training only.
struct ModernBertDecoderModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: ModernBertDecoderConfiguration
    let layerTypes: [String]
    /// The sliding layers' window (nil: no layer slides).
    let window: Int?
    /// The rotary embedding of each layer type present.
    let rotary: [String: RotaryEmbedding]
    let embeddingNorm: Normalization

    init(_ checkpoint: Checkpoint) throws {
        // The family reads sliding_window itself (ModernBertDecoderConfig derives it from
        // local_attention unless written; `slidingWindow`), and its attention has no num_key_value_heads.
        parts = try DecoderParts(
            checkpoint, section: ConfigSection(overrides: ["sliding_window": .null, "num_key_value_heads": .null]),
            headNames: ["decoder"], naming: Self.naming, finalNorm: "final_norm", embedding: "embeddings.tok_embeddings")
        // The family's keys as written, sliding_window included.
        let config = try checkpoint.decodeConfig(ModernBertDecoderConfiguration.self, section: .topLevel)
        self.config = config
        let parts = parts, dimensions = parts.dimensions, configPath = parts.configPath
        try parts.checks {
            try ConfigRules.positive(config.normEps, "norm_eps")
            // ModernBertDecoderAttention refuses hidden_size not a multiple of the heads.
            try ConfigRules.divides(dimensions.numAttentionHeads, "num_attention_heads", dimensions.hiddenSize, "hidden_size")
        }
        // Its rotary table is head_dim wide where config.json sets one, its heads hidden_size / num_attention_heads.
        try parts.confirmHeadDimIsHiddenOverHeads(", which ModernBertDecoderRotaryEmbedding sizes its table by, but its attention's heads are")
        if config.layerTypes == nil, config.globalAttnEveryNLayers == 0 {
            throw DroptraceError(
                "\"global_attn_every_n_layers\" is 0: ModernBertDecoderConfig divides the layer index by it to lay out layer_types",
                path: configPath)
        }
        let every = config.globalAttnEveryNLayers
        let types = try parts.layerTypes(config.layerTypes, slidingWindow: 1) {
            $0 % every == 0 ? AttentionLayerType.full : AttentionLayerType.sliding
        }
        layerTypes = types
        // transformers builds the sliding-window mask for every model, from an integer.
        guard let configuredWindow = config.slidingWindow else {
            throw DroptraceError(
                "\"sliding_window\" is null, which transformers' ModernBertDecoderModel cannot run: it builds a sliding-window mask "
                    + "for every model (ModernBertDecoderConfig derives it from local_attention where the key is absent)",
                path: configPath)
        }
        if types.contains(AttentionLayerType.sliding) {
            guard configuredWindow >= 1 else {
                let written = config.savedSlidingWindow == nil
                    ? "\"local_attention\" is \(config.localAttention.map(String.init) ?? "null"), which leaves"
                    : "\"sliding_window\" is \(configuredWindow), which gives"
                throw DroptraceError(
                    "\(written) the sliding_attention layers a window of \(configuredWindow) keys, whose mask transformers cannot build",
                    path: configPath)
            }
            window = configuredWindow
        } else {
            window = nil
        }
        embeddingNorm = try parts.weights.layerNorm(
            "embeddings.norm", size: dimensions.hiddenSize, eps: config.normEps, bias: config.normBias)
        // transformers builds both activations, and the prediction head and the decoder's bias, with the model.
        _ = try parts.activation(config.hiddenActivation, key: "hidden_activation")
        _ = try parts.activation(config.classifierActivation, key: "classifier_activation")
        let d = dimensions.hiddenSize
        var shapes: [(String, [Int])] = [("lm_head.dense.weight", [d, d]), ("lm_head.norm.weight", [d])]
        if config.classifierBias { shapes.append(("lm_head.dense.bias", [d])) }
        if config.normBias { shapes.append(("lm_head.norm.bias", [d])) }
        if config.decoderBias { shapes.append(("decoder.bias", [parts.outputVocabularySize])) }
        for (name, shape) in shapes { _ = try checkpoint.tensor(parts.weights.absolute(name), shape: shape) }

        try parts.confirmAttentionProjections(attention: "attn.")
        let headDim = parts.firstKeptAttention == nil ? 0 : dimensions.resolvedHeadDim
        rotary = try RopeSettings.tablesByLayerType(
            types, checkpoint: checkpoint, section: nil, headDim: headDim, maxPositions: dimensions.maxPositionEmbeddings,
            full: .init(thetaKey: "global_rope_theta", scaling: true, theta: 160_000),
            sliding: .init(thetaKey: "local_rope_theta", scaling: true, theta: 10_000), configPath: configPath)
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(prefix: prefix + "layers.", attention: ["attn.", "attn_norm."], mlp: ["mlp.", "mlp_norm."], layerCountKeys: ["num_hidden_layers"])
    }

    /// An export without some blocks spells out the remaining layers' types,
    /// so renumbering cannot move a window or a rotary base.
    var layerNaming: LayerNaming { parts.naming(spellingOut: layerTypes) }

    func embed(_ batch: TokenBatch) throws -> Matrix { embeddingNorm(try parts.embed(batch)) }

    /// Layer 0 has no norm before its attention: another layer moved there would lose its own.
    func exportProblem(_ plan: DropPlan) -> String? {
        guard plan.blocks.contains(0), let first = (0..<layerCount).first(where: { !plan.blocks.contains($0) }),
            !plan.dropsAttention(first)
        else { return nil }
        return "dropping block 0 makes layer \(first) the first, whose attention norm (attn_norm) transformers replaces with the identity "
            + "in layer 0; drop other blocks, or that layer's attention too"
    }

    func head() throws -> OutputHead {
        let weights = parts.weights, d = hiddenSize, eps = config.normEps
        var head = try parts.head(
            norm: weights.layerNorm("final_norm", size: d, eps: eps, bias: config.normBias), bias: config.decoderBias)
        // The prediction head sits beside the model, as the vocabulary projection does.
        func outside(_ name: String, _ shape: [Int]) throws -> [Float] {
            try parts.checkpoint.tensor(weights.absolute(name), shape: shape).floats()
        }
        head.predictionHead = PredictionHead(
            dense: Linear(
                weight: try outside("lm_head.dense.weight", [d, d]),
                bias: config.classifierBias ? try outside("lm_head.dense.bias", [d]) : nil, inFeatures: d, outFeatures: d),
            activation: try parts.activation(config.classifierActivation, key: "classifier_activation"),
            norm: .layer(
                weight: try outside("lm_head.norm.weight", [d]),
                bias: config.normBias ? try outside("lm_head.norm.bias", [d]) : [Float](repeating: 0, count: d), eps: Float(eps)))
        return head
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights, d = hiddenSize, eps = config.normEps
        let p = "layers.\(index).", type = layerTypes[index]
        func norm(_ name: String) throws -> Normalization {
            try weights.layerNorm(p + name, size: d, eps: eps, bias: config.normBias)
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: index == 0 ? nil : try norm("attn_norm"),
                attention: try parts.attention(
                    p + "attn.", bias: config.attentionBias, outputName: "Wo", rotary: rotary[type],
                    slidingWindow: type == AttentionLayerType.sliding ? window : nil)),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try norm("mlp_norm"),
                feedForward: try weights.fusedGatedMLP(
                    p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.hiddenActivation, key: "hidden_activation"), bias: config.mlpBias,
                    names: ("Wi", "Wo"))),
            residual: .sequential)
    }
}

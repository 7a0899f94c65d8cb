import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `granite`, with GraniteConfig's defaults: the four
/// multipliers are 1 (Llama's arithmetic) unless given.
struct GraniteConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    /// Biases on q/k/v_proj and o_proj alike.
    var attentionBias: Bool
    var mlpBias: Bool
    /// Multiplies the token embeddings.
    var embeddingMultiplier: Float
    /// Multiplies each branch's output as it joins the residual stream.
    var residualMultiplier: Float
    /// The softmax scale, in place of 1/√head_dim.
    var attentionMultiplier: Float
    /// Divides the logits.
    var logitsScaling: Float

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case embeddingMultiplier = "embedding_multiplier"
        case residualMultiplier = "residual_multiplier"
        case attentionMultiplier = "attention_multiplier"
        case logitsScaling = "logits_scaling"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // (DecoderDimensions refuses a non-positive one.)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        // GraniteMoeConfig takes null, which its model then multiplies by.
        embeddingMultiplier = try c.multiplier(.embeddingMultiplier)
        residualMultiplier = try c.multiplier(.residualMultiplier)
        attentionMultiplier = try c.multiplier(.attentionMultiplier)
        logitsScaling = try c.multiplier(.logitsScaling)
        let logitsScaling = logitsScaling
        // Logits divided by 0 are no distribution.
        try ConfigRules.decodingChecks {
            guard logitsScaling != 0 else {
                throw InvalidConfigValue(key: "logits_scaling", problem: "must not be 0 (the logits are divided by it)")
            }
        }
    }
}

extension KeyedDecodingContainer {
    /// The µP multiplier under `key` (Granite's, HyperCLOVA X's), 1 when
    /// absent. transformers multiplies float32 activations by these Python
    /// floats in float32, so a value float32 cannot hold (1e39) would make
    /// every activation infinite.
    /// - Throws: `DecodingError` naming the key for null or such a value.
    func multiplier(_ key: Key) throws -> Float {
        let isNull = try contains(key) && decodeNil(forKey: key)
        let value = try decodeIfPresent(Double.self, forKey: key) ?? 1
        try ConfigRules.decodingChecks {
            guard !isNull else { throw InvalidConfigValue(key: key.stringValue, problem: "must be a number, got null") }
            guard value.isFinite, Float(value).isFinite else {
                throw InvalidConfigValue(key: key.stringValue, problem: "must be a finite number that float32 holds, got \(value)")
            }
        }
        return Float(value)
    }
}

/// Granite (IBM Granite 3.x dense models): Llama's pre-RMSNorm block with
/// four multipliers — token embeddings × `embedding_multiplier`, each
/// branch output × `residual_multiplier` before it is added to the stream
/// (h = x + m · attn(norm x), y = h + m · mlp(norm h)), softmax scale
/// `attention_multiplier` instead of 1/√head_dim, logits ÷ `logits_scaling`
/// (in GraniteForCausalLM: not under a LLaVA-style wrapper such as Granite
/// Vision's `llava_next`, whose own head reads the language model's output).
/// Granite-Docling (`granite_docling`, transformers' models/granite_docling)
/// is this model under its wrapper's own text config class,
/// GraniteDoclingTextConfig (by default embeddings × 12, branches × 0.263,
/// softmax scale 0.015625, logits ÷ 4), weights under `model.text_model.`,
/// its head dividing the logits as GraniteForCausalLM's does (`Llava`).
///
/// The residual multiplier belongs to the branch: the attention and MLP
/// importances compare the stream before and after the scaled branch is
/// added, as transformers' layer forms it.
///
/// Granite SWA (`granite_swa`, transformers' models/granite_swa/modeling_granite_swa.py)
/// adds sliding-window layers by `layer_types` (every fourth layer from 0
/// global unless given; window `sliding_window`, 128 by default), a rotary
/// base per layer by `layer_rope_theta` (0: no rotary), and a learned sink
/// per head (`self_attn.sinks`): the attention output scaled by
/// sigmoid(logsumexp(scores) − sink), an extra logit in the softmax.
///
/// GraniteMoE (`granitemoe`, transformers' models/granitemoe) is Granite
/// with GraniteMoE's sparse MLP in every layer (`GraniteMoeMLP`);
/// GraniteMoE-Shared (`granitemoeshared`) adds its shared MLP; GraniteMoE
/// SWA (`granitemoe_swa`) is GraniteMoE-Shared with Granite SWA's attention.
struct GraniteModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { ["granite_swa", "granitemoe_swa"].contains(modelType) }
    let parts: DecoderParts
    let config: GraniteConfiguration
    /// The mixture-of-experts variants' MLP; nil for Granite's dense one.
    let mixture: GraniteMoeMLP?
    /// Per layer: its rotation (nil: none, Granite SWA's NoPE layers).
    let rotaries: [RotaryEmbedding?]
    /// Granite SWA's per-layer types and window, and its sinks; nil for Granite.
    let slidingWindows: [Int?]?
    /// Whether the head divides the logits by `logits_scaling`: GraniteForCausalLM's
    /// and GraniteDoclingForConditionalGeneration's do, another wrapper's own head does not.
    let headDividesLogits: Bool

    /// GraniteDoclingTextConfig's defaults of the multipliers (GraniteConfig's are 1).
    static let doclingTextDefaults: [String: ConfigDefault] = [
        "embedding_multiplier": 12.0, "logits_scaling": 4.0, "residual_multiplier": 0.263, "attention_multiplier": 0.015625,
    ]

    init(_ checkpoint: Checkpoint) throws {
        let swa = Self.readsLayerTypes(checkpoint.modelType)
        let moe = ["granitemoe", "granitemoeshared", "granitemoe_swa"].contains(checkpoint.modelType)
        // Granite-Docling's head divides the logits as GraniteForCausalLM's does; its text config class
        // has multipliers of its own by default.
        let docling = checkpoint.modelType == "granite_docling"
        // A LLaVA-style wrapper's granite language model (Granite Vision's) sits under text_config.
        var placement = try TextModelPlacement.topLevelOrWrapped(checkpoint, defaults: docling ? Self.doclingTextDefaults : [:])
        if swa { placement.section = GraniteSWASettings.section }
        // The wrapper's own head never reads logits_scaling (any value transformers takes runs): read as 1.
        if placement.section.name != nil, !docling { placement.section.overrides["logits_scaling"] = .number(1) }
        headDividesLogits = placement.section.name == nil || docling
        parts = try DecoderParts(checkpoint, placement: placement, naming: moe ? GraniteMoeMLP.naming : LlamaModel.naming)
        config = try parts.config(GraniteConfiguration.self)
        // transformers maps GraniteMoE's saved tensor names for granitemoe and granitemoeshared only.
        mixture = moe ? try GraniteMoeMLP(
            parts, readsSharedMLP: checkpoint.modelType != "granitemoe", readsSavedNames: checkpoint.modelType != "granitemoe_swa") : nil
        let layers = parts.dimensions.numHiddenLayers
        guard swa else {
            rotaries = Array(repeating: try parts.rotary(), count: layers)
            slidingWindows = nil
            return
        }
        let settings = try parts.config(GraniteSWASettings.self)
        let builtBy = moe ? "GraniteMoeSWAModel" : "GraniteSWAModel"
        try parts.requireWindow(settings.slidingWindow, builtBy: builtBy)
        let types = try parts.layerTypes(settings.layerTypes, slidingWindow: settings.slidingWindow) {
            $0 % 4 == 0 ? AttentionLayerType.full : AttentionLayerType.sliding
        }
        slidingWindows = types.map { $0 == AttentionLayerType.sliding ? settings.slidingWindow : nil }
        let rope = try parts.ropeSettings()
        let thetas = settings.layerRopeTheta ?? Array(repeating: rope.theta, count: layers)
        try ConfigRules.checks(path: parts.configPath) {
            guard thetas.count == layers else {
                throw InvalidConfigValue(
                    key: "layer_rope_theta", problem: "has \(thetas.count) entries for num_hidden_layers \(layers); \(builtBy) reads one per layer")
            }
            for theta in thetas { try ConfigRules.bound(theta, "layer_rope_theta") }
        }
        // One rotation per base, as GraniteSWAModel (and GraniteMoeSWAModel) builds one rotary embedding per distinct non-zero theta.
        var byTheta: [Double: RotaryEmbedding] = [:]
        for theta in Set(thetas) where theta != 0 {
            var settings = rope
            settings.theta = theta
            settings.thetaIsExplicit = true
            byTheta[theta] = try parts.rotary(settings: settings)
        }
        rotaries = thetas.map { byTheta[$0] }
        layerTypes = types
    }

    /// Granite SWA's layer types, spelled out by block-drop exports.
    private(set) var layerTypes: [String]? = nil

    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes)
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch, multiplier: config.embeddingMultiplier) }

    func head() throws -> OutputHead {
        // GraniteForCausalLM divides the logits, and Granite-Docling's head; another wrapper's own lm_head does not.
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps),
            logitDivisor: headDividesLogits ? config.logitsScaling : nil)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: config.attentionBias, rotary: rotaries[index], scale: config.attentionMultiplier,
            slidingWindow: slidingWindows?[index] ?? nil,
            sinkLogits: slidingWindows == nil ? nil : try weights.floats(p + "self_attn.sinks", [parts.attentionLayout.numHeads])) }
        func feedForward() throws -> FeedForward {
            if let mixture { return try mixture.feedForward(index, parts: parts, activation: try parts.activation(config.hiddenAct ?? "silu")) }
            return try weights.gatedMLP(
                p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize,
                activation: try parts.activation(config.hiddenAct ?? "silu"), bias: config.mlpBias)
        }
        return try parts.preNormBlock(
            index, drops: drops, eps: config.rmsNormEps, outputScale: config.residualMultiplier,
            attention: attention, feedForward: feedForward)
    }
}

/// Granite SWA's keys of config.json (GraniteSWAConfig, beside GraniteConfig's;
/// GraniteMoeSWAConfig has them with the same defaults).
struct GraniteSWASettings: Decodable {
    var slidingWindow: Int?
    var layerTypes: [String]?
    /// Per layer: the rotary base, 0 for none (absent or null: rope_theta everywhere).
    var layerRopeTheta: [Double]?

    enum CodingKeys: String, CodingKey {
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case layerRopeTheta = "layer_rope_theta"
    }

    /// GraniteSWAConfig's window when config.json omits it.
    static let section = ConfigSection(defaults: ["sliding_window": 128])
}

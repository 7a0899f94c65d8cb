import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gpt_oss`, with transformers' `GptOssConfig` defaults for
/// what it omits.
struct GptOssConfiguration: Decodable {
    var rmsNormEps: Double
    /// nil only when config.json sets it to null (absent means 128).
    var slidingWindow: Int?
    var layerTypes: [String]?
    var numLocalExperts: Int
    var numExpertsPerTok: Int
    var swigluAlpha: Double
    var swigluLimit: Double
    var attentionBias: Bool
    /// config.json names rotary settings (`rope_parameters` or `rope_scaling`);
    /// without them transformers uses YaRN (factor 32 over 4096 positions).
    var namesRope: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case numLocalExperts = "num_local_experts"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case swigluAlpha = "swiglu_alpha"
        case swigluLimit = "swiglu_limit"
        case attentionBias = "attention_bias"
        case ropeParameters = "rope_parameters"
        case ropeScaling = "rope_scaling"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : 128
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        // transformers maps `num_experts` onto `num_local_experts`.
        numLocalExperts = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts)
            ?? c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 128
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 4
        swigluAlpha = try c.decodeIfPresent(Double.self, forKey: .swigluAlpha) ?? 1.702
        swigluLimit = try c.decodeIfPresent(Double.self, forKey: .swigluLimit) ?? 7.0
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? true
        namesRope = try [CodingKeys.ropeParameters, .ropeScaling].contains { try c.contains($0) && !c.decodeNil(forKey: $0) }
        try ConfigRules.decodingChecks {
            let experts = numLocalExperts
            try ConfigRules.count(experts, c.contains(.numLocalExperts) || !c.contains(.numExperts) ? "num_local_experts" : "num_experts")
            guard (1...experts).contains(numExpertsPerTok) else {
                throw InvalidConfigValue(
                    key: "num_experts_per_tok", problem: "must be between 1 and num_local_experts \(experts), got \(numExpertsPerTok)")
            }
            try ConfigRules.positive(swigluAlpha, "swiglu_alpha")
            try ConfigRules.positive(swigluLimit, "swiglu_limit")
            // layer_types' entries are checked where they are resolved (`DecoderParts.layerTypes`).
        }
    }

    /// transformers' rule when `layer_types` is absent: even layers slide.
    static func defaultLayerType(_ layer: Int) -> String {
        layer % 2 == 0 ? AttentionLayerType.sliding : AttentionLayerType.full
    }
}

/// gpt-oss: pre-RMSNorm blocks whose attention has q/k/v/o biases, a
/// learned sink logit per head in the softmax, YaRN rotary and sliding-window
/// layers alternating with full ones; the MLP is a mixture of experts routed
/// by a softmax over each token's top-k router logits (router with bias),
/// each expert a clamped SwiGLU with biases:
///
///     H = X + Attn(RMSNorm X),   Y = H + MoE(RMSNorm H)
///
/// The experts are fused: `mlp.experts.gate_up_proj` [experts, hidden, 2·inner]
/// (gate and up interleaved by column), `gate_up_proj_bias` [experts, 2·inner],
/// `down_proj` [experts, inner, hidden], `down_proj_bias` [experts, hidden].
/// Released checkpoints store `gate_up_proj` and `down_proj` as MXFP4
/// (`_blocks` [experts, out, in / 32, 16] and `_scales` [experts, out, in / 32],
/// U8): they are dequantised on load, as transformers'
/// `convert_moe_packed_tensors` does, to [experts, out, in] before its transpose.
struct GptOssModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: GptOssConfiguration
    let rotary: RotaryEmbedding
    let layerTypes: [String]

    init(_ checkpoint: Checkpoint) throws {
        // transformers' GptOssConfig: head_dim 64 and rope_theta 150000 unless
        // given (an explicit null head_dim still means hidden_size / heads).
        parts = try DecoderParts(checkpoint, section: ConfigSection(defaults: ["head_dim": 64]), naming: { Self.naming($0) })
        config = try parts.config(GptOssConfiguration.self)
        let dimensions = parts.dimensions, configPath = parts.configPath
        var rope = try checkpoint.decodeConfig(RopeSettings.self)
        if !config.namesRope {
            (rope.type, rope.factor, rope.yarn.betaFast, rope.yarn.betaSlow) = ("yarn", 32, 32, 1)
            (rope.yarn.truncate, rope.originalMaxPositions) = (false, 4096)
        }
        try parts.confirmAttentionProjections()
        rotary = try rope.embedding(
            headDim: parts.firstKeptAttention == nil ? 0 : dimensions.resolvedHeadDim, defaultTheta: 150_000,
            configPath: configPath)
        try parts.requireWindow(config.slidingWindow, builtBy: "GptOssModel")
        layerTypes = try parts.layerTypes(
            config.layerTypes, slidingWindow: config.slidingWindow, default: GptOssConfiguration.defaultLayerType)
        try ConfigRules.checks(path: configPath) {
            // The fused expert tensors hold experts × hidden × 2 · inner values.
            try ConfigRules.product([
                (config.numLocalExperts, "num_local_experts"), (2, "gate and up"),
                (dimensions.intermediateSize, "intermediate_size"), (dimensions.hiddenSize, "hidden_size"),
            ])
        }
        // The expert list is built num_local_experts long: the first kept
        // router [experts, hidden] confirms the count first.
        if let layer = (0..<dimensions.numHiddenLayers).lazy.first(where: { !parts.configuredDrops.dropsMLP($0) }) {
            try parts.weights.confirmShape(
                "layers.\(layer).mlp.router.weight", [config.numLocalExperts, dimensions.hiddenSize],
                keys: "num_local_experts, hidden_size", configPath: configPath)
        }
    }

    /// An export without some blocks spells out the remaining layers' types,
    /// so renumbering cannot move a window to another layer.
    var layerNaming: LayerNaming { Self.naming(parts.weights.prefix, layerTypes: layerTypes) }

    static func naming(_ prefix: String, layerTypes: [String]? = nil) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."],
            mlp: ["mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"], layerTypes: layerTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let layout = parts.attentionLayout, eps = config.rmsNormEps, bias = config.attentionBias
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: bias, rotary: rotary,
            slidingWindow: layerTypes[index] == "sliding_attention" ? config.slidingWindow : nil,
            sinkLogits: try weights.floats(p + "self_attn.sinks", [layout.numHeads])) }
        return try parts.preNormBlock(index, drops: drops, eps: eps, attention: attention) { .mixture(try experts(layer: index)) }
    }

    /// Layer `index`'s router and experts.
    func experts(layer index: Int) throws -> MixtureOfExperts {
        let d = hiddenSize, inner = parts.dimensions.intermediateSize, count = config.numLocalExperts
        let weights = parts.weights
        let p = "layers.\(index).mlp."
        let activation = ClampedSwiGLU(alpha: Float(config.swigluAlpha), limit: Float(config.swigluLimit))
        let gateUp = try expertWeights(p + "experts.gate_up_proj", in: d, out: 2 * inner)
        let gateUpBias = try weights.floats(p + "experts.gate_up_proj_bias", [count, 2 * inner])
        let down = try expertWeights(p + "experts.down_proj", in: inner, out: d)
        let downBias = try weights.floats(p + "experts.down_proj_bias", [count, d])
        let experts: [FeedForward] = (0..<count).map { e in
            .clampedGated(
                gateUp: Linear(
                    weight: Array(gateUp.values[(e * d * 2 * inner)..<((e + 1) * d * 2 * inner)]),
                    bias: Array(gateUpBias[(e * 2 * inner)..<((e + 1) * 2 * inner)]),
                    inFeatures: d, outFeatures: 2 * inner, layout: gateUp.layout),
                down: Linear(
                    weight: Array(down.values[(e * inner * d)..<((e + 1) * inner * d)]),
                    bias: Array(downBias[(e * d)..<((e + 1) * d)]),
                    inFeatures: inner, outFeatures: d, layout: down.layout),
                activation: activation)
        }
        return MixtureOfExperts(
            router: try weights.linear(p + "router", in: d, out: count, bias: true),
            experts: experts, expertsPerToken: config.numExpertsPerTok, rule: .topKThenSoftmax)
    }

    /// All experts' weights of fused tensor `name`: the float tensor
    /// [experts, in, out] as stored, or its MXFP4 `_blocks` / `_scales`
    /// dequantised to [experts, out, in] (no transpose needed: each expert's
    /// slice is then a torch.nn.Linear weight).
    func expertWeights(_ name: String, in inFeatures: Int, out outFeatures: Int) throws -> (values: [Float], layout: Linear.Layout) {
        let weights = parts.weights, count = config.numLocalExperts
        guard weights.has(name + "_blocks"), !weights.has(name) else {
            return (try weights.floats(name, [count, inFeatures, outFeatures]), .inByOut)
        }
        let blocks = try parts.checkpoint.storedTensor(weights.prefix + name + "_blocks")
        let scales = try parts.checkpoint.storedTensor(weights.prefix + name + "_scales")
        // Each group of B bytes holds 2B values along the input features.
        let shape = blocks.shape
        let values = shape.count == 4 ? shape[2].multipliedReportingOverflow(by: 2 * shape[3]) : (partialValue: 0, overflow: true)
        guard shape.count == 4, shape[0] == count, shape[1] == outFeatures, !values.overflow, values.partialValue == inFeatures else {
            throw DroptraceError(
                "num_local_experts, hidden_size and intermediate_size imply MXFP4 blocks '\(blocks.name)' of shape [\(count), \(outFeatures), groups, bytes] with 2 · groups · bytes = \(inFeatures), but they have shape \(shape)",
                path: parts.configPath)
        }
        return (try MXFP4.dequantize(blocks: blocks, scales: scales), .outByIn)
    }
}

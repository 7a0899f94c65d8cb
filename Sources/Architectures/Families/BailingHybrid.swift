import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `bailing_hybrid`, with BailingHybridConfig's defaults.
struct BailingHybridConfiguration: Decodable {
    /// The latent attention's defaults: q_proj direct, rope pairs interleaved.
    static let latentDefaults = LatentAttentionSettings(
        qLoraRank: nil, kvLoraRank: 512, qkNopeHeadDim: 128, qkRopeHeadDim: 64, vHeadDim: 128, ropeInterleave: true,
        attentionBias: false)
    /// The routed layers: DeepSeek-V3's router under the names
    /// BailingHybridConfig stores (`ConfigClass.readingStoredKeys`).
    static let experts = DeepSeekExperts.ConfigClass(
        nRoutedExperts: 512, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 768, routedScalingFactor: 2.5,
        nGroup: 8, topkGroup: 4, correctionBiasNames: ["gate.expert_bias", "gate.e_score_correction_bias"],
        name: "BailingHybridConfig"
    ).readingStoredKeys

    var rmsNormEps: Double
    var hiddenAct: String
    var latent: LatentAttentionSettings
    var experts: DeepSeekExperts
    /// Each layer's token mixer, "full_attention" or "linear_attention"; nil:
    /// every `layer_group_size`-th layer (6) full, the others linear.
    var layerTypes: [String]?
    var layerGroupSize: Int?
    /// Each layer's MLP, "dense" or "sparse"; nil: the first
    /// `first_k_dense_replace` (2) dense.
    var mlpLayerTypes: [String]?
    var firstKDenseReplace: Int
    /// Kimi Delta Attention's heads: `linear_num_heads` (as transformers
    /// saves it), else `num_attention_heads`; width `linear_head_dim`, else
    /// `head_dim` as written (128); `linear_conv_kernel_dim`, else
    /// `short_conv_kernel_size` (4).
    var linearHeads: Int?
    var linearHeadDim: Int
    var convolutionKernel: Int
    /// `kda_safe_gate` (true) with `kda_lower_bound` (−5): the decay's form.
    var safeGate: Bool
    var lowerBound: Double
    /// `num_nextn_predict_layers` (`num_mtp_layers`, 1): layers stored after the model's, not run.
    var predictionLayers: Int
    /// Per layer, the SwiGLU limit of the routed experts
    /// (`expert_swiglu_limit_list`, alias `swiglu_limits`) and of the shared
    /// ones (`share_expert_swiglu_limit_list`, `swiglu_limits_shared`); 0 or
    /// absent: no clipping (transformers ≥ 5.25).
    var expertLimits: [Double]?
    var sharedExpertLimits: [Double]?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case layerTypes = "layer_types"
        case layerGroupSize = "layer_group_size"
        case mlpLayerTypes = "mlp_layer_types"
        case firstKDenseReplace = "first_k_dense_replace"
        case linearHeads = "linear_num_heads"
        case linearHeadDim = "linear_head_dim"
        case headDim = "head_dim"
        case convolutionKernel = "linear_conv_kernel_dim"
        case shortConvolutionKernel = "short_conv_kernel_size"
        case safeGate = "kda_safe_gate"
        case lowerBound = "kda_lower_bound"
        case predictionLayers = "num_nextn_predict_layers"
        case expertLimits = "expert_swiglu_limit_list"
        case sharedExpertLimits = "share_expert_swiglu_limit_list"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        latent = try LatentAttentionSettings(from: decoder, defaults: Self.latentDefaults)
        // BailingHybridAttention always rotates interleaved pairs (its queries q_proj,
        // or q_a_proj, q_a_layernorm and q_b_proj with q_lora_rank: transformers ≥ 5.25).
        latent.ropeInterleave = true
        experts = try DeepSeekExperts(from: decoder, configClass: Self.experts)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        layerGroupSize = c.contains(.layerGroupSize) ? try c.decodeIfPresent(Int.self, forKey: .layerGroupSize) : 6
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        firstKDenseReplace = try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? 2
        // __post_init__ sets the linear sizes from head_dim and the kernel key, then the
        // saved linear_* keys (not fields) are set over them.
        linearHeads = try c.decodeIfPresent(Int.self, forKey: .linearHeads)
        linearHeadDim = try c.decodeIfPresent(Int.self, forKey: .linearHeadDim) ?? c.decodeIfPresent(Int.self, forKey: .headDim) ?? 128
        convolutionKernel = try c.decodeIfPresent(Int.self, forKey: .convolutionKernel)
            ?? c.decodeIfPresent(Int.self, forKey: .shortConvolutionKernel) ?? 4
        safeGate = try c.decodeIfPresent(Bool.self, forKey: .safeGate) ?? true
        lowerBound = try c.decodeIfPresent(Double.self, forKey: .lowerBound) ?? -5
        predictionLayers = try c.decodeIfPresent(Int.self, forKey: .predictionLayers) ?? 1
        expertLimits = try c.decodeIfPresent([Double].self, forKey: .expertLimits)
        sharedExpertLimits = try c.decodeIfPresent([Double].self, forKey: .sharedExpertLimits)
        let (types, mlpTypes, predictionLayers) = (layerTypes, mlpLayerTypes, predictionLayers)
        try ConfigRules.decodingChecks {
            if let bad = types?.first(where: { $0 != BailingHybridModel.full && $0 != BailingHybridModel.linear }) {
                throw InvalidConfigValue(
                    key: "layer_types", problem: "must list \"full_attention\" or \"linear_attention\" per layer, got \"\(bad.forErrorMessage)\"")
            }
            try MLPLayerTypes.checkEntries(mlpTypes)
            try ConfigRules.nonNegative(predictionLayers, "num_nextn_predict_layers")
        }
    }

    /// Each layer's token mixer for `layers` layers.
    /// - Throws: `InvalidConfigValue` when the rule is needed and
    ///   `layer_group_size` is not a non-zero integer (the remainder fails).
    func resolvedLayerTypes(_ layers: Int) throws -> [String] {
        if let layerTypes { return layerTypes }
        guard let size = layerGroupSize, size != 0 else {
            throw InvalidConfigValue(
                key: "layer_group_size", problem: "must be a non-zero integer when layer_types is not given: BailingHybridConfig takes (i + 1) modulo it")
        }
        return (0..<layers).map { ($0 + 1) % size == 0 ? BailingHybridModel.full : BailingHybridModel.linear }
    }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions, types: [String], mlpTypes: [String]) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        try ConfigRules.nonNegative(firstKDenseReplace, "first_k_dense_replace")
        if types.count != d.numHiddenLayers {
            throw InvalidConfigValue(key: "layer_types", problem: "lists \(types.count) layers, but num_hidden_layers is \(d.numHiddenLayers)")
        }
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers)
        for (limits, key) in [(expertLimits, CodingKeys.expertLimits), (sharedExpertLimits, .sharedExpertLimits)] {
            if let limits, limits.count != d.numHiddenLayers {
                throw InvalidConfigValue(key: key.stringValue, problem: "lists \(limits.count) limits, but num_hidden_layers is \(d.numHiddenLayers)")
            }
            if let limit = limits?.first(where: { !Float($0).isFinite }) {
                throw InvalidConfigValue(key: key.stringValue, problem: "must hold finite numbers that float32 holds, got \(limit)")
            }
        }
        if types.contains(BailingHybridModel.full) { try latent.check(d) }
        if types.contains(BailingHybridModel.linear) {
            try linearSizes(d).check(hidden: d.hiddenSize)
            guard lowerBound.isFinite, Float(lowerBound).isFinite else {
                throw InvalidConfigValue(key: "kda_lower_bound", problem: "must be a finite number that float32 holds, got \(lowerBound)")
            }
        }
        if mlpTypes.prefix(d.numHiddenLayers).contains("sparse") { try experts.check(hidden: d.hiddenSize) }
    }

    /// `activation` as layer `index`'s routed (or shared) experts apply it:
    /// clipped at the layer's SwiGLU limit unless that is 0 or absent.
    func expertActivation(_ activation: Activation, layer index: Int, shared: Bool) -> Activation {
        guard let limits = shared ? sharedExpertLimits : expertLimits, index < limits.count, limits[index] != 0 else { return activation }
        return .clipped(activation, limit: Float(limits[index]))
    }

    /// Kimi Delta Attention's sizes (its heads num_attention_heads unless `linear_num_heads` is written).
    func linearSizes(_ d: DecoderDimensions) -> KimiDeltaAttentionSizes {
        KimiDeltaAttentionSizes(
            heads: linearHeads ?? d.numAttentionHeads, headsKey: linearHeads == nil ? "num_attention_heads" : "linear_num_heads",
            headDim: linearHeadDim, kernel: convolutionKernel)
    }
}

/// Ling's hybrid models (`bailing_hybrid`; inclusionAI's Ling 3.0 family,
/// transformers' models/bailing_hybrid/): pre-RMSNorm blocks whose token
/// mixer is, by `layer_types` (by default every `layer_group_size`-th
/// layer, 6, full),
///
/// - "full_attention": multi-head latent attention (`LatentAttentionSettings`:
///   q_proj direct (low-rank with `q_lora_rank`), `kv_a_proj_with_mqa`, `kv_a_layernorm`, `kv_b_proj`,
///   rope pairs interleaved on `qk_rope_head_dim` columns, base `rope_theta`
///   6e6, the softmax scale grown by YaRN's `mscale_all_dim`) with each
///   head's output times the sigmoid of its row of `g_proj`;
/// - "linear_attention": Kimi Delta Attention (`GatedDeltaNet` with one
///   decay per key channel): q/k/v_proj through a causal depthwise
///   convolution (`hidden_act`), q and k L2-normalised, a delta rule whose
///   state rows decay by `forget_gate` (−5 · sigmoid(exp(A_log) ·
///   (f_proj x + dt_bias)) with `kda_safe_gate`, else −exp(A_log) ·
///   softplus(…)), β = sigmoid(b_proj x), and the output RMSNorm-ed per
///   head times sigmoid(g_proj x) before o_proj;
///
/// and whose MLP is, by `mlp_layer_types` (by default the first
/// `first_k_dense_replace`, 2, dense), a SwiGLU of `intermediate_size` or
/// DeepSeek-V3's routed experts (sigmoid scores plus
/// `e_score_correction_bias`, the best `topk_group` of `num_expert_group`
/// groups, renormalised by `moe_renormalize`, × `routed_scaling_factor`)
/// beside `num_shared_experts` shared ones, each kind's SwiGLU clipped at
/// the layer's limit when one is set (`Activation.clipped`). The multi-token-prediction
/// layers stored after the model's (`num_nextn_predict_layers`) are not run.
/// The head is never tied (BailingHybridForCausalLM ties nothing, whatever
/// `tie_word_embeddings` says).
///
/// The weights are read as the releases store them — `word_embeddings`,
/// each layer's mixer under `attention.` with o_proj `dense`, the decay's
/// `f_proj`, `A_log` and `dt_bias` beside the projections, the convolution
/// as `q_conv1d` / `k_conv1d` / `v_conv1d`, the router's `expert_bias` —
/// or under the names transformers' conversion mapping gives them.
struct BailingHybridModel: DecoderFamily {
    static let full = AttentionLayerType.full, linear = HybridQwenConfiguration.linear
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    /// The mixers' module, "attention." as released or "self_attn.".
    let module: String
    let config: BailingHybridConfiguration
    let layerTypes: [String]
    let mlpTypes: [String]
    let rotary: RotaryEmbedding
    let scale: Float

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the layer kinds decide which tensors the layers hold.
        // BailingHybridConfig declares no linear_* fields: written ones reach the layers as they are.
        try checkpoint.requireIntegers(["linear_head_dim", "linear_num_heads", "linear_conv_kernel_dim"], reader: "BailingHybridDeltaAttention")
        let section = try ConfigSection.maxPositionsStoredAsModelMaxLength(checkpoint)
        let config = try checkpoint.decodeConfig(BailingHybridConfiguration.self, section: section)
        let d = try checkpoint.decodeConfig(DecoderDimensions.self, section: section)
        let configPath = checkpoint.configURL.path
        let (types, mlpTypes) = try ConfigRules.checks(path: configPath) {
            let types = try config.resolvedLayerTypes(d.numHiddenLayers)
            let mlpTypes = MLPLayerTypes.resolved(config.mlpLayerTypes, layers: d.numHiddenLayers, firstDense: config.firstKDenseReplace)
            try config.check(d, types: types, mlpTypes: mlpTypes)
            return (types, mlpTypes)
        }
        self.config = config
        layerTypes = types
        self.mlpTypes = mlpTypes
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        let released = try Self.storedAsReleased(checkpoint, layers: d.numHiddenLayers)
        let module = released.mixers ? "attention." : "self_attn."
        let parts = try DecoderParts(
            checkpoint, section: section, tiedEmbeddings: false, naming: { Self.naming($0, module: module) }, extraLayers: config.predictionLayers,
            experts: config.experts.naming(isSparse: isSparse), embedding: released.embedding ? "word_embeddings" : "embed_tokens")
        self.parts = parts
        self.module = module
        try config.linearSizes(d).confirm(parts, types: types, module: module)
        let latentLayers = (0..<d.numHiddenLayers).filter { types[$0] == Self.full }
        if let layer = latentLayers.first(where: { !parts.configuredDrops.dropsAttention($0) }) {
            try config.latent.confirmShapes(parts, layer: layer, module: module)
        }
        try parts.confirmLayerKinds(
            mlpTypes, key: config.mlpLayerTypes == nil ? "first_k_dense_replace" : "mlp_layer_types", mlp: true,
            probes: ["dense": ["mlp.down_proj.weight"], "sparse": ["mlp.gate.weight"]])
        try config.experts.confirm(parts, isSparse: isSparse)
        // standardize_rope_params runs before the stored model_max_length is set: the scaled rope
        // types take max_position_embeddings as written, else the class default, as their original length.
        let rope = try checkpoint.decodeConfig(RopeSettings.self, section: ConfigSection(defaults: ["max_position_embeddings": 262_144]))
        let kept = latentLayers.contains { !parts.configuredDrops.dropsAttention($0) }
        // BailingHybridRotaryEmbedding rotates head_dim, which the config class sets to qk_rope_head_dim.
        rotary = try rope.embedding(
            headDim: kept ? config.latent.qkRopeHeadDim : 0, partialRotary: .ignored, defaultTheta: 6_000_000, configPath: configPath)
        scale = try config.latent.scale(rope, configPath: configPath)
    }

    /// Whether the token embedding and the mixers are stored under the
    /// released names (`word_embeddings`, `attention.`) rather than
    /// transformers' (`embed_tokens`, `self_attn.`).
    /// - Throws: `DroptraceError` when both embeddings are stored (transformers renames both to one parameter).
    static func storedAsReleased(_ checkpoint: Checkpoint, layers: Int) throws -> (embedding: Bool, mixers: Bool) {
        let prefixes = ["model.", ""]
        let released = prefixes.contains { checkpoint.hasTensor($0 + "word_embeddings.weight") }
        if released, prefixes.contains(where: { checkpoint.hasTensor($0 + "embed_tokens.weight") }) {
            throw DroptraceError(
                "'word_embeddings.weight' and 'embed_tokens.weight' are both stored, which transformers reads as one parameter; keep one of the two",
                path: checkpoint.weightsPath)
        }
        let mixers = (0..<layers).contains { layer in prefixes.contains { checkpoint.hasTensor("\($0)layers.\(layer).attention.q_proj.weight") } }
        return (released, mixers)
    }

    static func naming(_ prefix: String, module: String) -> LayerNaming {
        LayerNaming(prefix: prefix + "layers.", attention: [module, "input_layernorm."], mlp: ["mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    /// Exports without some blocks spell out the kept layers' kinds.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes, mlpTypes: mlpTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index).\(module)"
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            mixer: {
                let output = try parts.weights.storedModule(p, saved: "dense", renamed: "o_proj")
                guard layerTypes[index] == Self.linear else {
                    return .attention(
                        try config.latent.attention(
                            parts, layer: index, rotary: rotary, scale: scale, perHeadGate: "g_proj", module: module, outputName: output))
                }
                return .gatedDeltaNet(try kimiDeltaAttention(p, output: output))
            },
            feedForward: {
                // The SwiGLU limits clip the experts only, not the dense layers' MLP.
                let activation = try parts.activation(config.hiddenAct), sparse = mlpTypes[index] == "sparse"
                return try config.experts.feedForward(
                    parts, layer: index, sparse: sparse,
                    activation: sparse ? config.expertActivation(activation, layer: index, shared: false) : activation,
                    sharedActivation: config.expertActivation(activation, layer: index, shared: true))
            })
    }

    /// Kimi Delta Attention under `prefix`: q | k | v | g | b | f stacked
    /// into one projection; the decay's parameters beside the projections
    /// (as released) or under `forget_gate.`; the convolution fused
    /// (`conv1d`) or per part (q | k | v, as released); o_proj `output`.
    private func kimiDeltaAttention(_ prefix: String, output: String) throws -> GatedDeltaNet {
        let h = config.linearSizes(parts.dimensions).layerHeads, weights = parts.weights, d = hiddenSize
        let gate = try weights.storedModule(prefix, saved: "", renamed: "forget_gate.", probe: "f_proj.weight")
        let projection = try weights.stackedLinear(
            ["q_proj", "k_proj", "v_proj", "g_proj", "b_proj", gate + "f_proj"].map { prefix + $0 }, in: d,
            outs: [h.keyWidth, h.keyWidth, h.valueWidth, h.valueWidth, h.valueHeads, h.valueHeads * h.decaysPerHead], bias: false)
        return GatedDeltaNet(
            heads: h, projection: projection, convolution: try weights.deltaRuleConvolution(prefix, heads: h),
            logDecayRates: try weights.floats(prefix + gate + "A_log", [h.valueHeads]),
            timeStepBias: try weights.floats(prefix + gate + "dt_bias", [h.valueHeads * h.decaysPerHead]),
            norm: try weights.rmsNorm(prefix + "o_norm", size: h.valueDim, eps: config.rmsNormEps),
            output: try weights.linear(prefix + output, in: h.valueWidth, out: d, bias: false),
            convolutionActivation: try parts.activation(config.hiddenAct),
            decay: config.safeGate ? .boundedSigmoid(lowerBound: Float(config.lowerBound)) : .softplus, outputGateActivation: .sigmoid)
    }
}

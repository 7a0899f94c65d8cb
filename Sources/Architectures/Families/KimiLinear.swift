import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `kimi_linear`, with KimiLinearConfig's defaults.
struct KimiLinearConfiguration: Decodable {
    /// The latent attention's defaults: q_proj direct unless `q_lora_rank`.
    static let latentDefaults = LatentAttentionSettings(
        qLoraRank: nil, kvLoraRank: 512, qkNopeHeadDim: 128, qkRopeHeadDim: 64, vHeadDim: 128, ropeInterleave: false,
        attentionBias: false)
    /// The routed layers: DeepSeek-V3's router under the names
    /// KimiLinearConfig stores (`ConfigClass.readingStoredKeys`), experts
    /// released as `w1` / `w3` / `w2`.
    static let experts = DeepSeekExperts.ConfigClass(
        nRoutedExperts: 256, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 1024, routedScalingFactor: 2.446,
        nGroup: 1, topkGroup: 1, expertNames: (gate: "w1", up: "w3", down: "w2"), name: "KimiLinearConfig"
    ).readingStoredKeys

    var rmsNormEps: Double
    var hiddenAct: String
    var latent: LatentAttentionSettings
    var experts: DeepSeekExperts
    /// Each layer's mixer; nil: `linear_attn_config`'s 1-based
    /// `full_attn_layers` / `kda_layers`, else every fourth layer from
    /// layer 4 full.
    var layerTypes: [String]?
    var linearAttention: LinearAttentionConfig?
    var mlpLayerTypes: [String]?
    /// Read from the extra key by KimiLinearConfig (1).
    var firstKDenseReplace: Int
    var linearHeads: Int
    var linearHeadDim: Int
    var convolutionKernel: Int

    /// The released checkpoints' `linear_attn_config`, which KimiLinearConfig
    /// reads over its own `linear_*` fields.
    struct LinearAttentionConfig: Decodable {
        var fullLayers: [Int]?
        var linearLayers: [Int]?
        var headDim: Int?
        var heads: Int?
        var kernel: Int?

        enum CodingKeys: String, CodingKey {
            case fullLayers = "full_attn_layers"
            case linearLayers = "kda_layers"
            case headDim = "head_dim"
            case heads = "num_heads"
            case kernel = "short_conv_kernel_size"
        }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            // dict.get keeps a written null, which sizes no projection (TypeError).
            func size(_ key: CodingKeys) throws -> Int? {
                guard c.contains(key) else { return nil }
                guard let value = try c.decodeIfPresent(Int.self, forKey: key) else {
                    throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "is null, which KimiLinearConfig cannot size the linear attention by")
                }
                return value
            }
            fullLayers = try c.decodeIfPresent([Int].self, forKey: .fullLayers)
            linearLayers = try c.decodeIfPresent([Int].self, forKey: .linearLayers)
            headDim = try size(.headDim)
            heads = try size(.heads)
            kernel = try size(.kernel)
        }
    }

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case layerTypes = "layer_types"
        case linearAttention = "linear_attn_config"
        case mlpLayerTypes = "mlp_layer_types"
        case firstKDenseReplace = "first_k_dense_replace"
        case linearHeads = "linear_num_heads"
        case linearHeadDim = "linear_head_dim"
        case convolutionKernel = "linear_conv_kernel_dim"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        latent = try LatentAttentionSettings(from: decoder, defaults: Self.latentDefaults)
        experts = try DeepSeekExperts(from: decoder, configClass: Self.experts)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        linearAttention = try c.decodeIfPresent(LinearAttentionConfig.self, forKey: .linearAttention)
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        // dict.get's default: a written null reaches the comparison (TypeError).
        if mlpLayerTypes == nil, c.contains(.firstKDenseReplace), try c.decodeNil(forKey: .firstKDenseReplace) {
            throw DecodingError.dataCorruptedError(
                forKey: .firstKDenseReplace, in: c, debugDescription: "is null, which KimiLinearConfig cannot derive mlp_layer_types from")
        }
        firstKDenseReplace = try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? 1
        linearHeads = try linearAttention?.heads ?? c.decodeIfPresent(Int.self, forKey: .linearHeads) ?? 32
        linearHeadDim = try linearAttention?.headDim ?? c.decodeIfPresent(Int.self, forKey: .linearHeadDim) ?? 128
        convolutionKernel = try linearAttention?.kernel ?? c.decodeIfPresent(Int.self, forKey: .convolutionKernel) ?? 4
        let (types, mlpTypes) = (layerTypes, mlpLayerTypes)
        try ConfigRules.decodingChecks {
            if let bad = types?.first(where: { $0 != KimiLinearModel.full && $0 != KimiLinearModel.linear }) {
                throw InvalidConfigValue(
                    key: "layer_types", problem: "must list \"full_attention\" or \"linear_attention\" per layer, got \"\(bad.forErrorMessage)\"")
            }
            try MLPLayerTypes.checkEntries(mlpTypes)
        }
    }

    /// Each layer's mixer for `layers` layers, as KimiLinearConfig resolves it.
    /// - Throws: `InvalidConfigValue` for a `linear_attn_config` layer
    ///   number Python cannot index the list with, or that leaves a layer
    ///   without a kind.
    func resolvedLayerTypes(_ layers: Int) throws -> [String] {
        if let layerTypes { return layerTypes }
        guard let lists = linearAttention, let full = lists.fullLayers, let linear = lists.linearLayers else {
            return (0..<layers).map { $0 > 0 && $0 % 4 == 0 ? KimiLinearModel.full : KimiLinearModel.linear }
        }
        var types = [String?](repeating: nil, count: layers)
        for (numbers, type, key) in [(full, KimiLinearModel.full, "full_attn_layers"), (linear, KimiLinearModel.linear, "kda_layers")] {
            for number in numbers {
                // 1-based; Python's list takes an index from -count (number 1 - count) to count - 1.
                let (index, overflow) = number.subtractingReportingOverflow(1)
                guard !overflow, (-layers..<layers).contains(index) else {
                    throw InvalidConfigValue(
                        key: "linear_attn_config.\(key)", problem: "names layer \(number), which KimiLinearConfig cannot place among \(layers) layers")
                }
                types[index < 0 ? index + layers : index] = type
            }
        }
        if let layer = types.firstIndex(of: nil) {
            throw InvalidConfigValue(
                key: "linear_attn_config", problem: "gives layer \(layer + 1) (1-based) neither full_attn_layers nor kda_layers")
        }
        return types.map { $0! }
    }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions, types: [String]) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        if types.count != d.numHiddenLayers {
            throw InvalidConfigValue(key: "layer_types", problem: "lists \(types.count) layers, but num_hidden_layers is \(d.numHiddenLayers)")
        }
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers)
        if types.contains(KimiLinearModel.full) { try latent.check(d) }
        if types.contains(KimiLinearModel.linear) {
            try linearSizes.check(hidden: d.hiddenSize)
        }
    }

    var linearSizes: KimiDeltaAttentionSizes {
        KimiDeltaAttentionSizes(heads: linearHeads, headDim: linearHeadDim, kernel: convolutionKernel)
    }
}

/// Kimi Linear (`kimi_linear`; Moonshot AI's, transformers'
/// models/kimi_linear/): pre-RMSNorm blocks whose token mixer is, by
/// `layer_types` (else `linear_attn_config`'s 1-based `full_attn_layers`
/// and `kda_layers`, else every fourth layer from layer 4 full),
///
/// - "full_attention": multi-head latent attention without positions
///   (`LatentAttentionSettings`; its rope columns are not rotated), softmax
///   scale (qk_nope_head_dim + qk_rope_head_dim)^-1/2;
/// - "linear_attention": Kimi Delta Attention (`GatedDeltaNet` with one
///   decay per key channel): q/k/v_proj through a causal depthwise
///   convolution (`hidden_act`), q and k L2-normalised, the state rows
///   decaying by −exp(A_log) · softplus(f_b_proj(f_a_proj x) + dt_bias),
///   β = sigmoid(b_proj x), and the output RMSNorm-ed per head times
///   sigmoid(g_b_proj(g_a_proj x)) before o_proj (each low-rank pair read
///   as one projection, their product);
///
/// and whose MLP is, by `mlp_layer_types` (else the first
/// `first_k_dense_replace`, 1, dense), a SwiGLU of `intermediate_size` or
/// DeepSeek-V3's routed experts (sigmoid scores plus
/// `e_score_correction_bias`, the best `topk_group` of `num_expert_group`
/// groups, renormalised by `moe_renormalize`, × `routed_scaling_factor`)
/// beside `num_shared_experts` shared ones. Weights are read as released —
/// the decay's parameters beside the projections, the convolution per part,
/// the MLP under `block_sparse_moe.` with routed experts' `w1` / `w3` /
/// `w2` — or under transformers' names. The head is never tied
/// (KimiLinearForCausalLM ties nothing, whatever `tie_word_embeddings` says).
struct KimiLinearModel: DecoderFamily {
    static let full = AttentionLayerType.full, linear = HybridQwenConfiguration.linear
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: KimiLinearConfiguration
    let layerTypes: [String]
    let mlpTypes: [String]
    let scale: Float

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the layer kinds decide which tensors the layers hold.
        // linear_attn_config is read with dict.get: its sizes reach the layers as they are.
        try checkpoint.requireIntegers(
            ["linear_attn_config.head_dim", "linear_attn_config.num_heads", "linear_attn_config.short_conv_kernel_size"],
            reader: "KimiLinearDeltaAttention")
        let section = try ConfigSection.maxPositionsStoredAsModelMaxLength(checkpoint)
        let config = try checkpoint.decodeConfig(KimiLinearConfiguration.self, section: section)
        let d = try checkpoint.decodeConfig(DecoderDimensions.self, section: section)
        let (types, mlpTypes) = try ConfigRules.checks(path: checkpoint.configURL.path) {
            let types = try config.resolvedLayerTypes(d.numHiddenLayers)
            let mlpTypes = MLPLayerTypes.resolved(config.mlpLayerTypes, layers: d.numHiddenLayers, firstDense: config.firstKDenseReplace)
            try config.check(d, types: types)
            if mlpTypes.prefix(d.numHiddenLayers).contains("sparse") { try config.experts.check(hidden: d.hiddenSize) }
            return (types, mlpTypes)
        }
        self.config = config
        layerTypes = types
        self.mlpTypes = mlpTypes
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        let parts = try DecoderParts(
            checkpoint, section: section, tiedEmbeddings: false, naming: Self.naming,
            experts: config.experts.naming(isSparse: isSparse, modules: ["block_sparse_moe.", "mlp."]))
        self.parts = parts
        try config.linearSizes.confirm(parts, types: types, module: "self_attn.")
        try parts.confirmLayerKinds(
            mlpTypes, key: config.mlpLayerTypes == nil ? "first_k_dense_replace" : "mlp_layer_types", mlp: true,
            probes: ["dense": ["block_sparse_moe.down_proj.weight", "mlp.down_proj.weight"], "sparse": ["block_sparse_moe.gate.weight", "mlp.gate.weight"]])
        // KimiLinearConfig validates rope_parameters, though its attention takes no positions.
        _ = try parts.ropeSettings()
        if let layer = types.indices.first(where: { types[$0] == Self.full && !parts.configuredDrops.dropsAttention($0) }) {
            try config.latent.confirmShapes(parts, layer: layer)
        }
        try config.experts.confirm(parts, isSparse: isSparse, module: { try Self.mlpModule(parts, layer: $0, sparse: true) })
        scale = Float(pow(Double(config.latent.queryKeyDim), -0.5))
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."],
            mlp: ["mlp.", "block_sparse_moe.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    /// Exports without some blocks spell out the kept layers' kinds.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes, mlpTypes: mlpTypes)
    }

    /// A layer's MLP module: `block_sparse_moe.` as released (and as
    /// `save_pretrained` writes every layer's, dense ones too), or `mlp.`.
    static func mlpModule(_ parts: DecoderParts, layer: Int, sparse: Bool) throws -> String {
        let probe = sparse ? ".gate.weight" : ".down_proj.weight"
        return try parts.weights.storedModule("layers.\(layer).", saved: "block_sparse_moe", renamed: "mlp", probe: probe) + "."
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let sparse = mlpTypes[index] == "sparse"
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            mixer: {
                guard layerTypes[index] == Self.linear else {
                    return .attention(try config.latent.attention(parts, layer: index, rotary: nil, scale: scale))
                }
                return .gatedDeltaNet(try kimiDeltaAttention("layers.\(index).self_attn."))
            },
            feedForward: {
                try config.experts.feedForward(
                    parts, layer: index, sparse: sparse, activation: try parts.activation(config.hiddenAct),
                    module: try Self.mlpModule(parts, layer: index, sparse: sparse))
            })
    }

    /// Kimi Delta Attention under `prefix`, the decay's parameters beside
    /// the projections (as released) or under `forget_gate.`.
    private func kimiDeltaAttention(_ prefix: String) throws -> GatedDeltaNet {
        let h = config.linearSizes.layerHeads
        let gate = try parts.weights.storedModule(prefix, saved: "", renamed: "forget_gate.", probe: "f_a_proj.weight")
        return try parts.kimiDeltaAttention(
            prefix, heads: h, gate: gate, logDecayShape: [1, 1, h.valueHeads, 1], normEps: config.rmsNormEps,
            activationName: config.hiddenAct, decay: .softplus)
    }
}

extension DecoderParts {
    /// Kimi Delta Attention under `prefix` (Kimi Linear's, GLM-5-Next's):
    /// q | k | v | g | b | f as one projection, the output gate's and the
    /// decay's low-rank pairs (`g_a_proj`/`g_b_proj`, `gate` + `f_a_proj`/
    /// `f_b_proj`) as their products; `A_log` stored in `logDecayShape`,
    /// `dt_bias` per decay; `o_norm` an RMSNorm of eps `normEps` gated by the sigmoid.
    func kimiDeltaAttention(
        _ prefix: String, heads h: GatedDeltaNetHeads, gate: String, logDecayShape: [Int], normEps: Double, activationName: String,
        decay: DeltaRuleDecay
    ) throws -> GatedDeltaNet {
        let d = dimensions.hiddenSize
        func lowRank(_ down: String, _ up: String) throws -> [Float] {
            try weights.lowRankProduct(down: prefix + down, up: prefix + up, in: d, rank: h.keyDim, out: h.valueWidth)
        }
        let rows = [
            try weights.floats(prefix + "q_proj.weight", [h.keyWidth, d]), try weights.floats(prefix + "k_proj.weight", [h.keyWidth, d]),
            try weights.floats(prefix + "v_proj.weight", [h.valueWidth, d]), try lowRank("g_a_proj", "g_b_proj"),
            try weights.floats(prefix + "b_proj.weight", [h.valueHeads, d]), try lowRank(gate + "f_a_proj", gate + "f_b_proj"),
        ]
        return GatedDeltaNet(
            heads: h, projection: Linear(weight: rows.flatMap { $0 }, bias: nil, inFeatures: d, outFeatures: h.projectionWidth),
            convolution: try weights.deltaRuleConvolution(prefix, heads: h),
            logDecayRates: try weights.floats(prefix + gate + "A_log", logDecayShape),
            timeStepBias: try weights.floats(prefix + gate + "dt_bias", [h.valueHeads * h.decaysPerHead]),
            norm: try weights.rmsNorm(prefix + "o_norm", size: h.valueDim, eps: normEps),
            output: try weights.linear(prefix + "o_proj", in: h.valueWidth, out: d, bias: false),
            convolutionActivation: try activation(activationName), decay: decay, outputGateActivation: .sigmoid)
    }
}

extension Weights {
    /// The weight [out, in] of the projection `up` ∘ `down` (`down` [rank,
    /// in], `up` [out, rank]): a low-rank pair read as one projection, the
    /// same map up to rounding.
    func lowRankProduct(down: String, up: String, in inFeatures: Int, rank: Int, out: Int) throws -> [Float] {
        let downRows = try floats(down + ".weight", [rank, inFeatures])
        let upLinear = try linear(up, in: rank, out: out, bias: false)
        // up applied to the columns of down: [in, rank] → [in, out], the product's transpose.
        let columns = Matrix(uninitialized: inFeatures, rank) { target in
            for i in 0..<rank { for j in 0..<inFeatures { target[j * rank + i] = downRows[i * inFeatures + j] } }
        }
        let product = upLinear(columns)
        return [Float](unsafeUninitializedCapacity: out * inFeatures) { buffer, count in
            for o in 0..<out { for j in 0..<inFeatures { buffer[o * inFeatures + j] = product.data[j * out + o] } }
            count = out * inFeatures
        }
    }
}

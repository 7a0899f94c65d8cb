import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// `text_config` of `muse_glimmer` and `muse_spark` (MuseGlimmerTextConfig,
/// MuseSparkTextConfig; transformers' `models/muse_glimmer/` and
/// `models/muse_spark/configuration_*.py`). The classes' defaults of the
/// keys they share differ: `MuseModel.textDefaults` gives them to the section.
struct MuseConfiguration: Decodable {
    var rmsNormEps: Double
    /// The branches' output norms' epsilon (1e-8).
    var postNormEps: Double
    var attentionBias: Bool
    var slidingWindow: Int?
    var layerTypes: [String]?
    /// Per layer: 0 is no rotary (NoPE); any other value rotates by the
    /// global `rope_parameters`, as MuseGlimmerTextModel reads it (a truth value).
    var layerRopeTheta: [Double]?
    /// The queries' factor after their weightless norm.
    var qkScaleFactor: Double
    /// The logits' factor before the tanh cap (and Muse Spark's router logits').
    var outputMultiplier: Double
    var finalLogitSoftcapping: Double
    /// The MLP's activation: Muse Glimmer's `hidden_activation`, Muse Spark's `hidden_act` (`MuseModel.activationKey`).
    var hiddenActivation: String?
    var hiddenAct: String?
    var mlpLayerTypes: [String]?
    var numLocalExperts: Int
    var numExpertsPerTok: Int
    var moeIntermediateSize: Int
    var moeHiddenSize: Int
    var routedScalingFactor: Double
    var residualGateTemperature: Double

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps", postNormEps = "post_norm_eps", attentionBias = "attention_bias"
        case slidingWindow = "sliding_window", layerTypes = "layer_types", layerRopeTheta = "layer_rope_theta"
        case qkScaleFactor = "qk_scale_factor", outputMultiplier = "output_multiplier", finalLogitSoftcapping = "final_logit_softcapping"
        case hiddenActivation = "hidden_activation", hiddenAct = "hidden_act", mlpLayerTypes = "mlp_layer_types"
        case numLocalExperts = "num_local_experts", numExpertsPerTok = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size", moeHiddenSize = "moe_hidden_size"
        case routedScalingFactor = "routed_scaling_factor", residualGateTemperature = "residual_gate_temperature"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        postNormEps = try c.decode(Double.self, forKey: .postNormEps)
        attentionBias = try c.decode(Bool.self, forKey: .attentionBias)
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        layerRopeTheta = try c.decodeIfPresent([Double].self, forKey: .layerRopeTheta)
        qkScaleFactor = try c.decode(Double.self, forKey: .qkScaleFactor)
        outputMultiplier = try c.decode(Double.self, forKey: .outputMultiplier)
        finalLogitSoftcapping = try c.decode(Double.self, forKey: .finalLogitSoftcapping)
        hiddenActivation = try c.decodeIfPresent(String.self, forKey: .hiddenActivation)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        numLocalExperts = try c.decode(Int.self, forKey: .numLocalExperts)
        numExpertsPerTok = try c.decode(Int.self, forKey: .numExpertsPerTok)
        moeIntermediateSize = try c.decode(Int.self, forKey: .moeIntermediateSize)
        moeHiddenSize = try c.decode(Int.self, forKey: .moeHiddenSize)
        routedScalingFactor = try c.decode(Double.self, forKey: .routedScalingFactor)
        residualGateTemperature = try c.decode(Double.self, forKey: .residualGateTemperature)
        let (factors, temperature) = (
            [("qk_scale_factor", qkScaleFactor), ("output_multiplier", outputMultiplier), ("final_logit_softcapping", finalLogitSoftcapping),
             ("routed_scaling_factor", routedScalingFactor)], residualGateTemperature)
        try ConfigRules.decodingChecks {
            for (key, value) in factors where !(value.isFinite && Float(value).isFinite) {
                throw InvalidConfigValue(key: key, problem: "must be a finite number that float32 holds, got \(value)")
            }
            // MuseSparkResidualGate divides the gate by it.
            guard temperature != 0, temperature.isFinite, Float(1 / temperature).isFinite else {
                throw InvalidConfigValue(key: "residual_gate_temperature", problem: "must be a finite non-zero number, got \(temperature)")
            }
        }
    }

    /// Each layer's MLP ("dense" or "sparse"): `mlp_layer_types`, else all sparse (MuseSparkTextConfig's rule).
    func mlpTypes(layers: Int) -> [String] { MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: 0) }

    /// Whether layer `index` of `layers` rotates: `layer_rope_theta`'s entry
    /// is not 0, by default every layer but every 4th counted back from the last.
    func rotates(_ index: Int, layers: Int) -> Bool {
        layerRopeTheta.map { $0[index] != 0 } ?? !MuseModel.isEveryFourthFromLast(index, layers: layers)
    }
}

/// Muse Glimmer (`muse_glimmer`, MuseGlimmerForConditionalGeneration) and
/// Muse Spark (`muse_spark`, MuseSparkForConditionalGeneration), Meta's
/// multimodal models; the language model under `text_config`, weights
/// under `model.language_model.`, the head `lm_head` (tied only by a
/// top-level `tie_word_embeddings`), image and video (and Muse Spark's
/// audio) token ids embedded as token 0. Sources: transformers'
/// `models/muse_glimmer/modeling_muse_glimmer.py`, `models/muse_spark/modeling_muse_spark.py`.
///
/// The embedding is normalised without a weight (RMS, `rms_norm_eps`).
/// Each block, with N_c a (1 + w) RMSNorm and N a weightless one:
///
///     Glimmer: H = X + N_c(Attn(N_c X)),        Y = H + N_c(MLP(N_c H))
///     Spark:   H = g_a(X, N(Attn(N_c X))),      Y = g_f(H, N(s ⊙ MLP(N_c H)))
///
/// the output norms at `post_norm_eps`, s = 1 + `post_feedforward_layernorm`'s
/// weight (MuseSparkTextInputScaledRMSNorm scales, then normalises; s is
/// folded into the MLP's last projection), and g the residual gate
/// (`MuseSparkResidualGate`): with w = gate / `residual_gate_temperature`,
/// g(x, o) = √max(σ(−w)(1 + σ(w)), 10⁻³) ⊙ x + σ(w) ⊙ o.
///
/// The attention: q/k/v/o_proj, each query and key head normalised without
/// a weight (`qk_norm`), the queries times `qk_scale_factor`, rotary on the
/// layers whose `layer_rope_theta` is not 0 (the global `rope_parameters`
/// whatever the entry), sliding windows on the `layer_types` sliding layers
/// (by default all but every 4th counted back from the last, which attend
/// fully without rotary); the output gated by σ(`gate_proj` of the
/// attention's input) before o_proj, in Muse Spark after each head is
/// normalised without a weight (`o_norm`).
///
/// The MLP: a SwiGLU (`hidden_activation` / `hidden_act`); in Muse Spark on
/// the `mlp_layer_types` "sparse" layers (by default all) a mixture: the
/// router `mlp.gate` (logits times `output_multiplier`, sigmoid scores, the
/// top `num_experts_per_tok` by score plus `e_score_correction_bias`,
/// weights normalised and times `routed_scaling_factor`) reads the token;
/// the experts (fused `gate_up_proj`, `down_proj`) work at
/// `moe_hidden_size`, between `pre_expert_proj` (then the (1 + w)
/// `pre_expert_norm`) and `post_expert_proj`, each expert's output
/// normalised by the input-scaled `post_expert_norm` before its weight.
///
/// The head: the final RMSNorm (plain weight), the logits times
/// `output_multiplier`, then capped, c · tanh(l / c), c = `final_logit_softcapping`.
/// Dropping a branch leaves the stream as it was (the gate included).
struct MuseModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: MuseConfiguration
    let isSpark: Bool
    let layerTypes: [String]
    let mlpTypes: [String]
    let rotary: RotaryEmbedding
    /// `rope_parameters`' base, the class's default where absent.
    let ropeTheta: Double

    /// The classes' defaults of the keys `MuseConfiguration` reads, by model type.
    static func textDefaults(spark: Bool) -> [String: ConfigDefault] {
        [
            "rms_norm_eps": 1e-5, "post_norm_eps": 1e-8, "attention_bias": false, "sliding_window": 2048,
            "final_logit_softcapping": 20.0, activationKey(spark: spark): "silu",
            "qk_scale_factor": spark ? 5.4730064863875 : 3.87, "output_multiplier": spark ? 0.1767766952966369 : 0.19611613513818404,
            "num_local_experts": 256, "num_experts_per_tok": 8, "moe_intermediate_size": 4096, "moe_hidden_size": 4096,
            "routed_scaling_factor": 1.0, "residual_gate_temperature": 0.3,
        ]
    }

    /// The key of the MLP's activation in each class.
    static func activationKey(spark: Bool) -> String { spark ? "hidden_act" : "hidden_activation" }

    /// Whether layer `index` of `layers` is one of every 4th counted back from the last (the classes' full, NoPE layers).
    static func isEveryFourthFromLast(_ index: Int, layers: Int) -> Bool { (layers - 1 - index) % 4 == 0 }

    init(_ checkpoint: Checkpoint) throws {
        let spark = checkpoint.modelType == "muse_spark"
        isSpark = spark
        let placement = try TextModelPlacement.topLevelOrWrapped(checkpoint, defaults: Self.textDefaults(spark: spark))
        let config = try checkpoint.decodeConfig(MuseConfiguration.self, section: placement.section)
        let dimensions = try checkpoint.decodeConfig(DecoderDimensions.self, section: placement.section)
        let layers = dimensions.numHiddenLayers
        let section = placement.section, path = checkpoint.configURL.path
        try ConfigRules.checks(path: path) {
            // validate_architecture, whatever head_dim says.
            if dimensions.numAttentionHeads >= 1, dimensions.hiddenSize % dimensions.numAttentionHeads != 0 {
                throw InvalidConfigValue(
                    key: section.qualified("num_attention_heads"),
                    problem: "(\(dimensions.numAttentionHeads)) does not divide hidden_size (\(dimensions.hiddenSize)), which the config class refuses")
            }
            if let thetas = config.layerRopeTheta, thetas.count < layers {
                throw InvalidConfigValue(
                    key: section.qualified("layer_rope_theta"), problem: "lists \(thetas.count) layers, but num_hidden_layers is \(layers)")
            }
            guard spark else { return }
            try MLPLayerTypes.checkEntries(config.mlpLayerTypes)
            try MLPLayerTypes.checkCount(config.mlpLayerTypes, layers: layers)
            if config.mlpTypes(layers: layers).contains("sparse") {
                try ConfigRules.count(config.numLocalExperts, section.qualified("num_local_experts"))
                try MixtureOfExperts.checkExpertsPerToken(
                    config.numExpertsPerTok, of: config.numLocalExperts, expertsKey: section.qualified("num_local_experts"),
                    key: section.qualified("num_experts_per_tok"))
                let (experts, inner, latent) = (
                    (config.numLocalExperts, section.qualified("num_local_experts")), (config.moeIntermediateSize, section.qualified("moe_intermediate_size")),
                    (config.moeHiddenSize, section.qualified("moe_hidden_size")))
                try ConfigRules.count(inner.0, inner.1)
                try ConfigRules.count(latent.0, latent.1)
                // Each layer's gate_up_proj and pre_expert_proj, sized before they are read.
                try ConfigRules.product([experts, (2, "gate and up"), inner, latent])
                try ConfigRules.product([latent, (dimensions.hiddenSize, section.qualified("hidden_size"))])
            }
        }
        let mlpTypes = spark ? config.mlpTypes(layers: layers) : Array(repeating: "dense", count: layers)
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        parts = try DecoderParts(
            checkpoint, placement: placement, naming: { Self.naming($0, spark: spark) },
            experts: spark ? ExpertNaming(
                parts: ["mlp.experts."], projections: ["gate_up_proj", "down_proj"], count: config.numLocalExperts,
                countKey: section.qualified("num_local_experts"), isSparse: isSparse) : nil)
        self.config = config
        self.mlpTypes = mlpTypes
        let rope = try parts.ropeSettings(), defaultTheta: Double = spark ? 500_000 : 10_000
        ropeTheta = rope.thetaIsExplicit ? rope.theta : defaultTheta
        rotary = try parts.rotary(defaultTheta: defaultTheta, settings: rope)
        try parts.requireWindow(config.slidingWindow, builtBy: spark ? "MuseSparkTextModel" : "MuseGlimmerTextModel")
        layerTypes = try parts.layerTypes(config.layerTypes, slidingWindow: config.slidingWindow) {
            Self.isEveryFourthFromLast($0, layers: layers) ? AttentionLayerType.full : AttentionLayerType.sliding
        }
        if spark {
            try parts.confirmLayerKinds(
                mlpTypes, key: section.qualified(MLPLayerTypes.key), mlp: true,
                probes: ["dense": ["mlp.gate_proj.weight"], "sparse": ["mlp.gate.weight"]])
            try Self.confirmExpertShapes(parts, config: config, isSparse: isSparse)
        }
    }

    /// Checks the first kept routed layer's latent projection and experts against the sizes, before anything is read.
    private static func confirmExpertShapes(_ parts: DecoderParts, config: MuseConfiguration, isSparse: (Int) -> Bool) throws {
        let d = parts.dimensions.hiddenSize, key = parts.section.qualified
        guard let layer = (0..<parts.dimensions.numHiddenLayers).first(where: { isSparse($0) && !parts.configuredDrops.dropsMLP($0) })
        else { return }
        let p = "layers.\(layer).mlp."
        try parts.weights.confirmShape(
            p + "pre_expert_proj.weight", [config.moeHiddenSize, d], keys: "\(key("moe_hidden_size")), \(key("hidden_size"))",
            configPath: parts.configPath)
        try parts.weights.confirmShape(
            p + "experts.gate_up_proj", [config.numLocalExperts, 2 * config.moeIntermediateSize, config.moeHiddenSize],
            keys: "\(key("num_local_experts")), 2 × \(key("moe_intermediate_size")), \(key("moe_hidden_size"))", configPath: parts.configPath)
    }

    static func naming(_ prefix: String, spark: Bool) -> LayerNaming {
        var naming = SandwichBlock.naming(prefix)
        if spark {
            naming.attention.append("post_attention_residual_gate.")
            naming.mlp.append("post_feedforward_residual_gate.")
        }
        return naming
    }

    /// Exports without some blocks spell out the kept layers' attention
    /// types, rotary flags and (Muse Spark) MLP types, so renumbering
    /// cannot move a window, NoPE or the experts to another layer.
    var layerNaming: LayerNaming {
        var naming = isSpark ? parts.naming(spellingOut: layerTypes, mlpTypes: mlpTypes) : parts.naming(spellingOut: layerTypes)
        if config.layerRopeTheta == nil {
            // The class's rule: the global base where the layer rotates.
            naming.perLayerNumberLists["layer_rope_theta"] = (0..<layerCount).map { config.rotates($0, layers: layerCount) ? ropeTheta : 0 }
        }
        return naming
    }

    func embed(_ batch: TokenBatch) throws -> Matrix {
        Normalization.weightlessRMS(size: hiddenSize, eps: Float(config.rmsNormEps))(try parts.embed(batch))
    }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps),
            logitSoftcap: Float(config.finalLogitSoftcapping), logitScale: Float(config.outputMultiplier))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights, d = hiddenSize, p = "layers.\(index)."
        func centered(_ name: String, eps: Double) throws -> Normalization { try weights.offsetRMSNorm(p + name, size: d, eps: eps) }
        func gate(_ name: String) throws -> ResidualJoin? { isSpark ? .gated(try residualGate(p + name + ".gate")) : nil }
        let postNorm = { (name: String) throws -> Normalization in
            isSpark ? Normalization.weightlessRMS(size: d, eps: Float(config.postNormEps)) : try centered(name, eps: config.postNormEps)
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try centered("input_layernorm", eps: config.rmsNormEps), attention: try attention(layer: index),
                outputNorm: try postNorm("post_attention_layernorm"), join: try gate("post_attention_residual_gate")),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try centered("pre_feedforward_layernorm", eps: config.rmsNormEps), feedForward: try feedForward(layer: index),
                outputNorm: try postNorm("post_feedforward_layernorm"), join: try gate("post_feedforward_residual_gate")),
            residual: .sequential)
    }

    /// MuseSparkResidualGate of gate `name` [hidden]: β = σ(w), α =
    /// √max(σ(−w)(1 + β), 10⁻³), w = gate / temperature, each step in float32.
    func residualGate(_ name: String) throws -> ResidualGate {
        let temperature = Float(config.residualGateTemperature)
        let w = try parts.weights.floats(name, [hiddenSize]).map { $0 / temperature }
        let beta = w.map { 1 / (1 + exp(-$0)) }
        let alpha = zip(w, beta).map { w, beta in max(1 / (1 + exp(w)) * (1 + beta), 1e-3).squareRoot() }
        return ResidualGate(branchScale: beta, residualScale: alpha)
    }

    /// Layer `index`'s attention (see the type's description).
    func attention(layer index: Int) throws -> SelfAttention {
        let layout = parts.attentionLayout, headDim = layout.headDim, p = "layers.\(index).self_attn."
        let headNorm = Normalization.weightlessRMS(size: headDim, eps: Float(config.rmsNormEps))
        var attention = try parts.attention(
            p, bias: config.attentionBias, rotary: config.rotates(index, layers: layerCount) ? rotary : nil,
            scale: Float(config.qkScaleFactor / Double(headDim).squareRoot()),
            slidingWindow: layerTypes[index] == AttentionLayerType.sliding ? config.slidingWindow : nil,
            queryKeyNorm: .perHead(query: headNorm, key: headNorm),
            outputGate: try parts.weights.linear(p + "gate_proj", in: hiddenSize, out: layout.queryWidth, bias: false))
        if isSpark { attention.headOutputNorm = headNorm }
        return attention
    }

    /// Layer `index`'s MLP: a SwiGLU, or Muse Spark's mixture; in Muse Spark
    /// its last projection's rows carry `post_feedforward_layernorm`'s (1 + w).
    func feedForward(layer index: Int) throws -> FeedForward {
        let weights = parts.weights, d = hiddenSize, p = "layers.\(index).mlp."
        let key = Self.activationKey(spark: isSpark)
        let activation = try parts.activation((isSpark ? config.hiddenAct : config.hiddenActivation) ?? "silu", key: parts.section.qualified(key))
        func dense() throws -> FeedForward { try weights.gatedMLP(p, hidden: d, inner: parts.dimensions.intermediateSize, activation: activation) }
        guard isSpark else { return try dense() }
        let outputScale = try inputScale("layers.\(index).post_feedforward_layernorm", size: d)
        guard mlpTypes[index] == "sparse" else { return try Self.scalingOutput(dense(), by: outputScale) }
        let (latent, experts) = (config.moeHiddenSize, config.numLocalExperts)
        let expertScale = try inputScale(p + "experts.post_expert_norm", size: latent)
        let routed = try weights.fusedGatedExperts(
            gateUp: p + "experts.gate_up_proj", down: p + "experts.down_proj", count: experts, hidden: latent,
            inner: config.moeIntermediateSize, activation: activation
        ).map { expert -> FeedForward in
            .parallel([FeedForwardPart(
                inputNorm: nil, feedForward: try Self.scalingOutput(expert, by: expertScale),
                outputNorm: .weightlessRMS(size: latent, eps: Float(config.postNormEps)))])
        }
        let multiplier = Float(config.outputMultiplier)
        return .mixture(MixtureOfExperts(
            router: try weights.linear(p + "gate", in: d, out: experts, bias: false).scalingRows(by: [Float](repeating: multiplier, count: experts)),
            experts: routed, expertsPerToken: config.numExpertsPerTok,
            rule: .groupLimited(GroupLimitedTopK(
                scoring: .sigmoid, groupScore: .best, groups: 1, groupsPerToken: 1,
                selectionBias: try weights.floats(p + "gate.e_score_correction_bias", [experts]), normalizesWeights: true,
                denominatorEpsilon: 1e-15, scalingFactor: Float(config.routedScalingFactor))),
            latent: .init(
                down: try weights.linear(p + "pre_expert_proj", in: d, out: latent, bias: false),
                downNorm: try weights.offsetRMSNorm(p + "pre_expert_norm", size: latent, eps: config.rmsNormEps),
                up: try weights.linear(p + "post_expert_proj", in: latent, out: d, bias: false).scalingRows(by: outputScale))))
    }

    /// A SwiGLU whose down projection's rows are times `scale`.
    static func scalingOutput(_ mlp: FeedForward, by scale: [Float]) throws -> FeedForward {
        guard case .gated(let gateUp, let down, let activation) = mlp else { preconditionFailure("a SwiGLU is gated") }
        return .gated(gateUp: gateUp, down: down.scalingRows(by: scale), activation: activation)
    }

    /// 1 + the weight of MuseSparkTextInputScaledRMSNorm `name`, which scales its input before normalising it.
    func inputScale(_ name: String, size: Int) throws -> [Float] {
        try parts.weights.floats(name + ".weight", [size]).map { 1 + $0 }
    }
}

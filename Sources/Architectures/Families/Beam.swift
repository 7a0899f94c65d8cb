import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `beam`, with BeamConfig's defaults (transformers'
/// `models/beam/configuration_beam.py`).
struct BeamConfiguration: Decodable {
    /// BeamConfig's `rope_parameters` when config.json has none: the sliding
    /// layers rotate at `default_theta` (1e4), the full ones take no positions.
    static let defaultRope: [String: Any] = [
        AttentionLayerType.sliding: ["rope_type": "default", "rope_theta": 10_000.0], AttentionLayerType.full: NSNull(),
    ]

    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v/o_proj.
    var attentionBias: Bool
    /// Absent: 512; null: none.
    var slidingWindow: Int?
    var layerTypes: [String]?
    var mlpLayerTypes: [String]?
    var numExperts: Int
    var numExpertsPerTok: Int
    var moeIntermediateSize: Int
    var normTopkProb: Bool
    /// Absent: 8 and 4; null: None, which BeamTopKRouter cannot group by.
    var nGroup: Int?
    var topkGroup: Int?
    var routedScalingFactor: Double
    /// Absent: 30; null: no soft cap.
    var finalLogitSoftcapping: Double?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case mlpLayerTypes = "mlp_layer_types"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size"
        case normTopkProb = "norm_topk_prob"
        case nGroup = "n_group"
        case topkGroup = "topk_group"
        case routedScalingFactor = "routed_scaling_factor"
        case finalLogitSoftcapping = "final_logit_softcapping"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        /// Only absence takes the default: a written null stays None in transformers.
        func written<T: Decodable>(_ key: CodingKeys, absent: T) throws -> T? {
            c.contains(key) ? try c.decodeIfPresent(T.self, forKey: key) : absent
        }
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        slidingWindow = try written(.slidingWindow, absent: 512)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 256
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 8
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 2560
        normTopkProb = try c.decodeIfPresent(Bool.self, forKey: .normTopkProb) ?? true
        nGroup = try written(.nGroup, absent: 8)
        topkGroup = try written(.topkGroup, absent: 4)
        routedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .routedScalingFactor) ?? 2.5
        finalLogitSoftcapping = try written(.finalLogitSoftcapping, absent: 30)
        let types = mlpLayerTypes
        try ConfigRules.decodingChecks { try MLPLayerTypes.checkEntries(types) }
    }

    /// `layer_types` when absent: every sixth layer full, and the last one; the others sliding.
    static func defaultLayerTypes(layers: Int) -> [String] {
        (0..<layers).map { ($0 + 1) % 6 != 0 && $0 != layers - 1 ? AttentionLayerType.sliding : AttentionLayerType.full }
    }

    /// BeamTopKRouter and BeamMoE as `GroupRoutedMixture` builds them: sigmoid
    /// scores plus `gate.e_score_correction_bias` choose, within the
    /// `topk_group` of `n_group` groups whose two best biased scores sum
    /// highest, the top `num_experts_per_tok`; their sigmoids (over their sum
    /// plus 1e-20 when `norm_topk_prob`) weigh, times `routed_scaling_factor`.
    /// No shared experts.
    var mixture: GroupRoutedMixture {
        var mixture = GroupRoutedMixture(
            experts: numExperts, expertsKey: "num_experts", expertsPerToken: numExpertsPerTok, sharedExperts: 0,
            inner: moeIntermediateSize, scoring: .sigmoid, groupScore: .sumOfBestTwo, groupLimited: true, groups: nGroup,
            groupsPerToken: topkGroup, correctsSelection: true, normalizesWeights: normTopkProb, scalingFactor: routedScalingFactor)
        mixture.sharedName = nil
        return mixture
    }

    /// Refuses values transformers' BeamConfig refuses (`validate_layer_type`'s
    /// lengths) or with which BeamModel could not run, before anything is
    /// sized from them.
    func check(_ d: DecoderDimensions, mlpTypes: [String]) throws {
        try ConfigRules.positive(rmsNormEps, CodingKeys.rmsNormEps.rawValue)
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers, validated: true)
        // A negative cap soft-caps as its magnitude does (tanh is odd); 0 divides the logits by zero.
        if let cap = finalLogitSoftcapping, cap == 0 || !cap.isFinite {
            throw InvalidConfigValue(
                key: CodingKeys.finalLogitSoftcapping.rawValue, problem: "is \(cap): BeamForCausalLM divides the logits by it (null: no soft cap)")
        }
        guard mlpTypes.contains("sparse") else { return }
        try mixture.checkExperts(hidden: d.hiddenSize)
        try mixture.checkGroups()
    }
}

/// Reflection's Beam (`beam`, transformers' `models/beam/`): blocks with an
/// RMSNorm at both ends of each branch (`input_layernorm` /
/// `post_attention_layernorm`, `pre_feedforward_layernorm` /
/// `post_feedforward_layernorm`), each branch joining the stream by a
/// depth-scaled residual add: with i the add's 1-based index (2l + 2 for
/// layer l's attention, 2l + 3 for its MLP), x ← x · √((i − 1)/i) + out / √i.
/// The attention has per-head q/k RMSNorms, q/k/v/o biases by
/// `attention_bias`, heads `head_dim` (128) wide, and its output times
/// sigmoid(`gate_proj` x + `gate_bias`) (one bias per head) before `o_proj`.
/// `sliding_attention` layers of `layer_types` (by default every sixth
/// layer and the last full, the others sliding) attend within
/// `sliding_window` (512). Each layer type rotates by its entry of
/// `rope_parameters` (by default the sliding layers at 1e4); a type whose
/// entry is null takes no positions, its queries scaled instead by
/// (1 + (p + 1)/2048)^0.1 (scalable softmax). The MLP by `mlp_layer_types`
/// (by default the first three layers dense): a SwiGLU of
/// `intermediate_size`, or `BeamConfiguration.mixture` (router `mlp.gate`,
/// experts per expert as saved or fused). Logits soft-capped by
/// `final_logit_softcapping` (30). Untied by default.
struct BeamModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    /// `compute_attention_scaling`'s query scale on the layers without positions.
    static let scalableSoftmax = QueryTemperature(beta: 0.1, originalMaxPositions: 2048, positionOffset: 1, growth: .power)

    let parts: DecoderParts
    let config: BeamConfiguration
    let layerTypes: [String]
    let mlpTypes: [String]
    /// The rotary embedding of each layer type with positions; the other types take none.
    let rotaries: [String: RotaryEmbedding]

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the routed layers' expert tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(BeamConfiguration.self, section: .topLevel)
        let dimensions = try checkpoint.decodeConfig(DecoderDimensions.self, section: .topLevel)
        let mlpTypes = MLPLayerTypes.resolved(config.mlpLayerTypes, layers: dimensions.numHiddenLayers, firstDense: 3)
        try ConfigRules.checks(path: checkpoint.configURL.path) { try config.check(dimensions, mlpTypes: mlpTypes) }
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        self.config = config
        self.mlpTypes = mlpTypes
        parts = try DecoderParts(
            checkpoint, naming: { SandwichBlock.naming($0) },
            experts: .gatedMLP(count: config.numExperts, countKey: "num_experts", isSparse: isSparse))
        let d = parts.dimensions, path = parts.configPath
        let defaultTypes = BeamConfiguration.defaultLayerTypes(layers: d.numHiddenLayers)
        layerTypes = try parts.layerTypes(config.layerTypes, slidingWindow: config.slidingWindow) { defaultTypes[$0] }
        if layerTypes.contains(AttentionLayerType.sliding), let window = config.slidingWindow {
            try ConfigRules.checks(path: path) { _ = try ConfigRules.count(window, "sliding_window") }
        }
        // Every layer's MLP (dense or routed) runs it.
        _ = try parts.activation(config.hiddenAct)
        try parts.confirmAttentionProjections()
        if let layer = parts.firstKeptAttention {
            try parts.confirmProjections(layer: layer, [("gate_proj", d.numAttentionHeads * d.resolvedHeadDim, "num_attention_heads × head_dim")])
        }
        if mlpTypes.contains("sparse") {
            let sparse = (0..<d.numHiddenLayers).filter(isSparse)
            try parts.confirmRouter("mlp.gate", experts: config.numExperts, expertsKey: "num_experts", layers: sparse)
            try config.mixture.confirmExpertWidth(parts, isSparse: isSparse)
        }
        rotaries = try parts.rotariesAsWritten(
            types: Set(layerTypes), defaults: [:], rotaryClass: "BeamRotaryEmbedding", attentionClass: "BeamAttention",
            partialRotary: { _ in .ignored }, nullIsNoPositions: true, entries: try Self.ropeEntries(parts), standardised: false)
    }

    /// The per-type rope entries BeamConfig ends with: a `rope_scaling` key
    /// (even null) replaces `rope_parameters` (PreTrainedConfig's legacy
    /// setter), an absent or null `rope_parameters` is the class's default.
    /// - Throws: `DroptraceError` naming config.json for entries that are not an object.
    static func ropeEntries(_ parts: DecoderParts) throws -> [String: Any] {
        let object = try parts.checkpoint.configObject(parts.section)
        let key = object.keys.contains("rope_scaling") ? "rope_scaling" : "rope_parameters"
        let value = object[key]
        if key == "rope_parameters", value == nil || value is NSNull { return BeamConfiguration.defaultRope }
        guard let entries = value as? [String: Any] else {
            throw DroptraceError(
                "\"\(key)\" is not an object of rope parameters by layer type: BeamModel looks each layer type up in it",
                path: parts.configPath)
        }
        return entries
    }

    /// Exports without some blocks spell out the kept layers' attention and MLP types.
    var layerNaming: LayerNaming { parts.naming(spellingOut: layerTypes, mlpTypes: mlpTypes) }

    /// A kept layer moved to another index would join the stream by that index's depth scaling.
    func exportProblem(_ plan: DropPlan) -> String? {
        guard let first = plan.blocks.min() else { return nil }
        guard let layer = ((first + 1)..<layerCount).first(where: { !plan.blocks.contains($0) }) else { return nil }
        return "dropping block \(first) renumbers layer \(layer) and the kept layers after it, whose depth-scaled residual adds "
            + "(1/√i on the branch, √((i − 1)/i) on the stream) transformers computes from the new index; drop the last blocks instead"
    }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps),
            logitSoftcap: config.finalLogitSoftcapping.map { Float($0) })
    }

    /// Branch `index` of the stack's residual adds (1-based) joining the stream.
    static func depthScaled(_ index: Int) -> ResidualJoin {
        let i = Double(index)
        return .scaling(stream: Float(((i - 1) / i).squareRoot()), output: Float(1 / i.squareRoot()))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps, norms: ("input_layernorm", "pre_feedforward_layernorm"),
            outputNorms: ("post_attention_layernorm", "post_feedforward_layernorm"),
            residualJoins: (attention: { Self.depthScaled(2 * index + 2) }, mlp: { Self.depthScaled(2 * index + 3) }),
            attention: { try attention(layer: index) }, feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s BeamAttention.
    func attention(layer index: Int) throws -> SelfAttention {
        let type = layerTypes[index], layout = parts.attentionLayout, eps = config.rmsNormEps, weights = parts.weights
        let p = "layers.\(index).self_attn.", rotary = rotaries[type]
        let gate = try weights.linear(p + "gate_proj", in: hiddenSize, out: layout.queryWidth, bias: false)
        let gateBias = try weights.floats(p + "gate_bias", [layout.numHeads])
        return try parts.attention(
            p, bias: config.attentionBias, rotary: rotary,
            slidingWindow: type == AttentionLayerType.sliding ? config.slidingWindow : nil,
            queryKeyNorm: .perHead(
                query: try weights.rmsNorm(p + "q_norm", size: layout.headDim, eps: eps),
                key: try weights.rmsNorm(p + "k_norm", size: layout.headDim, eps: eps)),
            queryTemperature: rotary == nil ? Self.scalableSoftmax : nil,
            outputGate: Linear(
                weight: gate.weight, bias: gateBias.flatMap { Array(repeating: $0, count: layout.headDim) },
                inFeatures: hiddenSize, outFeatures: layout.queryWidth))
    }

    /// Layer `index`'s MLP: a dense SwiGLU, or router and routed experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", activation = try parts.activation(config.hiddenAct)
        guard mlpTypes[index] == "sparse" else {
            return try parts.weights.gatedMLP(p, hidden: hiddenSize, inner: parts.dimensions.intermediateSize, activation: activation)
        }
        return try config.mixture.load(parts.weights, p, hidden: hiddenSize, activation: activation, sharedBias: false)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `olmo_hybrid`, with OlmoHybridConfig's defaults; the
/// linear-attention sizes that are absent or null take the class's
/// `__post_init__` values.
struct OlmoHybridConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var attentionBias: Bool
    var layerTypes: [String]?
    var keyHeads: Int?
    var valueHeads: Int?
    var keyHeadDim: Int?
    var valueHeadDim: Int?
    var convolutionKernel: Int
    /// β × 2, letting the delta rule's eigenvalues go negative (default on).
    var allowNegativeEigenvalues: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case layerTypes = "layer_types"
        case keyHeads = "linear_num_key_heads"
        case valueHeads = "linear_num_value_heads"
        case keyHeadDim = "linear_key_head_dim"
        case valueHeadDim = "linear_value_head_dim"
        case convolutionKernel = "linear_conv_kernel_dim"
        case allowNegativeEigenvalues = "linear_allow_neg_eigval"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        keyHeads = try c.decodeIfPresent(Int.self, forKey: .keyHeads)
        valueHeads = try c.decodeIfPresent(Int.self, forKey: .valueHeads)
        keyHeadDim = try c.decodeIfPresent(Int.self, forKey: .keyHeadDim)
        valueHeadDim = try c.decodeIfPresent(Int.self, forKey: .valueHeadDim)
        convolutionKernel = try c.decodeIfPresent(Int.self, forKey: .convolutionKernel) ?? 4
        allowNegativeEigenvalues = try c.decodeIfPresent(Bool.self, forKey: .allowNegativeEigenvalues) ?? true
    }

    /// Each layer's mixer: `layer_types`, else every fourth layer (i % 4 == 3)
    /// full attention and the others linear, the last full when that gives none.
    func resolvedLayerTypes(layers: Int) -> [String] {
        if let layerTypes { return layerTypes }
        var types = (0..<layers).map { $0 % 4 == 3 ? AttentionLayerType.full : HybridQwenConfiguration.linear }
        if !types.contains(AttentionLayerType.full), !types.isEmpty { types[layers - 1] = AttentionLayerType.full }
        return types
    }

    /// The Gated DeltaNet's heads as OlmoHybridConfig completes them: heads
    /// num_attention_heads, key width int(0.75 · hidden / key heads), value
    /// width twice the key width.
    /// - Throws: `InvalidConfigValue` for sizes transformers cannot build or run.
    func linearHeads(_ d: DecoderDimensions) throws -> GatedDeltaNetHeads {
        let keyHeads = try ConfigRules.count(keyHeads ?? d.numAttentionHeads, "linear_num_key_heads")
        let valueHeads = try ConfigRules.count(valueHeads ?? d.numAttentionHeads, "linear_num_value_heads")
        let keyDim = try ConfigRules.count(keyHeadDim ?? Int(0.75 * Double(d.hiddenSize) / Double(keyHeads)), "linear_key_head_dim")
        let (doubled, overflow) = keyDim.multipliedReportingOverflow(by: 2)
        let valueDim = try ConfigRules.count(valueHeadDim ?? (overflow ? 0 : doubled), "linear_value_head_dim")
        try ConfigRules.count(convolutionKernel, "linear_conv_kernel_dim")
        // Each query/key head serves valueHeads / keyHeads consecutive value heads.
        guard valueHeads % keyHeads == 0 else {
            throw InvalidConfigValue(key: "linear_num_value_heads", problem: "\(valueHeads) is not a multiple of linear_num_key_heads \(keyHeads)")
        }
        try ConfigRules.product([(keyHeads, "linear_num_key_heads"), (keyDim, "linear_key_head_dim"), (d.hiddenSize, "hidden_size"), (4, "q, k, v and g")])
        try ConfigRules.product([(valueHeads, "linear_num_value_heads"), (valueDim, "linear_value_head_dim"), (d.hiddenSize, "hidden_size"), (4, "q, k, v and g")])
        return GatedDeltaNetHeads(
            keyHeads: keyHeads, valueHeads: valueHeads, keyDim: keyDim, valueDim: valueDim, convolutionKernel: convolutionKernel)
    }
}

/// OLMo-Hybrid (AllenAI, transformers' models/olmo_hybrid/): OLMo-3's
/// post-norm attention layers,
///
///     H = X + RMSNorm(Attn(X)),   Y = H + RMSNorm(MLP(H))
///
/// (q/k RMSNorms across all heads, rotary by `rope_parameters`, which
/// transformers always fills), between pre-norm Gated DeltaNet layers,
///
///     H = X + GDN(RMSNorm X),   Y = H + MLP(RMSNorm H),
///
/// by `layer_types` (by default every fourth layer attention). The Gated
/// DeltaNet (`GatedDeltaNet`) projects q, k, v, a, b and its output gate
/// (`g_proj`) separately, convolves with `hidden_act`, doubles β when
/// `linear_allow_neg_eigval`, and normalises each value head with
/// `o_norm` (eps 1e-5). The norm named `post_attention_layernorm` ends an
/// attention layer's attention branch but begins a linear layer's MLP
/// branch (`LayerNaming.partsByLayer`).
///
/// Weights are read under OLMo-core's saved names, which transformers'
/// conversion mapping renames (`attention_layer_norm` → `input_layernorm`,
/// `feedforward_layer_norm` → `post_attention_layernorm`, `q_conv1d` |
/// `k_conv1d` | `v_conv1d` joined into `conv1d`), or under transformers' own.
struct OlmoHybridModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: OlmoHybridConfiguration
    let layerTypes: [String]
    let heads: GatedDeltaNetHeads
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: Self.naming)
        let config = try parts.config(OlmoHybridConfiguration.self)
        self.config = config
        let d = parts.dimensions, layers = d.numHiddenLayers
        let types = config.resolvedLayerTypes(layers: layers)
        layerTypes = types
        var heads: GatedDeltaNetHeads?
        try parts.checks {
            if let other = types.first(where: { $0 != AttentionLayerType.full && $0 != HybridQwenConfiguration.linear }) {
                throw InvalidConfigValue(
                    key: "layer_types", problem: "names \"\(other.forErrorMessage)\": the layers are full_attention or linear_attention")
            }
            // OlmoHybridConfig's validation.
            guard types.contains(HybridQwenConfiguration.linear), types.contains(AttentionLayerType.full) else {
                throw InvalidConfigValue(key: "layer_types", problem: "must name both full_attention and linear_attention layers")
            }
            heads = try config.linearHeads(d)
        }
        self.heads = heads!
        try Self.confirmLayerKinds(parts, types: types, heads: self.heads)
        let attentionLayers = (0..<layers).filter { types[$0] == AttentionLayerType.full }
        try parts.confirmAttentionProjections(layers: attentionLayers)
        rotary = try parts.rotary(confirmProjections: false)
    }

    /// Checks that each layer's weights are of the kind `layer_types` gives
    /// it (transformers would leave the other kind's weights unread and
    /// initialise the missing ones at random), and the first kept linear
    /// layer's projections and convolution against the Gated DeltaNet's
    /// sizes, before anything is sized from them.
    private static func confirmLayerKinds(_ parts: DecoderParts, types: [String], heads h: GatedDeltaNetHeads) throws {
        let weights = parts.weights, configPath = parts.configPath, drops = parts.configuredDrops
        try parts.confirmLayerKinds(
            types, probes: [AttentionLayerType.full: ["self_attn.q_proj.weight"], HybridQwenConfiguration.linear: ["linear_attn.q_proj.weight"]])
        guard let first = types.indices.first(where: { types[$0] == HybridQwenConfiguration.linear && !drops.dropsAttention($0) }) else { return }
        let p = "layers.\(first).linear_attn.", d = parts.dimensions.hiddenSize
        try weights.confirmShape(
            p + "q_proj.weight", [h.keyWidth, d], keys: "linear_num_key_heads × linear_key_head_dim, hidden_size", configPath: configPath)
        try weights.confirmShape(
            p + "v_proj.weight", [h.valueWidth, d], keys: "linear_num_value_heads × linear_value_head_dim, hidden_size", configPath: configPath)
        try weights.confirmConvolutionKernel(p, heads: h, configPath: configPath)
    }

    /// The linear layers' naming, saved names beside transformers' own.
    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["linear_attn.", "input_layernorm.", "attention_layer_norm."],
            mlp: ["mlp.", "post_attention_layernorm.", "feedforward_layer_norm."], layerCountKeys: ["num_hidden_layers"])
    }

    /// The attention layers' branches own their output norms; an export
    /// without some blocks spells out the kept layers' types.
    var layerNaming: LayerNaming {
        var naming = parts.naming(spellingOut: layerTypes)
        let postNorm = LayerNaming.BranchParts(
            attention: ["self_attn.", "post_attention_layernorm.", "feedforward_layer_norm."], mlp: ["mlp.", "post_feedforward_layernorm."])
        for (index, type) in layerTypes.enumerated() where type == AttentionLayerType.full { naming.partsByLayer[index] = postNorm }
        return naming
    }

    /// OlmoHybridConfig refuses layer types without both kinds: an export
    /// whose block drops leave one kind only would not load in transformers.
    func exportProblem(_ plan: DropPlan) -> String? {
        let kept = Set(layerTypes.indices.filter { !plan.blocks.contains($0) }.map { layerTypes[$0] })
        guard !kept.isEmpty, kept.count < 2 else { return nil }
        return "dropping blocks \(plan.blocks.sorted().map(String.init).joined(separator: ", ")) leaves only \(kept.first!) layers, which OlmoHybridConfig refuses when transformers loads the export; keep a full_attention and a linear_attention layer"
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), activation = try parts.activation(config.hiddenAct)
        let p = "layers.\(index)."
        func mlp() throws -> FeedForward {
            try parts.weights.gatedMLP(p + "mlp.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize, activation: activation)
        }
        guard layerTypes[index] == HybridQwenConfiguration.linear else {
            // OLMo-3's post-norm layer: H = X + RMSNorm(Attn X), Y = H + RMSNorm(MLP H).
            let olmo = Olmo2Configuration(rmsNormEps: config.rmsNormEps, hiddenAct: config.hiddenAct, attentionBias: config.attentionBias)
            return TransformerBlock(
                attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                    inputNorm: nil, attention: try Olmo2Model.attention(index, parts: parts, config: olmo, rotary: rotary),
                    outputNorm: try norm(index, saved: "feedforward_layer_norm", renamed: "post_attention_layernorm")),
                mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                    inputNorm: nil, feedForward: try mlp(),
                    outputNorm: try parts.weights.rmsNorm(p + "post_feedforward_layernorm", size: hiddenSize, eps: config.rmsNormEps)),
                residual: .sequential)
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try norm(index, saved: "attention_layer_norm", renamed: "input_layernorm"),
                mixer: .gatedDeltaNet(try gatedDeltaNet(p + "linear_attn.", activation: activation))),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try norm(index, saved: "feedforward_layer_norm", renamed: "post_attention_layernorm"), feedForward: try mlp()),
            residual: .sequential)
    }

    /// Layer `index`'s RMSNorm stored under OLMo-core's `saved` name or transformers' `renamed` one.
    private func norm(_ index: Int, saved: String, renamed: String) throws -> Normalization {
        let p = "layers.\(index)."
        let name = try parts.weights.storedModule(p, saved: saved, renamed: renamed)
        return try parts.weights.rmsNorm(p + name, size: hiddenSize, eps: config.rmsNormEps)
    }

    /// The Gated DeltaNet under `prefix`: q | k | v | g | b | a stacked into
    /// one projection; the convolution stored fused (`conv1d`) or per part.
    private func gatedDeltaNet(_ prefix: String, activation: Activation) throws -> GatedDeltaNet {
        let h = heads, weights = parts.weights, d = hiddenSize
        let names = ["q_proj", "k_proj", "v_proj", "g_proj", "b_proj", "a_proj"].map { prefix + $0 }
        let projection = try weights.stackedLinear(
            names, in: d, outs: [h.keyWidth, h.keyWidth, h.valueWidth, h.valueWidth, h.valueHeads, h.valueHeads], bias: false)
        // Saved per part as three even pieces of the fused taps, not as q, k and v (transformers splits it so).
        return GatedDeltaNet(
            heads: h, projection: projection, convolution: try weights.deltaRuleConvolution(prefix, heads: h),
            logDecayRates: try weights.floats(prefix + "A_log", [h.valueHeads]),
            timeStepBias: try weights.floats(prefix + "dt_bias", [h.valueHeads]),
            norm: try weights.rmsNorm(prefix + "o_norm", size: h.valueDim, eps: 1e-5),
            output: try weights.linear(prefix + "o_proj", in: h.valueWidth, out: d, bias: false),
            convolutionActivation: activation, betaScale: config.allowNegativeEigenvalues ? 2 : 1)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `zamba` with ZambaConfig's defaults and its derived
/// values: the layer list (`layers_block_type`, alias `layer_types`, else
/// Mamba, Mamba, hybrid, then layer 3 + i hybrid where i mod
/// `attn_layer_period` == `attn_layer_offset`), the attention heads' width
/// (`head_dim`, its alias `attention_head_dim`, else 2 × hidden_size /
/// num_attention_heads), `mamba_dt_rank` ("auto": ⌈hidden_size / 16⌉).
struct ZambaConfiguration: Decodable {
    var hiddenSize: Int
    var layers: Int
    var heads: Int
    var headDim: Int
    /// Per layer: hybrid (else a Mamba layer).
    var hybrid: [Bool]
    /// The key(s) the kinds were read from, for errors.
    var layerListKey: String
    var layerListWritten: Bool
    var rmsNormEps: Double
    /// The shared block's MLP (`hidden_act`) and the mixers' convolution (`hidden_mamba_act`).
    var hiddenAct: String
    var mambaAct: String
    var mambaHeads: Int
    /// The mixers' keys: biases of the convolution (`mamba_conv_bias`) and of
    /// in_proj / out_proj (`mamba_proj_bias`) among them.
    var mamba: MambaPrefixedKeys

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case layers = "num_hidden_layers"
        case heads = "num_attention_heads"
        case headDim = "head_dim"
        case attentionHeadDim = "attention_head_dim"
        case attentionHiddenSize = "attention_hidden_size"
        case period = "attn_layer_period"
        case offset = "attn_layer_offset"
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case mambaAct = "hidden_mamba_act"
        case mambaHeads = "n_mamba_heads"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decodeCount(.hiddenSize, default: 3712)
        layers = try c.decodeCount(.layers, default: 76)
        heads = try c.decodeCount(.heads, default: 16)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "gelu"
        mambaAct = try c.decodeIfPresent(String.self, forKey: .mambaAct) ?? "silu"
        mambaHeads = try c.decodeCount(.mambaHeads, default: 2)
        let (d, heads, layers, mambaHeads) = (hiddenSize, self.heads, self.layers, self.mambaHeads)
        try ConfigRules.decodingChecks {
            try ConfigRules.count(d, "hidden_size")
            try ConfigRules.count(heads, "num_attention_heads")
            try ConfigRules.count(layers, "num_hidden_layers")
            try ConfigRules.count(mambaHeads, "n_mamba_heads")
            try ConfigRules.product([(d, "hidden_size"), (2, "2 × hidden_size")])
        }
        mamba = try MambaPrefixedKeys(from: decoder)
        // head_dim (the attribute map's name for attention_head_dim) is read over attention_head_dim.
        let key: CodingKeys = c.contains(.headDim) ? .headDim : .attentionHeadDim
        headDim = try c.decodeCount(key, default: 2 * d / heads)
        let attentionWidth = try c.decodeIfPresent(Int.self, forKey: .attentionHiddenSize)
        let (headDim, eps) = (headDim, rmsNormEps)
        try ConfigRules.decodingChecks {
            try ConfigRules.count(headDim, key.stringValue)
            try ConfigRules.positive(eps, "rms_norm_eps")
            // Its input norm and projections are that wide, but they read the stream and the embeddings side by side.
            if let width = attentionWidth, width != 2 * d {
                throw InvalidConfigValue(
                    key: "attention_hidden_size", problem: "must be 2 × hidden_size \(2 * d), the stream and the embeddings side by side, got \(width)")
            }
        }
        let list = try ZambaLayerList(from: decoder)
        // Without a list, the rule's keys are what give a layer its kind.
        (layerListKey, layerListWritten) = (list.hybrid != nil ? list.key : "attn_layer_period / attn_layer_offset", list.hybrid != nil)
        if let written = list.hybrid {
            hybrid = written
        } else {
            let period = try c.decodeIfPresent(Int.self, forKey: .period) ?? 6, offset = try c.decodeIfPresent(Int.self, forKey: .offset) ?? 4
            try ConfigRules.decodingChecks {
                guard layers <= ModelLimits.maxLayers else {
                    throw InvalidConfigValue(key: "num_hidden_layers", problem: "is \(layers); droptrace reads models of up to \(ModelLimits.maxLayers) layers")
                }
                if layers > 3, period == 0 { throw InvalidConfigValue(key: "attn_layer_period", problem: "must not be 0 (the rule divides by it)") }
            }
            hybrid = [false, false, true] + (0..<max(layers - 3, 0)).map { Self.pythonModulo($0, period) == offset }
        }
        // The config class's layer-type check: one type per layer.
        let (count, listKey) = (hybrid.count, layerListKey)
        try ConfigRules.decodingChecks {
            if layers != count {
                throw InvalidConfigValue(key: "num_hidden_layers", problem: "must be the number of layers \(listKey) lists (\(count)), got \(layers)")
            }
        }
    }

    /// i mod n with the sign of n, as Python's % computes it.
    static func pythonModulo(_ i: Int, _ n: Int) -> Int {
        let r = i % n
        return r != 0 && (r < 0) != (n < 0) ? r + n : r
    }
}

/// Zyphra's Zamba (`zamba`, transformers' models/zamba, ZambaForCausalLM:
/// Zamba-7B-v1): Mamba layers and hybrid layers (`layers_block_type`), the
/// stack Zamba2 inherited (`ZambaHybridStack`).
///
/// - A Mamba layer is x + mixer(norm(x)), `mamba` after `input_layernorm`,
///   its mixer its one module (no MLP module).
/// - A hybrid layer runs the one shared transformer block (`shared_transf`,
///   stored under the first hybrid layer): attention over norm([x | x₀]),
///   x₀ the token embeddings (`input_layernorm` over 2 × hidden_size),
///   num_attention_heads heads of `head_dim` reading 2 × hidden_size,
///   num_key_value_heads key/value heads, scaled by (head_dim / 2)^−½, no
///   positions (no rotary); then `pre_ff_layernorm`, a gated MLP
///   (`gate_proj`, `up_proj`, `hidden_act`, `down_proj`) and the layer's
///   own `linear`: T, which joins only the stream its Mamba decoder layer
///   (`mamba_decoder`) reads: y = x + mixer(norm(x + T)). The attention
///   module is x → x + T, the MLP module the mixer, x → y, as for Zamba2.
///
/// The mixers are Mamba-1 split into `n_mamba_heads` heads
/// (ZambaMambaMixer): in_proj's rows x and gate interleaved (x₀, g₀, x₁,
/// g₁, …), the convolution over all channels with its bias by
/// `mamba_conv_bias` and `hidden_mamba_act`, then per head its own
/// `x_proj_weight` [heads, dt_rank + 2 × d_state, head width],
/// `dt_proj_weight` [heads, head width, dt_rank], `dt_proj_bias`, `A_log`
/// [heads, head width, d_state] and `D`; y · silu(gate) into `out_proj`
/// (in_proj and out_proj biases by `mamba_proj_bias`).
///
/// Block-drop exports remove any layers but, with tied embeddings, the
/// first hybrid one while a later one is kept (it stores the block the
/// later ones are tied to) or all hybrid layers but one (which
/// transformers cannot build tied); module drops are refused
/// (transformers' classes read no drop lists).
struct ZambaModel: ZambaHybridFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: ZambaConfiguration
    let stack: ZambaHybridStack
    let sizes: MambaSizes

    init(_ checkpoint: Checkpoint) throws {
        let config = try checkpoint.decodeConfig(ZambaConfiguration.self)
        self.config = config
        let stack = ZambaHybridStack(
            hybrid: config.hybrid, key: config.layerListKey, written: config.layerListWritten, block: "shared_transf", family: "Zamba")
        self.stack = stack
        let section = ConfigSection(
            defaults: [
                "hidden_size": 3712, "num_hidden_layers": 76, "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 32000,
                "intermediate_size": 14848, "max_position_embeddings": 4096,
            ],
            overrides: ["head_dim": .integer(config.headDim)])
        parts = try DecoderParts(checkpoint, section: section, naming: stack.naming, finalNorm: "final_layernorm")
        let parts = self.parts
        sizes = try parts.checks { try config.mamba.sizes(hidden: config.hiddenSize, heads: config.mambaHeads) }
        _ = try parts.activation(config.hiddenAct)
        _ = try parts.activation(config.mambaAct, key: "hidden_mamba_act")
        try stack.confirmKinds(parts)
        let (d, s, path) = (config.hiddenSize, sizes, parts.configPath)
        if let first = stack.firstKeptMixer(parts.configuredDrops) {
            let keys = MambaPrefixedKeys.keys
            try parts.weights.confirmShapes(
                MambaMixer.projectionShapes(hidden: d, sizes: s, keys: keys) + [
                    ("x_proj_weight", [s.heads, s.headSelectionWidth, s.headWidth],
                     "n_mamba_heads, \(keys.timeStepRank) + 2 × \(keys.stateSize), \(keys.inner) / n_mamba_heads"),
                    ("dt_proj_weight", [s.heads, s.headWidth, s.timeStepRank], "n_mamba_heads, \(keys.inner) / n_mamba_heads, \(keys.timeStepRank)"),
                ], prefix: first, configPath: path)
        }
        // Each kept hybrid layer's block as it reads it (with untied embeddings, each its own stored copy).
        let dims = parts.dimensions
        for (position, layer) in stack.hybridLayers.enumerated() where !parts.configuredDrops.dropsAttention(layer) {
            func p(_ module: String) -> String {
                stack.sharedModule(module, layer: layer, position: position, parts: parts) + ".weight"
            }
            try parts.weights.confirmShapes([
                (p("self_attn.q_proj"), [dims.numAttentionHeads * dims.resolvedHeadDim, 2 * d], "num_attention_heads × head_dim, 2 × hidden_size"),
                (p("self_attn.k_proj"), [dims.kvHeads * dims.resolvedHeadDim, 2 * d], "num_key_value_heads × head_dim, 2 × hidden_size"),
                (p("feed_forward.gate_proj"), [dims.intermediateSize, d], "intermediate_size, hidden_size"),
            ], configPath: path)
        }
    }

    /// Block drops, but with tied embeddings (transformers ties the later
    /// hybrid layers' blocks to the first one's) neither of the first
    /// hybrid layer while a later one is kept (it stores the block they
    /// are tied to, so the export would hold none for them) nor of all
    /// hybrid layers but one (transformers 5.25 cannot build a tied model
    /// of one hybrid layer: its tying pattern finds no layer to tie).
    func exportProblem(_ plan: DropPlan) -> String? {
        if let problem = stack.moduleDropProblem(plan) { return problem }
        let kept = stack.hybridLayers.filter { !plan.blocks.contains($0) }
        guard parts.tiedEmbeddings, let first = stack.hybridLayers.first, !kept.isEmpty else { return nil }
        if kept.count == 1 {
            return "the export would keep one hybrid layer (\(kept[0])), which transformers cannot build with tied embeddings "
                + "(ZambaModel's tying of the later hybrid layers' shared_transf to the first finds none); keep two or none"
        }
        guard plan.blocks.contains(first) else { return nil }
        return "dropping hybrid layer \(first) cannot be exported while hybrid layer \(kept[0]) is kept: it stores the shared "
            + "transformer block (shared_transf) that transformers ties the later hybrid layers to; keep it, or drop every hybrid layer"
    }

    var rmsNormEps: Double { config.rmsNormEps }

    /// Hybrid layer `index`'s shared transformer path, the `position`-th
    /// hybrid layer's: the block's attention over norm([x | x₀]), its MLP, then the layer's `linear`.
    func sharedBlock(_ index: Int, position: Int) throws -> AttentionBranch {
        let weights = parts.weights, layout = parts.attentionLayout, d = hiddenSize, eps = config.rmsNormEps
        func module(_ name: String) -> String { stack.sharedModule(name, layer: index, position: position, parts: parts) }
        let attention = SelfAttention(
            qkv: try weights.stackedLinear(
                ["q_proj", "k_proj", "v_proj"].map { module("self_attn.\($0)") }, in: 2 * d,
                outs: [layout.queryWidth, layout.keyWidth, layout.keyWidth], bias: false),
            layout: layout, rotary: nil,
            output: try weights.linear(module("self_attn.o_proj"), in: layout.queryWidth, out: d, bias: false),
            scale: Float(pow(Double(layout.headDim) / 2, -0.5)))
        return AttentionBranch(
            inputNorm: try weights.rmsNorm(module("input_layernorm"), size: 2 * d, eps: eps), attention: attention, appendsLayerInput: true,
            feedForward: BranchFeedForward(
                norm: try weights.rmsNorm(module("pre_ff_layernorm"), size: d, eps: eps),
                feedForward: try weights.gatedMLP(
                    module("feed_forward") + ".", hidden: d, inner: parts.dimensions.intermediateSize, activation: try parts.activation(config.hiddenAct)),
                projection: try weights.linear("layers.\(index).linear", in: d, out: d, bias: false)))
    }

    /// The multi-head Mamba-1 mixer under `prefix`, laid out as `MambaMixer`
    /// holds it: in_proj's interleaved rows as x | gate, x_proj and dt_proj
    /// block-diagonal over the heads, the per-head A_log, D and dt_proj_bias
    /// flattened over the channels (head after head, as the heads' outputs
    /// are concatenated before out_proj).
    func mambaMixer(_ prefix: String) throws -> TokenMixer {
        let weights = parts.weights, s = sizes, d = hiddenSize, inner = s.innerWidth, bias = config.mamba.projectionBias
        let (heads, width, rank, selection) = (s.heads, s.headWidth, s.timeStepRank, s.headSelectionWidth)
        // Row 2c is channel c's x, row 2c + 1 its gate: the even rows, then the odd ones.
        let projection = try weights.linear(prefix + "in_proj", in: d, out: 2 * inner, bias: bias).rearrangingRows { values, width in
            [0, 1].flatMap { part in stride(from: part, to: 2 * inner, by: 2).flatMap { values[($0 * width)..<(($0 + 1) * width)] } }
        }
        let xProj = try weights.floats(prefix + "x_proj_weight", [heads, selection, width])
        var selectionWeight = [Float](repeating: 0, count: heads * selection * inner)
        for h in 0..<heads {
            for r in 0..<selection {
                let row = (h * selection + r) * inner + h * width
                for j in 0..<width { selectionWeight[row + j] = xProj[(h * selection + r) * width + j] }
            }
        }
        let dtProj = try weights.floats(prefix + "dt_proj_weight", [heads, width, rank])
        var timeStepWeight = [Float](repeating: 0, count: inner * heads * rank)
        for h in 0..<heads {
            for j in 0..<width {
                let channel = h * width + j
                for r in 0..<rank { timeStepWeight[channel * heads * rank + h * rank + r] = dtProj[channel * rank + r] }
            }
        }
        return .mamba(MambaMixer(
            sizes: s, projection: projection,
            convolution: try weights.floats(prefix + "conv1d.weight", [inner, 1, s.convolutionKernel]),
            convolutionBias: config.mamba.convolutionBias ? try weights.floats(prefix + "conv1d.bias", [inner]) : nil,
            activation: try parts.activation(config.mambaAct, key: "hidden_mamba_act"),
            selection: Linear(weight: selectionWeight, bias: nil, inFeatures: inner, outFeatures: s.selectionWidth),
            timeStepNorm: nil, inputNorm: nil, outputNorm: nil,
            timeStepProjection: Linear(weight: timeStepWeight, bias: nil, inFeatures: s.timeStepWidth, outFeatures: inner),
            timeStepBias: try weights.floats(prefix + "dt_proj_bias", [heads, width]),
            logDecay: try weights.floats(prefix + "A_log", [heads, width, s.stateSize]),
            skip: try weights.floats(prefix + "D", [heads, width]),
            output: try weights.linear(prefix + "out_proj", in: inner, out: d, bias: bias)))
    }
}

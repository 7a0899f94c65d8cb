import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// What each Zamba2 layer is: Zamba2Config's `layers_block_type` (alias
/// `layer_types`), "hybrid" or "linear_attention" (legacy "mamba"), else
/// the config class's default of 54 layers (hybrid at 6, 12, …, 42, 47, 51).
struct Zamba2LayerTypes: Decodable {
    /// Per layer: a hybrid layer (a shared transformer block before its Mamba-2 mixer).
    var hybrid: [Bool]
    /// The key the kinds were read from, for errors.
    var key = "layers_block_type"
    /// Whether config.json writes the list (an export then renumbers it as written).
    var written = false

    static let defaultHybrid: [Bool] = {
        let kinds = [false] + Array(repeating: [false, false, false, false, false, true], count: 7).joined()
            + [false, false, false, false, true, false, false, false, true, false, false]
        return Array(kinds)
    }()

    enum CodingKeys: String, CodingKey {
        case hybridLayerIds = "hybrid_layer_ids"
    }

    init(from decoder: Decoder) throws {
        let list = try ZambaLayerList(from: decoder)
        (hybrid, key, written) = (list.hybrid ?? Self.defaultHybrid, list.key, list.hybrid != nil)
        try checkHybridLayerIds(try decoder.container(keyedBy: CodingKeys.self))
    }

    /// Refuses a written `hybrid_layer_ids` other than the hybrid layers.
    private func checkHybridLayerIds(_ c: KeyedDecodingContainer<CodingKeys>) throws {
        // Zamba2Config keeps a written list over the one it derives, and each hybrid layer takes the LoRA
        // adapters of its place in it: another list gives layers other adapters, none, or a KeyError.
        let derived = hybrid.indices.filter { hybrid[$0] }
        if c.contains(.hybridLayerIds) {
            let ids = try c.decodeNil(forKey: .hybridLayerIds) ? nil : try c.decode([Int].self, forKey: .hybridLayerIds)
            let key = self.key
            try ConfigRules.decodingChecks {
                guard ids != derived else { return }
                throw InvalidConfigValue(
                    key: "hybrid_layer_ids",
                    problem: "is \(ids.map { "\($0)" } ?? "null"), but the hybrid layers \(key) gives are \(derived): transformers "
                        + "gives each hybrid layer the LoRA adapters of its place in hybrid_layer_ids, so this list would run "
                        + "other adapters (or fail); write the layers \(key) makes hybrid")
            }
        }
    }
}

/// The sizes Zamba2Config derives from others, as its `__post_init__`
/// derives them and config.json's own values then replace them:
/// `intermediate_size` (4 × hidden_size where null or 0), the attention
/// heads' width (`head_dim`, its alias `attention_head_dim`, else 2 ×
/// hidden_size / num_attention_heads), and the widths the model cannot take
/// otherwise (`attention_hidden_size`, the concatenation's 2 × hidden_size;
/// `mamba_headdim`, mamba_expand × hidden_size / n_mamba_heads), refused
/// where written otherwise.
private struct Zamba2Sizes: Decodable {
    var hiddenSize: Int
    var heads: Int
    var headDim: Int
    var intermediateSize: Int?
    var useLongContext: Bool
    var layers: Int

    enum CodingKeys: String, CodingKey {
        case layers = "num_hidden_layers"
        case hiddenSize = "hidden_size"
        case heads = "num_attention_heads"
        case headDim = "head_dim"
        case attentionHeadDim = "attention_head_dim"
        case attentionHiddenSize = "attention_hidden_size"
        case mambaHeadDim = "mamba_headdim"
        case expand = "mamba_expand"
        case mambaHeads = "n_mamba_heads"
        case intermediateSize = "intermediate_size"
        case useLongContext = "use_long_context"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decodeCount(.hiddenSize, default: 2560)
        heads = try c.decodeCount(.heads, default: 32)
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize)
        useLongContext = try c.decodeIfPresent(Bool.self, forKey: .useLongContext) ?? false
        layers = try c.decodeCount(.layers, default: 54)
        let (d, heads) = (hiddenSize, self.heads)
        try ConfigRules.decodingChecks {
            try ConfigRules.count(d, "hidden_size")
            try ConfigRules.count(heads, "num_attention_heads")
            try ConfigRules.product([(d, "hidden_size"), (4, "4 × hidden_size")])
        }
        // head_dim (the attribute map's name for attention_head_dim) is read over attention_head_dim.
        let key: CodingKeys = c.contains(.headDim) ? .headDim : .attentionHeadDim
        headDim = try c.decodeCount(key, default: 2 * d / heads)
        let headDim = headDim
        let attentionWidth = try c.decodeIfPresent(Int.self, forKey: .attentionHiddenSize)
        let mambaHeadDim = try c.decodeIfPresent(Int.self, forKey: .mambaHeadDim)
        let expand = try c.decodeIfPresent(Int.self, forKey: .expand) ?? 2, mambaHeads = try c.decodeIfPresent(Int.self, forKey: .mambaHeads) ?? 8
        try ConfigRules.decodingChecks {
            try ConfigRules.count(headDim, key.stringValue)
            if let width = attentionWidth, width != 2 * d {
                throw InvalidConfigValue(
                    key: "attention_hidden_size", problem: "must be 2 × hidden_size \(2 * d), the stream and the embeddings side by side, got \(width)")
            }
            if let width = mambaHeadDim, mambaHeads > 0, expand > 0 {
                let inner = expand.multipliedReportingOverflow(by: d), product = width.multipliedReportingOverflow(by: mambaHeads)
                if inner.overflow || product.overflow || inner.partialValue != product.partialValue {
                    throw InvalidConfigValue(
                        key: "mamba_headdim", problem: "times n_mamba_heads \(mambaHeads) must be mamba_expand × hidden_size, got \(width)")
                }
            }
        }
    }
}

/// Zamba2Config's keys beside the sizes, with its defaults.
struct Zamba2Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var stateSize: Int
    var convolutionKernel: Int
    var expand: Int
    var groups: Int
    var mambaHeads: Int
    var chunkSize: Int
    /// Biases of in_proj, out_proj, gate_up_proj and down_proj.
    var addBiasLinear: Bool
    /// Δ's lower clamp (the mixers' `time_step_limit` is (time_step_min, ∞)).
    var timeStepMin: Double
    var memoryBlocks: Int
    var attentionAdapters: Bool
    var adapterRank: Int
    var useMemRope: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case stateSize = "mamba_d_state"
        case convolutionKernel = "mamba_d_conv"
        case expand = "mamba_expand"
        case groups = "mamba_ngroups"
        case mambaHeads = "n_mamba_heads"
        case chunkSize = "chunk_size"
        case addBiasLinear = "add_bias_linear"
        case timeStepMin = "time_step_min"
        case memoryBlocks = "num_mem_blocks"
        case attentionAdapters = "use_shared_attention_adapter"
        case adapterRank = "adapter_rank"
        case useMemRope = "use_mem_rope"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "gelu"
        stateSize = try c.decodeCount(.stateSize, default: 64)
        convolutionKernel = try c.decodeCount(.convolutionKernel, default: 4)
        expand = try c.decodeCount(.expand, default: 2)
        groups = try c.decodeCount(.groups, default: 1)
        mambaHeads = try c.decodeCount(.mambaHeads, default: 8)
        chunkSize = try c.decodeCount(.chunkSize, default: 256)
        addBiasLinear = try c.decodeIfPresent(Bool.self, forKey: .addBiasLinear) ?? false
        timeStepMin = try c.decodeIfPresent(Double.self, forKey: .timeStepMin) ?? 0.001
        memoryBlocks = try c.decodeCount(.memoryBlocks, default: 1)
        attentionAdapters = try c.decodeIfPresent(Bool.self, forKey: .attentionAdapters) ?? false
        adapterRank = try c.decodeCount(.adapterRank, default: 128)
        useMemRope = try c.decodeIfPresent(Bool.self, forKey: .useMemRope) ?? false
        let settings = self
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(settings.rmsNormEps, "rms_norm_eps")
            try ConfigRules.count(settings.stateSize, "mamba_d_state")
            try ConfigRules.count(settings.convolutionKernel, "mamba_d_conv")
            try ConfigRules.count(settings.expand, "mamba_expand")
            try ConfigRules.count(settings.groups, "mamba_ngroups")
            try ConfigRules.count(settings.mambaHeads, "n_mamba_heads")
            try ConfigRules.count(settings.chunkSize, "chunk_size")
            try ConfigRules.nonNegative(settings.adapterRank, "adapter_rank")
            // torch.clamp converts the bound to float32.
            guard Float(settings.timeStepMin).isFinite else {
                throw InvalidConfigValue(key: "time_step_min", problem: "must be a float32 number, got \(settings.timeStepMin)")
            }
        }
    }

    /// The Mamba-2 mixers' sizes: n_mamba_heads heads of mamba_expand ×
    /// hidden_size / n_mamba_heads (Zamba2Config floors the quotient, which
    /// the scan then cannot reshape: refused unless it divides).
    func heads(hidden: Int) throws -> Mamba2Heads {
        let inner = try ConfigRules.product([(expand, "mamba_expand"), (hidden, "hidden_size")])
        guard inner % mambaHeads == 0 else {
            throw InvalidConfigValue(key: "n_mamba_heads", problem: "must divide mamba_expand × hidden_size \(inner), got \(mambaHeads)")
        }
        guard inner % groups == 0 else {
            throw InvalidConfigValue(key: "mamba_ngroups", problem: "must divide mamba_expand × hidden_size \(inner), got \(groups)")
        }
        return try Mamba2Heads.checked(
            heads: mambaHeads, headDim: inner / mambaHeads, groups: groups, stateSize: stateSize, convolutionKernel: convolutionKernel,
            hidden: hidden,
            keys: .init(heads: "n_mamba_heads", groups: "mamba_ngroups", stateSize: "mamba_d_state", convolutionKernel: "mamba_d_conv",
                        inner: "mamba_expand × hidden_size"))
    }
}

/// Zyphra's Zamba2 (`zamba2`, transformers' models/zamba2,
/// Zamba2ForCausalLM: Zamba2-1.2B, 2.7B, 7B): Mamba-2 layers and hybrid
/// layers (`layers_block_type`), every one transformers' decoder layer.
///
/// - A Mamba layer (`linear_attention`) is x + mixer(norm(x)), `mamba` after
///   `input_layernorm`; its mixer is its one module, the attention, as the
///   Mamba families score it (no MLP module: dropping the mixer drops the layer).
/// - A hybrid layer runs one of `num_mem_blocks` shared transformer blocks,
///   used in turn by the hybrid layers (the k-th hybrid layer uses block
///   k mod num_mem_blocks, stored under the first hybrid layer that uses
///   it: `layers.<that layer>.shared_transformer`): attention over
///   norm([x | x₀]), x₀ the token embeddings (`input_layernorm` over 2 ×
///   hidden_size), num_attention_heads heads of 2 × hidden_size /
///   num_attention_heads, scaled by (head_dim / 2)^−½, rotated only with
///   `use_mem_rope`; then `pre_ff_layernorm`, a gated MLP (`gate_up_proj`,
///   `hidden_act`, `down_proj`) and the layer's own `linear`: T. Each hybrid
///   layer adds its own LoRA adapters (rank `adapter_rank`, under the
///   block's `*_adapter_list.<k>`) to gate_up_proj, and to q, k and v with
///   `use_shared_attention_adapter`. T joins only the stream its Mamba-2
///   decoder layer (`mamba_decoder`) reads: y = x + mixer(norm(x + T)).
///   The layer's attention module is the shared block's path, x → x + T
///   (what the layer adds to the stream before its mixer); its MLP module
///   is the Mamba-2 mixer, x → y (the stream transformers' Mamba decoder
///   layer takes and returns). Dropping the attention leaves the mixer
///   reading norm(x); dropping the mixer leaves x.
///
/// The mixers are the Mamba-2 mixers' torch path with Zamba2's fixed parts:
/// the convolution always with its bias and SiLU (`use_conv_bias`,
/// `hidden_act` not read), Δ clamped below at `time_step_min`, the gated
/// RMSNorm with ε 1e-5, in_proj and out_proj biases by `add_bias_linear`.
/// `num_hidden_layers` must be the layer list's length (the config class's
/// layer-type check).
///
/// Block-drop exports remove Mamba layers and the last hybrid layers only:
/// transformers assigns the shared blocks and their adapters by a hybrid
/// layer's position among the hybrid layers, so removing one before a kept
/// one would give the later ones other weights.
struct Zamba2Model: ZambaHybridFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Zamba2Configuration
    let stack: ZambaHybridStack
    let heads: Mamba2Heads
    let rotary: RotaryEmbedding?

    init(_ checkpoint: Checkpoint) throws {
        let types = try checkpoint.decodeConfig(Zamba2LayerTypes.self)
        var stack = ZambaHybridStack(
            hybrid: types.hybrid, key: types.key, written: types.written, block: "shared_transformer", family: "Zamba2")
        let sizes = try checkpoint.decodeConfig(Zamba2Sizes.self)
        let d = sizes.hiddenSize
        // The config class's layer-type check: one type per layer.
        if sizes.layers != types.hybrid.count {
            throw InvalidConfigValue(
                key: "num_hidden_layers", problem: "must be the number of layers \(types.key) lists (\(types.hybrid.count)), got \(sizes.layers)"
            ).error(path: checkpoint.configURL.path)
        }
        var overrides: [String: ConfigDefault] = [
            "intermediate_size": .integer(sizes.intermediateSize.flatMap { $0 == 0 ? nil : $0 } ?? 4 * d),
            "head_dim": .integer(sizes.headDim),
        ]
        // use_long_context sets the positions to 16384 whatever config.json says.
        if sizes.useLongContext { overrides["max_position_embeddings"] = 16384 }
        let section = ConfigSection(
            defaults: [
                "hidden_size": 2560, "num_hidden_layers": 54, "num_attention_heads": 32, "vocab_size": 32000,
                "max_position_embeddings": 4096,
            ],
            overrides: overrides)
        parts = try DecoderParts(
            checkpoint, section: section, naming: stack.naming, finalNorm: "final_layernorm")
        config = try parts.config(Zamba2Configuration.self)
        let parts = self.parts
        stack.memoryBlocks = config.memoryBlocks
        self.stack = stack
        let hybridLayers = stack.hybridLayers
        let dims = parts.dimensions, config = config
        var heads: Mamba2Heads?
        try parts.checks {
            heads = try config.heads(hidden: d)
            guard !hybridLayers.isEmpty else { return }
            // No block to give the hybrid layers (transformers' block cycle stops).
            try ConfigRules.count(config.memoryBlocks, "num_mem_blocks")
            let width = dims.numAttentionHeads * dims.resolvedHeadDim
            if config.attentionAdapters, width != 2 * d || dims.kvHeads * dims.resolvedHeadDim != 2 * d {
                throw InvalidConfigValue(
                    key: "use_shared_attention_adapter",
                    problem: "is true, but the adapters' 2 × hidden_size outputs (\(2 * d)) are not the query width "
                        + "(\(width)) and the key/value width (\(dims.kvHeads * dims.resolvedHeadDim)) they are added to")
            }
        }
        self.heads = heads!
        _ = try parts.activation(config.hiddenAct)
        let drops = parts.configuredDrops, path = parts.configPath
        try stack.confirmKinds(parts)
        if let first = stack.firstKeptMixer(drops) {
            try parts.weights.confirmShape(
                first + "in_proj.weight", [self.heads.projectionWidth, d],
                keys: "2 × mamba_expand × hidden_size + 2 × mamba_ngroups × mamba_d_state + n_mamba_heads, hidden_size",
                configPath: path)
        }
        // The rope settings are the config class's whether or not use_mem_rope reads them.
        let table = try parts.rotary(confirmProjections: false)
        rotary = config.useMemRope ? table : nil
        // Each kept hybrid layer's block as it reads it (with untied embeddings, each its own stored copy).
        for (position, layer) in hybridLayers.enumerated() where !drops.dropsAttention(layer) {
            func p(_ module: String) -> String {
                stack.sharedModule(module, layer: layer, position: position, parts: parts) + ".weight"
            }
            try parts.weights.confirmShape(
                p("self_attn.q_proj"), [dims.numAttentionHeads * dims.resolvedHeadDim, 2 * d],
                keys: "num_attention_heads × 2 × hidden_size / num_attention_heads, 2 × hidden_size", configPath: path)
            try parts.weights.confirmShape(
                p("self_attn.k_proj"), [dims.kvHeads * dims.resolvedHeadDim, 2 * d],
                keys: "num_key_value_heads × 2 × hidden_size / num_attention_heads, 2 × hidden_size", configPath: path)
            try parts.weights.confirmShape(
                p("feed_forward.gate_up_proj"), [2 * dims.intermediateSize, d], keys: "2 × intermediate_size, hidden_size",
                configPath: path)
        }
    }

    /// Block drops of Mamba layers and the last hybrid layers: transformers
    /// gives each hybrid layer its block and adapters by its position among
    /// the hybrid layers, so removing one before a kept one would give the
    /// kept ones after it other weights.
    func exportProblem(_ plan: DropPlan) -> String? {
        if let problem = stack.moduleDropProblem(plan) { return problem }
        let kept = stack.hybridLayers.filter { !plan.blocks.contains($0) }
        let hybrids = stack.hybridLayers.filter { layer in plan.blocks.contains(layer) && kept.contains { $0 > layer } }
        guard !hybrids.isEmpty else { return nil }
        return "dropping hybrid layer\(hybrids.count == 1 ? "" : "s") \(hybrids.map(String.init).joined(separator: ", ")) cannot be "
            + "exported: transformers gives each hybrid layer its shared transformer block (of num_mem_blocks, used in turn) and its "
            + "LoRA adapters by its position among the hybrid layers, so the kept hybrid layers after it would load with other "
            + "weights; drop Mamba layers or the last hybrid layers only"
    }

    var rmsNormEps: Double { config.rmsNormEps }

    func mambaMixer(_ prefix: String) throws -> TokenMixer {
        .mamba2(try Mamba2Mixer.stored(
            prefix, weights: parts.weights, hidden: hiddenSize, heads: heads, projectionBias: config.addBiasLinear,
            convolutionBias: true, activation: .silu, timeStepLimit: (config.timeStepMin, .infinity), eps: 1e-5))
    }

    /// Hybrid layer `index`'s shared transformer path, the `position`-th
    /// hybrid layer's: its block's weights (`sharedModule`) with its own
    /// adapters merged in, then its `linear`.
    func sharedBlock(_ index: Int, position: Int) throws -> AttentionBranch {
        let weights = parts.weights, dims = parts.dimensions, d = hiddenSize, eps = config.rmsNormEps, bias = config.addBiasLinear
        func module(_ name: String) -> String {
            stack.sharedModule(name, layer: index, position: position, parts: parts)
        }
        let headDim = dims.resolvedHeadDim, width = 2 * d
        let layout = QKVLayout(numHeads: dims.numAttentionHeads, numKVHeads: dims.kvHeads, headDim: headDim)
        /// `base` [out, in] plus the adapter `list`'s entry for this layer, up · down.
        func adapted(_ base: Linear, _ list: String) throws -> Linear {
            let rank = config.adapterRank, (inputs, outputs) = (base.inFeatures, base.outFeatures)
            let downName = module("\(list).\(position).0"), upName = module("\(list).\(position).1")
            // Adapters stored for another rank are refused (transformers' shape check), rank 0 included.
            guard rank > 0 || weights.has(downName + ".weight") else { return base }
            let down = try weights.floats(downName + ".weight", [rank, inputs])
            let up = try weights.linear(upName, in: rank, out: outputs, bias: false)
            // (up · down)ᵀ = downᵀ · upᵀ [in, out], up applied to the rows of downᵀ.
            let transposed = Matrix(uninitialized: inputs, rank) { out in
                for r in 0..<rank { for j in 0..<inputs { out[j * rank + r] = down[r * inputs + j] } }
            }
            let product = Linear(weight: up.weight, bias: nil, inFeatures: rank, outFeatures: outputs, arithmetic: .f32)(transposed)
            var merged = base.weight
            for o in 0..<outputs { for j in 0..<inputs { merged[o * inputs + j] += product.data[j * outputs + o] } }
            return Linear(weight: merged, bias: base.bias, inFeatures: inputs, outFeatures: outputs)
        }
        var projections: [Linear] = []
        for (name, heads) in [("q", layout.numHeads), ("k", layout.numKVHeads), ("v", layout.numKVHeads)] {
            let base = try weights.linear(module("self_attn.\(name)_proj"), in: width, out: heads * headDim, bias: false)
            projections.append(config.attentionAdapters ? try adapted(base, "self_attn.linear_\(name)_adapter_list") : base)
        }
        let qkv = Linear(
            weight: projections.flatMap(\.weight), bias: nil, inFeatures: width, outFeatures: projections.reduce(0) { $0 + $1.outFeatures })
        let attention = SelfAttention(
            qkv: qkv, layout: layout, rotary: rotary,
            output: try weights.linear(module("self_attn.o_proj"), in: layout.queryWidth, out: d, bias: false),
            scale: Float(pow(Double(headDim) / 2, -0.5)))
        let inner = dims.intermediateSize
        let gateUp = try adapted(
            try weights.linear(module("feed_forward.gate_up_proj"), in: d, out: 2 * inner, bias: bias), "feed_forward.gate_up_proj_adapter_list")
        let feedForward = FeedForward.gated(
            gateUp: gateUp, down: try weights.linear(module("feed_forward.down_proj"), in: inner, out: d, bias: bias),
            activation: try parts.activation(config.hiddenAct))
        return AttentionBranch(
            inputNorm: try weights.rmsNorm(module("input_layernorm"), size: width, eps: eps), attention: attention, appendsLayerInput: true,
            feedForward: BranchFeedForward(
                norm: try weights.rmsNorm(module("pre_ff_layernorm"), size: d, eps: eps), feedForward: feedForward,
                projection: try weights.linear("layers.\(index).linear", in: d, out: d, bias: false)))
    }
}

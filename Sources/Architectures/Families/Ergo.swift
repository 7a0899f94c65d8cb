import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `ergo`, with ErgoConfig's defaults (transformers'
/// `models/ergo/configuration_ergo.py`). The released spelling
/// `local_attention_window` is read as `sliding_window` (its attribute map).
struct ErgoConfiguration: Decodable {
    var rmsNormEps: Double
    /// The dense MLP's width (the leading layers'); ErgoConfig has no `intermediate_size`.
    var firstDenseIntermediateSize: Int
    /// Read only when `mlp_layer_types` is absent.
    var numDenseBlocks: Int
    var moeIntermediateSize: Int
    var sharedIntermediateSize: Int
    var numExperts: Int
    var numExpertsPerTok: Int
    var moeRoutedScalingFactor: Double
    var slidingWindow: Int
    /// Read only when `layer_types` is absent.
    var globalAttentionEveryNLayers: Int
    /// Multiplies the full layers' attention logits (their queries and keys
    /// each by its square root); nil: none.
    var globalAttentionScale: Double?
    var layerTypes: [String]?
    var mlpLayerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case firstDenseIntermediateSize = "first_dense_intermediate_size"
        case numDenseBlocks = "num_dense_blocks"
        case moeIntermediateSize = "moe_intermediate_size"
        case sharedIntermediateSize = "shared_intermediate_size"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case moeRoutedScalingFactor = "moe_routed_scaling_factor"
        case slidingWindow = "sliding_window"
        case globalAttentionEveryNLayers = "global_attention_every_n_layers"
        case globalAttentionScale = "global_attention_scale"
        case layerTypes = "layer_types"
        case mlpLayerTypes = "mlp_layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-12
        firstDenseIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .firstDenseIntermediateSize) ?? 32768
        numDenseBlocks = try c.decodeIfPresent(Int.self, forKey: .numDenseBlocks) ?? 1
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 4096
        sharedIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .sharedIntermediateSize) ?? 8192
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 256
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 8
        moeRoutedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .moeRoutedScalingFactor) ?? 8.0.squareRoot()
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow) ?? 512
        globalAttentionEveryNLayers = try c.decodeIfPresent(Int.self, forKey: .globalAttentionEveryNLayers) ?? 4
        globalAttentionScale = try c.decodeIfPresent(Double.self, forKey: .globalAttentionScale)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
    }

    /// Each layer's MLP, "dense" or "sparse": `mlp_layer_types`, else the
    /// first `num_dense_blocks` dense (ErgoConfig's rule).
    func mlpTypes(layers: Int) -> [String] {
        MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: numDenseBlocks)
    }

    /// Refuses what ErgoConfig refuses or ErgoForCausalLM cannot build or
    /// run, before anything is sized from it (`layers`: num_hidden_layers).
    func check(layers: Int) throws {
        try MLPLayerTypes.checkEntries(mlpLayerTypes)
        // validate_layer_type: one entry per layer.
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: layers, validated: true)
        let types = mlpTypes(layers: layers)
        if types.contains("dense") { try ConfigRules.count(firstDenseIntermediateSize, "first_dense_intermediate_size") }
        if types.contains("sparse") {
            try ConfigRules.count(numExperts, "num_experts")
            try MixtureOfExperts.checkExpertsPerToken(numExpertsPerTok, of: numExperts, expertsKey: "num_experts")
            try ConfigRules.count(moeIntermediateSize, "moe_intermediate_size")
            try ConfigRules.count(sharedIntermediateSize, "shared_intermediate_size")
            guard moeRoutedScalingFactor.isFinite, Float(moeRoutedScalingFactor).isFinite else {
                throw InvalidConfigValue(
                    key: "moe_routed_scaling_factor", problem: "must be a finite number that float32 holds, got \(moeRoutedScalingFactor)")
            }
        }
    }

    /// Refuses a `global_attention_scale` whose square root (the factor of
    /// the full layers' queries and keys) is not a real float32 number.
    func checkGlobalScale() throws {
        guard let scale = globalAttentionScale else { return }
        guard scale >= 0, scale.isFinite, Float(scale.squareRoot()).isFinite else {
            throw InvalidConfigValue(
                key: "global_attention_scale",
                problem: "must be a finite number of at least 0 (ErgoAttention multiplies queries and keys by its square root), got \(scale)")
        }
    }
}

/// Ergo (`ergo`, Amazon's Ergo models; transformers'
/// `models/ergo/modeling_ergo.py`): blocks with an RMSNorm at both ends of
/// each branch, each branch joining the stream through a learned residual
/// gate (`ResidualGate`: σ(w) ⊙ out + √(1 + σ(w)) · e^(−softplus(w)/2) ⊙ x)
/// rather than a sum,
///
///     H = gate_a(RMSNorm(Attn(RMSNorm X)), X),   Y = gate_f(RMSNorm(MLP(RMSNorm H)), H)
///
/// (`input_layernorm` / `post_attention_layernorm` / `attention_residual_gate`,
/// `pre_feedforward_layernorm` / `post_feedforward_layernorm` /
/// `feedforward_residual_gate`); every RMSNorm plain (weight × x̂), epsilon
/// `rms_norm_eps` (1e-12).
///
/// The attention projects q | k | v with one `qkv_proj` (heads
/// hidden_size / num_attention_heads wide; no biases), normalises each query
/// and key head (`q_norm`, `k_norm`), and by `layer_types` (when absent every
/// `global_attention_every_n_layers`-th layer, 4, full) the sliding layers
/// rotate interleaved pairs (dimensions 2i, 2i + 1; angles in float64, as
/// ErgoRotaryEmbedding computes them) and attend within `sliding_window`
/// (512), the full layers attend without positions, their queries and keys
/// times √`global_attention_scale` when set. A flat `rope_parameters`
/// describes the sliding layers (base 1e6 by default); a nested one gives
/// each type its entry (null: no positions). The interleaved pairs are
/// gathered when the weights are read, as Cohere's are (the q/k norm
/// weights with them); the √scale is folded into the full layers' q/k norm weights.
///
/// The MLP is, on the `mlp_layer_types` layers marked dense (by default the
/// first `num_dense_blocks`, 1), a non-gated ReLU² MLP of
/// `first_dense_intermediate_size`; elsewhere `num_experts` (256) ReLU²
/// experts of `moe_intermediate_size` stored fused and transposed
/// (`mlp.experts.up_proj` [experts, hidden, inner], `down_proj` [experts,
/// inner, hidden]), each expert's output normalised by its own RMSNorm
/// weight (`mlp.experts.post_expert_norm.weight` [experts, hidden]) before
/// the weighted sum; routed by `mlp.gate.linear` with sigmoid scores, the
/// top `num_experts_per_tok` (8) by score plus `mlp.gate.e_score_correction_bias`,
/// weights renormalised and times `moe_routed_scaling_factor` (√8); plus a
/// shared ReLU² expert of `shared_intermediate_size` ending at its own
/// RMSNorm (`mlp.shared_experts.norm`). The head is never tied (ErgoConfig
/// has no `tie_word_embeddings`; a written one is not read).
///
/// transformers saves Ergo under the released names (`tok_embeddings`,
/// `layers.<i>.attention.wqkv`, `feed_forward.up_proj`, `output`, ...),
/// which its conversion mapping renames on load (`TensorRenamings`); the
/// router (`feed_forward.gate_kernel`) and the shared expert
/// (`feed_forward.shared_up_proj`, `shared_down_proj`) are stored [in, out]
/// and transposed on load (`Released`). transformers' own module names are
/// read as well; per-expert tensors are refused (the mapping collects none).
struct ErgoModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: ErgoConfiguration
    let layerTypes: [String]
    let mlpTypes: [String]
    /// The rotation of each layer type that takes positions.
    let rotaries: [String: RotaryEmbedding]

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the experts are checked with the layers, by mlp_layer_types.
        let config = try checkpoint.decodeConfig(ErgoConfiguration.self, section: .topLevel)
        let path = checkpoint.configURL.path
        // ErgoConfig has no intermediate_size: the dense MLP's width stands for it.
        let section = ConfigSection(overrides: ["intermediate_size": .integer(max(1, config.firstDenseIntermediateSize))])
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self, section: section).numHiddenLayers
        try ConfigRules.checks(path: path) { try config.check(layers: layers) }
        let mlpTypes = config.mlpTypes(layers: layers)
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        self.config = config
        self.mlpTypes = mlpTypes
        parts = try DecoderParts(
            checkpoint, section: section, tiedEmbeddings: false, naming: { Self.naming($0) },
            experts: ExpertNaming(
                parts: ["mlp.experts."], projections: ["up_proj", "down_proj"], count: config.numExperts, countKey: "num_experts",
                isSparse: isSparse, fusedNames: ["up_proj", "down_proj"]))
        let parts = parts
        try parts.confirmHeadDimIsHiddenOverHeads(": ErgoAttention's heads are")
        let types = try config.layerTypes ?? SlidingWindowPattern.everyNthFull(
            layers: layers, pattern: config.globalAttentionEveryNLayers, key: "global_attention_every_n_layers",
            configClass: "ErgoConfig", path: path)
        layerTypes = try parts.layerTypes(types, slidingWindow: config.slidingWindow) { _ in AttentionLayerType.full }
        if layerTypes.contains(AttentionLayerType.full) { try ConfigRules.checks(path: path) { try config.checkGlobalScale() } }
        try parts.confirmLayerKinds(
            mlpTypes, key: config.mlpLayerTypes == nil ? "num_dense_blocks" : MLPLayerTypes.key, mlp: true,
            probes: ["dense": ["mlp.up_proj.weight"], "sparse": ["mlp.gate.linear.weight", "feed_forward.gate_kernel"]])
        try Self.confirmShapes(parts, config: config, isSparse: isSparse)
        var rotaries = try parts.rotariesAsWritten(
            types: Set(layerTypes), defaults: [:], rotaryClass: "ErgoRotaryEmbedding", attentionClass: "ErgoAttention",
            // The default rotation ignores partial_rotary_factor; a scaled one's narrower table fails in ErgoAttention.
            partialRotary: { _ in .ignored }, nullIsNoPositions: true, inheritsPartialRotaryFactor: true, inheritedRopeTheta: 1_000_000,
            entries: try Self.ropeEntries(checkpoint, layerTypes: Set(layerTypes)))
        for type in rotaries.keys { rotaries[type]!.anglesInDouble = true }
        self.rotaries = rotaries
        if !rotaries.isEmpty, parts.firstKeptAttention != nil, parts.attentionLayout.headDim % 2 != 0 {
            throw DroptraceError(
                "heads of \(parts.attentionLayout.headDim) dimensions (hidden_size / num_attention_heads): ErgoAttention's rotary pairs need an even head width",
                path: path)
        }
    }

    /// Checks the tensors of the first kept layers against the sizes, before anything is read.
    private static func confirmShapes(_ parts: DecoderParts, config: ErgoConfiguration, isSparse: (Int) -> Bool) throws {
        let d = parts.dimensions, path = parts.configPath, weights = parts.weights
        if let layer = parts.firstKeptAttention {
            try parts.confirmProjections(layer: layer, [(
                "qkv_proj", (d.numAttentionHeads + 2 * d.kvHeads) * d.resolvedHeadDim,
                "(num_attention_heads + 2 × num_key_value_heads) × (hidden_size / num_attention_heads)")])
        }
        let kept = (0..<d.numHiddenLayers).filter { !parts.configuredDrops.dropsMLP($0) }
        if let layer = kept.first(where: { !isSparse($0) }) {
            try weights.confirmShape(
                "layers.\(layer).mlp.up_proj.weight", [config.firstDenseIntermediateSize, d.hiddenSize],
                keys: "first_dense_intermediate_size, hidden_size", configPath: path)
        }
        if let layer = kept.first(where: isSparse) {
            let p = "layers.\(layer).mlp."
            try weights.confirmShape(
                p + "experts.up_proj", [config.numExperts, d.hiddenSize, config.moeIntermediateSize],
                keys: "num_experts, hidden_size, moe_intermediate_size", configPath: path)
            for (linear, out, key) in [(Released.router, config.numExperts, "num_experts"),
                                       (Released.sharedUp, config.sharedIntermediateSize, "shared_intermediate_size")] {
                let (name, released) = try linear.stored(weights, layer: layer)
                try weights.confirmShape(
                    name, released ? [d.hiddenSize, out] : [out, d.hiddenSize],
                    keys: released ? "hidden_size, \(key)" : "\(key), hidden_size", configPath: path)
            }
        }
    }

    /// A projection the released checkpoints store transposed, [in, out]
    /// under `feed_forward.<saved>`, which transformers' conversion mapping
    /// transposes into its `mlp.<renamed>.weight` [out, in] (a
    /// `WeightConverter`, not a renaming); transformers' own name is read too.
    struct Released {
        let saved: String
        let renamed: String
        static let router = Released(saved: "gate_kernel", renamed: "gate.linear")
        static let sharedUp = Released(saved: "shared_up_proj", renamed: "shared_experts.up_proj")
        static let sharedDown = Released(saved: "shared_down_proj", renamed: "shared_experts.down_proj")

        /// Layer `layer`'s tensor name and whether it is the released one.
        /// - Throws: `DroptraceError` when both are stored (transformers reads them as one parameter).
        func stored(_ weights: Weights, layer: Int) throws -> (name: String, released: Bool) {
            let saved = "layers.\(layer).feed_forward." + self.saved, renamed = "layers.\(layer).mlp." + self.renamed + ".weight"
            let name = try weights.storedName(saved: renamed, renamed: saved)
            return (name, name == saved)
        }

        /// Layer `layer`'s projection, bias-free, [out, in] as transformers holds it.
        func linear(_ weights: Weights, layer: Int, in inFeatures: Int, out outFeatures: Int) throws -> Linear {
            let (name, released) = try stored(weights, layer: layer)
            guard released else { return try weights.linear(String(name.dropLast(".weight".count)), in: inFeatures, out: outFeatures, bias: false) }
            return Linear(
                weight: try weights.floats(name, [inFeatures, outFeatures]), bias: nil, inFeatures: inFeatures, outFeatures: outFeatures,
                layout: .inByOut)
        }
    }

    /// ErgoConfig's rope parameters per layer type, as `convert_rope_params_to_dict`
    /// builds them: `rope_scaling` when truthy, else `rope_parameters`, else
    /// {}; a flat object (no entry named by a layer type in use) is the
    /// sliding layers', the full layers taking no positions; a nested one
    /// keeps its entries (a null entry: no positions). `rotariesAsWritten`
    /// completes each entry with the top-level `rope_theta` (1e6 where
    /// absent) and `partial_rotary_factor`, as the class does.
    static func ropeEntries(_ checkpoint: Checkpoint, layerTypes: Set<String>) throws -> [String: Any] {
        let parameters = try DecoderParts.writtenRopeParameters(
            checkpoint.configObject(.topLevel), path: checkpoint.configURL.path).parameters
        guard parameters.keys.contains(where: layerTypes.contains) else {
            return [AttentionLayerType.sliding: parameters, AttentionLayerType.full: NSNull()]
        }
        return parameters
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.",
            attention: ["self_attn.", "input_layernorm.", "post_attention_layernorm.", "attention_residual_gate."],
            // feed_forward.: the released router and shared expert, which transformers transposes (`Released`).
            mlp: ["mlp.", "feed_forward.", "pre_feedforward_layernorm.", "post_feedforward_layernorm.", "feedforward_residual_gate."],
            layerCountKeys: ["num_hidden_layers"])
    }

    /// Exports without some blocks spell out the kept layers' attention and MLP types.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes, mlpTypes: mlpTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            norms: ("input_layernorm", "pre_feedforward_layernorm"),
            outputNorms: ("post_attention_layernorm", "post_feedforward_layernorm"),
            residualJoins: (
                { try parts.residualGate("layers.\(index).attention_residual_gate") },
                { try parts.residualGate("layers.\(index).feedforward_residual_gate") }),
            attention: { try attention(layer: index) }, feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s ErgoAttention: the fused q | k | v projection with the
    /// rotary pairs gathered per head, per-head q/k RMSNorms (their weights
    /// gathered alike, times √global_attention_scale on full layers when set).
    func attention(layer index: Int) throws -> SelfAttention {
        let weights = parts.weights, layout = parts.attentionLayout, headDim = layout.headDim, d = hiddenSize
        let p = "layers.\(index).self_attn.", type = layerTypes[index]
        let full = type == AttentionLayerType.full
        let qkScale = full ? config.globalAttentionScale.map { Float($0.squareRoot()) } : nil
        func headNorm(_ name: String) throws -> Normalization {
            let weight = LatentQKVProjection.deinterleavingRope(
                try weights.floats(p + name + ".weight", [headDim]), rowWidth: 1, ropeStarts: [0], ropeDim: headDim)
            return .rms(weight: qkScale.map { scale in weight.map { $0 * scale } } ?? weight, eps: Float(config.rmsNormEps))
        }
        let qkv = try weights.linear(p + "qkv_proj", in: d, out: layout.width, bias: false)
        return SelfAttention(
            qkv: DecoderParts.interleavingPairs(qkv, layout: layout, rotaryDim: headDim), layout: layout, rotary: rotaries[type],
            output: try weights.linear(p + "o_proj", in: layout.queryWidth, out: d, bias: false),
            scale: 1 / Float(headDim).squareRoot(), slidingWindow: full ? nil : config.slidingWindow,
            queryKeyNorm: .perHead(query: try headNorm("q_norm"), key: try headNorm("k_norm")))
    }

    /// down(relu²(up x)), its output normalised by RMSNorm weight `norm` when given (Ergo's experts).
    func reluSquared(up: Linear, down: Linear, norm: [Float]? = nil) -> FeedForward {
        let mlp = FeedForward.plain(up: up, down: down, activation: .reluSquared)
        guard let norm else { return mlp }
        return .parallel([FeedForwardPart(inputNorm: nil, feedForward: mlp, outputNorm: .rms(weight: norm, eps: Float(config.rmsNormEps)))])
    }

    /// Layer `index`'s MLP: ErgoMLP on dense layers, else ErgoMoE (router,
    /// routed experts each ending at its own RMSNorm, the shared expert).
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", weights = parts.weights, d = hiddenSize
        guard mlpTypes[index] == "sparse" else {
            let inner = config.firstDenseIntermediateSize
            return reluSquared(
                up: try weights.linear(p + "up_proj", in: d, out: inner, bias: false),
                down: try weights.linear(p + "down_proj", in: inner, out: d, bias: false))
        }
        let count = config.numExperts, inner = config.moeIntermediateSize
        let up = Weights.expertLinears(
            try weights.floats(p + "experts.up_proj", [count, d, inner]), count: count, in: d, out: inner, layout: .inByOut)
        let down = Weights.expertLinears(
            try weights.floats(p + "experts.down_proj", [count, inner, d]), count: count, in: inner, out: d, layout: .inByOut)
        let norms = try weights.floats(p + "experts.post_expert_norm.weight", [count, d])
        let experts = (0..<count).map { e in reluSquared(up: up[e], down: down[e], norm: Array(norms[(e * d)..<((e + 1) * d)])) }
        let shared = reluSquared(
            up: try Released.sharedUp.linear(weights, layer: index, in: d, out: config.sharedIntermediateSize),
            down: try Released.sharedDown.linear(weights, layer: index, in: config.sharedIntermediateSize, out: d),
            norm: try weights.floats(p + "shared_experts.norm.weight", [d]))
        let routing = GroupLimitedTopK(
            scoring: .sigmoid, groupScore: .best, groups: 1, groupsPerToken: 1,
            // A checkpoint without the bias leaves transformers' zeros.
            selectionBias: weights.has(p + "gate.e_score_correction_bias")
                ? try weights.floats(p + "gate.e_score_correction_bias", [count]) : nil, normalizesWeights: true,
            scalingFactor: Float(config.moeRoutedScalingFactor))
        return .mixture(MixtureOfExperts(
            router: try Released.router.linear(weights, layer: index, in: d, out: count), experts: experts,
            expertsPerToken: config.numExpertsPerTok, rule: .groupLimited(routing), sharedExperts: [shared]))
    }
}

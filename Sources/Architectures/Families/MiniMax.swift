import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `minimax`, with MiniMaxConfig's defaults
/// (transformers' `models/minimax/configuration_minimax.py`).
struct MiniMaxConfiguration: Decodable {
    static let full = AttentionLayerType.full, linear = HybridQwenConfiguration.linear

    var rmsNormEps: Double
    var hiddenAct: String
    var slidingWindow: Int?
    /// `num_local_experts` (`num_experts` is its alias).
    var numLocalExperts: Int
    /// The key config.json gives the expert count under, for errors.
    var numLocalExpertsKey: String
    var numExpertsPerTok: Int
    /// Each layer's token mixer as written, legacy names read as the current ones.
    var layerTypes: [String]?
    /// The original release's per-layer kinds (0 lightning, 1 softmax),
    /// which MiniMaxConfig does not read.
    var attnTypeList: [Int]?
    var blockSize: Int
    /// The residual scalings by the keys transformers reads
    /// (`full_attn_alpha_factor`, ...; 1 where absent): alpha scales the
    /// normed stream, beta the branch's output.
    var scalings: [String: Double] = [:]
    /// The original release's spellings of the scalings
    /// (`layernorm_full_attention_alpha`, ...), which MiniMaxConfig does not
    /// read, by the key transformers reads instead.
    var releasedScalings: [(released: String, read: String, value: Double)] = []
    /// The branches scaled, by transformers' prefix and the released one.
    static let scaledBranches = [("full_attn", "full_attention"), ("linear_attn", "linear_attention"), ("mlp", "mlp")]

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case slidingWindow = "sliding_window"
        case numLocalExperts = "num_local_experts"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case layerTypes = "layer_types"
        case attnTypeList = "attn_type_list"
        case blockSize = "block_size"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        let local = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts)
        let alias = try c.decodeIfPresent(Int.self, forKey: .numExperts)
        numLocalExperts = local ?? alias ?? 8
        numLocalExpertsKey = local == nil && alias != nil ? "num_experts" : "num_local_experts"
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 2
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)?.map { ConfigValueKinds.legacyLayerTypes[$0] ?? $0 }
        attnTypeList = try? c.decodeIfPresent([Int].self, forKey: .attnTypeList)
        blockSize = try c.decodeIfPresent(Int.self, forKey: .blockSize) ?? 256
        // The released spellings are read for their agreement with the keys transformers reads (checkReleasedSpellings).
        let named = try decoder.container(keyedBy: ConfigKey.self)
        for (branch, releasedBranch) in Self.scaledBranches {
            for part in ["alpha", "beta"] {
                let read = "\(branch)_\(part)_factor"
                scalings[read] = try named.decodeIfPresent(Double.self, forKey: ConfigKey(read)) ?? 1
                let released = ConfigKey("layernorm_\(releasedBranch)_\(part)")
                guard let value = try? named.decodeIfPresent(Double.self, forKey: released) else { continue }
                releasedScalings.append((released.stringValue, read, value))
            }
        }
        let (types, blockSize, scalings) = (layerTypes, blockSize, scalings)
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let local, let alias, local != alias {
                throw InvalidConfigValue(key: "num_local_experts", problem: "is \(local), but num_experts (the same setting) is \(alias)")
            }
            try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
            // torch.arange(block_size) sizes the decay tables; the blocks are counted by dividing by it.
            try ConfigRules.count(blockSize, "block_size")
            // Products with the stream in float32: a factor float32 cannot hold turns every score into a constant.
            for (key, value) in scalings.sorted(by: { $0.key < $1.key }) where !Float(value).isFinite {
                throw InvalidConfigValue(key: key, problem: "must be a finite number that float32 holds, got \(value)")
            }
            // The layer picks lightning attention for "linear_attention" and softmax attention for any
            // other type, whose mask transformers' MiniMaxModel then cannot find (KeyError).
            if let bad = types?.first(where: { $0 != Self.full && $0 != Self.linear }) {
                throw InvalidConfigValue(
                    key: "layer_types", problem: "must list \"full_attention\" or \"linear_attention\" per layer, got \"\(bad.forErrorMessage)\"")
            }
        }
    }

    /// Each layer's mixer: `layer_types`, else MiniMaxConfig's rule (even
    /// layers full attention, odd ones lightning).
    func resolvedLayerTypes(_ layers: Int) -> [String] {
        layerTypes ?? (0..<layers).map { ($0 + 1) % 2 != 0 ? Self.full : Self.linear }
    }

    /// The (alpha, beta) transformers scales `branch` by: "full_attn", "linear_attn" or "mlp".
    func scaling(_ branch: String) -> (alpha: Double, beta: Double) {
        (scalings["\(branch)_alpha_factor"] ?? 1, scalings["\(branch)_beta_factor"] ?? 1)
    }

    /// Refuses the original release's spellings where they describe another
    /// model than transformers runs: `layernorm_*_alpha` / `_beta` other than
    /// the `*_factor` transformers reads (other implementations read the
    /// released ones first), and an `attn_type_list` (0 lightning, 1
    /// softmax) other than the layers transformers builds.
    func checkReleasedSpellings(_ types: [String]) throws {
        for (released, read, value) in releasedScalings where value != scalings[read] {
            throw InvalidConfigValue(
                key: released,
                problem: "is \(value), but transformers ignores it and scales by \(read), \(scalings[read] ?? 1); write \(read) to the value the weights were trained with")
        }
        try checkAttentionTypeList(types)
    }

    /// Refuses an `attn_type_list` (the original release's spelling, which
    /// MiniMaxConfig ignores) that gives other layer kinds than the ones
    /// transformers runs: transformers would run another model than the
    /// list describes.
    func checkAttentionTypeList(_ types: [String]) throws {
        guard let list = attnTypeList else { return }
        let described = list.map { $0 == 1 ? Self.full : $0 == 0 ? Self.linear : "?" }
        guard described != types else { return }
        let source = layerTypes == nil ? "MiniMaxConfig's default (full attention on even layers)" : "layer_types"
        throw InvalidConfigValue(
            key: "attn_type_list",
            problem: "describes layers \(list), but transformers ignores it and runs the layers \(source) gives, \(types); "
                + "write layer_types to match the weights")
    }
}

/// MiniMax-Text-01 and MiniMax-M1 (`minimax`, MiniMaxForCausalLM;
/// transformers' `models/minimax/modeling_minimax.py`): Mixtral's sparse
/// MLP (softmax top-`num_experts_per_tok` of `num_local_experts` SwiGLU
/// experts, renormalised) after a token mixer that is, by `layer_types`
/// (else full attention on even layers, lightning attention on odd ones),
///
/// - "full_attention": Mixtral's attention (rotary base 1e6 unless given,
///   `sliding_window` when set);
/// - "linear_attention": lightning attention (`LightningAttention`) with
///   `block_size`-token blocks, its decay tables read from the checkpoint
///   where stored (as transformers loads them), else computed from the
///   layer's position as MiniMaxLightningAttention computes them.
///
/// The layer's residual is the *normed* stream: with n = input_layernorm(x),
/// h = α·n + β·mixer(n) (α, β: `full_attn_*_factor` or
/// `linear_attn_*_factor` by the layer's kind), then with m =
/// post_attention_layernorm(h), y = α'·m + β'·mlp(m) (`mlp_*_factor`), each
/// product rounded to float32 before the sum (`ResidualJoin.scalingNormalized`):
/// a dropped branch leaves the stream as it was, its norm included.
/// Experts are read as saved (`block_sparse_moe.experts.<e>.w1|w3|w2`) or
/// fused under `mlp.` (transformers' conversion renames them alike).
struct MiniMaxModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    /// The decay tables MiniMaxLightningAttention keeps as buffers.
    static let decayBuffers = ["slope_rate", "query_decay", "key_decay", "diagonal_decay"]

    let parts: DecoderParts
    let config: MiniMaxConfiguration
    let layerTypes: [String]
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the expert tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(MiniMaxConfiguration.self)
        self.config = config
        parts = try DecoderParts(
            checkpoint, naming: MixtralModel.naming,
            experts: MixtralModel.experts(count: config.numLocalExperts, countKey: config.numLocalExpertsKey, projections: ["w1", "w3", "w2"]))
        let d = parts.dimensions
        let types = config.resolvedLayerTypes(d.numHiddenLayers)
        layerTypes = types
        try ConfigRules.checks(path: parts.configPath) {
            try config.checkReleasedSpellings(types)
            if types.contains(MiniMaxConfiguration.linear) {
                // The lightning layers' q | k | v and decay tables.
                let heads = (d.numAttentionHeads, "num_attention_heads"), width = (d.resolvedHeadDim, "head_dim")
                try ConfigRules.product([heads, width, (3, "q, k and v"), (d.hiddenSize, "hidden_size")])
                try ConfigRules.product([heads, width, width])
            }
        }
        try parts.confirmLayerKinds(
            types, probes: [MiniMaxConfiguration.full: ["self_attn.q_proj.weight"], MiniMaxConfiguration.linear: ["self_attn.qkv_proj.weight"]])
        rotary = try parts.rotary(defaultTheta: 1_000_000, confirmProjections: false)
        try parts.confirmAttentionProjections(layers: types.indices.filter { types[$0] == MiniMaxConfiguration.full })
        let drops = parts.configuredDrops, width = d.numAttentionHeads * d.resolvedHeadDim
        if let layer = types.indices.first(where: { types[$0] == MiniMaxConfiguration.linear && !drops.dropsAttention($0) }) {
            try parts.confirmProjections(layer: layer, [
                ("qkv_proj", 3 * width, "3 × num_attention_heads × head_dim"), ("output_gate", width, "num_attention_heads × head_dim"),
            ])
            // Stored decay tables sized for other blocks or heads: transformers refuses the mismatch.
            let (heads, size) = (d.numAttentionHeads, config.blockSize)
            for (name, shape) in zip(Self.decayBuffers, [[heads, 1, 1], [heads, size, 1], [heads, size, 1], [1, heads, size, size]])
            where parts.weights.has("layers.\(layer).self_attn.\(name)") {
                try parts.weights.confirmShape(
                    "layers.\(layer).self_attn.\(name)", shape, keys: name == "slope_rate" ? "num_attention_heads" : "num_attention_heads, block_size",
                    configPath: parts.configPath)
            }
        }
        try parts.checkMixtralExperts(
            count: config.numLocalExperts, countKey: config.numLocalExpertsKey, expertsPerToken: config.numExpertsPerTok,
            inner: d.intermediateSize, innerKey: "intermediate_size")
    }

    /// Columns of a lightning layer's heads.
    var lightningWidth: Int { parts.dimensions.numAttentionHeads * parts.dimensions.resolvedHeadDim }

    /// Exports without some blocks spell out the kept layers' kinds.
    var layerNaming: LayerNaming { parts.naming(spellingOut: layerTypes) }

    /// A block-drop export renumbers the layers and shortens the stack, from
    /// which transformers recomputes every decay table the checkpoint does not store.
    func exportProblem(_ plan: DropPlan) -> String? {
        guard !plan.blocks.isEmpty else { return nil }
        for layer in layerTypes.indices where layerTypes[layer] == MiniMaxConfiguration.linear && !plan.blocks.contains(layer) {
            if let missing = Self.decayBuffers.first(where: { !parts.weights.has("layers.\(layer).self_attn.\($0)") }) {
                return "lightning layer \(layer) stores no '\(missing)': transformers would compute it anew for the layer's "
                    + "new position in the shortened stack, another model than the one scored; drop no blocks, or store the tables"
            }
        }
        return nil
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let linear = layerTypes[index] == MiniMaxConfiguration.linear
        let scaling = config.scaling(linear ? "linear_attn" : "full_attn"), mlp = config.scaling("mlp")
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            residualJoins: (
                attention: { .scalingNormalized(stream: Float(scaling.alpha), output: Float(scaling.beta)) },
                mlp: { .scalingNormalized(stream: Float(mlp.alpha), output: Float(mlp.beta)) }),
            mixer: {
                guard linear else {
                    return .attention(try parts.attention(
                        "layers.\(index).self_attn.", bias: false, rotary: rotary, slidingWindow: config.slidingWindow))
                }
                return .lightningAttention(try lightningAttention(layer: index))
            },
            feedForward: {
                let sparse = try parts.mixtralExperts(
                    layer: index, count: config.numLocalExperts, inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.hiddenAct))
                return .mixture(MixtureOfExperts(router: sparse.router, experts: sparse.experts, expertsPerToken: config.numExpertsPerTok))
            })
    }

    /// Layer `index`'s lightning attention: qkv_proj and output_gate as one
    /// projection, the norm over all heads (MiniMaxRMSNorm's eps 1e-6), and
    /// each decay table as stored, else as the module computes it.
    func lightningAttention(layer index: Int) throws -> LightningAttention {
        let weights = parts.weights, p = "layers.\(index).self_attn.", d = hiddenSize
        let heads = parts.dimensions.numAttentionHeads, headDim = parts.dimensions.resolvedHeadDim, width = lightningWidth
        let size = config.blockSize
        func stored(_ name: String, _ shape: [Int]) throws -> [Float]? {
            weights.has(p + name) ? try weights.floats(p + name, shape) : nil
        }
        let defaultSlopes = LightningDecay.slopes(heads: heads, layer: index, layers: layerCount)
        let decay = LightningDecay(
            heads: heads, blockSize: size, slopes: try stored("slope_rate", [heads, 1, 1]) ?? defaultSlopes, tableSlopes: defaultSlopes,
            queryDecay: try stored("query_decay", [heads, size, 1]), keyDecay: try stored("key_decay", [heads, size, 1]),
            diagonalDecay: try stored("diagonal_decay", [1, heads, size, size]))
        return LightningAttention(
            headDim: headDim, decay: decay,
            projection: try weights.stackedLinear([p + "qkv_proj", p + "output_gate"], in: d, outs: [3 * width, width], bias: false),
            activation: try parts.activation(config.hiddenAct),
            norm: try weights.rmsNorm(p + "norm", size: width, eps: 1e-6),
            output: try weights.linear(p + "out_proj", in: width, out: d, bias: false))
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The routing keys ERNIE 4.5's mixture-of-experts config classes share,
/// with their defaults (Ernie4_5_MoeConfig, Ernie4_5_VLMoeTextConfig:
/// transformers' `models/ernie4_5_moe/configuration_ernie4_5_moe.py`,
/// `models/ernie4_5_vl_moe/configuration_ernie4_5_vl_moe.py`).
struct Ernie4_5MoeRouting: Decodable {
    /// `moe_num_experts`, which config.json may write as `num_experts`
    /// (nil: null, which the routed layers cannot be built from).
    var experts: Int?
    var expertsKey: String
    /// `moe_k`, which config.json may write as `num_experts_per_tok`.
    var expertsPerToken: Int?
    var expertsPerTokenKey: String
    /// `moe_num_shared_experts`: none unless above 0.
    var sharedExperts: Int?
    /// `moe_norm_min`: the least sum the chosen weights are divided by.
    var normMin: Double?

    enum CodingKeys: String, CodingKey {
        case moeNumExperts = "moe_num_experts"
        case numExperts = "num_experts"
        case moeK = "moe_k"
        case numExpertsPerTok = "num_experts_per_tok"
        case moeNumSharedExperts = "moe_num_shared_experts"
        case moeNormMin = "moe_norm_min"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        /// A setting with two spellings (the second an `attribute_map` alias,
        /// which transformers sets over the first): two values are refused.
        func aliased(_ key: CodingKeys, _ alias: CodingKeys, absent: Int) throws -> (Int?, String) {
            guard c.contains(alias) else { return (try c.written(key, absent: absent), key.rawValue) }
            let value = try c.decodeIfPresent(Int.self, forKey: alias)
            if c.contains(key), let first = try c.decodeIfPresent(Int.self, forKey: key), first != value {
                throw DecodingError.dataCorrupted(DecodingError.Context(
                    codingPath: [key],
                    debugDescription: "is \(first), but \(alias.rawValue) (the same setting) is \(value.map(String.init) ?? "null")"))
            }
            return (value, alias.rawValue)
        }
        (experts, expertsKey) = try aliased(.moeNumExperts, .numExperts, absent: 64)
        (expertsPerToken, expertsPerTokenKey) = try aliased(.moeK, .numExpertsPerTok, absent: 6)
        sharedExperts = try c.written(.moeNumSharedExperts, absent: 2)
        normMin = try c.written(.moeNormMin, absent: 1e-12)
    }

    /// Refuses what transformers could not build the routed layers from, or
    /// whose tensors would not fit in 64 bits, for routed experts and shared
    /// experts (each that many) `inner` (config key `innerKey`) wide.
    func check(_ d: DecoderDimensions, inner: Int, innerKey: String) throws {
        guard let experts else { throw InvalidConfigValue(key: expertsKey, problem: "must be set for the routed layers, got null") }
        try ConfigRules.count(experts, expertsKey)
        guard let k = expertsPerToken else {
            throw InvalidConfigValue(key: expertsPerTokenKey, problem: "must be set for the routed layers, got null")
        }
        guard (1...experts).contains(k) else {
            throw InvalidConfigValue(key: expertsPerTokenKey, problem: "must be between 1 and \(expertsKey) \(experts), got \(k)")
        }
        guard let sharedExperts else {
            throw InvalidConfigValue(key: "moe_num_shared_experts", problem: "must be an integer, got null")
        }
        try ConfigRules.count(inner, innerKey)
        let width = (d.hiddenSize, "hidden_size")
        try ConfigRules.product([(experts, expertsKey), (2, "gate and up"), (inner, innerKey), width])
        if sharedExperts > 0 {
            try ConfigRules.product([(sharedExperts, "moe_num_shared_experts"), (inner, innerKey), (2, "gate and up"), width])
        }
        // torch.clamp needs a bound; one float32 cannot hold would clamp every sum to infinity.
        guard let normMin, Float(normMin).isFinite else {
            throw InvalidConfigValue(key: "moe_norm_min", problem: "must be a number float32 holds, got \(normMin.map { "\($0)" } ?? "null")")
        }
    }

    /// A routed MLP of `parts`' layer `p` (e.g. "layers.1.mlp."): `router`
    /// [experts, hidden] takes a softmax in Float32, the `moe_k` experts of
    /// highest probability plus `selectionBias` are chosen (the bias chooses
    /// only), their probabilities divided by their sum but at least
    /// `moe_norm_min` weigh `experts`; `moe_num_shared_experts` shared
    /// experts, one SwiGLU MLP `<p>shared_experts.` that many times `inner`
    /// wide (biased by `bias`), are added for every token.
    func mixture(
        _ parts: DecoderParts, _ p: String, router: Linear, selectionBias: [Float]?, experts: [FeedForward], inner: Int,
        activation: Activation, bias: Bool
    ) throws -> MixtureOfExperts {
        let routing = GroupLimitedTopK(
            scoring: .softmax, groupScore: .best, groups: 1, groupsPerToken: 1, selectionBias: selectionBias,
            normalizesWeights: true, denominatorFloor: Float(normMin ?? 0), scalingFactor: 1)
        let shared = sharedExperts ?? 0
        return MixtureOfExperts(
            router: router, experts: experts, expertsPerToken: expertsPerToken ?? 1, rule: .groupLimited(routing),
            sharedExperts: shared > 0
                ? [try parts.weights.gatedMLP(p + "shared_experts.", hidden: parts.dimensions.hiddenSize, inner: inner * shared, activation: activation, bias: bias)]
                : [])
    }
}

extension KeyedDecodingContainer {
    /// The value of `key`, or `absent` when config.json does not write it:
    /// only absence takes the default, a written null stays None in transformers.
    func written<T: Decodable>(_ key: Key, absent: T) throws -> T? {
        contains(key) ? try decodeIfPresent(T.self, forKey: key) : absent
    }
}

/// The keys of `ernie4_5_moe`'s config.json besides the routing ones, with
/// Ernie4_5_MoeConfig's defaults; the attention keys are ERNIE 4.5's
/// (`InterleavedLlamaConfiguration`).
struct Ernie4_5MoeConfiguration: Decodable {
    var routing: Ernie4_5MoeRouting
    var moeIntermediateSize: Int
    /// The routed layers' range and beat, -1 for the end meaning the last layer.
    var start: Int?
    var end: Int?
    var interval: Int?

    enum CodingKeys: String, CodingKey {
        case moeIntermediateSize = "moe_intermediate_size"
        case moeLayerStartIndex = "moe_layer_start_index"
        case moeLayerEndIndex = "moe_layer_end_index"
        case moeLayerInterval = "moe_layer_interval"
        case predictionLayers = "num_nextn_predict_layers"
    }

    init(from decoder: Decoder) throws {
        routing = try Ernie4_5MoeRouting(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 1536
        start = try c.written(.moeLayerStartIndex, absent: 1)
        end = try c.written(.moeLayerEndIndex, absent: -1)
        interval = try c.written(.moeLayerInterval, absent: 1)
        // The multi-token-prediction layers are not run, but Ernie4_5_MoeConfig
        // (transformers ≥ 5.25) refuses more than one (`num_mtp_layers`, its alias).
        let predictionLayers = try c.decodeIfPresent(Int.self, forKey: .predictionLayers)
        try ConfigRules.decodingChecks {
            if let predictionLayers, predictionLayers > 1 {
                throw InvalidConfigValue(
                    key: "num_nextn_predict_layers", problem: "is \(predictionLayers), but ERNIE 4.5 MoE supports at most one multi-token-prediction layer")
            }
        }
    }

    /// Each of `layers` layers' MLP, true for the routed experts
    /// (Ernie4_5_MoeDecoderLayer's rule: (i + 1) % interval == 0, then
    /// start ≤ i ≤ end, the end -1 read as the last layer).
    /// - Throws: `InvalidConfigValue` for a key the rule reads that cannot
    ///   be compared or divided by (null, an interval of 0), as transformers
    ///   fails building the layer.
    func sparseLayers(_ layers: Int) throws -> [Bool] {
        try (0..<layers).map { i in
            guard let interval, interval != 0 else {
                throw InvalidConfigValue(key: "moe_layer_interval", problem: "must be a non-zero integer, got \(interval.map(String.init) ?? "null")")
            }
            guard (i + 1) % interval == 0 else { return false }
            guard let start else { throw InvalidConfigValue(key: "moe_layer_start_index", problem: "must be an integer, got null") }
            guard i >= start else { return false }
            guard let end else { throw InvalidConfigValue(key: "moe_layer_end_index", problem: "must be an integer, got null") }
            return i <= (end == -1 ? layers - 1 : end)
        }
    }

    /// Refuses what transformers could not build the routed layers from,
    /// or whose tensors would not fit in 64 bits; `sparse` from `sparseLayers`.
    func check(_ d: DecoderDimensions, sparse: [Bool]) throws {
        guard sparse.contains(true) else { return }
        try routing.check(d, inner: moeIntermediateSize, innerKey: "moe_intermediate_size")
    }
}

/// ERNIE 4.5's mixture-of-experts models (`ernie4_5_moe`: ERNIE-4.5-21B-A3B,
/// ERNIE-4.5-300B-A47B; transformers' `models/ernie4_5_moe/modeling_ernie4_5_moe.py`):
/// ERNIE 4.5's pre-RMSNorm blocks and attention (`InterleavedLlamaModel`:
/// rotary on interleaved pairs, base 500000 unless given, `use_bias` on every
/// projection) whose MLP is, on the layers with (i + 1) % `moe_layer_interval`
/// == 0 from `moe_layer_start_index` (default 1) to `moe_layer_end_index`
/// (default -1, the last layer), a mixture of experts:
///
/// - the router `mlp.gate` takes a softmax over `moe_num_experts` (64)
///   experts, in Float32;
/// - the `moe_k` (6) experts of highest probability plus
///   `moe_statics.e_score_correction_bias` are chosen — the bias chooses only;
/// - their unbiased probabilities, divided by their sum but at least
///   `moe_norm_min` (1e-12), weigh the SwiGLU experts (no biases);
/// - `moe_num_shared_experts` (2) shared experts, one SwiGLU MLP that wide
///   (biased by `use_bias`), are added for every token.
///
/// The other layers have a dense SwiGLU MLP of width `intermediate_size`.
/// The MLP module is router, routed and shared experts together. Routed
/// experts are read per expert (`mlp.experts.<e>.gate_proj|up_proj|down_proj`,
/// as saved) or fused (`mlp.experts.gate_up_proj` / `down_proj`); the
/// correction bias [1, experts] from `mlp.moe_statics.` as saved (or
/// `mlp.gate.moe_statics.`, transformers' module), zeros when absent. The
/// head is tied by default and biased by `use_bias`.
struct Ernie4_5MoeModel: Ernie4_5Blocks {
    let parts: DecoderParts
    let attentionConfig: InterleavedLlamaConfiguration
    let config: Ernie4_5MoeConfiguration
    let rotary: RotaryEmbedding
    /// Each layer's MLP, true for the routed experts.
    let sparse: [Bool]

    /// Ernie4_5_MoeConfig's defaults of the keys `InterleavedLlamaConfiguration` requires.
    static let section = ConfigSection(defaults: ["rms_norm_eps": 1e-5])

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(Ernie4_5MoeConfiguration.self)
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self, section: Self.section).numHiddenLayers
        var sparse: [Bool] = []
        try ConfigRules.checks(path: checkpoint.configURL.path) { sparse = try config.sparseLayers(layers) }
        self.config = config
        self.sparse = sparse
        let routedFlags = sparse
        parts = try DecoderParts(
            checkpoint, section: Self.section, naming: LlamaModel.naming,
            experts: .gatedMLP(
                count: config.routing.experts ?? 0, countKey: config.routing.expertsKey, isSparse: { routedFlags.indices.contains($0) && routedFlags[$0] }))
        attentionConfig = try parts.config(InterleavedLlamaConfiguration.self)
        let d = parts.dimensions, eps = attentionConfig.rmsNormEps
        try ConfigRules.checks(path: parts.configPath) {
            try ConfigRules.positive(eps, "rms_norm_eps")
            try config.check(d, sparse: sparse)
        }
        rotary = try parts.rotary(defaultTheta: 500_000)
        let routed = sparse.indices.filter { sparse[$0] }, routing = config.routing
        try parts.confirmRouter("mlp.gate", experts: routing.experts ?? 0, expertsKey: routing.expertsKey, layers: routed)
        try parts.confirmExpertWidth(
            layers: routed, experts: routing.experts ?? 0, expertsKey: routing.expertsKey, inner: config.moeIntermediateSize)
    }

    /// An export without some blocks rewrites the routed layers' range and
    /// beat for the kept layers.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.sparseLayerRange = SparseLayerRange(
            startKey: "moe_layer_start_index", endKey: "moe_layer_end_index", intervalKey: "moe_layer_interval", sparse: sparse)
        return naming
    }

    func exportProblem(_ plan: DropPlan) -> String? {
        let range = layerNaming.sparseLayerRange!
        guard SparseLayerRange.fitting(range.kept(removing: plan.blocks)) == nil else { return nil }
        let kept = (0..<layerCount).filter { !plan.blocks.contains($0) }
        return "dropping blocks \(plan.blocks.sorted().map(String.init).joined(separator: ", ")) leaves routed MLPs on layers "
            + "\(kept.filter { sparse[$0] }.map(String.init).joined(separator: ", ")) of \(kept.map(String.init).joined(separator: ", ")), "
            + "which no moe_layer_start_index, moe_layer_end_index and moe_layer_interval give the renumbered layers; drop other blocks"
    }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: attentionConfig.rmsNormEps), bias: attentionConfig.biases.output)
    }

    /// Layer `index`'s MLP: dense, or router, routed and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", weights = parts.weights, d = hiddenSize
        let activation = try parts.activation(attentionConfig.hiddenAct), bias = attentionConfig.biases.mlp
        guard sparse[index], let experts = config.routing.experts else { return try denseMLP(p) }
        var selectionBias: [Float]?
        for name in ["moe_statics.", "gate.moe_statics."] where weights.has(p + name + "e_score_correction_bias") {
            selectionBias = try weights.floats(p + name + "e_score_correction_bias", [1, experts])
            break
        }
        return .mixture(try config.routing.mixture(
            parts, p, router: try weights.linear(p + "gate", in: d, out: experts, bias: false), selectionBias: selectionBias,
            experts: try weights.gatedExperts(
                fused: p + "experts.", perExpert: p + "experts.", names: ExpertNaming.gatedNames,
                count: experts, hidden: d, inner: config.moeIntermediateSize, activation: activation),
            inner: config.moeIntermediateSize, activation: activation, bias: bias))
    }
}

/// ERNIE 4.5's pre-RMSNorm block around ERNIE's attention
/// (`InterleavedLlamaModel.attention`) and the family's MLP, as its
/// mixture-of-experts models (`ernie4_5_moe`, `ernie4_5_vl_moe`) build it.
protocol Ernie4_5Blocks: DecoderFamily {
    var attentionConfig: InterleavedLlamaConfiguration { get }
    var rotary: RotaryEmbedding { get }
    /// Layer `index`'s MLP, dense or routed.
    func feedForward(layer index: Int) throws -> FeedForward
}

extension Ernie4_5Blocks {
    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: attentionConfig.rmsNormEps,
            attention: { try InterleavedLlamaModel.attention(parts, layer: index, config: attentionConfig, rotary: rotary) },
            feedForward: { try feedForward(layer: index) })
    }

    /// The dense SwiGLU MLP under `mlp` (`intermediate_size` wide, biased by `use_bias`).
    func denseMLP(_ mlp: String) throws -> FeedForward {
        try parts.weights.gatedMLP(
            mlp, hidden: hiddenSize, inner: parts.dimensions.intermediateSize, activation: try parts.activation(attentionConfig.hiddenAct),
            bias: attentionConfig.biases.mlp)
    }
}

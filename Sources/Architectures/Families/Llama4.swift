import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `llama4_text`, or the `text_config` of `llama4`, with
/// Llama4TextConfig's defaults (transformers' models/llama4/configuration_llama4.py).
struct Llama4Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var attentionBias: Bool
    /// The dense layers' MLP width (`intermediate_size` is the experts' and
    /// the shared expert's).
    var intermediateSizeMLP: Int
    var numLocalExperts: Int
    var numExpertsPerTok: Int
    /// As written: nil when absent or null (then every
    /// `interleave_moe_layer_step`-th layer is sparse).
    var moeLayers: [Int]?
    var interleaveMoeLayerStep: Int
    var useQKNorm: Bool
    /// As written: nil when absent, null or empty (then every
    /// `no_rope_layer_interval`-th layer is NoPE).
    var noRopeLayers: [Int]?
    var noRopeLayerInterval: Int
    var attentionChunkSize: Int?
    var layerTypes: [String]?
    var attnTemperatureTuning: Bool
    var floorScale: Int
    var attnScale: Double

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case intermediateSizeMLP = "intermediate_size_mlp"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case moeLayers = "moe_layers"
        case interleaveMoeLayerStep = "interleave_moe_layer_step"
        case useQKNorm = "use_qk_norm"
        case noRopeLayers = "no_rope_layers"
        case noRopeLayerInterval = "no_rope_layer_interval"
        case attentionChunkSize = "attention_chunk_size"
        case layerTypes = "layer_types"
        case attnTemperatureTuning = "attn_temperature_tuning"
        case floorScale = "floor_scale"
        case attnScale = "attn_scale"
    }

    static let chunked = "chunked_attention"

    /// `ConfigRules.decodingChecks` with the refused key under the section
    /// being decoded (`text_config.attention_chunk_size` for `llama4`).
    static func checks(under path: [any CodingKey], _ body: () throws -> Void) throws {
        do {
            try ConfigRules.decodingChecks(body)
        } catch DecodingError.dataCorrupted(let context) {
            throw DecodingError.dataCorrupted(
                DecodingError.Context(codingPath: path + context.codingPath, debugDescription: context.debugDescription))
        }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        intermediateSizeMLP = try c.decodeIfPresent(Int.self, forKey: .intermediateSizeMLP) ?? 16384
        numLocalExperts = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts) ?? 16
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 1
        moeLayers = try c.decodeIfPresent([Int].self, forKey: .moeLayers)
        interleaveMoeLayerStep = try c.decodeIfPresent(Int.self, forKey: .interleaveMoeLayerStep) ?? 1
        useQKNorm = try c.decodeIfPresent(Bool.self, forKey: .useQKNorm) ?? true
        // Llama4TextConfig takes an empty list as none.
        noRopeLayers = try c.decodeIfPresent([Int].self, forKey: .noRopeLayers).flatMap { $0.isEmpty ? nil : $0 }
        noRopeLayerInterval = try c.decodeIfPresent(Int.self, forKey: .noRopeLayerInterval) ?? 4
        // Absent: 8192; null: none, and then no layer is chunked by default.
        attentionChunkSize = c.contains(.attentionChunkSize) ? try c.decodeIfPresent(Int.self, forKey: .attentionChunkSize) : 8192
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        attnTemperatureTuning = try c.decodeIfPresent(Bool.self, forKey: .attnTemperatureTuning) ?? true
        floorScale = try c.decodeIfPresent(Int.self, forKey: .floorScale) ?? 8192
        attnScale = try c.decodeIfPresent(Double.self, forKey: .attnScale) ?? 0.1
        let config = self
        try Self.checks(under: decoder.codingPath) {
            if let chunk = config.attentionChunkSize { try ConfigRules.count(chunk, "attention_chunk_size") }
            if config.noRopeLayers == nil { try ConfigRules.count(config.noRopeLayerInterval, "no_rope_layer_interval") }
            if config.moeLayers == nil { try ConfigRules.count(config.interleaveMoeLayerStep, "interleave_moe_layer_step") }
            // Positions are divided by it, and the scale must stay a float32 number.
            if config.attnTemperatureTuning {
                try ConfigRules.count(config.floorScale, "floor_scale")
                guard config.attnScale.isFinite, Float(config.attnScale).isFinite else {
                    throw InvalidConfigValue(key: "attn_scale", problem: "must be a finite number that float32 holds, got \(config.attnScale)")
                }
            }
        }
    }

    /// Each layer's rotary flag (1: rotary, L2 q/k norms, chunked by
    /// default; 0: NoPE, temperature tuning), as Llama4TextConfig resolves
    /// it: `no_rope_layers`, else every `no_rope_layer_interval`-th layer is NoPE.
    /// - Throws: `InvalidConfigValue` for a flag other than 0 or 1, or a
    ///   list shorter than the layers (transformers indexes it by layer).
    func ropeFlags(layers: Int) throws -> [Int] {
        guard let noRopeLayers else { return (0..<layers).map { ($0 + 1) % noRopeLayerInterval == 0 ? 0 : 1 } }
        guard noRopeLayers.count >= layers else {
            throw InvalidConfigValue(
                key: "no_rope_layers", problem: "lists \(noRopeLayers.count) layers, but num_hidden_layers is \(layers)")
        }
        if let flag = noRopeLayers.first(where: { $0 != 0 && $0 != 1 }) {
            throw InvalidConfigValue(key: "no_rope_layers", problem: "holds \(flag); each entry must be 1 (rotary) or 0 (no rotary)")
        }
        return Array(noRopeLayers.prefix(layers))
    }

    /// The sparse layers: `moe_layers` (indices of no layer are ignored, as
    /// transformers asks whether a layer's index is in the list), else
    /// every `interleave_moe_layer_step`-th layer.
    func sparseLayers(layers: Int) -> [Int] {
        moeLayers.map { listed in (0..<layers).filter(listed.contains) }
            ?? Array(Swift.stride(from: interleaveMoeLayerStep - 1, to: layers, by: interleaveMoeLayerStep))
    }

    /// Each layer's attention type: `layer_types`, else chunked attention on
    /// the rotary layers and full attention on the NoPE ones (every layer
    /// full without `attention_chunk_size`, transformers ≥ 5.25).
    /// - Throws: `InvalidConfigValue` for a type other than full_attention /
    ///   chunked_attention, or chunked layers without a chunk size (the chunked mask needs one).
    func attentionTypes(ropeFlags: [Int]) throws -> [String] {
        let chunks = attentionChunkSize != nil
        let types = layerTypes ?? ropeFlags.map { $0 == 1 && chunks ? Self.chunked : AttentionLayerType.full }
        if let unknown = types.first(where: { $0 != Self.chunked && $0 != AttentionLayerType.full }) {
            throw InvalidConfigValue(
                key: "layer_types", problem: "holds \"\(unknown.forErrorMessage)\"; Llama 4's layers are full_attention or chunked_attention")
        }
        if !chunks, types.contains(Self.chunked) {
            throw InvalidConfigValue(
                key: "attention_chunk_size", problem: "is null, but layer_types has chunked_attention layers, whose mask transformers cannot build without it")
        }
        return types
    }
}

/// Llama 4 (Llama-4-Scout, Llama-4-Maverick), as transformers'
/// models/llama4/modeling_llama4.py runs it: `llama4_text`
/// (Llama4ForCausalLM), or the language model of `llama4`
/// (Llama4ForConditionalGeneration: sizes under `text_config`, weights
/// under `language_model.model.`, the head `language_model.lm_head`, tied
/// by the text config's `tie_word_embeddings`; the vision tower ignored).
///
/// Pre-RMSNorm blocks. Rotary layers (`no_rope_layers` flag 1) rotate
/// interleaved pairs (2i, 2i + 1; complex multiplication), then
/// L2-normalise each query and key head without weights (`use_qk_norm`);
/// NoPE layers (flag 0) have neither, and with `attn_temperature_tuning`
/// scale their queries by 1 + attn_scale · ln(1 + ⌊(p + 1) / floor_scale⌋)
/// (`QueryTemperature`). `chunked_attention` layers (by default the rotary
/// ones) attend within chunks of `attention_chunk_size` positions.
/// Sparse layers (`moe_layers`, else every `interleave_moe_layer_step`-th)
/// route each token to its top-k experts by the sigmoid of their router
/// logits, the score multiplying the expert's input, plus a shared
/// SwiGLU expert; the experts are stored fused
/// (`feed_forward.experts.gate_up_proj` [experts, hidden, 2 · inner], gate
/// columns first, `down_proj` [experts, inner, hidden]). Dense layers have
/// a SwiGLU MLP of width `intermediate_size_mlp`.
struct Llama4Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Llama4Configuration
    let rotary: RotaryEmbedding
    let ropeFlags: [Int]
    let sparse: Set<Int>
    let layerTypes: [String]

    /// Llama4TextConfig's defaults that differ from what droptrace assumes
    /// (head_dim a field of 128, not hidden_size / heads).
    static var textDefaults: [String: ConfigDefault] {
        ConfigValueKinds.omittedDefaultValues(of: "llama4_text").merging(["head_dim": 128], uniquingKeysWith: { $1 })
    }

    init(_ checkpoint: Checkpoint) throws {
        let placement: TextModelPlacement = checkpoint.modelType == "llama4"
            ? .wrapped(textDefaults: Self.textDefaults, prefixes: ["language_model.model."])
            : TextModelPlacement(section: ConfigSection(defaults: Self.textDefaults))
        parts = try DecoderParts(checkpoint, placement: placement, naming: { Self.naming($0) })
        config = try parts.config(Llama4Configuration.self)
        let layers = parts.dimensions.numHiddenLayers, config = config, dimensions = parts.dimensions
        var flags: [Int] = [], types: [String] = []
        try parts.checks {
            flags = try config.ropeFlags(layers: layers)
            types = try config.attentionTypes(ropeFlags: flags)
        }
        ropeFlags = flags
        layerTypes = types
        let sparseLayers = config.sparseLayers(layers: layers)
        sparse = Set(sparseLayers)
        try parts.checks {
            if sparseLayers.count < layers { try ConfigRules.count(config.intermediateSizeMLP, "intermediate_size_mlp") }
            guard !sparseLayers.isEmpty else { return }
            try ConfigRules.count(config.numLocalExperts, "num_local_experts")
            try MixtureOfExperts.checkExpertsPerToken(config.numExpertsPerTok, of: config.numLocalExperts, expertsKey: "num_local_experts")
            // The fused expert tensors hold experts × hidden × 2 · inner values.
            try ConfigRules.product([
                (config.numLocalExperts, "num_local_experts"), (2, "gate and up"),
                (dimensions.intermediateSize, "intermediate_size"), (dimensions.hiddenSize, "hidden_size"),
            ])
        }
        try parts.confirmRouter(
            "feed_forward.router", experts: config.numLocalExperts, expertsKey: "num_local_experts", layers: sparseLayers)
        rotary = try parts.rotary(defaultTheta: 500_000)
    }

    /// An export without some blocks spells out what the config left to
    /// rules over layer indices (the NoPE interval, the sparse interleave,
    /// the layer types that follow the rotary flags), so renumbering moves
    /// none of them to another layer.
    var layerNaming: LayerNaming {
        var naming = parts.naming(spellingOut: layerTypes)
        naming.noRopeLayers = config.noRopeLayers == nil ? ropeFlags : nil
        if config.moeLayers == nil { naming.layerIndexLists["moe_layers"] = sparse.sorted() }
        return naming
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."],
            mlp: ["feed_forward.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let weights = parts.weights, d = hiddenSize, eps = config.rmsNormEps, headDim = parts.attentionLayout.headDim
        let p = "layers.\(index).", rotates = ropeFlags[index] == 1
        let activation = try parts.activation(config.hiddenAct)
        func attention() throws -> SelfAttention {
            // Llama4TextL2Norm: x / sqrt(mean(x²) + eps) over each head, no weights.
            let l2 = Normalization.weightlessRMS(size: headDim, eps: Float(config.rmsNormEps))
            return try parts.attention(
                p + "self_attn.", bias: config.attentionBias, rotary: rotates ? rotary : nil, interleavedRotary: true,
                queryKeyNorm: rotates && config.useQKNorm ? .perHead(query: l2, key: l2) : nil, queryKeyNormAfterRotary: true,
                queryTemperature: !rotates && config.attnTemperatureTuning
                    ? QueryTemperature(beta: Float(config.attnScale), originalMaxPositions: config.floorScale, positionOffset: 1) : nil,
                chunkSize: layerTypes[index] == Llama4Configuration.chunked ? config.attentionChunkSize : nil)
        }
        func feedForward() throws -> FeedForward {
            guard sparse.contains(index) else {
                return try weights.gatedMLP(p + "feed_forward.", hidden: d, inner: config.intermediateSizeMLP, activation: activation)
            }
            return .mixture(try experts(layer: index, activation: activation))
        }
        return try parts.preNormBlock(index, drops: plan.union(configuredDrops), eps: eps, attention: attention, feedForward: feedForward)
    }

    /// Layer `index`'s router, fused experts and shared expert.
    func experts(layer index: Int, activation: Activation) throws -> MixtureOfExperts {
        let weights = parts.weights, d = hiddenSize, inner = parts.dimensions.intermediateSize, count = config.numLocalExperts
        let p = "layers.\(index).feed_forward."
        let experts = try weights.inByOutGatedExperts(
            gateUp: p + "experts.gate_up_proj", down: p + "experts.down_proj", count: count, hidden: d, inner: inner, activation: activation)
        return MixtureOfExperts(
            router: try weights.linear(p + "router", in: d, out: count, bias: false), experts: experts,
            expertsPerToken: config.numExpertsPerTok, rule: .sigmoidOfTopK,
            sharedExperts: [try weights.gatedMLP(p + "shared_expert.", hidden: d, inner: inner, activation: activation)],
            weightsScaleInput: true)
    }
}

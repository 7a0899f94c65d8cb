import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `cohere`, with CohereConfig's defaults.
struct CohereConfiguration: Decodable {
    /// The epsilon of every CohereLayerNorm, the q/k norms' too.
    var layerNormEps: Double
    var hiddenAct: String
    /// Multiplies the logits.
    var logitScale: Float
    /// Biases on q/k/v_proj and o_proj alike.
    var attentionBias: Bool
    /// Per-head LayerNorms, each head with its own weights, on queries and keys.
    var useQKNorm: Bool

    enum CodingKeys: String, CodingKey {
        case layerNormEps = "layer_norm_eps"
        case hiddenAct = "hidden_act"
        case logitScale = "logit_scale"
        case attentionBias = "attention_bias"
        case useQKNorm = "use_qk_norm"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // CohereConfig types both as `float | None`, but its model adds the
        // epsilon and multiplies the logits by the scale: null cannot run.
        func number(_ key: CodingKeys, _ fallback: Double) throws -> Double {
            guard c.contains(key) else { return fallback }
            guard let value = try c.decodeIfPresent(Double.self, forKey: key) else {
                try ConfigRules.decodingChecks { throw InvalidConfigValue(key: key.rawValue, problem: "must be a number, not null (CohereForCausalLM computes with it)") }
                return fallback
            }
            return value
        }
        layerNormEps = try number(.layerNormEps, 1e-5)
        let scale = try number(.logitScale, 0.0625)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        // null is false (the attention tests the flag's truth).
        useQKNorm = try c.decodeIfPresent(Bool.self, forKey: .useQKNorm) ?? false
        let layerNormEps = layerNormEps
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(layerNormEps, "layer_norm_eps")
            guard scale.isFinite, Float(scale).isFinite else {
                throw InvalidConfigValue(key: "logit_scale", problem: "must be a finite number that float32 holds, got \(scale)")
            }
        }
        logitScale = Float(scale)
    }
}

/// Cohere (Command-R): a parallel block off one mean-centred LayerNorm
/// without a bias — y = x + o_proj(attn(ln x)) + down(silu(gate(ln x)) ·
/// up(ln x)) —, rotary on interleaved pairs of each head (dimensions 2i and
/// 2i + 1 rotate together, base 500000 unless given, cohere2 10000), optional per-head q/k
/// LayerNorms with weights of their own per head (`use_qk_norm`), the final
/// norm likewise without a bias, a head tied to the embedding by default and
/// logits multiplied by `logit_scale`.
///
/// `cohere2` (Command R7B, Command A) has no q/k norms and attends in a
/// hybrid way: layers `layer_types` marks `sliding_attention` (three of four
/// by default) rotate within the window, the others attend fully without
/// positions (NoPE); its heads are always hidden_size / num_attention_heads wide.
///
/// The interleaved pairs are gathered when the weights are read: q_proj and
/// k_proj rows (their biases and the q/k norm weights with them) are put in
/// the order 0, 2, 4, …, 1, 3, 5, … of each head, so the usual rotate-half
/// rotation applies; the query-key products are the same sums in another order.
struct CohereModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { modelType == "cohere2" }
    let parts: DecoderParts
    let config: CohereConfiguration
    let rotary: RotaryEmbedding
    /// cohere2: each layer's type and window (nil: full attention, no positions); nil for cohere.
    let layerTypes: [String]?
    let windows: [Int?]?
    /// Whether the head multiplies the logits by `logit_scale`.
    let headScalesLogits: Bool

    init(_ checkpoint: Checkpoint) throws {
        // Also Aya Vision's language model (`Llava`).
        parts = try DecoderParts(checkpoint, placement: try .topLevelOrWrapped(checkpoint), naming: Self.naming)
        var config = try parts.config(CohereConfiguration.self)
        let cohere2 = try Llava.languageModelType(checkpoint) == "cohere2"
        if cohere2 {
            // Cohere2Config has no use_qk_norm (its attention no q/k norms) and sets head_dim itself.
            config.useQKNorm = false
            try parts.confirmHeadDimIsHiddenOverHeads(": Cohere2Config replaces it, its heads are")
            let own = try parts.config(SlidingWindowPattern.self)
            try parts.requireWindow(own.slidingWindow, builtBy: "Cohere2Model")
            let types = try own.resolvedLayerTypes(
                layers: parts.dimensions.numHiddenLayers, configClass: "Cohere2Config", section: parts.section, path: parts.configPath)
            let checked = try parts.layerTypes(types, slidingWindow: own.slidingWindow) { _ in AttentionLayerType.full }
            layerTypes = checked
            windows = checked.map { $0 == AttentionLayerType.sliding ? own.slidingWindow : nil }
        } else {
            layerTypes = nil
            windows = nil
        }
        self.config = config
        // logit_scale belongs to CohereForCausalLM's head; of the wrappers' own
        // heads only Aya Vision's applies it (Command A Vision's does not).
        headScalesLogits = parts.section.name == nil || Llava.wrappers[checkpoint.modelType]?.headAppliesLogitScale == true
        // CohereConfig's rope base defaults to 500000, Cohere2Config's to transformers' 10000.
        rotary = try parts.rotary(defaultTheta: cohere2 ? 10_000 : 500_000)
        try Self.confirmEvenHeads(parts)
    }

    /// Refuses heads of an odd width: the rotary pairs need an even one.
    static func confirmEvenHeads(_ parts: DecoderParts) throws {
        if parts.firstKeptAttention != nil, parts.attentionLayout.headDim % 2 != 0 {
            throw DroptraceError(
                "heads of \(parts.attentionLayout.headDim) dimensions: Cohere's rotary pairs need an even head width",
                path: parts.configPath)
        }
    }

    static func naming(_ prefix: String) -> LayerNaming {
        // input_layernorm serves both branches: it goes with neither.
        LayerNaming(prefix: prefix + "layers.", attention: ["self_attn."], mlp: ["mlp."], layerCountKeys: ["num_hidden_layers"])
    }

    /// cohere2's exports without some blocks spell out the kept layers'
    /// types, so renumbering cannot move a window (or positions) to another layer.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes)
    }

    /// CohereLayerNorm: mean-centred, weight only.
    func norm(_ name: String, size: Int) throws -> Normalization {
        try Self.layerNorm(parts.weights, name, size: size, eps: config.layerNormEps)
    }

    /// CohereLayerNorm `name` of `weights`: mean-centred, weight only.
    static func layerNorm(_ weights: Weights, _ name: String, size: Int, eps: Double) throws -> Normalization {
        .layer(weight: try weights.floats(name + ".weight", [size]), bias: [Float](repeating: 0, count: size), eps: Float(eps))
    }

    func head() throws -> OutputHead {
        try parts.head(norm: norm("norm", size: hiddenSize), logitScale: headScalesLogits ? config.logitScale : 1)
    }

    /// Rows of the rotated heads' pairs gathered per head (see the type's note).
    func gatheringPairs(_ values: [Float], rowWidth: Int, heads: [Int], headDim: Int) -> [Float] {
        LatentQKVProjection.deinterleavingRope(values, rowWidth: rowWidth, ropeStarts: heads, ropeDim: headDim)
    }

    /// Layer `index`'s attention as Cohere's families store it, q/k/v/o
    /// biases by `bias`, the rotary pairs gathered (see the type's note),
    /// rotating with `rotary` (nil: no positions) within `window`.
    static func attention(
        _ parts: DecoderParts, layer index: Int, bias: Bool, rotary: RotaryEmbedding?, window: Int?, queryKeyNorm: QueryKeyNorm? = nil
    ) throws -> SelfAttention {
        let layout = parts.attentionLayout, headDim = layout.headDim, d = parts.dimensions.hiddenSize
        let p = "layers.\(index).self_attn."
        let qkv = try parts.weights.stackedQKV(p, hidden: d, layout: layout, bias: bias)
        return SelfAttention(
            qkv: DecoderParts.interleavingPairs(qkv, layout: layout, rotaryDim: headDim), layout: layout, rotary: rotary,
            output: try parts.weights.linear(p + "o_proj", in: layout.queryWidth, out: d, bias: bias),
            scale: 1 / Float(headDim).squareRoot(), slidingWindow: window, queryKeyNorm: queryKeyNorm)
    }

    /// Cohere's parallel block: one input norm `norm()` feeding both branches.
    static func parallelBlock(
        _ index: Int, drops: DropPlan, norm: () throws -> Normalization, attention: () throws -> SelfAttention,
        feedForward: () throws -> FeedForward
    ) throws -> TransformerBlock {
        TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(inputNorm: try norm(), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(inputNorm: try norm(), feedForward: try feedForward()),
            residual: .parallel)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, p = "layers.\(index)."
        func attention() throws -> SelfAttention {
            let layout = parts.attentionLayout, headDim = layout.headDim
            var queryKeyNorm: QueryKeyNorm?
            if config.useQKNorm {
                func headNorm(_ name: String, heads: Int) throws -> Normalization {
                    let weight = try weights.floats(p + "self_attn.\(name).weight", [heads, headDim])
                    return .layer(
                        weight: gatheringPairs(weight, rowWidth: 1, heads: (0..<heads).map { $0 * headDim }, headDim: headDim),
                        bias: [Float](repeating: 0, count: heads * headDim), eps: Float(config.layerNormEps))
                }
                queryKeyNorm = .eachHead(query: try headNorm("q_norm", heads: layout.numHeads), key: try headNorm("k_norm", heads: layout.numKVHeads))
            }
            // cohere2's full layers take no positions.
            let window = windows?[index]
            return try Self.attention(
                parts, layer: index, bias: config.attentionBias, rotary: windows == nil || window != nil ? rotary : nil,
                window: window, queryKeyNorm: queryKeyNorm)
        }
        func feedForward() throws -> FeedForward {
            try weights.gatedMLP(
                p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize, activation: try parts.activation(config.hiddenAct), bias: false)
        }
        return try Self.parallelBlock(
            index, drops: drops, norm: { try norm(p + "input_layernorm", size: d) }, attention: attention, feedForward: feedForward)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `zaya`, with ZayaConfig's defaults (LagunaConfig's
/// fields, of which ZAYA reads the attention sizes, `sliding_window`,
/// `layer_types` and `rope_parameters`, plus its own).
struct ZayaConfiguration: Decodable {
    /// ZAYA's two layer types: full and sliding-window attention, each beside
    /// the convolution of its CCA projection.
    static let full = "hybrid", sliding = "hybrid_sliding"
    /// `ZayaConfig.__post_init__`'s rope parameters when config.json has none.
    static let defaultRope: [String: [String: Any]] = [
        full: ["rope_type": "default", "rope_theta": 5_000_000.0, "partial_rotary_factor": 0.5],
        sliding: ["rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.5],
    ]

    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v_proj_current/v_proj_delayed and o_proj.
    var attentionBias: Bool
    /// nil: no window (then no layer may be `hybrid_sliding`).
    var slidingWindow: Int?
    var layerTypes: [String]?
    var numExperts: Int
    var moeIntermediateSize: Int
    var routerHiddenSize: Int
    /// The kernels of the depthwise and the grouped convolution of the CCA projection.
    var ccaTime0: Int
    var ccaTime1: Int
    /// A bias on lm_head.
    var lmHeadBias: Bool

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size"
        case routerHiddenSize = "router_hidden_size"
        case ccaTime0 = "cca_time0"
        case ccaTime1 = "cca_time1"
        case lmHeadBias = "lm_head_bias"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 16
        let perToken = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 1
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 2048
        routerHiddenSize = try c.decodeIfPresent(Int.self, forKey: .routerHiddenSize) ?? 256
        ccaTime0 = try c.decodeIfPresent(Int.self, forKey: .ccaTime0) ?? 2
        ccaTime1 = try c.decodeIfPresent(Int.self, forKey: .ccaTime1) ?? 2
        lmHeadBias = try c.decodeIfPresent(Bool.self, forKey: .lmHeadBias) ?? false
        let (types, window, kernels) = (layerTypes, slidingWindow, (ccaTime0, ccaTime1))
        let (experts, inner, router) = (numExperts, moeIntermediateSize, routerHiddenSize)
        try ConfigRules.decodingChecks {
            // ZayaConfig.validate_architecture.
            if perToken != 1 {
                throw InvalidConfigValue(
                    key: CodingKeys.numExpertsPerTok.rawValue, problem: "is \(perToken), but ZayaConfig supports num_experts_per_tok=1 only")
            }
            for type in types ?? [] where type != Self.full && type != Self.sliding {
                throw InvalidConfigValue(
                    key: CodingKeys.layerTypes.rawValue,
                    problem: "holds \"\(type.forErrorMessage)\", but ZayaModel builds masks for \"\(Self.full)\" and \"\(Self.sliding)\" layers only")
            }
            if window == nil, types?.contains(Self.sliding) == true {
                throw InvalidConfigValue(
                    key: CodingKeys.slidingWindow.rawValue, problem: "is null, but layer_types holds \"\(Self.sliding)\" layers, which ZayaConfig refuses")
            }
            try ConfigRules.count(experts, CodingKeys.numExperts.rawValue)
            try ConfigRules.count(inner, CodingKeys.moeIntermediateSize.rawValue)
            try ConfigRules.count(router, CodingKeys.routerHiddenSize.rawValue)
            try ConfigRules.count(kernels.0, CodingKeys.ccaTime0.rawValue)
            try ConfigRules.count(kernels.1, CodingKeys.ccaTime1.rawValue)
            if kernels == (1, 1) {
                // Nothing to carry: transformers' cache then holds an empty convolution state, and its forward fails.
                throw InvalidConfigValue(
                    key: CodingKeys.ccaTime1.rawValue,
                    problem: "is 1 with cca_time0 1: the CCA convolution then reads no earlier token, and transformers' cached forward fails on it")
            }
        }
    }

    /// Refuses sizes transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        let keyWidth = d.kvHeads * d.resolvedHeadDim
        if !keyWidth.isMultiple(of: 2) {
            throw InvalidConfigValue(
                key: "head_dim",
                problem: "times num_key_value_heads is \(keyWidth), odd: ZayaCCAProjection's two value halves (each of width // 2) "
                    + "then do not fill the value heads, and transformers fails on them")
        }
        let router = CodingKeys.routerHiddenSize.rawValue, inner = CodingKeys.moeIntermediateSize.rawValue
        try ConfigRules.product([(numExperts, CodingKeys.numExperts.rawValue), (moeIntermediateSize, inner), (3, "3"), (d.hiddenSize, "hidden_size")])
        // hidden_size + 2 × router_hidden_size, summed without overflow before it is multiplied.
        let routerInput = try ConfigRules.sum([(try ConfigRules.product([(routerHiddenSize, router), (2, "2")]), router), (d.hiddenSize, "hidden_size")])
        try ConfigRules.product([(routerHiddenSize, router), (routerInput, "hidden_size + 2 × router_hidden_size")])
        let channels = (d.numAttentionHeads + d.kvHeads) * d.resolvedHeadDim
        try ConfigRules.product([(channels, "(num_attention_heads + num_key_value_heads) × head_dim"), (d.resolvedHeadDim, "head_dim"), (ccaTime1, CodingKeys.ccaTime1.rawValue)])
    }
}

/// Zyphra's ZAYA (`zaya`, transformers' `models/zaya/`, ZayaForCausalLM).
///
/// The residual stream begins as (embedding + `input_hidden_states_bias`) ⊙
/// `input_hidden_states_scale`. Each layer is Llama's pre-RMSNorm block
/// whose two branches join the stream by ZAYA's residual scaling,
/// (out + b_o) ⊙ s_o + (x + b_x) ⊙ s_x (`post_attention_residual_scale`,
/// `post_mlp_residual_scale`, `ResidualScaling`), each the branch's own: the
/// attention module maps the layer's input X to H, the MLP H to the layer's
/// output, and a dropped branch leaves the stream as it was.
///
/// The attention is `ConvolvedAttention` (ZayaAttention with its CCA
/// projection and L2 q/k norm), `layer_types` "hybrid" (full) or
/// "hybrid_sliding" (within `sliding_window`), each type rotating the first
/// `partial_rotary_factor` of each head by its entry of `rope_parameters`
/// (by default half at 5e6 and 1e4). The MLP is `CarriedRouterMixture`: a
/// router MLP over `num_experts` experts and a skip class, whose hidden
/// state the next layer's router adds (scaled) to its own.
struct ZayaModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: ZayaConfiguration
    let layerTypes: [String]
    /// The rotary embedding of each layer type in use.
    let rotaries: [String: RotaryEmbedding]

    init(_ checkpoint: Checkpoint) throws {
        let config = try checkpoint.decodeConfig(ZayaConfiguration.self)
        self.config = config
        // ZayaConfig has no intermediate_size: the experts' width sizes the MLP.
        parts = try DecoderParts(
            checkpoint, section: ConfigSection(overrides: ["intermediate_size": .integer(config.moeIntermediateSize)]),
            naming: Self.naming, experts: .gatedMLP(count: config.numExperts, countKey: "num_experts", isSparse: { _ in true }))
        let d = parts.dimensions, parts = parts
        try parts.checks { try config.check(d) }
        if try checkpoint.configObject(.topLevel)["rope_scaling"] != nil {
            // PreTrainedConfig takes it (even null) for the rope parameters, which ZayaRotaryEmbedding then cannot index by layer type.
            throw DroptraceError(
                "\"rope_scaling\" is given: ZayaConfig takes it for rope_parameters, which ZayaRotaryEmbedding then indexes by layer type "
                    + "and fails on; give the rotation of each layer type under rope_parameters", path: parts.configPath)
        }
        layerTypes = config.layerTypes ?? Array(repeating: ZayaConfiguration.full, count: d.numHiddenLayers)
        try Self.confirmShapes(parts, config: config)
        rotaries = try parts.rotariesAsWritten(
            types: Set(layerTypes), defaults: ZayaConfiguration.defaultRope, rotaryClass: "ZayaRotaryEmbedding",
            attentionClass: "ZayaAttention", partialRotary: { _ in .honoured(default: 1) }, standardised: false)
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm.", "post_attention_residual_scale."],
            mlp: ["mlp.", "post_attention_layernorm.", "post_mlp_residual_scale."], layerCountKeys: ["num_hidden_layers"])
    }

    /// Checks the projections and the router of the first kept layers against the sizes, before anything is read.
    private static func confirmShapes(_ parts: DecoderParts, config: ZayaConfiguration) throws {
        let d = parts.dimensions, path = parts.configPath, weights = parts.weights
        let headKey = d.headDim == nil ? "(hidden_size / num_attention_heads)" : "head_dim"
        if let layer = parts.firstKeptAttention {
            try parts.confirmProjections(layer: layer, attention: "self_attn.qkv_proj.", [
                ("q_proj", d.numAttentionHeads * d.resolvedHeadDim, "num_attention_heads × \(headKey)"),
                ("k_proj", d.kvHeads * d.resolvedHeadDim, "num_key_value_heads × \(headKey)"),
            ])
            let channels = (d.numAttentionHeads + d.kvHeads) * d.resolvedHeadDim
            try weights.confirmShape(
                "layers.\(layer).self_attn.qkv_proj.conv_qk_depthwise.weight", [channels, 1, config.ccaTime0],
                keys: "(num_attention_heads + num_key_value_heads) × \(headKey), cca_time0", configPath: path)
            try weights.confirmShape(
                "layers.\(layer).self_attn.qkv_proj.conv_qk_grouped.weight", [channels, d.resolvedHeadDim, config.ccaTime1],
                keys: "(num_attention_heads + num_key_value_heads) × \(headKey), \(headKey), cca_time1", configPath: path)
        }
        guard let layer = (0..<d.numHiddenLayers).first(where: { !parts.configuredDrops.dropsMLP($0) }) else { return }
        try weights.confirmShape(
            "layers.\(layer).mlp.gate.down_proj.weight", [config.routerHiddenSize, d.hiddenSize], keys: "router_hidden_size, hidden_size",
            configPath: path)
        try weights.confirmShape(
            "layers.\(layer).mlp.gate.router_mlp.out_proj.weight", [config.numExperts + 1, config.routerHiddenSize],
            keys: "num_experts + 1, router_hidden_size", configPath: path)
        try parts.confirmExpertWidth(layers: [layer], experts: config.numExperts, expertsKey: "num_experts", inner: config.moeIntermediateSize)
    }

    /// Exports without some blocks spell out the kept layers' types.
    var layerNaming: LayerNaming { parts.naming(spellingOut: layerTypes) }

    /// The embeddings, (e + `input_hidden_states_bias`) ⊙ `input_hidden_states_scale`.
    func embed(_ batch: TokenBatch) throws -> Matrix {
        let d = hiddenSize
        let bias = try parts.weights.floats("input_hidden_states_bias", [d])
        let scale = try parts.weights.floats("input_hidden_states_scale", [d])
        var rows = try parts.embed(batch)
        rows.data.withUnsafeMutableBufferPointer { values in
            for i in values.indices { values[i] = (values[i] + bias[i % d]) * scale[i % d] }
        }
        return rows
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps), bias: config.lmHeadBias)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index).", parts = parts
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            residualJoins: (
                { .affine(try ResidualScaling(parts.weights, p + "post_attention_residual_scale.", hidden: parts.dimensions.hiddenSize)) },
                { .affine(try ResidualScaling(parts.weights, p + "post_mlp_residual_scale.", hidden: parts.dimensions.hiddenSize)) }),
            mixer: { .convolvedAttention(try attention(layer: index)) }, feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s ZayaAttention.
    func attention(layer index: Int) throws -> ConvolvedAttention {
        let d = parts.dimensions, hidden = d.hiddenSize, weights = parts.weights, bias = config.attentionBias
        let layout = parts.attentionLayout, p = "layers.\(index).self_attn.", q = p + "qkv_proj."
        let (queryWidth, keyWidth) = (layout.queryWidth, layout.keyWidth), half = keyWidth / 2
        let channels = queryWidth + keyWidth, type = layerTypes[index]
        let parts: [(name: String, rows: Int)] = [("q_proj", queryWidth), ("k_proj", keyWidth), ("v_proj_current", half), ("v_proj_delayed", half)]
        var stacked: [Float] = [], biases: [Float] = []
        for (name, rows) in parts {
            stacked += try weights.floats(q + name + ".weight", [rows, hidden])
            // The delayed half's bias joins after the shift (`ConvolvedAttention.delayedBias`).
            if bias { biases += name == "v_proj_delayed" ? [Float](repeating: 0, count: rows) : try weights.floats(q + name + ".bias", [rows]) }
        }
        return ConvolvedAttention(
            layout: layout,
            projection: Linear(weight: stacked, bias: bias ? biases : nil, inFeatures: hidden, outFeatures: channels + keyWidth),
            delayedBias: bias ? try weights.floats(q + "v_proj_delayed.bias", [half]) : nil,
            depthwiseTaps: try weights.floats(q + "conv_qk_depthwise.weight", [channels, 1, config.ccaTime0]),
            depthwiseBias: try weights.floats(q + "conv_qk_depthwise.bias", [channels]), depthwiseKernel: config.ccaTime0,
            groupedTaps: try weights.floats(q + "conv_qk_grouped.weight", [channels, layout.headDim, config.ccaTime1]),
            groupedBias: try weights.floats(q + "conv_qk_grouped.bias", [channels]), groupedKernel: config.ccaTime1,
            keyScales: try weights.floats(p + "qk_norm.temp", [layout.numKVHeads]),
            rotary: rotaries[type]!, slidingWindow: type == ZayaConfiguration.sliding ? config.slidingWindow : nil,
            output: try weights.linear(p + "o_proj", in: queryWidth, out: hidden, bias: bias))
    }

    /// Layer `index`'s ZayaSparseMoeBlock: its router (which reads the last
    /// router's state from layer 1 on) and its experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", g = p + "gate.", weights = parts.weights, d = hiddenSize
        let width = config.routerHiddenSize, classes = config.numExperts + 1
        // A buffer transformers initialises (zeros) where the weights lack it; loaded or not,
        // ZayaPreTrainedModel._init_weights then sets the skip class's entry to -1.
        var balancing = weights.has(g + "balancing_biases") ? try weights.floats(g + "balancing_biases", [classes]) : [Float](repeating: 0, count: classes)
        balancing[classes - 1] = -1
        return .carriedRouter(CarriedRouterMixture(
            down: try weights.linear(g + "down_proj", in: d, out: width, bias: true),
            stateScale: index == 0 ? nil : try weights.floats(g + "router_states_scale", [width]),
            norm: try weights.rmsNorm(g + "router_mlp.norm", size: width, eps: config.rmsNormEps),
            first: try weights.linear(g + "router_mlp.fc1", in: width, out: width, bias: true),
            second: try weights.linear(g + "router_mlp.fc2", in: width, out: width, bias: true),
            classes: try weights.linear(g + "router_mlp.out_proj", in: width, out: classes, bias: false),
            activation: try parts.activation("gelu", key: "ZayaRouterMLP's nn.GELU"),
            balancingBiases: balancing,
            experts: try weights.gatedExperts(
                fused: p + "experts.", perExpert: p + "experts.", names: ExpertNaming.gatedNames, count: config.numExperts, hidden: d,
                inner: config.moeIntermediateSize, activation: try parts.activation(config.hiddenAct))))
    }
}

/// ZAYA's residual scaling (`ZayaResidualScaling`): a branch's output joins
/// the stream as (out + outputBias) ⊙ outputScale + (x + streamBias) ⊙
/// streamScale, each sum and product rounded to Float32 as torch forms them.
public struct ResidualScaling: Sendable {
    public let outputBias: [Float], outputScale: [Float]
    public let streamBias: [Float], streamScale: [Float]

    /// The scaling stored under `prefix` (`hidden_states_bias`, `hidden_states_scale`, `residual_bias`, `residual_scale`).
    init(_ weights: Weights, _ prefix: String, hidden: Int) throws {
        outputBias = try weights.floats(prefix + "hidden_states_bias", [hidden])
        outputScale = try weights.floats(prefix + "hidden_states_scale", [hidden])
        streamBias = try weights.floats(prefix + "residual_bias", [hidden])
        streamScale = try weights.floats(prefix + "residual_scale", [hidden])
    }

    /// The stream after `output` joins `stream` [rows, hidden].
    public func join(_ stream: Matrix, _ output: Matrix) -> Matrix {
        precondition(stream.rows == output.rows && stream.cols == output.cols && stream.cols == outputScale.count)
        let width = stream.cols
        var result = stream
        result.data.withUnsafeMutableBufferPointer { values in
            output.data.withUnsafeBufferPointer { out in
                for i in values.indices {
                    let j = i % width
                    let branch = (out[i] + outputBias[j]) * outputScale[j], kept = (values[i] + streamBias[j]) * streamScale[j]
                    values[i] = branch + kept
                }
            }
        }
        return result
    }
}

/// ZAYA's attention (`ZayaAttention` with `ZayaCCAProjection` and
/// `ZayaQKNorm`), a recurrent token mixer whose state holds what decoding
/// needs: the convolution's last inputs, the last delayed value half and
/// every key and value so far.
///
/// Per row x: q = q_proj x, k = k_proj x (rows of heads of `headDim`). The
/// q | k rows pass a causal depthwise convolution of `depthwiseKernel` taps
/// and a causal grouped one of `groupedKernel` taps (groups of one head's
/// columns; zeros before the sequence), each with its bias; then, with
/// r_h = (q_h + k_g(h)) / 2 and r̄_g the mean of group g's r_h, query head h
/// is conv_h + r_h and key head g conv_g + r̄_g. The values are
/// v_proj_current x beside v_proj_delayed of the previous row (its bias
/// alone before the first), the two halves filling the value heads in
/// order. Queries and keys are scaled to norm √headDim (the norm clamped
/// below at float32's eps), each key head then times its `keyScales` entry
/// (`temp`), rotated (`rotary`: the first `rotaryDim` of each head), and
/// attended causally, within `slidingWindow` when set, scaled by
/// headDim^-½; `output` projects the heads' outputs.
public struct ConvolvedAttention: ProjectingTokenMixer {
    public let layout: QKVLayout
    /// q_proj | k_proj | v_proj_current | v_proj_delayed stacked; the
    /// delayed half's bias (with `attention_bias`) is `delayedBias`, added after the shift.
    public let projection: Linear
    public let delayedBias: [Float]?
    /// conv_qk_depthwise [channels, 1, kernel] and its bias; conv_qk_grouped [channels, headDim, kernel] and its bias.
    public let depthwiseTaps: [Float], depthwiseBias: [Float], depthwiseKernel: Int
    public let groupedTaps: [Float], groupedBias: [Float], groupedKernel: Int
    /// [kvHeads]: each key head's scale after its norm.
    public let keyScales: [Float]
    public let rotary: RotaryEmbedding
    public let slidingWindow: Int?
    public let output: Linear

    public init(
        layout: QKVLayout, projection: Linear, delayedBias: [Float]?, depthwiseTaps: [Float], depthwiseBias: [Float], depthwiseKernel: Int,
        groupedTaps: [Float], groupedBias: [Float], groupedKernel: Int, keyScales: [Float], rotary: RotaryEmbedding, slidingWindow: Int?,
        output: Linear
    ) {
        let channels = layout.queryWidth + layout.keyWidth
        precondition(layout.arrangement == .grouped && layout.keyWidth.isMultiple(of: 2) && depthwiseKernel + groupedKernel > 2)
        precondition(projection.outFeatures == channels + layout.keyWidth && delayedBias.map { $0.count == layout.keyWidth / 2 } ?? true)
        precondition(depthwiseTaps.count == channels * depthwiseKernel && groupedTaps.count == channels * layout.headDim * groupedKernel)
        precondition(depthwiseBias.count == channels && groupedBias.count == channels && keyScales.count == layout.numKVHeads)
        self.layout = layout
        self.projection = projection
        self.delayedBias = delayedBias
        self.depthwiseTaps = depthwiseTaps
        self.depthwiseBias = depthwiseBias
        self.depthwiseKernel = depthwiseKernel
        self.groupedTaps = groupedTaps
        self.groupedBias = groupedBias
        self.groupedKernel = groupedKernel
        self.keyScales = keyScales
        self.rotary = rotary
        self.slidingWindow = slidingWindow
        self.output = output
    }

    /// The convolved q | k columns.
    public var channels: Int { layout.queryWidth + layout.keyWidth }
    /// Rows of convolution input before a row that the convolutions read.
    var historyRows: Int { depthwiseKernel - 1 + groupedKernel - 1 }
    var valueHalf: Int { layout.keyWidth / 2 }
    public var mixedWidth: Int { layout.queryWidth }
    /// Each token's key and value (Float32).
    public var cacheBytesPerToken: Int { 2 * layout.keyWidth * MemoryLayout<Float>.size }

    /// history: the last `historyRows` q | k rows, then the last row's
    /// delayed value half (without its bias); recurrent: each row's key and value.
    public func emptyState() -> RecurrentState {
        var state = RecurrentState(history: historyRows * channels + valueHalf)
        state.grows = true
        return state
    }

    public func mix(_ projected: Matrix, rows: Range<Int>, state: inout RecurrentState, into mixed: inout Matrix) {
        let n = rows.count
        guard n > 0 else { return }
        let (C, K, H, G, D) = (channels, historyRows, layout.numHeads, layout.numKVHeads, layout.headDim)
        let (queryWidth, keyWidth, half, width) = (layout.queryWidth, layout.keyWidth, valueHalf, projected.cols)
        let group = H / G, first = state.seen
        // The convolution's input: the history, then the rows' q | k.
        var input = Array(state.history[0..<(K * C)])
        input.reserveCapacity((K + n) * C)
        let previousDelayed = Array(state.history[(K * C)...])
        projected.data.withUnsafeBufferPointer { p in
            for r in rows { input += p[(r * width)..<(r * width + C)] }
        }
        state.history = Array(input[(n * C)...]) + projected.gathering(rows: (rows.upperBound - 1)..<rows.upperBound, columns: (C + half)..<(C + 2 * half))
        // Depthwise, then grouped (each output column reads its head's columns).
        let depthRows = K + n - depthwiseKernel + 1
        var depth = [Float](repeating: 0, count: depthRows * C)
        for t in 0..<depthRows {
            for c in 0..<C {
                var sum: Float = 0
                for j in 0..<depthwiseKernel { sum += depthwiseTaps[c * depthwiseKernel + j] * input[(t + j) * C + c] }
                depth[t * C + c] = sum + depthwiseBias[c]
            }
        }
        var convolved = [Float](repeating: 0, count: n * C)
        depth.withUnsafeBufferPointer { dw in
            groupedTaps.withUnsafeBufferPointer { w in
                convolved.withUnsafeMutableBufferPointer { out in
                    parallelFor(chunks: n, minimumChunk: 4) { part in
                        for t in part {
                            for c in 0..<C {
                                let start = c / D * D
                                var sum: Float = 0
                                for i in 0..<D {
                                    for j in 0..<groupedKernel { sum += w[(c * D + i) * groupedKernel + j] * dw[(t + j) * C + start + i] }
                                }
                                out[t * C + c] = sum + groupedBias[c]
                            }
                        }
                    }
                }
            }
        }
        // Queries, keys and values, grouped q | k | v.
        var qkv = Matrix(zeros: n, layout.width)
        let eps = Float.ulpOfOne, target = Float(D).squareRoot()
        projected.data.withUnsafeBufferPointer { p in
            qkv.data.withUnsafeMutableBufferPointer { o in
                var residual = [Float](repeating: 0, count: queryWidth)
                for t in 0..<n {
                    let row = p.baseAddress! + (rows.lowerBound + t) * width, out = o.baseAddress! + t * layout.width
                    let conv = convolved.withUnsafeBufferPointer { $0.baseAddress! + t * C }
                    for h in 0..<H {
                        for i in 0..<D { residual[h * D + i] = (row[h * D + i] + row[queryWidth + h / group * D + i]) * 0.5 }
                    }
                    for i in 0..<queryWidth { out[i] = conv[i] + residual[i] }
                    for g in 0..<G {
                        for i in 0..<D {
                            var sum: Float = 0
                            for h in (g * group)..<((g + 1) * group) { sum += residual[h * D + i] }
                            out[queryWidth + g * D + i] = conv[queryWidth + g * D + i] + sum / Float(group)
                        }
                    }
                    // Values: the current half, then the delayed one (the previous row's, plus its bias).
                    let values = out + queryWidth + keyWidth
                    for i in 0..<half { values[i] = row[C + i] }
                    for i in 0..<half {
                        let delayed = t == 0 ? previousDelayed[i] : p[(rows.lowerBound + t - 1) * width + C + half + i]
                        values[half + i] = delayedBias.map { delayed + $0[i] } ?? delayed
                    }
                    // Each head to norm √D (ZayaQKNorm), the keys then scaled by temp.
                    for head in 0..<(H + G) {
                        let v = out + head * D
                        var squares: Float = 0
                        for i in 0..<D { squares += v[i] * v[i] }
                        let factor = (1 / max(squares.squareRoot(), eps)) * target
                        for i in 0..<D { v[i] *= factor }
                        if head >= H { for i in 0..<D { v[i] *= keyScales[head - H] } }
                    }
                }
            }
        }
        let positions = Array(first..<(first + n))
        qkv.data.withUnsafeMutableBufferPointer { buffer in
            rotary.apply(
                to: buffer.baseAddress!, rowStride: layout.width,
                headOffsets: (0..<H).map(layout.queryOffset(head:)) + (0..<G).map(layout.keyOffset(kvHead:)), positions: positions)
        }
        let scale = 1 / Float(D).squareRoot()
        state.recurrent += qkv.gathering(rows: 0..<n, columns: queryWidth..<layout.width)
        if first == 0 {
            // A sequence's first rows attend to each other as a whole pass does.
            let attended = causalAttention(qkv: qkv, layout: layout, sequences: [0..<n], scale: scale, slidingWindow: slidingWindow)
            mixed.data.withUnsafeMutableBufferPointer { out in
                attended.data.withUnsafeBufferPointer { a in
                    (out.baseAddress! + rows.lowerBound * queryWidth).update(from: a.baseAddress!, count: n * queryWidth)
                }
            }
        } else {
            // Later rows attend to the keys and values the state holds and their own.
            let stride = 2 * keyWidth, count = first + n
            state.recurrent.withUnsafeBufferPointer { kv in
                qkv.data.withUnsafeBufferPointer { q in
                    mixed.data.withUnsafeMutableBufferPointer { out in
                        var scores = [Float](repeating: 0, count: count)
                        for t in 0..<n {
                            let position = first + t, start = firstVisibleKey(query: position, slidingWindow: slidingWindow, chunkSize: nil)
                            let visible = position - start + 1
                            for h in 0..<H {
                                let g = h / group
                                scores.withUnsafeMutableBufferPointer { s in
                                    BLAS.gemv(
                                        m: visible, n: D, kv.baseAddress! + start * stride + g * D, lda: stride,
                                        q.baseAddress! + t * layout.width + h * D, s.baseAddress!, alpha: scale)
                                    var largest = -Float.infinity
                                    for j in 0..<visible { largest = max(largest, s[j]) }
                                    var sum: Float = 0
                                    for j in 0..<visible {
                                        s[j] = exp(s[j] - largest)
                                        sum += s[j]
                                    }
                                    for j in 0..<visible { s[j] /= sum }
                                    BLAS.gemv(
                                        m: visible, n: D, kv.baseAddress! + start * stride + keyWidth + g * D, lda: stride, transpose: true,
                                        s.baseAddress!, out.baseAddress! + (rows.lowerBound + t) * queryWidth + h * D)
                                }
                            }
                        }
                    }
                }
            }
        }
        state.seen = first + n
    }

    public func finish(_ mixed: Matrix, projected: Matrix) -> Matrix { output(mixed) }
}

/// ZAYA's MoE block (`ZayaSparseMoeBlock`): its router (`ZayaRouter`)
/// projects each row to `router_hidden_size`, h = down(x) (+ the last
/// router's h ⊙ `stateScale` from layer 1 on), and scores `experts` + 1
/// classes by classes(gelu(second(gelu(first(norm h))))); the class of
/// highest softmax probability plus its `balancingBiases` entry wins
/// (torch.topk's first of equal ones), weighted by its probability. The
/// last class is the skip expert: no output (its balancing bias is -1, as
/// transformers sets it on load whatever the checkpoint stores, so it wins
/// only over experts whose biases are below -1 + their probability). h is
/// the state the next router reads.
public struct CarriedRouterMixture: Sendable {
    public let down: Linear
    public let stateScale: [Float]?
    public let norm: Normalization
    public let first: Linear, second: Linear
    public let classes: Linear
    public let activation: Activation
    public let balancingBiases: [Float]
    public let experts: [FeedForward]

    init(
        down: Linear, stateScale: [Float]?, norm: Normalization, first: Linear, second: Linear, classes: Linear, activation: Activation,
        balancingBiases: [Float], experts: [FeedForward]
    ) {
        precondition(classes.outFeatures == experts.count + 1 && balancingBiases.count == classes.outFeatures)
        precondition(stateScale.map { $0.count == down.outFeatures } ?? true)
        self.down = down
        self.stateScale = stateScale
        self.norm = norm
        self.first = first
        self.second = second
        self.classes = classes
        self.activation = activation
        self.balancingBiases = balancingBiases
        self.experts = experts
    }

    /// The router's projections (for FLOP counts).
    public var routerLinears: [Linear] { [down, first, second, classes] }

    /// The experts' output for the rows of `x` and the router state they
    /// leave, reading `state` (the last router's, nil for none).
    public func callAsFunction(_ x: Matrix, state: Matrix?) -> (output: Matrix, state: Matrix) {
        var hidden = down(x)
        if let stateScale, let state {
            precondition(state.rows == x.rows && state.cols == hidden.cols)
            let width = hidden.cols
            hidden.data.withUnsafeMutableBufferPointer { h in
                state.data.withUnsafeBufferPointer { s in
                    for i in h.indices { h[i] += s[i] * stateScale[i % width] }
                }
            }
        }
        var inner = first(norm(hidden))
        activation.apply(inPlace: &inner)
        inner = second(inner)
        activation.apply(inPlace: &inner)
        let logits = classes(inner), count = logits.cols, skip = experts.count
        var chosen = [Int](repeating: 0, count: x.rows), weights = [Float](repeating: 0, count: x.rows)
        logits.data.withUnsafeBufferPointer { l in
            for r in 0..<x.rows {
                let probabilities = MixtureOfExperts.softmax(l.baseAddress! + r * count, count: count)
                let best = TorchTopK.indices(count: count, k: 1) { probabilities[$0] + balancingBiases[$0] }[0]
                // The skip class: an index past the experts, which dispatch leaves without output.
                (chosen[r], weights[r]) = (best, best == skip ? 0 : probabilities[best])
            }
        }
        let routing = MixtureOfExperts.Routing(experts: chosen, weights: weights, expertsPerToken: 1)
        return (MixtureOfExperts.dispatch(x, to: experts, routing: routing), hidden)
    }
}

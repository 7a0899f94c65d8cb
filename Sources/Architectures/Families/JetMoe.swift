import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `jetmoe`, with JetMoeConfig's defaults.
struct JetMoeConfiguration: Decodable {
    /// Each head's width: `kv_channels`, or `head_dim` where written
    /// (JetMoeConfig's attribute map reads it as `kv_channels`; a pair that
    /// disagrees is refused with the other aliases, `ConfigValueKinds`).
    var kvChannels: Int
    /// The key config.json gives the head width under, for errors.
    var kvChannelsKey: String
    var numKeyValueHeads: Int
    /// Experts of both mixtures: the attention's and the MLP's.
    var numLocalExperts: Int
    /// Experts per token of both routers.
    var numExpertsPerTok: Int
    var activationFunction: String
    /// The final norm's only: the layers' norms keep JetMoeRMSNorm's default 1e-6.
    var rmsNormEps: Double

    enum CodingKeys: String, CodingKey {
        case kvChannels = "kv_channels"
        case headDim = "head_dim"
        case numKeyValueHeads = "num_key_value_heads"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case activationFunction = "activation_function"
        case rmsNormEps = "rms_norm_eps"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        kvChannels = try headDim ?? c.decodeIfPresent(Int.self, forKey: .kvChannels) ?? 128
        kvChannelsKey = headDim == nil ? "kv_channels" : "head_dim"
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? 16
        numLocalExperts = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts) ?? 8
        numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 2
        activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? "silu"
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        let config = self
        try ConfigRules.decodingChecks {
            try ConfigRules.count(config.kvChannels, config.kvChannelsKey)
            try ConfigRules.count(config.numKeyValueHeads, "num_key_value_heads")
            try ConfigRules.count(config.numLocalExperts, "num_local_experts")
            // JetMoeConfig refuses more than the experts; torch.topk fails on fewer than 1.
            try MixtureOfExperts.checkExpertsPerToken(config.numExpertsPerTok, of: config.numLocalExperts, expertsKey: "num_local_experts")
            // The query heads: each chosen expert's num_key_value_heads heads.
            try ConfigRules.product([
                (config.numLocalExperts, "num_local_experts"), (config.numExpertsPerTok, "num_experts_per_tok"),
                (config.numKeyValueHeads, "num_key_value_heads"), (config.kvChannels, config.kvChannelsKey),
            ])
        }
    }

    /// What JetMoeAttention reads of the sizes `DecoderDimensions` names
    /// otherwise: heads `kv_channels` wide, and as many query heads as the
    /// chosen experts give, whatever config.json's `num_attention_heads`
    /// says (JetMoeConfig derives it; the model never reads it).
    var section: ConfigSection {
        ConfigSection(overrides: [
            "num_attention_heads": .integer(numKeyValueHeads * numExpertsPerTok), "head_dim": .integer(kvChannels),
        ])
    }
}

/// JetMoE: pre-RMSNorm blocks whose attention and MLP are both mixtures of
/// experts, each with `num_local_experts` experts of which a router (no
/// bias) chooses `num_experts_per_tok` per token, weighted by the softmax of
/// the chosen logits (JetMoeTopKGating), and each ending in a bias of its own.
///
/// - The attention (`self_attention.`) is a mixture of attention heads
///   (`AttentionHeadExperts`): `kv_proj` [2 · kv_heads · kv_channels, hidden]
///   gives the keys and values; each chosen expert of
///   `experts.input_linear` [experts, kv_heads · kv_channels, hidden] gives
///   kv_heads query heads, which attend to the shared keys (rotary on both);
///   each expert's heads go through its `experts.output_linear`
///   [experts, hidden, kv_heads · kv_channels], the outputs weighted and
///   summed, plus `experts.bias` [hidden]. Router: `experts.router.layer`.
/// - The MLP (`mlp.`) is SwiGLU experts `input_linear` [experts,
///   2 · intermediate, hidden] (gate rows first) and `output_linear`
///   [experts, hidden, intermediate], routed by `router.layer`, plus `bias`
///   [hidden].
///
/// The names are transformers' modules' (it renames none of them on load),
/// as the released checkpoint stores them. The layers' norms use
/// JetMoeRMSNorm's default eps 1e-6; `rms_norm_eps` is the final norm's.
/// Dropping the attention drops its router, experts, keys and values and
/// bias; dropping the MLP its router, experts and bias.
struct JetMoeModel: DecoderFamily {
    let parts: DecoderParts
    let config: JetMoeConfiguration
    let rotary: RotaryEmbedding

    /// JetMoeDecoderLayer's norms: JetMoeRMSNorm(hidden_size), whatever `rms_norm_eps` says.
    static let layerNormEps = 1e-6

    init(_ checkpoint: Checkpoint) throws {
        let config = try checkpoint.decodeConfig(JetMoeConfiguration.self)
        self.config = config
        let parts = try DecoderParts(checkpoint, section: config.section, naming: Self.naming)
        self.parts = parts
        let d = parts.dimensions.hiddenSize, experts = config.numLocalExperts
        let width = config.numKeyValueHeads * config.kvChannels, head = "num_key_value_heads × \(config.kvChannelsKey)"
        try parts.checks {
            try ConfigRules.product([
                (experts, "num_local_experts"), (width, head), (d, "hidden_size"),
            ])
            try ConfigRules.product([
                (experts, "num_local_experts"), (2, "gate and up"), (parts.dimensions.intermediateSize, "intermediate_size"),
                (d, "hidden_size"),
            ])
        }
        // The expert lists are built num_local_experts long and the heads
        // sized from kv_channels: the first kept attention and MLP confirm them.
        let weights = parts.weights, configPath = parts.configPath, drops = parts.configuredDrops
        if let layer = parts.firstKeptAttention {
            let p = "layers.\(layer).self_attention."
            try weights.confirmShape(
                p + "experts.router.layer.weight", [experts, d], keys: "num_local_experts, hidden_size", configPath: configPath)
            try weights.confirmShape(
                p + "kv_proj.weight", [2 * width, d], keys: "2 × \(head), hidden_size", configPath: configPath)
            try weights.confirmShape(
                p + "experts.input_linear.weight", [experts, width, d], keys: "num_local_experts, \(head), hidden_size",
                configPath: configPath)
        }
        if let layer = (0..<parts.dimensions.numHiddenLayers).first(where: { !drops.dropsMLP($0) }) {
            let p = "layers.\(layer).mlp."
            try weights.confirmShape(
                p + "router.layer.weight", [experts, d], keys: "num_local_experts, hidden_size", configPath: configPath)
            try weights.confirmShape(
                p + "input_linear.weight", [experts, 2 * parts.dimensions.intermediateSize, d],
                keys: "num_local_experts, 2 × intermediate_size, hidden_size", configPath: configPath)
        }
        // JetMoeRotaryEmbedding's default rotation spans kv_channels (partial_rotary_factor unread).
        rotary = try parts.rotary(confirmProjections: false)
        _ = try parts.activation(config.activationFunction, key: "activation_function")
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attention.", "input_layernorm."], mlp: ["mlp.", "post_attention_layernorm."],
            layerCountKeys: ["num_hidden_layers"])
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights, p = "layers.\(index)."
        let d = hiddenSize, experts = config.numLocalExperts, k = config.numExpertsPerTok
        let width = config.numKeyValueHeads * config.kvChannels
        func attention() throws -> SelfAttention {
            let a = p + "self_attention."
            let heads = AttentionHeadExperts(
                router: try weights.linear(a + "experts.router.layer", in: d, out: experts, bias: false),
                queries: Weights.expertLinears(
                    try weights.floats(a + "experts.input_linear.weight", [experts, width, d]), count: experts, in: d, out: width),
                outputs: Weights.expertLinears(
                    try weights.floats(a + "experts.output_linear.weight", [experts, d, width]), count: experts, in: width, out: d),
                outputBias: try weights.floats(a + "experts.bias", [d]),
                keysValues: try weights.linear(a + "kv_proj", in: d, out: 2 * width, bias: false),
                expertsPerToken: k, headDim: config.kvChannels)
            // `finish` projects through the chosen output experts; `output` stands for one of them (FLOP counts).
            return SelfAttention(
                projection: .headExperts(heads), layout: heads.layout, rotary: rotary, output: heads.outputs[0],
                scale: 1 / Float(config.kvChannels).squareRoot())
        }
        func feedForward() throws -> FeedForward {
            let m = p + "mlp."
            return .mixture(MixtureOfExperts(
                router: try weights.linear(m + "router.layer", in: d, out: experts, bias: false),
                experts: try weights.fusedGatedExperts(
                    gateUp: m + "input_linear.weight", down: m + "output_linear.weight", count: experts, hidden: d,
                    inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.activationFunction, key: "activation_function")),
                expertsPerToken: k, rule: .topKThenSoftmax, outputBias: try weights.floats(m + "bias", [d])))
        }
        return try parts.preNormBlock(index, drops: drops, eps: Self.layerNormEps, attention: attention, feedForward: feedForward)
    }
}

/// A mixture of attention heads (JetMoE's MoA, `JetMoeMoA`): a router
/// chooses `expertsPerToken` of its experts per token, weighted by the
/// softmax of the chosen logits; each chosen expert's query projection gives
/// the token kv_heads query heads, all attending to keys and values of one
/// projection shared by every expert; each expert's heads then go through
/// that expert's output projection, the outputs weighted and summed, and
/// `outputBias` added.
///
/// In `layout` the query heads are grouped by key/value head: head
/// h · k + s is the h-th head of the token's s-th chosen expert (k experts
/// per token), so grouped-query attention gives it key/value head h, as
/// transformers' `repeat` of the keys does for its head s · kv_heads + h.
public struct AttentionHeadExperts: Sendable {
    /// [experts, hidden].
    public let router: Linear
    /// Each [kv_heads · head_dim, hidden].
    public let queries: [Linear]
    /// Each [hidden, kv_heads · head_dim].
    public let outputs: [Linear]
    /// [hidden].
    public let outputBias: [Float]
    /// [2 · kv_heads · head_dim, hidden]: keys, then values.
    public let keysValues: Linear
    public let expertsPerToken: Int
    /// k · kv_heads query heads, kv_heads key/value heads.
    public let layout: QKVLayout

    init(
        router: Linear, queries: [Linear], outputs: [Linear], outputBias: [Float], keysValues: Linear, expertsPerToken: Int,
        headDim: Int
    ) {
        let width = keysValues.outFeatures / 2
        precondition(router.outFeatures == queries.count && queries.count == outputs.count && (1...queries.count).contains(expertsPerToken))
        precondition(width % headDim == 0 && queries.allSatisfy { $0.outFeatures == width } && outputs.allSatisfy { $0.inFeatures == width })
        precondition(outputBias.count == router.inFeatures)
        self.router = router
        self.queries = queries
        self.outputs = outputs
        self.outputBias = outputBias
        self.keysValues = keysValues
        self.expertsPerToken = expertsPerToken
        layout = QKVLayout(numHeads: expertsPerToken * width / headDim, numKVHeads: width / headDim, headDim: headDim)
    }

    /// Each row's chosen experts, best first, and their weights (JetMoeTopKGating).
    func route(_ x: Matrix) -> MixtureOfExperts.Routing {
        MixtureOfExperts.softmaxOverTopLogits(router(x), expertsPerToken: expertsPerToken)
    }

    /// Of `routing`, the (row, slot) pairs that chose expert `e`, in row order.
    private func assignments(_ routing: MixtureOfExperts.Routing, expert e: Int, rows: Int) -> [(row: Int, slot: Int)] {
        let k = expertsPerToken
        return (0..<rows).flatMap { r in (0..<k).filter { routing.experts[r * k + $0] == e }.map { (r, $0) } }
    }

    /// The q | k | v rows of `x` [rows, hidden] in `layout`: each row's
    /// queries from its chosen experts, its keys and values from `keysValues`.
    func project(_ x: Matrix) -> Matrix {
        let routing = route(x), k = expertsPerToken, layout = layout
        let (width, queryWidth, headDim, kvHeads) = (layout.width, layout.queryWidth, layout.headDim, layout.numKVHeads)
        let keysValues = keysValues(x), kvWidth = keysValues.cols
        var out = Matrix(zeros: x.rows, width)
        out.data.withUnsafeMutableBufferPointer { values in
            keysValues.data.withUnsafeBufferPointer { kv in
                for r in 0..<x.rows {
                    (values.baseAddress! + r * width + queryWidth).update(from: kv.baseAddress! + r * kvWidth, count: kvWidth)
                }
            }
        }
        for (e, query) in queries.enumerated() {
            let chosen = assignments(routing, expert: e, rows: x.rows)
            if chosen.isEmpty { continue }
            let projected = query(x.gathering(rows: chosen.map(\.row)))
            out.data.withUnsafeMutableBufferPointer { values in
                projected.data.withUnsafeBufferPointer { q in
                    for (i, (r, s)) in chosen.enumerated() {
                        for h in 0..<kvHeads {
                            (values.baseAddress! + r * width + (h * k + s) * headDim)
                                .update(from: q.baseAddress! + i * projected.cols + h * headDim, count: headDim)
                        }
                    }
                }
            }
        }
        return out
    }

    /// The attention's output from the attended heads `attended` [rows,
    /// queryWidth] of layer input `x`: each chosen expert's output
    /// projection of its heads, weighted, summed in expert order (as
    /// transformers' index_add accumulates them), plus `outputBias`.
    func combine(_ attended: Matrix, input x: Matrix) -> Matrix {
        let routing = route(x), k = expertsPerToken, layout = layout
        let (queryWidth, headDim, kvHeads) = (layout.queryWidth, layout.headDim, layout.numKVHeads)
        let slotWidth = kvHeads * headDim, hidden = outputBias.count
        var out = Matrix(zeros: x.rows, hidden)
        for (e, output) in outputs.enumerated() {
            let chosen = assignments(routing, expert: e, rows: x.rows)
            if chosen.isEmpty { continue }
            let heads = attended.data.withUnsafeBufferPointer { source in
                Matrix(uninitialized: chosen.count, slotWidth) { to in
                    for (i, (r, s)) in chosen.enumerated() {
                        for h in 0..<kvHeads {
                            (to + i * slotWidth + h * headDim)
                                .update(from: source.baseAddress! + r * queryWidth + (h * k + s) * headDim, count: headDim)
                        }
                    }
                }
            }
            let projected = output(heads)
            out.data.withUnsafeMutableBufferPointer { values in
                projected.data.withUnsafeBufferPointer { y in
                    for (i, (r, s)) in chosen.enumerated() {
                        let weight = routing.weights[r * k + s]
                        for j in 0..<hidden { values[r * hidden + j] += y[i * hidden + j] * weight }
                    }
                }
            }
        }
        out.addToEachRow(outputBias)
        return out
    }

    /// The projections a token goes through besides the attention's
    /// `output` (for FLOP counts): the router, the keys and values, its k
    /// query projections and its other k − 1 output projections.
    var linears: [Linear] {
        [router, keysValues] + Array(repeating: queries[0], count: expertsPerToken)
            + Array(repeating: outputs[0], count: expertsPerToken - 1)
    }
}

extension Matrix {
    /// Rows `rows` of the matrix, in that order [rows.count, cols].
    func gathering(rows indices: [Int]) -> Matrix {
        let cols = cols
        return data.withUnsafeBufferPointer { source in
            Matrix(uninitialized: indices.count, cols) { to in
                for (i, r) in indices.enumerated() { (to + i * cols).update(from: source.baseAddress! + r * cols, count: cols) }
            }
        }
    }
}

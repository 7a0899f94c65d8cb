import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `dory`, with DoryConfig's defaults (transformers'
/// `models/dory/configuration_dory.py`).
struct DoryConfiguration: Decodable {
    var hiddenAct: String
    var attentionBias: Bool
    var mlpBias: Bool
    /// DoryConfig types it int: null is refused.
    var slidingWindow: Int?
    /// The nGPT scales' reference: every stored scale s acts as s · s_init / initializer_range.
    var initializerRange: Double
    var ngptAlphaInit: Double
    var nRecurrentLoops: Int
    var recurrentKVCacheMode: String

    enum CodingKeys: String, CodingKey {
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case slidingWindow = "sliding_window"
        case initializerRange = "initializer_range"
        case ngptAlphaInit = "ngpt_alpha_init"
        case nRecurrentLoops = "n_recurrent_loops"
        case recurrentKVCacheMode = "recurrent_kv_cache_mode"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : 1024
        initializerRange = try c.decodeIfPresent(Double.self, forKey: .initializerRange) ?? 0.0177
        ngptAlphaInit = try c.decodeIfPresent(Double.self, forKey: .ngptAlphaInit) ?? 0.05
        nRecurrentLoops = try c.decodeIfPresent(Int.self, forKey: .nRecurrentLoops) ?? 2
        recurrentKVCacheMode = try c.decodeIfPresent(String.self, forKey: .recurrentKVCacheMode) ?? "per_loop"
    }

    /// DoryL2Norm's epsilon (Llama4TextWeightlessRMSNorm's default).
    static let eps: Float = 1e-6
}

/// The layers of a Dory config as DoryConfig resolves them: the released
/// `config.json`s list each layer as two entries of `layer_types` (its
/// attention type, then "mlp") and count both in `num_hidden_layers` and
/// the section sizes, which DoryConfig halves (floor division, a section
/// left to its default of 8 too) when "mlp" is among the types.
struct DoryLayers {
    var count: Int
    var types: [String]
    var inputLayers: Int
    var recurrentLayers: Int
    var outputLayers: Int
    /// The released layout: two config entries per layer.
    var released: Bool

    /// - Throws: `DroptraceError` naming config.json for sections DoryConfig
    ///   refuses (their sum not the layer count), a negative section (DoryModel
    ///   would run some layers twice by Python's negative slices), or a type
    ///   list of another length.
    init(_ checkpoint: Checkpoint) throws {
        let object = try checkpoint.configObject(.topLevel), path = checkpoint.configURL.path
        func integer(_ key: String, default value: Int?) -> Int? {
            switch object[key] {
            case nil: value
            case let number as NSNumber: number.intValue
            default: nil
            }
        }
        /// Python's floor division by 2 (an arithmetic shift: exact for every Int, -2^63 too).
        func halved(_ value: Int) -> Int { value >> 1 }
        let written = object["layer_types"] as? [String]
        released = written?.contains("mlp") == true
        var count = integer("num_hidden_layers", default: 36) ?? 36
        var input = integer("n_input_layers", default: 8) ?? 8, output = integer("n_output_layers", default: 8) ?? 8
        var recurrent = integer("n_recurrent_layers", default: nil)
        var types = written
        if released {
            types = stride(from: 0, to: written!.count, by: 2).map { written![$0] }
            count = halved(count)
            input = halved(input)
            output = halved(output)
            recurrent = recurrent.map(halved)
        }
        let resolvedCount = count
        let resolved = types ?? (0..<max(count, 0)).map { ($0 + 1) % 4 == 0 ? AttentionLayerType.full : AttentionLayerType.sliding }
        self.count = count
        self.types = resolved
        let factor = released ? " (halved from the released layout, whose layer_types lists \"mlp\" after each layer)" : ""
        // The sections' sum, refused where it leaves 64 bits as where it misses num_hidden_layers.
        func sectionSum(_ terms: (partialValue: Int, overflow: Bool)) throws -> Int {
            guard !terms.overflow else {
                throw DroptraceError(
                    "n_input_layers \(input), n_recurrent_layers \(recurrent.map(String.init) ?? "(num_hidden_layers minus the others)") and "
                        + "n_output_layers \(output) do not add up to num_hidden_layers (\(count)) within 64 bits\(factor), as DoryConfig checks",
                    path: path)
            }
            return terms.partialValue
        }
        inputLayers = input
        recurrentLayers = try recurrent ?? sectionSum(sectionSum(count.subtractingReportingOverflow(input)).subtractingReportingOverflow(output))
        outputLayers = output
        if resolved.count != resolvedCount {
            throw DroptraceError(
                "layer_types lists \(resolved.count) layers, but num_hidden_layers is \(resolvedCount)\(factor), as DoryConfig refuses",
                path: path)
        }
        if try sectionSum(sectionSum(inputLayers.addingReportingOverflow(recurrentLayers)).addingReportingOverflow(outputLayers)) != count {
            throw DroptraceError(
                "n_input_layers + n_recurrent_layers + n_output_layers (\(inputLayers) + \(recurrentLayers) + \(outputLayers)) "
                    + "must equal num_hidden_layers (\(count))\(factor), as DoryConfig checks", path: path)
        }
        for (key, value) in [("n_input_layers", inputLayers), ("n_recurrent_layers", recurrentLayers), ("n_output_layers", outputLayers)]
        where value < 0 {
            throw DroptraceError(
                "\(key) is \(value)\(factor): DoryModel would slice its layers from the end and run some of them twice; "
                    + "droptrace reads sections of 0 or more layers", path: path)
        }
    }

    var recurrent: Range<Int> { inputLayers..<(inputLayers + recurrentLayers) }
}

/// Dory (`dory`, NVIDIA's Nemotron-Labs Dory; transformers'
/// `models/dory/modeling_dory.py`): a looped normalized transformer (nGPT).
/// Every hidden state lives on the unit sphere: the norms are weightless L2
/// norms (x / √(Σx² + 1e-6), `DoryL2Norm`), and each layer is Gemma-2's
/// sandwich with an interpolating residual,
///
///     n = L2(X),  H = n + |λ₁ · a| ⊙ (L2(Attn(n)) − n)
///     m = L2(H),  Y = m + |λ₂ · a| ⊙ (L2(MLP(m)) − m),   a = ngpt_alpha_init / initializer_range
///
/// (`input_layernorm`, `post_attention_layernorm`, `pre_feedforward_layernorm`,
/// `post_feedforward_layernorm`; `lambda_1`, `lambda_2` per channel). The
/// attention is AFMoE's gated one with nGPT's details: q_proj, k_proj,
/// v_proj (biases by `attention_bias`), each query and key head L2-normed,
/// rotated (every layer, by its type's entry of `rope_parameters`: sliding
/// layers at base 1e4, full at 1e7 by default), the queries then multiplied
/// per channel by (sqk · √head_dim / initializer_range)², scores scaled by
/// 1/√head_dim, the output times sigmoid(gate_proj x ⊙ (s_gate ·
/// hidden_size^¼ / initializer_range)²), L2-normed (`attn_sub_norm`) before
/// o_proj; `sliding_attention` layers of `layer_types` (when absent every
/// fourth full) attend within `sliding_window` (1024). The MLP is Llama's
/// SwiGLU with gate and up scaled per channel by `suv_gate`, `suv_up` ·
/// √hidden_size and its hidden rows L2-normed (`ffn_sub_norm`) before
/// down_proj (biases by `mlp_bias`). The head `lm_head` multiplies each
/// token's logit by `logit_scale` / initializer_range; the final `norm` is
/// the L2 norm.
///
/// DoryModel runs the first `n_input_layers` layers once, then the next
/// `n_recurrent_layers` (by default the rest) `n_recurrent_loops` times,
/// each pass starting from L2(x) + L2(x₀) (x₀ the input layers' output),
/// then the last `n_output_layers` once (`LayerLoop`: a looped layer's
/// modules are scored over its passes and dropped from all of them; an
/// export writes the kept sections' sizes). `recurrent_kv_cache_mode`
/// changes only cached decoding ("last_loop": the loops before the last read
/// the last loop's cache of the earlier tokens; `DoryPastReader`, a view of
/// the cache, not a layer of the model). Released configs list each layer
/// twice in `layer_types` ("…_attention", "mlp") and count it twice in
/// `num_hidden_layers` and the section sizes, which DoryConfig halves
/// (`DoryLayers`); an export keeps the layout it read. Untied by default.
struct DoryModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: DoryConfiguration
    let layers: DoryLayers
    let rotaries: [String: RotaryEmbedding]

    static let sectionDefaults: [String: ConfigDefault] = [
        "vocab_size": 131072, "hidden_size": 2560, "intermediate_size": 7168, "num_hidden_layers": 36,
        "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 8192,
        "sliding_window": 1024,
    ]

    init(_ checkpoint: Checkpoint) throws {
        let layers = try DoryLayers(checkpoint)
        self.layers = layers
        // The layer count DoryConfig resolves; the types are checked here, in either layout.
        parts = try DecoderParts(
            checkpoint, section: ConfigSection(defaults: Self.sectionDefaults, overrides: ["num_hidden_layers": .integer(layers.count), "layer_types": .null]),
            naming: { Self.naming($0) })
        let config = try parts.config(DoryConfiguration.self)
        self.config = config
        let path = parts.configPath
        try ConfigRules.checks(path: path) {
            guard config.initializerRange != 0 else {
                throw InvalidConfigValue(key: "initializer_range", problem: "is 0: DoryAttention, DoryDecoderLayer and DoryLMHead divide by it")
            }
            guard config.nRecurrentLoops >= 1 else {
                throw InvalidConfigValue(key: "n_recurrent_loops", problem: "must be at least 1, got \(config.nRecurrentLoops), as DoryConfig checks")
            }
            // Bounded before a pass runs (every loop runs its entry norm, also with no recurrent layer).
            let (looped, overflow) = config.nRecurrentLoops.multipliedReportingOverflow(by: max(layers.recurrent.count, 1))
            guard !overflow, looped <= LayerLoop.maximumInvocations - (layers.count - layers.recurrent.count) else {
                throw InvalidConfigValue(
                    key: "n_recurrent_loops",
                    problem: "(\(config.nRecurrentLoops)) × n_recurrent_layers (\(layers.recurrent.count)) layer passes per forward pass "
                        + "are more than the \(LayerLoop.maximumInvocations) droptrace runs")
            }
            guard ["per_loop", "last_loop"].contains(config.recurrentKVCacheMode) else {
                throw InvalidConfigValue(
                    key: "recurrent_kv_cache_mode", problem: "must be \"per_loop\" or \"last_loop\", got \"\(config.recurrentKVCacheMode.forErrorMessage)\"")
            }
        }
        try parts.requireWindow(config.slidingWindow, builtBy: "DoryModel")
        _ = try parts.layerTypes(layers.types, slidingWindow: config.slidingWindow) { _ in AttentionLayerType.full }
        let top = try checkpoint.configObject(.topLevel)
        if let scaling = top["rope_scaling"], !(scaling is NSNull), top["rope_parameters"].map({ $0 is NSNull }) ?? true {
            throw DroptraceError(
                "rope_scaling without rope_parameters: DoryConfig makes it one flat rope_parameters, which DoryRotaryEmbedding "
                    + "cannot read by layer type; give rope_parameters per layer type", path: path)
        }
        try parts.confirmAttentionProjections()
        // The MLP's width, before any block is read.
        let drops = parts.configuredDrops
        if let layer = (0..<layers.count).first(where: { !drops.dropsMLP($0) }) {
            try parts.weights.confirmShape(
                "layers.\(layer).mlp.gate_proj.weight", [parts.dimensions.intermediateSize, parts.dimensions.hiddenSize],
                keys: "intermediate_size, hidden_size", configPath: path)
        }
        let defaults: [String: [String: Any]] = [
            AttentionLayerType.sliding: ["rope_type": "default", "rope_theta": 10_000.0],
            AttentionLayerType.full: ["rope_type": "default", "rope_theta": 10_000_000.0],
        ]
        rotaries = try parts.rotariesAsWritten(
            types: Set(layers.types), defaults: defaults, rotaryClass: "DoryRotaryEmbedding", attentionClass: "DoryAttention",
            // The default rotation ignores partial_rotary_factor; a scaled one's narrower table fails in DoryAttention.
            partialRotary: { _ in .ignored }, inheritsPartialRotaryFactor: true, inheritedRopeTheta: 10_000)
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm.", "post_attention_layernorm.", "lambda_1"],
            mlp: ["mlp.", "pre_feedforward_layernorm.", "post_feedforward_layernorm.", "lambda_2"],
            layerCountKeys: ["num_hidden_layers"])
    }

    /// An export without some blocks writes the kept sections' sizes and
    /// spells out the kept layers' types, in the layout config.json has.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.layerTypes = layers.types
        naming.configEntriesPerLayer = layers.released ? 2 : 1
        let recurrent = layers.recurrent
        naming.layerSections = [
            .init(key: "n_input_layers", layers: 0..<recurrent.lowerBound),
            .init(key: "n_recurrent_layers", layers: recurrent),
            .init(key: "n_output_layers", layers: recurrent.upperBound..<layers.count),
        ]
        return naming
    }

    var layerLoop: LayerLoop? {
        LayerLoop(
            layers: layers.recurrent, passes: config.nRecurrentLoops, entryNorm: l2(hiddenSize),
            sharesCacheAcrossPasses: config.recurrentKVCacheMode == "last_loop")
    }

    func l2(_ size: Int) -> Normalization { .l2(size: size, eps: DoryConfiguration.eps) }

    /// The stored per-channel scales `name` [size] times `factor`, as torch
    /// multiplies a float32 parameter by a Python float.
    func scales(_ name: String, size: Int, factor: Double) throws -> [Float] {
        try parts.weights.floats(name, [size]).map { $0 * Float(factor) }
    }

    func head() throws -> OutputHead {
        let plain = try parts.head(norm: l2(hiddenSize))
        let vocabulary = plain.projection.outFeatures
        // Beside lm_head, outside the decoder's prefix.
        let stored = try parts.checkpoint.tensor(parts.weights.absolute("lm_head.logit_scale"), shape: [vocabulary]).floats()
        let logitScales = stored.map { $0 * Float(1 / config.initializerRange) }
        return OutputHead(norm: plain.norm, projection: plain.projection.scalingRows(by: logitScales))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), d = hiddenSize, p = "layers.\(index)."
        let rate = config.ngptAlphaInit / config.initializerRange
        func rates(_ name: String) throws -> [Float] { try scales(p + name, size: d, factor: rate).map(abs) }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: l2(d), attention: try attention(layer: index), outputNorm: l2(d),
                join: .interpolating(rate: try rates("lambda_1"))),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: l2(d), feedForward: try feedForward(layer: index), outputNorm: l2(d),
                join: .interpolating(rate: try rates("lambda_2"))),
            residual: .sequential)
    }

    /// Layer `index`'s attention: L2-normed query and key heads, rotary,
    /// the queries' per-channel `sqk` scale, the output gate scaled by
    /// `s_gate` (folded into gate_proj's rows) and the L2 `attn_sub_norm`.
    func attention(layer index: Int) throws -> SelfAttention {
        let weights = parts.weights, layout = parts.attentionLayout, d = hiddenSize
        let p = "layers.\(index).self_attn.", type = layers.types[index], width = layout.queryWidth
        let gateScales = try scales(p + "s_gate", size: width, factor: pow(Double(d), 0.25) / config.initializerRange)
        var attention = try parts.attention(
            p, bias: config.attentionBias, rotary: rotaries[type],
            slidingWindow: type == AttentionLayerType.sliding ? config.slidingWindow : nil,
            queryKeyNorm: .perHead(query: l2(layout.headDim), key: l2(layout.headDim)),
            outputGate: try weights.linear(p + "gate_proj", in: d, out: width, bias: false).scalingRows(by: gateScales.map { $0 * $0 }))
        attention.queryScales = try scales(p + "sqk", size: width, factor: Double(layout.headDim).squareRoot() / config.initializerRange)
            .map { $0 * $0 }
        attention.attendedNorm = l2(width)
        return attention
    }

    /// Layer `index`'s MLP: SwiGLU whose gate and up rows carry `suv_gate`
    /// and `suv_up` · √hidden_size, its hidden rows L2-normed before down_proj.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", d = hiddenSize, inner = parts.dimensions.intermediateSize
        let factor = Double(d).squareRoot()
        let gated = try parts.weights.gatedMLP(
            p, hidden: d, inner: inner, activation: try parts.activation(config.hiddenAct), bias: config.mlpBias)
        guard case .gated(let gateUp, let down, let activation) = gated else { preconditionFailure("gatedMLP is gated") }
        let rowScales = try scales(p + "suv_gate", size: inner, factor: factor) + scales(p + "suv_up", size: inner, factor: factor)
        return .hiddenNormed(.gated(gateUp: gateUp.scalingRows(by: rowScales), down: down, activation: activation), norm: l2(inner))
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `hrm_text`, with HrmTextConfig's defaults (transformers'
/// `models/hrm_text/configuration_hrm_text.py`).
struct HrmTextConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var attentionBias: Bool
    var mlpBias: Bool
    var highCycles: Int
    var lowCycles: Int
    /// nil: 1 / initializer_range.
    var embeddingScale: Double?
    var initializerRange: Double

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case highCycles = "H_cycles"
        case lowCycles = "L_cycles"
        case embeddingScale = "embedding_scale"
        case initializerRange = "initializer_range"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        highCycles = try c.decodeIfPresent(Int.self, forKey: .highCycles) ?? 2
        lowCycles = try c.decodeIfPresent(Int.self, forKey: .lowCycles) ?? 3
        embeddingScale = try c.decodeIfPresent(Double.self, forKey: .embeddingScale)
        initializerRange = try c.decodeIfPresent(Double.self, forKey: .initializerRange) ?? 0.02
    }
}

/// HRM-Text (`hrm_text`, Sapient's HrmTextForCausalLM; transformers'
/// `models/hrm_text/modeling_hrm_text.py`): a depth-recurrent model of two
/// stacks, `L_module` and `H_module`, of `num_layers_per_stack` Llama
/// layers each, whose RMSNorms have no weight (x / √(mean x² + eps)). Each
/// layer's attention is multi-head (k_proj, v_proj as wide as q_proj), its
/// output gated by sigmoid(gate_proj x) before o_proj (biases by
/// `attention_bias`); the MLP is SwiGLU (`mlp_bias`). Each stack ends in its
/// own weightless `final_norm`.
///
/// HrmTextModel scales the token embeddings by `embedding_scale` (default
/// 1 / `initializer_range`) into z_H, starts z_L at the stored `z_L_init`
/// (zeros where not stored, as transformers initialises it), and for each
/// of `H_cycles` cycles runs the L stack `L_cycles` times on z_L + z_H, then
/// the H stack on z_H + z_L (`LayerLoop.Stacks`); the head reads z_H, the
/// last H invocation's normed output, without another norm.
///
/// droptrace numbers the L stack's layers 0..<n and the H stack's n..<2n. A
/// layer runs once per invocation of its stack (an L layer H_cycles ·
/// L_cycles times, an H layer H_cycles times): its modules are scored over
/// every token of every invocation, each weighing the same, and dropping a
/// module drops it from every invocation, the weights being shared. Each
/// invocation has a key/value cache of its own, as transformers' one cache
/// slot per invocation. HrmTextConfig has one layer count for both stacks
/// and no per-module drop keys: an export removes as many blocks of each
/// stack, and is refused for other plans (`exportProblem`).
///
/// `prefix_lm` changes only inputs with `token_type_ids`, which droptrace's
/// plain causal text has none of; `L_bp_cycles` only routes gradients.
/// Tensors as released (`attn.gqkv_proj`: gate | q | k | v rows,
/// `attn.o_proj`, `mlp.gate_up_proj`) or as transformers names them. Untied
/// by default.
struct HrmTextModel: DecoderFamily {
    let parts: DecoderParts
    let config: HrmTextConfiguration
    let rotary: RotaryEmbedding
    /// Layers per stack.
    let perStack: Int
    let lowStart: [Float]
    /// The key counting a stack's layers: `num_layers_per_stack`, or
    /// `num_hidden_layers` in a config as first written (without the former).
    let countKey: String

    static let sectionDefaults: [String: ConfigDefault] = [
        "vocab_size": 151808, "hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 16,
        "num_attention_heads": 12, "head_dim": 128, "max_position_embeddings": 2048,
    ]

    init(_ checkpoint: Checkpoint) throws {
        let object = try checkpoint.configObject(.topLevel), path = checkpoint.configURL.path
        func integer(_ key: String) -> Int? { (object[key] as? NSNumber)?.intValue }
        // HrmTextConfig remembers num_hidden_layers as the stack size on first
        // construction, then counts one layer per invocation in num_hidden_layers.
        let stacked = object["num_layers_per_stack"].map { !($0 is NSNull) } ?? false
        let perStack = stacked ? integer("num_layers_per_stack") ?? 0 : integer("num_hidden_layers") ?? 16
        let countKey = stacked ? "num_layers_per_stack" : "num_hidden_layers"
        self.perStack = perStack
        self.countKey = countKey
        // Before the weights are compared with a layer count (at least 1 there).
        try ConfigRules.checks(path: path) {
            guard perStack >= 1 else {
                throw InvalidConfigValue(key: countKey, problem: "is \(perStack): each stack needs a layer for droptrace to score")
            }
        }
        for key in [DropPlan.attentionKey, DropPlan.mlpKey] where object[key].map({ DecoderParts.isTruthy($0) }) ?? false {
            throw DroptraceError(
                "\"\(key)\" is set, but HrmTextModel reads no such list: transformers runs every module; remove it", path: path)
        }
        if object["head_dim"] is NSNull {
            throw DroptraceError("head_dim is null, which HrmTextConfig refuses (an int)", path: path)
        }
        parts = try DecoderParts(
            checkpoint,
            section: ConfigSection(
                defaults: Self.sectionDefaults,
                overrides: ["num_hidden_layers": .integer(max(perStack, 1)), "num_key_value_heads": .null]),
            naming: { Self.naming($0 + "L_module.", countKey: countKey) })
        let config = try parts.config(HrmTextConfiguration.self)
        self.config = config
        let d = parts.dimensions
        try ConfigRules.checks(path: path) {
            guard d.hiddenSize % d.numAttentionHeads == 0 else {
                throw InvalidConfigValue(
                    key: "hidden_size",
                    problem: "(\(d.hiddenSize)) is not a multiple of num_attention_heads (\(d.numAttentionHeads)), as HrmTextConfig checks")
            }
            for (key, value) in [("H_cycles", config.highCycles), ("L_cycles", config.lowCycles)] where value < 1 {
                throw InvalidConfigValue(
                    key: key,
                    problem: "is \(value): HrmTextModel would run no \(key == "H_cycles" ? "stack" : "L stack") at all, whose layers droptrace cannot score; it reads 1 or more")
            }
            guard (0...1).contains(config.initializerRange) else {
                throw InvalidConfigValue(key: "initializer_range", problem: "must be within [0, 1], got \(config.initializerRange), as HrmTextConfig checks")
            }
            if config.embeddingScale == nil, config.initializerRange == 0 {
                throw InvalidConfigValue(
                    key: "initializer_range", problem: "is 0 without embedding_scale: HrmTextConfig divides by it for the default scale")
            }
            // Bounded before anything is sized by it (the steps, a cache per invocation).
            let (cycles, cyclesOverflow) = config.highCycles.multipliedReportingOverflow(by: config.lowCycles &+ 1)
            let (invocations, overflow) = perStack.multipliedReportingOverflow(by: cycles)
            guard !cyclesOverflow, !overflow, config.lowCycles < Int.max, invocations <= LayerLoop.maximumInvocations else {
                throw InvalidConfigValue(
                    key: "H_cycles",
                    problem: "(\(config.highCycles)) × (L_cycles (\(config.lowCycles)) + 1) × \(countKey) (\(perStack)) layer invocations "
                        + "per forward pass are more than the \(LayerLoop.maximumInvocations) droptrace runs")
            }
            if stacked, let written = integer("num_hidden_layers"), written < invocations {
                throw InvalidConfigValue(
                    key: "num_hidden_layers",
                    problem: "is \(written), fewer than the \(invocations) cache slots of num_layers_per_stack × H_cycles × (L_cycles + 1): "
                        + "HrmTextModel's cached forward (its default) fails on the slot past the last")
            }
        }
        // The H stack's layers, as the L stack's are confirmed by the parts.
        try parts.weights.confirmLayers(
            Self.naming(parts.weights.prefix + "H_module.", countKey: countKey), count: perStack, drops: .none, configPath: path)
        let width = d.numAttentionHeads * d.resolvedHeadDim, heads = "num_attention_heads × head_dim"
        let weights = parts.weights
        if weights.has("L_module.layers.0.attn.gqkv_proj.weight") {
            try weights.confirmShape(
                "L_module.layers.0.attn.gqkv_proj.weight", [4 * width, d.hiddenSize], keys: "4 × \(heads), hidden_size", configPath: path)
        } else {
            for name in ["q_proj", "k_proj", "v_proj", "gate_proj"] {
                try weights.confirmShape(
                    "L_module.layers.0.self_attn.\(name).weight", [width, d.hiddenSize], keys: "\(heads), hidden_size", configPath: path)
            }
        }
        let mlp = weights.has("L_module.layers.0.mlp.gate_up_proj.weight") ? ("gate_up_proj", 2) : ("gate_proj", 1)
        try weights.confirmShape(
            "L_module.layers.0.mlp.\(mlp.0).weight", [mlp.1 * d.intermediateSize, d.hiddenSize],
            keys: (mlp.1 == 2 ? "2 × " : "") + "intermediate_size, hidden_size", configPath: path)
        rotary = try parts.rotary(confirmProjections: false)
        // A parameter transformers initialises to zeros where the checkpoint lacks it, and also
        // finds stored without the prefix the other tensors have (`z_L_init` beside `model.…`).
        if weights.has("z_L_init") {
            lowStart = try weights.floats("z_L_init", [d.hiddenSize])
        } else if weights.checkpoint.hasTensor("z_L_init") {
            let stored = try weights.checkpoint.storedTensor("z_L_init")
            guard stored.shape == [d.hiddenSize] else {
                throw DroptraceError(
                    "tensor 'z_L_init' has shape \(stored.shape), expected [hidden_size] = [\(d.hiddenSize)]", path: weights.checkpoint.weightsPath)
            }
            lowStart = try stored.floats()
        } else {
            lowStart = [Float](repeating: 0, count: d.hiddenSize)
        }
    }

    /// A stack's layers under `prefix`, counted by `countKey`
    /// (`num_layers_per_stack`, or `num_hidden_layers` in a config as first written).
    static func naming(_ prefix: String, countKey: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "attn.", "input_layernorm."],
            mlp: ["mlp.", "post_attention_layernorm."], layerCountKeys: [countKey])
    }

    var layerCount: Int { 2 * perStack }

    /// Both stacks' layers, numbered L then H; an export writes the kept
    /// stack size, and num_hidden_layers (where config.json counts one layer
    /// per invocation) as that size times the invocations.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        let prefix = parts.weights.prefix
        naming.stackPrefixes = ["L_module.", "H_module."].map { prefix + $0 + "layers." }
        naming.stackSize = perStack
        if countKey != "num_hidden_layers" {
            naming.perStackMultiples = ["num_hidden_layers": config.highCycles * (config.lowCycles + 1)]
        }
        return naming
    }

    var embeddingScale: Double { config.embeddingScale ?? 1 / config.initializerRange }

    /// The weightless RMSNorm of the layers and the stacks' `final_norm`.
    var norm: Normalization { .weightlessRMS(size: hiddenSize, eps: Float(config.rmsNormEps)) }

    var layerLoop: LayerLoop? {
        LayerLoop(
            stacks: .init(
                low: 0..<perStack, high: perStack..<(2 * perStack), highCycles: config.highCycles, lowCycles: config.lowCycles,
                lowStart: lowStart),
            entryNorm: norm)
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch, multiplier: Float(embeddingScale)) }

    /// The H stack's final norm, then lm_head.
    func head() throws -> OutputHead { try parts.head(norm: norm) }

    /// The stack and layer index under which layer `index`'s tensors are stored.
    func stored(_ index: Int) -> String {
        index < perStack ? "L_module.layers.\(index)." : "H_module.layers.\(index - perStack)."
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), d = hiddenSize, p = stored(index), weights = parts.weights
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(inputNorm: norm, attention: try attention(p)),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: norm,
                feedForward: .gated(
                    gateUp: try weights.stackedLinear(
                        [p + "mlp.gate_proj", p + "mlp.up_proj"], in: d, outs: [parts.dimensions.intermediateSize, parts.dimensions.intermediateSize],
                        bias: config.mlpBias, storedFused: p + "mlp.gate_up_proj"),
                    down: try weights.linear(p + "mlp.down_proj", in: parts.dimensions.intermediateSize, out: d, bias: config.mlpBias),
                    activation: try parts.activation(config.hiddenAct))),
            residual: .sequential)
    }

    /// The gated multi-head attention under `p`: gate | q | k | v read as one
    /// projection (stored so as `attn.gqkv_proj`, or apart), split into the
    /// output gate and the fused q | k | v.
    func attention(_ p: String) throws -> SelfAttention {
        let layout = parts.attentionLayout, d = hiddenSize, width = layout.queryWidth
        let all = try parts.weights.stackedLinear(
            ["gate_proj", "q_proj", "k_proj", "v_proj"].map { p + "self_attn." + $0 }, in: d, outs: [width, width, width, width],
            bias: config.attentionBias, storedFused: p + "attn.gqkv_proj")
        func rows(_ range: Range<Int>) -> Linear {
            Linear(
                weight: Array(all.weight[(range.lowerBound * d)..<(range.upperBound * d)]), bias: all.bias.map { Array($0[range]) },
                inFeatures: d, outFeatures: range.count)
        }
        return SelfAttention(
            qkv: rows(width..<(4 * width)), layout: layout, rotary: rotary,
            output: try parts.weights.linear(p + "self_attn.o_proj", in: width, out: d, bias: config.attentionBias),
            scale: 1 / Float(layout.headDim).squareRoot(), outputGate: rows(0..<width))
    }

    /// HrmTextConfig counts one stack size for both stacks and has no
    /// per-module drop keys: a plan dropping modules, or more layers of one
    /// stack than of the other, has no checkpoint that loads as the model
    /// droptrace ran; one removing as many blocks of each exports both
    /// stacks renumbered (`LayerNaming.stackPrefixes`).
    func exportProblem(_ plan: DropPlan) -> String? {
        if plan.dropsModulesOfKeptBlocks {
            return "an export cannot drop attention or MLP modules of hrm_text: HrmTextModel reads no drop_attn_list / drop_mlp_list "
                + "and would run them; the dropped model's perplexity and speed are measured without an export"
        }
        guard !plan.blocks.isEmpty else { return nil }
        let low = plan.blocks.filter { $0 < perStack }.count, high = plan.blocks.count - low
        guard low == high else {
            return "an export cannot drop \(low) layers of hrm_text's L_module and \(high) of its H_module: HrmTextConfig gives both stacks "
                + "one \(countKey); the dropped model's perplexity and speed are measured without an export"
        }
        guard low < perStack else {
            return "an export cannot drop every layer of hrm_text's stacks: a \(countKey) of 0 leaves no layer to score"
        }
        return nil
    }
}

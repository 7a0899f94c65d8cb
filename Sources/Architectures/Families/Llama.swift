import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of the Llama family: `llama`, `mistral`, `ministral`,
/// `ministral3`, `qwen2` (also Qwen2-VL's language model), `cwm`, and
/// `internlm3`, `iquestcoder` and `exaone` (LlamaConfig subclasses
/// LlamaForCausalLM runs; EXAONE 3's tensors read under the names
/// transformers renames them to, `TensorRenamings`), which differ only in biases, defaults and sliding-window rules
/// (and Ministral 3's query temperature, `Ministral3Rope`).
struct LlamaConfiguration: Decodable {
    var modelType: String
    var rmsNormEps: Double
    var hiddenAct: String?
    var attentionBias: Bool?
    var mlpBias: Bool?
    /// As written: absent is the config classes' default 4096 (Ministral3Config's: none, CwmConfig's 8192), `null` is none.
    var slidingWindow: Int?
    var useSlidingWindow: Bool?
    var maxWindowLayers: Int?
    var layerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case slidingWindow = "sliding_window"
        case useSlidingWindow = "use_sliding_window"
        case maxWindowLayers = "max_window_layers"
        case layerTypes = "layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decode(String.self, forKey: .modelType)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias)
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias)
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
            : modelType == "ministral3" ? nil : modelType == "cwm" ? Cwm.defaultSlidingWindow : 4096
        // A typed field of Qwen2Config alone (its kind checked with the value kinds); another
        // class keeps whatever it holds (IQuestCoderConfig refuses it truthy, `checkLlamaSubclass`).
        useSlidingWindow = (try? c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow)) ?? nil
        maxWindowLayers = try c.decodeIfPresent(Int.self, forKey: .maxWindowLayers)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
    }

    /// Each layer's attention type, the window of the sliding ones, and the
    /// keys that set it (for errors), as transformers resolves them:
    /// - llama: full attention everywhere (LlamaConfig has no window);
    /// - mistral: the window on every layer (MistralModel's one mask), unless
    ///   `layer_types` is given: AutoModel then loads the checkpoint as
    ///   ministral (interleaved attention, Ministral-8B);
    /// - ministral: `layer_types`, else every layer slides when a window is set;
    /// - ministral3: the window on every layer (Ministral3Model's one mask;
    ///   it ignores `layer_types`);
    /// - qwen2: a window only when `use_sliding_window` (Qwen2Config sets it
    ///   to None otherwise); `layer_types`, else the layers from
    ///   `max_window_layers` (default 28) on slide;
    /// - cwm: `layer_types`, else every fourth layer from 0 attends fully and
    ///   the others slide (`Cwm.defaultLayerTypes`).
    func attentionLayout(layers: Int) -> (types: [String], window: Int?, windowKeys: String) {
        let sliding = AttentionLayerType.sliding, full = AttentionLayerType.full
        switch modelType {
        case "mistral", "ministral":
            let types = layerTypes ?? Array(repeating: slidingWindow == nil ? full : sliding, count: layers)
            return (types, slidingWindow, "sliding_window")
        case "ministral3":
            return (Array(repeating: slidingWindow == nil ? full : sliding, count: layers), slidingWindow, "sliding_window")
        case "qwen2":
            let window = useSlidingWindow == true ? slidingWindow : nil
            let types = layerTypes ?? AttentionLayerType.qwenDefault(layers: layers, window: window, maxWindowLayers: maxWindowLayers)
            return (types, window, "sliding_window and use_sliding_window")
        case "cwm":
            return (layerTypes ?? Cwm.defaultLayerTypes(layers: layers), slidingWindow, "sliding_window")
        default:
            return (Array(repeating: full, count: layers), nil, "sliding_window")
        }
    }
}

/// Llama, Mistral, Ministral, Ministral 3, Qwen2, CWM, InternLM3,
/// IQuest-Coder and Emu3's text model: pre-RMSNorm blocks,
/// rotary attention with grouped-query heads, SwiGLU MLP; also the
/// language model of `mistral3`, `qwen2_vl`, `qwen2_5_vl`, `qwen2_5_omni` and the LLaVA-style
/// checkpoints (`TextModelPlacement.llama`, `QwenVL`, `Llava`).
///
/// Ministral 3 (transformers' models/ministral3/) is Mistral's block with
/// `Ministral3Config`'s defaults (head_dim 128, untied, no window, YaRN
/// rope parameters) and queries scaled by position after rotary
/// (`Ministral3Rope`, `QueryTemperature`).
struct LlamaModel: DecoderFamily {
    /// Llama's model runs every layer in full and Ministral 3's ignores the
    /// list (`attentionLayout`); a wrapper's mistral text model ignores it
    /// too, once checked as the cache reads it (`init`).
    static func readsLayerTypes(_ modelType: String) -> Bool {
        !["llama", "ministral3", "emu3_text_model"].contains(modelType)
    }
    let parts: DecoderParts
    let config: LlamaConfiguration
    let rotary: RotaryEmbedding
    /// Ministral 3's queries scaled by position (nil for the others).
    let queryTemperature: QueryTemperature?
    /// Each layer's attention window, nil for full attention.
    let windows: [Int?]
    /// Each layer's attention type where it depends on the layer's index (Qwen2, CWM).
    let indexedLayerTypes: [String]?

    init(_ checkpoint: Checkpoint) throws {
        try self.init(checkpoint, defaultTheta: 10_000)
    }

    /// A Llama-shaped model whose family rotates with base `defaultTheta`
    /// when config.json names none (SmolLM3).
    init(_ checkpoint: Checkpoint, defaultTheta: Double) throws {
        try self.init(
            parts: try DecoderParts(checkpoint, placement: try .llama(checkpoint), naming: Self.naming), defaultTheta: defaultTheta)
    }

    /// Llama's layers over `parts` (Mllama's text model, whose placement and
    /// embedding are its own); `selfAttentionLayers`: the layers whose
    /// q/k/v/o confirm the heads' width, where not every layer has them
    /// (nil: the first the config keeps).
    init(parts: DecoderParts, defaultTheta: Double, selfAttentionLayers: [Int]? = nil) throws {
        self.parts = parts
        let checkpoint = parts.checkpoint
        var config = try parts.config(LlamaConfiguration.self)
        // AutoConfig reads a mistral config with layer_types as ministral at
        // the top level only: Mistral3Config and LLaVA's build their
        // text_config as MistralConfig, whose model ignores the list.
        if parts.section.name != nil, config.modelType == "mistral" {
            try ForwardPassKeys.requireCacheableLayerTypes(checkpoint.configDocument, path: parts.configPath)
            config.layerTypes = nil
        }
        // Qwen2-VL's and Qwen2.5-Omni's text config classes are fixed, whatever model_type their text_config names.
        let qwenWrapper = QwenVL.qwen2Types.contains(checkpoint.modelType) || QwenVL.qwen2_5OmniTypes.contains(checkpoint.modelType)
        if qwenWrapper { config.modelType = "qwen2" }
        self.config = config
        try Self.checkLlamaSubclass(config, parts: parts)
        if config.modelType == "ministral3" {
            try parts.confirmAttentionProjections()
            let (settings, temperature) = try Ministral3Rope.read(parts)
            rotary = try parts.rotary(defaultTheta: defaultTheta, settings: settings)
            queryTemperature = temperature
        } else if qwenWrapper {
            try QwenVL.checkWindowLayers(parts, config)
            rotary = try QwenVL.qwen2Rotary(parts, readsMropeType: !QwenVL.qwen2_5OmniTypes.contains(checkpoint.modelType))
            queryTemperature = nil
        } else if config.modelType == "cwm" {
            rotary = try parts.rotary(defaultTheta: Cwm.defaultTheta, settings: parts.ropeSettings(defaults: Cwm.defaultRopeParameters).settings)
            queryTemperature = nil
        } else {
            if let selfAttentionLayers { try parts.confirmAttentionProjections(layers: selfAttentionLayers) }
            // ExaoneConfig's rope base is 500000 unless given.
            rotary = try parts.rotary(
                defaultTheta: config.modelType == "exaone" ? 500_000 : defaultTheta, confirmProjections: selfAttentionLayers == nil)
            queryTemperature = nil
        }
        let layout = config.attentionLayout(layers: parts.dimensions.numHiddenLayers)
        // A mistral config with layer_types loads as ministral (`attentionLayout`).
        if config.modelType == "ministral" || (config.modelType == "mistral" && config.layerTypes != nil) {
            try parts.requireWindow(config.slidingWindow, builtBy: "MinistralModel")
        }
        windows = try parts.slidingWindows(layerTypes: layout.types, window: layout.window, windowKeys: layout.windowKeys)
        indexedLayerTypes = ["qwen2", "cwm"].contains(config.modelType) ? layout.types : nil
    }

    /// An export without some blocks spells out Qwen2's and CWM's layer types
    /// (which their config classes derive from the index: from
    /// `max_window_layers` on, or all but every fourth layer, slide), so
    /// renumbering cannot move a window.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.layerTypes = indexedLayerTypes
        return naming
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."], mlp: ["mlp.", "post_attention_layernorm."], layerCountKeys: ["num_hidden_layers"])
    }

    func head() throws -> OutputHead {
        // Tied models (Qwen2-0.5B, SmolLM) save no lm_head.
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try block(index, skipping: plan, rotary: rotary, slidingWindow: windows[index])
    }

    /// Block `index` rotating with `rotary` (nil: a NoPE layer, SmolLM3) and
    /// attending within `slidingWindow` tokens when given.
    func block(_ index: Int, skipping plan: DropPlan, rotary: RotaryEmbedding?, slidingWindow: Int?) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, eps = config.rmsNormEps
        let p = "layers.\(index)."
        // Only Llama's classes (LlamaForCausalLM also runs InternLM3,
        // IQuest-Coder and EXAONE 3) and SmolLM3's read attention_bias (all four
        // projections) and mlp_bias, CWM's mlp_bias alone; Mistral's and
        // Ministral's build no biases, Qwen2's always q/k/v ones and none on
        // o_proj or the MLP.
        let readsBiasFlags = ["llama", "internlm3", "iquestcoder", "exaone", "smollm3"].contains(config.modelType)
        let qkvBias = config.modelType == "qwen2" || readsBiasFlags && config.attentionBias == true
        let outputBias = readsBiasFlags && config.attentionBias == true
        let mlpBias = (readsBiasFlags || config.modelType == "cwm") && config.mlpBias == true
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: qkvBias, outputBias: outputBias, rotary: rotary,
            slidingWindow: slidingWindow, queryTemperature: queryTemperature) }
        func feedForward() throws -> FeedForward {
            try weights.gatedMLP(
                p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize,
                activation: try parts.activation(config.hiddenAct ?? "silu"), bias: mlpBias)
        }
        return try parts.preNormBlock(index, drops: drops, eps: eps, attention: attention, feedForward: feedForward)
    }

    /// What the LlamaConfig subclasses refuse in `validate_architecture`:
    /// InternLM3 q/k/v/o biases (`qkv_bias`) unlike the MLP's (`bias`), which
    /// Llama's layers cannot build; IQuest-Coder's `clip_qkv` (not None) and
    /// `use_sliding_window` (truthy), which no released checkpoint enables.
    /// - Throws: `DroptraceError` naming config.json and the key.
    private static func checkLlamaSubclass(_ config: LlamaConfiguration, parts: DecoderParts) throws {
        switch config.modelType {
        case "internlm3" where (config.attentionBias ?? false) != (config.mlpBias ?? false):
            throw DroptraceError(
                "q/k/v/o biases (\"\(parts.section.qualified("qkv_bias"))\", alias of attention_bias) are \(config.attentionBias ?? false) and MLP biases (\"bias\", alias of mlp_bias) \(config.mlpBias ?? false): InternLM3Config refuses them different, as Llama's layers take one setting for all four attention projections",
                path: parts.configPath)
        case "iquestcoder":
            let object = try parts.checkpoint.configObject(parts.section)
            if let clip = object["clip_qkv"], !(clip is NSNull) {
                throw DroptraceError("\"\(parts.section.qualified("clip_qkv"))\" is set: IQuestCoderConfig refuses it (no released checkpoint clips)", path: parts.configPath)
            }
            if let window = object["use_sliding_window"], DecoderParts.isTruthy(window) {
                throw DroptraceError(
                    "\"\(parts.section.qualified("use_sliding_window"))\" is set: IQuestCoderConfig refuses it (no released checkpoint slides)", path: parts.configPath)
            }
        default:
            break
        }
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `dots3_note_text`'s config.json (Dots3NoteTextConfig) besides
/// the sizes, with the class's defaults, resolved as its `__post_init__`
/// does: the legacy `first_k_dense_replace` / `moe_layer_freq` (MLP types),
/// `use_dsa` / `use_sliding_window` (attention types), `sliding_window_size`,
/// `swa_*` (the sliding layers' attention shapes when `per_layer_config` is
/// absent) and `moe_shared_expert_intermediate_size`.
struct Dots3NoteConfiguration: Decodable {
    /// One layer's attention shape: the global keys, or a `per_layer_config` entry over them.
    struct Shape: Equatable {
        var heads: Int?
        var kvHeads: Int?
        var qLoraRank: Int?
        var kvLoraRank: Int?
        var nope: Int?
        var rope: Int?
        var value: Int?
        var headDim: Int?
        var attentionBias: Bool?
        /// The keys this entry gives, as written (for errors).
        var keys: Set<String> = []

        /// `self` over `base` (an absent key takes base's value).
        func over(_ base: Shape) -> Shape {
            Shape(
                heads: keys.contains("num_attention_heads") ? heads : base.heads,
                kvHeads: keys.contains("num_key_value_heads") ? kvHeads : base.kvHeads,
                qLoraRank: keys.contains("q_lora_rank") ? qLoraRank : base.qLoraRank,
                kvLoraRank: keys.contains("kv_lora_rank") ? kvLoraRank : base.kvLoraRank,
                nope: keys.contains("qk_nope_head_dim") ? nope : base.nope,
                rope: keys.contains("qk_rope_head_dim") ? rope : base.rope,
                value: keys.contains("v_head_dim") ? value : base.value,
                headDim: keys.contains("head_dim") ? headDim : base.headDim,
                attentionBias: keys.contains("attention_bias") ? attentionBias : base.attentionBias, keys: keys)
        }

        static func == (a: Shape, b: Shape) -> Bool {
            [a.heads, a.kvHeads, a.qLoraRank, a.kvLoraRank, a.nope, a.rope, a.value, a.headDim]
                == [b.heads, b.kvHeads, b.qLoraRank, b.kvLoraRank, b.nope, b.rope, b.value, b.headDim] && a.attentionBias == b.attentionBias
        }
    }

    /// A `per_layer_config` entry: only the attention keys Dots3NoteTextAttention
    /// reads per layer (any other key is read globally elsewhere, where
    /// transformers refuses a per-layer value, or sizes what droptrace does not run per layer).
    struct Override: Decodable {
        static let readKeys = [
            "num_attention_heads", "num_key_value_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
            "v_head_dim", "head_dim", "attention_bias",
        ]
        var shape = Shape()

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: ConfigKey.self)
            if let other = c.allKeys.map(\.stringValue).sorted().first(where: { !Self.readKeys.contains($0) }) {
                throw DecodingError.dataCorrupted(DecodingError.Context(
                    codingPath: c.codingPath + [ConfigKey(other)],
                    debugDescription: "droptrace reads per-layer \(Self.readKeys.joined(separator: ", ")) only"))
            }
            func int(_ key: String) throws -> Int? { try c.decodeIfPresent(Int.self, forKey: ConfigKey(key)) }
            shape = Shape(
                heads: try int("num_attention_heads"), kvHeads: try int("num_key_value_heads"), qLoraRank: try int("q_lora_rank"),
                kvLoraRank: try int("kv_lora_rank"), nope: try int("qk_nope_head_dim"), rope: try int("qk_rope_head_dim"),
                value: try int("v_head_dim"), headDim: try int("head_dim"),
                attentionBias: try c.decodeIfPresent(Bool.self, forKey: ConfigKey("attention_bias")),
                keys: Set(c.allKeys.map(\.stringValue)))
        }

        init(shape: Shape) { self.shape = shape }
    }

    /// `per_layer_config`: absent (the sliding layers take the `swa_*`
    /// shape), null (no overrides) or entries by layer index as written.
    enum PerLayer {
        case absent(swa: Shape)
        case none
        case given([(name: String, entry: Override)])
    }

    /// `moe_layer_freq`: every n-th layer, or a flag per layer.
    enum MoeLayerFrequency {
        case every(Int)
        case listed([Bool])
    }

    static let defaultTheta = 80_000_000.0

    var rmsNormEps: Double
    var hiddenAct: String
    /// `sliding_window`, else `sliding_window_size`, else 512; nil: null.
    var slidingWindow: Int?
    var writtenLayerTypes: [String]?
    var useDsa: Bool?
    var useSlidingWindow: Bool
    var mlpLayerTypes: [String]?
    var firstKDenseReplace: Int
    var moeLayerFrequency: MoeLayerFrequency
    var experts: DeepSeekExperts
    var sharedExpertsIntermediateSize: Int
    var indexTopk: Int
    var indexHeadDim: Int
    var indexNHeads: Int
    var latent: LatentAttentionSettings
    var headDim: Int
    var perLayer: PerLayer
    /// The top-level `rope_theta` (absent: 8e7) and `swa_rope_theta` (absent: 5e4).
    var ropeTheta: Double
    var swaRopeTheta: Double

    static let experts = DeepSeekExperts.ConfigClass(
        nRoutedExperts: 256, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 1536, routedScalingFactor: 1,
        name: "Dots3NoteTextConfig")

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: ConfigKey.self)
        func has(_ key: String) -> Bool { c.contains(ConfigKey(key)) }
        func value<T: Decodable>(_ key: String) throws -> T? { try c.decodeIfPresent(T.self, forKey: ConfigKey(key)) }
        /// A legacy key the class pops with a default: absent is the default; null is refused (it cannot compute with it).
        func popped<T: Decodable>(_ key: String, _ fallback: T, use: String) throws -> T {
            guard has(key) else { return fallback }
            guard let v: T = try value(key) else {
                throw InvalidConfigValue(key: key, problem: "is null, which Dots3NoteTextConfig cannot \(use)")
            }
            return v
        }
        rmsNormEps = try value("rms_norm_eps") ?? 1e-5
        hiddenAct = try value("hidden_act") ?? "silu"
        latent = try LatentAttentionSettings(
            from: decoder,
            defaults: LatentAttentionSettings(
                qLoraRank: 1024, kvLoraRank: 512, qkNopeHeadDim: 128, qkRopeHeadDim: 64, vHeadDim: 128, ropeInterleave: true,
                attentionBias: false))
        // Dots3NoteTextAttention rotates interleaved pairs whatever rope_interleave says.
        latent.ropeInterleave = true
        headDim = try value("head_dim") ?? 256
        experts = try DeepSeekExperts(from: decoder, configClass: Self.experts)
        indexTopk = try value("index_topk") ?? 2048
        indexHeadDim = try value("index_head_dim") ?? 128
        indexNHeads = try value("index_n_heads") ?? 64
        var window: Int?
        var types: [String]?
        var perLayer = PerLayer.none
        var useSliding = true, useDsa: Bool? = nil
        var mlpTypes: [String]?
        var firstDense = 1
        var frequency = MoeLayerFrequency.every(1)
        var shared = 1536
        var swaTheta = 50_000.0
        try ConfigRules.decodingChecks {
            mlpTypes = try value("mlp_layer_types")
            firstDense = try popped("first_k_dense_replace", 1, use: "compare layer indices with")
            if let flags = try? c.decodeIfPresent([Bool].self, forKey: ConfigKey("moe_layer_freq")) {
                frequency = .listed(flags)
            } else if let numbers = try? c.decodeIfPresent([Int].self, forKey: ConfigKey("moe_layer_freq")) {
                frequency = .listed(numbers.map { $0 != 0 })
            } else {
                frequency = .every(try popped("moe_layer_freq", 1, use: "take layer indices modulo"))
            }
            shared = try has("shared_experts_intermediate_size")
                ? value("shared_experts_intermediate_size") ?? shared : popped("moe_shared_expert_intermediate_size", shared, use: "size the shared experts by")
            // A null window is sliding_window_size's (absent: 512).
            window = try value("sliding_window") ?? (has("sliding_window_size") ? value("sliding_window_size") : 512)
            types = try value("layer_types")
            useSliding = try popped("use_sliding_window", true, use: "read as a flag")
            // `use_dsa` defaults to None beside per_layer_config, else True; a written null is None.
            useDsa = has("use_dsa") ? try value("use_dsa") : (has("per_layer_config") ? nil : true)
            swaTheta = try popped("swa_rope_theta", swaTheta, use: "rotate by")
            if !has("per_layer_config") {
                let heads = try popped("swa_num_attention_heads", 64, use: "size the sliding layers by")
                let headDim = try popped("swa_head_dim", 256, use: "size the sliding layers by")
                let nope = try popped("swa_qk_nope_head_dim", 192, use: "size the sliding layers by")
                let (rope, overflow) = headDim.subtractingReportingOverflow(nope)
                guard !overflow else { throw InvalidConfigValue(key: "swa_head_dim", problem: "is too large: swa_head_dim - swa_qk_nope_head_dim does not fit in 64 bits") }
                var swa = Shape(
                    heads: heads, kvHeads: try popped("swa_num_key_value_heads", 64, use: "size the sliding layers by"),
                    qLoraRank: has("swa_q_lora_rank") ? try value("swa_q_lora_rank") : 1024,
                    kvLoraRank: try popped("swa_kv_lora_rank", 1024, use: "size the sliding layers by"), nope: nope,
                    rope: try popped("swa_qk_rope_head_dim", rope, use: "size the sliding layers by"),
                    value: try popped("swa_v_head_dim", 128, use: "size the sliding layers by"), headDim: headDim)
                swa.keys = ["num_attention_heads", "num_key_value_heads", "q_lora_rank", "kv_lora_rank", "head_dim", "qk_nope_head_dim",
                            "qk_rope_head_dim", "v_head_dim"]
                perLayer = .absent(swa: swa)
            } else if try c.decodeNil(forKey: ConfigKey("per_layer_config")) {
                perLayer = .none
            } else {
                let entries = try c.decode([String: Override].self, forKey: ConfigKey("per_layer_config"))
                perLayer = .given(entries.sorted { $0.key < $1.key }.map { (name: $0.key, entry: $0.value) })
            }
            try MLPLayerTypes.checkEntries(mlpTypes)
        }
        slidingWindow = window
        writtenLayerTypes = types
        self.perLayer = perLayer
        self.useDsa = useDsa
        useSlidingWindow = useSliding
        mlpLayerTypes = mlpTypes
        firstKDenseReplace = firstDense
        moeLayerFrequency = frequency
        sharedExpertsIntermediateSize = shared
        swaRopeTheta = swaTheta
        ropeTheta = try value("rope_theta") ?? Self.defaultTheta
    }

    /// Each layer's MLP type: `mlp_layer_types`, else sparse from
    /// `first_k_dense_replace` on where `moe_layer_freq` says so.
    /// - Throws: `InvalidConfigValue` where the class's rule fails (a zero frequency, a list too short).
    func resolvedMLPTypes(layers: Int) throws -> [String] {
        if let mlpLayerTypes { return mlpLayerTypes }
        return try (0..<layers).map { i in
            guard i >= firstKDenseReplace else { return "dense" }
            switch moeLayerFrequency {
            case .every(let n):
                guard n != 0 else { throw InvalidConfigValue(key: "moe_layer_freq", problem: "must not be 0: Dots3NoteTextConfig takes each layer index modulo it") }
                return i % n == 0 ? "sparse" : "dense"
            case .listed(let flags):
                guard i < flags.count else {
                    throw InvalidConfigValue(key: "moe_layer_freq", problem: "lists \(flags.count) layers, but layer \(i) needs an entry")
                }
                return flags[i] ? "sparse" : "dense"
            }
        }
    }

    /// Each layer's attention type as Dots3NoteTextConfig resolves it:
    /// `layer_types` (else the first two and every fourth from 1 full,
    /// the others sliding when `use_sliding_window`), full layers
    /// "indexed_attention" unless `use_dsa` is false, `use_dsa` (when not
    /// None) renaming full_attention and indexed_attention into each other.
    func resolvedLayerTypes(layers: Int) -> [String] {
        let full = useDsa == false ? "full_attention" : "indexed_attention"
        var types = writtenLayerTypes
            ?? (0..<layers).map { !useSlidingWindow || $0 < 2 || $0 % 4 == 1 ? full : "sliding_attention" }
        if let useDsa {
            let (old, new) = useDsa ? ("full_attention", "indexed_attention") : ("indexed_attention", "full_attention")
            types = types.map { $0 == old ? new : $0 }
        }
        return types
    }

    /// The global attention shape (`heads` and `kvHeads` from the sizes).
    func globalShape(_ d: DecoderDimensions) -> Shape {
        Shape(
            heads: d.numAttentionHeads, kvHeads: d.numKeyValueHeads ?? d.numAttentionHeads, qLoraRank: latent.qLoraRank,
            kvLoraRank: latent.kvLoraRank, nope: latent.qkNopeHeadDim, rope: latent.qkRopeHeadDim, value: latent.vHeadDim,
            headDim: headDim, attentionBias: latent.attentionBias)
    }
}

/// dots.note's text model (`dots3_note_text`: Dots3NoteForCausalLM;
/// transformers' `models/dots3_note/`), and the language model of its
/// multimodal wrapper `dots3_note` (Dots3NoteForConditionalGeneration: the
/// keys under `text_config`, weights under `model.` as its save_pretrained
/// writes them, or `model.language_model.` as it holds them, the head
/// `lm_head` tied by the top-level `tie_word_embeddings` alone, default
/// false; the vision and audio towers and their configs are not read).
///
/// DeepSeek-V3.2's pre-RMSNorm blocks (`Glm4MoeLiteModel`) with a
/// multi-head latent attention of its own on each layer's type
/// (`layer_types`): "indexed_attention" layers attend causally to the
/// `index_topk` keys their lightning indexer chooses (GLM-5's indexer,
/// rotating interleaved pairs, reading the scaled query latent),
/// "full_attention" ones causally to every key, "sliding_attention" ones
/// to the last `sliding_window` keys. Each attention scales its normalised
/// query and key/value latents by sqrt(hidden_size / rank) (both latent
/// norms with `rms_norm_eps`), normalises the shared key rope part by
/// `k_rope_only_layernorm` before rotating it (interleaved pairs, the
/// rotary table `qk_rope_head_dim` wide per type, its base by
/// `rope_parameters.<type>`), and gates each head's output by the sigmoid
/// of `g_proj` before o_proj; the softmax scale is (qk_nope_head_dim +
/// qk_rope_head_dim)^-1/2. Shapes per layer: transformers' heterogeneous
/// `per_layer_config` (absent: the sliding layers take the `swa_*` keys),
/// one shape per layer type. MLPs: `mlp_layer_types` (else
/// `first_k_dense_replace` and `moe_layer_freq`) "dense" SwiGLU of
/// `intermediate_size`, or DeepSeek-V3's sigmoid group-limited routing
/// with `e_score_correction_bias` over fused experts of
/// `moe_intermediate_size` beside `n_shared_experts` ×
/// `shared_experts_intermediate_size` wide shared experts. The MLP module is
/// router, routed and shared experts together; dropping an attention drops
/// its indexer.
struct Dots3NoteModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    static let layerTypeNames: Set<String> = ["indexed_attention", "full_attention", "sliding_attention"]

    let parts: DecoderParts
    let config: Dots3NoteConfiguration
    let layerTypes: [String]
    let mlpTypes: [String]
    /// Each layer's attention settings (its type's shape).
    let settings: [LatentAttentionSettings]
    let heads: [Int]
    let rotary: [String: RotaryEmbedding]
    let scales: [String: Float]

    init(_ checkpoint: Checkpoint) throws {
        let wrapped = checkpoint.modelType == "dots3_note"
        var placement = TextModelPlacement.topLevel
        if wrapped {
            // Dots3NoteConfig builds a missing text config from the top level's keys (the released layout,
            // whose weights transformers renames on loading); droptrace reads the layout save_pretrained writes.
            guard case .object? = checkpoint.configDocument.member("text_config") else {
                throw DroptraceError(
                    "\"text_config\" is absent or not an object: droptrace reads dots3_note's language model under text_config, as save_pretrained writes it",
                    path: checkpoint.configURL.path)
            }
            if let written = checkpoint.configDocument.member("text_config")?.member("model_type"), !Self.isTextType(written) {
                throw DroptraceError(
                    "\"text_config.model_type\" is \(ConfigValueKinds.spelled(written)): Dots3NoteConfig reads it as dots3_note_text's; write \"dots3_note_text\" or omit it",
                    path: checkpoint.configURL.path)
            }
            // Dots3NoteModel's conversion saves the language model under the causal LM's names (`model.layers.`).
            placement = try .ownTextConfig(checkpoint, prefixes: ["model.language_model.", "model."], textTiesToo: false)
        }
        let config = try checkpoint.decodeConfig(Dots3NoteConfiguration.self, section: placement.section)
        self.config = config
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self, section: placement.section).numHiddenLayers
        let configPath = checkpoint.configURL.path
        func checks<T>(_ body: () throws -> T) throws -> T { try ConfigRules.checks(path: configPath, section: placement.section, body) }
        let mlpTypes = try checks { try config.resolvedMLPTypes(layers: layers) }
        try checks {
            try MLPLayerTypes.checkCount(config.mlpLayerTypes, layers: layers)
            if let unknown = mlpTypes.prefix(layers).first(where: { $0 != "dense" && $0 != "sparse" }) {
                throw InvalidConfigValue(key: "mlp_layer_types", problem: "holds \"\(unknown.forErrorMessage)\"; each layer is \"dense\" or \"sparse\"")
            }
        }
        self.mlpTypes = mlpTypes
        let isSparse: @Sendable (Int) -> Bool = { $0 < mlpTypes.count && mlpTypes[$0] == "sparse" }
        parts = try DecoderParts(
            checkpoint, placement: placement, naming: LlamaModel.naming, experts: config.experts.naming(isSparse: isSparse))
        let d = parts.dimensions
        let types = config.resolvedLayerTypes(layers: layers)
        layerTypes = types
        let shapes = try Self.shapes(config, types: types, parts)
        let parts = parts
        var settings: [LatentAttentionSettings] = []
        var heads: [Int] = []
        for shape in shapes {
            var latent = config.latent
            latent.qLoraRank = shape.qLoraRank
            latent.kvLoraRank = shape.kvLoraRank ?? 0
            latent.qkNopeHeadDim = shape.nope ?? 0
            latent.qkRopeHeadDim = shape.rope ?? 0
            latent.vHeadDim = shape.value ?? 0
            latent.attentionBias = shape.attentionBias ?? false
            settings.append(latent)
            heads.append(shape.heads ?? 0)
        }
        self.settings = settings
        self.heads = heads
        try parts.checks {
            try ConfigRules.positive(config.rmsNormEps, "rms_norm_eps")
            // Dots3NoteTextConfig.validate_architecture, for every config.
            if config.experts.nSharedExperts.map({ $0 < 1 }) ?? true {
                throw InvalidConfigValue(key: "n_shared_experts", problem: "must be at least 1: Dots3NoteTextConfig requires a shared expert")
            }
            guard let groups = config.experts.nGroup, groups >= 1 else {
                throw InvalidConfigValue(key: "n_group", problem: "must be at least 1 (Dots3NoteTextConfig)")
            }
            let routed = config.experts.nRoutedExperts ?? 0
            guard routed % groups == 0, routed / groups >= 2 else {
                throw InvalidConfigValue(
                    key: "n_group", problem: "must divide \(config.experts.nRoutedExpertsKey) \(routed) into groups of at least two experts (Dots3NoteTextConfig)")
            }
            guard let kept = config.experts.topkGroup, (1...groups).contains(kept) else {
                throw InvalidConfigValue(key: "topk_group", problem: "must be between 1 and n_group \(groups) (Dots3NoteTextConfig)")
            }
            if mlpTypes.prefix(layers).contains("sparse") {
                try config.experts.check(hidden: d.hiddenSize)
                try ConfigRules.count(config.sharedExpertsIntermediateSize, "shared_experts_intermediate_size")
                try ConfigRules.product([
                    (config.sharedExpertsIntermediateSize, "shared_experts_intermediate_size"), (config.experts.nSharedExperts ?? 1, "n_shared_experts"),
                    (d.hiddenSize, "hidden_size"), (3, "gate, up and down"),
                ])
            }
            if types.contains("sliding_attention") {
                guard let window = config.slidingWindow else {
                    throw InvalidConfigValue(key: "sliding_window", problem: "is null (and so is sliding_window_size): transformers cannot build the sliding layers' mask")
                }
                try ConfigRules.count(window, "sliding_window")
            }
            if types.contains("indexed_attention") {
                let layer = types.firstIndex(of: "indexed_attention")!
                try Glm4MoeLiteConfiguration.checkIndexer(
                    topK: config.indexTopk, heads: config.indexNHeads, dim: config.indexHeadDim, ropeDim: settings[layer].qkRopeHeadDim,
                    queryRank: settings[layer].qLoraRank ?? 1, types: nil, layerTypes: nil, d)
            }
        }
        try config.experts.confirm(parts, isSparse: isSparse)
        if let layer = (0..<layers).first(where: { isSparse($0) && !parts.configuredDrops.dropsMLP($0) }) {
            try parts.weights.confirmShape(
                "layers.\(layer).mlp.shared_experts.gate_proj.weight",
                [config.sharedExpertsIntermediateSize * (config.experts.nSharedExperts ?? 1), d.hiddenSize],
                keys: "shared_experts_intermediate_size × n_shared_experts, hidden_size", configPath: parts.configPath)
        }
        for type in Set(types) {
            let layer = types.firstIndex(of: type)!
            guard let kept = (0..<layers).first(where: { types[$0] == type && !parts.configuredDrops.dropsAttention($0) }) else { continue }
            try settings[layer].confirmShapes(parts, layer: kept, heads: heads[layer])
        }
        if let layer = types.indices.first(where: { types[$0] == "indexed_attention" }), let rank = settings[layer].qLoraRank {
            try Glm4MoeLiteConfiguration.confirmIndexerShapes(
                parts, sharesIndexer: { types[$0] != "indexed_attention" }, heads: config.indexNHeads, dim: config.indexHeadDim, queryRank: rank)
        }
        (rotary, scales) = try Self.rotaries(config, types: types, shapes: shapes, parts)
    }

    /// Each layer's attention shape, checked as Dots3NoteTextConfig and its
    /// heterogeneous config check them (one shape per layer type, every layer
    /// type named, the indexer's and the sliding layers' widths), and as
    /// droptrace needs them sized.
    static func shapes(_ config: Dots3NoteConfiguration, types: [String], _ parts: DecoderParts) throws -> [Dots3NoteConfiguration.Shape] {
        let d = parts.dimensions, layers = d.numHiddenLayers
        var overrides: [Int: Dots3NoteConfiguration.Shape] = [:]
        var overrideKey = "per_layer_config"
        try parts.checks {
            if let unknown = types.first(where: { !layerTypeNames.contains($0) }) {
                throw InvalidConfigValue(
                    key: "layer_types",
                    problem: "holds \"\(unknown.forErrorMessage)\"; Dots3NoteTextModel builds masks for indexed_attention, full_attention and sliding_attention")
            }
            if types.count != layers {
                throw InvalidConfigValue(key: "layer_types", problem: "lists \(types.count) layers, but num_hidden_layers is \(layers)")
            }
            switch config.perLayer {
            case .none:
                break
            case .absent(let swa):
                overrideKey = "swa_*"
                for (i, type) in types.enumerated() where type == "sliding_attention" { overrides[i] = swa }
            case .given(let entries):
                for (name, entry) in entries {
                    guard let layer = Int(name), layer >= 0, layer < layers else {
                        throw InvalidConfigValue(
                            key: "per_layer_config", problem: "has the entry \"\(name.forErrorMessage)\", which is not a layer index below num_hidden_layers \(layers)")
                    }
                    guard overrides[layer] == nil else {
                        throw InvalidConfigValue(key: "per_layer_config", problem: "has two entries for layer \(layer)")
                    }
                    overrides[layer] = entry.shape
                }
            }
        }
        let global = config.globalShape(d)
        let shapes = (0..<layers).map { overrides[$0]?.over(global) ?? global }
        try parts.checks {
            for type in Set(types).sorted() {
                let layersOfType = types.indices.filter { types[$0] == type }
                let first = layersOfType[0], shape = shapes[first]
                if let other = layersOfType.first(where: { shapes[$0] != shape }) {
                    throw InvalidConfigValue(
                        key: overrideKey, problem: "gives layer \(other) another attention shape than layer \(first), both \(type): transformers needs one per layer type")
                }
                func key(_ name: String) -> String {
                    shape.keys.contains(name) && overrides[first] != nil ? (overrideKey == "swa_*" ? "swa_" + name : "per_layer_config.\(first).\(name)") : name
                }
                guard let rank = shape.qLoraRank else {
                    throw InvalidConfigValue(key: key("q_lora_rank"), problem: "is null: Dots3NoteTextAttention always has the low-rank query path")
                }
                for (value, name) in [(shape.heads, "num_attention_heads"), (shape.kvHeads, "num_key_value_heads"), (shape.kvLoraRank, "kv_lora_rank"),
                                      (shape.rope, "qk_rope_head_dim"), (shape.value, "v_head_dim"), (shape.headDim, "head_dim")] {
                    guard let value else { throw InvalidConfigValue(key: key(name), problem: "is null; transformers sizes the attention by it") }
                    try ConfigRules.count(value, key(name))
                }
                guard let nope = shape.nope else { throw InvalidConfigValue(key: key("qk_nope_head_dim"), problem: "is null; transformers sizes the attention by it") }
                try ConfigRules.nonNegative(nope, key("qk_nope_head_dim"))
                try ConfigRules.count(rank, key("q_lora_rank"))
                if shape.kvHeads != shape.heads {
                    throw InvalidConfigValue(
                        key: key("num_key_value_heads"), problem: "must equal num_attention_heads \(shape.heads!) on the \(type) layers (Dots3NoteTextConfig)")
                }
                let rope = shape.rope!, headDim = shape.headDim!
                if rope % 2 != 0 {
                    throw InvalidConfigValue(key: key("qk_rope_head_dim"), problem: "must be even (rotated in pairs), got \(rope)")
                }
                if type == "indexed_attention", rope > config.indexHeadDim {
                    throw InvalidConfigValue(key: key("qk_rope_head_dim"), problem: "must not exceed index_head_dim \(config.indexHeadDim) (Dots3NoteTextConfig)")
                }
                if type == "sliding_attention", try headDim != ConfigRules.sum([(nope, key("qk_nope_head_dim")), (rope, key("qk_rope_head_dim"))]) {
                    throw InvalidConfigValue(
                        key: key("head_dim"), problem: "must equal qk_nope_head_dim + qk_rope_head_dim on the sliding layers (Dots3NoteTextConfig), got \(headDim)")
                }
                var latent = config.latent
                latent.qLoraRank = rank
                (latent.kvLoraRank, latent.qkNopeHeadDim, latent.qkRopeHeadDim, latent.vHeadDim) = (shape.kvLoraRank!, nope, rope, shape.value!)
                var dims = d
                dims.numAttentionHeads = shape.heads!
                dims.numKeyValueHeads = shape.kvHeads
                do { try latent.check(dims) } catch let invalid as InvalidConfigValue {
                    throw InvalidConfigValue(key: key(invalid.key), problem: invalid.problem)
                }
                try ConfigRules.product([(shape.heads!, key("num_attention_heads")), (d.hiddenSize, "hidden_size")])
            }
        }
        return shapes
    }

    /// One rotary table per layer type, as Dots3NoteTextRotaryEmbedding
    /// builds it from `rope_parameters` (nested by layer type, or one set
    /// every type copies; absent: the default rotation, base `rope_theta`
    /// and, on sliding layers, `swa_rope_theta`): int(head_dim ×
    /// qk_rope_head_dim / head_dim) wide, which must be the rope part; and
    /// each type's softmax scale.
    static func rotaries(
        _ config: Dots3NoteConfiguration, types: [String], shapes: [Dots3NoteConfiguration.Shape], _ parts: DecoderParts
    ) throws -> ([String: RotaryEmbedding], [String: Float]) {
        let section = try parts.checkpoint.configObject(parts.section)
        func present(_ key: String) -> Any? { section[key].flatMap { $0 is NSNull ? nil : $0 } }
        let key = parts.section.qualified("rope_parameters")
        var written = present("rope_parameters")
        if written != nil, present("rope_scaling") != nil {
            throw DroptraceError("\"\(key)\" is given beside rope_scaling; keep one of them", path: parts.configPath)
        }
        if written == nil, let scaling = present("rope_scaling"), !((scaling as? [String: Any])?.isEmpty ?? false) { written = scaling }
        var entries: [String: [String: Any]] = [:], entryKeys: [String: String] = [:]
        for type in Set(types) {
            entryKeys[type] = key
            guard let written else {
                entries[type] = ["rope_type": "default", "rope_theta": type == "sliding_attention" ? config.swaRopeTheta : config.ropeTheta]
                continue
            }
            guard let object = written as? [String: Any] else {
                throw DroptraceError("\"\(key)\" is not an object", path: parts.configPath)
            }
            let nested = object.keys.contains { types.contains($0) }
            guard nested else { entries[type] = object; continue }
            guard let entry = object[type] as? [String: Any] else {
                throw DroptraceError("\"\(key).\(type)\" is missing or not an object: Dots3NoteTextConfig reads the \(type) layers' rotation there", path: parts.configPath)
            }
            entries[type] = entry
            entryKeys[type] = key + "." + type
        }
        var tables: [String: RotaryEmbedding] = [:], scales: [String: Float] = [:]
        for type in Set(types).sorted() {
            let entry = entries[type]!, entryKey = entryKeys[type]!
            let ropeType = (entry["rope_type"] ?? entry["type"] ?? "default")
            guard ropeType as? String == "default" else {
                throw DroptraceError("\"\(entryKey).rope_type\" is \(ropeType): droptrace runs dots3_note's default rotation only", path: parts.configPath)
            }
            let thetaValue = entry["rope_theta"].flatMap { $0 is NSNull ? nil : $0 } ?? (entry["rope_theta"] == nil ? config.ropeTheta as Any : nil)
            guard let theta = (thetaValue as? NSNumber)?.doubleValue, !(thetaValue is Bool), theta.isFinite, theta > 0 else {
                throw DroptraceError("\"\(entryKey).rope_theta\" must be a number above 0: the rotary embedding raises it to powers", path: parts.configPath)
            }
            let shape = shapes[types.firstIndex(of: type)!]
            let rope = shape.rope!, headDim = shape.headDim!
            // Dots3NoteTextConfig's partial_rotary_factor, then the table's width as the rotary embedding truncates it.
            let width = Int(Double(headDim) * (Double(rope) / Double(headDim)))
            guard width + width % 2 == rope else {
                throw DroptraceError(
                    "head_dim \(headDim) with qk_rope_head_dim \(rope) gives the \(type) layers a rotary table int(\(headDim) × \(rope) / \(headDim)) = \(width) wide, which does not rotate the \(rope) rope columns",
                    path: parts.configPath)
            }
            tables[type] = RotaryEmbedding(
                inverseFrequencies: RotaryEmbedding.defaultInverseFrequencies(base: theta, rotaryDim: width), headDim: rope, attentionScaling: 1)
            scales[type] = Float(pow(Double(shape.nope! + rope), -0.5))
        }
        return (tables, scales)
    }

    /// Whether `value` is the text model's type, "dots3_note_text".
    static func isTextType(_ value: JSONValue) -> Bool {
        guard case .string("dots3_note_text") = value else { return false }
        return true
    }

    func isSparse(_ index: Int) -> Bool { index < mlpTypes.count && mlpTypes[index] == "sparse" }

    /// An export writes `layer_types` and `mlp_layer_types` for the kept
    /// layers also where config.json leaves them to the class's rules;
    /// `per_layer_config` is renumbered with them.
    var layerNaming: LayerNaming { parts.naming(spellingOut: layerTypes, mlpTypes: mlpTypes) }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        return try parts.preNormBlock(
            index, drops: drops, eps: config.rmsNormEps, attention: { try attention(layer: index) }, feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s latent attention of its type.
    func attention(layer index: Int) throws -> SelfAttention {
        let type = layerTypes[index], latent = settings[index], heads = self.heads[index]
        let rotary = rotary[type]!
        let d = Double(hiddenSize)
        let rank = latent.qLoraRank!
        var indexer: SparseAttentionIndexer?
        if type == "indexed_attention" {
            indexer = try SparseAttentionIndexer(
                parts.weights, "layers.\(index).self_attn.indexer.", queryRank: rank, hidden: hiddenSize, heads: config.indexNHeads,
                dim: config.indexHeadDim, topK: config.indexTopk, rotary: rotary, interleaved: true)
        }
        return try latent.attention(
            parts, layer: index, rotary: rotary, scale: scales[type]!, indexer: indexer, perHeadGate: "g_proj",
            latentScales: (query: Float((d / Double(rank)).squareRoot()), keyValue: Float((d / Double(latent.kvLoraRank)).squareRoot())),
            heads: heads, latentNormEps: config.rmsNormEps, keyRopeNorm: "k_rope_only_layernorm",
            slidingWindow: type == "sliding_attention" ? config.slidingWindow : nil)
    }

    /// Layer `index`'s MLP: dense, or router, routed experts and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        let activation = try parts.activation(config.hiddenAct)
        let p = "layers.\(index).mlp.", d = hiddenSize
        guard isSparse(index) else {
            return try parts.weights.gatedMLP(p, hidden: d, inner: parts.dimensions.intermediateSize, activation: activation)
        }
        var mixture = config.experts.mixture
        mixture.sharedWidth = config.sharedExpertsIntermediateSize * (config.experts.nSharedExperts ?? 1)
        return try mixture.load(parts.weights, p, hidden: d, activation: activation, sharedBias: false)
    }
}

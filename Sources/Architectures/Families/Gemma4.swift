import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gemma4_text`, or the `text_config` of `gemma4`.
struct Gemma4Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenActivation: String
    var attentionBias: Bool?
    var slidingWindow: Int?
    var layerTypes: [String]?
    var finalLogitSoftcapping: Double?
    var useBidirectionalAttention: String?
    var hiddenSizePerLayerInput: Int?
    var vocabSizePerLayerInput: Int?
    var attentionKEqV: Bool?
    var numKVSharedLayers: Int?
    var enableMoEBlock: Bool?
    var useDoubleWideMLP: Bool?
    var globalHeadDim: Int?
    var numGlobalKeyValueHeads: Int?
    var numExperts: Int?
    var topKExperts: Int?
    var moeIntermediateSize: Int?
    var padTokenID: Int?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenActivation = "hidden_activation"
        case attentionBias = "attention_bias"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case finalLogitSoftcapping = "final_logit_softcapping"
        case useBidirectionalAttention = "use_bidirectional_attention"
        case hiddenSizePerLayerInput = "hidden_size_per_layer_input"
        case vocabSizePerLayerInput = "vocab_size_per_layer_input"
        case attentionKEqV = "attention_k_eq_v"
        case numKVSharedLayers = "num_kv_shared_layers"
        case enableMoEBlock = "enable_moe_block"
        case useDoubleWideMLP = "use_double_wide_mlp"
        case globalHeadDim = "global_head_dim"
        case numGlobalKeyValueHeads = "num_global_key_value_heads"
        case numExperts = "num_experts"
        case topKExperts = "top_k_experts"
        case moeIntermediateSize = "moe_intermediate_size"
        case padTokenID = "pad_token_id"
    }

    /// transformers' `Gemma4TextConfig` defaults, for the keys a config omits
    /// (`global_head_dim`, read by its `__post_init__` only, defaults to 512).
    static let defaults: [String: ConfigDefault] = [
        "vocab_size": 262_144, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 30,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131_072, "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "attention_bias": false,
        "sliding_window": 512, "hidden_size_per_layer_input": 256, "vocab_size_per_layer_input": 262_144, "num_kv_shared_layers": 0, "global_head_dim": 512,
        "attention_k_eq_v": false, "enable_moe_block": false, "use_double_wide_mlp": false, "pad_token_id": 0,
    ]

    /// The keys `Gemma4UnifiedTextConfig` does not have (its layers build
    /// no per-layer inputs and no MoE block, whatever config.json says):
    /// read as null.
    static let absentFromUnified: [String: ConfigDefault] = Dictionary(uniqueKeysWithValues: [
        "hidden_size_per_layer_input", "vocab_size_per_layer_input", "enable_moe_block", "num_experts", "top_k_experts",
        "moe_intermediate_size",
    ].map { ($0, ConfigDefault.null) })

    /// `Gemma4UnifiedTextConfig`'s defaults where they differ from `Gemma4TextConfig`'s.
    static let unifiedDefaults = defaults.merging(["sliding_window": 1024, "max_position_embeddings": 262_144]) { $1 }
}

/// Gemma 4's language model, text only (`gemma4_text`, `Gemma4ForCausalLM`)
/// or inside the multimodal checkpoint (`gemma4`,
/// `Gemma4ForConditionalGeneration`: sizes under `text_config`, weights
/// under `model.language_model.`, the head `lm_head`, tied by the top-level
/// `tie_word_embeddings`, default true; the vision and audio towers ignored,
/// scored on text), as transformers' models/gemma4/modeling_gemma4.py
/// defines it.
///
/// Gemma 4 unified (`gemma4_unified_text`, `gemma4_unified`: the 12B
/// release, models/gemma4_unified/modeling_gemma4_unified.py) is the same
/// language model without per-layer inputs or an MoE block (its config
/// class has neither, `Gemma4Configuration.absentFromUnified`), a
/// 1024-token default window and, in the multimodal checkpoint, an
/// encoder-free vision and audio embedder instead of towers; its vision
/// tokens attend both ways ("vision", the default), text causally.
///
/// Gemma-3's sandwich block (`SandwichBlock`) with plain RMSNorms (weight,
/// not 1 + weight), and an attention whose shape depends on the layer:
/// - sliding-window layers have heads of `head_dim` and
///   `num_key_value_heads`; full-attention layers heads of `global_head_dim`
///   (default 512) and, when `attention_k_eq_v`, `num_global_key_value_heads`
///   key/value heads (transformers 5 saves the same as `per_layer_config`,
///   layer index → `head_dim` / `num_key_value_heads`, which is read instead
///   when given);
/// - queries and keys pass per-head RMSNorms (`q_norm`, `k_norm`) before
///   rotary, values a per-head RMSNorm without weights (`v_norm`); the
///   scores are not scaled (scaling 1);
/// - with `attention_k_eq_v`, full-attention layers have no `v_proj`: the
///   values are `k_proj`'s output (before `k_norm` and rotary);
/// - each layer type rotates by its own `rope_parameters` entry: "default"
///   (base^(−2i/head_dim) for every pair) or "proportional", which rotates
///   the first ⌊partial_rotary_factor · head_dim / 2⌋ pairs (j, j + head_dim/2)
///   at frequencies base^(−2i/head_dim) / factor, exponents over the whole
///   head, and leaves the other pairs at frequency 0 (by default sliding
///   layers "default" at 1e4, full layers "proportional" with 0.25 at 1e6);
/// - the last layer is always full attention (`Gemma4TextConfig` forces it).
///
/// Each decoder layer ends by multiplying the stream by its `layer_scalar`
/// buffer. That belongs to the block, not to a module: droptrace scores the
/// attention as cos(X, H), H = X + attention branch, the MLP as cos(H, H + M)
/// with M the MLP branch (the stream right after the MLP's add, before the
/// layer's scalar), and the block as cos(X, Y) with Y the decoder layer's
/// output, scalar included (`TransformerBlock.outputScale`). Dropping the
/// attention or the MLP keeps the scalar; dropping the block removes it.
/// The logits are soft-capped by `final_logit_softcapping` (both classes).
///
/// With `enable_moe_block` (Gemma 4 26B-A4B) every layer's MLP branch holds
/// the dense MLP and `num_experts` gated experts of width
/// `moe_intermediate_size` side by side (`SandwichBlock`): the router
/// (`router.proj`) reads the stream H entering the branch, RMS-normalised
/// without a weight, times its `scale` and hidden_size^-0.5; the softmax's
/// `top_k_experts` most probable experts, weights renormalised to sum 1,
/// each times the expert's `per_expert_scale`; the experts (fused
/// `experts.gate_up_proj` / `down_proj`) read `pre_feedforward_layernorm_2`
/// of H. Dropping the MLP drops the dense MLP and the experts together.
///
/// The small models (E2B, E4B) add two things:
/// - per-layer inputs (`hidden_size_per_layer_input` P, 256 by default;
///   0 or null: none): each layer adds a third branch after the MLP,
///   before its scalar (`PerLayerInputBranch`: `per_layer_input_gate`, the
///   activation, times the layer's input, `per_layer_projection`,
///   `post_per_layer_input_norm`), its input built from the token and its
///   embedding (`PerLayerEmbedding`: `embed_tokens_per_layer` of
///   `vocab_size_per_layer_input` rows, at least `vocab_size`,
///   `per_layer_model_projection`, `per_layer_projection_norm`). The
///   branch belongs to the block: the block's score includes it, an
///   attention or MLP drop keeps it.
/// - key/value sharing: the last `num_kv_shared_layers` layers project
///   queries only (no `k_proj`, `v_proj`, `k_norm`) and attend to the keys
///   and values of the last earlier layer of their type, as
///   `Gemma4TextConfig.kv_sharing_modes` resolves them; with
///   `use_double_wide_mlp` their MLPs are 2 × `intermediate_size` wide.
///   With blocks dropped, they take them from the last earlier kept layer
///   of their type (`attentionSharing(skipping:)`), where transformers takes
///   them in an export without those blocks; a layer whose attention is
///   dropped still makes them (`AttentionSharing.storeOnly`).
struct Gemma4Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Gemma4Configuration
    let layerTypes: [String]
    /// Each layer's attention heads.
    let layouts: [QKVLayout]
    /// The rotary embedding of each layer type present.
    let rotary: [String: RotaryEmbedding]
    let activation: Activation
    /// A `gemma4` checkpoint: the language model of `Gemma4ForConditionalGeneration`.
    let multimodal: Bool
    let perLayerEmbedding: PerLayerEmbedding?
    /// The first layer that reuses keys and values (num_hidden_layers − `num_kv_shared_layers`).
    let firstSharedLayer: Int
    /// A multimodal checkpoint's image, video and audio placeholder ids
    /// (with their keys), which its model embeds as `text_config.pad_token_id`.
    let placeholders: [(key: String, id: Int)]

    init(_ checkpoint: Checkpoint) throws {
        multimodal = ["gemma4", "gemma4_unified"].contains(checkpoint.modelType)
        // The config class is fixed by the top-level model_type (text_config's is not read).
        let unified = checkpoint.modelType.hasPrefix("gemma4_unified")
        let sectionName = multimodal ? "text_config" : nil
        let section = unified
            ? ConfigSection(sectionName, defaults: Gemma4Configuration.unifiedDefaults, overrides: Gemma4Configuration.absentFromUnified)
            : ConfigSection(sectionName, defaults: Gemma4Configuration.defaults)
        parts = try DecoderParts(
            checkpoint, section: section,
            tiedEmbeddings: multimodal
                ? try checkpoint.decodeConfig(MultimodalWrapperKeys.self).tieWordEmbeddings ?? ConfigValueKinds.tiesByDefault(checkpoint.modelType)
                : nil,
            naming: { Gemma4Model.naming($0) },
            // (No Gemma 4 checkpoint was saved as `language_model.model.`: transformers has no rename of it for these types.)
            prefixes: multimodal ? TextModelPlacement.withLegacyNames(["model.language_model."]) : ["model.", ""])
        let config = try parts.config(Gemma4Configuration.self)
        self.config = config
        let dimensions = parts.dimensions, configPath = parts.configPath
        let key = sectionName.map { $0 + "." } ?? ""
        try ConfigRules.checks(path: configPath) {
            try ConfigRules.positiveIfPresent(config.finalLogitSoftcapping, key + "final_logit_softcapping")
            try ConfigRules.countIfPresent(config.globalHeadDim, key + "global_head_dim")
            try ConfigRules.countIfPresent(config.numGlobalKeyValueHeads, key + "num_global_key_value_heads")
            if let width = config.hiddenSizePerLayerInput {
                try ConfigRules.nonNegative(width, key + "hidden_size_per_layer_input")
            }
            // (A null vocab_size_per_layer_input is refused with the value kinds.)
            if let width = config.hiddenSizePerLayerInput, width > 0, let vocabulary = config.vocabSizePerLayerInput {
                try ConfigRules.count(vocabulary, key + "vocab_size_per_layer_input")
                // Gemma4TextModel looks every token up in both tables.
                if vocabulary < dimensions.vocabSize {
                    throw InvalidConfigValue(
                        key: key + "vocab_size_per_layer_input",
                        problem: "is \(vocabulary), below vocab_size \(dimensions.vocabSize): tokens from \(vocabulary) up would have no per-layer input")
                }
                // The packed table [vocabulary, layers · width] and the projection [layers · width, hidden].
                _ = try ConfigRules.product([
                    (width, key + "hidden_size_per_layer_input"), (dimensions.numHiddenLayers, key + "num_hidden_layers"),
                    (dimensions.hiddenSize, key + "hidden_size"),
                ])
                _ = try ConfigRules.product([
                    (vocabulary, key + "vocab_size_per_layer_input"), (width, key + "hidden_size_per_layer_input"),
                    (dimensions.numHiddenLayers, key + "num_hidden_layers"),
                ])
            }
            // Gemma4TextConfig needs an earlier layer to take them from (null is refused with the value kinds).
            if let shared = config.numKVSharedLayers, shared < 0 || shared >= dimensions.numHiddenLayers {
                throw InvalidConfigValue(
                    key: key + "num_kv_shared_layers",
                    problem: "must be between 0 and num_hidden_layers − 1 (\(dimensions.numHiddenLayers - 1)), got \(shared)")
            }
            if config.enableMoEBlock == true {
                // Gemma4TextConfig leaves them None, which its experts cannot be built with.
                func required(_ value: Int?, _ name: String) throws -> Int {
                    guard let value else {
                        throw InvalidConfigValue(key: key + name, problem: "is not given (null): Gemma 4's mixture-of-experts block needs it")
                    }
                    return try ConfigRules.count(value, key + name)
                }
                let experts = try required(config.numExperts, "num_experts")
                let inner = try required(config.moeIntermediateSize, "moe_intermediate_size")
                _ = try ConfigRules.product([
                    (experts, key + "num_experts"), (inner, key + "moe_intermediate_size"), (2, key + "moe_intermediate_size"),
                    (dimensions.hiddenSize, key + "hidden_size"),
                ])
                try MixtureOfExperts.checkExpertsPerToken(
                    required(config.topKExperts, "top_k_experts"), of: experts, expertsKey: key + "num_experts", key: key + "top_k_experts")
            }
        }
        // "vision": vision tokens attend both ways, text causally.
        switch config.useBidirectionalAttention {
        case nil, "vision"?:
            break
        case "all"?:
            throw DroptraceError(
                "\"\(key)use_bidirectional_attention\" is \"all\": droptrace scores causal language models only", path: configPath)
        case let other?:
            throw DroptraceError(
                "\"\(key)use_bidirectional_attention\" is \"\(other)\": Gemma 4's config class takes \"all\", \"vision\" or null", path: configPath)
        }
        try parts.requireWindow(config.slidingWindow, builtBy: "Gemma4TextModel")
        if multimodal {
            // Gemma4Model puts the pad token in place of every placeholder, on every forward.
            guard config.padTokenID != nil else {
                throw DroptraceError(
                    "\"text_config.pad_token_id\" is null: \(checkpoint.modelType)'s model embeds the image, video and audio placeholders as the pad token on every forward, and fails without one",
                    path: configPath)
            }
            placeholders = try checkpoint.decodeConfig(Gemma4PlaceholderKeys.self).ids
        } else {
            placeholders = []
        }
        // Gemma4TextConfig's rule without layer_types: every sixth layer full;
        // and the last layer is made full whatever the list says.
        var configured = config.layerTypes
            ?? (0..<dimensions.numHiddenLayers).map { ($0 + 1) % 6 == 0 ? AttentionLayerType.full : AttentionLayerType.sliding }
        if !configured.isEmpty { configured[configured.count - 1] = AttentionLayerType.full }
        layerTypes = try parts.layerTypes(configured, slidingWindow: config.slidingWindow, default: { _ in AttentionLayerType.full })
        activation = try parts.activation(config.hiddenActivation, key: "hidden_activation")
        firstSharedLayer = dimensions.numHiddenLayers - (config.numKVSharedLayers ?? 0)
        let sharedTypes = Set(layerTypes[firstSharedLayer...]), storing = Set(layerTypes[..<firstSharedLayer])
        if let missing = sharedTypes.subtracting(storing).sorted().first {
            throw DroptraceError(
                "\"\(key)num_kv_shared_layers\" is \(config.numKVSharedLayers!): the \(missing) layers from \(firstSharedLayer) on would reuse the keys and values of an earlier \(missing) layer, and there is none",
                path: configPath)
        }
        if let width = config.hiddenSizePerLayerInput, width > 0 {
            // Gemma4TextConfig's default is 256: a config of a model without them must say 0.
            guard parts.weights.has("embed_tokens_per_layer.weight") else {
                throw DroptraceError(
                    "\"\(key)hidden_size_per_layer_input\" is \(width)\(try checkpoint.configObject(section)["hidden_size_per_layer_input"] != nil ? "" : " (Gemma4TextConfig's default: the key is absent)"), but the checkpoint has no per-layer embeddings (embed_tokens_per_layer); a Gemma 4 model without them sets it to 0",
                    path: configPath)
            }
            perLayerEmbedding = try PerLayerEmbedding(
                weights: parts.weights, tableName: "embed_tokens_per_layer", vocabulary: config.vocabSizePerLayerInput!,
                layers: dimensions.numHiddenLayers, width: width, hiddenSize: dimensions.hiddenSize, eps: config.rmsNormEps)
        } else {
            perLayerEmbedding = nil
        }

        let layerKeys = try parts.config(Gemma4LayerKeys.self)
        let shapes = try Gemma4LayerShapes(
            keys: layerKeys, config: config, dimensions: dimensions, layerTypes: layerTypes, keyPrefix: key, configPath: configPath)
        layouts = shapes.layouts
        // The heads of the first kept attention of each type, confirmed before any table is sized by them.
        var rotary: [String: RotaryEmbedding] = [:]
        let ropes = try Gemma4Rope.parameters(layerKeys.rope, layerTypes: Set(layerTypes), keyPrefix: key, configPath: configPath)
        let types = layerTypes, drops = parts.configuredDrops
        for layerType in Set(types).sorted() {
            let kept = types.indices.first { types[$0] == layerType && !drops.dropsAttention($0) }
            // With every attention of the type dropped, a layer whose keys and values are reused still rotates its keys.
            let producer = firstSharedLayer < types.count
                ? (0..<firstSharedLayer).first { types[$0] == layerType && !drops.blocks.contains($0) } : nil
            guard let layer = kept ?? producer else { continue }
            let layout = layouts[layer], headKey = shapes.headKeys[layer]
            let (tensor, heads, headsKey) = kept != nil
                ? ("q_proj", layout.numHeads, "num_attention_heads") : ("k_proj", layout.numKVHeads, "num_key_value_heads")
            try parts.weights.confirmShape(
                "layers.\(layer).self_attn.\(tensor).weight", [heads * layout.headDim, dimensions.hiddenSize],
                keys: "\(headsKey) × \(headKey)", configPath: configPath)
            rotary[layerType] = ropes[layerType]!.embedding(headDim: layout.headDim)
        }
        self.rotary = rotary
    }

    /// The layer naming: Gemma-3's, each branch owning its two norms;
    /// `layer_scalar` belongs to the block.
    /// The MoE block's tensors (`router.`, `experts.` and their norms)
    /// belong to the MLP branch; a dense model has none.
    static func naming(_ prefix: String) -> LayerNaming { SandwichBlock.naming(prefix, experts: true) }

    /// The token embeddings; a multimodal checkpoint's placeholder ids
    /// embedded as the pad token, as `Gemma4Model` does before any image,
    /// video or audio replaces them (with per-layer inputs, which it builds
    /// there from the unscaled pad row, they are refused).
    func embed(_ batch: TokenBatch) throws -> Matrix {
        guard let found = placeholders.first(where: { batch.tokenIDs.contains($0.id) }) else {
            return try parts.embed(batch, scaled: true)
        }
        if perLayerEmbedding != nil {
            throw DroptraceError(
                "the calibration holds token id \(found.id), the \(found.key) placeholder, which \(parts.checkpoint.modelType)'s model embeds as the pad token and feeds its per-layer inputs the pad's unscaled row: droptrace does not score placeholders in a model with per-layer inputs; leave them out of the text",
                path: parts.configPath)
        }
        let ids = Set(placeholders.map(\.id)), pad = config.padTokenID!
        return try parts.embed(batch.mappingTokens { ids.contains($0) ? pad : $0 }, scaled: true)
    }

    /// An export without some blocks spells out the remaining layers' types
    /// (in `text_config` for `gemma4`), so renumbering cannot move a window.
    var layerNaming: LayerNaming {
        var naming = parts.naming(spellingOut: layerTypes)
        if firstSharedLayer < layerCount {
            naming.trailingLayerCounts = ["num_kv_shared_layers": layerCount - firstSharedLayer]
            naming.keyValueParts = ["input_layernorm.", "self_attn.k_proj.", "self_attn.v_proj.", "self_attn.k_norm."]
        }
        naming.packedPerLayerTensors = perLayerEmbedding?.packedTensors ?? []
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps),
            logitSoftcap: config.finalLogitSoftcapping.map { Float($0) })
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let eps = config.rmsNormEps
        let p = "layers.\(index)."
        let scalar = weights.has(p + "layer_scalar") ? try weights.floats(p + "layer_scalar", [1])[0] : nil
        let sharing = try attentionSharing(skipping: plan).keysValues
        let mine = sharing.isEmpty ? nil : sharing[index]
        let wide = config.useDoubleWideMLP == true && index >= firstSharedLayer
        let block = try SandwichBlock.block(
            index, parts: parts, drops: drops, eps: eps, activation: activation, plainNorms: true,
            inner: wide ? 2 * parts.dimensions.intermediateSize : nil, outputScale: scalar,
            experts: config.enableMoEBlock == true ? { try experts(index) } : nil
        ) { try attention(index, sharing: mine) }
        let width = perLayerEmbedding?.width
        return TransformerBlock(
            attention: block.attention, mlp: block.mlp, residual: block.residual, outputScale: block.outputScale,
            perLayerInput: try width.map { width in
                PerLayerInputBranch(
                    gate: try weights.linear(p + "per_layer_input_gate", in: hiddenSize, out: width, bias: false),
                    activation: activation,
                    projection: try weights.linear(p + "per_layer_projection", in: width, out: hiddenSize, bias: false),
                    norm: try weights.rmsNorm(p + "post_per_layer_input_norm", size: hiddenSize, eps: eps))
            },
            sharingProducer: mine?.storesOnly == true
                ? AttentionBranch(
                    inputNorm: try weights.rmsNorm(p + "input_layernorm", size: hiddenSize, eps: eps),
                    attention: try attention(index, sharing: mine))
                : nil)
    }

    /// transformers' `kv_sharing_modes` with `plan`'s modules dropped: each
    /// layer from `firstSharedLayer` on reuses the keys and values of the
    /// last earlier kept layer of its type, which stores them — and still
    /// computes them when its attention is dropped (`.storeOnly`), so that
    /// dropping an attention removes its output alone. Empty without sharing.
    func attentionSharing(skipping plan: DropPlan) throws -> LayerSharing {
        try LayerSharing.trailingKeysValues(
            layerTypes: layerTypes, firstShared: firstSharedLayer, drops: plan.union(configuredDrops), configPath: parts.configPath)
    }

    /// Layer `index`'s router and experts (`Gemma4TextRouter`,
    /// `Gemma4TextExperts`; see the type's description).
    private func experts(_ index: Int) throws -> MixtureOfExperts {
        let weights = parts.weights, d = hiddenSize
        let count = config.numExperts!, p = "layers.\(index)."
        return MixtureOfExperts(
            router: try weights.linear(p + "router.proj", in: d, out: count, bias: false),
            experts: try weights.fusedGatedExperts(
                gateUp: p + "experts.gate_up_proj", down: p + "experts.down_proj", count: count, hidden: d,
                inner: config.moeIntermediateSize!, activation: activation),
            expertsPerToken: config.topKExperts!, rule: .softmaxTopK(renormalize: true),
            routerNorm: MixtureOfExperts.RouterNorm(
                eps: Float(config.rmsNormEps), scale: try weights.floats(p + "router.scale", [d]),
                rootScale: Float(pow(Double(d), -0.5))),
            expertScales: try weights.floats(p + "router.per_expert_scale", [count]))
    }

    /// Gemma4TextConfig makes the last layer full attention whatever
    /// `layer_types` says: an export whose last kept layer slides would load
    /// in transformers as another model (other heads, no window). An export
    /// leaving the sharing layers of a type no earlier layer of it would not
    /// load at all (`attentionSharing(skipping:)`).
    func exportProblem(_ plan: DropPlan) -> String? {
        if let problem = planProblem(plan) { return problem }
        guard let last = (0..<layerCount).last(where: { !plan.blocks.contains($0) }),
              layerTypes[last] == AttentionLayerType.sliding else { return nil }
        let trailing = (last + 1..<layerCount).map(String.init)
        return "dropping block\(trailing.count == 1 ? "" : "s") \(trailing.joined(separator: ", ")) leaves the sliding-window layer \(last) last, which Gemma4TextConfig turns into a full-attention layer when transformers loads the export; keep a full-attention layer last"
    }

    /// Layer `index`'s attention (see the type's description); a layer
    /// that reuses keys and values has no key or value weights.
    private func attention(_ index: Int, sharing: AttentionSharing?) throws -> SelfAttention {
        let full = layerTypes[index] == AttentionLayerType.full
        return try Self.attention(
            "layers.\(index).self_attn.", weights: parts.weights, hiddenSize: hiddenSize, layout: layouts[index],
            rotary: rotary[layerTypes[index]], slidingWindow: full ? nil : config.slidingWindow, eps: config.rmsNormEps,
            bias: config.attentionBias == true,
            // attention_k_eq_v: a full layer's values are k_proj's output.
            valueName: config.attentionKEqV == true && full ? "k_proj" : "v_proj", sharing: sharing)
    }

    /// The attention under `p` as Gemma 4's and Gemma 3n's layers build it
    /// (see the type's description): per-head RMSNorms of queries and keys,
    /// a weightless one of values, scores unscaled; a layer that reuses keys
    /// and values has no key or value weights, a store-only one projects
    /// keys and values only.
    static func attention(
        _ p: String, weights: Weights, hiddenSize d: Int, layout: QKVLayout, rotary: RotaryEmbedding?, slidingWindow: Int?,
        eps: Double, bias: Bool, valueName: String = "v_proj", sharing: AttentionSharing?
    ) throws -> SelfAttention {
        let reuses = sharing?.reusedLayer != nil, storesOnly = sharing?.storesOnly == true
        let kv = layout.numKVHeads * layout.headDim
        // A reusing layer projects queries only, a store-only one keys and values only.
        let names = reuses ? [p + "q_proj"] : storesOnly ? [p + "k_proj", p + valueName] : [p + "q_proj", p + "k_proj", p + valueName]
        let outs = reuses ? [layout.queryWidth] : storesOnly ? [kv, kv] : [layout.queryWidth, kv, kv]
        let qkv = try weights.stackedLinear(names, in: d, outs: outs, bias: bias)
        let keyNorm = reuses ? nil : try weights.rmsNorm(p + "k_norm", size: layout.headDim, eps: eps)
        let queryNorm = storesOnly ? keyNorm! : try weights.rmsNorm(p + "q_norm", size: layout.headDim, eps: eps)
        return SelfAttention(
            qkv: qkv, layout: layout, rotary: rotary,
            // A store-only layer attends to nothing: no output projection is applied.
            output: storesOnly
                ? Linear(weight: [], bias: nil, inFeatures: layout.queryWidth, outFeatures: 0)
                : try weights.linear(p + "o_proj", in: layout.queryWidth, out: d, bias: bias),
            scale: 1, slidingWindow: slidingWindow,
            queryKeyNorm: .perHead(query: queryNorm, key: keyNorm ?? queryNorm),
            valueNorm: .weightlessRMS(size: layout.headDim, eps: Float(eps)), keyValueSharing: sharing)
    }
}

/// The top-level keys of `Gemma4Config` (and `Gemma4UnifiedConfig`) naming
/// the image, video and audio placeholder tokens: absent, their class's
/// defaults; null, none.
struct Gemma4PlaceholderKeys: Decodable {
    var ids: [(key: String, id: Int)]

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: ConfigKey.self)
        let defaults = [("image_token_id", 258_880), ("video_token_id", 258_884), ("audio_token_id", 258_881)]
        ids = try defaults.compactMap { key, id in
            let codingKey = ConfigKey(key)
            guard c.contains(codingKey) else { return (key, id) }
            return try c.decodeIfPresent(Int.self, forKey: codingKey).map { (key, $0) }
        }
    }
}

/// The keys of config.json that give per-layer shapes and per-type rotary
/// settings, decoded as transformers reads them.
struct Gemma4LayerKeys: Decodable {
    /// `per_layer_config`: absent (`.absent`), null (no override at all), or
    /// overrides by layer index.
    enum PerLayer {
        case absent, none, given([String: Override])
        var isAbsent: Bool { if case .absent = self { true } else { false } }
    }
    var perLayer: PerLayer
    /// `rope_parameters` by layer type; nil when absent or null (the defaults).
    var rope: [String: RopeEntry?]?

    struct Override: Decodable {
        var headDim: Int?
        var kvHeads: Int?

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: ConfigKey.self)
            if let other = c.allKeys.map(\.stringValue).sorted().first(where: { $0 != "head_dim" && $0 != "num_key_value_heads" }) {
                throw DecodingError.dataCorrupted(DecodingError.Context(
                    codingPath: c.codingPath + [ConfigKey(other)],
                    debugDescription: "droptrace reads per-layer head_dim and num_key_value_heads only"))
            }
            headDim = try c.decodeIfPresent(Int.self, forKey: ConfigKey("head_dim"))
            kvHeads = try c.decodeIfPresent(Int.self, forKey: ConfigKey("num_key_value_heads"))
        }
    }

    struct RopeEntry: Decodable {
        var type: String
        var theta: Double
        /// nil: absent (1); a present null is refused, as transformers cannot multiply by it.
        var partialRotaryFactor: Double?
        var factor: Double?

        init(from decoder: Decoder) throws {
            typealias Key = ConfigKey
            let c = try decoder.container(keyedBy: Key.self)
            type = try c.decode(String.self, forKey: Key("rope_type"))
            theta = try c.decode(Double.self, forKey: Key("rope_theta"))
            // Only "proportional" reads them (`Gemma4Rope`).
            partialRotaryFactor = type == "proportional" && c.contains(Key("partial_rotary_factor"))
                ? try c.decode(Double.self, forKey: Key("partial_rotary_factor")) : nil
            factor = type == "proportional" && c.contains(Key("factor")) ? try c.decode(Double.self, forKey: Key("factor")) : nil
        }
    }

    enum CodingKeys: String, CodingKey {
        case perLayer = "per_layer_config"
        case rope = "rope_parameters"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if !c.contains(.perLayer) {
            perLayer = .absent
        } else if try c.decodeNil(forKey: .perLayer) {
            perLayer = .none
        } else {
            perLayer = .given(try c.decode([String: Override].self, forKey: .perLayer))
        }
        rope = try c.decodeIfPresent([String: RopeEntry?].self, forKey: .rope)
    }
}

/// Each layer's attention heads as `Gemma4TextConfig` resolves them: the
/// global `head_dim` and `num_key_value_heads`, overridden per layer by
/// `per_layer_config` when config.json has it (null: no overrides), else on
/// full-attention layers by `global_head_dim` and (with `attention_k_eq_v`)
/// `num_global_key_value_heads`.
struct Gemma4LayerShapes {
    var layouts: [QKVLayout] = []
    /// The config keys each layer's head width comes from, for errors.
    var headKeys: [String] = []

    init(
        keys: Gemma4LayerKeys, config: Gemma4Configuration, dimensions: DecoderDimensions, layerTypes: [String],
        keyPrefix key: String, configPath: String
    ) throws {
        let heads = dimensions.numAttentionHeads
        var overrides: [Int: (headDim: Int?, kvHeads: Int?)] = [:]
        var overrideKey = key + "global_head_dim"
        switch keys.perLayer {
        case .absent:
            // A null global_head_dim (absent: 512) becomes the full layers' head_dim, which no attention can take.
            guard config.globalHeadDim != nil || !layerTypes.contains(AttentionLayerType.full) else {
                throw DroptraceError("\"\(key)global_head_dim\" is null: transformers' Gemma 4 cannot size its full-attention heads", path: configPath)
            }
            for (layer, type) in layerTypes.enumerated() where type == AttentionLayerType.full {
                overrides[layer] = (config.globalHeadDim ?? 512, config.attentionKEqV == true ? config.numGlobalKeyValueHeads : nil)
            }
        case .none:
            break
        case .given(let perLayer):
            overrideKey = key + "per_layer_config"
            for (name, entry) in perLayer {
                guard let layer = Int(name), layer >= 0, layer < layerTypes.count else {
                    throw DroptraceError(
                        "\"\(key)per_layer_config\" has the entry \"\(name.forErrorMessage)\", which is not a layer index below num_hidden_layers \(layerTypes.count)",
                        path: configPath)
                }
                try ConfigRules.checks(path: configPath) {
                    try ConfigRules.countIfPresent(entry.headDim, "\(overrideKey).\(name).head_dim")
                    try ConfigRules.countIfPresent(entry.kvHeads, "\(overrideKey).\(name).num_key_value_heads")
                }
                overrides[layer] = (entry.headDim, entry.kvHeads)
            }
        }
        for layer in 0..<layerTypes.count {
            let headDim = overrides[layer]?.headDim ?? dimensions.resolvedHeadDim
            let kvHeads = overrides[layer]?.kvHeads ?? dimensions.kvHeads
            let headKey = overrides[layer]?.headDim == nil ? key + "head_dim" : overrideKey
            try ConfigRules.checks(path: configPath) {
                // Rotary pairs dimension j with j + head_dim/2: transformers' tables do not fit an odd head.
                if headDim % 2 != 0 {
                    throw InvalidConfigValue(
                        key: headKey, problem: "gives layer \(layer) heads of odd width \(headDim), which transformers' rotary embedding cannot rotate")
                }
                let kvKey = overrides[layer]?.kvHeads == nil
                    ? key + "num_key_value_heads" : keys.perLayer.isAbsent ? key + "num_global_key_value_heads" : overrideKey
                try ConfigRules.divides(kvHeads, kvKey, heads, key + "num_attention_heads")
                _ = try ConfigRules.product([
                    (headDim, headKey), (heads + 2 * kvHeads, key + "num_attention_heads"), (dimensions.hiddenSize, key + "hidden_size"),
                ])
            }
            layouts.append(QKVLayout(numHeads: heads, numKVHeads: kvHeads, headDim: headDim))
            headKeys.append(headKey)
        }
        // Gemma4TextRotaryEmbedding sizes one table per layer type: transformers
        // refuses a type whose layers differ.
        for type in Set(layerTypes).sorted() {
            let layers = layerTypes.indices.filter { layerTypes[$0] == type }
            let first = layouts[layers[0]]
            if let odd = layers.first(where: { layouts[$0].headDim != first.headDim || layouts[$0].numKVHeads != first.numKVHeads }) {
                throw DroptraceError(
                    "\"\(overrideKey)\" gives layer \(odd) other heads than layer \(layers[0]), both \(type): transformers' Gemma 4 needs one shape per layer type",
                    path: configPath)
            }
        }
    }
}

/// One layer type's rotary settings (`rope_parameters.<layer type>`), as
/// Gemma 4 and LFM3 read them.
struct Gemma4Rope: Equatable {
    var proportional: Bool
    var theta: Double
    /// "proportional" only: the share of the head's pairs that rotate, and the frequencies' divisor.
    var partialRotaryFactor: Double = 1
    var factor: Double = 1

    /// Gemma4TextConfig's defaults when `rope_parameters` is absent or null.
    static let defaults: [String: Gemma4Rope] = [
        AttentionLayerType.sliding: Gemma4Rope(proportional: false, theta: 10_000),
        AttentionLayerType.full: Gemma4Rope(proportional: true, theta: 1_000_000, partialRotaryFactor: 0.25),
    ]

    /// The settings of each of `layerTypes` from config.json's
    /// `rope_parameters`, or the config class's `defaults` without them.
    /// - Throws: `DroptraceError` naming the key for a missing entry, a type
    ///   other than default / proportional, or a value transformers cannot run.
    static func parameters(
        _ given: [String: Gemma4LayerKeys.RopeEntry?]?, layerTypes: Set<String>, keyPrefix: String, configPath: String,
        defaults: [String: Gemma4Rope] = defaults
    ) throws -> [String: Gemma4Rope] {
        guard let given else { return defaults.filter { layerTypes.contains($0.key) } }
        let key = keyPrefix + "rope_parameters"
        var result: [String: Gemma4Rope] = [:]
        for type in layerTypes.sorted() {
            let typeKey = "\(key).\(type)"
            guard let entry = given[type] ?? nil else {
                throw DroptraceError(
                    "\"\(key)\" has no settings for \(type) layers, which transformers' rotary embedding of this family needs (one object per layer type)",
                    path: configPath)
            }
            guard entry.type == "default" || entry.type == "proportional" else {
                throw DroptraceError(
                    "\"\(typeKey).rope_type\" is \"\(entry.type.forErrorMessage)\": droptrace reads this family's \"default\" and \"proportional\" rope types",
                    path: configPath)
            }
            let rope = Gemma4Rope(
                proportional: entry.type == "proportional", theta: entry.theta,
                partialRotaryFactor: entry.partialRotaryFactor ?? 1, factor: entry.factor ?? 1)
            try ConfigRules.checks(path: configPath) {
                _ = try ConfigRules.positive(rope.theta, typeKey + ".rope_theta")
                _ = try ConfigRules.positive(rope.factor, typeKey + ".factor")
                // transformers builds a table wider than the head above 1 (and fails); 0 rotates nothing.
                guard rope.partialRotaryFactor >= 0, rope.partialRotaryFactor <= 1 else {
                    throw InvalidConfigValue(
                        key: typeKey + ".partial_rotary_factor", problem: "must be between 0 and 1, got \(rope.partialRotaryFactor)")
                }
            }
            result[type] = rope
        }
        return result
    }

    /// The rotary embedding for heads of `headDim`, pairs (j, j + headDim/2)
    /// as transformers rotates them. "default": every pair at
    /// base^(−2i/headDim); "proportional": the first
    /// int(partial_rotary_factor · headDim // 2) pairs so, divided by
    /// `factor`, the others at frequency 0 (unrotated). Float32 as torch.
    func embedding(headDim: Int) -> RotaryEmbedding {
        let pairs = headDim / 2
        let rotated = proportional ? min(pairs, Int((partialRotaryFactor * Double(headDim) / 2).rounded(.down))) : pairs
        var frequencies = [Float](repeating: 0, count: pairs)
        for i in 0..<rotated {
            frequencies[i] = 1 / powf(Float(theta), Float(2 * i) / Float(headDim))
            if proportional { frequencies[i] /= Float(factor) }
        }
        return RotaryEmbedding(inverseFrequencies: frequencies, headDim: headDim)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `mistral_large4_text`'s config.json (a `mistral_large4`
/// checkpoint's `text_config`) beside GLM-5's, with
/// MistralLarge4TextConfig's defaults.
struct MistralLarge4Keys: Decodable {
    /// Each layer's flag, 1 (nonzero): rotary, 0: none; nil: from `noRopeLayerInterval`.
    var noRopeLayers: [Int]?
    /// The `no_rope_layer_interval` keyword (default 4): every such layer
    /// has no rotary; nil when written null (refused where read).
    var noRopeLayerInterval: Int?
    /// Each layer's source of its latent keys and values; nil: its own.
    var kvSourceLayers: [Int]?
    var finalLogitSoftcapping: Double

    enum CodingKeys: String, CodingKey {
        case noRopeLayers = "no_rope_layers"
        case noRopeLayerInterval = "no_rope_layer_interval"
        case kvSourceLayers = "kv_source_layers"
        case finalLogitSoftcapping = "final_logit_softcapping"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        noRopeLayers = try c.decodeIfPresent([Int].self, forKey: .noRopeLayers)
        noRopeLayerInterval = c.contains(.noRopeLayerInterval) ? try c.decodeIfPresent(Int.self, forKey: .noRopeLayerInterval) : 4
        kvSourceLayers = try c.decodeIfPresent([Int].self, forKey: .kvSourceLayers)
        finalLogitSoftcapping = try c.decodeIfPresent(Double.self, forKey: .finalLogitSoftcapping) ?? 30
    }

    /// Each of `layers` layers' rotary flag as MistralLarge4TextConfig
    /// resolves it (`no_rope_layers`, else every `no_rope_layer_interval`-th
    /// layer without), refusing what it cannot resolve or its layers index.
    func usesRope(layers: Int) throws -> [Bool] {
        if let noRopeLayers {
            guard noRopeLayers.count >= layers else {
                throw InvalidConfigValue(
                    key: "no_rope_layers", problem: "lists \(noRopeLayers.count) layers, but num_hidden_layers is \(layers) (each layer reads its entry)")
            }
            return noRopeLayers.prefix(layers).map { $0 != 0 }
        }
        guard let interval = noRopeLayerInterval, interval != 0 else {
            throw InvalidConfigValue(
                key: "no_rope_layer_interval",
                problem: "is \(noRopeLayerInterval.map(String.init) ?? "null"): MistralLarge4TextConfig takes each layer's index + 1 modulo it")
        }
        return (0..<layers).map { ($0 + 1) % interval != 0 }
    }

    /// Refuses `kv_source_layers` MistralLarge4TextConfig refuses, and the
    /// latent key/value sharing it describes, which droptrace does not run.
    func checkKeyValueSources(layers: Int) throws {
        guard let sources = kvSourceLayers, sources != Array(0..<layers) else { return }
        guard sources.count == layers else {
            throw InvalidConfigValue(key: "kv_source_layers", problem: "must have one entry per layer (\(layers)), got \(sources.count)")
        }
        for (layer, source) in sources.enumerated() where source > layer || source < -layers || sources[source < 0 ? source + layers : source] != source {
            throw InvalidConfigValue(key: "kv_source_layers", problem: "makes layer \(layer) share with \(source), not an earlier layer that owns its cache")
        }
        throw InvalidConfigValue(
            key: "kv_source_layers", problem: "shares latent keys and values between layers, which droptrace does not run (each layer must list its own index)")
    }

    func check() throws {
        guard finalLogitSoftcapping > 0, finalLogitSoftcapping.isFinite else {
            throw InvalidConfigValue(
                key: "final_logit_softcapping", problem: "must be a positive number (the logits are divided by it), got \(finalLogitSoftcapping)")
        }
    }
}

/// Mistral Large 4 (`mistral_large4`; transformers' `models/mistral_large4/`,
/// MistralLarge4ForConditionalGeneration), read as its language model
/// (`text_config`, `mistral_large4_text`; weights under
/// `model.language_model.`, head `lm_head`; the vision tower is never read).
/// GLM-5's layers (`Glm4MoeLiteModel`, with MistralLarge4TextConfig's
/// defaults: 1 dense layer, `mlp_layer_types`, `indexer_types`) with:
///
/// - latent attention without the low-rank query path (`q_proj`; q_lora_rank
///   is not read), rope pairs interleaved, on layers whose `no_rope_layers`
///   flag is 0 (by default every 4th, `no_rope_layer_interval`) no rotary:
///   those layers' qk_nope part is qk_nope_head_dim + qk_rope_head_dim wide
///   and kv_a_proj_with_mqa gives the latent alone;
/// - the queries multiplied per head h and position p by
///   scale_h · ln(p + 1) + bias_h (`self_attn.softmax_scaling`,
///   `LogPositionQueryScale`);
/// - DeepSeek Sparse Attention's indexer (`SparseAttentionIndexer`) whose
///   queries are wq_b(LayerNorm `q_input_norm`(x)), softmax-scaled as the
///   attention's (`indexer.softmax_scaling`), its interleaved rope skipped on
///   the layers without rotary;
/// - the rotary frequencies (YaRN by default: factor 2048 over 512
///   positions, attention factor 1) times exp(`rotary_emb.alpha`), learned (LeRoPE);
/// - Mistral 4's softmax group-limited router (`mlp.gate`, float32, always
///   renormalised, × routed_scaling_factor) with shared experts;
/// - logits soft-capped: tanh(z / c) · c, c `final_logit_softcapping` (30).
///
/// Latent key/value sharing (`kv_source_layers` naming another layer) is
/// refused. The multi-token-prediction head (`mtp_dspark.*`) is not read.
struct MistralLarge4Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Glm4MoeLiteConfiguration
    let types: [String]
    let usesRope: [Bool]
    let rotary: RotaryEmbedding
    let scale: Float
    let softcap: Float

    /// `MistralLarge4TextConfig.__post_init__`'s rope parameters when config.json has none.
    static let defaultRopeParameters: [String: Any] = [
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 2048.0, "original_max_position_embeddings": 512,
        "beta_fast": 32.0, "beta_slow": 1.0, "attention_factor": 1.0,
    ]

    init(_ checkpoint: Checkpoint) throws {
        let placement = try TextModelPlacement.topLevelOrWrapped(checkpoint)
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(Glm4MoeLiteConfiguration.self, section: placement.section)
        let keys = try checkpoint.decodeConfig(MistralLarge4Keys.self, section: placement.section)
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self, section: placement.section).numHiddenLayers
        let types = config.layerTypes(layers)
        self.config = config
        self.types = types
        let isSparse: @Sendable (Int) -> Bool = { $0 < types.count && types[$0] == "sparse" }
        parts = try DecoderParts(checkpoint, placement: placement, naming: LlamaModel.naming, experts: config.experts.naming(isSparse: isSparse))
        let d = parts.dimensions, configPath = parts.configPath
        let usesRope = try parts.checks { () -> [Bool] in
            try config.check(d)
            try keys.check()
            try keys.checkKeyValueSources(layers: d.numHiddenLayers)
            return try keys.usesRope(layers: d.numHiddenLayers)
        }
        self.usesRope = usesRope
        softcap = Float(keys.finalLogitSoftcapping)
        if let first = parts.firstKeptAttention {
            try Self.latent(config.latent, rotates: usesRope[first]).confirmShapes(parts, layer: first)
        }
        // Each kept layer's latent has a rope part or none as its no_rope_layers entry says.
        for layer in 0..<d.numHiddenLayers where !parts.configuredDrops.dropsAttention(layer) {
            try parts.weights.confirmShape(
                "layers.\(layer).self_attn.kv_a_proj_with_mqa.weight", [config.latent.kvLoraRank + (usesRope[layer] ? config.latent.qkRopeHeadDim : 0), d.hiddenSize],
                keys: "kv_lora_rank\(usesRope[layer] ? " + qk_rope_head_dim" : "") (\(parts.section.qualified("no_rope_layers")) gives layer \(layer) \(usesRope[layer] ? "rotary" : "no rotary")), hidden_size",
                configPath: configPath)
        }
        try config.experts.confirm(parts, isSparse: isSparse)
        try config.confirmIndexerShapes(parts)
        let latent = config.latent
        let rope = try parts.ropeSettings(defaults: Self.defaultRopeParameters).settings
        let kept = parts.firstKeptAttention != nil
        let factor = rope.partialRotaryFactor ?? 1, width = RopeSettings.truncatedWidth(latent.qkRopeHeadDim, factor)
        if !rope.partialRotaryFactorIsNull, width + width % 2 != latent.qkRopeHeadDim {
            throw InvalidConfigValue(
                key: parts.section.qualified(rope.partialRotaryKey),
                problem: "is \(factor): a rotary table int(qk_rope_head_dim \(latent.qkRopeHeadDim) × \(factor)) = \(width) wide, but MistralLarge4TextAttention rotates all \(latent.qkRopeHeadDim) rope columns"
            ).error(path: configPath)
        }
        // No table when the config drops every attention layer: no tensor confirmed its width.
        let table = try rope.embedding(headDim: kept ? latent.qkRopeHeadDim : 0, partialRotary: .honoured(default: 1), configPath: configPath)
        rotary = try kept ? Self.learnedRope(table, parts.weights) : table
        scale = try latent.scale(rope, configPath: configPath)
    }

    /// `table`'s inverse frequencies times exp(`rotary_emb.alpha`) in float32
    /// (MistralLarge4TextRotaryEmbedding's LeRoPE).
    static func learnedRope(_ table: RotaryEmbedding, _ weights: Weights) throws -> RotaryEmbedding {
        let alpha = try weights.floats("rotary_emb.alpha", [table.inverseFrequencies.count])
        var learned = RotaryEmbedding(
            inverseFrequencies: zip(table.inverseFrequencies, alpha).map { $0 * expf($1) }, headDim: table.headDim,
            attentionScaling: table.attentionScaling, longContext: table.longContext)
        learned.anglesInDouble = table.anglesInDouble
        return learned
    }

    /// The latent attention of a layer with rotary (`rotates`) or without,
    /// whose qk_nope part then takes the rope part's columns too.
    static func latent(_ settings: LatentAttentionSettings, rotates: Bool) -> LatentAttentionSettings {
        guard !rotates else { return settings }
        var settings = settings
        (settings.qkNopeHeadDim, settings.qkRopeHeadDim) = (settings.qkNopeHeadDim + settings.qkRopeHeadDim, 0)
        return settings
    }

    func isSparse(_ index: Int) -> Bool { index < types.count && types[index] == "sparse" }

    /// An export without some blocks writes `mlp_layer_types`,
    /// `indexer_types`, `no_rope_layers` and `kv_source_layers` for the kept
    /// layers also where config.json leaves them to the class's rules.
    var layerNaming: LayerNaming {
        var naming = parts.naming(spellingOut: nil, mlpTypes: types)
        if let indexerTypes = config.indexerTypes {
            naming.perLayerLists["indexer_types"] = (0..<layerCount).map { indexerTypes.type($0) ?? "full" }
        }
        naming.noRopeLayers = usesRope.map { $0 ? 1 : 0 }
        naming.layerSourceLists["kv_source_layers"] = Array(0..<layerCount)
        return naming
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps), logitSoftcap: softcap)
    }

    /// `softmax_scaling` under `prefix`: scale and bias, one per head.
    func softmaxScaling(_ prefix: String, heads: Int) throws -> LogPositionQueryScale {
        LogPositionQueryScale(
            scale: try parts.weights.floats(prefix + "softmax_scaling.scale", [heads]),
            bias: try parts.weights.floats(prefix + "softmax_scaling.bias", [heads]))
    }

    func attention(_ index: Int, selection: AttentionSharing?) throws -> SelfAttention {
        let p = "layers.\(index).self_attn.", rotates = usesRope[index]
        var attention = try Self.latent(config.latent, rotates: rotates).attention(
            parts, layer: index, rotary: rotates ? rotary : nil, scale: scale, indexer: try indexer(layer: index))
        attention.headQueryScales = try softmaxScaling(p, heads: parts.dimensions.numAttentionHeads)
        return attention.sharingKeySelection(selection)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), sharing = try attentionSharing(skipping: plan).keySelections
        let mine = sharing.isEmpty ? nil : sharing[index]
        let block = try parts.preNormBlock(
            index, drops: drops, eps: config.rmsNormEps, attention: { try attention(index, selection: mine) },
            feedForward: { try config.experts.feedForward(parts, layer: index, sparse: isSparse(index), activation: try parts.activation(config.hiddenAct)) })
        guard drops.dropsAttention(index), mine?.storesOnly == true else { return block }
        // A dropped full layer still chooses the keys later shared layers attend to.
        return TransformerBlock(
            attention: nil, mlp: block.mlp, residual: block.residual,
            sharingProducer: AttentionBranch(
                inputNorm: try parts.weights.rmsNorm("layers.\(index).input_layernorm", size: hiddenSize, eps: config.rmsNormEps),
                attention: try attention(index, selection: mine)))
    }

    /// The shared indexer layers with `plan`'s modules dropped (`LayerSharing.sharedIndexers`).
    func attentionSharing(skipping plan: DropPlan) throws -> LayerSharing {
        try LayerSharing.sharedIndexers(
            layers: layerCount, isShared: config.sharesIndexer, drops: plan.union(configuredDrops), key: config.indexerTypes?.key ?? "",
            configPath: parts.configPath)
    }

    func exportProblem(_ plan: DropPlan) -> String? {
        (try? attentionSharing(skipping: plan))?.sharedIndexerExportProblem(key: config.indexerTypes?.key ?? "")
    }

    /// Layer `index`'s indexer (nil on "shared" layers): queries from
    /// `q_input_norm` of the layer input, softmax-scaled, rotated
    /// (interleaved) on layers with rotary.
    func indexer(layer index: Int) throws -> SparseAttentionIndexer? {
        guard let topK = config.indexTopk, !config.sharesIndexer(index) else { return nil }
        let p = "layers.\(index).self_attn.indexer.", rotates = usesRope[index]
        var indexer = try SparseAttentionIndexer(
            parts.weights, p, queryRank: hiddenSize, hidden: hiddenSize, heads: config.indexNHeads, dim: config.indexHeadDim, topK: topK,
            rotary: rotates ? rotary : RotaryEmbedding(inverseFrequencies: [], headDim: 0), interleaved: rotates)
        indexer.queryInputNorm = try parts.weights.layerNorm(p + "q_input_norm", size: hiddenSize, eps: 1e-6)
        indexer.queryScale = try softmaxScaling(p, heads: config.indexNHeads)
        return indexer
    }
}

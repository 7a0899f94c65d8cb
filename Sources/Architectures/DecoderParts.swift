import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// What every decoder family built on `DecoderDimensions` reads the same
/// way, written once: the config's sizes, the weights' name prefix, the
/// drops the config itself declares, the layer naming, the size checks
/// against the tensors, the token embedding and the tied-head rule.
///
/// A family file adds only its own config keys and its block.
struct DecoderParts: Sendable {
    let checkpoint: Checkpoint
    let dimensions: DecoderDimensions
    let weights: Weights
    /// LLM-Drop's `drop_attn_list` / `drop_mlp_list` of the checkpoint.
    let configuredDrops: DropPlan
    let naming: LayerNaming
    /// Where config.json holds the sizes, the rope settings and the family's
    /// keys (LLM-Drop's drop lists stay at the top level, where droptrace writes them).
    let section: ConfigSection
    /// Whether the LM head is the embedding (`tie_word_embeddings`, or the
    /// family's transformers default when config.json is silent).
    let tiedEmbeddings: Bool
    /// Token ids embedded as token 0 (`TextModelPlacement.tokensEmbeddedAsRowZero`).
    var tokensEmbeddedAsRowZero: Set<Int> = []
    /// The names transformers reads as the head when stored (without
    /// `.weight`; `Weights.head`'s `names`).
    let headNames: [String]
    /// The token embedding's name under the prefix (without `.weight`):
    /// `embed_tokens`, Nemotron-H's `embeddings`.
    let embeddingName: String
    /// The tensors (full names under the prefix) the embedding is stored as
    /// when it is not stored whole, joined along their rows in order as
    /// transformers' `Concatenate` converter joins them on load (Molmo2's
    /// `wte.embedding`, `wte.new_embedding`); empty when stored whole.
    let embeddingPieces: [String]
    /// The rows of a stored head where the config class sizes `lm_head`
    /// apart from the embedding (Apertus 1.5's `output_vocab_size`); nil: vocab_size.
    let headRows: Int?
    /// The logits the head gives per position: a stored (or missing untied)
    /// head's `headRows`, else the tied embedding's vocab_size rows.
    let outputVocabularySize: Int

    /// Decodes the sizes, finds the prefix under which the embedding
    /// (`embed_tokens.weight`) lives ("model." or none), and confirms the layer count and the
    /// embedding [vocab_size, hidden_size] against the tensors.
    ///
    /// - Parameters:
    ///   - section: where config.json holds the family's configuration: the
    ///     top level, or a multimodal checkpoint's `text_config` with the
    ///     defaults of the family's config class. The layer naming's
    ///     `configSection` is set to its name, so exports edit that section.
    ///   - naming: the family's layer naming for a weights prefix.
    ///   - prefixes: candidate prefixes of the decoder's weights, first match wins.
    ///   - extraLayers: layers stored after the decoder's that the model does
    ///     not run (DeepSeek-V3's multi-token-prediction layers), ignored.
    ///   - experts: where a mixture-of-experts family's sparse layers store
    ///     their experts, checked with the layers (`Weights.confirmLayers`).
    ///   - tiedEmbeddings: the head's tying when config.json's top level
    ///     decides it over the section (`mistral3`); nil: the section's
    ///     `tie_word_embeddings`, else the default of the checkpoint's config
    ///     class (`ConfigValueKinds.tiesByDefault`, generated from transformers).
    ///   - headNames: the names transformers reads as the head (`lm_head`;
    ///     also a multimodal checkpoint's 4.x `language_model.lm_head`, which it
    ///     renames onto it; ModernBERT decoder's `decoder`), one at most stored.
    ///   - finalNorm: the final norm's name (Phi's `final_layernorm`).
    ///   - embedding: the token embedding's name (Nemotron-H's `embeddings`).
    ///   - headRows: the rows of a stored head where they are not vocab_size
    ///     (Apertus 1.5's pruned head: `output_vocab_size`).
    ///   - extraEmbeddingRows: rows the embedding has past vocab_size
    ///     (MllamaTextModel's vocab_size + 8): token ids below the sum embed,
    ///     the head keeps vocab_size rows. `dimensions.vocabSize` is the sum.
    ///     `extraEmbeddingRowsKey` names the key that sets them, if any.
    ///   - joinedEmbedding: the tensors (full names) transformers joins into
    ///     the embedding on load where `<embedding>.weight` is not stored
    ///     (`embeddingPieces`); the first is then the probe for the prefix.
    /// - Throws: `DroptraceError` naming config.json for sizes that cannot
    ///   describe a model or that the tensors contradict.
    init(
        _ checkpoint: Checkpoint, section: ConfigSection = .topLevel, tiedEmbeddings: Bool? = nil,
        headNames: [String] = ["lm_head"],
        naming: (String) -> LayerNaming, prefixes: [String] = ["model.", ""], extraLayers: Int = 0, experts: ExpertNaming? = nil,
        finalNorm: String = "norm", embedding: String = "embed_tokens", headRows: Int? = nil, extraEmbeddingRows: Int = 0,
        extraEmbeddingRowsKey: String? = nil, joinedEmbedding: [String] = []
    ) throws {
        self.checkpoint = checkpoint
        self.section = section
        self.headNames = headNames
        embeddingName = embedding
        var dimensions = try checkpoint.decodeConfig(DecoderDimensions.self, section: section)
        let extraRowsText = extraEmbeddingRowsKey.map(section.qualified) ?? "\(extraEmbeddingRows)"
        if extraEmbeddingRows > 0 {
            let vocabulary = dimensions.vocabSize, key = section.qualified("vocab_size")
            let rows = try ConfigRules.checks(path: checkpoint.configURL.path) { () throws -> Int in
                let rows = try ConfigRules.sum([
                    (vocabulary, key), (extraEmbeddingRows, extraEmbeddingRowsKey.map(section.qualified) ?? "the embedding's rows past it"),
                ])
                _ = try ConfigRules.product([(rows, key + " + \(extraRowsText)"), (dimensions.hiddenSize, section.qualified("hidden_size"))])
                return rows
            }
            dimensions.vocabSize = rows
            self.headRows = headRows ?? vocabulary
        } else {
            self.headRows = headRows
        }
        self.dimensions = dimensions
        self.tiedEmbeddings = tiedEmbeddings ?? dimensions.tiedEmbeddings(default: ConfigValueKinds.tiesByDefault(checkpoint.modelType))
        configuredDrops = try DropPlan(config: checkpoint, layerCount: dimensions.numHiddenLayers)
        let storedWhole = prefixes.contains { checkpoint.hasTensor($0 + embedding + ".weight") }
        let joined = !joinedEmbedding.isEmpty && !storedWhole && prefixes.contains { checkpoint.hasTensor($0 + joinedEmbedding[0]) }
        let weights = try Weights(
            checkpoint, probe: joined ? joinedEmbedding[0] : embedding + ".weight", candidates: prefixes,
            tiedHead: self.tiedEmbeddings ? headNames.map { $0 + ".weight" } : [])
        self.weights = weights
        if let piece = joinedEmbedding.first(where: { weights.has($0) }), weights.has(embedding + ".weight") {
            throw DroptraceError(
                "tensors '\(weights.prefix)\(embedding).weight' and '\(weights.prefix)\(piece)' are both stored, which transformers "
                    + "reads as one parameter (it joins \(joinedEmbedding.map { "'\($0)'" }.joined(separator: " and ")) into the "
                    + "embedding on load); keep one form",
                path: checkpoint.weightsPath)
        }
        embeddingPieces = joined ? joinedEmbedding : []
        var layerNaming = naming(weights.prefix)
        layerNaming.configSection = section.name
        self.naming = layerNaming
        let storesHead = try weights.storedHead(headNames) != nil
        outputVocabularySize = storesHead || !self.tiedEmbeddings ? self.headRows ?? dimensions.vocabSize : dimensions.vocabSize
        try weights.confirmLayers(
            self.naming, count: dimensions.numHiddenLayers, drops: configuredDrops, configPath: configPath, extraLayers: extraLayers,
            experts: experts.map { StoredExperts($0, conversionModelTypes: WeightConversions.modelTypes(checkpoint, section: section)) })
        if joined {
            let rows = extraEmbeddingRows > 0 ? "\(section.qualified("vocab_size")) + \(extraRowsText)" : section.qualified("vocab_size")
            _ = try weights.joinedRows(
                joinedEmbedding, rows: dimensions.vocabSize, trailing: [dimensions.hiddenSize], keys: "\(rows), \(section.qualified("hidden_size"))",
                configPath: configPath)
        } else {
            try weights.confirmShape(
                embedding + ".weight", [dimensions.vocabSize, dimensions.hiddenSize],
                keys: extraEmbeddingRows > 0
                    ? "\(section.qualified("vocab_size")) + \(extraRowsText), \(section.qualified("hidden_size"))" : "vocab_size, hidden_size",
                configPath: configPath)
        }
        try weights.confirmStoredOutputShapes(
            hidden: dimensions.hiddenSize, vocabulary: dimensions.vocabSize, storedRows: self.headRows, names: headNames,
            finalNorm: finalNorm)
    }

    var configPath: String { checkpoint.configURL.path }

    /// The family's section of config.json as written (nil: a `text_config` that is absent or not an object).
    var sectionDocument: JSONValue? { checkpoint.document(of: section) }

    /// Runs `checks` (returning what it returns), a refused value named by its key as config.json
    /// writes it: under the section the language model's keys are in
    /// (`text_config.hidden_size` in a multimodal checkpoint).
    /// - Throws: `DroptraceError` naming config.json and the key.
    @discardableResult
    func checks<Result>(_ checks: () throws -> Result) throws -> Result {
        try ConfigRules.checks(path: configPath, section: section, checks)
    }

    /// Refuses `use_bidirectional_attention: true` (Gemma's and Gemma 3's
    /// embedding variants attend both ways in transformers).
    func requireCausal(_ bidirectional: Bool?, keyPrefix: String = "") throws {
        if bidirectional == true {
            throw DroptraceError(
                "\"\(keyPrefix)use_bidirectional_attention\" is true: droptrace scores causal language models only", path: configPath)
        }
    }

    /// Decodes the family's own keys of config.json (from its section).
    func config<Config: Decodable>(_ type: Config.Type) throws -> Config { try checkpoint.decodeConfig(type, section: section) }

    /// The attention heads as configured, grouped q | k | v.
    var attentionLayout: QKVLayout {
        QKVLayout(numHeads: dimensions.numAttentionHeads, numKVHeads: dimensions.kvHeads, headDim: dimensions.resolvedHeadDim)
    }

    /// The first layer whose attention the config keeps, if any.
    var firstKeptAttention: Int? { (0..<dimensions.numHiddenLayers).first { !configuredDrops.dropsAttention($0) } }

    /// The rotary embedding of config.json's rope settings, for heads whose
    /// width q_proj and k_proj of the first kept attention confirm
    /// (`confirmAttentionProjections`); no table when the config drops every
    /// attention layer.
    ///
    /// `settings` replaces the config's rope settings where a family reads
    /// them its own way (from `ropeSettings()`, adjusted).
    func rotary(
        defaultTheta: Double = 10_000, partialRotary: RopeSettings.PartialRotary = .ignored, confirmProjections: Bool = true,
        settings: RopeSettings? = nil
    ) throws -> RotaryEmbedding {
        if confirmProjections { try confirmAttentionProjections() }
        let headDim = firstKeptAttention == nil ? 0 : dimensions.resolvedHeadDim
        return try (settings ?? ropeSettings()).embedding(
            headDim: headDim, partialRotary: partialRotary, defaultTheta: defaultTheta,
            maxPositions: dimensions.maxPositionEmbeddings, configPath: configPath)
    }

    /// Refuses a per-layer type list (`key`) that contradicts the weights:
    /// a kept layer whose mixer lacks the tensor its type needs
    /// (`tensors(type).expected`, a name under `layers.<i>.` without
    /// `.weight`) while it holds another type's (`tensors(type).other`).
    /// - Throws: `DroptraceError` naming config.json and `key`.
    func confirmMixerTypes(_ types: [String], key: String, tensors: (String) -> (expected: String, other: String)) throws {
        try checks {
            for index in types.indices where !configuredDrops.dropsAttention(index) {
                let (expected, other) = tensors(types[index])
                if !weights.has("layers.\(index).\(expected).weight"), weights.has("layers.\(index).\(other).weight") {
                    throw InvalidConfigValue(
                        key: key, problem: "makes layer \(index) \(types[index]), but the weights hold its \(other) and no \(expected)")
                }
            }
        }
    }

    /// Refuses a config.json `head_dim` other than hidden_size / num_attention_heads, the width
    /// the family's transformers model gives what `sized` names (Phi's q/k norms, StableLM's heads).
    func confirmHeadDimIsHiddenOverHeads(_ sized: String) throws {
        let width = dimensions.hiddenSize / dimensions.numAttentionHeads
        if let headDim = dimensions.headDim, headDim != width {
            throw DroptraceError("head_dim \(headDim)\(sized) hidden_size / num_attention_heads = \(width) wide", path: configPath)
        }
    }

    /// The layer naming with each layer's attention type spelled out, as a
    /// block-drop export writes them where config.json leaves them to a
    /// rule, so renumbering cannot move a window or a kind of layer (nil:
    /// the family leaves them as written).
    func naming(spellingOut layerTypes: [String]?) -> LayerNaming {
        var naming = naming
        naming.layerTypes = layerTypes
        return naming
    }

    /// `naming(spellingOut:)` with each layer's MLP type (`mlp_layer_types`,
    /// "dense" or "sparse") spelled out too, where config.json leaves them to
    /// the class's rule.
    func naming(spellingOut layerTypes: [String]?, mlpTypes: [String]) -> LayerNaming {
        var naming = naming(spellingOut: layerTypes)
        naming.perLayerLists[MLPLayerTypes.key] = Array(mlpTypes.prefix(dimensions.numHiddenLayers))
        return naming
    }

    /// The rope settings of the family's config section.
    func ropeSettings() throws -> RopeSettings { try config(RopeSettings.self) }

    /// The rope settings of the family's config section for config classes
    /// that fill absent rope parameters with `defaults` in `__post_init__`
    /// (Ministral 3, CWM), as `convert_rope_params_to_dict` then resolves
    /// them: a `rope_scaling` that is truthy in Python's sense replaces them
    /// (a falsy one — null, {}, [], 0 — is not read), else `rope_parameters`
    /// as written (`{}` too), else `defaults`. Also the key the parameters
    /// are under and the section's JSON object with them in.
    /// - Throws: `DroptraceError` naming config.json for a truthy
    ///   `rope_scaling` that is not an object, or one beside `rope_parameters`.
    func ropeSettings(defaults: [String: Any]) throws -> (settings: RopeSettings, key: String, object: [String: Any]) {
        var object = try checkpoint.configObject(section)
        let key: String
        if let scaling = object["rope_scaling"], Self.isTruthy(scaling) {
            key = "rope_scaling"
        } else {
            key = "rope_parameters"
            object["rope_scaling"] = nil
            if !(object[key] is [String: Any]) { object[key] = defaults }
        }
        let settings = try checkpoint.decodeConfig(RopeSettings.self, object: object, under: section.name)
        return (settings, key, object)
    }

    /// The rope parameters of config.json's `object` as transformers'
    /// `convert_rope_params_to_dict` takes them: `rope_scaling` when truthy
    /// (`isTruthy`), else `rope_parameters`, else {}; and the key they are under.
    /// - Throws: `DroptraceError` naming `path` when they are not an object.
    static func writtenRopeParameters(_ object: [String: Any], path: String) throws -> (parameters: [String: Any], key: String) {
        var (written, key): (Any, String) = ([String: Any](), "rope_parameters")
        if let scaling = object["rope_scaling"], isTruthy(scaling) {
            (written, key) = (scaling, "rope_scaling")
        } else if let parameters = object["rope_parameters"], !(parameters is NSNull) {
            written = parameters
        }
        guard let parameters = written as? [String: Any] else {
            throw DroptraceError("key \"\(key)\" has the wrong type (expected an object)", path: path)
        }
        return (parameters, key)
    }

    /// Python's truth value of a JSON value: null, false, 0, "", [] and {} are false.
    static func isTruthy(_ value: Any) -> Bool {
        switch value {
        case is NSNull: false
        case let number as NSNumber: number.doubleValue != 0
        case let text as String: !text.isEmpty
        case let list as [Any]: !list.isEmpty
        case let members as [String: Any]: !members.isEmpty
        default: true
        }
    }

    /// Checks q_proj [heads · head_dim, hidden] and k_proj
    /// [kv_heads · head_dim, hidden] of the first kept attention (of
    /// `layers`, where only those have softmax attention), or the `fused`
    /// q | k | v projection where the layer stores one, before any table is
    /// sized from head_dim.
    func confirmAttentionProjections(attention: String = "self_attn.", layers: [Int]? = nil, fused: String? = nil) throws {
        guard let layer = layers.map({ $0.first { !configuredDrops.dropsAttention($0) } }) ?? firstKeptAttention else { return }
        let d = dimensions
        // Without head_dim, a head is hidden_size / num_attention_heads wide.
        let key = section.qualified
        let headKey = d.headDim == nil ? "(\(key("hidden_size")) / \(key("num_attention_heads")))" : key("head_dim")
        if let fused, weights.has("layers.\(layer).\(attention)\(fused).weight") {
            return try confirmProjections(layer: layer, attention: attention, [(
                fused, (d.numAttentionHeads + 2 * d.kvHeads) * d.resolvedHeadDim,
                "(\(key("num_attention_heads")) + 2 × \(key("num_key_value_heads"))) × \(headKey)")])
        }
        try confirmProjections(layer: layer, attention: attention, [
            ("q_proj", d.numAttentionHeads * d.resolvedHeadDim, "\(key("num_attention_heads")) × \(headKey)"),
            ("k_proj", d.kvHeads * d.resolvedHeadDim, "\(key("num_key_value_heads")) × \(headKey)"),
        ])
    }

    /// Checks each projection `name` [rows, hidden_size] under layer
    /// `layer`'s `attention`, its rows given by the config keys `keys`.
    /// - Throws: `DroptraceError` naming the tensor, the keys and config.json.
    func confirmProjections(layer: Int, attention: String = "self_attn.", _ shapes: [(name: String, rows: Int, keys: String)]) throws {
        for (name, rows, keys) in shapes {
            try weights.confirmShape(
                "layers.\(layer).\(attention)\(name).weight", [rows, dimensions.hiddenSize], keys: keys, configPath: configPath)
        }
    }

    /// The residual stream entering block 0: the batch's rows of
    /// `embed_tokens` [vocab, hidden], times √hidden when `scaled` (Gemma's
    /// families; transformers casts the factor to the weights' dtype, here it
    /// is the Float32 value), or times `multiplier` (Granite's
    /// `embedding_multiplier`, a Python float times a float32 tensor).
    func embed(_ batch: TokenBatch, scaled: Bool = false, multiplier: Float? = nil) throws -> Matrix {
        let width = dimensions.hiddenSize
        let ids = tokensEmbeddedAsRowZero.isEmpty ? batch.tokenIDs : batch.tokenIDs.map { tokensEmbeddedAsRowZero.contains($0) ? 0 : $0 }
        let rows: Matrix
        if embeddingPieces.isEmpty {
            rows = try gatherRows(weights.tensor(embeddingName + ".weight", [dimensions.vocabSize, width]), ids: ids, width: width)
        } else {
            let pieces = try weights.joinedRows(embeddingPieces, rows: dimensions.vocabSize, trailing: [width])
            rows = try gatherRows(pieces.map { try weights.tensor($0.name, [$0.rows, width]) }, ids: ids, width: width)
        }
        return rows.scaled(by: scaled ? Float(Double(width).squareRoot()) : multiplier)
    }

    /// The final norm and the LM head: the stored one of `headNames`,
    /// else the embedding when the config ties them (`tiedEmbeddings`).
    /// `bias`: the head has a bias (Phi); `logitScale` multiplies the logits (Cohere's `logit_scale`).
    func head(
        norm: Normalization, bias: Bool = false, logitSoftcap: Float? = nil, logitDivisor: Float? = nil, logitScale: Float? = nil
    ) throws -> OutputHead {
        OutputHead(
            norm: norm,
            projection: try weights.head(
                tiedTo: embeddingName, tied: tiedEmbeddings, hidden: dimensions.hiddenSize, vocabulary: dimensions.vocabSize,
                storedRows: headRows, names: headNames, bias: bias),
            logitSoftcap: logitSoftcap, logitDivisor: logitDivisor, logitScale: logitScale)
    }

    /// Each layer's attention window from its `layer_types` entry:
    /// `sliding_attention` → `window`, `full_attention` → nil.
    /// - Throws: `DroptraceError` naming config.json for another type, or
    ///   for sliding layers without a window (transformers cannot build
    ///   their mask either); `windowKeys` names the keys that set it.
    func slidingWindows(layerTypes: [String], window: Int?, windowKeys: String = "sliding_window") throws -> [Int?] {
        try AttentionLayerType.check(
            layerTypes, hasWindow: window != nil, windowKeys: windowKeys, listKey: section.qualified("layer_types"), path: configPath)
        return layerTypes.map { $0 == AttentionLayerType.sliding ? window : nil }
    }

    /// Checks the router `layers.<l>.<router>.weight` [experts, hidden] of
    /// the first of `layers` whose MLP the config keeps, before expert lists
    /// are sized from `experts` (named by `expertsKey`).
    func confirmRouter(_ router: String, experts: Int, expertsKey: String, layers: [Int]) throws {
        guard let layer = layers.first(where: { !configuredDrops.dropsMLP($0) }) else { return }
        try weights.confirmShape(
            "layers.\(layer).\(router).weight", [experts, dimensions.hiddenSize], keys: "\(expertsKey), hidden_size",
            configPath: configPath)
    }

    /// The activation config.json names (`hidden_act` or the family's key).
    func activation(_ name: String, key: String = "hidden_act") throws -> Activation {
        try Activation(huggingFaceName: name, key: key, configPath: configPath)
    }
}

/// A family built on `DecoderParts`: the sizes, the embedding and the
/// config's drops come from the parts, so its file holds only its config
/// keys, its block and its head.
protocol DecoderFamily: RegisteredModel {
    var parts: DecoderParts { get }
}

extension DecoderFamily {
    var checkpoint: Checkpoint { parts.checkpoint }
    var modelType: String { parts.checkpoint.modelType }
    var layerCount: Int { parts.dimensions.numHiddenLayers }
    var hiddenSize: Int { parts.dimensions.hiddenSize }
    var vocabularySize: Int { parts.dimensions.vocabSize }
    var outputVocabularySize: Int { parts.outputVocabularySize }
    var maxPositions: Int { parts.dimensions.maxPositionEmbeddings }
    var configuredDrops: DropPlan { parts.configuredDrops }
    var layerNaming: LayerNaming { parts.naming }
    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch) }
}

/// Reads how each branch of a block joins the stream (`ResidualJoin`).
typealias ResidualJoins = (attention: () throws -> ResidualJoin, mlp: () throws -> ResidualJoin)

extension DecoderParts {
    /// The `ResidualGate` of weight `name` [hidden] (Ergo's).
    func residualGate(_ name: String) throws -> ResidualJoin {
        .gated(ResidualGate(weight: try weights.floats(name + ".weight", [dimensions.hiddenSize])))
    }

    /// The per-channel scale `name` [hidden] of the stream a branch joins (Doge's).
    func streamScale(_ name: String) throws -> ResidualJoin {
        .scalingStream(scale: try weights.floats(name, [dimensions.hiddenSize]))
    }

    /// Llama's pre-norm block: RMSNorm `norms.attention` before the attention,
    /// RMSNorm `norms.mlp` before the MLP, sequential residual. A branch
    /// `drops` removes is never built, so its weights (norm included) are
    /// never read. `outputScale` multiplies both branches' outputs as they
    /// join the stream (Granite's `residual_multiplier`); `outputNorms`
    /// names RMSNorms that end each branch before it joins (GLM-4-0414's
    /// `post_self_attn_layernorm`, `post_mlp_layernorm`); `normKind`: the
    /// norms are LayerNorms instead (Jais 2, PhiMoE, Nemotron);
    /// `residualJoins` reads how each branch's output joins the stream in
    /// place of the sum (Ergo's gates, `residualGate`; Doge's stream scales, `streamScale`;
    /// Hunyuan V4's hyper-connections).
    /// - Throws: `DroptraceError` for a missing tensor or a shape the sizes contradict.
    func preNormBlock(
        _ index: Int, drops: DropPlan, eps: Double,
        norms: (attention: String, mlp: String) = ("input_layernorm", "post_attention_layernorm"),
        outputNorms: (attention: String, mlp: String)? = nil, outputScale: Float? = nil, normKind: NormKind = .rms,
        residualJoins: ResidualJoins? = nil,
        attention: () throws -> SelfAttention, feedForward: () throws -> FeedForward
    ) throws -> TransformerBlock {
        try preNormBlock(
            index, drops: drops, eps: eps, norms: norms, outputNorms: outputNorms, outputScale: outputScale, normKind: normKind,
            residualJoins: residualJoins, mixer: { .attention(try attention()) }, feedForward: feedForward)
    }

    /// The same block around any token mixer (the hybrid families' Mamba
    /// or short-convolution layers as well as attention).
    func preNormBlock(
        _ index: Int, drops: DropPlan, eps: Double,
        norms: (attention: String, mlp: String) = ("input_layernorm", "post_attention_layernorm"),
        outputNorms: (attention: String, mlp: String)? = nil, outputScale: Float? = nil, normKind: NormKind = .rms,
        residualJoins: ResidualJoins? = nil,
        mixer: () throws -> TokenMixer, feedForward: () throws -> FeedForward
    ) throws -> TransformerBlock {
        let p = "layers.\(index).", d = dimensions.hiddenSize
        func norm(_ name: String?) throws -> Normalization? {
            try name.map { try weights.norm(normKind, p + $0, size: d, eps: eps) }
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try norm(norms.attention), mixer: try mixer(),
                outputNorm: try norm(outputNorms?.attention), outputScale: outputScale,
                join: try residualJoins?.attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try norm(norms.mlp), feedForward: try feedForward(),
                outputNorm: try norm(outputNorms?.mlp), outputScale: outputScale,
                join: try residualJoins?.mlp()),
            residual: .sequential)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of Molmo2TextConfig droptrace reads beside the sizes (the
/// section's defaults filling those config.json omits).
struct Molmo2Configuration: Decodable {
    static let defaultAdditionalVocabularySize = 128
    static let normTypes = ["qwen3", "olmo"]

    var rmsNormEps: Double
    var hiddenAct: String
    var attentionBias: Bool
    /// "qwen3" (per head) or "olmo" (across heads).
    var qkNormType: String
    var normAfter: Bool
    /// The layers that rotate by the scaled table; nil (absent or null): every layer.
    var ropeScalingLayers: [Int]?
    var additionalVocabularySize: Int

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case layerNormEps = "layer_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case qkvBias = "qkv_bias"
        case qkNormType = "qk_norm_type"
        case normAfter = "norm_after"
        case ropeScalingLayers = "rope_scaling_layers"
        case additionalVocabularySize = "additional_vocab_size"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // The class's attribute_map aliases (the released configs' spelling), set over the fields.
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .layerNormEps) ?? c.decode(Double.self, forKey: .rmsNormEps)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .qkvBias) ?? c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        qkNormType = try c.decodeIfPresent(String.self, forKey: .qkNormType) ?? "qwen3"
        normAfter = try c.decodeIfPresent(Bool.self, forKey: .normAfter) ?? false
        ropeScalingLayers = try c.decodeIfPresent([Int].self, forKey: .ropeScalingLayers)
        additionalVocabularySize = try c.decodeIfPresent(Int.self, forKey: .additionalVocabularySize) ?? Self.defaultAdditionalVocabularySize
        try ConfigRules.decodingChecks {
            // Molmo2TextConfig.validate_architecture's two checks.
            if !Self.normTypes.contains(qkNormType) {
                throw InvalidConfigValue(
                    key: "qk_norm_type", problem: "is \"\(qkNormType)\", which Molmo2TextConfig refuses (it takes \"qwen3\" or \"olmo\")")
            }
            try ConfigRules.nonNegative(additionalVocabularySize, "additional_vocab_size")
        }
    }
}

/// Molmo2 (`molmo2`, transformers' models/molmo2/:
/// Molmo2ForConditionalGeneration, AI2's Molmo2) read as its language model,
/// Molmo2TextModel, on text: the image and video tokens never occur, so the
/// vision tower and adapter never run and are not read.
///
/// Its block is OLMo-2's attention and SwiGLU MLP (no biases but q/k/v's by
/// `attention_bias`, alias `qkv_bias`) with q/k RMSNorms before rotary,
/// per head (`qk_norm_type` "qwen3", weights [head_dim]) or over the whole
/// query and key projections (`"olmo"`, weights [heads · head_dim]), and
/// heads `head_dim` wide (Molmo2TextConfig's default 128, whatever
/// hidden_size / heads is). The norms are pre-norm, `input_layernorm`
/// before the attention and `post_attention_layernorm` before the MLP,
/// or with `norm_after` post-norm, the same two at the end of each branch
/// inside the residual:
///
///     H = X + input_layernorm(Attn(X)),   Y = H + post_attention_layernorm(MLP(H))
///
/// Two rotary tables: the layers listed in `rope_scaling_layers` (every
/// layer when absent or null; entries naming no layer select none) rotate
/// by `rope_parameters` as given, scaled by its rope type; the others by
/// the default rotation at the same base over the whole head.
///
/// The embedding has vocab_size + `additional_vocab_size` (default 128)
/// rows, the head `lm_head` vocab_size; no class ties them (none declares
/// tied weights), whatever either `tie_word_embeddings` says, so a
/// checkpoint without its head is refused. The released checkpoints (and
/// transformers' save_pretrained, which writes them back) store the text
/// model as `model.transformer.` with `blocks.`, `ln_f`, `attn_norm`,
/// `ff_norm`, `attn_out` and `ff_out` (renamed on load, `TensorRenamings`),
/// the fused q | k | v projection `self_attn.att_proj` (split on load),
/// the fused `mlp.ff_proj`, up rows first, then gate rows (chunked on load),
/// and the embedding as `wte.embedding` and `wte.new_embedding`, joined on
/// load (`DecoderParts.embeddingPieces`); each is read in either form.
///
/// Refused naming config.json as Molmo2Config and its parts refuse them: a
/// `qk_norm_type` other than the two, a negative `additional_vocab_size`,
/// adapter layers (`adapter_config.vision_feature_layer`) outside the
/// vision tower's (`checkVisionFeatureLayers`).
struct Molmo2Model: DecoderFamily {
    let parts: DecoderParts
    let config: Molmo2Configuration
    /// The scaled table and the unscaled one.
    let rotary: (scaled: RotaryEmbedding, unscaled: RotaryEmbedding)
    /// Whether each layer rotates by the scaled table.
    let scaledLayers: [Bool]

    init(_ checkpoint: Checkpoint) throws {
        try Self.checkVisionFeatureLayers(checkpoint)
        var placement = try TextModelPlacement.ownTextConfig(checkpoint, defaults: ["head_dim": 128], textTiesToo: false)
        placement.tiedEmbeddings = false
        let own = try checkpoint.decodeConfig(Molmo2Configuration.self, section: placement.section)
        parts = try DecoderParts(
            checkpoint, placement: placement, naming: { Qwen3Model.naming($0) },
            extraEmbeddingRows: own.additionalVocabularySize, extraEmbeddingRowsKey: "additional_vocab_size",
            joinedEmbedding: ["wte.embedding", "wte.new_embedding"])
        config = own
        try parts.confirmAttentionProjections(fused: "att_proj")
        let settings = try parts.ropeSettings()
        var plain = settings
        plain.type = "default"
        plain.frequencyFactors = nil
        rotary = (
            try parts.rotary(confirmProjections: false, settings: settings),
            try parts.rotary(confirmProjections: false, settings: plain))
        let layers = parts.dimensions.numHiddenLayers
        scaledLayers = (0..<layers).map { own.ropeScalingLayers?.contains($0) ?? true }
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, eps = config.rmsNormEps, p = "layers.\(index)."
        func attention() throws -> SelfAttention {
            let layout = parts.attentionLayout, a = p + "self_attn."
            let perHead = config.qkNormType == "qwen3"
            let width = perHead ? (layout.headDim, layout.headDim) : (layout.queryWidth, layout.keyWidth)
            let query = try weights.rmsNorm(a + "q_norm", size: width.0, eps: eps)
            let key = try weights.rmsNorm(a + "k_norm", size: width.1, eps: eps)
            return try parts.attention(
                a, bias: config.attentionBias, outputBias: false, rotary: scaledLayers[index] ? rotary.scaled : rotary.unscaled,
                queryKeyNorm: perHead ? .perHead(query: query, key: key) : .acrossHeads(query: query, key: key), fusedQKV: "att_proj")
        }
        func feedForward() throws -> FeedForward {
            let inner = parts.dimensions.intermediateSize, m = p + "mlp.", fused = m + "ff_proj.weight"
            let gateUp: Linear
            if weights.has(fused) {
                if let both = ["up_proj", "gate_proj"].first(where: { weights.has(m + $0 + ".weight") }) {
                    throw DroptraceError(
                        "tensors '\(weights.prefix)\(fused)' and '\(weights.prefix)\(m)\(both).weight' are both stored; transformers "
                            + "chunks the first into up_proj, gate_proj, so keep one form",
                        path: checkpoint.weightsPath)
                }
                // Up rows, then gate rows, as ff_proj holds them; the gated MLP takes gate rows first.
                let rows = try weights.floats(fused, [2 * inner, d]), half = inner * d
                gateUp = Linear(weight: Array(rows[half...]) + Array(rows[..<half]), bias: nil, inFeatures: d, outFeatures: 2 * inner)
            } else {
                gateUp = try weights.stackedLinear([m + "gate_proj", m + "up_proj"], in: d, outs: [inner, inner], bias: false)
            }
            return .gated(
                gateUp: gateUp, down: try weights.linear(m + "down_proj", in: inner, out: d, bias: false),
                activation: try parts.activation(config.hiddenAct))
        }
        func norm(_ name: String) throws -> Normalization { try weights.rmsNorm(p + name, size: d, eps: eps) }
        guard config.normAfter else {
            return try parts.preNormBlock(index, drops: drops, eps: eps, attention: attention, feedForward: feedForward)
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: nil, attention: try attention(), outputNorm: try norm("input_layernorm")),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: nil, feedForward: try feedForward(), outputNorm: try norm("post_attention_layernorm")),
            residual: .sequential)
    }

    /// What Molmo2Config's validate_architecture refuses of the vision
    /// tower the adapter reads (droptrace never reads either): an
    /// `adapter_config.vision_feature_layer` (or its released name
    /// `vit_layers`, read over it; [24, 18] when absent or null) entry
    /// outside [-n, n) for the n = `vision_config.num_hidden_layers`
    /// (default 25) layers. A config with the released `vit_config` is
    /// trimmed to the layers the adapter reads first (every index is then in
    /// range), which divides by n: 0 layers are refused there.
    static func checkVisionFeatureLayers(_ checkpoint: Checkpoint) throws {
        let path = checkpoint.configURL.path, document = checkpoint.configDocument
        func object(_ key: String) -> JSONValue? {
            guard let value = document.member(key), case .object = value else { return nil }
            return value
        }
        let legacy = object("vit_config")
        let vision = object("vision_config") ?? legacy
        let visionKey = object("vision_config") != nil ? "vision_config" : "vit_config"
        var layers = 25
        if case .integer(let count)? = vision?.member("num_hidden_layers") { layers = count }
        let adapter = object("adapter_config")
        let listKey = adapter?.member("vit_layers") != nil ? "vit_layers" : "vision_feature_layer"
        var listed = [24, 18]
        if case .array(let items)? = adapter?.member(listKey) {
            listed = items.compactMap { item -> Int? in
                guard case .integer(let value) = item else { return nil }
                return value
            }
            guard listed.count == items.count else { return }  // refused by the kinds check
        }
        if legacy != nil {
            guard layers != 0 || listed.isEmpty else {
                throw InvalidConfigValue(
                    key: "\(visionKey).num_hidden_layers",
                    problem: "is 0, which Molmo2Config divides the adapter's layer indices by (a released vit_config is trimmed so)"
                ).error(path: path)
            }
            return
        }
        if let bad = listed.first(where: { !(-layers <= $0 && $0 < layers) }) {
            throw InvalidConfigValue(
                key: "adapter_config.\(listKey)",
                problem: "lists layer \(bad), but the vision tower has \(layers) layers (vision_config.num_hidden_layers, default 25): "
                    + "Molmo2Config's validate_architecture refuses it"
            ).error(path: path)
        }
    }
}

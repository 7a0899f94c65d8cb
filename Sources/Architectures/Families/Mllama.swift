import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// Llama 3.2 Vision (transformers' models/mllama/), read as its language model
/// on text: `mllama_text_model` (MllamaForCausalLM, weights `model.`, head
/// `lm_head`) and the wrapper `mllama` (MllamaForConditionalGeneration, keys
/// under `text_config`, which MllamaConfig always builds as MllamaTextConfig
/// whatever model_type it names; weights under `model.language_model.`, or
/// `language_model.model.` with the head `language_model.lm_head` as the
/// releases store them and transformers renames them; the vision tower and
/// projector are never read).
///
/// MllamaTextModel builds layer i as a cross-attention layer when i is in
/// `cross_attention_layers` (default [3, 8, 13, 18, 23, 28, 33, 38]), else as
/// Llama's pre-RMSNorm block (rotary attention with grouped-query heads of
/// hidden_size / num_attention_heads, SwiGLU MLP, no biases; rope base 500000
/// unless given, llama3 scaling as rope_parameters says), which `LlamaModel`
/// builds. On text (no image, nothing cached) its forward skips every
/// cross-attention layer: they are the identity there. droptrace keeps them
/// at their stored indices as layers without either module
/// (`absentModules`): never scored (their attention, MLP and block scores
/// and their one-block gap are null, as transformers never runs them; the
/// stream passes them unchanged), never chosen by a drop, kept
/// by every export, their tensors never read. Scores, block gaps and drops
/// are of the layers transformers runs, by their stored index; a block-drop
/// export renumbers `cross_attention_layers` (written out where config.json
/// leaves it to the default), so transformers loads each kept cross-attention
/// layer as one (a mergekit passthrough, which would not, is refused).
///
/// The embedding has vocab_size + 8 rows (token ids up to vocab_size + 7
/// embed), the head vocab_size; neither class ties them (no tied-weights
/// keys, the shapes differ), whatever `tie_word_embeddings` says, so a
/// checkpoint without its head is refused.
///
/// Refused naming config.json: `cross_attention_layers` entries outside the
/// layers (transformers ignores them: most likely a config of another depth),
/// listed twice, or naming every layer (no layer would run on text); a
/// `head_dim` other than hidden_size / num_attention_heads (the rotary table
/// would not fit the heads: transformers fails); a wrapper's vision_config
/// that MllamaForConditionalGeneration cannot build (`checkVisionConfig`).
struct MllamaModel: DecoderFamily {
    static let defaultCrossAttentionLayers = [3, 8, 13, 18, 23, 28, 33, 38]
    static let crossAttentionKey = "cross_attention_layers"
    let llama: LlamaModel
    /// The cross-attention layers, in 0..<layers.
    let crossAttentionLayers: [Int]
    var parts: DecoderParts { llama.parts }

    struct Keys: Decodable {
        var crossAttentionLayers: [Int]?
        enum CodingKeys: String, CodingKey { case crossAttentionLayers = "cross_attention_layers" }
    }

    init(_ checkpoint: Checkpoint) throws {
        var placement: TextModelPlacement
        if checkpoint.modelType == "mllama" {
            try Self.checkVisionConfig(checkpoint)
            placement = .wrapped(textDefaults: ConfigValueKinds.omittedDefaultValues(of: "mllama.text_config"), tiedEmbeddings: false)
        } else {
            placement = .topLevel
            placement.tiedEmbeddings = false
        }
        // MllamaTextConfig whatever text_config.model_type says (LlamaModel reads no bias flags for it).
        placement.section.overrides["model_type"] = "mllama_text_model"
        // MllamaRotaryEmbedding takes `head_dim or hidden_size // num_attention_heads`.
        placement.readZeroHeadDimAsNone(checkpoint)
        let section = placement.section
        let configPath = checkpoint.configURL.path
        let listed = try checkpoint.decodeConfig(Keys.self, section: section).crossAttentionLayers
        let dimensions = try checkpoint.decodeConfig(DecoderDimensions.self, section: section)
        let layers = dimensions.numHiddenLayers
        let key = section.qualified(Self.crossAttentionKey)
        let cross = try ConfigRules.checks(path: configPath) { () throws -> [Int] in
            guard let listed else { return Self.defaultCrossAttentionLayers.filter { $0 < layers } }
            if let bad = listed.first(where: { !(0..<layers).contains($0) }) {
                throw InvalidConfigValue(
                    key: key, problem: "lists layer \(bad), but the model has layers 0 to \(layers - 1) (num_hidden_layers \(layers)): "
                        + "transformers would ignore it, so the list is most likely another model's")
            }
            if let twice = listed.first(where: { layer in listed.filter { $0 == layer }.count > 1 }) {
                throw InvalidConfigValue(key: key, problem: "lists layer \(twice) twice")
            }
            if listed.count == layers {
                throw InvalidConfigValue(
                    key: key, problem: "lists every layer: on text transformers skips them all, leaving no layer to score")
            }
            return listed.sorted()
        }
        crossAttentionLayers = cross
        let parts = try DecoderParts(checkpoint, placement: placement, naming: Self.naming(cross), extraEmbeddingRows: 8)
        let width = parts.dimensions.hiddenSize / parts.dimensions.numAttentionHeads
        if let headDim = parts.dimensions.headDim, headDim != width {
            throw DroptraceError(
                "\"\(section.qualified("head_dim"))\" \(headDim) sizes MllamaRotaryEmbedding's table, but MllamaTextModel's attention "
                    + "heads are hidden_size / num_attention_heads = \(width) wide (transformers fails on the mismatch)",
                path: configPath)
        }
        let selfAttention = (0..<layers).filter { !cross.contains($0) }
        llama = try LlamaModel(parts: parts, defaultTheta: 500_000, selfAttentionLayers: selfAttention)
        try Self.confirmCrossAttentionLayers(cross, parts: parts)
    }

    /// Confirms the shapes of the cross-attention layers' tensors, which
    /// text never reads but transformers loads (MllamaCrossAttentionDecoderLayer):
    /// another shape is another model's, and transformers refuses it.
    private static func confirmCrossAttentionLayers(_ cross: [Int], parts: DecoderParts) throws {
        let d = parts.dimensions, hidden = d.hiddenSize, headDim = hidden / d.numAttentionHeads
        let (queries, keys) = (d.numAttentionHeads * headDim, d.kvHeads * headDim)
        let heads = "num_attention_heads, num_key_value_heads, hidden_size"
        let attention: [(String, [Int], String)] = [
            // The gate first: a self-attention layer stored there has none.
            ("cross_attn_attn_gate", [1], "cross_attention_layers"),
            ("cross_attn.q_proj.weight", [queries, hidden], heads), ("cross_attn.k_proj.weight", [keys, hidden], heads),
            ("cross_attn.v_proj.weight", [keys, hidden], heads), ("cross_attn.o_proj.weight", [hidden, queries], heads),
            ("cross_attn.q_norm.weight", [headDim], heads), ("cross_attn.k_norm.weight", [headDim], heads),
            ("input_layernorm.weight", [hidden], "hidden_size"),
        ]
        let mlp: [(String, [Int], String)] = [
            ("mlp.gate_proj.weight", [d.intermediateSize, hidden], "intermediate_size, hidden_size"),
            ("mlp.up_proj.weight", [d.intermediateSize, hidden], "intermediate_size, hidden_size"),
            ("mlp.down_proj.weight", [hidden, d.intermediateSize], "intermediate_size, hidden_size"),
            ("post_attention_layernorm.weight", [hidden], "hidden_size"), ("cross_attn_mlp_gate", [1], "cross_attention_layers"),
        ]
        let drops = parts.configuredDrops
        for layer in cross {
            let kept = (drops.dropsAttention(layer) ? [] : attention) + (drops.dropsMLP(layer) ? [] : mlp)
            try parts.weights.confirmShapes(kept, prefix: "layers.\(layer).", configPath: parts.configPath)
        }
    }

    /// Llama's naming; a cross-attention layer's attention branch is
    /// `cross_attn.`, its norm and gate, its MLP branch `mlp.`, its norm and
    /// gate; an export writes the list renumbered where config.json leaves it out.
    static func naming(_ cross: [Int]) -> (String) -> LayerNaming {
        { prefix in
            var naming = LlamaModel.naming(prefix)
            let parts = LayerNaming.BranchParts(
                attention: ["cross_attn.", "input_layernorm.", "cross_attn_attn_gate"],
                mlp: ["mlp.", "post_attention_layernorm.", "cross_attn_mlp_gate"])
            naming.partsByLayer = Dictionary(uniqueKeysWithValues: cross.map { ($0, parts) })
            naming.layerIndexLists = [crossAttentionKey: cross]
            return naming
        }
    }

    var layerNaming: LayerNaming { llama.layerNaming }

    /// The cross-attention layers have neither module on text.
    var absentModules: DropPlan { DropPlan(attention: Set(crossAttentionLayers), mlp: Set(crossAttentionLayers)) }

    func head() throws -> OutputHead { try llama.head() }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        if crossAttentionLayers.contains(index) {
            return TransformerBlock(attention: nil, mlp: nil, residual: .sequential)
        }
        return try llama.block(index, skipping: plan)
    }

    /// What MllamaForConditionalGeneration's constructor (and MllamaVisionConfig's
    /// validation) fails on in `vision_config`, which droptrace otherwise never
    /// reads: a patch_size below 1 or image_size / patch_size that are not
    /// integers (`image_size // patch_size`), attention_heads (alias
    /// num_attention_heads) or hidden_size below 1 (ZeroDivisionError, negative
    /// tensor sizes), and max_num_tiles other than 4 with the default
    /// supported_aspect_ratios (its validate_architecture).
    /// - Throws: `DroptraceError` naming config.json and the key.
    static func checkVisionConfig(_ checkpoint: Checkpoint) throws {
        guard let vision = checkpoint.configDocument.member("vision_config"), case .object = vision else { return }
        let configPath = checkpoint.configURL.path
        func integer(_ key: String, default value: Int, atLeast minimum: Int?) throws -> Int {
            let written = vision.member(key)
            switch written {
            case nil, .null?:
                return value
            case .integer(let number)?:
                if let minimum, number < minimum {
                    throw DroptraceError(
                        "\"vision_config.\(key)\" must be at least \(minimum), got \(number): MllamaForConditionalGeneration cannot build its vision model",
                        path: configPath)
                }
                return number
            default:
                throw DroptraceError(
                    "\"vision_config.\(key)\" must be an integer: MllamaVisionModel divides image_size by patch_size with //",
                    path: configPath)
            }
        }
        _ = try integer("image_size", default: 448, atLeast: nil)
        _ = try integer("patch_size", default: 14, atLeast: 1)
        _ = try integer(vision.member("num_attention_heads") == nil ? "attention_heads" : "num_attention_heads", default: 16, atLeast: 1)
        _ = try integer("hidden_size", default: 1280, atLeast: 1)
        let tiles = try integer("max_num_tiles", default: 4, atLeast: nil)
        // The list as written (nil: absent or null, which __post_init__ makes the default).
        let ratios: [[Int]]? = switch vision.member("supported_aspect_ratios") {
        case nil, .null?: nil
        case .array(let rows)?: rows.map { row in
            guard case .array(let sides) = row else { return [] }
            return sides.map { if case .integer(let side) = $0 { side } else { Int.min } }
        }
        default: [[]]
        }
        if tiles != 4, ratios == nil || ratios == [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]] {
            throw DroptraceError(
                "\"vision_config.max_num_tiles\" is \(tiles) with the default supported_aspect_ratios: MllamaVisionConfig refuses it (it must be 4)",
                path: configPath)
        }
    }
}

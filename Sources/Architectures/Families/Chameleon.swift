import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `chameleon` beside the sizes (ChameleonConfig's keys and defaults).
struct ChameleonConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var attentionBias: Bool
    var mlpBias: Bool
    /// Each branch's norm after it instead of before (Chameleon-30B's `ChameleonSwinDecoderLayer`).
    var swinNorm: Bool
    /// The token ids whose names `vocabulary_map` starts with "IMGIMG": the
    /// image tokens, whose logits the model sets to float32's lowest value.
    var imageTokens: [Int]

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case swinNorm = "swin_norm"
        case vocabularyMap = "vocabulary_map"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        // ChameleonConfig writes null for these as False.
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        swinNorm = try c.decodeIfPresent(Bool.self, forKey: .swinNorm) ?? false
        // ChameleonModel builds its vocabulary mapping from the map: without one it cannot be built.
        guard let map = try c.decodeIfPresent([String: Int].self, forKey: .vocabularyMap) else {
            throw DecodingError.dataCorruptedError(
                forKey: .vocabularyMap, in: c, debugDescription: "is absent or null: ChameleonModel reads its image tokens from it")
        }
        imageTokens = map.filter { $0.key.hasPrefix("IMGIMG") }.map(\.value).sorted()
        try ConfigRules.decodingChecks { [rmsNormEps] in try ConfigRules.positive(rmsNormEps, "rms_norm_eps") }
    }
}

/// Chameleon (Meta's Chameleon-7B / 30B; transformers' models/chameleon,
/// `ChameleonForConditionalGeneration`), its early-fusion decoder on text:
/// Llama's pre-RMSNorm blocks and SwiGLU MLP (biases by `mlp_bias`), or,
/// with `swin_norm`, each branch's norm after it, x + norm(branch(x));
/// rotary attention (q/k/v/o biases by `attention_bias`, head_dim
/// hidden_size / num_attention_heads) whose queries and keys are each
/// LayerNorm-ed per head before rotary at epsilon 1e-5 with weights and
/// biases of each head's own (`q_norm`, `k_norm` [heads, head_dim]); the
/// logits of the image tokens `vocabulary_map` names (IMGIMG…) set to
/// float32's lowest value; head untied by default. The VQ-VAE
/// (`model.vqmodel.`) is never run on text.
struct ChameleonModel: DecoderFamily {
    let parts: DecoderParts
    let config: ChameleonConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // ChameleonAttention sizes its heads as hidden_size / num_attention_heads, whatever head_dim says.
        parts = try DecoderParts(checkpoint, section: ConfigSection(overrides: ["head_dim": .null]), naming: LlamaModel.naming)
        config = try parts.config(ChameleonConfiguration.self)
        let vocabulary = parts.dimensions.vocabSize
        if let outside = config.imageTokens.first(where: { $0 < 0 || $0 >= vocabulary }) {
            try parts.checks {
                throw InvalidConfigValue(key: "vocabulary_map", problem: "names image token \(outside), outside the vocabulary of \(vocabulary)")
            }
        }
        rotary = try parts.rotary()
    }

    func head() throws -> OutputHead {
        var head = try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
        head.suppressedTokens = config.imageTokens
        return head
    }

    /// Each head's LayerNorm (ChameleonLayerNorm: the statistics over head_dim, epsilon 1e-5).
    func headNorm(_ name: String, heads: Int) throws -> Normalization {
        let shape = [heads, parts.attentionLayout.headDim]
        return .layer(weight: try parts.weights.floats(name + ".weight", shape), bias: try parts.weights.floats(name + ".bias", shape), eps: 1e-5)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights, d = hiddenSize, p = "layers.\(index)."
        func norm(_ name: String) throws -> Normalization { try weights.rmsNorm(p + name, size: d, eps: config.rmsNormEps) }
        func attention() throws -> SelfAttention {
            let layout = parts.attentionLayout, a = p + "self_attn."
            return try parts.attention(
                a, bias: config.attentionBias, rotary: rotary,
                queryKeyNorm: .eachHead(query: try headNorm(a + "q_norm", heads: layout.numHeads), key: try headNorm(a + "k_norm", heads: layout.numKVHeads)))
        }
        // Pre-norm: the norms before the branches; swin: after them.
        let swin = config.swinNorm
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: swin ? nil : try norm("input_layernorm"), attention: try attention(),
                outputNorm: swin ? try norm("input_layernorm") : nil),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: swin ? nil : try norm("post_attention_layernorm"),
                feedForward: try weights.gatedMLP(
                    p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize, activation: try parts.activation(config.hiddenAct),
                    bias: config.mlpBias),
                outputNorm: swin ? try norm("post_attention_layernorm") : nil),
            residual: .sequential)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gemma`.
struct GemmaConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    var attentionBias: Bool?
    /// transformers' GemmaModel attends both ways when it is true (embedding models).
    var useBidirectionalAttention: Bool?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case useBidirectionalAttention = "use_bidirectional_attention"
    }

    /// The GeGLU nonlinearity, as transformers' GemmaMLP reads it: from
    /// `hidden_act` alone (`hidden_activation`, which the first configs also
    /// give, is Gemma 2's key). Those configs say "gelu" but were trained
    /// with the tanh approximation, and GemmaConfig reads "gelu" as it.
    var activationName: String {
        guard let hiddenAct, hiddenAct != "gelu" else { return "gelu_pytorch_tanh" }
        return hiddenAct
    }
}

/// Gemma: Llama's block with GeGLU MLPs, RMSNorms that scale by
/// (1 + weight), token embeddings multiplied by √hidden, a head tied to the
/// embedding, and a head_dim of its own (256 while hidden/heads is 128 in
/// Gemma-7B).
struct GemmaModel: DecoderFamily {
    let parts: DecoderParts
    let config: GemmaConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // GemmaConfig's head_dim is 256 when config.json omits it (gemma-2b: 2048 wide, 8 heads).
        // Also a LLaVA-style wrapper's language model (LLaVA-Gemma), under text_config.
        parts = try DecoderParts(
            checkpoint, placement: try .topLevelOrWrapped(checkpoint, defaults: ["head_dim": 256]),
            naming: LlamaModel.naming)
        config = try parts.config(GemmaConfiguration.self)
        try parts.requireCausal(config.useBidirectionalAttention)
        rotary = try parts.rotary()
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch, scaled: true) }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.offsetRMSNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, eps = config.rmsNormEps
        let bias = config.attentionBias == true
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: bias, rotary: rotary) }
        func feedForward() throws -> FeedForward {
            try weights.gatedMLP(
                p + "mlp.", hidden: d, inner: parts.dimensions.intermediateSize, activation: try parts.activation(config.activationName))
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.offsetRMSNorm(p + "input_layernorm", size: d, eps: eps), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.offsetRMSNorm(p + "post_attention_layernorm", size: d, eps: eps),
                feedForward: try feedForward()),
            residual: .sequential)
    }
}

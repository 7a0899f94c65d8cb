import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `nanochat`, with NanoChatConfig's defaults
/// (transformers' `models/nanochat/configuration_nanochat.py`).
struct NanoChatConfiguration: Decodable {
    var rmsNormEps: Double
    /// The MLP's activation: ReLU² (`relu2`) unless given.
    var hiddenAct: String
    /// Biases on q/k/v_proj and o_proj alike.
    var attentionBias: Bool
    /// tanh(logits / cap) · cap (absent: 15; null: none).
    var finalLogitSoftcapping: Double?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case finalLogitSoftcapping = "final_logit_softcapping"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "relu2"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        finalLogitSoftcapping = c.contains(.finalLogitSoftcapping)
            ? try c.decodeIfPresent(Double.self, forKey: .finalLogitSoftcapping) : 15
        let eps = rmsNormEps, cap = finalLogitSoftcapping
        try ConfigRules.decodingChecks {
            try ConfigRules.positive(eps, "rms_norm_eps")
            try ConfigRules.positiveIfPresent(cap, "final_logit_softcapping")
        }
    }
}

/// NanoChat (karpathy/nanochat), as transformers' `models/nanochat/modeling_nanochat.py`
/// runs it: Llama's pre-norm blocks with RMSNorms that have no weight
/// (x / √(mean x² + eps)), one more such norm on the token embeddings;
/// rotary turning each pair the other way (its rotate_half is (x₂, −x₁):
/// the usual rotation by −angle), then a weightless RMSNorm over each query
/// and key head; q/k/v/o biases by `attention_bias`; the non-gated MLP
/// `fc2(act(fc1 x))` without biases, ReLU² by default; the logits
/// soft-capped by `final_logit_softcapping` (15 by default); untied.
struct NanoChatModel: DecoderFamily {
    let parts: DecoderParts
    let config: NanoChatConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming)
        config = try parts.config(NanoChatConfiguration.self)
        let rotation = try parts.rotary()
        // cos(−a) = cos a and sin(−a) = −sin a: the reversed rotation as negated frequencies.
        rotary = RotaryEmbedding(
            inverseFrequencies: rotation.inverseFrequencies.map { -$0 }, headDim: rotation.headDim,
            attentionScaling: rotation.attentionScaling,
            longContext: rotation.longContext.map {
                .init(beyondLength: $0.beyondLength, inverseFrequencies: $0.inverseFrequencies.map { -$0 }, attentionScaling: $0.attentionScaling)
            })
    }

    /// A weightless RMSNorm of `size` columns.
    func norm(_ size: Int) -> Normalization {
        .weightlessRMS(size: size, eps: Float(config.rmsNormEps))
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { norm(hiddenSize)(try parts.embed(batch)) }

    func head() throws -> OutputHead {
        try parts.head(norm: norm(hiddenSize), logitSoftcap: config.finalLogitSoftcapping.map { Float($0) })
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), d = hiddenSize, inner = parts.dimensions.intermediateSize
        let weights = parts.weights, headDim = parts.attentionLayout.headDim
        let p = "layers.\(index)."
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: norm(d),
                attention: try parts.attention(
                    p + "self_attn.", bias: config.attentionBias, rotary: rotary,
                    queryKeyNorm: .perHead(query: norm(headDim), key: norm(headDim)), queryKeyNormAfterRotary: true)),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: norm(d),
                feedForward: .plain(
                    up: try weights.linear(p + "mlp.fc1", in: d, out: inner, bias: false),
                    down: try weights.linear(p + "mlp.fc2", in: inner, out: d, bias: false),
                    activation: try parts.activation(config.hiddenAct))),
            residual: .sequential)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `phi3`.
struct Phi3Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String?
    var slidingWindow: Int?
    var originalMaxPositionEmbeddings: Int?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case slidingWindow = "sliding_window"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
    }
}

/// Phi-3 (Phi-3, Phi-3.5-mini, Phi-4, Phi-4-mini): Llama's pre-RMSNorm
/// block with fused projections — `self_attn.qkv_proj` holds the q, k and v
/// rows in that order, `mlp.gate_up_proj` the gate rows then the up rows —,
/// rotary on the first `partial_rotary_factor` of each head, LongRoPE
/// scaling (`longrope`, or `su` / `yarn` in the first configs, which
/// transformers reads as LongRoPE) in the long-context variants, and a
/// sliding window on every layer when `sliding_window` is set. Also
/// Phi-4-multimodal (`phi4_multimodal`, Phi4MultimodalForCausalLM): the same
/// language model and config rules (Phi4MultimodalConfig extends
/// Phi3Config), whose image and audio encoders (`embed_tokens_extend`) act
/// only on image and audio inputs and are not read.
///
/// Dropping a module drops its fused tensors whole.
struct Phi3Model: DecoderFamily {
    let parts: DecoderParts
    let config: Phi3Configuration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Also a LLaVA-style wrapper's language model (LLaVA-Phi-3), under text_config.
        parts = try DecoderParts(checkpoint, placement: try .topLevelOrWrapped(checkpoint), naming: LlamaModel.naming)
        let config = try parts.config(Phi3Configuration.self)
        self.config = config
        let dimensions = parts.dimensions, configPath = parts.configPath
        try ConfigRules.checks(path: configPath) {
            try ConfigRules.countIfPresent(config.originalMaxPositionEmbeddings, "original_max_position_embeddings")
            // qkv_proj holds (heads + 2 · kv_heads) · head_dim rows of hidden values, at most 3 · heads of them.
            try ConfigRules.product([
                (dimensions.numAttentionHeads, "num_attention_heads"), (3, "q, k and v"),
                (dimensions.resolvedHeadDim, dimensions.headDim == nil ? "hidden_size" : "head_dim"),
                (dimensions.hiddenSize, "hidden_size"),
            ])
        }
        // The fused qkv_proj of the first kept attention confirms the head
        // sizes before the rotary table is sized from them.
        if let layer = parts.firstKeptAttention {
            try parts.weights.confirmShape(
                "layers.\(layer).self_attn.qkv_proj.weight", [parts.attentionLayout.width, dimensions.hiddenSize],
                keys: "(num_attention_heads + 2 × num_key_value_heads) × \(dimensions.headDim == nil ? "hidden_size / num_attention_heads" : "head_dim")",
                configPath: configPath)
        }
        var rope = try parts.ropeSettings()
        switch rope.type {
        case "default":
            break
        case "longrope":
            // transformers takes the pre-training length from the top-level
            // key (Phi3Config default 4096), over any in the rope parameters.
            rope.originalMaxPositions = config.originalMaxPositionEmbeddings ?? 4096
        case "su", "yarn":
            // Phi3Config reads these as LongRoPE only after the step that
            // copies the top-level length in: theirs must be in the rope
            // parameters (LongRoPE requires it).
            rope.type = "longrope"
        default:
            throw DroptraceError("unsupported rope type \"\(rope.type)\" for \(checkpoint.modelType) (supported: default, longrope, su)", path: configPath)
        }
        // Phi3Config's own check, stricter than the generic one (which lets torch broadcast one factor):
        // a factor per rotated pair of hidden_size // heads × partial_rotary_factor. A fraction outside
        // (0, 1] (beyond Int's range once multiplied) is left to the generic check below.
        let fraction = rope.partialRotaryFactor ?? 1
        if fraction > 0 && fraction <= 1 {
            let pairs = Int(Double(dimensions.hiddenSize / dimensions.numAttentionHeads) * fraction) / 2
            for (key, factors) in [("short_factor", rope.shortFactor), ("long_factor", rope.longFactor)] {
                if let factors, factors.count != pairs {
                    throw DroptraceError("rope \(key) has \(factors.count) entries; Phi3Config wants \(pairs), one per rotated pair", path: configPath)
                }
            }
        }
        rotary = try parts.rotary(partialRotary: .honoured(default: 1), confirmProjections: false, settings: rope)
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights
        let d = hiddenSize, inner = parts.dimensions.intermediateSize, layout = parts.attentionLayout, eps = config.rmsNormEps
        let p = "layers.\(index)."
        func attention() throws -> SelfAttention { SelfAttention(
            qkv: try weights.linear(p + "self_attn.qkv_proj", in: d, out: layout.width, bias: false),
            layout: layout,
            rotary: rotary,
            output: try weights.linear(p + "self_attn.o_proj", in: layout.queryWidth, out: d, bias: false),
            scale: 1 / Float(layout.headDim).squareRoot(),
            slidingWindow: config.slidingWindow) }
        func feedForward() throws -> FeedForward {
            try weights.fusedGatedMLP(p + "mlp.", hidden: d, inner: inner, activation: try parts.activation(config.hiddenAct ?? "silu"))
        }
        return try parts.preNormBlock(index, drops: drops, eps: eps, attention: attention, feedForward: feedForward)
    }
}

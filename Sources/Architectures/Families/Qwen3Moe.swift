import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// Qwen3-MoE: Qwen3's attention (per-head q/k RMSNorm) in pre-RMSNorm
/// blocks whose MLP is `QwenExperts`' with Qwen3MoeConfig's defaults and no
/// shared expert: on sparse layers softmax top-k experts (renormalised when
/// `norm_topk_prob`), a dense SwiGLU elsewhere. Experts are read per
/// expert (`mlp.experts.<e>.gate_proj`, as saved) or fused
/// (`mlp.experts.gate_up_proj` / `down_proj`). Every layer slides its window
/// when `use_sliding_window` is set. Also the language model of
/// `qwen3_vl_moe` checkpoints (`QwenVL`): Qwen3VLMoeTextConfig's defaults,
/// a router that always renormalises, experts possibly stored transposed,
/// no window; and of `qwen3_omni_moe` checkpoints' thinkers (`QwenVL`),
/// with Qwen3OmniMoeTextConfig's defaults, no window.
struct Qwen3MoeModel: DecoderFamily {
    let parts: DecoderParts
    let attentionConfig: Qwen3Configuration
    let experts: QwenExperts
    let rotary: RotaryEmbedding
    /// Every layer's window, nil for full attention.
    let window: Int?

    init(_ checkpoint: Checkpoint) throws {
        let vision = checkpoint.modelType == "qwen3_vl_moe", omni = QwenVL.qwen3OmniTypes.contains(checkpoint.modelType)
        let placement = try omni ? QwenVL.omniPlacement(checkpoint) : vision ? QwenVL.placement(checkpoint) : .topLevelOrWrapped(checkpoint)
        // Decoded first: the expert tensors are checked with the layers.
        experts = try QwenExperts(
            checkpoint, section: placement.section, configClass: omni ? .qwen3OmniMoe : vision ? .qwen3VLMoe : .qwen3Moe)
        parts = try DecoderParts(checkpoint, placement: placement, naming: LlamaModel.naming, experts: experts.naming)
        attentionConfig = try parts.config(Qwen3Configuration.self)
        rotary = try omni ? QwenVL.qwen3OmniRotary(parts) : vision ? QwenVL.qwen3Rotary(parts) : parts.rotary()
        if vision { try QwenVL.checkIndexedLayerTypes(parts) }
        if omni { try QwenVL.checkQwen3OmniTalker(checkpoint, configPath: parts.configPath) }
        window = vision || omni ? nil : attentionConfig.window
        try experts.confirm(parts)
    }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: attentionConfig.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        func feedForward() throws -> FeedForward {
            try experts.feedForward(parts, layer: index, activation: try parts.activation(attentionConfig.hiddenAct ?? "silu"))
        }
        return try parts.preNormBlock(
            index, drops: drops, eps: attentionConfig.rmsNormEps,
            attention: { try Qwen3Model.attention(parts, layer: index, config: attentionConfig, rotary: rotary, window: window) },
            feedForward: feedForward)
    }
}

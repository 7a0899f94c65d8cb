import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// Qwen3-Next (Qwen3-Next-80B-A3B): Qwen3.5's hybrid layers (Gated DeltaNet
/// and gated attention by `layer_types`, (1 + weight) RMSNorms) with the
/// linear layers' projections fused as transformers stores them —
/// `in_proj_qkvz` grouped by key head (q, k, then its value heads' v and z)
/// and `in_proj_ba` (its value heads' b, then a) — and, on sparse layers,
/// Qwen2-MoE's MLP (`QwenExperts`) with Qwen3NextConfig's defaults:
/// softmax top-k experts renormalised unless `norm_topk_prob` is false,
/// plus a shared expert behind a sigmoid gate; dense SwiGLU elsewhere.
struct Qwen3NextModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let layers: HybridQwenLayers
    let experts: QwenExperts

    init(_ checkpoint: Checkpoint) throws {
        experts = try QwenExperts(checkpoint, configClass: .qwen3Next)
        var defaults = ConfigValueKinds.omittedDefaultValues(of: "qwen3_next")
        defaults["head_dim"] = .integer(256)
        parts = try DecoderParts(
            checkpoint, section: ConfigSection(defaults: defaults), naming: { HybridQwenLayers.naming($0) },
            experts: experts.naming)
        layers = try HybridQwenLayers(parts)
        try experts.confirm(parts)
    }

    /// An export without some blocks spells out the remaining layers' types.
    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.layerTypes = layers.layerTypes
        return naming
    }

    func head() throws -> OutputHead { try layers.head() }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try layers.block(index, drops: plan.union(configuredDrops)) { prefix in
            try fusedProjection(prefix)
        } feedForward: {
            try experts.feedForward(parts, layer: index, activation: try parts.activation(layers.config.hiddenAct))
        }
    }

    /// `in_proj_qkvz` and `in_proj_ba` with their rows moved to the
    /// q | k | v | z | b | a order of `GatedDeltaNet.projection`.
    func fusedProjection(_ prefix: String) throws -> Linear {
        let h = layers.heads, d = hiddenSize, weights = parts.weights
        let group = h.valueHeads / h.keyHeads
        let qkvz = try weights.floats(prefix + "in_proj_qkvz.weight", [2 * h.keyWidth + 2 * h.valueWidth, d])
        let ba = try weights.floats(prefix + "in_proj_ba.weight", [2 * h.valueHeads, d])
        // Per key head: q (keyDim rows), k (keyDim), v (group · valueDim), z (group · valueDim).
        let perKeyHead = 2 * h.keyDim + 2 * group * h.valueDim
        func rows(_ source: [Float], _ start: Int, _ count: Int) -> ArraySlice<Float> { source[(start * d)..<((start + count) * d)] }
        var weight: [Float] = []
        weight.reserveCapacity(h.projectionWidth * d)
        for (offset, count) in [(0, h.keyDim), (h.keyDim, h.keyDim), (2 * h.keyDim, group * h.valueDim),
                                (2 * h.keyDim + group * h.valueDim, group * h.valueDim)] {
            for g in 0..<h.keyHeads { weight += rows(qkvz, g * perKeyHead + offset, count) }
        }
        // Per key head: b (group rows), then a (group rows).
        for offset in [0, group] {
            for g in 0..<h.keyHeads { weight += rows(ba, g * 2 * group + offset, group) }
        }
        return Linear(weight: weight, bias: nil, inFeatures: d, outFeatures: h.projectionWidth)
    }
}

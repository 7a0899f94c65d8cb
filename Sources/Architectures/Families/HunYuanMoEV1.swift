import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The mixture-of-experts keys of `hunyuan_v1_moe`'s config.json, with
/// HunYuanMoEV1Config's defaults (transformers'
/// `models/hunyuan_v1_moe/configuration_hunyuan_v1_moe.py`); the others are
/// Hunyuan dense's (`HunYuanDenseV1Configuration`).
struct HunYuanMoEV1Configuration: Decodable {
    /// The routed experts of every layer (`num_local_experts` is its alias).
    var numExperts: Int
    /// Experts per token: one for every layer, or one per layer
    /// (`num_experts_per_tok` is its alias).
    var moeTopk: MoeTopk

    enum MoeTopk: Decodable, Equatable {
        case all(Int)
        case perLayer([Int])

        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let list = try? c.decode([Int].self) { self = .perLayer(list) } else { self = .all(try c.decode(Int.self)) }
        }
    }

    enum CodingKeys: String, CodingKey {
        case numExperts = "num_experts"
        case moeTopk = "moe_topk"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 1
        moeTopk = try c.decodeIfPresent(MoeTopk.self, forKey: .moeTopk) ?? .all(1)
    }

    /// Layer `index`'s experts per token (HunYuanMoEV1Gate's `top_k`).
    func expertsPerToken(_ index: Int) -> Int {
        switch moeTopk {
        case .all(let k): k
        case .perLayer(let list): list[index]
        }
    }

    /// Refuses expert counts transformers could not run for `layers` layers
    /// of width `hidden` and experts of width `inner`.
    func check(layers: Int, hidden: Int, inner: Int) throws {
        try ConfigRules.count(numExperts, "num_experts")
        if case .perLayer(let list) = moeTopk, list.count < layers {
            // HunYuanMoEV1Gate reads the entry of its layer: a shorter list fails there.
            throw InvalidConfigValue(key: "moe_topk", problem: "lists \(list.count) layers, but num_hidden_layers is \(layers)")
        }
        for layer in 0..<layers {
            try MixtureOfExperts.checkExpertsPerToken(
                expertsPerToken(layer), of: numExperts, expertsKey: "num_experts", key: "moe_topk")
        }
        // The fused expert tensors hold experts × 2 · inner × hidden values.
        try ConfigRules.product([
            (numExperts, "num_experts"), (2, "gate and up"), (inner, "intermediate_size"), (hidden, "hidden_size"),
        ])
    }
}

/// Hunyuan MoE (tencent/Hunyuan-A13B), as transformers'
/// `models/hunyuan_v1_moe/modeling_hunyuan_v1_moe.py` runs it: Hunyuan
/// dense's attention (q/k/v/o biases by `attention_bias`, per-head
/// `query_layernorm` / `key_layernorm` after rotary, the NTK-alpha rope;
/// `HunYuanDenseV1Model`) in pre-RMSNorm blocks whose MLP is, in every
/// layer, a router `mlp.gate.wg` over `num_experts` SwiGLU experts
/// (softmax, the `moe_topk` most probable — one count for all layers or one
/// per layer — renormalised to sum to 1) plus the shared SwiGLU
/// `mlp.shared_mlp` every token goes through, experts and shared MLP all
/// `intermediate_size` wide. Dropping the MLP drops router, experts and
/// shared MLP together, as the layer adds their sum.
///
/// Routed experts are read per expert (`mlp.experts.<e>.gate_proj|up_proj|
/// down_proj`, as the released checkpoints and `save_pretrained` write
/// them) or fused (`mlp.experts.gate_up_proj` / `down_proj`).
struct HunYuanMoEV1Model: DecoderFamily {
    let parts: DecoderParts
    let config: HunYuanDenseV1Configuration
    let moe: HunYuanMoEV1Configuration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        // Decoded first: the expert tensors are checked with the layers.
        let moe = try checkpoint.decodeConfig(HunYuanMoEV1Configuration.self)
        let dimensions = try checkpoint.decodeConfig(DecoderDimensions.self)
        try ConfigRules.checks(path: checkpoint.configURL.path) {
            try moe.check(layers: dimensions.numHiddenLayers, hidden: dimensions.hiddenSize, inner: dimensions.intermediateSize)
        }
        self.moe = moe
        parts = try DecoderParts(
            checkpoint, naming: LlamaModel.naming,
            experts: .gatedMLP(count: moe.numExperts, countKey: "num_experts", isSparse: { _ in true }))
        config = try parts.config(HunYuanDenseV1Configuration.self)
        rotary = try HunYuanDenseV1Model.rotary(parts, config)
        try parts.confirmRouter(
            "mlp.gate.wg", experts: moe.numExperts, expertsKey: "num_experts", layers: Array(0..<parts.dimensions.numHiddenLayers))
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: { try HunYuanDenseV1Model.attention(parts, config, rotary: rotary, layer: index) },
            feedForward: { try feedForward(layer: index) })
    }

    /// Layer `index`'s router, routed experts and shared MLP.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", d = hiddenSize, inner = parts.dimensions.intermediateSize
        let activation = try parts.activation(config.hiddenAct), weights = parts.weights
        return .mixture(MixtureOfExperts(
            router: try weights.linear(p + "gate.wg", in: d, out: moe.numExperts, bias: false),
            experts: try weights.gatedExperts(
                fused: p + "experts.", perExpert: p + "experts.", names: ("gate_proj", "up_proj", "down_proj"),
                count: moe.numExperts, hidden: d, inner: inner, activation: activation),
            expertsPerToken: moe.expertsPerToken(index), rule: .softmaxTopK(renormalize: true),
            sharedExperts: [try weights.gatedMLP(p + "shared_mlp.", hidden: d, inner: inner, activation: activation)]))
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

// A.X K2 (`axk2`; SK Telecom's A.X-K2, transformers' `models/axk2/`):
// DeepSeek-V3.2's model (`Glm4MoeLiteModel`: multi-head latent attention
// with the lightning indexer of DeepSeek Sparse Attention, `index_topk`
// keys per query, and DeepSeek-V3's routed experts beside shared ones) as
// AXK2Config and its modeling file change it:
//
// - the defaults are A.X-K2-Light's; the MLP types are `mlp_layer_types`,
//   else, as A.X K1's, the legacy `first_k_dense_replace` (1) and
//   `moe_layer_freq` (1); the low-rank query path is required;
// - AXK2Attention has no q_b_proj: `q_gate_proj` [heads · (nope + rope + v),
//   2 · q_lora_rank] reads the query latent q_a_layernorm(q_a_proj(x))
//   beside q_a_proj(x) itself and gives each head's query, then v_head_dim
//   gate values whose sigmoid multiplies the head's attention output before
//   o_proj (`LatentAttentionSettings.fusedQueryGate`); the indexer reads the
//   latent, as DeepSeek-V3.2's;
// - `input_layernorm` of every layer, and `post_attention_layernorm` of the
//   routed ("sparse") ones, are AXK2GatedRMSNorm: the RMSNorm `norm`, its
//   output then times the sigmoid of a low-rank SiLU MLP of it (`mlp.fc1`
//   [gated_norm_rank, hidden], `mlp.fc2` [hidden, gated_norm_rank];
//   `Normalization.sigmoidGated`), part of its branch;
// - the router (AXK2TopkRouter) routes over all experts while `n_group` and
//   `topk_group` are null (the default); with them set, the experts of
//   the groups not kept rank at 0.0 instead of being excluded
//   (`GroupLimitedTopK.excludedGroupScore`).
//
// The released checkpoints store `q_gate_proj` as `self_attn.q_b_proj` and
// the gates' `mlp.fc1` / `mlp.fc2` as `W_down` / `W_up`, which transformers
// renames on load (and back on save; `TensorRenamings`); routed experts are
// read per expert (as released) or fused. AXK2Config refuses `n_group`
// without `topk_group` (or the reverse), a `topk_group` above `n_group` and
// an `n_group` that does not divide `n_routed_experts`, whether or not a
// layer is routed.

extension Glm4MoeLiteConfiguration.ConfigClass {
    /// AXK2Config's defaults (A.X-K2-Light's).
    static let axk2 = Self(
        latentDefaults: LatentAttentionSettings(
            qLoraRank: 384, kvLoraRank: 128, qkNopeHeadDim: 64, qkRopeHeadDim: 32, vHeadDim: 64, ropeInterleave: true,
            attentionBias: false),
        experts: .axk2, rmsNormEps: 1e-6, firstKDenseReplace: 1, indexer: (2048, 128, 16), axk2: true)
}

extension DeepSeekExperts.ConfigClass {
    /// AXK2Config: no groups by default; set, they rank the experts outside
    /// the kept groups at 0.0 (AXK2TopkRouter).
    static let axk2 = Self(
        nRoutedExperts: 128, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 512, routedScalingFactor: 2.5,
        nGroup: nil, topkGroup: nil, ungroupedWhenNull: true, excludedGroupScore: 0, name: "AXK2Config")
}

extension Glm4MoeLiteConfiguration {
    /// AXK2Config's own refusals (its `validate_architecture`: the groups
    /// set together, `topk_group` at most `n_group`, which divides
    /// `n_routed_experts`) and a gate width droptrace can build.
    func checkAXK2(_ d: DecoderDimensions) throws {
        try ConfigRules.count(gatedNormRank, "gated_norm_rank")
        try ConfigRules.product([(gatedNormRank, "gated_norm_rank"), (d.hiddenSize, "hidden_size")])
        let groups = experts.nGroup, kept = experts.topkGroup
        guard (groups == nil) == (kept == nil) else {
            let (set, unset) = groups == nil ? ("topk_group", "n_group") : ("n_group", "topk_group")
            throw InvalidConfigValue(key: set, problem: "is set but \(unset) is null; AXK2Config takes both or neither (null: no groups)")
        }
        guard let groups, let kept else { return }
        if let routed = experts.nRoutedExperts {
            guard groups != 0, routed % groups == 0 else {
                throw InvalidConfigValue(key: "n_group", problem: "must divide \(experts.nRoutedExpertsKey) \(routed), got \(groups)")
            }
        }
        guard kept <= groups else {
            throw InvalidConfigValue(key: "topk_group", problem: "must not exceed n_group \(groups), got \(kept)")
        }
    }

    /// The gates of the first kept layer's gated norms against
    /// `gated_norm_rank` and `hidden_size`, before anything is sized from them.
    func confirmGatedNormShapes(_ parts: DecoderParts, isSparse: (Int) -> Bool) throws {
        let layers = 0..<parts.dimensions.numHiddenLayers, drops = parts.configuredDrops
        let norms = [
            layers.first { !drops.dropsAttention($0) }.map { "layers.\($0).input_layernorm.mlp." },
            layers.first { !drops.dropsMLP($0) && isSparse($0) }.map { "layers.\($0).post_attention_layernorm.mlp." },
        ]
        let d = parts.dimensions.hiddenSize
        for prefix in norms.compactMap({ $0 }) {
            try parts.weights.confirmShape(
                prefix + "fc1.weight", [gatedNormRank, d], keys: "gated_norm_rank, hidden_size", configPath: parts.configPath)
            try parts.weights.confirmShape(
                prefix + "fc2.weight", [d, gatedNormRank], keys: "hidden_size, gated_norm_rank", configPath: parts.configPath)
        }
    }
}

extension Glm4MoeLiteModel {
    /// A.X K2's layer `index` (AXK2DecoderLayer): pre-norm with the gated
    /// `input_layernorm`, and `post_attention_layernorm` gated on the routed layers.
    func gatedNormBlock(_ index: Int, drops: DropPlan, attention: () throws -> SelfAttention) throws -> TransformerBlock {
        let p = "layers.\(index).", weights = parts.weights, d = hiddenSize, rank = config.gatedNormRank
        func norm(_ name: String, gated: Bool) throws -> Normalization {
            guard gated else { return try weights.rmsNorm(p + name, size: d, eps: config.rmsNormEps) }
            return .sigmoidGated(
                try weights.rmsNorm(p + name + ".norm", size: d, eps: config.rmsNormEps),
                down: try weights.linear(p + name + ".mlp.fc1", in: d, out: rank, bias: false),
                up: try weights.linear(p + name + ".mlp.fc2", in: rank, out: d, bias: false))
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(inputNorm: try norm("input_layernorm", gated: true), attention: try attention()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try norm("post_attention_layernorm", gated: isSparse(index)), feedForward: try feedForward(layer: index)),
            residual: .sequential)
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `longcat_flash` (LongcatFlashConfig) besides the sizes,
/// absent keys taking its defaults. `num_hidden_layers` is the class's
/// derived property: written, it sets `num_layers` to half of it (Python's
/// floor division), as the class's setter does.
struct LongcatFlashConfiguration: Decodable {
    /// Decoder layers (`num_layers`), each two of droptrace's layers.
    var numLayers: Int
    /// The key the count was read from: `num_hidden_layers` where written
    /// (it overrides `num_layers`), else `num_layers`.
    var layerCountKey: String
    var rmsNormEps: Double
    var hiddenAct: String
    var latent: LatentAttentionSettings
    /// The rotary table's width (`head_dim`, 64 by default), which must be
    /// the rotated part of the heads.
    var headDim: Int
    /// `qk_head_dim` as written (nil: derived, qk_nope_head_dim + qk_rope_head_dim).
    var qkHeadDim: Int?
    /// The dense MLPs' width (`ffn_hidden_size`, alias `intermediate_size`).
    var ffnHiddenSize: Int
    /// The routed experts' width (`expert_ffn_hidden_size`).
    var expertFfnHiddenSize: Int
    var nRoutedExperts: Int
    /// Zero-computation experts (`zero_expert_num`), routed after the others.
    var zeroExpertNum: Int
    var moeTopk: Int
    var routedScalingFactor: Double

    enum CodingKeys: String, CodingKey {
        case numLayers = "num_layers"
        case numHiddenLayers = "num_hidden_layers"
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case headDim = "head_dim"
        case qkHeadDim = "qk_head_dim"
        case ffnHiddenSize = "ffn_hidden_size"
        case expertFfnHiddenSize = "expert_ffn_hidden_size"
        case nRoutedExperts = "n_routed_experts"
        case zeroExpertNum = "zero_expert_num"
        case moeTopk = "moe_topk"
        case routedScalingFactor = "routed_scaling_factor"
    }

    static let latentDefaults = LatentAttentionSettings(
        qLoraRank: 1536, kvLoraRank: 512, qkNopeHeadDim: 128, qkRopeHeadDim: 64, vHeadDim: 128, ropeInterleave: true,
        attentionBias: false)

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let written = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers)
        if let total = written {
            // Python's floor division.
            numLayers = total >= 0 ? total / 2 : -((-total + 1) / 2)
            layerCountKey = "num_hidden_layers"
        } else {
            numLayers = try c.decodeIfPresent(Int.self, forKey: .numLayers) ?? 28
            layerCountKey = "num_layers"
        }
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        latent = try LatentAttentionSettings(from: decoder, defaults: Self.latentDefaults)
        // LongcatFlashMLA always rotates interleaved pairs (it reads no rope_interleave).
        latent.ropeInterleave = true
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? 64
        qkHeadDim = try c.decodeIfPresent(Int.self, forKey: .qkHeadDim)
        ffnHiddenSize = try c.decodeIfPresent(Int.self, forKey: .ffnHiddenSize) ?? 12288
        expertFfnHiddenSize = try c.decodeIfPresent(Int.self, forKey: .expertFfnHiddenSize) ?? 2048
        nRoutedExperts = try c.decodeIfPresent(Int.self, forKey: .nRoutedExperts) ?? 512
        zeroExpertNum = try c.decodeIfPresent(Int.self, forKey: .zeroExpertNum) ?? 256
        moeTopk = try c.decodeIfPresent(Int.self, forKey: .moeTopk) ?? 12
        routedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .routedScalingFactor) ?? 6.0
        try ConfigRules.decodingChecks {
            if let written, numLayers < 1 {
                throw InvalidConfigValue(key: layerCountKey, problem: "must be at least 2 (two sublayers per decoder layer; num_layers is half of it), got \(written)")
            }
            try ConfigRules.count(numLayers, layerCountKey)
            // Bounded here, where the written key and value are known (two layers of droptrace's each).
            if numLayers > ModelLimits.maxLayers / 2 {
                throw InvalidConfigValue(
                    key: layerCountKey,
                    problem: "is \(written ?? numLayers); droptrace reads models of up to \(ModelLimits.maxLayers) layers (\(ModelLimits.maxLayers / 2) decoder layers of two sublayers)")
            }
            try ConfigRules.count(ffnHiddenSize, "ffn_hidden_size")
        }
    }

    /// The softmax scale's width: `qk_head_dim` (checked to be the sum of the parts).
    var queryKeyDim: Int { latent.queryKeyDim }

    /// The router's experts: the routed ones, then the zero-computation ones.
    var routerExperts: Int { nRoutedExperts + zeroExpertNum }

    /// Refuses values transformers could not run, or that would route no
    /// expert, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        guard latent.qLoraRank != nil else {
            throw InvalidConfigValue(key: "q_lora_rank", problem: "is null; LongcatFlashMLA always projects its queries through the low rank")
        }
        try latent.check(d)
        if headDim != latent.qkRopeHeadDim {
            throw InvalidConfigValue(
                key: "head_dim",
                problem: "must equal qk_rope_head_dim \(latent.qkRopeHeadDim) (LongcatFlashRotaryEmbedding sizes its table by head_dim, which the rotated part of the heads must fit), got \(headDim)")
        }
        if let written = qkHeadDim, written != latent.queryKeyDim {
            throw InvalidConfigValue(
                key: "qk_head_dim",
                problem: "must equal qk_nope_head_dim + qk_rope_head_dim \(latent.queryKeyDim) (LongcatFlashMLA splits each query and key head into those parts), got \(written)")
        }
        try ConfigRules.count(nRoutedExperts, "n_routed_experts")
        try ConfigRules.nonNegative(zeroExpertNum, "zero_expert_num")
        try ConfigRules.count(expertFfnHiddenSize, "expert_ffn_hidden_size")
        _ = try ConfigRules.sum([(zeroExpertNum, "zero_expert_num"), (nRoutedExperts, "n_routed_experts")])
        guard (1...routerExperts).contains(moeTopk) else {
            throw InvalidConfigValue(
                key: "moe_topk",
                problem: "must be between 1 and n_routed_experts + zero_expert_num \(routerExperts), got \(moeTopk)")
        }
        try ConfigRules.product([(routerExperts, "n_routed_experts + zero_expert_num"), (d.hiddenSize, "hidden_size")])
        try ConfigRules.product([(nRoutedExperts, "n_routed_experts"), (2, "gate and up"), (expertFfnHiddenSize, "expert_ffn_hidden_size"), (d.hiddenSize, "hidden_size")])
        try ConfigRules.positive(routedScalingFactor, "routed_scaling_factor")
    }
}

/// LongCat-Flash (`longcat_flash`, transformers' models/longcat_flash):
/// each decoder layer holds two attention sublayers (multi-head latent
/// attention, DeepSeek-V3's with its queries × √(hidden_size / q_lora_rank)
/// and its normalised key/value latent × √(hidden_size / kv_lora_rank), no
/// indexer), two dense SwiGLU MLPs (`mlps`) and one shortcut-connected
/// mixture of experts (`mlp`).
///
/// droptrace's layers are the attention sublayers, numbered as transformers
/// numbers their attention (`layer_idx`): layer 2i + s is decoder layer i's
/// sublayer s, `num_layers` decoder layers giving 2 · num_layers layers.
/// Layer 2i: attention `self_attn.0` (after `input_layernorm.0`), MLP
/// `mlps.0` (after `post_attention_layernorm.0`). Layer 2i + 1: attention
/// `self_attn.1`, MLP `mlps.1` plus the shortcut MoE, whose output joins the
/// stream there, after mlps.1's (`ShortcutBranch`). The MoE reads
/// `post_attention_layernorm.0` of the stream layer 2i's MLP reads (the
/// stream after its attention), which layer 2i leaves for it
/// (`TransformerBlock.leavesMLPInput`).
///
/// Drops: the MLP of layer 2i removes mlps.0 only (the MoE still reads its
/// norm of that stream); its attention changes the stream the MoE reads;
/// the MLP of layer 2i + 1 removes mlps.1 and the MoE. The norm the MoE
/// reads stays with the MoE whatever layer 2i drops: with block 2i dropped
/// the MoE reads `post_attention_layernorm.0` of the stream entering layer
/// 2i, as with its attention and MLP dropped.
///
/// The MoE's router (`mlp.router.classifier`, no bias whatever
/// `router_bias` says: LongcatFlashTopkRouter never adds it) scores
/// n_routed_experts + zero_expert_num experts by a softmax; the `moe_topk`
/// best by score plus `e_score_correction_bias` are weighted by their
/// scores × `routed_scaling_factor`, unnormalised; a zero-computation
/// expert returns its input × its weight (`MixtureOfExperts.identityExperts`).
/// Routed experts are read fused (`mlp.experts.gate_up_proj` / `down_proj`)
/// or per expert (`mlp.experts.<e>.gate_proj|up_proj|down_proj`).
///
/// transformers loads whole decoder layers only: an export removes a
/// decoder layer where a plan drops the blocks of both its sublayers, and
/// refuses any other plan (`exportProblem`).
struct LongcatFlashModel: DecoderFamily {
    let parts: DecoderParts
    let config: LongcatFlashConfiguration
    let rotary: RotaryEmbedding
    let scale: Float
    /// `mla_scale_q_lora`, `mla_scale_kv_lora` as float32 factors.
    let latentScales: (query: Float, keyValue: Float)
    /// `hidden_act`, of every MLP and expert.
    let activation: Activation

    init(_ checkpoint: Checkpoint) throws {
        let config = try checkpoint.decodeConfig(LongcatFlashConfiguration.self)
        self.config = config
        let countKey = config.layerCountKey
        parts = try DecoderParts(
            checkpoint,
            section: ConfigSection(overrides: [
                "num_hidden_layers": .integer(2 * config.numLayers), "intermediate_size": .integer(config.ffnHiddenSize),
            ]),
            naming: { prefix in
                var naming = LayerNaming(
                    prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm."],
                    mlp: ["mlps.", "mlp.", "post_attention_layernorm."], layerCountKeys: [countKey])
                naming.sublayers = 2
                // A written num_hidden_layers counts the sublayers.
                naming.configEntriesPerLayer = countKey == "num_hidden_layers" ? 2 : 1
                return naming
            },
            experts: .gatedMLP(count: config.nRoutedExperts, countKey: "n_routed_experts", isSparse: { _ in true }))
        let d = parts.dimensions, configPath = parts.configPath
        try ConfigRules.checks(path: configPath) { try config.check(d) }
        activation = try parts.activation(config.hiddenAct)
        try Self.confirmShapes(parts, config)
        let rope = try checkpoint.decodeConfig(RopeSettings.self)
        rotary = try rope.embedding(
            headDim: parts.firstKeptAttention == nil ? 0 : config.latent.qkRopeHeadDim, defaultTheta: 10_000_000,
            configPath: configPath)
        scale = try config.latent.scale(rope, configPath: configPath)
        let hidden = Double(d.hiddenSize)
        latentScales = (
            Float((hidden / Double(config.latent.qLoraRank!)).squareRoot()), Float((hidden / Double(config.latent.kvLoraRank)).squareRoot())
        )
    }

    /// The first kept attention's projections, the first kept dense MLP and
    /// the first kept MoE's router and experts against the config, before
    /// anything is sized from them.
    private static func confirmShapes(_ parts: DecoderParts, _ c: LongcatFlashConfiguration) throws {
        let d = parts.dimensions, weights = parts.weights, configPath = parts.configPath, drops = parts.configuredDrops
        if let layer = parts.firstKeptAttention {
            try c.latent.confirmShapes(parts, layer: layer / 2, module: "self_attn.\(layer % 2).")
        }
        if let layer = (0..<d.numHiddenLayers).first(where: { !drops.dropsMLP($0) }) {
            try weights.confirmShape(
                "layers.\(layer / 2).mlps.\(layer % 2).gate_proj.weight", [c.ffnHiddenSize, d.hiddenSize],
                keys: "ffn_hidden_size, hidden_size", configPath: configPath)
        }
        if let layer = (0..<c.numLayers).first(where: { !drops.dropsMLP(2 * $0 + 1) }) {
            try weights.confirmShape(
                "layers.\(layer).mlp.router.classifier.weight", [c.routerExperts, d.hiddenSize],
                keys: "n_routed_experts + zero_expert_num, hidden_size", configPath: configPath)
            let experts = "layers.\(layer).mlp.experts."
            if weights.hasFusedExperts(experts) {
                try weights.confirmShape(
                    experts + "gate_up_proj", [c.nRoutedExperts, 2 * c.expertFfnHiddenSize, d.hiddenSize],
                    keys: "n_routed_experts, 2 × expert_ffn_hidden_size, hidden_size", configPath: configPath)
            } else {
                try weights.confirmShape(
                    experts + "0.gate_proj.weight", [c.expertFfnHiddenSize, d.hiddenSize], keys: "expert_ffn_hidden_size, hidden_size",
                    configPath: configPath)
            }
        }
    }

    /// The export's layer count is written where config.json gives it, in
    /// decoder layers (`num_layers`) or sublayers (`num_hidden_layers`).
    var layerNaming: LayerNaming { parts.naming }

    func exportProblem(_ plan: DropPlan) -> String? {
        if plan.dropsModulesOfKeptBlocks {
            let modules = plan.attention.union(plan.mlp).subtracting(plan.blocks).sorted()
            return "LongCat-Flash's attention and MLP drops (of layer\(modules.count == 1 ? "" : "s") "
                + "\(modules.map(String.init).joined(separator: ", "))) cannot be exported: transformers' LongcatFlash classes read no "
                + "drop_attn_list / drop_mlp_list and build whole decoder layers, so the export would load with those modules "
                + "filled with random weights; drop whole blocks of both sublayers of a decoder layer (layers 2i and 2i + 1)"
        }
        let split = plan.blocks.filter { !plan.blocks.contains($0 ^ 1) }.sorted()
        guard !split.isEmpty else { return nil }
        return "dropping block\(split.count == 1 ? "" : "s") \(split.map(String.init).joined(separator: ", ")) without "
            + "\(split.count == 1 ? "its" : "their") decoder layer's other sublayer cannot be exported: transformers' LongCat-Flash "
            + "loads whole decoder layers (two sublayers each, layers 2i and 2i + 1); drop both sublayers of a decoder layer"
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    /// Layer `index`: sublayer `index % 2` of decoder layer `index / 2` (see the type's description).
    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), weights = parts.weights, d = hiddenSize, eps = config.rmsNormEps
        let layer = index / 2, sublayer = index % 2, p = "layers.\(layer)."
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.rmsNorm(p + "input_layernorm.\(sublayer)", size: d, eps: eps),
                attention: try config.latent.attention(
                    parts, layer: layer, rotary: rotary, scale: scale, module: "self_attn.\(sublayer).", latentScales: latentScales)),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.rmsNorm(p + "post_attention_layernorm.\(sublayer)", size: d, eps: eps),
                feedForward: try weights.gatedMLP(p + "mlps.\(sublayer).", hidden: d, inner: config.ffnHiddenSize, activation: activation),
                shortcut: sublayer == 0 ? nil : ShortcutBranch(
                    inputNorm: try weights.rmsNorm(p + "post_attention_layernorm.0", size: d, eps: eps),
                    feedForward: try shortcutMixture(layer: layer))),
            residual: .sequential,
            // Left only where the next layer's MLP, the MoE with it, runs.
            leavesMLPInput: sublayer == 0 && !drops.dropsMLP(index + 1))
    }

    /// Decoder layer `layer`'s shortcut MoE (see the type's description).
    func shortcutMixture(layer: Int) throws -> FeedForward {
        let c = config, weights = parts.weights, d = hiddenSize, p = "layers.\(layer).mlp."
        let experts = try weights.gatedExperts(
            fused: p + "experts.", perExpert: p + "experts.", names: ExpertNaming.gatedNames, count: c.nRoutedExperts, hidden: d,
            inner: c.expertFfnHiddenSize, activation: activation)
        // A checkpoint without the buffer gets transformers' zeros: no correction.
        let bias = p + "router.e_score_correction_bias"
        let routing = GroupLimitedTopK(
            scoring: .softmax, groupScore: .best, groups: 1, groupsPerToken: 1,
            selectionBias: weights.has(bias) ? try weights.floats(bias, [c.routerExperts]) : nil, normalizesWeights: false,
            scalingFactor: Float(c.routedScalingFactor))
        return .mixture(MixtureOfExperts(
            router: try weights.linear(p + "router.classifier", in: d, out: c.routerExperts, bias: false), experts: experts,
            expertsPerToken: c.moeTopk, rule: .groupLimited(routing), identityExperts: c.zeroExpertNum))
    }
}

import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `ernie4_5_vl_moe`'s `text_config` besides the routing ones,
/// with Ernie4_5_VLMoeTextConfig's defaults (transformers'
/// `models/ernie4_5_vl_moe/configuration_ernie4_5_vl_moe.py`); the
/// attention keys are ERNIE 4.5's (`InterleavedLlamaConfiguration`).
struct Ernie4_5VLMoeConfiguration: Decodable {
    var routing: Ernie4_5MoeRouting
    /// `moe_intermediate_size`: the text experts' width, then the vision
    /// experts' (null or absent: [1536, 512], as `__post_init__` fills it).
    var moeIntermediateSize: [Int]
    /// Each layer's MLP, "dense" or "sparse"; nil: layer 0 dense, the others sparse.
    var mlpLayerTypes: [String]?

    enum CodingKeys: String, CodingKey {
        case moeIntermediateSize = "moe_intermediate_size"
        case mlpLayerTypes = "mlp_layer_types"
    }

    init(from decoder: Decoder) throws {
        routing = try Ernie4_5MoeRouting(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        moeIntermediateSize = try c.decodeIfPresent([Int].self, forKey: .moeIntermediateSize) ?? [1536, 512]
        mlpLayerTypes = try c.decodeIfPresent([String].self, forKey: .mlpLayerTypes)
        let (widths, types) = (moeIntermediateSize, mlpLayerTypes)
        try ConfigRules.decodingChecks {
            try MLPLayerTypes.checkEntries(types)
            // Ernie4_5_VLMoeMoeBlock reads items 0 and 1 on every routed layer.
            guard widths.count >= 2 else {
                throw InvalidConfigValue(
                    key: CodingKeys.moeIntermediateSize.rawValue,
                    problem: "must list the text experts' width and the vision experts', got \(widths.count) item\(widths.count == 1 ? "" : "s")")
            }
        }
    }

    /// The text experts' width, and the vision experts' (which text never runs).
    var textWidth: Int { moeIntermediateSize[0] }
    var visionWidth: Int { moeIntermediateSize[1] }

    /// Each of `layers` layers' MLP type (Ernie4_5_VLMoeTextConfig's rule when unset).
    func layerTypes(_ layers: Int) -> [String] {
        MLPLayerTypes.resolved(mlpLayerTypes, layers: layers, firstDense: 1)
    }

    /// Refuses what transformers could not build, before anything is sized from it.
    func check(_ d: DecoderDimensions) throws {
        try MLPLayerTypes.checkCount(mlpLayerTypes, layers: d.numHiddenLayers)
        guard layerTypes(d.numHiddenLayers).prefix(d.numHiddenLayers).contains("sparse") else { return }
        try routing.check(d, inner: textWidth, innerKey: "moe_intermediate_size[0]")
        try ConfigRules.nonNegative(visionWidth, "moe_intermediate_size[1]")
        try ConfigRules.product([
            (routing.experts ?? 0, routing.expertsKey), (2, "gate and up"), (visionWidth, "moe_intermediate_size[1]"), (d.hiddenSize, "hidden_size"),
        ])
    }
}

/// ERNIE 4.5 VL (`ernie4_5_vl_moe`: ERNIE-4.5-VL-28B-A3B, ERNIE-4.5-VL-424B-A47B;
/// transformers' `models/ernie4_5_vl_moe/modeling_ernie4_5_vl_moe.py`,
/// Ernie4_5_VLMoeForConditionalGeneration) read as its language model,
/// Ernie4_5_VLMoeTextModel under `text_config`: ERNIE 4.5's pre-RMSNorm
/// blocks and attention (`InterleavedLlamaModel`: `use_bias` on every
/// projection, rotary on interleaved pairs), whose MLP is dense on the
/// `mlp_layer_types` layers marked "dense" (by default layer 0) and on the
/// "sparse" ones a mixture with modality-isolated experts: text tokens run
/// only the text experts (`Ernie4_5MoeRouting.mixture`: softmax router,
/// `moe_statics` correction bias choosing, `moe_norm_min`, shared experts of
/// `moe_num_shared_experts` × `moe_intermediate_size[0]`); the vision
/// experts (`moe_intermediate_size[1]` wide) never run on text, so they are
/// checked, not read. The vision tower and resampler are never read.
///
/// Text has the same position on all three M-RoPE axes, where the rotary
/// embedding's pre-rotation and its pairing of height and width undo each
/// other: the plain rotation (`MropeSection.heightWidthPairs`; only rope
/// type "default", base 500000 unless given).
///
/// Weights as released and as `save_pretrained` writes them, under `model.`
/// (transformers renames them onto `model.language_model.` on loading):
/// the router `mlp.gate.weight` stored [hidden, experts] (transposed on
/// loading; `gate.weight_1` is the vision experts'), the correction biases
/// `mlp.moe_statics.e_score_correction_bias` [2, experts] (row 0 the text
/// experts'), and per expert `mlp.experts.<e>.` the text experts 0 ..< n
/// then the vision experts n ..< 2n, which transformers splits in halves.
/// Also read as transformers' modules name them: `mlp.text_moe.gate`,
/// `mlp.text_moe.gate.moe_statics.e_score_correction_bias` [1, experts] and
/// fused `mlp.text_moe.experts.gate_up_proj` / `down_proj`. The head is tied
/// unless the top level's `tie_word_embeddings` is false (the text config's is not read).
struct Ernie4_5VLMoeModel: Ernie4_5Blocks {
    let parts: DecoderParts
    let attentionConfig: InterleavedLlamaConfiguration
    let config: Ernie4_5VLMoeConfiguration
    let mlpTypes: [String]
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        var placement = try TextModelPlacement.ownTextConfig(
            checkpoint, defaults: ["model_type": .string("ernie4_5_vl_moe_text")], prefixes: ["model.language_model.", "model."],
            textTiesToo: false)
        placement.tiedEmbeddings = try checkpoint.decodeConfig(MultimodalWrapperKeys.self).tieWordEmbeddings ?? true
        // Decoded first: the routed experts' tensors are checked with the layers.
        let config = try checkpoint.decodeConfig(Ernie4_5VLMoeConfiguration.self, section: placement.section)
        let dimensions = try checkpoint.decodeConfig(DecoderDimensions.self, section: placement.section)
        try ConfigRules.checks(path: checkpoint.configURL.path, section: placement.section) { try config.check(dimensions) }
        let types = config.layerTypes(dimensions.numHiddenLayers)
        self.config = config
        mlpTypes = types
        let experts = config.routing.experts ?? 0
        // (Without routed layers the count is never checked: a huge one is not doubled.)
        let (stored, overflow) = experts.multipliedReportingOverflow(by: 2)
        parts = try DecoderParts(
            checkpoint, placement: placement, naming: LlamaModel.naming,
            experts: ExpertNaming(
                parts: ["mlp.experts.", "mlp.text_moe.experts.", "mlp.vision_moe.experts."], projections: ["gate_proj", "up_proj", "down_proj"],
                count: experts, countKey: config.routing.expertsKey,
                stored: (overflow ? Int.max : stored, "the text experts, then as many vision experts"),
                isSparse: { $0 < types.count && types[$0] == "sparse" }))
        var attentionConfig = try parts.config(InterleavedLlamaConfiguration.self)
        // Ernie4_5_VLMoeConfig builds its text config class whatever model_type text_config names.
        attentionConfig.modelType = checkpoint.modelType
        self.attentionConfig = attentionConfig
        try parts.checks { try ConfigRules.positive(attentionConfig.rmsNormEps, "rms_norm_eps") }
        let (rope, _, _) = try parts.ropeSettings(defaults: [:])
        guard rope.type == "default" else {
            throw DroptraceError(
                "unsupported rope type \"\(rope.type.forErrorMessage)\" for ernie4_5_vl_moe (Ernie 4.5 VL requires the default rope type)",
                path: parts.configPath)
        }
        rotary = try parts.mropeRotary(pairingHeightWidth: true, defaultSection: [22, 22, 20], defaultTheta: 500_000)
        try confirmExperts()
    }

    func isSparse(_ index: Int) -> Bool { index < mlpTypes.count && mlpTypes[index] == "sparse" }

    /// Whether layer `index` stores its routed MLP as released (`mlp.gate.weight`),
    /// not under transformers' module names (`mlp.text_moe.`).
    func isReleased(_ index: Int) -> Bool { parts.weights.has("layers.\(index).mlp.gate.weight") }

    /// Checks every routed layer's router and both modalities' experts
    /// against the config before any is read, as transformers does on loading
    /// (it cannot split experts stored in another number or shape into the
    /// text and vision halves).
    func confirmExperts() throws {
        guard let experts = config.routing.experts else { return }
        let weights = parts.weights, d = hiddenSize, section = parts.section, key = section.qualified(config.routing.expertsKey)
        let (textWidthKey, visionWidthKey) = (section.qualified("moe_intermediate_size[0]"), section.qualified("moe_intermediate_size[1]"))
        func confirm(_ name: String, _ shape: [Int], _ keys: String) throws {
            try weights.confirmShape(name, shape, keys: keys, configPath: parts.configPath)
        }
        for layer in mlpTypes.indices where isSparse(layer) && layer < layerCount {
            let p = "layers.\(layer).mlp."
            guard isReleased(layer) else {
                try confirm(p + "text_moe.gate.weight", [experts, d], "\(key), hidden_size")
                // The vision experts' router, never run on text, where stored (transformers initialises a missing one).
                if weights.has(p + "vision_moe.gate.weight") { try confirm(p + "vision_moe.gate.weight", [experts, d], "\(key), hidden_size") }
                for (module, width, widthKey) in [("text_moe.", config.textWidth, textWidthKey), ("vision_moe.", config.visionWidth, visionWidthKey)] {
                    try confirm(p + module + "experts.gate_up_proj", [experts, 2 * width, d], "\(key), 2 × \(widthKey), hidden_size")
                    try confirm(p + module + "experts.down_proj", [experts, d, width], "\(key), hidden_size, \(widthKey)")
                }
                continue
            }
            let released = "hidden_size, \(key) (the routers as released, transposed on loading)"
            try confirm(p + "gate.weight", [d, experts], released)
            if weights.has(p + "gate.weight_1") { try confirm(p + "gate.weight_1", [d, experts], released) }
            for e in 0..<(2 * experts) {
                let (width, widthKey) = e < experts ? (config.textWidth, textWidthKey) : (config.visionWidth, visionWidthKey)
                for projection in ["gate_proj", "up_proj"] {
                    try confirm(p + "experts.\(e).\(projection).weight", [width, d], "\(widthKey), hidden_size")
                }
                try confirm(p + "experts.\(e).down_proj.weight", [d, width], "hidden_size, \(widthKey)")
            }
        }
    }

    /// An export without some blocks spells out the kept layers' MLP types.
    var layerNaming: LayerNaming { parts.naming(spellingOut: nil, mlpTypes: mlpTypes) }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: attentionConfig.rmsNormEps))
    }

    /// Layer `index`'s MLP: dense, or the text experts' router, routed and shared experts.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", weights = parts.weights, d = hiddenSize
        let activation = try parts.activation(attentionConfig.hiddenAct), bias = attentionConfig.biases.mlp
        guard isSparse(index), let experts = config.routing.experts else { return try denseMLP(p) }
        let inner = config.textWidth, m = p + "text_moe."
        let router: Linear, selectionBias: [Float]?
        if isReleased(index) {
            router = Linear(weight: try weights.floats(p + "gate.weight", [d, experts]), bias: nil, inFeatures: d, outFeatures: experts, layout: .inByOut)
            let biases = p + "moe_statics.e_score_correction_bias"
            selectionBias = weights.has(biases) ? Array(try weights.floats(biases, [2, experts]).prefix(experts)) : nil
        } else {
            router = try weights.linear(m + "gate", in: d, out: experts, bias: false)
            let biases = m + "gate.moe_statics.e_score_correction_bias"
            selectionBias = weights.has(biases) ? try weights.floats(biases, [1, experts]) : nil
        }
        // Fused under transformers' module, else per expert as released (the text experts come first).
        let routed = try weights.gatedExperts(
            fused: m + "experts.", perExpert: p + "experts.", names: ExpertNaming.gatedNames, count: experts, hidden: d, inner: inner,
            activation: activation)
        return .mixture(try config.routing.mixture(
            parts, p, router: router, selectionBias: selectionBias, experts: routed, inner: inner, activation: activation, bias: bias))
    }
}

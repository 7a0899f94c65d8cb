import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `gemma2`.
struct Gemma2Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenActivation: String?
    var attentionBias: Bool?
    var queryPreAttnScalar: Double?
    var slidingWindow: Int?
    var layerTypes: [String]?
    var attnLogitSoftcapping: Double?
    var finalLogitSoftcapping: Double?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenActivation = "hidden_activation"
        case attentionBias = "attention_bias"
        case queryPreAttnScalar = "query_pre_attn_scalar"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case attnLogitSoftcapping = "attn_logit_softcapping"
        case finalLogitSoftcapping = "final_logit_softcapping"
    }

    /// Gemma2Config's defaults for the keys a config.json may omit (absent
    /// is the default, `null` is none).
    static let section = ConfigSection(defaults: [
        "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096,
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
    ])

    /// The attention type of a layer when config.json has no `layer_types`
    /// (transformers 5.x writes it): the rule of the original configs, even
    /// layers slide.
    static func defaultLayerType(_ layer: Int) -> String {
        layer % 2 == 0 ? AttentionLayerType.sliding : AttentionLayerType.full
    }
}

/// Gemma-2: Gemma with a norm at both ends of each branch (`SandwichBlock`),
/// attention scaled by 1/√query_pre_attn_scalar with soft-capped scores,
/// sliding-window and global layers alternating, and soft-capped final logits.
/// VaultGemma (`vaultgemma`, VaultGemmaConfig: Gemma2Config's keys and
/// defaults, without `use_bidirectional_attention`) is the same model
/// without the branches' output norms (`post_attention_layernorm`,
/// `post_feedforward_layernorm`).
struct Gemma2Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: Gemma2Configuration
    let rotary: RotaryEmbedding
    let layerTypes: [String]
    /// Gemma-2's post-branch norms; VaultGemma has none.
    let outputNorms: Bool

    init(_ checkpoint: Checkpoint) throws {
        let outputNorms = checkpoint.modelType != "vaultgemma"
        self.outputNorms = outputNorms
        // Also PaliGemma 2's language model (`Llava`), under text_config.
        let placement = try TextModelPlacement.topLevelOrWrapped(checkpoint, defaults: Gemma2Configuration.section.defaults)
        parts = try DecoderParts(checkpoint, placement: placement, naming: { SandwichBlock.naming($0, outputNorms: outputNorms) })
        config = try parts.config(Gemma2Configuration.self)
        rotary = try parts.rotary()
        try parts.requireWindow(config.slidingWindow, builtBy: "Gemma2Model")
        layerTypes = try parts.layerTypes(
            config.layerTypes, slidingWindow: config.slidingWindow, default: Gemma2Configuration.defaultLayerType)
        for (key, value) in [("attn_logit_softcapping", config.attnLogitSoftcapping), ("final_logit_softcapping", config.finalLogitSoftcapping), ("query_pre_attn_scalar", config.queryPreAttnScalar)] {
            try parts.checks { try ConfigRules.positiveIfPresent(value, key) }
        }
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch, scaled: true) }

    /// An export without some blocks spells out the remaining layers' types,
    /// so renumbering cannot move a window to another layer.
    var layerNaming: LayerNaming {
        parts.naming(spellingOut: layerTypes)
    }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.offsetRMSNorm("norm", size: hiddenSize, eps: config.rmsNormEps),
            logitSoftcap: config.finalLogitSoftcapping.map { Float($0) })
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops)
        let layout = parts.attentionLayout, eps = config.rmsNormEps
        let bias = config.attentionBias == true
        let p = "layers.\(index)."
        // Gemma-2 scales scores by query_pre_attn_scalar^-1/2, which need not be head_dim (null: head_dim).
        let scalar = config.queryPreAttnScalar ?? Double(layout.headDim)
        func attention() throws -> SelfAttention { try parts.attention(
            p + "self_attn.", bias: bias, rotary: rotary, scale: Float(1 / scalar.squareRoot()),
            slidingWindow: layerTypes[index] == "sliding_attention" ? config.slidingWindow : nil,
            logitSoftcap: config.attnLogitSoftcapping.map { Float($0) }) }
        return try SandwichBlock.block(
            index, parts: parts, drops: drops, eps: eps,
            activation: try parts.activation(config.hiddenActivation ?? "gelu_pytorch_tanh", key: "hidden_activation"), outputNorms: outputNorms,
            attention: attention)
    }
}

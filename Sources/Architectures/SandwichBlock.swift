import CheckpointIO
import DroptraceSupport
import TensorEngine

/// The block of Gemma-2 and Gemma-3: a (1 + weight) RMSNorm at both ends of
/// each branch (sandwich),
///
///     H = X + RMSNorm(Attn(RMSNorm X)),   Y = H + RMSNorm(MLP(RMSNorm H))
///
/// (`input_layernorm` / `post_attention_layernorm` around the attention,
/// `pre_feedforward_layernorm` / `post_feedforward_layernorm` around the
/// gated MLP), with sliding-window and global attention layers by
/// `layer_types`. The families differ only in their attention. VaultGemma
/// keeps the block without its output norms (`outputNorms` false): pre-norm
/// only, H = X + Attn(RMSNorm X), Y = H + MLP(RMSNorm H).
///
/// Gemma 4's mixture-of-experts block (`enable_moe_block`) widens the MLP
/// branch into the dense MLP and the experts side by side, each between its
/// own norms, their sum normalised by `post_feedforward_layernorm`:
///
///     M = post(post_1(MLP(pre H)) + post_2(Experts(pre_2 H; router(H))))
///
/// where the router reads H itself (`FeedForward.parallel`). The whole is
/// the block's MLP, scored and dropped as one.
enum SandwichBlock {
    /// The layer naming: each branch owns its norms. `experts`: the MLP
    /// branch also owns Gemma 4's router, experts and their norms.
    static func naming(_ prefix: String, layerTypes: [String]? = nil, outputNorms: Bool = true, experts: Bool = false) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.",
            attention: ["self_attn.", "input_layernorm."] + (outputNorms ? ["post_attention_layernorm."] : []),
            mlp: ["mlp.", "pre_feedforward_layernorm."] + (outputNorms ? ["post_feedforward_layernorm."] : [])
                + (experts ? ["router.", "experts.", "pre_feedforward_layernorm_2.", "post_feedforward_layernorm_1.", "post_feedforward_layernorm_2."] : []),
            layerCountKeys: ["num_hidden_layers"], layerTypes: layerTypes)
    }

    /// Block `index` of `parts`' weights with the branches `drops` names left
    /// out (their weights unread); `attention` builds the attention module.
    /// `plainNorms`: the norms scale by their weight, not 1 + weight
    /// (Gemma 4); `inner`: the MLP's width when not `intermediate_size`;
    /// `outputScale`: the block's `TransformerBlock.outputScale`;
    /// `experts`: Gemma 4's mixture of experts beside the MLP (read only
    /// when the MLP is kept; its router reads the branch input unnormalised).
    static func block(
        _ index: Int, parts: DecoderParts, drops: DropPlan, eps: Double, activation: Activation, outputNorms: Bool = true,
        plainNorms: Bool = false, inner: Int? = nil, outputScale: Float? = nil, experts: (() throws -> MixtureOfExperts)? = nil,
        attention: () throws -> SelfAttention
    ) throws -> TransformerBlock {
        let weights = parts.weights, d = parts.dimensions.hiddenSize
        let p = "layers.\(index)."
        func norm(_ name: String) throws -> Normalization {
            plainNorms ? try weights.rmsNorm(p + name, size: d, eps: eps) : try weights.offsetRMSNorm(p + name, size: d, eps: eps)
        }
        func mlp() throws -> MLPBranch {
            let dense = try weights.gatedMLP(
                p + "mlp.", hidden: d, inner: inner ?? parts.dimensions.intermediateSize, activation: activation)
            guard let experts else {
                return MLPBranch(
                    inputNorm: try norm("pre_feedforward_layernorm"), feedForward: dense,
                    outputNorm: outputNorms ? try norm("post_feedforward_layernorm") : nil)
            }
            return MLPBranch(
                inputNorm: nil,
                feedForward: .parallel([
                    FeedForwardPart(
                        inputNorm: try norm("pre_feedforward_layernorm"), feedForward: dense,
                        outputNorm: try norm("post_feedforward_layernorm_1")),
                    FeedForwardPart(
                        inputNorm: try norm("pre_feedforward_layernorm_2"), feedForward: .mixture(try experts()),
                        outputNorm: try norm("post_feedforward_layernorm_2"), routesRawInput: true),
                ]),
                outputNorm: try norm("post_feedforward_layernorm"))
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try norm("input_layernorm"),
                attention: try attention(),
                outputNorm: outputNorms ? try norm("post_attention_layernorm") : nil),
            mlp: drops.dropsMLP(index) ? nil : try mlp(),
            residual: .sequential, outputScale: outputScale)
    }
}

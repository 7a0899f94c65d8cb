import Foundation
import TensorEngine

/// How a block combines its two branches with the residual stream. Where a
/// branch normalises is the branch's own business (`AttentionBranch`,
/// `MLPBranch`): pre-norm (Llama), post-norm (OLMo-2: no input norm, an
/// output norm inside the residual), sandwich (Gemma-2/3: both) and post-LN
/// (OPT-350m: the norm follows the add, `residualNorm`) are all sequential
/// blocks.
public enum ResidualStyle: Sendable {
    /// h = x + attn(x); y = h + mlp(h)   (Llama, GPT-2, most models).
    case sequential
    /// y = x + attn(x) + mlp(x)   (GPT-NeoX / Pythia, GPT-J).
    case parallel
}

/// What a block's attention branch mixes the tokens with: softmax
/// attention, a linear-attention recurrence (Qwen3-Next's and Qwen3.5's
/// Gated DeltaNet layers, the hybrid Mamba-2 families' Mamba-2 layers,
/// Jamba's Mamba-1 layers, MiniMax's lightning attention), a gated short
/// convolution (LFM2's conv layers) or attention beside Mamba-2
/// (Falcon-H1), Griffin's gated linear recurrence (RecurrentGemma), or
/// RWKV-4's time mixing.
/// Each is the block's "attention" module, scored and dropped as such.
public enum TokenMixer: Sendable {
    case attention(SelfAttention)
    case gatedDeltaNet(GatedDeltaNet)
    case mamba2(Mamba2Mixer)
    case mamba(MambaMixer)
    case shortConvolution(ShortConvolution)
    /// Attention and a Mamba-2 mixer summed (Falcon-H1).
    case attentionBesideMamba2(AttentionBesideMamba2)
    /// MiniMax's lightning attention (decayed linear attention in blocks).
    case lightningAttention(LightningAttention)
    /// DeepSeek-V4's attention over a sliding window and compressed keys.
    case compressedAttention(CompressedAttention)
    /// ZAYA's attention, its queries and keys mixed by a causal convolution
    /// and half its values delayed a token (`ConvolvedAttention`).
    case convolvedAttention(ConvolvedAttention)
    /// Griffin's recurrent block (RecurrentGemma's recurrent layers: RG-LRU).
    case griffinRecurrent(GriffinRecurrentBlock)
    /// RWKV-4's time mixing (the WKV recurrence over token-shifted projections).
    case rwkvTimeMixing(RwkvTimeMixing)

    /// The mixer over the whole batch, each sequence on its own; `shared`
    /// holds the keys and values and key selections layers share in this
    /// pass (`AttentionSharing`).
    public func callAsFunction(_ x: Matrix, _ batch: TokenBatch, shared: SharedAttentionState? = nil) -> Matrix {
        self(x, attend: { $0($1, batch, shared: shared) }, recur: { $0($1, batch) })
    }

    /// The mixer of normalised rows `x`, where `attend` runs a softmax
    /// attention and `recur` a recurrent mixer (over the whole batch, or
    /// over a key/value cache or recurrent state when decoding).
    public func callAsFunction(
        _ x: Matrix, attend: (SelfAttention, Matrix) -> Matrix, recur: (any RecurrentTokenMixer, Matrix) -> Matrix
    ) -> Matrix {
        switch self {
        case .attention(let attention): attend(attention, x)
        case .attentionBesideMamba2(let both): both(x, attend: attend, recur: recur)
        default: recur(recurrent!, x)
        }
    }

    /// The softmax attention the mixer runs, alone or beside another; nil for none.
    public var softmaxAttention: SelfAttention? {
        switch self {
        case .attention(let attention): attention
        case .attentionBesideMamba2(let both): both.attention
        default: nil
        }
    }

    /// The mixer that carries a state along each sequence (beside the
    /// attention, for Falcon-H1's); nil for attention alone.
    public var recurrent: (any RecurrentTokenMixer)? {
        switch self {
        case .attention: nil
        case .gatedDeltaNet(let net): net
        case .mamba2(let mixer): mixer
        case .mamba(let mixer): mixer
        case .shortConvolution(let convolution): convolution
        case .attentionBesideMamba2(let both): both.mamba
        case .lightningAttention(let attention): attention
        case .compressedAttention(let attention): attention
        case .convolvedAttention(let attention): attention
        case .griffinRecurrent(let block): block
        case .rwkvTimeMixing(let mixing): mixing
        }
    }
}

/// One residual branch's output before it is added to the stream: the
/// branch's own norm(s) included, so dropping the branch drops them too.
public struct AttentionBranch: Sendable {
    /// Absent where the branch reads the raw residual stream (OLMo-2).
    public let inputNorm: Normalization?
    public let mixer: TokenMixer
    /// The softmax attention; nil for another mixer.
    public var attention: SelfAttention! {
        if case .attention(let attention) = mixer { attention } else { nil }
    }
    /// Applied to the branch output inside the residual (OLMo-2, Gemma-2).
    public let outputNorm: Normalization?
    /// Multiplies the branch output as it joins the residual stream
    /// (Granite's `residual_multiplier`); part of the branch, so the
    /// attention importance sees the stream transformers' layer computes.
    public let outputScale: Float?
    /// Normalises the stream after the branch output joins it, x ← Norm(x +
    /// out) (post-LN: OPT-350m's `self_attn_layer_norm` when
    /// `do_layer_norm_before` is false). The branch's own, so a dropped
    /// branch skips it with its sublayer.
    public let residualNorm: Normalization?
    /// How the branch output joins the stream where it is not their sum
    /// (`ResidualJoin`); the branch's own, so a dropped branch leaves the
    /// stream as it was.
    public let join: ResidualJoin?
    /// The mixer reads the stream with the block's per-layer input (the
    /// token embeddings, `PerLayerEmbedding.embeddings`) concatenated after
    /// it, [x | x₀], before `inputNorm` (Zamba2's shared transformer blocks).
    public let appendsLayerInput: Bool
    /// What the mixer's output passes through before it joins the stream
    /// (Zamba2's shared blocks: their MLP and the layer's `linear`); nil for none.
    public let feedForward: BranchFeedForward?

    public init(
        inputNorm: Normalization?, attention: SelfAttention, outputNorm: Normalization? = nil, outputScale: Float? = nil,
        residualNorm: Normalization? = nil, join: ResidualJoin? = nil, appendsLayerInput: Bool = false,
        feedForward: BranchFeedForward? = nil
    ) {
        self.init(
            inputNorm: inputNorm, mixer: .attention(attention), outputNorm: outputNorm, outputScale: outputScale,
            residualNorm: residualNorm, join: join, appendsLayerInput: appendsLayerInput, feedForward: feedForward)
    }

    public init(
        inputNorm: Normalization?, mixer: TokenMixer, outputNorm: Normalization? = nil, outputScale: Float? = nil,
        residualNorm: Normalization? = nil, join: ResidualJoin? = nil, appendsLayerInput: Bool = false,
        feedForward: BranchFeedForward? = nil
    ) {
        precondition(!appendsLayerInput || join == nil)
        self.inputNorm = inputNorm
        self.mixer = mixer
        self.outputNorm = outputNorm
        self.outputScale = outputScale
        self.residualNorm = residualNorm
        self.join = join
        self.appendsLayerInput = appendsLayerInput
        self.feedForward = feedForward
    }

    /// The branch output for residual stream `x`; `attend` computes the
    /// token mixing itself from the normalised input (over the whole batch,
    /// or over a key/value cache or recurrent state when decoding).
    /// `layerInput`: the block's per-layer input, where `appendsLayerInput`.
    public func callAsFunction(_ x: Matrix, layerInput: Matrix? = nil, attend: (TokenMixer, Matrix) -> Matrix) -> Matrix {
        var out = attend(mixer, input(x, layerInput: layerInput))
        if let feedForward { out = feedForward(out) }
        return (outputNorm.map { $0(out) } ?? out).scaled(by: outputScale)
    }

    /// What the mixer reads of residual stream `x`: the stream as its join
    /// reads it (`ResidualJoin.read`), or [x | layerInput] where
    /// `appendsLayerInput`, normalised by `inputNorm`.
    public func input(_ x: Matrix, layerInput: Matrix? = nil) -> Matrix {
        let read: Matrix
        if appendsLayerInput {
            precondition(layerInput != nil && layerInput!.rows == x.rows, "the branch reads the block's per-layer input")
            read = x.concatenatingColumns(layerInput!)
        } else {
            read = join?.read(x) ?? x
        }
        return inputNorm.map { $0(read) } ?? read
    }
}

/// A feed-forward a branch's mixer output passes through before it joins
/// the stream: projection(feedForward(norm(out))) (Zamba2's shared
/// transformer block: `pre_ff_layernorm`, its MLP, then the hybrid layer's
/// `linear` back into the stream). Part of the branch's module.
public struct BranchFeedForward: Sendable {
    public let norm: Normalization
    public let feedForward: FeedForward
    /// nil for none.
    public let projection: Linear?

    public init(norm: Normalization, feedForward: FeedForward, projection: Linear?) {
        self.norm = norm
        self.feedForward = feedForward
        self.projection = projection
    }

    func callAsFunction(_ x: Matrix) -> Matrix {
        let out = feedForward(norm(x))
        return projection.map { $0(out) } ?? out
    }
}

extension Matrix {
    /// [self | other]: each row's columns followed by `other`'s.
    func concatenatingColumns(_ other: Matrix) -> Matrix {
        precondition(rows == other.rows)
        let (left, right) = (cols, other.cols)
        return Matrix(uninitialized: rows, left + right) { out in
            data.withUnsafeBufferPointer { a in
                other.data.withUnsafeBufferPointer { b in
                    for r in 0..<rows {
                        for j in 0..<left { out[r * (left + right) + j] = a[r * left + j] }
                        for j in 0..<right { out[r * (left + right) + left + j] = b[r * right + j] }
                    }
                }
            }
        }
    }
}

public struct MLPBranch: Sendable {
    public let inputNorm: Normalization?
    public let feedForward: FeedForward
    public let outputNorm: Normalization?
    /// As `AttentionBranch.outputScale`.
    public let outputScale: Float?
    /// As `AttentionBranch.residualNorm` (OPT-350m's layer `final_layer_norm`).
    public let residualNorm: Normalization?
    /// As `AttentionBranch.join` (Dory's `lambda_2`, Ergo's `feedforward_residual_gate`).
    public let join: ResidualJoin?
    /// A second MLP of the module whose output joins the stream after this
    /// branch's, reading the stream the previous block's MLP read
    /// (LongCat-Flash's shortcut MoE; `ShortcutBranch`); nil for none.
    public let shortcut: ShortcutBranch?

    public init(
        inputNorm: Normalization?, feedForward: FeedForward, outputNorm: Normalization? = nil, outputScale: Float? = nil,
        residualNorm: Normalization? = nil, join: ResidualJoin? = nil, shortcut: ShortcutBranch? = nil
    ) {
        precondition(shortcut == nil || (outputNorm == nil && outputScale == nil && residualNorm == nil && join == nil))
        self.inputNorm = inputNorm
        self.feedForward = feedForward
        self.outputNorm = outputNorm
        self.outputScale = outputScale
        self.residualNorm = residualNorm
        self.join = join
        self.shortcut = shortcut
    }

    /// The branch output for residual stream `x`, whose rows are the
    /// sequences `sequences` (nil: one sequence; only Doge's product-key
    /// experts route across a sequence's rows).
    /// `carry`: the pass's `BlockCarry`, for an MLP whose router reads the
    /// state the last MLP before it left (`FeedForward.carriedRouter`).
    public func callAsFunction(_ x: Matrix, sequences: [Range<Int>]? = nil, tokenIDs: [Int]? = nil, carry: BlockCarry? = nil) -> Matrix {
        let read = join?.read(x) ?? x
        let out = feedForward(inputNorm.map { $0(read) } ?? read, sequences: sequences, tokenIDs: tokenIDs, carry: carry)
        return (outputNorm.map { $0(out) } ?? out).scaled(by: outputScale)
    }
}

/// An MLP that reads the stream the MLP of the block before read, and whose
/// output joins the stream at the end of this block's MLP branch, part of
/// that branch (LongCat-Flash's shortcut-connected MoE: its input is the
/// first sublayer's `post_attention_layernorm`, its output is added with the
/// second sublayer's MLP). The block before leaves that stream in the pass's
/// `BlockCarry` (`TransformerBlock.leavesMLPInput`); where that block is
/// dropped, nothing was left and the shortcut reads this block's input,
/// which is then the stream the dropped block received.
public struct ShortcutBranch: Sendable {
    public let inputNorm: Normalization
    public let feedForward: FeedForward

    public init(inputNorm: Normalization, feedForward: FeedForward) {
        self.inputNorm = inputNorm
        self.feedForward = feedForward
    }

    /// The output for stream `x` (the one its norm reads).
    public func callAsFunction(_ x: Matrix, sequences: [Range<Int>]? = nil) -> Matrix {
        feedForward(inputNorm(x), sequences: sequences)
    }
}

/// What blocks of one forward pass (or one decoding step) leave for the
/// next block: the stream a block's MLP branch read, where the next block's
/// `ShortcutBranch` reads it (one per pass, taken by the reader); and the
/// router state the last MLP that ran left for the next one's router
/// (ZAYA's, `CarriedRouterMixture`: a dropped MLP leaves it as it was).
/// A decoder's carry also hands its token-shifted MLPs the rows they keep
/// from one step to the next (RWKV's channel mixing, `shiftedRows`).
public final class BlockCarry: @unchecked Sendable {
    private var streams: [Int: Matrix] = [:]
    /// The last router's state [rows, router width]; nil before any.
    var routerState: Matrix?
    /// The decoder's rows before this step's token, by layer; nil in a
    /// forward pass over whole sequences.
    let shiftedRows: TokenShiftRows?

    public init(shiftedRows: TokenShiftRows? = nil) { self.shiftedRows = shiftedRows }

    func leave(_ stream: Matrix, from index: Int) { streams[index] = stream }

    func take(from index: Int) -> Matrix? { streams.removeValue(forKey: index) }
}

/// How a branch's output joins the residual stream where it is not their
/// sum x + out.
public enum ResidualJoin: Sendable {
    /// The stream moves towards the output from its normalised self,
    /// n + rate ⊙ (out − n), n = the branch's inputNorm(x) (Dory's nGPT
    /// residual with the learned rates |λ|) [hidden].
    case interpolating(rate: [Float])
    /// Ergo's per-channel gate.
    case gated(ResidualGate)
    /// The stream times a learned scale per channel, plus the output:
    /// scale ⊙ x + out (Doge's `input_residual`, `post_attention_residual`) [hidden].
    case scalingStream(scale: [Float])
    /// Hunyuan V4's hyper-connections: the branch reads the streams
    /// collapsed and its output joins each through a gate (`HyperConnection`).
    case hyperConnected(HyperConnection)
    /// ZAYA's residual scaling: (out + b_o) ⊙ s_o + (x + b_x) ⊙ s_x (`ResidualScaling`).
    case affine(ResidualScaling)
    /// Qwen4-Exp's gated residuals: the branch reads the streams normalised,
    /// gated and averaged; its output joins each through a weight (`GatedResidual`).
    case gatedResidual(GatedResidual)
    /// The branch's normalised input and its output, each times a constant:
    /// stream · n + output · out, n = the branch's inputNorm(x), each product
    /// rounded to Float32 before the sum (MiniMax's layers, whose residual is
    /// the normed stream, scaled by `*_alpha_factor` / `*_beta_factor`).
    case scalingNormalized(stream: Float, output: Float)
    /// The stream and the output, each times a constant: stream · x +
    /// output · out, each product rounded to Float32 before the sum (Beam's
    /// depth-scaled residual add).
    case scaling(stream: Float, output: Float)
    /// Gemma 3n's LAuReL beside the attention: ((x + out) + laurel(n)) / √2,
    /// n = the branch's inputNorm(x) (`LearnedAugmentedResidual`).
    case learnedAugmented(LearnedAugmentedResidual)

    /// What of residual stream `x` the branch reads (before its input norm):
    /// the collapsed streams of a hyper-connection, else `x`.
    public func read(_ x: Matrix) -> Matrix {
        switch self {
        case .hyperConnected(let connection): return connection.collapsed(x)
        case .gatedResidual(let residual): return residual.collapsed(x)
        default: return x
        }
    }
}

/// A learned per-channel mix of a branch's output and the stream it joins,
/// branchScale ⊙ out + residualScale ⊙ stream (Muse Spark's gate:
/// `MuseModel.residualGate`). Ergo's `ErgoResidualGate`: with w the gate's weight, the stream becomes
///
///     σ(w) ⊙ out + √(1 + σ(w)) · e^(−softplus(w) / 2) ⊙ stream
///
/// in Float32, each product rounded on its own as torch computes it.
public struct ResidualGate: Sendable {
    /// σ(w), per channel.
    public let branchScale: [Float]
    /// √(1 + σ(w)) · exp(−0.5 · softplus(w)), per channel.
    public let residualScale: [Float]

    /// A gate of its two per-channel scales (each [hidden]).
    public init(branchScale: [Float], residualScale: [Float]) {
        precondition(branchScale.count == residualScale.count)
        self.branchScale = branchScale
        self.residualScale = residualScale
    }

    /// The gate of weight `weight` [hidden]; softplus as torch's (beta 1,
    /// the input itself above 20).
    public init(weight: [Float]) {
        branchScale = weight.map { 1 / (1 + exp(-$0)) }
        residualScale = zip(weight, branchScale).map { w, gate in
            let softplus = w > 20 ? w : log1p(exp(w))
            return (1 + gate).squareRoot() * exp(-0.5 * softplus)
        }
    }

    /// The stream after `output` joins `stream` [rows, hidden].
    public func join(_ stream: Matrix, _ output: Matrix) -> Matrix {
        precondition(stream.rows == output.rows && stream.cols == output.cols && stream.cols == branchScale.count)
        let width = stream.cols
        var result = stream
        result.data.withUnsafeMutableBufferPointer { values in
            output.data.withUnsafeBufferPointer { out in
                branchScale.withUnsafeBufferPointer { a in
                    residualScale.withUnsafeBufferPointer { b in
                        for r in 0..<stream.rows {
                            let base = r * width
                            for j in 0..<width {
                                let branch = a[j] * out[base + j], kept = b[j] * values[base + j]
                                values[base + j] = branch + kept
                            }
                        }
                    }
                }
            }
        }
        return result
    }
}

extension Matrix {
    /// scale ⊙ self + output per row (`ResidualJoin.scalingStream`), each
    /// product rounded to Float32 before the sum, as torch forms it.
    func scaledPerChannel(_ scale: [Float], plus output: Matrix) -> Matrix {
        precondition(output.rows == rows && output.cols == cols && scale.count == cols)
        var result = self
        let cols = self.cols
        result.data.withUnsafeMutableBufferPointer { values in
            output.data.withUnsafeBufferPointer { out in
                for i in values.indices {
                    let kept = scale[i % cols] * values[i]
                    values[i] = kept + out[i]
                }
            }
        }
        return result
    }

    /// n + rate ⊙ (self − n) per row, n = `norm(stream)` (`ResidualJoin.interpolating`),
    /// in float32 steps as torch forms it.
    func interpolated(from stream: Matrix, norm: Normalization?, rate: [Float]) -> Matrix {
        var base = norm.map { $0(stream) } ?? stream
        precondition(base.rows == rows && base.cols == cols && rate.count == cols)
        let cols = self.cols
        data.withUnsafeBufferPointer { out in
            base.data.withUnsafeMutableBufferPointer { values in
                for i in values.indices { values[i] += rate[i % cols] * (out[i] - values[i]) }
            }
        }
        return base
    }

    /// Every element times `factor` (Float32 products, as torch's
    /// `tensor * float` in float32); self when there is none.
    func scaled(by factor: Float?) -> Matrix {
        guard let factor else { return self }
        var result = self
        result.data.withUnsafeMutableBufferPointer { values in
            for i in values.indices { values[i] *= factor }
        }
        return result
    }
}

/// A transformer block as droptrace sees it: two residual branches, either
/// of which may be dropped (nil).
public struct TransformerBlock: Sendable {
    public let attention: AttentionBranch?
    public let mlp: MLPBranch?
    public let residual: ResidualStyle
    /// Multiplies the stream leaving the block, after both branches joined
    /// it (Gemma 4's `layer_scalar`). The block's own, not a branch's: a
    /// dropped attention or MLP keeps it, a dropped block loses it; the MLP's
    /// score compares the stream before it (`BlockActivations.mlpResidual`).
    public let outputScale: Float?
    /// Adds the layer's per-layer input to the stream after both branches,
    /// before `outputScale` (Gemma 4's PLE). The block's own, as the scale.
    public let perLayerInput: PerLayerInputBranch?
    /// Where the attention is dropped but later layers reuse its keys and
    /// values (Gemma 4's key/value sharing) or its indexer's key selection
    /// (GLM-5's shared indexer layers): its input norm and a store-only
    /// attention (`AttentionSharing.storeOnly`), run on the block's input
    /// for those alone; nothing joins the stream.
    public let sharingProducer: AttentionBranch?
    /// The block leaves the stream its MLP branch reads (after the
    /// attention, or its input where the attention is dropped) in the
    /// pass's `BlockCarry`, for the next block's `ShortcutBranch`, whether
    /// or not its own MLP runs (LongCat-Flash's first sublayers).
    public let leavesMLPInput: Bool
    /// The layer's MLP module where it is a token mixer, in `mlp`'s place
    /// (Zamba2's hybrid layers: their Mamba-2 decoder layer): the attention
    /// branch's output joins only the stream this mixer reads, whose output
    /// joins the block's input, y = x + mixer(x + attn(x)); its module is
    /// x → x + mixer(…), so dropping it leaves the block's input and
    /// dropping the attention leaves the mixer reading x. nil for none, or
    /// where it is dropped (`attentionFeedsMixer` then still holds).
    public let mixerAfterAttention: AttentionBranch?
    /// The attention's output joins only the stream `mixerAfterAttention`
    /// reads: where that mixer is dropped, the block leaves its input.
    public let attentionFeedsMixer: Bool
    /// Where the stream is Gemma 3n's AltUp streams: the block predicts
    /// them, runs its branches on the active prediction, corrects them by
    /// the result and adds its `perLayerInput` to the streams from 1 on
    /// (`AltUp`). The prediction, correction and per-layer input belong to
    /// the block: dropping the attention or the MLP keeps them, dropping the
    /// block leaves the streams as they were.
    public let altUp: AltUp?
    /// Adds the layer's n-gram embedding branch to the stream as the block
    /// begins, before the attention reads it (Qwen4-Exp's PLE,
    /// `PerLayerNGramBranch`). The block's own: dropping the attention or
    /// the MLP keeps it, dropping the block leaves the stream as it was; the
    /// attention is scored from the stream after it (`BlockActivations.branchInput`).
    public var entryBranch: PerLayerNGramBranch? = nil

    public init(
        attention: AttentionBranch?, mlp: MLPBranch?, residual: ResidualStyle, outputScale: Float? = nil,
        perLayerInput: PerLayerInputBranch? = nil, sharingProducer: AttentionBranch? = nil, leavesMLPInput: Bool = false,
        mixerAfterAttention: AttentionBranch? = nil, attentionFeedsMixer: Bool = false, altUp: AltUp? = nil
    ) {
        precondition(mixerAfterAttention == nil || attentionFeedsMixer)
        precondition(
            !attentionFeedsMixer
                || (mlp == nil && residual == .sequential && outputScale == nil && perLayerInput == nil && sharingProducer == nil
                    && !leavesMLPInput && attention?.residualNorm == nil && attention?.join == nil
                    && mixerAfterAttention?.residualNorm == nil && mixerAfterAttention?.join == nil))
        precondition(altUp == nil || (residual == .sequential && outputScale == nil && !leavesMLPInput && mlp?.shortcut == nil))
        precondition(sharingProducer == nil || (attention == nil && sharingProducer!.attention?.storesOnly == true))
        precondition(residual == .sequential || (!leavesMLPInput && mlp?.shortcut == nil))
        precondition(outputScale == nil && perLayerInput == nil || (!leavesMLPInput && mlp?.shortcut == nil))
        // A parallel block adds both branches to one x: no stream exists between them to normalise or mix.
        precondition(residual == .sequential || (attention?.residualNorm == nil && mlp?.residualNorm == nil))
        precondition(residual == .sequential || (attention?.join == nil && mlp?.join == nil))
        self.attention = attention
        self.mlp = mlp
        self.residual = residual
        self.outputScale = outputScale
        self.perLayerInput = perLayerInput
        self.sharingProducer = sharingProducer
        self.leavesMLPInput = leavesMLPInput
        self.mixerAfterAttention = mixerAfterAttention
        self.attentionFeedsMixer = attentionFeedsMixer
        self.altUp = altUp
    }

    /// The same block without the branches `plan` drops at `index`, with
    /// its attention storing or reusing keys and values or a key selection
    /// as `sharing` (the dropped model's, `LanguageModel.attentionSharing`)
    /// says: a dropped attention whose keys and values or selection later
    /// layers reuse stays as their producer (`.storeOnly`), and only then.
    /// An attention the block already lacks (its model's configured drops:
    /// nil, or only its producer) stays dropped.
    public func dropping(_ plan: DropPlan, at index: Int, sharing: LayerSharing = LayerSharing()) -> TransformerBlock {
        let dropsAttention = plan.dropsAttention(index) || attention == nil, dropsMLP = plan.dropsMLP(index)
        guard !sharing.isEmpty, let branch = attention ?? sharingProducer, case .attention(let attention) = branch.mixer else {
            var block = TransformerBlock(
                attention: dropsAttention ? nil : self.attention, mlp: dropsMLP ? nil : mlp, residual: residual,
                outputScale: outputScale, perLayerInput: perLayerInput, sharingProducer: sharingProducer, leavesMLPInput: leavesMLPInput,
                mixerAfterAttention: dropsMLP ? nil : mixerAfterAttention, attentionFeedsMixer: attentionFeedsMixer,
                altUp: altUp)
            block.entryBranch = entryBranch
            return block
        }
        // A producer's projection may make only what it stores: it is not re-applied to another sharing.
        let shared = dropsAttention && !sharing.storesOnly(layer: index) ? nil : branch.withAttention(sharing.applied(to: attention, layer: index))
        var block = TransformerBlock(
            attention: dropsAttention ? nil : shared, mlp: dropsMLP ? nil : mlp, residual: residual, outputScale: outputScale,
            perLayerInput: perLayerInput, sharingProducer: dropsAttention ? shared : nil,
            leavesMLPInput: leavesMLPInput, mixerAfterAttention: dropsMLP ? nil : mixerAfterAttention, attentionFeedsMixer: attentionFeedsMixer, altUp: altUp)
        block.entryBranch = entryBranch
        return block
    }
}

extension AttentionBranch {
    /// The branch with its softmax attention replaced by `attention`.
    public func withAttention(_ attention: SelfAttention) -> AttentionBranch {
        AttentionBranch(
            inputNorm: inputNorm, attention: attention, outputNorm: outputNorm, outputScale: outputScale, residualNorm: residualNorm,
            join: join, appendsLayerInput: appendsLayerInput, feedForward: feedForward)
    }
}

/// The residual stream around one block, as the forward pass saw it.
public struct BlockActivations {
    public let index: Int
    /// X, entering the block.
    public let input: Matrix
    /// The stream the block's branches run on where it is not X (Gemma 3n's
    /// active AltUp prediction, `TransformerBlock.altUp`): the attention's
    /// input; nil elsewhere.
    public var branchInput: Matrix? = nil
    /// X + Attn(Norm1 X) (post-LN: Norm1(X + Attn X)), or nil when attention is dropped.
    public let attentionResidual: Matrix?
    /// What the MLP branch reads: H in a sequential block, X in a parallel one.
    public let mlpInput: Matrix
    /// mlpInput + MLP(Norm2 mlpInput) (post-LN: Norm2(mlpInput + MLP mlpInput)),
    /// or nil when the MLP is dropped.
    public let mlpResidual: Matrix?
    /// Y, leaving the block.
    public let output: Matrix
    /// The block is dropped: output is input.
    public let isDropped: Bool
    /// Which of the layer's passes this is, of how many (`LayerLoop`; 0 of 1
    /// for a layer that runs once).
    public internal(set) var pass = 0
    public internal(set) var passes = 1

    /// A dropped block: every state is `x`.
    static func dropped(_ index: Int, _ x: Matrix) -> BlockActivations {
        BlockActivations(index: index, input: x, attentionResidual: nil, mlpInput: x, mlpResidual: nil, output: x, isDropped: true)
    }
}

extension TransformerBlock {
    /// Block `index` applied to residual stream `x`: the one place the
    /// residual recipe is written, for scoring, the drop-aware forward and
    /// the key/value-cache decoder alike (`attend` is how each computes the
    /// token mixing of a normalised input). `perLayerInput`: the rows'
    /// inputs to this layer [rows, width] where the block takes them
    /// (`LanguageModel.perLayerEmbedding`). `sequences`: the sequences of
    /// `x`'s rows, nil for one (a decoder's prefill or step). `carry`: what
    /// the pass's blocks leave for the next (`BlockCarry`), one per pass;
    /// needed where a block leaves or reads one. `tokenIDs`: the rows'
    /// tokens, for MLPs routed by them (DeepSeek-V4's hash routing) and the
    /// entry branch. `enter`: how the entry branch (`entryBranch`) is run
    /// on the stream where it is stateful (a decoder's prefill or step), nil
    /// for the forward pass over whole sequences.
    public func callAsFunction(
        _ x: Matrix, index: Int, perLayerInput input: Matrix? = nil, sequences: [Range<Int>]? = nil, tokenIDs: [Int]? = nil,
        carry: BlockCarry? = nil, enter: ((PerLayerNGramBranch, Matrix) -> Matrix)? = nil, attend: (TokenMixer, Matrix) -> Matrix
    ) -> BlockActivations {
        precondition(
            carry != nil || (!leavesMLPInput && mlp?.shortcut == nil && mlp?.feedForward.carriesRouterState != true),
            "block \(index) passes a stream or router state on: give the pass's BlockCarry")
        /// The stream leaving the block, from the stream after both branches.
        func leaving(_ stream: Matrix) -> Matrix {
            guard let perLayerInput else { return stream.scaled(by: outputScale) }
            return stream.adding(perLayerInput(stream, input: input!)).scaled(by: outputScale)
        }
        /// The stream once a branch's output joins it: the sum (or the
        /// branch's `ResidualJoin`), normalised where the branch's norm
        /// follows the add (post-LN).
        func joined(_ stream: Matrix, _ output: Matrix, _ residualNorm: Normalization?, _ join: ResidualJoin?, inputNorm: Normalization?) -> Matrix {
            let sum: Matrix
            switch join {
            case .interpolating(let rate)?: return output.interpolated(from: stream, norm: inputNorm, rate: rate)
            case .gated(let gate)?: sum = gate.join(stream, output)
            case .hyperConnected(let connection)?: sum = connection.join(stream, output)
            case .gatedResidual(let residual)?: sum = residual.join(stream, output)
            case .scalingStream(let scale)?: sum = stream.scaledPerChannel(scale, plus: output)
            case .affine(let scaling)?: sum = scaling.join(stream, output)
            case .learnedAugmented(let laurel)?: sum = laurel.join(stream, output, normed: inputNorm.map { $0(stream) } ?? stream)
            case .scalingNormalized(let kept, let added)?:
                sum = (inputNorm.map { $0(stream) } ?? stream).scaled(by: kept).adding(output.scaled(by: added))
            case .scaling(let kept, let added)?: sum = stream.scaled(by: kept).adding(output.scaled(by: added))
            case nil: sum = stream.adding(output)
            }
            return residualNorm.map { $0(sum) } ?? sum
        }
        if let altUp {
            // The branches run on the active prediction; the streams leave corrected by their result.
            let predictions = altUp.predict(x)
            let active = predictions.stream(altUp.active, width: altUp.width)
            if let producer = sharingProducer { _ = attend(producer.mixer, producer.input(active)) }
            let h = attention.map { joined(active, $0(active, attend: attend), $0.residualNorm, $0.join, inputNorm: $0.inputNorm) }
            let y = mlp.map { branch in
                joined(h ?? active, branch(h ?? active, sequences: sequences, carry: carry), branch.residualNorm, branch.join, inputNorm: branch.inputNorm)
            }
            let corrected = altUp.correct(predictions, activated: y ?? h ?? active)
            var activations = BlockActivations(
                index: index, input: x, attentionResidual: h, mlpInput: h ?? active, mlpResidual: y,
                output: perLayerInput.map { altUp.addingPerLayerInput(corrected, branch: $0, input: input!) } ?? corrected, isDropped: false)
            activations.branchInput = active
            return activations
        }
        if let entryBranch {
            // The block's n-gram branch joins first; the branches run on (and are scored from) what it leaves.
            precondition(residual == .sequential && altUp == nil && !attentionFeedsMixer, "an entry branch runs in plain sequential blocks")
            let entered = enter?(entryBranch, x) ?? entryBranch(x, tokenIDs: tokenIDs!, sequences: sequences ?? [0..<x.rows])
            let h = attention.map { joined(entered, $0(entered, attend: attend), $0.residualNorm, $0.join, inputNorm: $0.inputNorm) } ?? entered
            let y = mlp.map { branch in
                joined(h, branch(h, sequences: sequences, tokenIDs: tokenIDs, carry: carry), branch.residualNorm, branch.join, inputNorm: branch.inputNorm)
            }
            var activations = BlockActivations(
                index: index, input: x, attentionResidual: attention == nil ? nil : h, mlpInput: h, mlpResidual: y,
                output: leaving(y ?? h), isDropped: false)
            activations.branchInput = entered
            return activations
        }
        if let producer = sharingProducer { _ = attend(producer.mixer, producer.input(x)) }
        let attended = attention.map {
            joined(x, $0(x, layerInput: $0.appendsLayerInput ? input : nil, attend: attend), $0.residualNorm, $0.join, inputNorm: $0.inputNorm)
        }
        if attentionFeedsMixer {
            let y = mixerAfterAttention.map { mixer in
                x.adding(mixer(attended ?? x, layerInput: mixer.appendsLayerInput ? input : nil, attend: attend))
            }
            return BlockActivations(
                index: index, input: x, attentionResidual: attended, mlpInput: x, mlpResidual: y, output: y ?? x, isDropped: false)
        }
        switch residual {
        case .sequential:
            let h = attended ?? x
            if leavesMLPInput { carry!.leave(h, from: index) }
            let y = mlp.map { branch in
                let y = joined(h, branch(h, sequences: sequences, tokenIDs: tokenIDs, carry: carry), branch.residualNorm, branch.join, inputNorm: branch.inputNorm)
                // The shortcut joins after the branch's own output, (h + out) + shortcut, as LongCat-Flash adds them.
                guard let shortcut = branch.shortcut else { return y }
                return y.adding(shortcut(carry!.take(from: index - 1) ?? x, sequences: sequences))
            }
            return BlockActivations(
                index: index, input: x, attentionResidual: attended, mlpInput: h, mlpResidual: y,
                output: leaving(y ?? h), isDropped: false)
        case .parallel:
            let mlpOut = mlp.map { $0(x, sequences: sequences, tokenIDs: tokenIDs, carry: carry) }
            let base = attended ?? x
            return BlockActivations(
                index: index, input: x, attentionResidual: attended, mlpInput: x, mlpResidual: mlpOut.map { x.adding($0) },
                output: leaving(mlpOut.map { base.adding($0) } ?? base), isDropped: false)
        }
    }
}

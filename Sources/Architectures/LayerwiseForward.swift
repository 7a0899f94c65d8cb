import DroptraceSupport
import TensorEngine

/// Runs a model block by block over all tokens of a batch, with the modules
/// of `plan` dropped. At most two blocks' weights are expanded at a time:
/// the one computing and the next one, expanded on a background thread
/// meanwhile (`BlockPrefetch`) so the matrix products do not wait for the
/// checkpoint.
public struct LayerwiseForward {
    public let model: any LanguageModel
    public let plan: DropPlan
    /// Whether the next block is expanded while the current one computes.
    /// Results are identical either way.
    public var prefetch: Bool

    public init(model: any LanguageModel, plan: DropPlan = .none, prefetch: Bool = true) {
        self.model = model
        self.plan = plan
        self.prefetch = prefetch
    }

    /// The final hidden state (before the final norm); `observe` sees every
    /// block. An error expanding a block is thrown when the pass reaches that
    /// block, as without prefetching; when `observe` (or anything else)
    /// throws, the expansion under way is waited for before the error
    /// propagates, so no work outlives the call.
    /// A layer the model runs more than once (`LanguageModel.layerLoop`) is
    /// observed on each pass (`BlockActivations.pass`), a dropped one too.
    @discardableResult
    public func run(_ batch: TokenBatch, observe: (BlockActivations) throws -> Void = { _ in }) throws -> Matrix {
        var pending: BlockPrefetch?
        defer { pending?.wait() }
        var x = try model.embed(batch)
        // Kept only where the blocks read per-layer inputs built from it.
        let perLayer = model.perLayerEmbedding.map { (embedding: $0, embedded: x) }
        let shared = SharedAttentionState()
        let carry = BlockCarry()
        let drops = plan.union(model.configuredDrops)
        let steps = model.layerSteps
        var entries = model.layerLoop.map(LayerLoop.Entries.init)
        // The layers each step runs, to prefetch the next kept one.
        let kept: [Int?] = steps.map { step in
            guard case .layer(let index, _) = step, !plan.blocks.contains(index), !model.lacksBothModules(index) else { return nil }
            return index
        }
        for (position, step) in steps.enumerated() {
            guard case .layer(let index, let pass) = step else {
                if case .entry(let pass) = step { x = entries!.enter(x, pass: pass) }
                continue
            }
            let passes = model.passes(of: index)
            // A layer without either module (Mllama's cross-attention layers,
            // which transformers skips on text) is the identity: never scored.
            if plan.blocks.contains(index) || model.lacksBothModules(index) {
                var dropped = BlockActivations.dropped(index, x)
                (dropped.pass, dropped.passes) = (pass, passes)
                try observe(dropped)
                continue
            }
            let block: TransformerBlock
            if let expanding = pending, expanding.index == index {
                pending = nil
                block = try expanding.block()
            } else {
                block = try model.block(index, skipping: plan)
            }
            if !drops.dropsAttention(index), !drops.dropsMLP(index) {
                try model.checkpoint.requireLayerRead(model.layerNaming.prefix + "\(index).")
            }
            if prefetch, let following = kept[(position + 1)...].lazy.compactMap({ $0 }).first {
                pending = BlockPrefetch(model, index: following, skipping: plan)
            }
            let input = try perLayer.map { try $0.embedding.input(layer: index, tokenIDs: batch.tokenIDs, embedded: $0.embedded) }
            var activations = block(x, index: index, perLayerInput: input, sequences: batch.sequences, tokenIDs: batch.tokenIDs, carry: carry) { mixer, input in
                mixer(input, batch, shared: shared)
            }
            (activations.pass, activations.passes) = (pass, passes)
            try observe(activations)
            x = activations.output
        }
        return x
    }
}

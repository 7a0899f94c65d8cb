import DroptraceSupport
import TensorEngine

/// Runs a model block by block over all tokens of a batch, expanding one
/// block's weights at a time, with the modules of `plan` dropped.
public struct LayerwiseForward {
    public let model: any LanguageModel
    public let plan: DropPlan

    public init(model: any LanguageModel, plan: DropPlan = .none) {
        self.model = model
        self.plan = plan
    }

    /// The final hidden state (before the final norm); `observe` sees every block.
    @discardableResult
    public func run(_ batch: TokenBatch, observe: (BlockActivations) throws -> Void = { _ in }) throws -> Matrix {
        var x = try model.embed(batch)
        for index in 0..<model.layerCount {
            if plan.blocks.contains(index) {
                try observe(.dropped(index, x))
                continue
            }
            let block = try model.block(index, skipping: plan)
            let activations = block(x, index: index) { attention, input in attention(input, batch) }
            try observe(activations)
            x = activations.output
        }
        return x
    }
}

import DroptraceSupport
import TensorEngine

/// The residual stream around one block, as the forward pass saw it.
public struct BlockActivations {
    public let index: Int
    /// X, entering the block.
    public let input: Matrix
    /// X + Attn(Norm1 X), or nil when attention is dropped.
    public let attentionResidual: Matrix?
    /// What the MLP branch reads: H in a sequential block, X in a parallel one.
    public let mlpInput: Matrix
    /// mlpInput + MLP(Norm2 mlpInput), or nil when the MLP is dropped.
    public let mlpResidual: Matrix?
    /// Y, leaving the block.
    public let output: Matrix
    /// The block is dropped: output is input.
    public let isDropped: Bool
}

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
                try observe(BlockActivations(
                    index: index, input: x, attentionResidual: nil, mlpInput: x, mlpResidual: nil, output: x, isDropped: true))
                continue
            }
            let block = try model.block(index, skipping: plan)
            let attended = block.attention.map { x.adding($0(x, batch)) }
            let activations: BlockActivations
            switch block.residual {
            case .sequential:
                let h = attended ?? x
                let y = block.mlp.map { h.adding($0(h)) } ?? h
                activations = BlockActivations(
                    index: index, input: x, attentionResidual: attended, mlpInput: h,
                    mlpResidual: block.mlp == nil ? nil : y, output: y, isDropped: false)
            case .parallel:
                let mlpOut = block.mlp.map { $0(x) }
                let y = mlpOut.map { (attended ?? x).adding($0) } ?? (attended ?? x)
                activations = BlockActivations(
                    index: index, input: x, attentionResidual: attended, mlpInput: x,
                    mlpResidual: mlpOut.map { x.adding($0) }, output: y, isDropped: false)
            }
            try observe(activations)
            x = activations.output
        }
        return x
    }
}

import Dispatch
import TensorEngine

/// One block's weights being expanded on a background thread
/// (`LanguageModel.block(_:skipping:)`: reading the checkpoint, converting
/// to Float32 and whatever layout the matrix kernels want), so that the
/// expansion overlaps the computation of the block before it.
///
/// The expansion cannot be interrupted; `wait()` joins it. Its error is kept
/// and thrown by `block()`, when the forward pass reaches the block, so it
/// reads exactly as if the block had been expanded then.
final class BlockPrefetch: @unchecked Sendable {
    let index: Int
    private let finished = DispatchGroup()
    /// Written once on the background thread before `finished` is left, read
    /// only after waiting on it.
    private var result: Result<TransformerBlock, any Error> = .failure(CancellationError())

    /// Starts expanding block `index` of `model` with `plan`'s modules left out.
    init(_ model: any LanguageModel, index: Int, skipping plan: DropPlan) {
        self.index = index
        // The arithmetic the layers are created in, as on the calling thread
        // (tests force it per thread with MatrixKernels.withArithmetic).
        let arithmetic = MatrixArithmetic.current
        finished.enter()
        DispatchQueue.global().async { [self] in
            result = Result { try MatrixKernels.withArithmetic(arithmetic) { try model.block(index, skipping: plan) } }
            finished.leave()
        }
    }

    /// Blocks until the expansion has finished.
    func wait() {
        finished.wait()
    }

    /// The expanded block, once ready; throws what the expansion threw.
    func block() throws -> TransformerBlock {
        wait()
        return try result.get()
    }
}

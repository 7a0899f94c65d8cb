import CheckpointIO
import Dispatch
import TensorEngine

/// The next block made ready on a background thread while the block before
/// it computes, so that the matrix products do not wait for the checkpoint.
///
/// When every tensor of the block is stored in a file as F32, F16 or BF16,
/// the background thread only reads the stored bytes (into the page cache),
/// and the block is expanded when it is reached: converting to Float32 costs
/// little next to a block's products, and the weights of two blocks are
/// never expanded at once (176 MB on a 1.1B model, its expansion otherwise
/// overlapping the current block's activations). Other blocks (dequantised
/// GGUF, FP8, MXFP4 weights, whose expansion is costly) are expanded on the
/// background thread (`LanguageModel.block(_:skipping:)`).
///
/// The work cannot be interrupted; `wait()` joins it. An expansion's error
/// is kept and thrown by `block()`, when the forward pass reaches the block,
/// so it reads exactly as if the block had been expanded then.
final class BlockPrefetch: @unchecked Sendable {
    let index: Int
    private let model: any LanguageModel
    private let plan: DropPlan
    private let finished = DispatchGroup()
    /// Written once on the background thread before `finished` is left, read
    /// only after waiting on it; nil when only the bytes were read.
    private var result: Result<TransformerBlock, any Error>? = nil

    /// Whether the block is expanded on the background thread (else only its
    /// stored bytes are read there, and it is expanded when reached).
    let expandsInBackground: Bool

    /// Bytes read at a time when warming the page cache.
    static let warmPiece = 8 << 20

    /// Starts preparing block `index` of `model` with `plan`'s modules left out.
    init(_ model: any LanguageModel, index: Int, skipping plan: DropPlan) {
        self.index = index
        self.model = model
        self.plan = plan
        let tensors = Self.tensors(of: index, in: model)
        let warmOnly = !tensors.isEmpty && tensors.allSatisfy(\.isPlainFloatInFile)
        expandsInBackground = !warmOnly
        // The arithmetic the layers are created in, as on the calling thread
        // (tests force it per thread with MatrixKernels.withArithmetic).
        let arithmetic = MatrixArithmetic.current
        finished.enter()
        DispatchQueue.global().async { [self] in
            if warmOnly {
                let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.warmPiece, alignment: 64)
                tensors.forEach { $0.warm(scratch: scratch) }
                scratch.deallocate()
            } else {
                result = Result { try MatrixKernels.withArithmetic(arithmetic) { try model.block(index, skipping: plan) } }
            }
            finished.leave()
        }
    }

    /// The checkpoint's tensors of layer `index` (by the model's layer
    /// naming), as stored; empty when one of them cannot be read as stored.
    private static func tensors(of index: Int, in model: any LanguageModel) -> [TensorSlice] {
        let naming = model.layerNaming
        return model.checkpoint.storedSlices { naming.split($0)?.layer == index } ?? []
    }

    /// Blocks until the background work has finished.
    func wait() {
        finished.wait()
    }

    /// The block, once ready (expanded here when only its bytes were read);
    /// throws what the expansion threw.
    func block() throws -> TransformerBlock {
        wait()
        guard let result else { return try model.block(index, skipping: plan) }
        return try result.get()
    }
}

import DroptraceSupport

/// A torch.save file (`pytorch_model.bin`) holding a state dict.
public final class TorchCheckpointFile: @unchecked Sendable {
    public let path: String
    public let tensors: [String: TensorSlice]

    public init(path: String) throws {
        throw DroptraceError("PyTorch .bin checkpoints are not supported yet", path: path)
    }
}

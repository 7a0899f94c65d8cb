import DroptraceSupport
import Foundation

/// Turns an unpickled torch.save object into droptrace's tensor map.
enum TorchStateDict {
    /// The (name, tensor) pairs of a state dict: the pickled dict itself.
    /// Entries that are not tensors (an epoch counter, say) are skipped. A
    /// training script's checkpoint with the state dict one level down (under
    /// "state_dict" or "model") is refused naming that key: transformers reads
    /// the top level only and would initialise every weight randomly.
    static func tensors(in root: PickleValue, path: String) throws -> [(name: String, tensor: TorchTensorRecord)] {
        guard case .dict(let dict) = root else {
            throw DroptraceError("holds \(root.kind), not a state dict (a dict of tensors)", path: path)
        }
        let found = try named(dict, path: path)
        guard found.isEmpty else { return found }
        for key in ["state_dict", "model"] {
            if case .dict(let nested) = dict.value(forKey: key), !(try named(nested, path: path)).isEmpty {
                throw DroptraceError(
                    "holds a training checkpoint with the state dict under \"\(key)\", where transformers finds no weights "
                        + "(it would initialise them all randomly); save that state dict itself (torch.save(checkpoint[\"\(key)\"], ...))",
                    path: path)
            }
        }
        throw DroptraceError("holds a dict without tensors, not a state dict", path: path)
    }

    /// The tensors of `dict` by name. A name given twice is refused, as a key
    /// given twice in config.json or GGUF metadata is: torch.save cannot
    /// write one (a Python dict holds each key once), and unpickling keeps
    /// the last value where droptrace read the first.
    private static func named(_ dict: PickleDict, path: String) throws -> [(name: String, tensor: TorchTensorRecord)] {
        var seen = Set<String>()
        for entry in dict.entries {
            guard case .string(let name) = entry.key else { continue }
            guard seen.insert(name).inserted else {
                throw DroptraceError("the state dict gives \"\(name.forErrorMessage)\" twice", path: path)
            }
        }
        return dict.entries.compactMap { entry in
            guard case .string(let name) = entry.key, case .tensor(let tensor) = entry.value else { return nil }
            return (name, tensor)
        }
    }

    /// A TensorSlice for `tensor` over its storage (bytes `storage` of `file`),
    /// or nil for element types droptrace does not read. Contiguous float
    /// tensors are read from the file when expanded; strided views and float64
    /// tensors are copied now into a buffer of their own (only the storage
    /// bytes they reach are read).
    static func slice(
        name: String, tensor: TorchTensorRecord, storage: TorchCheckpointFile.StorageRange, file: RegularFile
    ) throws -> TensorSlice? {
        let path = file.path
        let element = tensor.element
        let needed = try reach(tensor, name: name, path: path)
        let storageCount = storage.count / element.byteSize
        guard needed <= storageCount else {
            throw DroptraceError(
                "tensor '\(name.forErrorMessage)' (shape \(tensor.shape), offset \(tensor.offset)) reaches element \(needed) of a storage holding \(storageCount) \(element.name) elements",
                path: path)
        }
        let count = try elementCount(tensor, name: name, path: path)
        // An ordinary view (a transpose, a slice) never has more elements than
        // its storage; one that repeats elements (stride 0, overlapping strides)
        // would make the copy below unboundedly large.
        guard count <= storageCount else {
            throw DroptraceError(
                "tensor '\(name.forErrorMessage)' (shape \(tensor.shape), strides \(tensor.strides)) repeats elements of its storage; only ordinary tensors and views are supported",
                path: path)
        }
        if let dtype = element.tensorDType, isContiguous(tensor) {
            // Only a tensor with elements is bounded by its storage: torch
            // accepts any storage offset for an empty one, which reads nothing.
            let start = count == 0 ? storage.offset : storage.offset + tensor.offset * element.byteSize
            return TensorSlice(
                name: name, dtype: dtype, shape: tensor.shape, path: path, storage: .file(file, offset: start))
        }
        guard element.tensorDType != nil || element == .float64 else { return nil }
        // The storage elements the view reaches, read once.
        let reached = try file.bytes(needed * element.byteSize, at: storage.offset)
        let gathered = TensorBuffer(byteCount: count * element.byteSize)
        reached.withUnsafeBytes { bytes in
            if let base = bytes.baseAddress { gather(tensor, from: base, elementSize: element.byteSize, into: gathered.bytes) }
        }
        if let dtype = element.tensorDType {
            return TensorSlice(name: name, dtype: dtype, shape: tensor.shape, path: path, storage: .memory(gathered))
        }
        // float64 (rare: a buffer saved in double) becomes an owned float32 copy.
        let floats = TensorBuffer(byteCount: count * 4)
        for i in 0..<count {
            let value = gathered.bytes.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)
            floats.bytes.storeBytes(of: Float(value), toByteOffset: 4 * i, as: Float.self)
        }
        return TensorSlice(name: name, dtype: .float32, shape: tensor.shape, path: path, storage: .memory(floats))
    }

    /// The product of the sizes, refused when it overflows (even next to a zero size,
    /// since TensorSlice multiplies them all).
    private static func elementCount(_ tensor: TorchTensorRecord, name: String, path: String) throws -> Int {
        var count = 1
        for size in tensor.shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: max(size, 1))
            guard !overflow else { throw DroptraceError("tensor '\(name.forErrorMessage)' has an impossible shape \(tensor.shape)", path: path) }
            count = product
        }
        return tensor.shape.contains(0) ? 0 : count
    }

    /// One past the highest storage element the tensor touches (0 when empty).
    private static func reach(_ tensor: TorchTensorRecord, name: String, path: String) throws -> Int {
        if tensor.shape.contains(0) { return 0 }
        var last = tensor.offset
        for (size, stride) in zip(tensor.shape, tensor.strides) {
            let (step, overflow) = (size - 1).multipliedReportingOverflow(by: stride)
            let (sum, overflow2) = last.addingReportingOverflow(step)
            guard !overflow, !overflow2 else {
                throw DroptraceError("tensor '\(name.forErrorMessage)' has a size and stride that overflow", path: path)
            }
            last = sum
        }
        guard last < Int.max else {
            throw DroptraceError("tensor '\(name.forErrorMessage)' has a size and stride that overflow", path: path)
        }
        return last + 1
    }

    /// Row-major with no gaps (dimensions of size 1 may have any stride).
    static func isContiguous(_ tensor: TorchTensorRecord) -> Bool {
        var expected = 1
        for (size, stride) in zip(tensor.shape, tensor.strides).reversed() {
            if size != 1 && stride != expected { return false }
            expected *= size
        }
        return true
    }

    /// Copies a strided view element by element into row-major order.
    private static func gather(
        _ tensor: TorchTensorRecord, from base: UnsafeRawPointer, elementSize: Int, into destination: UnsafeMutableRawPointer
    ) {
        let count = tensor.shape.reduce(1, *)
        guard count > 0 else { return }
        let rank = tensor.shape.count
        var index = [Int](repeating: 0, count: rank)
        var source = tensor.offset
        for i in 0..<count {
            (destination + i * elementSize).copyMemory(from: base + source * elementSize, byteCount: elementSize)
            // Advance the multi-index like an odometer, last dimension fastest.
            var d = rank - 1
            while d >= 0 {
                index[d] += 1
                source += tensor.strides[d]
                if index[d] < tensor.shape[d] { break }
                source -= tensor.strides[d] * tensor.shape[d]
                index[d] = 0
                d -= 1
            }
        }
    }
}

/// Heap memory holding a tensor that could not be used in place.
final class TensorBuffer: @unchecked Sendable {
    let bytes: UnsafeMutableRawPointer

    init(byteCount: Int) {
        bytes = .allocate(byteCount: max(byteCount, 1), alignment: 64)
    }

    deinit { bytes.deallocate() }
}

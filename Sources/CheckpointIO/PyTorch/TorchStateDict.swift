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
        let found = named(dict)
        guard found.isEmpty else { return found }
        for key in ["state_dict", "model"] {
            if case .dict(let nested) = dict.value(forKey: key), !named(nested).isEmpty {
                throw DroptraceError(
                    "holds a training checkpoint with the state dict under \"\(key)\", where transformers finds no weights "
                        + "(it would initialise them all randomly); save that state dict itself (torch.save(checkpoint[\"\(key)\"], ...))",
                    path: path)
            }
        }
        throw DroptraceError("holds a dict without tensors, not a state dict", path: path)
    }

    /// The tensors of `dict` by name, as unpickling builds the dict: a name
    /// given twice (a crafted pickle: torch.save cannot write one) holds its
    /// last value at its first place, and names are told apart by their code
    /// points, as Python's str is (Swift's String equality would take
    /// canonically equivalent names for one).
    private static func named(_ dict: PickleDict) -> [(name: String, tensor: TorchTensorRecord)] {
        var order: [[Unicode.Scalar]] = []
        var last: [[Unicode.Scalar]: (name: String, value: PickleValue)] = [:]
        for entry in dict.entries {
            guard case .string(let name) = entry.key else { continue }
            let key = Array(name.unicodeScalars)
            if last.updateValue((name, entry.value), forKey: key) == nil { order.append(key) }
        }
        return order.compactMap { key in
            guard let (name, value) = last[key], case .tensor(let tensor) = value else { return nil }
            return (name, tensor)
        }
    }

    /// A TensorSlice for `tensor` over its storage (bytes `storage` of `file`),
    /// or nil for element types droptrace does not read. Contiguous float
    /// tensors are read from the file when expanded; strided views and float64
    /// tensors are copied now into a buffer of their own (only the storage
    /// bytes they reach are read); views that repeat storage elements are
    /// gathered, as Float32, each time they are expanded.
    /// - Throws: `DroptraceError` naming the file for a view reaching past
    ///   its storage or sizes whose product or reach overflows.
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
        // its storage; one that repeats elements (stride 0 from expand(),
        // overlapping strides) may have any number, which torch.load gives
        // (transformers then copies them into the parameter). Copying them
        // now would let a few stored bytes make the reader allocate whatever
        // the sizes multiply to; when expanded, the shape has been checked
        // against the config.
        if count > storageCount {
            guard element.tensorDType != nil || element == .float64 else { return nil }
            // Its Float32 values and the gathered copy must have a byte count.
            guard !count.multipliedReportingOverflow(by: max(element.byteSize, 4)).overflow else {
                throw DroptraceError("tensor '\(name.forErrorMessage)' has an impossible shape \(tensor.shape)", path: path)
            }
            return TensorSlice.computed(name: name, shape: tensor.shape, path: path) {
                let (dtype, values) = try gathered(tensor, count: count, reaching: needed, of: storage, in: file)
                var floats = [Float](repeating: 0, count: count)
                floats.withUnsafeMutableBufferPointer { expandToFloat32(values.bytes, dtype: dtype, count: count, into: $0.baseAddress!) }
                try file.checkUnchanged()
                return floats
            }
        }
        if let dtype = element.tensorDType, isContiguous(tensor) {
            // Only a tensor with elements is bounded by its storage: torch
            // accepts any storage offset for an empty one, which reads nothing.
            let start = count == 0 ? storage.offset : storage.offset + tensor.offset * element.byteSize
            return TensorSlice(
                name: name, dtype: dtype, shape: tensor.shape, path: path, storage: .file(file, offset: start))
        }
        guard element.tensorDType != nil || element == .float64 else { return nil }
        let (dtype, values) = try gathered(tensor, count: count, reaching: needed, of: storage, in: file)
        return TensorSlice(name: name, dtype: dtype, shape: tensor.shape, path: path, storage: .memory(values))
    }

    /// The `count` values of view `tensor` in row-major order, gathered from
    /// the `needed` elements of `storage` it reaches (read once), in its
    /// dtype; float64 (rare: a buffer saved in double) becomes float32.
    /// - Throws: `DroptraceError` when the storage bytes cannot be read.
    private static func gathered(
        _ tensor: TorchTensorRecord, count: Int, reaching needed: Int, of storage: TorchCheckpointFile.StorageRange, in file: RegularFile
    ) throws -> (dtype: TensorDType, values: TensorBuffer) {
        let element = tensor.element
        let reached = try file.bytes(needed * element.byteSize, at: storage.offset)
        let values = TensorBuffer(byteCount: count * element.byteSize)
        reached.withUnsafeBytes { bytes in
            if let base = bytes.baseAddress { gather(tensor, from: base, elementSize: element.byteSize, into: values.bytes) }
        }
        if let dtype = element.tensorDType { return (dtype, values) }
        let floats = TensorBuffer(byteCount: count * 4)
        for i in 0..<count {
            let value = values.bytes.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)
            floats.bytes.storeBytes(of: Float(value), toByteOffset: 4 * i, as: Float.self)
        }
        return (.float32, floats)
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

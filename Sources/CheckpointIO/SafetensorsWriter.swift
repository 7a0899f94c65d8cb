import DroptraceSupport
import Foundation

/// Writes `.safetensors` files (used when exporting dropped models).
public enum SafetensorsWriter {
    public struct Entry {
        public var name: String
        public var dtype: TensorDType
        public var shape: [Int]
        private var content: Content

        private enum Content {
            case bytes(Data)
            /// Read from the checkpoint when written, one tensor at a time.
            case stored(TensorSlice)
            /// Expanded to float32 when written.
            case expanded(TensorSlice)
            /// Computed when written (dequantised weights), one tensor at a time.
            case produced(() throws -> [Float])
            /// Stored bytes computed when written (a tensor's kept parts).
            case producedBytes(() throws -> Data)
        }

        public init(name: String, dtype: TensorDType, shape: [Int], bytes: Data) {
            precondition(bytes.count == dtype.byteCount(elements: shape.reduce(1, *)), "tensor \(name): byte count does not match shape")
            self.name = name
            self.dtype = dtype
            self.shape = shape
            content = .bytes(bytes)
        }

        /// An entry holding a slice's bytes as they are on disk, read when the
        /// entry is written (valid while the slice's checkpoint is unchanged).
        /// Tensors safetensors cannot hold as stored (GGUF's quantised or
        /// reordered ones) are written expanded to float32.
        public init(_ slice: TensorSlice, renamedTo name: String? = nil) {
            self.name = name ?? slice.name
            shape = slice.shape
            if slice.dtype.isBlockQuantized || slice.storedOrder != .asShaped {
                dtype = .float32
                content = .expanded(slice)
            } else {
                dtype = slice.dtype
                content = .stored(slice)
            }
        }

        /// A float32 tensor of `shape` computed only when the entry is written,
        /// so an export holds one such tensor in memory at a time; `values`
        /// must return shape's element count of values.
        public init(name: String, shape: [Int], producing values: @escaping () throws -> [Float]) {
            self.name = name
            self.dtype = .float32
            self.shape = shape
            content = .produced(values)
        }

        /// A tensor of `dtype` and `shape` whose bytes `bytes` returns only
        /// when the entry is written (they must be the shape's byte count).
        public init(name: String, dtype: TensorDType, shape: [Int], producingBytes bytes: @escaping () throws -> Data) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            content = .producedBytes(bytes)
        }

        /// Bytes the tensor takes in the file.
        public var byteCount: Int { dtype.byteCount(elements: shape.reduce(1, *)) }

        /// The tensor's bytes as written; throws when its checkpoint cannot be read.
        public func bytes() throws -> Data {
            switch content {
            case .bytes(let data): data
            case .stored(let slice): try slice.storedBytes()
            case .expanded(let slice): try slice.floats().withUnsafeBytes { Data($0) }
            case .produced(let values): try producedBytes(values())
            case .producedBytes(let bytes): try checkedCount(bytes())
            }
        }

        private func producedBytes(_ values: [Float]) throws -> Data {
            try checkedCount(values.withUnsafeBytes { Data($0) })
        }

        private func checkedCount(_ data: Data) throws -> Data {
            guard data.count == byteCount else {
                throw DroptraceError("tensor '\(name)' of shape \(shape) was given \(data.count) bytes", path: name)
            }
            return data
        }
    }

    /// Writes a file, one tensor's bytes in memory at a time, through a
    /// temporary file renamed over `url` (`AtomicFileReplacement`): entries
    /// may read the file being replaced, and a failed write leaves it as it was.
    /// - Throws: `DroptraceError` naming `url` and why.
    public static func write(_ entries: [Entry], to url: URL, metadata: [String: String] = ["format": "pt"]) throws {
        let sorted = entries.sorted { $0.name < $1.name }
        let header = try header(sorted, metadata: metadata)
        try AtomicFileReplacement.replace(url.path, signatures: nil) { temporary in
            let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else { throw DroptraceError("cannot create: \(SystemError.describe())", path: temporary) }
            let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
            defer { try? handle.close() }
            do {
                try handle.write(contentsOf: header)
                for entry in sorted { try handle.write(contentsOf: try entry.bytes()) }
            } catch let error as DroptraceError {
                throw error
            } catch {
                throw DroptraceError("cannot write: \(SystemError.summary(of: error))", path: temporary)
            }
        }
    }

    /// The file's bytes: header (sorted by name, padded to 8 bytes) then data.
    public static func encode(_ entries: [Entry], metadata: [String: String] = ["format": "pt"]) throws -> Data {
        let sorted = entries.sorted { $0.name < $1.name }
        var file = try header(sorted, metadata: metadata)
        for entry in sorted { file.append(try entry.bytes()) }
        return file
    }

    /// The length prefix and JSON header for `sorted` entries.
    private static func header(_ sorted: [Entry], metadata: [String: String]) throws -> Data {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for entry in sorted {
            header[entry.name] = [
                "dtype": entry.dtype.rawValue, "shape": entry.shape, "data_offsets": [offset, offset + entry.byteCount],
            ] as [String: Any]
            offset += entry.byteCount
        }
        var headerBytes = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // The format recommends padding the header with spaces to 8-byte alignment.
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        var file = Data()
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(headerBytes)
        return file
    }
}

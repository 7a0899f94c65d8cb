import DroptraceSupport
import Foundation

/// Writes `.safetensors` files (used when exporting dropped models).
public enum SafetensorsWriter {
    public struct Entry {
        public var name: String
        public var dtype: TensorDType
        public var shape: [Int]
        public var bytes: Data
        /// The mapping (or buffer) `bytes` points into, kept alive as long as the entry lives.
        private var mapping: AnyObject?

        public init(name: String, dtype: TensorDType, shape: [Int], bytes: Data) {
            precondition(bytes.count == dtype.byteCount(elements: shape.reduce(1, *)), "tensor \(name): byte count does not match shape")
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }

        /// An entry holding a slice's bytes as they are on disk (not copied:
        /// valid while the slice's checkpoint is open). Tensors safetensors
        /// cannot hold as stored (GGUF's quantised or reordered ones) are
        /// written expanded to float32.
        public init(_ slice: TensorSlice, renamedTo name: String? = nil) {
            if slice.dtype.isBlockQuantized || slice.storedOrder != .asShaped {
                self.init(
                    name: name ?? slice.name, dtype: .float32, shape: slice.shape,
                    bytes: slice.floats().withUnsafeBytes { Data($0) })
                return
            }
            self.init(
                name: name ?? slice.name, dtype: slice.dtype, shape: slice.shape,
                bytes: Data(
                    bytesNoCopy: UnsafeMutableRawPointer(mutating: slice.data),
                    count: slice.byteCount, deallocator: .none))
            mapping = slice.owner
        }
    }

    /// Writes a file, streaming the tensor bytes rather than assembling them in memory.
    public static func write(_ entries: [Entry], to url: URL, metadata: [String: String] = ["format": "pt"]) throws {
        let sorted = entries.sorted { $0.name < $1.name }
        guard FileManager.default.createFile(atPath: url.path, contents: try header(sorted, metadata: metadata)),
              let handle = FileHandle(forWritingAtPath: url.path)
        else {
            throw DroptraceError("cannot create file", path: url.path)
        }
        defer { try? handle.close() }
        do {
            try handle.seekToEnd()
            for entry in sorted { try handle.write(contentsOf: entry.bytes) }
            try handle.synchronize()
        } catch {
            throw DroptraceError("cannot write: \(error.localizedDescription)", path: url.path)
        }
    }

    /// The file's bytes: header (sorted by name, padded to 8 bytes) then data.
    public static func encode(_ entries: [Entry], metadata: [String: String] = ["format": "pt"]) throws -> Data {
        let sorted = entries.sorted { $0.name < $1.name }
        var file = try header(sorted, metadata: metadata)
        for entry in sorted { file.append(entry.bytes) }
        return file
    }

    /// The length prefix and JSON header for `sorted` entries.
    private static func header(_ sorted: [Entry], metadata: [String: String]) throws -> Data {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for entry in sorted {
            header[entry.name] = [
                "dtype": entry.dtype.rawValue, "shape": entry.shape, "data_offsets": [offset, offset + entry.bytes.count],
            ] as [String: Any]
            offset += entry.bytes.count
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

import DroptraceSupport
import Foundation

/// Writes `.safetensors` files (used when exporting dropped models).
public enum SafetensorsWriter {
    public struct Entry {
        public var name: String
        public var dtype: TensorDType
        public var shape: [Int]
        public var bytes: Data

        public init(name: String, dtype: TensorDType, shape: [Int], bytes: Data) {
            precondition(bytes.count == shape.reduce(1, *) * dtype.byteSize, "tensor \(name): byte count does not match shape")
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.bytes = bytes
        }

        /// An entry holding a slice's bytes as they are on disk.
        public init(_ slice: TensorSlice, renamedTo name: String? = nil) {
            self.init(
                name: name ?? slice.name, dtype: slice.dtype, shape: slice.shape,
                bytes: Data(bytes: slice.data, count: slice.elementCount * slice.dtype.byteSize))
        }
    }

    /// The file's bytes: header (sorted by name, padded to 8 bytes) then data.
    public static func encode(_ entries: [Entry], metadata: [String: String] = ["format": "pt"]) throws -> Data {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        let sorted = entries.sorted { $0.name < $1.name }
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
        for entry in sorted { file.append(entry.bytes) }
        return file
    }
}

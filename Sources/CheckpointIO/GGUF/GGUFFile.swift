import DroptraceSupport
import Foundation

/// A GGUF file (llama.cpp's format, versions 2 and 3, little-endian):
/// "GGUF", version, tensor and metadata counts, the metadata key/value
/// pairs, the tensor infos, then the tensor data from the next multiple of
/// `general.alignment` (default 32). Spec: ggml's docs/gguf.md.
///
/// Tensors are not read here: `tensors` lists where each one lives and
/// `slice(_:)` points into the mapping.
public final class GGUFFile: @unchecked Sendable {
    /// One entry of the tensor info table, dimensions as ggml orders them
    /// (`dimensions[0]` varies fastest).
    public struct TensorInfo: Sendable {
        public let name: String
        public let dimensions: [Int]
        let type: GGMLType
        /// Offset from the start of the data section.
        let offset: Int

        public var typeName: String { type.name }
        public var elementCount: Int { dimensions.reduce(1, *) }
        var byteCount: Int { type.byteCount(elements: elementCount) }
    }

    public let path: String
    public let version: Int
    public let metadata: [String: GGUFValue]
    public let tensors: [TensorInfo]
    /// Where the data section starts in the file.
    let dataStart: Int
    let file: MappedFile

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        var reader = GGUFByteReader(bytes: file.bytes, path: path)
        let header = try Self.readHeader(&reader)
        version = header.version
        metadata = header.metadata
        tensors = header.tensors
        dataStart = header.dataStart

        for info in tensors {
            let end = dataStart + info.offset + info.byteCount
            guard end <= file.size else {
                throw DroptraceError(
                    "file is truncated: tensor '\(info.name)' ends at byte \(end) but the file has \(file.size) bytes",
                    path: path)
            }
        }
    }

    /// The length a complete file must have according to its own header, or
    /// nil when even the header is incomplete or not GGUF. Reads only the
    /// header, so it is cheap for checking whether a file is still being written.
    public static func expectedLength(path: String) -> Int? {
        guard let file = try? MappedFile(path: path) else { return nil }
        var reader = GGUFByteReader(bytes: file.bytes, path: path)
        guard let header = try? readHeader(&reader) else { return nil }
        return header.tensors.map { header.dataStart + $0.offset + $0.byteCount }.max() ?? header.dataStart
    }

    /// The tensor `info` describes, under `name` with `shape` and `order`.
    func slice(_ info: TensorInfo, dtype: TensorDType, name: String, shape: [Int], order: TensorSlice.StoredOrder) -> TensorSlice {
        TensorSlice(
            name: name, dtype: dtype, shape: shape, data: file.bytes.baseAddress! + dataStart + info.offset,
            path: path, owner: file, storedOrder: order)
    }

    private struct Header {
        var version: Int
        var metadata: [String: GGUFValue]
        var tensors: [TensorInfo]
        var dataStart: Int
    }

    private static func readHeader(_ reader: inout GGUFByteReader) throws -> Header {
        let path = reader.path
        guard reader.bytes.count >= 4 else {
            throw DroptraceError("not a GGUF file: only \(reader.bytes.count) bytes", path: path)
        }
        let magic = try reader.bytes(4)
        guard magic.elementsEqual("GGUF".utf8) else {
            let shown = String(decoding: magic.map { (0x20..<0x7F).contains($0) ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
            throw DroptraceError("not a GGUF file: it starts with \"\(shown)\" instead of \"GGUF\"", path: path)
        }
        let version = try reader.u32()
        switch version {
        case 2, 3: break
        case 1:
            throw DroptraceError(
                "GGUF version 1 is not supported (only versions 2 and 3); convert the model again with a current llama.cpp",
                path: path)
        case UInt32(2).byteSwapped, UInt32(3).byteSwapped:
            throw DroptraceError("big-endian GGUF files are not supported (only little-endian)", path: path)
        default:
            throw DroptraceError("unknown GGUF version \(version) (supported: 2 and 3)", path: path)
        }
        let tensorCount = try reader.count("tensor count")
        let metadataCount = try reader.count("metadata count")

        var metadata: [String: GGUFValue] = [:]
        for _ in 0..<metadataCount {
            let key = try reader.string()
            let type = try reader.u32()
            metadata[key] = try reader.value(type: type, key: key)
        }

        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(tensorCount)
        for _ in 0..<tensorCount {
            let name = try reader.string()
            let dimensionCount = Int(try reader.u32())
            guard (1...4).contains(dimensionCount) else {
                throw DroptraceError("tensor '\(name)' has \(dimensionCount) dimensions (GGUF allows 1 to 4)", path: path)
            }
            var dimensions: [Int] = []
            for _ in 0..<dimensionCount {
                let value = try reader.u64()
                guard value <= UInt64(Int32.max) else {
                    throw DroptraceError("tensor '\(name)' has an implausible dimension \(value)", path: path)
                }
                dimensions.append(Int(value))
            }
            let typeID = try reader.u32()
            let offset = try reader.u64()
            guard let type = GGMLType.named(typeID) else {
                throw DroptraceError("tensor '\(name)' has unknown ggml type id \(typeID)", path: path)
            }
            guard dimensions[0] % type.blockSize == 0 else {
                throw DroptraceError(
                    "tensor '\(name)' of type \(type.name) has rows of \(dimensions[0]) elements, not a multiple of its block size \(type.blockSize)",
                    path: path)
            }
            guard offset <= UInt64(Int.max / 2) else {
                throw DroptraceError("tensor '\(name)' has an implausible data offset \(offset)", path: path)
            }
            tensors.append(TensorInfo(name: name, dimensions: dimensions, type: type, offset: Int(offset)))
        }

        var alignment = 32
        if let value = metadata["general.alignment"] {
            guard let a = value.int, a > 0, a & (a - 1) == 0 else {
                throw DroptraceError("general.alignment must be a power of two, not \(value)", path: path)
            }
            alignment = a
        }
        for info in tensors where info.offset % alignment != 0 {
            throw DroptraceError(
                "tensor '\(info.name)' starts at data offset \(info.offset), not a multiple of the alignment \(alignment)",
                path: path)
        }
        let dataStart = (reader.offset + alignment - 1) / alignment * alignment
        return Header(version: Int(version), metadata: metadata, tensors: tensors, dataStart: dataStart)
    }
}

/// Bounds-checked little-endian reads from the start of a GGUF file; running
/// off the end means the file is truncated.
struct GGUFByteReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset = 0

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    private mutating func take(_ count: Int) throws -> Int {
        guard count >= 0, count <= bytes.count - offset else {
            throw DroptraceError(
                "file is truncated: the GGUF header continues past byte \(offset) but the file has \(bytes.count) bytes",
                path: path)
        }
        defer { offset += count }
        return offset
    }

    mutating func bytes(_ count: Int) throws -> UnsafeRawBufferPointer {
        let start = try take(count)
        return UnsafeRawBufferPointer(rebasing: bytes[start..<(start + count)])
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let start = try take(MemoryLayout<T>.size)
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: start, as: T.self))
    }

    mutating func u32() throws -> UInt32 { try load(UInt32.self) }
    mutating func u64() throws -> UInt64 { try load(UInt64.self) }

    /// A count of items that each take at least one byte, so it cannot exceed what is left.
    mutating func count(_ what: String) throws -> Int {
        let value = try u64()
        guard value <= UInt64(bytes.count - offset) else {
            throw DroptraceError(
                "file is truncated or corrupt: \(what) \(value) exceeds the \(bytes.count - offset) bytes left", path: path)
        }
        return Int(value)
    }

    mutating func string() throws -> String {
        let length = try count("string length")
        return String(decoding: try bytes(length), as: UTF8.self)
    }

    /// A metadata value of GGUF value type `type` (gguf.md's `gguf_metadata_value_type`).
    mutating func value(type: UInt32, key: String) throws -> GGUFValue {
        switch type {
        case 0: return .unsigned(UInt64(try load(UInt8.self)))
        case 1: return .signed(Int64(try load(Int8.self)))
        case 2: return .unsigned(UInt64(try load(UInt16.self)))
        case 3: return .signed(Int64(try load(Int16.self)))
        case 4: return .unsigned(UInt64(try load(UInt32.self)))
        case 5: return .signed(Int64(try load(Int32.self)))
        case 6: return .float(Double(Float(bitPattern: try load(UInt32.self))))
        case 7: return .bool(try load(UInt8.self) != 0)
        case 8: return .string(try string())
        case 9:
            let elementType = try u32()
            let count = try count("array length of '\(key)'")
            var items: [GGUFValue] = []
            items.reserveCapacity(count)
            for _ in 0..<count { items.append(try value(type: elementType, key: key)) }
            return .array(items)
        case 10: return .unsigned(try load(UInt64.self))
        case 11: return .signed(try load(Int64.self))
        case 12: return .float(Double(bitPattern: try load(UInt64.self)))
        default:
            throw DroptraceError("metadata key '\(key)' has unknown value type \(type)", path: path)
        }
    }
}

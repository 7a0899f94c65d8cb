import DroptraceSupport
import Foundation

/// A GGUF file (llama.cpp's format, versions 2 and 3, little-endian):
/// "GGUF", version, tensor and metadata counts, the metadata key/value
/// pairs, the tensor infos, then the tensor data from the next multiple of
/// `general.alignment` (default 32). Spec: ggml's docs/gguf.md.
///
/// Tensors are not read here: `tensors` lists where each one lives and
/// `slice(_:)` makes a `TensorSlice` that reads one when it is expanded.
public final class GGUFFile: @unchecked Sendable {
    /// One entry of the tensor info table, dimensions as ggml orders them
    /// (`dimensions[0]` varies fastest).
    public struct TensorInfo: Sendable {
        public let name: String
        /// The dimensions as llama.cpp compares them: without the trailing
        /// dimensions of size 1 beyond the first (`[48, 1]` and `[48, 1, 1, 1]`
        /// are `[48]`; see `sameDimensions`). A reader expecting more
        /// dimensions pads them with 1s (`dimensions(_:rank:)`).
        public let dimensions: [Int]
        /// The dimensions as the file writes them.
        public let writtenDimensions: [Int]
        let type: GGMLType
        /// Offset from the start of the data section.
        let offset: Int
        /// The product of the dimensions, checked not to overflow.
        public let elementCount: Int
        /// Stored bytes, checked not to overflow.
        let byteCount: Int

        public var typeName: String { type.name }
    }

    /// Whether a tensor of `stored` dimensions is one of `expected` (both in
    /// ggml order) as llama.cpp checks it (`llama_model_loader::check_tensor_dims`):
    /// ggml gives every tensor four dimensions, those not written being 1,
    /// and compares all four, so `[48, 1]` is `[48]` and `[48]` is `[48, 1]`.
    public static func sameDimensions(_ stored: [Int], _ expected: [Int]) -> Bool {
        (0..<max(stored.count, expected.count)).allSatisfy { i in
            (i < stored.count ? stored[i] : 1) == (i < expected.count ? expected[i] : 1)
        }
    }

    /// `sameDimensions` for shapes in Hugging Face order (outermost first),
    /// where ggml's trailing dimensions are leading ones.
    public static func sameShape(_ stored: [Int], _ expected: [Int]) -> Bool {
        sameDimensions(stored.reversed(), expected.reversed())
    }

    /// `dimensions` (ggml order) with 1s appended up to `rank`, as llama.cpp
    /// reads a tensor it expects of that many dimensions; nil when a
    /// dimension beyond them is not 1.
    public static func dimensions(_ dimensions: [Int], rank: Int) -> [Int]? {
        guard dimensions.dropFirst(rank).allSatisfy({ $0 == 1 }) else { return nil }
        return Array(dimensions.prefix(rank)) + Array(repeating: 1, count: max(0, rank - dimensions.count))
    }

    public let path: String
    public let version: Int
    public let metadata: [String: GGUFValue]
    public let tensors: [TensorInfo]
    /// Where the data section starts in the file.
    let dataStart: Int
    let file: RegularFile

    /// The most tensors, and metadata keys, droptrace reads in one file:
    /// far more than any model's (some hundreds of tensors, experts merged,
    /// and some tens of keys).
    static let entryLimit = 1 << 16

    /// Reads and validates the header (metadata and tensor infos), not the
    /// tensor data. Throws `DroptraceError` naming the file and the problem.
    public init(path: String) throws {
        self.path = path
        file = try RegularFile(path: path)
        var reader = GGUFByteReader(file: file)
        let header = try Self.readHeader(&reader)
        try file.checkUnchanged()
        version = header.version
        metadata = header.metadata
        tensors = header.tensors
        dataStart = header.dataStart

        for info in tensors {
            let end = dataStart + info.offset + info.byteCount
            guard end <= file.size else {
                throw DroptraceError(
                    "file is truncated: tensor '\(info.name.forErrorMessage)' ends at byte \(end) but the file has \(file.size) bytes",
                    path: path)
            }
        }
        // Writers pad the data section to the alignment and stop. Bytes past
        // that are data the tensor table does not describe: most often a
        // table that lost entries (a tensor count too low), which moves the
        // data section's start, so that every tensor would be read from
        // bytes that are not its own. llama.cpp reads such a file all the
        // same; droptrace cannot tell it from a sound one with data appended.
        let paddedEnd = dataStart + header.dataLength
        guard file.size <= paddedEnd else {
            let extra = file.size - paddedEnd
            throw DroptraceError(
                "the file has \(extra) byte\(extra == 1 ? "" : "s") after the data of its \(tensors.count) tensors (which end at byte "
                    + "\(paddedEnd), padded to the alignment): the header's tensor table does not describe the whole file "
                    + "(a tensor count too low shifts where every tensor's data starts)",
                path: path)
        }
    }

    /// The length a complete file must have according to its header, or nil
    /// when the header itself ends early (the file is still being written).
    /// Reads only the header, so it is cheap for checking whether a file is
    /// still being written. A file that can never be complete (not a regular
    /// file, or a header that is damaged rather than short) gives 0, so that
    /// opening it reports the problem. Throws only when reading fails (an
    /// I/O error, `isTransient`).
    public static func expectedLength(path: String) throws -> Int? {
        guard let file = try? RegularFile(path: path) else { return 0 }
        var reader = GGUFByteReader(file: file)
        do {
            let header = try readHeader(&reader)
            return header.tensors.map { header.dataStart + $0.offset + $0.byteCount }.max() ?? header.dataStart
        } catch let error as DroptraceError where error.isTransient {
            throw error
        } catch {
            return reader.ranPastEnd ? nil : 0
        }
    }

    /// The tensor `info` describes, under `name` with `shape` and `order`;
    /// with `byteOffset`, the part of it starting that many bytes in (an
    /// expert of a stack: whole blocks, within the tensor's checked range).
    func slice(
        _ info: TensorInfo, dtype: TensorDType, name: String, shape: [Int], order: TensorSlice.StoredOrder, byteOffset: Int = 0
    ) -> TensorSlice {
        TensorSlice(
            name: name, dtype: dtype, shape: shape, path: path, storage: .file(file, offset: dataStart + info.offset + byteOffset),
            storedOrder: order)
    }

    private struct Header {
        var version: Int
        var metadata: [String: GGUFValue]
        var tensors: [TensorInfo]
        var dataStart: Int
        /// Bytes the tensors take in the data section, each padded to the alignment.
        var dataLength: Int
    }

    /// Every size is checked before it is used: counts against the bytes left,
    /// dimension products and byte counts for overflow, and the tensors' data
    /// ranges (which may lie past the end of a file still being written, but
    /// follow each other as llama.cpp lays them out) so that
    /// `dataStart + offset + byteCount` cannot overflow.
    private static func readHeader(_ reader: inout GGUFByteReader) throws -> Header {
        let path = reader.path
        guard reader.size >= 4 else {
            reader.ranPastEnd = true
            throw DroptraceError("not a GGUF file: only \(reader.size) bytes", path: path)
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
        // A tensor info takes at least 8 + 4 + 8 + 4 + 8 bytes, a key/value pair 8 + 4 + 1.
        let tensorCount = try reader.count("tensor count", each: 32)
        let metadataCount = try reader.count("metadata count", each: 13)
        // A model's GGUF holds some hundreds of tensors (experts merged) and some tens of keys; absurd
        // counts of tiny ones within the file's size took seconds and gigabytes to read.
        for (what, count) in [("tensors", tensorCount), ("metadata keys", metadataCount)] where count > Self.entryLimit {
            throw DroptraceError("lists \(count) \(what), more than the \(Self.entryLimit) droptrace reads in one GGUF file", path: path)
        }

        var metadata: [String: GGUFValue] = [:]
        for index in 0..<metadataCount {
            let key = try reader.string { "metadata key \(index) ('\($0)')" }
            // llama.cpp refuses an empty key, as it refuses an array of arrays (`value`).
            guard !key.isEmpty else { throw DroptraceError("metadata key \(index) is empty", path: path) }
            let type = try reader.u32()
            // llama.cpp refuses a key given twice; gguf-py keeps the first. Neither is a choice to make silently.
            guard metadata[key] == nil else {
                throw DroptraceError("metadata key '\(key.forErrorMessage)' is given twice", path: path)
            }
            metadata[key] = try reader.value(type: type, key: key)
        }

        var tensors: [TensorInfo] = []
        var names: Set<String> = []
        tensors.reserveCapacity(tensorCount)
        for index in 0..<tensorCount {
            let name = try reader.string { "the name of tensor \(index) ('\($0)')" }
            let shown = name.forErrorMessage
            // ggml keeps a tensor's name in 64 bytes ending in a NUL: llama.cpp refuses
            // longer names and ends a name at its first NUL, so that "output.weight\0x"
            // is its output matrix where droptrace would see an unknown tensor.
            guard name.utf8.count < 64 else {
                throw DroptraceError(
                    "the name of tensor \(index) ('\(shown)') is \(name.utf8.count) bytes long; llama.cpp holds names of at most 63",
                    path: path)
            }
            guard !name.utf8.contains(0) else {
                throw DroptraceError("the name of tensor \(index) ('\(shown)') holds a NUL byte, where llama.cpp ends it", path: path)
            }
            guard names.insert(name).inserted else {
                throw DroptraceError("tensor '\(shown)' is listed twice", path: path)
            }
            let dimensionCount = Int(try reader.u32())
            guard (1...4).contains(dimensionCount) else {
                throw DroptraceError("tensor '\(shown)' has \(dimensionCount) dimensions (GGUF allows 1 to 4)", path: path)
            }
            var dimensions: [Int] = []
            for _ in 0..<dimensionCount {
                let value = try reader.u64()
                guard value <= UInt64(Int32.max) else {
                    throw DroptraceError("tensor '\(shown)' has an implausible dimension \(value)", path: path)
                }
                dimensions.append(Int(value))
            }
            let typeID = try reader.u32()
            let offset = try reader.u64()
            guard let type = GGMLType.named(typeID) else {
                throw DroptraceError("tensor '\(shown)' has unknown ggml type id \(typeID)", path: path)
            }
            guard dimensions[0] % type.blockSize == 0 else {
                throw DroptraceError(
                    "tensor '\(shown)' of type \(type.name) has rows of \(dimensions[0]) elements, not a multiple of its block size \(type.blockSize)",
                    path: path)
            }
            var elements = 1
            var overflow = false
            for size in dimensions where !overflow { (elements, overflow) = elements.multipliedReportingOverflow(by: size) }
            let (bytes, bytesOverflow) = (elements / type.blockSize).multipliedReportingOverflow(by: type.blockBytes)
            // Bounding offset and size by Int.max / 4 each keeps every later sum in range.
            guard !overflow, !bytesOverflow, bytes <= Int.max / 4 else {
                throw DroptraceError("tensor '\(shown)' has dimensions \(dimensions) whose size overflows", path: path)
            }
            guard offset <= UInt64(Int.max / 4) else {
                throw DroptraceError("tensor '\(shown)' has an implausible data offset \(offset)", path: path)
            }
            var compared = dimensions
            while compared.count > 1, compared.last == 1 { compared.removeLast() }
            tensors.append(TensorInfo(
                name: name, dimensions: compared, writtenDimensions: dimensions, type: type, offset: Int(offset),
                elementCount: elements, byteCount: bytes))
        }

        var alignment = 32
        if let value = metadata["general.alignment"] {
            // llama.cpp and gguf-py refuse any other type than UINT32.
            guard case .unsigned(let a, .uint32) = value else {
                throw GGUFMetadata.wrongType("general.alignment", value, expected: "UINT32", path: path)
            }
            guard a > 0, a <= 1 << 30, a & (a - 1) == 0 else {
                throw DroptraceError("general.alignment must be a power of two, not \(a)", path: path)
            }
            alignment = Int(a)
        }
        let dataLength = try checkLayout(tensors, alignment: alignment, path: path)
        let dataStart = (reader.offset + alignment - 1) / alignment * alignment
        return Header(version: Int(version), metadata: metadata, tensors: tensors, dataStart: dataStart, dataLength: dataLength)
    }

    /// llama.cpp places each tensor right after the one before it in the
    /// tensor info table, padded to the alignment, and refuses any other
    /// offset ("tensor ... has offset ..., expected ..."): two tensors sharing
    /// bytes, swapped offsets, gaps, or a size that does not match the bytes
    /// laid out for it (a changed type or dimension) would each make droptrace
    /// read other bytes than llama.cpp does. Offsets and sizes are at most
    /// Int.max / 4 each, so the running end cannot overflow before it is compared.
    /// Returns the data section's length, every tensor padded to the alignment.
    private static func checkLayout(_ tensors: [TensorInfo], alignment: Int, path: String) throws -> Int {
        var expected = 0
        for info in tensors {
            guard info.offset == expected else {
                throw DroptraceError(
                    "tensor '\(info.name.forErrorMessage)' starts at data offset \(info.offset), but llama.cpp places it at \(expected) (right after the tensor before it, padded to the alignment \(alignment))",
                    path: path)
            }
            expected += (info.byteCount + alignment - 1) / alignment * alignment
        }
        return expected
    }
}

/// Bounds-checked little-endian reads from the start of a GGUF file, loaded
/// as far as the header goes (never the tensor data); running off the end
/// means the file is truncated.
struct GGUFByteReader {
    let file: RegularFile
    var path: String { file.path }
    var size: Int { file.size }
    var offset = 0
    /// Set when a read needed bytes past the end of the file (truncated, or still being written).
    var ranPastEnd = false
    /// Bytes `0..<loaded.count` of the file.
    private var loaded: [UInt8] = []
    /// Array elements read so far, across all metadata values.
    private var arrayElements = 0
    /// Far more than any vocabulary needs (tokens, scores, token types and
    /// merges of a 262k-token vocabulary are about 1.3 million values), and
    /// small enough that the values' memory (tens of bytes each) stays a few
    /// hundred megabytes whatever the file says.
    static let arrayElementLimit = 1 << 22

    init(file: RegularFile) {
        self.file = file
    }

    private mutating func take(_ count: Int) throws -> Int {
        guard count >= 0, count <= size - offset else {
            ranPastEnd = true
            throw DroptraceError(
                "file is truncated: the GGUF header continues past byte \(offset) but the file has \(size) bytes",
                path: path)
        }
        let end = offset + count
        if end > loaded.count {
            // Grow geometrically, so a header of n bytes costs O(n) reads and copies.
            let target = min(size, max(end, 2 * loaded.count, 1 << 16))
            loaded.append(contentsOf: try file.bytes(target - loaded.count, at: loaded.count))
        }
        defer { offset += count }
        return offset
    }

    mutating func bytes(_ count: Int) throws -> ArraySlice<UInt8> {
        let start = try take(count)
        return loaded[start..<(start + count)]
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let start = try take(MemoryLayout<T>.size)
        return loaded.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: start, as: T.self)) }
    }

    mutating func u32() throws -> UInt32 { try load(UInt32.self) }
    mutating func u64() throws -> UInt64 { try load(UInt64.self) }

    /// A count of items that each take at least `each` bytes, so it cannot
    /// exceed what is left of the file; checked before anything is allocated.
    mutating func count(_ what: String, each: Int = 1) throws -> Int {
        let value = try u64()
        let left = size - offset
        guard value <= UInt64(left / each) else {
            // The rest of the header may simply not be written yet.
            ranPastEnd = true
            throw DroptraceError(
                "file is truncated or corrupt: \(what) \(value) needs more than the \(left) bytes left", path: path)
        }
        return Int(value)
    }

    /// A string, which must be UTF-8: gguf-py decodes keys and tensor names
    /// strictly and transformers every string, and a replacement character
    /// would silently make another key, name or token (two tokens alike, a
    /// merge of neither). llama.cpp's own vocabularies are UTF-8 too (byte-level
    /// BPE maps bytes to characters, SentencePiece writes them as <0xNN>).
    /// `what` names the string in the error, given its text with the bad bytes replaced.
    mutating func string(_ what: (String) -> String) throws -> String {
        let length = try count("string length")
        let bytes = try bytes(length)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw DroptraceError("\(what(String(decoding: bytes, as: UTF8.self).forErrorMessage)) is not valid UTF-8", path: path)
        }
        return text
    }

    /// The fewest bytes a value of GGUF type `type` takes (for bounding array lengths).
    private static func minimumSize(_ type: UInt32) -> Int {
        switch type {
        case 0, 1, 7: 1
        case 2, 3: 2
        case 4, 5, 6: 4
        case 8, 10, 11, 12: 8
        case 9: 12
        default: 1
        }
    }

    /// A metadata value of GGUF value type `type` (gguf.md's `gguf_metadata_value_type`).
    /// `element` is the value's place in the array holding it, for errors.
    mutating func value(type: UInt32, key: String, element: Int? = nil) throws -> GGUFValue {
        switch GGUFType(rawValue: type) {
        case .uint8?: return .unsigned(UInt64(try load(UInt8.self)), .uint8)
        case .int8?: return .signed(Int64(try load(Int8.self)), .int8)
        case .uint16?: return .unsigned(UInt64(try load(UInt16.self)), .uint16)
        case .int16?: return .signed(Int64(try load(Int16.self)), .int16)
        case .uint32?: return .unsigned(UInt64(try load(UInt32.self)), .uint32)
        case .int32?: return .signed(Int64(try load(Int32.self)), .int32)
        case .float32?: return .float(Double(Float(bitPattern: try load(UInt32.self))), .float32)
        case .bool?: return .bool(try load(UInt8.self) != 0)
        case .string?:
            return .string(try string { _ in
                (element.map { "element \($0) of " } ?? "the value of ") + "metadata key '\(key.forErrorMessage)'"
            })
        case .array?:
            let elementType = try u32()
            // llama.cpp reads arrays of scalars and strings only, and refuses the file otherwise.
            guard elementType != GGUFType.array.rawValue else {
                throw DroptraceError("metadata key '\(key.forErrorMessage)' holds an array of arrays, which llama.cpp does not read", path: path)
            }
            // Checked before the elements, so that an empty array of no known type is refused too.
            guard let element = GGUFType(rawValue: elementType) else {
                throw DroptraceError("metadata key '\(key.forErrorMessage)' is an array of unknown value type \(elementType)", path: path)
            }
            let count = try count("array length of '\(key.forErrorMessage)'", each: Self.minimumSize(elementType))
            arrayElements += count
            guard arrayElements <= Self.arrayElementLimit else {
                throw DroptraceError(
                    "metadata arrays hold more than \(Self.arrayElementLimit) values (at key '\(key.forErrorMessage)'); the file is corrupt",
                    path: path)
            }
            var items: [GGUFValue] = []
            items.reserveCapacity(count)
            for index in 0..<count { items.append(try value(type: elementType, key: key, element: index)) }
            return .array(items, of: element)
        case .uint64?: return .unsigned(try load(UInt64.self), .uint64)
        case .int64?: return .signed(try load(Int64.self), .int64)
        case .float64?: return .float(Double(bitPattern: try load(UInt64.self)), .float64)
        case nil:
            throw DroptraceError("metadata key '\(key.forErrorMessage)' has unknown value type \(type)", path: path)
        }
    }
}

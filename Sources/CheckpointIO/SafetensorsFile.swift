import DroptraceSupport
import Foundation

/// A `.safetensors` file: an 8-byte little-endian header length, a JSON header,
/// then the raw tensor bytes (https://github.com/huggingface/safetensors).
///
/// The header is checked as the safetensors library checks it before anything
/// else is done: every size fits in the file (overflow-checked), each tensor's
/// byte range matches its shape and dtype, and the ranges tile the data section
/// exactly — no overlaps, no holes, no trailing bytes (the format forbids holes
/// so that a file cannot hide other contents; transformers could not load such
/// a file either).
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    /// The tensors droptrace expands (F32, F16, BF16, F64), by name.
    public let tensors: [String: TensorSlice]
    /// The other tensors (BOOL attention masks, I64 `position_ids` buffers,
    /// U8 and FP8 tensors of scaled checkpoints, ...), name → safetensors
    /// dtype. transformers ignores such buffers when loading a model, so they
    /// are only an error when read as weights.
    public let otherTensors: [String: String]
    /// Those of `otherTensors` that a dequantiser reads (U8 MXFP4 blocks and
    /// scales, F8_E4M3 / F8_E5M2 weights), by name.
    public let scaledTensors: [String: TensorSlice]
    public let metadata: [String: String]

    /// The safetensors library refuses headers longer than this (100 MB).
    static let formatHeaderLimit = 100_000_000
    /// The longest header droptrace reads: 16 MiB, some 100,000 tensors at
    /// ~150 bytes each (a checkpoint's file holds some thousands). Parsing
    /// takes ~16 bytes of memory per header byte, and a header of absurdly
    /// many empty tensors took seconds and gigabytes within the format's 100 MB.
    static let headerLimit = 1 << 24
    /// A header's arrays are shapes and offset pairs; torch holds at most 64
    /// dimensions, so a longer array is no header of a loadable tensor (and
    /// parsing a 100 MB one whole would take gigabytes).
    static let arrayLimit = 64

    /// Opens and validates the file; reads no tensor data. Throws
    /// `DroptraceError` naming the file and the first problem found.
    public init(path: String) throws {
        self.path = path
        let file = try RegularFile(path: path)
        let header = try Header(file)
        var tensors: [String: TensorSlice] = [:]
        var otherTensors: [String: String] = [:]
        var scaledTensors: [String: TensorSlice] = [:]
        for entry in header.entries {
            let slice = entry.dtype.map {
                TensorSlice(
                    name: entry.name, dtype: $0, shape: entry.shape, path: path,
                    storage: .file(file, offset: header.dataStart + entry.begin))
            }
            if let slice, slice.dtype.readsAsWeights {
                tensors[entry.name] = slice
            } else {
                otherTensors[entry.name] = entry.dtypeName
                scaledTensors[entry.name] = slice
            }
        }
        self.tensors = tensors
        self.otherTensors = otherTensors
        self.scaledTensors = scaledTensors
        metadata = header.metadata
    }

    /// The length a complete file must have according to its own header, or
    /// nil when the header itself is not all there yet (the file is still being
    /// written). Used to tell a checkpoint still being written from a finished
    /// one without reading it. A file that can never be complete — not a
    /// regular file, an absurd header length, a header that is not valid JSON —
    /// gives a length it already has, so that opening it reports the problem.
    /// Throws only when reading fails (an I/O error, `isTransient`).
    public static func expectedLength(path: String) throws -> Int? {
        guard let file = try? RegularFile(path: path) else { return 0 }
        guard file.size >= 8, let prefix = try DroptraceError.nilUnlessTransient({ try file.bytes(8, at: 0) }) else { return nil }
        let length = prefix.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian
        guard length <= UInt64(headerLimit) else { return 8 }
        let headerLength = Int(length)
        guard headerLength <= file.size - 8 else { return nil }
        guard let bytes = try DroptraceError.nilUnlessTransient({ try file.bytes(headerLength, at: 8) }),
              case .object(let header)? = try? JSONValue.parse(bytes, serde: true, arrayLimit: arrayLimit)
        else { return 8 + headerLength }
        // A name given twice is its last entry (serde's map), compared by scalars.
        var entries: [[Unicode.Scalar]: JSONValue] = [:]
        for (name, value) in header where name != "__metadata__" { entries[Array(name.unicodeScalars)] = value }
        var dataEnd = 0
        for value in entries.values {
            if case .array(let offsets)? = value.member("data_offsets"), offsets.count == 2, case .integer(let end) = offsets[1], end >= 0 {
                dataEnd = max(dataEnd, end)
            }
        }
        let (total, overflow) = (8 + headerLength).addingReportingOverflow(dataEnd)
        return overflow ? Int.max : total
    }

    /// One tensor's header entry, checked.
    struct Entry {
        var name: String
        var dtypeName: String
        /// nil for the dtypes droptrace does not expand.
        var dtype: TensorDType?
        var shape: [Int]
        /// Byte range in the data section.
        var begin: Int, end: Int
    }

    /// The length prefix and JSON header, validated against the file.
    struct Header {
        var entries: [Entry] = []
        var metadata: [String: String] = [:]
        /// Where the data section starts in the file.
        var dataStart: Int

        init(_ file: RegularFile) throws {
            let path = file.path
            guard file.size >= 8 else {
                throw DroptraceError("not a safetensors file: \(file.size) bytes, shorter than the 8-byte header length", path: path)
            }
            let length = try file.bytes(8, at: 0).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian
            guard length >= 2, length <= UInt64(file.size - 8) else {
                throw DroptraceError(
                    "safetensors header of \(length) bytes points past the end of the file (\(file.size) bytes); the file is truncated or not safetensors",
                    path: path)
            }
            guard length <= UInt64(SafetensorsFile.formatHeaderLimit) else {
                throw DroptraceError("safetensors header of \(length) bytes is longer than the format allows (100 MB)", path: path)
            }
            guard length <= UInt64(SafetensorsFile.headerLimit) else {
                throw DroptraceError(
                    "safetensors header of \(length) bytes is longer than the \(SafetensorsFile.headerLimit >> 20) MiB droptrace reads "
                        + "(a checkpoint's header holds ~150 bytes a tensor, some thousands of them)", path: path)
            }
            let headerLength = Int(length)
            dataStart = 8 + headerLength
            // The safetensors library's reading (serde): strict JSON from the
            // first byte (no BOM), integers as integers, a string map for
            // __metadata__.
            let header: [(key: String, value: JSONValue)]
            do {
                guard case .object(let members) = try JSONValue.parse(
                    try file.bytes(headerLength, at: 8), serde: true, arrayLimit: SafetensorsFile.arrayLimit) else {
                    throw DroptraceError("safetensors header is not a JSON object", path: path)
                }
                header = members
            } catch let malformed as JSONValue.Malformed {
                throw DroptraceError(
                    "safetensors header is not valid JSON (byte \(malformed.offset) of the header: \(malformed.reason))", path: path)
            }
            // serde reads the header into a map of tensors: a name given twice
            // is one tensor, its last entry's, though every entry is
            // deserialised and must be well-formed. A field given twice (in an
            // entry, or __metadata__ itself) is serde's "duplicate field"
            // error; a repeated key inside __metadata__ keeps its last value.
            // Names compare as serde compares them, by their scalars.
            let dataLength = file.size - dataStart
            var positions: [[Unicode.Scalar]: Int] = [:]
            var sawMetadata = false
            for (name, value) in header {
                if name == "__metadata__" {
                    guard !sawMetadata else {
                        throw DroptraceError("safetensors header gives \"__metadata__\" twice", path: path)
                    }
                    sawMetadata = true
                    // The library reads it as an optional map: null is no metadata.
                    if case .null = value { continue }
                    guard case .object(let members) = value else {
                        throw DroptraceError("safetensors header's __metadata__ must map names to strings", path: path)
                    }
                    for (key, entry) in members {
                        guard case .string(let text) = entry else {
                            throw DroptraceError("safetensors header's __metadata__ must map names to strings", path: path)
                        }
                        metadata[key] = text
                    }
                    continue
                }
                let entry = try Self.entry(name, value, path: path)
                if let position = positions[Array(name.unicodeScalars)] {
                    entries[position] = entry
                } else {
                    positions[Array(name.unicodeScalars)] = entries.count
                    entries.append(entry)
                }
            }
            // Then the library validates the tensors it kept.
            for entry in entries { try Self.checkFit(entry, dataLength: dataLength, path: path) }
            try Self.checkTiling(entries, dataLength: dataLength, path: path)
        }

        /// One entry as serde deserialises it: its fields, each once, of their types.
        private static func entry(_ name: String, _ value: JSONValue, path: String) throws -> Entry {
            let shown = name.forErrorMessage
            if case .object(let fields) = value,
               let repeated = ["dtype", "shape", "data_offsets"].first(where: { field in fields.filter { $0.key == field }.count > 1 }) {
                throw DroptraceError("malformed header entry for tensor '\(shown)' (gives \"\(repeated)\" twice)", path: path)
            }
            func integers(_ key: String) -> [Int]? {
                guard case .array(let items) = value.member(key) else { return nil }
                let numbers = items.compactMap { item -> Int? in if case .integer(let n) = item, n >= 0 { n } else { nil } }
                return numbers.count == items.count ? numbers : nil
            }
            guard case .string(let dtypeName) = value.member("dtype"),
                  let shape = integers("shape"), let offsets = integers("data_offsets"), offsets.count == 2
            else {
                throw DroptraceError(
                    "malformed header entry for tensor '\(shown)' (needs \"dtype\", \"shape\" and two \"data_offsets\", all non-negative integers)",
                    path: path)
            }
            guard elementBits[dtypeName] != nil else {
                throw DroptraceError(
                    "tensor '\(shown)' has unsupported dtype \(dtypeName.forErrorMessage), which is not a safetensors dtype",
                    path: path)
            }
            let dtype = TensorDType(rawValue: dtypeName).flatMap { $0.isBlockQuantized ? nil : $0 }
            return Entry(name: name, dtypeName: dtypeName, dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1])
        }

        /// A kept entry's byte range fits its shape and dtype and the data section.
        private static func checkFit(_ entry: Entry, dataLength: Int, path: String) throws {
            let (shown, shape, dtypeName, begin, end) = (entry.name.forErrorMessage, entry.shape, entry.dtypeName, entry.begin, entry.end)
            let bits = elementBits[dtypeName]!
            var elements = 1
            var overflow = false
            for size in shape where !overflow { (elements, overflow) = elements.multipliedReportingOverflow(by: size) }
            let (totalBits, bitsOverflow) = elements.multipliedReportingOverflow(by: bits)
            guard !overflow, !bitsOverflow, totalBits % 8 == 0, end >= begin, end - begin == totalBits / 8 else {
                throw DroptraceError(
                    "tensor '\(shown)' has data_offsets [\(begin), \(end)] that do not fit its shape \(shape) of \(dtypeName)",
                    path: path)
            }
            guard end <= dataLength else {
                throw DroptraceError(
                    "file is truncated: tensor '\(shown)' ends at byte \(end) of the data section, which has \(dataLength) bytes",
                    path: path)
            }
        }

        /// The byte ranges, in order, must cover the data section exactly once.
        private static func checkTiling(_ entries: [Entry], dataLength: Int, path: String) throws {
            let sorted = entries.sorted { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
            var covered = 0
            var previous: Entry?
            for entry in sorted {
                if entry.begin < covered, let previous {
                    throw DroptraceError(
                        "tensors '\(previous.name.forErrorMessage)' and '\(entry.name.forErrorMessage)' overlap (bytes \(previous.begin)..<\(previous.end) and \(entry.begin)..<\(entry.end) of the data section)",
                        path: path)
                }
                if entry.begin > covered {
                    throw DroptraceError(
                        "bytes \(covered)..<\(entry.begin) of the data section belong to no tensor (safetensors allows no holes)",
                        path: path)
                }
                if entry.end > covered || previous == nil { previous = entry }
                covered = max(covered, entry.end)
            }
            guard covered == dataLength else {
                throw DroptraceError(
                    "\(dataLength - covered) bytes after the last tensor's data (safetensors allows none); the file is damaged",
                    path: path)
            }
        }

        /// Bits per element of every dtype the safetensors format defines.
        static let elementBits: [String: Int] = [
            "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8,
            "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
            "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
        ]
    }
}

import DroptraceSupport
import Foundation

/// Where one tensor lives inside a mapped file.
public struct TensorSlice: @unchecked Sendable {
    /// How the stored bytes map onto the shape the slice presents. GGUF keeps
    /// some weights in another order than Hugging Face's; undoing that while
    /// expanding keeps the file mapped instead of copied.
    public enum StoredOrder: Sendable, Equatable {
        /// Stored row-major in `shape`.
        case asShaped
        /// Row `r` of the presented tensor is stored row `order[r]` (same widths).
        case rowsPermuted([Int])
        /// A 2-D tensor stored as its transpose, [shape[1], shape[0]] row-major.
        case transposed
    }

    public let name: String
    public let dtype: TensorDType
    public let shape: [Int]
    public let data: UnsafeRawPointer
    /// The file the tensor came from, for error messages.
    public let path: String
    /// Keeps the bytes alive as long as the slice is used: the `MappedFile`
    /// the slice points into, or a buffer holding a copy of the tensor.
    let owner: AnyObject
    public internal(set) var storedOrder: StoredOrder = .asShaped

    public var elementCount: Int { shape.reduce(1, *) }

    /// Bytes the tensor occupies where it is stored.
    public var byteCount: Int { dtype.byteCount(elements: elementCount) }

    /// The tensor expanded to Float32, row-major; large tensors in parallel
    /// chunks, since expanding a layer's weights is on every layer's path.
    public func floats() -> [Float] {
        let count = elementCount
        let expanded = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            let destination = buffer.baseAddress!
            switch storedOrder {
            case .asShaped:
                expandStored(into: destination)
            case .rowsPermuted(let order):
                let width = count / max(order.count, 1)
                forEachChunk(of: order.count, rowsPerChunk: max(1, (1 << 20) / max(width, 1))) { rows in
                    for r in rows { expandStoredRow(order[r], width: width, into: destination + r * width) }
                }
            case .transposed:
                let (rows, cols) = (shape[0], shape[1])
                var stored = [Float](repeating: 0, count: count)
                stored.withUnsafeMutableBufferPointer { expandStored(into: $0.baseAddress!) }
                for c in 0..<cols {
                    for r in 0..<rows { destination[r * cols + c] = stored[c * rows + r] }
                }
            }
            initialized = count
        }
        releasePages()
        return expanded
    }

    /// The stored bytes expanded in storage order, in parallel chunks of 1<<20
    /// elements (a multiple of every block size).
    private func expandStored(into destination: UnsafeMutablePointer<Float>) {
        let count = elementCount
        let chunk = 1 << 20
        forEachChunk(of: count, rowsPerChunk: chunk) { range in
            expandToFloat32(
                data + dtype.byteCount(elements: range.lowerBound), dtype: dtype, count: range.count,
                into: destination + range.lowerBound)
        }
    }

    private func expandStoredRow(_ stored: Int, width: Int, into destination: UnsafeMutablePointer<Float>) {
        expandToFloat32(data + stored * dtype.byteCount(elements: width), dtype: dtype, count: width, into: destination)
    }

    /// Runs `body` over `0..<count` cut into pieces of `size`, concurrently when there are several.
    private func forEachChunk(of count: Int, rowsPerChunk size: Int, _ body: (Range<Int>) -> Void) {
        let chunks = (count + size - 1) / size
        if chunks <= 1 {
            if count > 0 { body(0..<count) }
        } else {
            DispatchQueue.concurrentPerform(iterations: chunks) { c in body((c * size)..<min(count, (c + 1) * size)) }
        }
    }

    /// Tells the kernel the mapped bytes are not needed any more. Expanded
    /// weights live in their Float32 copy; without this every layer's pages
    /// would stay resident and the process would hold the whole checkpoint.
    /// The mapping is private and read-only, so a later read simply faults
    /// the pages back in from the file (or the page cache).
    public func releasePages() {
        // Only mapped file pages can be dropped; an owned buffer would lose its contents.
        guard owner is MappedFile else { return }
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: data) + pageSize - 1) / pageSize * pageSize
        let end = (Int(bitPattern: data) + byteCount) / pageSize * pageSize
        guard end > start, let pointer = UnsafeMutableRawPointer(bitPattern: start) else { return }
        madvise(pointer, end - start, Int32(MADV_DONTNEED))
    }

    /// Row `row` of a 2-D tensor (a 1-D tensor: all of it) expanded to Float32
    /// into `destination`. Embedding lookups use this; they are never stored transposed.
    public func expandRow(_ row: Int, into destination: UnsafeMutablePointer<Float>) {
        let width = shape.count == 2 ? shape[1] : elementCount
        switch storedOrder {
        case .asShaped: expandStoredRow(row, width: width, into: destination)
        case .rowsPermuted(let order): expandStoredRow(order[row], width: width, into: destination)
        case .transposed: preconditionFailure("tensor '\(name)': single rows of a transposed tensor are not expanded")
        }
    }
}

/// A `.safetensors` file: an 8-byte little-endian header length, a JSON header,
/// then the raw tensor bytes (https://github.com/huggingface/safetensors).
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let tensors: [String: TensorSlice]
    public let metadata: [String: String]

    public init(path: String) throws {
        self.path = path
        let file = try MappedFile(path: path)
        guard file.size >= 8 else {
            throw DroptraceError("not a safetensors file: \(file.size) bytes, shorter than the 8-byte header length", path: path)
        }
        let headerLength = Int(truncatingIfNeeded: file.bytes.loadUnaligned(as: UInt64.self).littleEndian)
        guard headerLength >= 2, headerLength <= file.size - 8 else {
            throw DroptraceError(
                "safetensors header of \(headerLength) bytes points past the end of the file (\(file.size) bytes); the file is truncated or not safetensors",
                path: path)
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: file.bytes[8..<(8 + headerLength)])
        let header: [String: Any]
        do {
            guard let parsed = try JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any] else {
                throw DroptraceError("safetensors header is not a JSON object", path: path)
            }
            header = parsed
        } catch let error as DroptraceError {
            throw error
        } catch {
            throw DroptraceError("safetensors header is not valid JSON", path: path)
        }

        let dataStart = 8 + headerLength
        let dataLength = file.size - dataStart
        var tensors: [String: TensorSlice] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                for (key, entry) in value as? [String: Any] ?? [:] { metadata[key] = entry as? String }
                continue
            }
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shape = (entry["shape"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }),
                  let offsets = (entry["data_offsets"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }),
                  offsets.count == 2, shape.allSatisfy({ $0 >= 0 })
            else {
                throw DroptraceError("malformed header entry for tensor '\(name)'", path: path)
            }
            // Block-quantised types exist only in GGUF files.
            guard let dtype = TensorDType(rawValue: dtypeName), !dtype.isBlockQuantized else {
                throw DroptraceError(
                    "tensor '\(name)' has unsupported dtype \(dtypeName) (supported: F32, F16, BF16)", path: path)
            }
            let (begin, end) = (offsets[0], offsets[1])
            let expected = dtype.byteCount(elements: shape.reduce(1, *))
            guard begin >= 0, end >= begin, end - begin == expected else {
                throw DroptraceError(
                    "tensor '\(name)' has data_offsets [\(begin), \(end)] that do not fit its shape \(shape) of \(dtypeName)",
                    path: path)
            }
            guard end <= dataLength else {
                throw DroptraceError(
                    "file is truncated: tensor '\(name)' ends at byte \(dataStart + end) but the file has \(file.size) bytes",
                    path: path)
            }
            tensors[name] = TensorSlice(
                name: name, dtype: dtype, shape: shape, data: file.bytes.baseAddress! + dataStart + begin,
                path: path, owner: file)
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    /// The length a complete file must have according to its own header, or
    /// nil when even the header is incomplete. Used to tell a checkpoint that is
    /// still being written from a finished one without mapping it.
    public static func expectedLength(path: String) -> Int? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let lengthBytes = try? handle.read(upToCount: 8), lengthBytes.count == 8 else { return nil }
        let headerLength = Int(truncatingIfNeeded: lengthBytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian)
        guard headerLength > 0, headerLength < 1 << 30,
              let headerData = try? handle.read(upToCount: headerLength), headerData.count == headerLength,
              let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any]
        else { return nil }
        var dataEnd = 0
        for (name, value) in header where name != "__metadata__" {
            if let offsets = (value as? [String: Any])?["data_offsets"] as? [Any], offsets.count == 2,
               let end = (offsets[1] as? NSNumber)?.intValue {
                dataEnd = max(dataEnd, end)
            }
        }
        return 8 + headerLength + dataEnd
    }
}

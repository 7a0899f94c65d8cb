import DroptraceSupport
import Foundation

/// Where one tensor lives inside a weight file (or, for the few tensors a
/// reader had to rearrange, in memory).
///
/// Nothing is read until a tensor is expanded: `floats()` and `expandRows` read
/// the stored bytes with `pread` (a layer at a time, never the whole file) and
/// then check that the file is still the one that was opened, so a checkpoint
/// truncated or rewritten while it is scored gives an error instead of SIGBUS
/// or a mix of old and new weights.
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

    /// Where the stored bytes are.
    enum Storage {
        /// At byte `offset` of an open weight file.
        case file(RegularFile, offset: Int)
        /// In a buffer the reader filled (strided PyTorch views, float64 copies).
        case memory(TensorBuffer)
        /// Float32 values computed from other slices each time the tensor is
        /// expanded (GGUF tensors llama.cpp split, merged or shifted), so that
        /// nothing is held in memory between expansions.
        case computed(@Sendable () throws -> [Float])
    }

    /// A float32 tensor whose row-major values `compute` returns when it is
    /// expanded (`compute` must return `shape`'s element count, and checks
    /// the files it reads).
    static func computed(name: String, shape: [Int], path: String, _ compute: @escaping @Sendable () throws -> [Float]) -> TensorSlice {
        TensorSlice(name: name, dtype: .float32, shape: shape, path: path, storage: .computed(compute))
    }

    public let name: String
    public let dtype: TensorDType
    /// Sizes, outermost first. Readers check that their product and the
    /// stored byte count fit in the file before making a slice.
    public let shape: [Int]
    /// The file the tensor came from, for error messages.
    public let path: String
    let storage: Storage
    public internal(set) var storedOrder: StoredOrder = .asShaped

    public var elementCount: Int { shape.reduce(1, *) }

    /// Where the stored bytes start in `path`; nil for a tensor held in memory.
    public var fileOffset: Int? {
        if case .file(_, let offset) = storage { return offset }
        return nil
    }

    /// The same values as a 2-D tensor of rows `pieces` times as many and
    /// as narrow: row r's pieces become rows r · pieces ..< (r + 1) · pieces
    /// (Gemma 4's packed per-layer embedding [vocab, layers · width] read as
    /// [vocab · layers, width], so one layer's piece of a token's row is a
    /// row of its own). Nil when the tensor is not 2-D, its width is not a
    /// multiple of `pieces` (≥ 1), or its rows are stored in another order.
    public func splittingRows(into pieces: Int) -> TensorSlice? {
        guard pieces >= 1, shape.count == 2, shape[1] % pieces == 0, storedOrder == .asShaped,
            // A quantised row's blocks must not straddle pieces.
            dtype.byteCount(elements: shape[1] / pieces) * pieces == dtype.byteCount(elements: shape[1])
        else { return nil }
        return TensorSlice(name: name, dtype: dtype, shape: [shape[0] * pieces, shape[1] / pieces], path: path, storage: storage)
    }

    /// Bytes the tensor occupies where it is stored.
    public var byteCount: Int { dtype.byteCount(elements: elementCount) }

    /// The tensor expanded to Float32, row-major; large tensors in parallel
    /// chunks, since expanding a layer's weights is on every layer's path.
    /// Throws when the file was truncated or changed since it was opened.
    public func floats() throws -> [Float] {
        let count = elementCount
        guard count > 0 else { return [] }
        if case .computed(let compute) = storage { return try computedValues(compute) }
        return try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            try expand(into: buffer.baseAddress!)
            initialized = count
        }
    }

    /// The tensor expanded to Float32, row-major, into `destination`
    /// (`elementCount` values), as `floats()` gives it: so that several
    /// tensors can be expanded into one buffer (stacked projections).
    /// Throws when the file was truncated or changed since it was opened.
    public func expand(into destination: UnsafeMutablePointer<Float>) throws {
        let count = elementCount
        guard count > 0 else { return }
        if case .computed(let compute) = storage {
            try computedValues(compute).withUnsafeBufferPointer { destination.update(from: $0.baseAddress!, count: count) }
            return
        }
        switch storedOrder {
        case .asShaped:
            try Self.forEachChunk(of: count, size: 1 << 20) { range in
                try expandStored(range.lowerBound, count: range.count, into: destination + range.lowerBound)
            }
        case .rowsPermuted(let order):
            let width = count / max(order.count, 1)
            try Self.forEachChunk(of: order.count, size: max(1, (1 << 20) / max(width, 1))) { rows in
                for r in rows { try expandStored(order[r] * width, count: width, into: destination + r * width) }
            }
        case .transposed:
            let (rows, cols) = (shape[0], shape[1])
            var stored = [Float](repeating: 0, count: count)
            try stored.withUnsafeMutableBufferPointer { try expandStored(0, count: count, into: $0.baseAddress!) }
            for c in 0..<cols {
                for r in 0..<rows { destination[r * cols + c] = stored[c * rows + r] }
            }
        }
        try checkUnchanged()
    }

    /// A computed tensor's values, checked to be `elementCount` of them.
    private func computedValues(_ compute: () throws -> [Float]) throws -> [Float] {
        let values = try compute()
        guard values.count == elementCount else {
            throw DroptraceError("tensor '\(name)' decoded to \(values.count) values, not \(elementCount)", path: path)
        }
        return values
    }

    /// Rows `rows` of a 2-D tensor (a 1-D tensor: all of it) expanded to
    /// Float32 into `destination`, `rows.count` × width values, row `i` of
    /// the output being row `rows[i]` of the tensor. Embedding lookups use
    /// this; they are never stored transposed.
    ///
    /// A file is read in ascending spans, not a row at a time: a batch's
    /// token rows are scattered over the whole table, and one read per row
    /// costs a disk seek each when the table is not cached (3 s for 8192
    /// tokens of a 32000 × 2048 bfloat16 table). Rows at most 256 KiB apart
    /// share a read of at most 8 MiB (or one row).
    /// Throws when a row is outside the tensor or the file changed since it
    /// was opened.
    public func expandRows(_ rows: [Int], into destination: UnsafeMutablePointer<Float>) throws {
        try expandRows(rows, into: destination, spanGap: 256 << 10, spanBytes: 8 << 20)
    }

    /// `expandRows` with the span limits given (tests use small ones).
    func expandRows(_ rows: [Int], into destination: UnsafeMutablePointer<Float>, spanGap: Int, spanBytes: Int) throws {
        let count = shape.count == 2 ? shape[0] : 1
        let width = shape.count == 2 ? shape[1] : elementCount
        if let row = rows.first(where: { $0 < 0 || $0 >= count }) {
            throw DroptraceError("row \(row) requested from tensor '\(name)' of \(count) rows", path: path)
        }
        let stored: [Int]
        switch storedOrder {
        case .asShaped: stored = rows
        case .rowsPermuted(let order): stored = rows.map { order[$0] }
        case .transposed: throw DroptraceError("single rows of tensor '\(name)' (stored transposed) are not expanded", path: path)
        }
        switch storage {
        case .memory:
            for (i, row) in stored.enumerated() { try expandStored(row * width, count: width, into: destination + i * width) }
        case .computed(let compute):
            try computedValues(compute).withUnsafeBufferPointer { all in
                for (i, row) in stored.enumerated() { (destination + i * width).update(from: all.baseAddress! + row * width, count: width) }
            }
        case .file(let file, let offset):
            try expandSpans(of: stored, width: width, file: file, offset: offset, gap: spanGap, limit: spanBytes, into: destination)
            try file.checkUnchanged()
        }
    }

    /// `expandRows` for a tensor in a file: output row `i` is stored row
    /// `stored[i]`; rows at most `gap` bytes apart share a read of at most
    /// `limit` bytes (or one row).
    private func expandSpans(
        of stored: [Int], width: Int, file: RegularFile, offset: Int, gap: Int, limit: Int,
        into destination: UnsafeMutablePointer<Float>
    ) throws {
        let rowBytes = dtype.byteCount(elements: width)
        guard rowBytes > 0 else { return }
        let order = stored.indices.sorted { stored[$0] < stored[$1] }
        // Spans of `order`: each from a stored row up to the last row close
        // enough to its predecessor that still fits in `limit` bytes.
        var spans: [Range<Int>] = []
        var start = 0
        while start < order.count {
            let first = stored[order[start]]
            var end = start + 1
            while end < order.count {
                let row = stored[order[end]], previous = stored[order[end - 1]]
                guard (row - previous - 1) * rowBytes <= gap, (row - first + 1) * rowBytes <= limit else { break }
                end += 1
            }
            spans.append(start..<end)
            start = end
        }
        func bytes(_ span: Range<Int>) -> Int { (stored[order[span.upperBound - 1]] - stored[order[span.lowerBound]] + 1) * rowBytes }
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: spans.map(bytes).max() ?? 1, alignment: 64)
        defer { scratch.deallocate() }
        for span in spans {
            let first = stored[order[span.lowerBound]]
            try file.read(bytes(span), at: offset + first * rowBytes, into: scratch)
            for k in span {
                let i = order[k], out = destination + i * width
                if k > span.lowerBound, stored[order[k - 1]] == stored[i] {
                    out.update(from: destination + order[k - 1] * width, count: width)  // a repeated row
                } else {
                    expandToFloat32(scratch + (stored[i] - first) * rowBytes, dtype: dtype, count: width, into: out)
                }
            }
        }
    }

    /// Whether the tensor is stored in a file as F32, F16 or BF16, so that
    /// expanding it costs little more than reading its bytes.
    public var isPlainFloatInFile: Bool {
        guard case .file = storage else { return false }
        return dtype == .float32 || dtype == .float16 || dtype == .bfloat16
    }

    /// Reads the stored bytes and discards them, so that the operating
    /// system's page cache holds them when the tensor is expanded; `scratch`
    /// (at least one byte) receives each piece in turn. Errors are ignored:
    /// the expansion reports them.
    public func warm(scratch: UnsafeMutableRawBufferPointer) {
        guard case .file(let file, let offset) = storage, let base = scratch.baseAddress, scratch.count > 0 else { return }
        var start = 0
        while start < byteCount {
            let count = min(scratch.count, byteCount - start)
            guard (try? file.read(count, at: offset + start, into: base)) != nil else { return }
            start += count
        }
    }

    /// The bytes as stored (a copy), for writing the tensor elsewhere unchanged.
    public func storedBytes() throws -> Data {
        var data = Data(count: byteCount)
        try data.withUnsafeMutableBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            try readStoredBytes(0, count: byteCount, into: base)
        }
        try checkUnchanged()
        return data
    }

    /// Copies `count` stored bytes from byte `start` of the tensor into
    /// `destination`, so that dequantisers can read a large tensor a chunk at
    /// a time. Throws when the range is outside the tensor or the read fails
    /// (callers check `checkUnchanged()` once they are done).
    func readStoredBytes(_ start: Int, count: Int, into destination: UnsafeMutableRawPointer) throws {
        guard start >= 0, count >= 0, count <= byteCount - start else {
            throw DroptraceError("\(count) bytes from byte \(start) requested from tensor '\(name)' of \(byteCount) bytes", path: path)
        }
        guard count > 0 else { return }
        switch storage {
        case .file(let file, let offset): try file.read(count, at: offset + start, into: destination)
        case .memory(let memory): destination.copyMemory(from: memory.bytes + start, byteCount: count)
        case .computed(let compute):
            try compute().withUnsafeBytes { destination.copyMemory(from: $0.baseAddress! + start, byteCount: count) }
        }
    }

    /// Expands `count` stored elements from element `start` (whole blocks).
    /// Float32 in a file is read straight into `destination`; other types go
    /// through a buffer of the chunk's stored bytes.
    private func expandStored(_ start: Int, count: Int, into destination: UnsafeMutablePointer<Float>) throws {
        let offset = dtype.byteCount(elements: start), length = dtype.byteCount(elements: count)
        switch storage {
        case .memory(let memory):
            expandToFloat32(memory.bytes + offset, dtype: dtype, count: count, into: destination)
        case .computed(let compute):
            try compute().withUnsafeBufferPointer { destination.update(from: $0.baseAddress! + start, count: count) }
        case .file(let file, let base) where dtype == .float32:
            try file.read(length, at: base + offset, into: destination)
        case .file(let file, let base):
            let stored = UnsafeMutableRawPointer.allocate(byteCount: max(length, 1), alignment: 16)
            defer { stored.deallocate() }
            try file.read(length, at: base + offset, into: stored)
            expandToFloat32(stored, dtype: dtype, count: count, into: destination)
        }
    }

    func checkUnchanged() throws {
        if case .file(let file, _) = storage { try file.checkUnchanged() }
    }

    /// Runs `body` over `0..<count` cut into pieces of `size`, concurrently when
    /// there are several; rethrows the first error once all pieces are done.
    static func forEachChunk(of count: Int, size: Int, _ body: (Range<Int>) throws -> Void) throws {
        let chunks = (count + size - 1) / size
        if chunks <= 1 {
            if count > 0 { try body(0..<count) }
            return
        }
        let lock = NSLock()
        var failure: Error?
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            do {
                try body((c * size)..<min(count, (c + 1) * size))
            } catch {
                lock.lock()
                if failure == nil { failure = error }
                lock.unlock()
            }
        }
        if let failure { throw failure }
    }
}

import DroptraceSupport
import Foundation
import TensorEngine

/// The hidden states h_0, h_1, …, h_L at block boundaries, kept for the
/// block-gap similarities mean cos(h_i, h_j) over all pairs i < j.
///
/// The pairs are computed once, after the forward pass, a chunk of rows at
/// a time: each state is read once, and a row's L + 1 vectors stay in cache
/// while all its pairs are taken (computing them layer by layer would read
/// the earlier states again at every layer, L²/2 passes over memory).
///
/// For large models all L + 1 states do not fit comfortably in memory
/// (TinyLlama-1.1B on 8k tokens: 1.5 GB), so past `memoryBudget` they go to
/// an unlinked temporary file and are read back in chunks: the page cache
/// holds them, not the process. Values stay Float32 either way, so the
/// similarities are exact. Each file write overlaps the next layer's
/// forward pass.
final class BoundaryStates {
    private let rows: Int
    private let cols: Int
    private var inMemory: [Matrix] = []
    private var descriptor: Int32 = -1
    /// The temporary file's name, for errors (it is unlinked at once).
    private var path = ""
    private var count = 0
    /// Row norms of each stored state, in Float64.
    private var norms: [[Double]] = []
    /// The file's writes run here, one at a time, while the next layer
    /// computes; `pending` is the one in flight (at most one state's
    /// memory is held for it).
    private let writer = DispatchQueue(label: "droptrace.boundary-states")
    private var pending: DispatchWorkItem?
    /// The first failed write's error, set on `writer`, read after `pending` is waited for.
    private var writeFailure: Error?

    init(rows: Int, cols: Int, expectedStates: Int, memoryBudget: Int = 768 << 20) throws {
        self.rows = rows
        self.cols = cols
        if expectedStates * rows * cols * MemoryLayout<Float>.size > memoryBudget {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("droptrace-states-\(getpid())-\(UUID().uuidString)").path
            descriptor = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else {
                throw DroptraceError("cannot create a temporary file for hidden states: \(String(cString: strerror(errno)))", path: path)
            }
            unlink(path)  // gone from the file system; freed when closed, even after a crash
        }
    }

    /// States written to `descriptor` (which it closes), named `path` in
    /// errors: tests give it a file whose writes fail.
    init(rows: Int, cols: Int, descriptor: Int32, path: String) {
        (self.rows, self.cols, self.descriptor, self.path) = (rows, cols, descriptor, path)
    }

    deinit {
        pending?.wait()
        if descriptor >= 0 { close(descriptor) }
    }

    private var rowBytes: Int { cols * MemoryLayout<Float>.size }

    /// Keeps `state`: its row norms, and its values in memory or in the
    /// file. A file write runs in the background, after the previous one;
    /// a failed write is thrown by the next `append` or by `pairTotals`.
    func append(_ state: Matrix) throws {
        norms.append(rowNorms(state.data))
        if descriptor < 0 {
            inMemory.append(state)
        } else {
            try finishWriting()
            // States are written one after another (reads use explicit offsets and leave the position alone).
            let write = DispatchWorkItem { [self] in
                do {
                    try state.data.withUnsafeBytes { try FileOutput.writeAll($0, to: descriptor, path: path) }
                } catch {
                    writeFailure = error
                }
            }
            pending = write
            writer.async(execute: write)
        }
        count += 1
    }

    /// Waits for the write in flight; throws its error.
    private func finishWriting() throws {
        pending?.wait()
        pending = nil
        if let writeFailure { throw writeFailure }
    }

    /// Float64 totals over rows for one pair of states.
    struct GapTotals {
        var cosine = 0.0
        var angularDistance = 0.0
        var lastTokenAngularDistance = 0.0

        mutating func add(_ other: GapTotals) {
            cosine += other.cosine
            angularDistance += other.angularDistance
            lastTokenAngularDistance += other.lastTokenAngularDistance
        }

        var isFinite: Bool { cosine.isFinite && angularDistance.isFinite && lastTokenAngularDistance.isFinite }
    }

    /// For every pair of stored states i < j, the totals over rows of
    /// cos(h_i, h_j), of its angular distance, and of the angular distance
    /// at `lastRows` (each sequence's last token): `result[j - 1][i]`.
    /// Chunks of rows run in parallel; their partial totals are added in
    /// row order, so the result does not depend on the thread count.
    /// Throws when the temporary file cannot be read back.
    func pairTotals(lastRows: [Int]) throws -> [[GapTotals]] {
        try finishWriting()
        let states = count
        let pairs = states * (states - 1) / 2
        guard pairs > 0, rows > 0 else { return (1..<max(states, 1)).map { [GapTotals](repeating: GapTotals(), count: $0) } }
        var isLast = [Bool](repeating: false, count: rows)
        for row in lastRows { isLast[row] = true }
        let chunk = 64
        let chunks = (rows + chunk - 1) / chunk
        let workers = min(EngineThreads.count, chunks)
        var partial = [GapTotals](repeating: GapTotals(), count: chunks * pairs)
        // Per worker: one chunk of rows of every state, read from the file,
        // and whether a read failed.
        var buffers = (0..<workers).map { _ in [Float](repeating: 0, count: descriptor >= 0 ? states * chunk * cols : 0) }
        var unreadable = [Bool](repeating: false, count: workers)
        let kernels = VectorKernels.active
        partial.withUnsafeMutableBufferPointer { partial in
            buffers.withUnsafeMutableBufferPointer { buffers in
                unreadable.withUnsafeMutableBufferPointer { unreadable in
                    parallelTasks(chunks) { c, worker in
                        let start = c * chunk, end = min(rows, start + chunk)
                        let totals = partial.baseAddress! + c * pairs
                        let read = withChunk(start..<end, buffer: &buffers[worker]) { state in
                            for r in start..<end {
                                let offset = (r - start) * cols
                                for j in 1..<states {
                                    let y = state(j) + offset
                                    for i in 0..<j {
                                        let cosine = kernels.dot(state(i) + offset, y, cols) / max(norms[i][r] * norms[j][r], 1e-8)
                                        let angular = SequenceSums.angularDistance(cosine)
                                        let p = j * (j - 1) / 2 + i
                                        totals[p].cosine += cosine
                                        totals[p].angularDistance += angular
                                        if isLast[r] { totals[p].lastTokenAngularDistance += angular }
                                    }
                                }
                            }
                        }
                        if !read { unreadable[worker] = true }
                    }
                }
            }
        }
        if unreadable.contains(true) {
            throw DroptraceError("cannot read hidden states back from the temporary file: \(String(cString: strerror(errno)))")
        }
        var result = (1..<states).map { [GapTotals](repeating: GapTotals(), count: $0) }
        for c in 0..<chunks {
            for j in 1..<states {
                for i in 0..<j { result[j - 1][i].add(partial[c * pairs + j * (j - 1) / 2 + i]) }
            }
        }
        return result
    }

    /// Calls `body` with a function giving, for each state, a pointer to the
    /// first of rows `range`: in place in memory, else read into `buffer`.
    /// Returns false when the file could not be read back.
    private func withChunk(
        _ range: Range<Int>, buffer: inout [Float], _ body: ((Int) -> UnsafePointer<Float>) -> Void
    ) -> Bool {
        guard descriptor >= 0 else {
            withStatePointers(from: 0, [], range.lowerBound * cols) { pointers in body { pointers[$0] } }
            return true
        }
        let wanted = range.count * rowBytes
        let complete = buffer.withUnsafeMutableBytes { raw in
            (0..<count).allSatisfy { index in
                let offset = off_t(index) * off_t(rows * rowBytes) + off_t(range.lowerBound * rowBytes)
                var done = 0
                while done < wanted {
                    let n = pread(descriptor, raw.baseAddress! + index * wanted + done, wanted - done, offset + off_t(done))
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return false }
                    done += n
                }
                return true
            }
        }
        guard complete else { return false }
        buffer.withUnsafeBufferPointer { values in
            let base = values.baseAddress!
            body { base + $0 * range.count * cols }
        }
        return true
    }

    /// Pointers at element `offset` of every in-memory state, valid inside `body`.
    private func withStatePointers(
        from index: Int, _ pointers: [UnsafePointer<Float>], _ offset: Int, _ body: ([UnsafePointer<Float>]) -> Void
    ) {
        guard index < inMemory.count else { return body(pointers) }
        inMemory[index].data.withUnsafeBufferPointer { state in
            withStatePointers(from: index + 1, pointers + [state.baseAddress! + offset], offset, body)
        }
    }

    private func rowNorms(_ data: [Float]) -> [Double] {
        var norms = [Double](repeating: 0, count: rows)
        data.withUnsafeBufferPointer { values in
            norms.withUnsafeMutableBufferPointer { norms in
                parallelFor(chunks: rows, minimumChunk: 256) { range in
                    for r in range {
                        let row = values.baseAddress! + r * cols
                        norms[r] = VectorKernels.active.dot(row, row, cols).squareRoot()
                    }
                }
            }
        }
        return norms
    }
}


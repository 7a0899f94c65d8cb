import DroptraceSupport
import Foundation
import TensorEngine

/// The hidden states h_0, h_1, … at block boundaries, kept for the
/// block-gap similarities mean cos(h_i, h_j).
///
/// For large models all L + 1 states do not fit comfortably in memory
/// (TinyLlama-1.1B on 8k tokens: 1.5 GB), so past `memoryBudget` they go to
/// an unlinked temporary file and are read back in chunks: the page cache
/// holds them, not the process. Values stay Float32 either way, so the
/// similarities are exact.
final class BoundaryStates {
    private let rows: Int
    private let cols: Int
    private var inMemory: [Matrix] = []
    private var file: FileHandle?
    private var descriptor: Int32 = -1
    private var count = 0
    /// Row norms of each stored state, in Float64.
    private var norms: [[Double]] = []

    init(rows: Int, cols: Int, expectedStates: Int, memoryBudget: Int = 768 << 20) throws {
        self.rows = rows
        self.cols = cols
        if expectedStates * rows * cols * MemoryLayout<Float>.size > memoryBudget {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("droptrace-states-\(getpid())-\(UUID().uuidString)").path
            descriptor = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else {
                throw DroptraceError("cannot create a temporary file for hidden states: \(String(cString: strerror(errno)))", path: path)
            }
            unlink(path)  // gone from the file system; freed when closed, even after a crash
        }
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
    }

    private var rowBytes: Int { cols * MemoryLayout<Float>.size }

    func append(_ state: Matrix) throws {
        norms.append(rowNorms(state.data))
        if descriptor < 0 {
            inMemory.append(state)
        } else {
            let offset = off_t(count) * off_t(rows * rowBytes)
            let written = state.data.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, offset) }
            guard written == rows * rowBytes else {
                throw DroptraceError("cannot write hidden states to the temporary directory: \(String(cString: strerror(errno)))")
            }
        }
        count += 1
    }

    /// Totals over rows of cos(state_i, y_r), of its angular distance, and
    /// of the angular distance at `lastRows` (each sequence's last token),
    /// for every stored state i, in order; nil if any value is not finite.
    func cosineSums(with y: Matrix, lastRows: [Int]) -> [GapTotals]? {
        let yNorms = rowNorms(y.data)
        var isLast = [Bool](repeating: false, count: rows)
        for row in lastRows { isLast[row] = true }
        let chunk = 256
        var totals: [GapTotals] = []
        for index in 0..<count {
            var sums = [GapTotals](repeating: GapTotals(), count: (rows + chunk - 1) / chunk)
            y.data.withUnsafeBufferPointer { ys in
                sums.withUnsafeMutableBufferPointer { partial in
                    parallelFor(chunks: partial.count) { chunks in
                        var buffer = [Float](repeating: 0, count: descriptor >= 0 ? chunk * cols : 0)
                        for c in chunks {
                            let start = c * chunk, end = min(rows, start + chunk)
                            withStateRows(index, start..<end, buffer: &buffer) { state in
                                var sum = GapTotals()
                                for r in start..<end {
                                    let a = state + (r - start) * cols, b = ys.baseAddress! + r * cols
                                    let cosine = Reductions.dot(a, b, cols) / max(norms[index][r] * yNorms[r], 1e-8)
                                    let angular = SequenceSums.angularDistance(cosine)
                                    sum.cosine += cosine
                                    sum.angularDistance += angular
                                    if isLast[r] { sum.lastTokenAngularDistance += angular }
                                }
                                partial[c] = sum
                            }
                        }
                    }
                }
            }
            let total = sums.reduce(into: GapTotals()) { total, part in
                total.cosine += part.cosine
                total.angularDistance += part.angularDistance
                total.lastTokenAngularDistance += part.lastTokenAngularDistance
            }
            guard total.cosine.isFinite, total.angularDistance.isFinite, total.lastTokenAngularDistance.isFinite else {
                return nil
            }
            totals.append(total)
        }
        return totals
    }

    /// Float64 totals over rows for one pair of states.
    struct GapTotals {
        var cosine = 0.0
        var angularDistance = 0.0
        var lastTokenAngularDistance = 0.0
    }

    private func withStateRows(
        _ index: Int, _ range: Range<Int>, buffer: inout [Float], _ body: (UnsafePointer<Float>) -> Void
    ) {
        if descriptor < 0 {
            inMemory[index].data.withUnsafeBufferPointer { body($0.baseAddress! + range.lowerBound * cols) }
            return
        }
        let offset = off_t(index) * off_t(rows * rowBytes) + off_t(range.lowerBound * rowBytes)
        buffer.withUnsafeMutableBytes { raw in
            var done = 0
            let wanted = range.count * rowBytes
            while done < wanted {
                let n = pread(descriptor, raw.baseAddress! + done, wanted - done, offset + off_t(done))
                if n <= 0 { break }
                done += n
            }
        }
        buffer.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    private func rowNorms(_ data: [Float]) -> [Double] {
        data.withUnsafeBufferPointer { values in
            (0..<rows).map { r in
                let row = values.baseAddress! + r * cols
                return Reductions.dot(row, row, cols).squareRoot()
            }
        }
    }
}

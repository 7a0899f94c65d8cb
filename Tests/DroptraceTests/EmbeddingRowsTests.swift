@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Testing

/// Embedding lookups read a table's rows in ascending spans; whatever the
/// spans, row `i` of the output must be row `ids[i]` of the table.
@Suite struct EmbeddingRowsTests {
    static let (rows, width) = (64, 4)

    /// A bfloat16 table whose element (r, c) is r · width + c (exact in bfloat16).
    func table(in scratch: ScratchDirectory) throws -> TensorSlice {
        var bytes = Data()
        for r in 0..<Self.rows {
            for c in 0..<Self.width {
                let bits = UInt16(truncatingIfNeeded: Float(r * Self.width + c).bitPattern >> 16)
                withUnsafeBytes(of: bits.littleEndian) { bytes.append(contentsOf: $0) }
            }
        }
        let url = scratch.path("table.safetensors")
        let entry = SafetensorsWriter.Entry(name: "embed_tokens.weight", dtype: .bfloat16, shape: [Self.rows, Self.width], bytes: bytes)
        try SafetensorsWriter.encode([entry]).write(to: url)
        return try #require(SafetensorsFile(path: url.path).tensors["embed_tokens.weight"])
    }

    func expected(_ ids: [Int]) -> [Float] {
        ids.flatMap { r in (0..<Self.width).map { Float(r * Self.width + $0) } }
    }

    /// Unsorted ids with repeats, near and far apart, under span limits that
    /// cut them into several reads (one row = 8 bytes), and the defaults.
    @Test(arguments: [(0, 8), (8, 24), (16, 1 << 20), (1 << 20, 32), (256 << 10, 8 << 20)])
    func rowsComeOutInTheOrderAsked(gap: Int, limit: Int) throws {
        let scratch = try ScratchDirectory()
        let slice = try table(in: scratch)
        let ids = [63, 0, 5, 5, 6, 40, 0, 62, 7, 63, 1, 33]
        var values = [Float](repeating: .nan, count: ids.count * Self.width)
        try values.withUnsafeMutableBufferPointer {
            try slice.expandRows(ids, into: $0.baseAddress!, spanGap: gap, spanBytes: limit)
        }
        #expect(values == expected(ids))
    }

    @Test func allRowsReversedMatchTheWholeTable() throws {
        let scratch = try ScratchDirectory()
        let slice = try table(in: scratch)
        let ids = Array((0..<Self.rows).reversed())
        var values = [Float](repeating: .nan, count: ids.count * Self.width)
        try values.withUnsafeMutableBufferPointer { try slice.expandRows(ids, into: $0.baseAddress!) }
        #expect(values == expected(ids))
        #expect(Array(values.suffix(Self.width)) == Array(try slice.floats().prefix(Self.width)))
    }

    @Test func aRowOutsideTheTableIsAnErrorNamingTheFile() throws {
        let scratch = try ScratchDirectory()
        let slice = try table(in: scratch)
        var values = [Float](repeating: 0, count: 3 * Self.width)
        for bad in [[0, Self.rows, 1], [-1]] {
            do {
                try values.withUnsafeMutableBufferPointer { try slice.expandRows(bad, into: $0.baseAddress!) }
                Issue.record("rows \(bad) were expanded")
            } catch let error as DroptraceError {
                #expect(error.path == slice.path)
                #expect(error.message.contains("row \(bad.first { $0 < 0 || $0 >= Self.rows }!) requested"), "\(error)")
            }
        }
    }
}

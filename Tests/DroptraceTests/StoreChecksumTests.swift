import DroptraceSupport
import Foundation
import ScoreStore
import Testing

/// Every store begins with a 512-byte HDF5 user block holding the SHA-256 of
/// the rest; a store changed after it was written (a flipped bit anywhere,
/// the header included) is refused with one line before libhdf5 reads it
/// (fuzzing found libhdf5 segfaulting on damaged metadata, or returning
/// garbled names with exit 0). Stores from before the checksum still read.
@Suite struct StoreChecksumTests {
    /// A store scored from the llama-f32 fixture, at `run/scores.h5`.
    static func scoredStore(in scratch: ScratchDirectory) throws -> URL {
        let directory = scratch.path("run")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let store = directory.appendingPathComponent("scores.h5")
        let result = try DroptraceCommand.run(
            ["score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
             "--output", store.path])
        try #require(result.status == 0, "\(result.stderr)")
        return store
    }

    @Test func aStoreBeginsWithItsChecksumAndReadsBack() throws {
        let scratch = try ScratchDirectory()
        let store = try Self.scoredStore(in: scratch)
        let bytes = try Data(contentsOf: store)
        #expect(bytes.starts(with: Data("droptrace store\nsha256 ".utf8)))
        #expect(bytes[512..<520] == Data([0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]), "HDF5 superblock after the user block")
        #expect(try ScoreFile.read(from: store).rows.count == 1)
    }

    @Test func anyChangedByteIsRefusedInOneLine() throws {
        let scratch = try ScratchDirectory()
        let store = try Self.scoredStore(in: scratch)
        let original = try Data(contentsOf: store)
        // The magic, a digest digit, the length, the padding, the superblock, and deep in the data.
        for offset in [3, 30, 95, 300, 520, original.count / 2, original.count - 1] {
            var damaged = original
            damaged[offset] ^= 0x01
            try damaged.write(to: store)
            let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: store) }
            #expect(error?.path == store.path && error?.message.contains("damaged") == true,
                    "offset \(offset): \(String(describing: error))")
            let report = try DroptraceCommand.run(["report", store.deletingLastPathComponent().path])
            let errors = report.stderr.split(separator: "\n").filter { $0.contains("error") }
            #expect(report.status == 1 && errors.count == 1, "offset \(offset): \(report.stderr)")
        }
        try original.dropLast().write(to: store)
        #expect(throws: DroptraceError.self) { try ScoreFile.read(from: store) }
    }

    @Test func aStoreFromBeforeTheChecksumStillReads() throws {
        let scratch = try ScratchDirectory()
        let store = try Self.scoredStore(in: scratch)
        let expected = try ScoreFile.read(from: store)
        // Without the user block the file is what earlier versions wrote: HDF5's signature at byte 0.
        try Data(try Data(contentsOf: store).dropFirst(512)).write(to: store)
        #expect(try ScoreFile.read(from: store) == expected)
    }
}

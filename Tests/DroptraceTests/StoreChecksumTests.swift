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

    /// A change droptrace did not make (h5py opening the store for
    /// writing, an attribute added) is refused as damage until `reseal`
    /// accepts the store as it now is; what does not read stays refused.
    @Test func resealAcceptsAStoreChangedOutsideDroptrace() throws {
        let scratch = try ScratchDirectory()
        let store = try Self.scoredStore(in: scratch)
        let directory = store.deletingLastPathComponent()
        let original = try Data(contentsOf: store)
        let file = try HDF5File.open(at: store, writable: true)
        try file.setAttribute("my_note", "kept")
        try file.close()
        // As another tool leaves it: the body changed, the checksum block as droptrace wrote it.
        var changed = try Data(contentsOf: store)
        changed.replaceSubrange(0..<512, with: original[0..<512])
        try changed.write(to: store)
        let refused = try DroptraceCommand.run(["report", directory.path])
        #expect(refused.status == 1 && refused.stderr.contains("`droptrace reseal` accepts it as it now is"), "\(refused.stderr)")

        let resealed = try DroptraceCommand.run(["reseal", directory.path])
        #expect(resealed.status == 0, "\(resealed.stderr)")
        #expect(try Data(contentsOf: store).dropFirst(512) == changed.dropFirst(512), "nothing but the checksum changes")
        #expect(try ScoreFile.read(from: store).rows.count == 1)
        let reopened = try HDF5File.open(at: store)
        #expect(try reopened.stringAttribute("my_note") == "kept")
        try reopened.close()
        #expect(try DroptraceCommand.run(["report", directory.path]).status == 0)

        // A body that does not read is not resealed: the file stays as it was.
        var broken = try Data(contentsOf: store)
        broken.replaceSubrange(512..<520, with: Data(repeating: 0, count: 8))
        try broken.write(to: store)
        let notAStore = try DroptraceCommand.run(["reseal", store.path])
        #expect(notAStore.status == 1 && notAStore.stderr.contains("is not a droptrace store"), "\(notAStore.stderr)")
        #expect(try Data(contentsOf: store) == broken)
    }

    /// `reseal` accepts a changed store only as a store droptrace could have
    /// written: a verdict its own criteria contradict, or scores that are not
    /// the means their per-sequence sums give, are refused naming what
    /// disagrees (the report stated "inherent" above a table of failing
    /// criteria; a trace then put intervals around the sums, far from the
    /// scores). The store stays as it was.
    @Test func resealRefusesAStoreThatContradictsItself() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        _ = try series.add(step: 1)
        _ = try series.add(step: 2)
        let output = scratch.path("out")
        try #require(try DroptraceCommand.run([
            "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path,
        ]).status == 0)
        let store = output.appendingPathComponent("scores.h5")
        func resealed(after change: (HDF5File) throws -> Void) throws -> DroptraceCommand.Result {
            let original = try Data(contentsOf: store)
            defer { try? original.write(to: store) }
            let file = try HDF5File.open(at: store, writable: true)
            try change(file)
            try file.close()
            let changed = try Data(contentsOf: store)
            let result = try DroptraceCommand.run(["reseal", output.path])
            #expect(try Data(contentsOf: store) == changed, "a refused reseal leaves the store as it was")
            return result
        }
        let verdict = try resealed { try $0.group("analysis").setAttribute("verdict", "inherent") }
        #expect(verdict.status == 1)
        #expect(verdict.stderr.contains("/analysis attribute verdict is 'inherent', but its criteria (verdict_criteria) give 'inconclusive'"),
                "\(verdict.stderr)")
        let scores = try resealed { file in
            var values = try file.dataset("scores/attention").read(as: Float.self)
            values[6] += 0.25
            try file.remove("scores/attention")
            try file.createDataset("scores/attention", values: values, shape: [2, 5])
        }
        #expect(scores.status == 1)
        #expect(scores.stderr.contains("/scores/attention of checkpoint 'checkpoint-2', layer 1, is "), "\(scores.stderr)")
        #expect(scores.stderr.contains("but its per-sequence sums (/per_sequence) give"), "\(scores.stderr)")
        // Beyond float32 rounding, however small (a 1e-5 change passed before); one float32 step is rounding.
        // (The analysis, of the scores as they were, goes: the next trace analyses them again.)
        func attentionChanged(_ change: @escaping (Float) -> Float) throws -> DroptraceCommand.Result {
            try resealed { file in
                var values = try file.dataset("scores/attention").read(as: Float.self)
                values[6] = change(values[6])
                try file.remove("scores/attention")
                try file.createDataset("scores/attention", values: values, shape: [2, 5])
                try file.remove("analysis")
            }
        }
        let slightly = try attentionChanged { $0 + 2e-6 }
        #expect(slightly.status == 1 && slightly.stderr.contains("but its per-sequence sums (/per_sequence) give"), "\(slightly.stderr)")
        #expect(try attentionChanged { $0.nextUp }.status == 0)
        // The bootstrap's settings must be the ones that gave its intervals.
        let confidence = try resealed { try $0.group("analysis").setAttribute("bootstrap_confidence", 0.5) }
        #expect(confidence.status == 1)
        #expect(confidence.stderr.contains("the intervals or drop-k probabilities of /analysis/attention are not the ones its bootstrap"),
                "\(confidence.stderr)")
        let sequences = try resealed { try $0.group("analysis").setAttribute("bootstrap_sequences", Int64(999)) }
        #expect(sequences.status == 1)
        #expect(sequences.stderr.contains("bootstrap_sequences is 999, but the per-sequence sums hold"), "\(sequences.stderr)")
        #expect(try DroptraceCommand.run(["reseal", output.path]).status == 0, "the store as droptrace wrote it reseals")
        // Messages name the store, not the copy reseal validates, nor nothing.
        #expect(verdict.stderr.contains(" error: \(store.path): /analysis attribute verdict"), "\(verdict.stderr)")
        let directory = scratch.path("empty")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let empty = directory.appendingPathComponent("scores.h5")
        try ScoreFile(metadata: AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows).metadata, rows: []).write(to: empty, extra: nil)
        let file = try HDF5File.open(at: empty, writable: true)
        try file.setAttribute("note", "changed outside droptrace")
        try file.close()
        for command in ["reseal", "report"] {
            let result = try DroptraceCommand.run([command, directory.path])
            #expect(result.status == 1 && result.stderr.contains(" error: \(empty.path): "), "\(result.stderr)")
        }
    }

    /// `reseal` on a store named by its path takes the output directory's
    /// lock, follows a link to the store, keeps its permissions, and leaves
    /// nothing in a directory without a store.
    @Test func resealLocksFollowsLinksAndKeepsPermissions() throws {
        let scratch = try ScratchDirectory()
        let store = try Self.scoredStore(in: scratch)
        let directory = store.deletingLastPathComponent()
        chmod(store.path, 0o600)
        let link = scratch.path("link.h5")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: store)
        #expect(try DroptraceCommand.run(["reseal", link.path]).status == 0)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link.path) == store.path, "the link stays a link")
        #expect((try FileManager.default.attributesOfItem(atPath: store.path)[.posixPermissions] as? Int) == 0o600)

        _ = FileManager.default.createFile(atPath: directory.appendingPathComponent(".droptrace.lock").path, contents: nil)
        let lock = open(directory.appendingPathComponent(".droptrace.lock").path, O_RDWR)
        defer { close(lock) }
        try #require(flock(lock, LOCK_EX | LOCK_NB) == 0)
        #expect(try DroptraceCommand.run(["reseal", store.path]).status == 75, "another run holds the directory's lock")
        // Named by a link from elsewhere it is the same store a run of that
        // directory rewrites: resealed under the same lock (it was resealed
        // meanwhile, and rows a run stored meanwhile were lost).
        #expect(try DroptraceCommand.run(["reseal", link.path]).status == 75, "a link to the store takes its directory's lock")
        flock(lock, LOCK_UN)

        let empty = scratch.path("checkpoint")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        #expect(try DroptraceCommand.run(["reseal", empty.path]).status == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: empty.path).isEmpty)
        #expect(try DroptraceCommand.run(["reseal", ""]).status == 64)
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

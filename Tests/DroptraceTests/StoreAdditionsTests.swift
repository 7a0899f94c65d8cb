import Foundation
import ScoreStore
import Testing

/// What a user adds at a store's root (with h5py, then `droptrace reseal`)
/// was dropped without a word when a later trace rewrote the store from its
/// rows. The store's writer writes droptrace's layout only, so the store as
/// it was is kept beside it, named in a warning, before the first rewrite.
@Suite struct StoreAdditionsTests {
    @Test func aRewriteKeepsTheStoreWithWhatAUserAddedBesideIt() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100)
        let output = scratch.path("out")
        let store = output.appendingPathComponent("scores.h5")
        func trace() throws -> DroptraceCommand.Result {
            try DroptraceCommand.run(["trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path,
                                      "--output", output.path])
        }
        try #require(try trace().status == 0)
        func asides() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: output.path).filter { $0.hasPrefix("scores.h5.additions-") }
        }

        // Nothing added: a rewrite keeps nothing aside.
        try series.add(step: 200)
        let plain = try trace()
        #expect(plain.status == 0 && !plain.stderr.contains("does not write"), "\(plain.stderr)")
        #expect(try asides().isEmpty)

        // droptrace's writer renews the checksum on close, as `reseal` does after h5py.
        let file = try HDF5File.open(at: store, writable: true)
        try file.createDataset("notes/loss", values: [2.5, 2.25, 2.0])
        try file.setAttribute("run_id", "seed-7")
        try file.close()
        let before = try Data(contentsOf: store)

        // Nothing new: the store is not rewritten, nothing is set aside.
        #expect(try trace().status == 0)
        #expect(try asides().isEmpty && Data(contentsOf: store) == before)

        try series.add(step: 300)
        let rewrite = try trace()
        #expect(rewrite.status == 0, "\(rewrite.stderr)")
        let kept = try asides()
        try #require(kept.count == 1, "\(kept)")
        #expect(rewrite.stderr.contains("holds what droptrace does not write (/notes, root attribute 'run_id'); the rewritten store has droptrace's contents only, and the store as it was, with them, is kept as \(kept[0])"),
                "\(rewrite.stderr)")
        #expect(try Data(contentsOf: output.appendingPathComponent(kept[0])) == before, "the store as it was, byte for byte")
        #expect(try ScoreFile.read(from: store).rows.map(\.name) == ["checkpoint-100", "checkpoint-200", "checkpoint-300"])
        let rewritten = try HDF5File.open(at: store)
        #expect(try !rewritten.exists("notes") && !rewritten.hasAttribute("run_id"))
        try rewritten.close()

        // The next rewrite has nothing more to keep.
        try series.add(step: 400)
        #expect(try trace().status == 0)
        #expect(try asides() == kept)
    }
}

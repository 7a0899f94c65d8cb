import DroptraceSupport
import Foundation
import ScoreStore
import Testing

/// A damaged HDF5 file can declare far more values than it holds (chunked
/// storage with no chunks written is valid HDF5). Opening such a dataset
/// fails with one line naming the file, before anything is allocated for
/// it (the stores in Fixtures/stores, from
/// scripts/fixtures/make_damaged_store_fixtures.py; by fuzzing, a flipped
/// byte asked for 27 PB or grew to 10 GB).
@Suite struct DamagedDataspaceTests {
    private func store(_ name: String) -> String { FixtureFiles.root.appendingPathComponent("stores/\(name)").path }

    @Test(arguments: [("huge-names.h5", "checkpoints/name"), ("huge-scores.h5", "scores/attention")])
    func datasetClaimingMoreValuesThanTheFileHoldsIsRefused(file: String, dataset: String) throws {
        let path = store(file)
        let opened = try HDF5File.open(at: path)
        let error = #expect(throws: DroptraceError.self) { try opened.dataset(dataset) }
        #expect(error?.path == path)
        #expect(error?.message.contains("damaged") == true, "\(String(describing: error))")
        try opened.close()
    }

    @Test func fixedLengthStringsBeyondTheFileAreRefused() throws {
        let path = store("huge-fixed.h5")
        let opened = try HDF5File.open(at: path)
        let names = try opened.dataset("checkpoints/name")
        let error = #expect(throws: DroptraceError.self) { try names.readStrings() }
        #expect(error?.path == path)
        #expect(error?.message.contains("damaged") == true, "\(String(describing: error))")
        try opened.close()
    }
}

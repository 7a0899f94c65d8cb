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
        // No chunk is written either: refused as soon as it is opened.
        let error = #expect(throws: DroptraceError.self) { try opened.dataset("checkpoints/name").readStrings() }
        #expect(error?.path == path)
        #expect(error?.message.contains("damaged") == true, "\(String(describing: error))")
        try opened.close()
    }

    /// Values not all in the file — never written, kept in other files,
    /// mapped from elsewhere, reached through a link — are refused when the
    /// dataset is opened: droptrace writes none of these, and a link or an
    /// external file would be read past the store's checksum and the
    /// pre-read check (by fuzzing: a 275 KB store of unwritten chunks
    /// claiming 300 million names took 7 GB, an external file's text became
    /// checkpoint names).
    @Test(arguments: [
        ("unwritten-names.h5", "checkpoints/name", "holds values that were never written"),
        ("partly-written.h5", "scores/attention", "holds values that were never written"),
        ("external-storage.h5", "scores/attention", "keeps its values in external files"),
        ("virtual.h5", "scores/attention", "is a virtual dataset"),
        ("soft-link.h5", "scores/attention", "/scores is a soft link"),
        ("external-link.h5", "scores/values", "/scores is an external link"),
        // Storage whose reading costs far more than the file: a 2 MB store's one chunk of 2 GB took 2 GB and 11 s.
        ("extendible.h5", "scores/attention", "has a maximum shape beyond its shape"),
        ("huge-chunk.h5", "scores/attention", "stores its values in chunks of 67174400 bytes"),
        ("lzf.h5", "scores/attention", "is compressed with HDF5 filter 32000 (lzf), which this libhdf5 cannot decode"),
    ])
    func valuesNotInTheFileAreRefused(file: String, dataset: String, problem: String) throws {
        let path = store(file)
        let opened = try HDF5File.open(at: path)
        let error = #expect(throws: DroptraceError.self) { try opened.dataset(dataset) }
        #expect(error?.path == path)
        #expect(error?.message.contains(problem) == true, "\(String(describing: error))")
        try opened.close()
    }

    /// Variable-length strings may share one string's storage: 1,024 names
    /// pointing at one 16 KiB string are 16 MiB from an 84 KB file (by
    /// fuzzing, 2 GB from 1.4 MB). They are refused before they are read.
    @Test func stringsSharingStorageBeyondTheFileAreRefused() throws {
        let path = store("aliased-strings.h5")
        let opened = try HDF5File.open(at: path)
        let names = try opened.dataset("checkpoints/name")
        let error = #expect(throws: DroptraceError.self) { try names.readStrings() }
        #expect(error?.message.contains("more than the file holds") == true, "\(String(describing: error))")
        try opened.close()
    }
}

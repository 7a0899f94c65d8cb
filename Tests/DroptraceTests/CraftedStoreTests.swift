import DroptraceSupport
import Foundation
import Synchronization
@testable import ScoreStore
import Testing

/// A store whose HDF5 metadata was crafted, not damaged: its checksum was
/// recomputed (or it has none, as stores from before the checksum). libhdf5
/// trusts such metadata and segfaults or loops inside `H5Aread`; every
/// store is therefore read once in a child process first (`HDF5Probe`), and
/// such a store is refused in one line instead.
@Suite struct CraftedStoreTests {
    /// A scored store without its checksum block (as earlier versions wrote
    /// it), so that its HDF5 bytes can be edited and still be read.
    private func storeWithoutChecksum(in scratch: ScratchDirectory) throws -> URL {
        let store = try StoreChecksumTests.scoredStore(in: scratch)
        try Data(try Data(contentsOf: store).dropFirst(512)).write(to: store)
        return store
    }

    /// Offsets of the objects of the file's global heap collection (HDF5
    /// format spec, "Global Heap"): each an index (2 bytes), a reference
    /// count (2), 4 reserved, its size (8), then its data padded to 8.
    private func globalHeapObjects(_ bytes: [UInt8]) throws -> [(index: Int, offset: Int)] {
        let signature = Array("GCOL".utf8)
        let start = try #require((0..<(bytes.count - 16)).first { Array(bytes[$0..<($0 + 4)]) == signature })
        func number(_ at: Int, _ width: Int) -> Int {
            (0..<width).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) }
        }
        let end = start + number(start + 8, 8)
        var objects: [(index: Int, offset: Int)] = []
        var offset = start + 16
        while offset + 16 <= end {
            let index = number(offset, 2)
            objects.append((index, offset))
            if index == 0 { break }  // the free space runs to the end
            offset += 16 + (number(offset + 8, 8) + 7) / 8 * 8
        }
        return objects
    }

    private func expectRefused(_ store: URL, saying words: String) throws {
        let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: store) }
        #expect(error?.path == store.path && error?.message.contains(words) == true, "\(String(describing: error))")
        let report = try DroptraceCommand.run(["report", store.deletingLastPathComponent().path])
        let errors = report.stderr.split(separator: "\n").filter { $0.contains("error") }
        #expect(report.status == 1 && errors.count == 1, "\(report.stderr)")
    }

    private func setSize(of object: Int, to size: UInt64, in store: URL) throws {
        var bytes = Array(try Data(contentsOf: store))
        let offset = try #require(try globalHeapObjects(bytes).first { $0.index == object }?.offset)
        for byte in 0..<8 { bytes[offset + 8 + byte] = UInt8(truncatingIfNeeded: size >> (8 * UInt64(byte))) }
        try Data(bytes).write(to: store)
    }

    @Test func anUneditedStoreWithoutChecksumReads() throws {
        let scratch = try ScratchDirectory()
        let store = try storeWithoutChecksum(in: scratch)
        #expect(try globalHeapObjects(Array(try Data(contentsOf: store))).count > 2)
        #expect(try ScoreFile.read(from: store).rows.count == 1)
    }

    /// A compressed dataset expands to far more than its file holds (4e8
    /// zeros in 14 MB took 3.2 GB to check): the probe reads datasets in
    /// slabs of at most 2^20 elements. Datasets of one, two and three
    /// dimensions, each beyond a slab in a different way, read through.
    @Test func compressedDatasetsBeyondOneSlabAreProbedWhole() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("big.h5")
        let file = try HDF5File.create(at: url)
        try file.createDataset("line", values: [Double](repeating: 0, count: (1 << 21) + 5), storage: .compressed(level: 9))
        try file.createDataset("rows", values: [Float](repeating: 1, count: 3 * ((1 << 20) + 1)), shape: [3, (1 << 20) + 1],
                               storage: .compressed(level: 9))
        try file.createDataset("cube", values: [Int32](repeating: 2, count: 5 * 600 * 700), shape: [5, 600, 700],
                               storage: .compressed(level: 9))
        try file.close()
        #expect(try Data(contentsOf: url).count < 1 << 20)
        let reopened = try HDF5File.open(at: url)
        #expect(try reopened.dataset("rows").shape == [3, (1 << 20) + 1])
        try reopened.close()
    }

    /// The probe forks while other threads may be inside libhdf5 (its
    /// global lock held): the child must never inherit a lock it cannot
    /// take, or a good store would be refused as "still reading".
    @Test func storesProbedFromManyThreadsAtOnceAllRead() throws {
        let scratch = try ScratchDirectory()
        let store = try storeWithoutChecksum(in: scratch)
        let expected = try ScoreFile.read(from: store)
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 24) { _ in
            do {
                if try ScoreFile.read(from: store) != expected { failures.withLock { $0.append("different scores") } }
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty)
    }

    /// A string's heap object claiming 2^62 bytes: libhdf5 copies that many.
    /// A per-sequence token count of 0 (no calibration sequence is empty)
    /// was read, then failed the analysis in a message naming no file.
    @Test func aZeroPerSequenceTokenCountIsRefused() throws {
        let scratch = try ScratchDirectory()
        let store = try StoreChecksumTests.scoredStore(in: scratch)
        let file = try HDF5File.open(at: store, writable: true)
        let path = "per_sequence/tokens"
        let shape = try file.dataset(path).shape
        var tokens = try file.dataset(path).read(as: Int64.self)
        tokens[0] = 0
        try file.remove(path)
        try file.createDataset(path, values: tokens, shape: shape)
        try file.close()
        try expectRefused(store, saying: "per-sequence token count 0 is negative or zero")
    }

    /// A list of strings stored as a scalar (h5py's `create_dataset(data="a")`)
    /// crashed libhdf5 when its strings were sized (`/failed`, `/pending`):
    /// every string list is checked to be one first. One stored with two
    /// dimensions was flattened and listed.
    @Test(arguments: [("failed", "error", ["a"], [Int]()), ("pending", "reason", ["a", "b"], [1, 2])])
    func aStringListOfOtherThanOneDimensionIsRefused(group: String, values: String, strings: [String], shape: [Int]) throws {
        let scratch = try ScratchDirectory()
        let store = try StoreChecksumTests.scoredStore(in: scratch)
        let file = try HDF5File.open(at: store, writable: true)
        try file.createGroup(group)
        for name in ["name", values] { try file.createDataset("\(group)/\(name)", strings: strings, shape: shape) }
        try file.close()
        let reread = try HDF5File.open(at: store)
        defer { try? reread.close() }
        let error = #expect(throws: DroptraceError.self) { try UnscoredCheckpoints.read(from: reread) }
        #expect(error?.message == "/\(group)/name has shape \(shape), not a list: the file was changed by other software",
                "\(String(describing: error))")
    }

    /// A store claiming more layers than any model has: its block-gap
    /// matrices (layers² per checkpoint, compressing to almost nothing)
    /// took minutes and gigabytes to report. The bound is the engine's.
    @Test func moreLayersThanAnyModelIsRefused() throws {
        let scratch = try ScratchDirectory()
        let store = try StoreChecksumTests.scoredStore(in: scratch)
        let file = try HDF5File.open(at: store, writable: true)
        try file.removeAttribute("num_layers")
        try file.setAttribute("num_layers", Int64(ModelLimits.maxLayers + 1))
        try file.close()
        try expectRefused(store, saying: "root attribute num_layers is 4097, must be between 1 and 4096")
    }

    /// Values no run computes, in a store without per-sequence sums to check
    /// them against (the older layout): an importance of Inf or 5, a
    /// block-gap cosine of 5, an angular distance of 3 changed the verdict
    /// and tables with exit 0.
    @Test(arguments: [("scores/attention", Float.infinity, "outside [0.0, 2.0]"), ("scores/mlp", 5, "outside [0.0, 2.0]"),
                      ("similarity/block_gap", 5, "outside [-1.0, 1.0]"), ("scores/attention_angular_distance", 3, "outside [0.0, 1.0]")])
    func aValueNoRunComputesIsRefused(path: String, value: Float, words: String) throws {
        let scratch = try ScratchDirectory()
        try expectRefused(try Self.storeWithoutSums(in: scratch, editing: path) { values, _ in values[0] = value }, saying: words)
    }

    /// A scored store without its per-sequence sums (the older layout, whose
    /// values nothing else checks), the float32 dataset at `path` changed by
    /// `edit` (given its shape).
    static func storeWithoutSums(in scratch: ScratchDirectory, editing path: String, _ edit: (inout [Float], [Int]) -> Void) throws -> URL {
        let store = try StoreChecksumTests.scoredStore(in: scratch)
        let file = try HDF5File.open(at: store, writable: true)
        try file.remove("per_sequence")
        let shape = try file.dataset(path).shape
        var values = try file.dataset(path).read(as: Float.self)
        edit(&values, shape)
        try file.remove(path)
        try file.createDataset(path, values: values, shape: shape)
        try file.close()
        return store
    }

    /// n-gap matrices that contradict the per-layer scores of the same
    /// states, in a store without per-sequence sums: a 1-gap cosine or
    /// angular distance other than the block's own, a value past the last
    /// layer, were reported as stored (the n-gap table and figures).
    @Test(arguments: [("similarity/block_gap", false, "is past the model's"),
                      ("similarity/block_gap", true, "but the block's own score gives"),
                      ("similarity/block_gap_angular_distance", true, "but the block's own score gives"),
                      ("similarity/block_gap_angular_distance_last_token", true, "but the block's own score gives")])
    func aGapContradictingTheBlockScoresIsRefused(path: String, adjacent: Bool, words: String) throws {
        let scratch = try ScratchDirectory()
        let store = try Self.storeWithoutSums(in: scratch, editing: path) { values, shape in
            let layers = shape[2]
            if adjacent { values[0] += 0.01 } else { values[(layers - 1) * layers + 1] = 0.5 }
        }
        try expectRefused(store, saying: words)
    }

    /// An integer dataset of a type whose values int64 cannot all hold
    /// (uint64 from h5py, say): HDF5 clamped 2⁶⁴ − 1 to 2⁶³ − 1, a step
    /// nobody stored, silently.
    @Test func integersInt64CannotHoldAreRefused() {
        #expect(HDF5ElementType.integer(bits: 64, signed: false).problem(readingAs: .int64)
                == "holds uint64 values, which int64 cannot hold all of (droptrace writes int64)")
        #expect(HDF5ElementType.integer(bits: 64, signed: true).problem(readingAs: .int32) != nil)
        for readable in [HDF5ElementType.integer(bits: 32, signed: false), .integer(bits: 64, signed: true), .integer(bits: 8, signed: false)] {
            #expect(readable.problem(readingAs: .int64) == nil, "\(readable)")
        }
    }

    /// A checkpoint name whose bytes are not UTF-8 was read with U+FFFD in
    /// their place: another name than stored, which two rows could share.
    @Test func aStringThatIsNotUTF8IsRefused() throws {
        let scratch = try ScratchDirectory()
        let store = try storeWithoutChecksum(in: scratch)
        var bytes = Array(try Data(contentsOf: store))
        let name = Array("llama-f32".utf8)
        let at = try #require((0...(bytes.count - name.count)).first { Array(bytes[$0..<($0 + name.count)]) == name })
        bytes[at + name.count - 1] = 0xFF
        try Data(bytes).write(to: store)
        try expectRefused(store, saying: "holds a string that is not UTF-8 (entry 0)")
    }

    @Test func aHeapObjectClaimingMoreThanTheFileIsRefused() throws {
        let scratch = try ScratchDirectory()
        let store = try storeWithoutChecksum(in: scratch)
        try setSize(of: 1, to: 1 << 62, in: store)
        try expectRefused(store, saying: "libhdf5 crashes")
    }

    /// A free-space object of size 0: libhdf5's walk over the collection
    /// never advances. Refused after the probe's time limit (5 s).
    @Test func aHeapThatNeverEndsIsRefused() throws {
        let scratch = try ScratchDirectory()
        let store = try storeWithoutChecksum(in: scratch)
        try setSize(of: 0, to: 0, in: store)
        try expectRefused(store, saying: "still reading")
    }

    /// A child kept waiting past the time limit (a stalled network file
    /// system; here a FIFO no one writes) is no sign of a damaged store: a
    /// transient error, so the store is left as it is (`--force` set aside a
    /// healthy store on a slow mount), where a loop in libhdf5 (above) is.
    @Test func aProbeKeptWaitingIsNoDamage() throws {
        let scratch = try ScratchDirectory()
        let fifo = scratch.path("scores.h5")
        try #require(mkfifo(fifo.path, 0o600) == 0)
        do {
            try HDF5Probe.check(fifo.path)
            Issue.record("a probe that never read the file passed it")
        } catch let error as DroptraceError {
            #expect(error.isTransient && error.path == fifo.path, "\(error)")
            #expect(error.message.contains("waiting for the file system") && !error.message.contains("is damaged"), "\(error)")
        }
    }

    /// A probe's child shared the flock(2) of every file open at its fork: a
    /// store closed meanwhile stayed locked until the child exited, and
    /// opening it for writing then failed ("unable to lock file, errno = 11";
    /// seen when tests on other threads probed stores, and in a `report`
    /// process started meanwhile). The child closes what it inherits, so
    /// another open file (another process's) locks the store at once; this
    /// process's own opens also wait for the child's first moments.
    @Test func aStoreClosedWhileAProbeRunsOpensForWriting() throws {
        let scratch = try ScratchDirectory()
        let store = try StoreChecksumTests.scoredStore(in: scratch)
        let fifo = scratch.path("stalled.h5")
        try #require(mkfifo(fifo.path, 0o600) == 0)
        let file = try HDF5File.open(at: store, writable: true)
        let probed = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? HDF5Probe.check(fifo.path, seconds: 3)
            probed.signal()
        }
        defer { probed.wait() }
        // The child is forked with the store open here, and kept waiting by the FIFO.
        func children() -> String {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            return tasks.map { (try? String(contentsOfFile: "/proc/self/task/\($0)/children", encoding: .utf8)) ?? "" }.joined()
        }
        let started = Date()
        while children().trimmingCharacters(in: .whitespaces).isEmpty && Date().timeIntervalSince(started) < 3 { usleep(5_000) }
        try #require(!children().trimmingCharacters(in: .whitespaces).isEmpty, "no probe started")
        try file.close()
        // As another process would: its own open file, locked without waiting (the child
        // closes what it inherited first thing; the FIFO keeps it alive for 3 s).
        let descriptor = open(store.path, O_RDONLY | O_CLOEXEC)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        var locked = flock(descriptor, LOCK_EX | LOCK_NB) == 0
        let closed = Date()
        while !locked && Date().timeIntervalSince(closed) < 1 {
            usleep(10_000)
            locked = flock(descriptor, LOCK_EX | LOCK_NB) == 0
        }
        #expect(locked, "the probe's child still holds the closed store's lock")
        if locked { flock(descriptor, LOCK_UN) }
        let reopened = try HDF5File.open(at: store, writable: true)
        try reopened.close()
    }

    /// The probe's child shares the run's open files, its lock among them:
    /// a run killed while the child reads such a store takes the child with
    /// it (it read on for ever, and every later run found the lock held).
    @Test func theProbeDiesWithTheRunKilledWhileItReads() throws {
        let scratch = try ScratchDirectory()
        let store = try storeWithoutChecksum(in: scratch)
        try setSize(of: 0, to: 0, in: store)
        // posix_spawn and waitpid, not Process: a surviving child would keep Process's watch of the run open.
        let arguments = [DroptraceCommand.executable.path, "report", store.deletingLastPathComponent().path]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for descriptor in [STDOUT_FILENO, STDERR_FILENO] {
            posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", O_WRONLY, 0)
        }
        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        try #require(posix_spawn(&pid, arguments[0], &actions, nil, argv, environ) == 0)
        func readers() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { entry in
                guard Int(entry) != nil, entry != String(pid),
                      let command = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return false }
                return String(decoding: command, as: UTF8.self).contains(store.deletingLastPathComponent().path)
            }
        }
        // The probe is forked as the report opens the store.
        let started = Date()
        while readers().isEmpty && Date().timeIntervalSince(started) < 3 { usleep(20_000) }
        try #require(!readers().isEmpty, "no probe started")
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        // Well within the probe's own 5 s limit.
        let killed = Date()
        while !readers().isEmpty && Date().timeIntervalSince(killed) < 2 { usleep(20_000) }
        let survivors = readers()
        #expect(survivors.isEmpty, "probe children outlived the run: \(survivors)")
        for survivor in survivors { kill(pid_t(survivor)!, SIGKILL) }
    }
}

import Foundation
import Testing
import DroptraceSupport
import ScoreStore

/// Everything about the HDF5 score store; one parent suite so that
/// `swift test --filter ScoreStore` selects exactly these tests.
@Suite struct ScoreStoreTests {}

// MARK: - Fixtures

/// Runs `body` with a fresh directory that is removed afterwards.
private func withScratchDirectory(_ body: (URL) throws -> Void) throws {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("droptrace-scorestore-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    try body(directory)
}

/// Scores for `names.count` checkpoints of a `layers`-layer model, with
/// distinct values everywhere (each in the range a run computes, the 1-gap
/// cosine 1 − block) and NaN in the block gap past the last layer.
private func sampleScores(layers: Int = 4, names: [String] = ["step-0", "ckpt-β/步骤 🚀", ""]) -> ScoreFile {
    let rows = names.enumerated().map { index, name in
        let base = Float(index) * 0.5
        return CheckpointRow(
            name: name,
            step: index == 0 ? 0 : -1,  // unknown steps come last in series order
            tokens: Int64(index) * 4_000_000_000,
            attention: (0..<layers).map { base + Float($0) * 0.0625 },
            mlp: (0..<layers).map { base + 0.5 - Float($0) * 0.125 },
            block: (0..<layers).map { base + 1e-7 * Float($0) },
            blockGap: (0..<layers).map { row in
                (0..<layers).map { column in
                    column == 0 ? 1 - (base + 1e-7 * Float(row))
                        : row + column >= layers ? .nan : base - 0.5 + Float(row * layers + column) / Float(4 * layers * layers)
                }
            })
    }
    let metadata = ScoreFileMetadata(
        modelType: "llama", numLayers: layers, calibrationSHA256: String(repeating: "ab", count: 32),
        calibrationTokens: 131_072, droptraceVersion: "0.1.0-test")
    return ScoreFile(metadata: metadata, rows: rows)
}

private func temporaryFiles(in directory: URL) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.contains(".tmp-") }
}

/// The error must be one line that starts with the file's path.
private func expectNamesFile(_ error: DroptraceError?, _ url: URL, mentioning words: [String],
                             sourceLocation: SourceLocation = #_sourceLocation) {
    guard let error else {
        Issue.record("expected a DroptraceError", sourceLocation: sourceLocation)
        return
    }
    #expect(error.path == url.path, sourceLocation: sourceLocation)
    #expect(!error.description.contains("\n"), sourceLocation: sourceLocation)
    for word in words {
        #expect(error.description.contains(word), "\(error) should mention \(word)", sourceLocation: sourceLocation)
    }
}

private struct DeliberateFailure: Error {}

// MARK: - Round trip

extension ScoreStoreTests {
    @Suite struct RoundTrip {
        @Test func valuesNaNAndUnicodeNamesSurvive() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("scores.h5")
                let original = sampleScores()
                try original.write(to: url)
                let readBack = try ScoreFile.read(from: url)

                #expect(readBack == original)
                #expect(readBack.rows.map(\.name) == ["step-0", "ckpt-β/步骤 🚀", ""])
                #expect(readBack.rows.map(\.step) == [0, -1, -1])
                #expect(readBack.rows[2].tokens == 8_000_000_000)
                #expect(readBack.rows[2].blockGap[3][3].isNaN)
                #expect(!readBack.rows[2].blockGap[1][2].isNaN)
                #expect(readBack.rows[0].block[1] == 1e-7)  // float32 bits, not a rounded copy
                #expect(readBack.metadata.metric == "cosine")
            }
        }

        /// One row per checkpoint, steps and tokens counts or -1, rows in
        /// training order: a store holding a name twice was continued by
        /// `trace` and refused only by `compare`; rows reordered by hand were
        /// reported with another final checkpoint.
        @Test func rowsGivenTwiceOutOfOrderOrNegativeCountsAreRefused() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("scores.h5")
                var twice = sampleScores()
                twice.rows[2].name = twice.rows[0].name
                try twice.write(to: url)
                #expect { _ = try ScoreFile.read(from: url) } throws: { error in
                    "\(error)" == "\(url.path): /checkpoints/name holds checkpoint 'step-0' twice"
                }
                var negative = sampleScores()
                negative.rows[1].tokens = -5
                try negative.write(to: url)
                #expect { _ = try ScoreFile.read(from: url) } throws: { error in
                    "\(error)" == "\(url.path): /checkpoints/tokens holds -5 for checkpoint 'ckpt-β/步骤 🚀', expected a count or -1 (unknown)"
                }
                var reordered = sampleScores(names: ["checkpoint-200", "checkpoint-100"])
                reordered.rows[0].step = 200
                reordered.rows[1].step = 100
                try reordered.write(to: url)
                #expect { _ = try ScoreFile.read(from: url) } throws: { error in
                    "\(error)".hasPrefix("\(url.path): holds checkpoint 'checkpoint-100' after 'checkpoint-200', which comes later in training")
                }
                var samePoint = sampleScores(names: ["checkpoint-7", "checkpoint-007", "unnamed"])
                (samePoint.rows[0].step, samePoint.rows[1].step) = (7, 7)
                try samePoint.write(to: url)
                #expect { _ = try ScoreFile.read(from: url) } throws: { error in
                    "\(error)".hasPrefix("\(url.path): holds checkpoints 'checkpoint-7' and 'checkpoint-007' at one point of training (step 7)")
                }
                samePoint.rows[1].name = "zeta"  // unknown steps come last, in any order
                samePoint.rows[1].step = -1
                try samePoint.write(to: url)
                #expect(try ScoreFile.read(from: url).rows.map(\.name) == ["checkpoint-7", "zeta", "unnamed"])
            }
        }

        @Test func fileWithoutCheckpointsRoundTrips() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("empty.h5")
                let original = sampleScores(layers: 5, names: [])
                try original.write(to: url)
                let readBack = try ScoreFile.read(from: url)
                #expect(readBack == original)
                #expect(try HDF5File.open(at: url).dataset("similarity/block_gap").shape == [0, 5, 5])
            }
        }

        @Test func extraClosureAddsAnalysisToTheSameFile() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("scores.h5")
                try sampleScores().write(to: url) { file in
                    let analysis = try file.createGroup("analysis/attention")
                    try analysis.createDataset("ranking", values: [Int32(3), 0, 2, 1])
                    try analysis.setAttribute("method", "spearman")
                }
                #expect(try ScoreFile.read(from: url) == sampleScores())
                let file = try HDF5File.open(at: url)
                let ranking = try file.dataset("analysis/attention/ranking")
                #expect(try ranking.read(as: Int32.self) == [3, 0, 2, 1])
                #expect(try file.group("analysis/attention").stringAttribute("method") == "spearman")
            }
        }
    }
}

// MARK: - Layout (read back through the raw wrapper)

extension ScoreStoreTests {
    @Suite struct Layout {
        @Test func pathsTypesAndShapesMatchThePublishedLayout() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("scores.h5")
                try sampleScores(layers: 4).write(to: url)
                let file = try HDF5File.open(at: url)

                #expect(try file.childNames() == ["checkpoints", "scores", "similarity"])
                #expect(try file.group("checkpoints").childNames() == ["fingerprint", "name", "step", "tokens"])
                #expect(try file.group("scores").childNames() == ["attention", "block", "mlp"])
                #expect(try file.group("similarity").childNames() == ["block_gap"])

                for path in ["checkpoints/name", "checkpoints/fingerprint"] {
                    let strings = try file.dataset(path)
                    #expect(strings.elementType == .string(variableLength: true))
                    #expect(strings.shape == [3])
                }
                for path in ["checkpoints/step", "checkpoints/tokens"] {
                    let column = try file.dataset(path)
                    #expect(column.elementType == .integer(bits: 64, signed: true))
                    #expect(column.shape == [3])
                }
                for path in ["scores/attention", "scores/mlp", "scores/block"] {
                    let scores = try file.dataset(path)
                    #expect(scores.elementType == .float(bits: 32))
                    #expect(scores.shape == [3, 4])
                    let expected = HDF5StorageOptions(chunkShape: [3, 4], deflateLevel: 4, shuffle: true)
                    #expect(try scores.storageOptions() == expected)
                }
                let gap = try file.dataset("similarity/block_gap")
                #expect(gap.elementType == .float(bits: 32))
                #expect(gap.shape == [3, 4, 4])
                #expect(try gap.storageOptions().deflateLevel == 4)

                #expect(try file.attributeNames().sorted() == [
                    "calibration_sha256", "calibration_tokens", "droptrace_version", "metric", "model_type", "num_layers",
                    "precision",
                ])
                for name in ["model_type", "metric", "calibration_sha256", "droptrace_version", "precision"] {
                    #expect(try file.attributeType(name) == .string(variableLength: true))
                    #expect(try file.attributeShape(name) == [])
                }
                for name in ["num_layers", "calibration_tokens"] {
                    #expect(try file.attributeType(name) == .integer(bits: 64, signed: true))
                    #expect(try file.attributeShape(name) == [])
                }
                #expect(try file.stringAttribute("metric") == "cosine")
                #expect(try file.scalarAttribute("num_layers", as: Int64.self) == 4)
            }
        }
    }
}

// MARK: - The general HDF5 layer

extension ScoreStoreTests {
    @Suite struct HDF5Wrapper {
        @Test func datasetsOfEveryElementTypeAndShape() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("general.h5")
                let file = try HDF5File.create(at: url)
                try file.createDataset("a/b/doubles", values: [1.5, -2, .infinity, 4, 5, 6], shape: [2, 3],
                                       storage: .compressed(level: 9, chunkShape: [1, 3]))
                try file.createDataset("a/int32", values: [Int32.min, 0, Int32.max])
                try file.createDataset("a/int64", values: [Int64.min, Int64.max], shape: [1, 2, 1])
                try file.createDataset("scalar", values: [Float(2.5)], shape: [])
                try file.createDataset("words", strings: ["x", "ü", "", "long " + String(repeating: "y", count: 500)],
                                       shape: [2, 2])
                try file.close()

                let reopened = try HDF5File.open(at: url)
                let doubles = try reopened.dataset("/a/b/doubles")
                #expect(doubles.shape == [2, 3])
                #expect(doubles.elementType == .float(bits: 64))
                #expect(try doubles.read(as: Double.self) == [1.5, -2, .infinity, 4, 5, 6])
                #expect(try doubles.read(as: Float.self) == [1.5, -2, .infinity, 4, 5, 6])  // HDF5 converts
                let expected = HDF5StorageOptions(chunkShape: [1, 3], deflateLevel: 9, shuffle: true)
                #expect(try doubles.storageOptions() == expected)
                #expect(try reopened.dataset("a/int32").read(as: Int32.self) == [Int32.min, 0, Int32.max])
                #expect(try reopened.dataset("a/int64").shape == [1, 2, 1])
                #expect(try reopened.dataset("a/int64").read(as: Int64.self) == [Int64.min, Int64.max])
                #expect(try reopened.dataset("scalar").shape == [])
                #expect(try reopened.dataset("scalar").read(as: Float.self) == [2.5])
                #expect(try reopened.dataset("scalar").storageOptions() == .contiguous)
                let words = try reopened.dataset("words")
                #expect(words.shape == [2, 2])
                #expect(try words.readStrings() == ["x", "ü", "", "long " + String(repeating: "y", count: 500)])
                #expect(throws: DroptraceError.self) { try words.read(as: Float.self) }
            }
        }

        @Test func groupsExistenceListingAndRemoval() throws {
            try withScratchDirectory { directory in
                let file = try HDF5File.create(at: directory.appendingPathComponent("groups.h5"))
                let nested = try file.createGroup("analysis/attention")
                try nested.createDataset("ranking", values: [Int64(1)])
                #expect(try file.exists("analysis"))
                #expect(try file.exists("/analysis/attention/ranking"))
                #expect(try !file.exists("analysis/mlp/ranking"))  // missing parent is "no", not an error
                #expect(try !file.exists("analysis/attention/ranking/x"))  // a dataset has no children
                #expect(try file.kind(of: "analysis") == .group)
                #expect(try file.kind(of: "analysis/attention/ranking") == .dataset)
                #expect(try file.kind(of: "nothing") == nil)
                #expect(try file.requireGroup("analysis").childNames() == ["attention"])
                #expect(try file.requireGroup("analysis/mlp").objectPath == "/analysis/mlp")
                #expect(try file.group("analysis").childNames() == ["attention", "mlp"])
                #expect(throws: DroptraceError.self) { try file.createGroup("analysis") }
                #expect(throws: DroptraceError.self) {
                    try file.createDataset("analysis/attention/ranking", values: [Int64(2)])
                }
                #expect(throws: DroptraceError.self) { try file.group("analysis/attention/ranking") }
                try file.remove("analysis/mlp")
                #expect(try file.group("analysis").childNames() == ["attention"])
            }
        }

        @Test func attributesOnFileGroupsAndDatasets() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("attributes.h5")
                let file = try HDF5File.create(at: url)
                let dataset = try file.createDataset("values", values: [Float(1), 2])
                try dataset.setAttribute("unit", "nats ✓")
                try dataset.setAttribute("weights", [Float(0.5), .nan])
                try dataset.setAttribute("empty", [Double]())
                let group = try file.createGroup("g")
                try group.setAttribute("threshold", 0.25)
                try group.setAttribute("count", Int64(7))
                try group.setAttribute("count", Int64(8))  // replaces, like h5py
                try file.setAttribute("title", "root")
                try file.close()

                let reopened = try HDF5File.open(at: url)
                let values = try reopened.dataset("values")
                #expect(try values.stringAttribute("unit") == "nats ✓")
                let weights = try values.numericAttribute("weights", as: Float.self)
                #expect(weights.count == 2 && weights[0] == 0.5 && weights[1].isNaN)
                #expect(try values.attributeShape("weights") == [2])
                #expect(try values.numericAttribute("empty", as: Double.self) == [])
                #expect(try reopened.group("g").scalarAttribute("threshold", as: Double.self) == 0.25)
                #expect(try reopened.group("g").scalarAttribute("count", as: Int64.self) == 8)
                #expect(try reopened.group("g").attributeNames() == ["count", "threshold"])
                #expect(try reopened.stringAttribute("title") == "root")
                #expect(try !reopened.hasAttribute("missing"))
                let missing = #expect(throws: DroptraceError.self) { try reopened.stringAttribute("missing") }
                expectNamesFile(missing, url, mentioning: ["missing attribute 'missing'"])
                #expect(throws: DroptraceError.self) { try values.scalarAttribute("unit", as: Int64.self) }
            }
        }

        @Test func stringsWithNULAreRejectedNotTruncated() throws {
            try withScratchDirectory { directory in
                let file = try HDF5File.create(at: directory.appendingPathComponent("nul.h5"))
                #expect(throws: DroptraceError.self) { try file.createDataset("s", strings: ["a\u{0}b"]) }
                #expect(throws: DroptraceError.self) { try file.setAttribute("s", "a\u{0}b") }
            }
        }

        @Test func shapeMismatchIsReported() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("shape.h5")
                let file = try HDF5File.create(at: url)
                let error = #expect(throws: DroptraceError.self) {
                    try file.createDataset("x", values: [Float(1), 2, 3], shape: [2, 2])
                }
                expectNamesFile(error, url, mentioning: ["/x", "[2, 2]"])
            }
        }
    }
}

// MARK: - Atomic replacement

extension ScoreStoreTests {
    @Suite struct AtomicWrite {
        @Test func validationFailureLeavesOldFileUntouched() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("scores.h5")
                try sampleScores().write(to: url)
                let before = try Data(contentsOf: url)

                var broken = sampleScores()
                broken.rows[1].mlp.removeLast()
                let error = #expect(throws: DroptraceError.self) { try broken.write(to: url) }
                expectNamesFile(error, url, mentioning: ["ckpt-β/步骤 🚀", "mlp", "3 entries, expected 4"])

                broken = sampleScores()
                broken.rows[0].blockGap[2].append(0)
                #expect(throws: DroptraceError.self) { try broken.write(to: url) }

                #expect(try Data(contentsOf: url) == before)
                #expect(try temporaryFiles(in: directory) == [])
            }
        }

        @Test func failingExtraClosureLeavesOldFileUntouched() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("scores.h5")
                try sampleScores(names: ["old"]).write(to: url)
                let before = try Data(contentsOf: url)

                #expect(throws: DeliberateFailure.self) {
                    try sampleScores(names: ["new"]).write(to: url) { file in
                        // The new layout is already written, in memory only: the
                        // temporary file appears when the file is closed.
                        #expect(try file.exists("scores/mlp"))
                        #expect(try Data(contentsOf: url) == before)
                        #expect(try temporaryFiles(in: directory) == [])
                        throw DeliberateFailure()
                    }
                }
                #expect(try Data(contentsOf: url) == before)
                #expect(try ScoreFile.read(from: url).rows.map(\.name) == ["old"])
                #expect(try temporaryFiles(in: directory) == [])
            }
        }

        @Test func successfulWriteReplacesTheFile() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("scores.h5")
                try sampleScores(names: ["old"]).write(to: url)
                try sampleScores(names: ["new", "newer"]).write(to: url)
                #expect(try ScoreFile.read(from: url).rows.map(\.name) == ["new", "newer"])
                #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["scores.h5"])
            }
        }

        @Test func missingDirectoryIsReported() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("no/such/dir/scores.h5")
                let error = #expect(throws: DroptraceError.self) { try sampleScores().write(to: url) }
                expectNamesFile(error, url, mentioning: ["does not exist"])
            }
        }
    }
}

// MARK: - Reading bad files

extension ScoreStoreTests {
    @Suite struct ReadErrors {
        @Test func missingFile() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("absent.h5")
                let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
                expectNamesFile(error, url, mentioning: ["no such file"])
            }
        }

        @Test func garbageFile() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("garbage.h5")
                var generator = SystemRandomNumberGenerator()
                try Data((0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) }).write(to: url)
                let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
                expectNamesFile(error, url, mentioning: ["not an HDF5 file"])
            }
        }

        @Test func truncatedFile() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("truncated.h5")
                try sampleScores().write(to: url)
                let bytes = try Data(contentsOf: url)
                try bytes.prefix(bytes.count / 2).write(to: url)
                let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
                expectNamesFile(error, url, mentioning: ["truncated"])
            }
        }

        @Test func missingDataset() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("no-mlp.h5")
                try sampleScores().write(to: url) { file in try file.remove("scores/mlp") }
                let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
                expectNamesFile(error, url, mentioning: ["missing dataset /scores/mlp"])
            }
        }

        @Test func wrongShape() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("bad-shape.h5")
                try sampleScores(layers: 4).write(to: url) { file in
                    try file.remove("scores/block")
                    try file.createDataset("scores/block", values: [Float](repeating: 0, count: 9), shape: [3, 3])
                }
                let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
                expectNamesFile(error, url, mentioning: ["/scores/block", "[3, 3]", "[3, 4]"])
            }
        }

        @Test func wrongElementType() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("bad-type.h5")
                try sampleScores().write(to: url) { file in
                    try file.remove("checkpoints/step")
                    try file.createDataset("checkpoints/step", values: [0.5, 1.5, 2.5])
                }
                let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
                expectNamesFile(error, url, mentioning: ["/checkpoints/step", "float64"])
            }
        }

        @Test func missingRootAttribute() throws {
            try withScratchDirectory { directory in
                let url = directory.appendingPathComponent("no-attr.h5")
                try sampleScores().write(to: url) { file in try file.removeAttribute("model_type") }
                let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
                expectNamesFile(error, url, mentioning: ["model_type"])
            }
        }
    }
}

/// A store replaced or created by another program while a run works on it
/// is never written over: the run names it and leaves it as it is.
@Suite struct StoreVersionTests {
    @Test func aStoreReplacedDuringTheWriteIsLeftAsItIs() throws {
        try withScratchDirectory { directory in
            let url = directory.appendingPathComponent("scores.h5")
            let first = try sampleScores().write(to: url)
            #expect(first == FileVersion.current(url.path))
            var error: DroptraceError?
            do {
                try sampleScores(layers: 2).write(to: url) { _ in
                    // Another program puts its file in the store's place mid-write.
                    try Data("my notes".utf8).write(to: url)
                }
            } catch let caught as DroptraceError { error = caught }
            #expect(error?.path == url.path && error?.message.hasPrefix("was changed or replaced while this run") == true,
                    "\(String(describing: error))")
            #expect(try String(contentsOf: url, encoding: .utf8) == "my notes")
            #expect(try temporaryFiles(in: directory).isEmpty)
        }
    }

    /// A temporary file a killed write left (score and reseal have no clean-up
    /// pass of their own) goes at the next write of that file.
    @Test func aWriteRemovesWhatAKilledWriteLeft() throws {
        try withScratchDirectory { directory in
            let url = directory.appendingPathComponent("a.h5")
            // pid 2^22 + 1 is beyond Linux's pid_max: no process has it.
            let leftover = directory.appendingPathComponent(TemporaryFileName.forTarget("a.h5", pid: 4_194_305))
            try Data("half a store".utf8).write(to: leftover)
            try sampleScores().write(to: url)
            #expect(!FileManager.default.fileExists(atPath: leftover.path))
        }
    }

    @Test func aStoreChangedSinceTheRunReadItIsLeftAsItIs() throws {
        try withScratchDirectory { directory in
            let url = directory.appendingPathComponent("scores.h5")
            let read = try sampleScores().write(to: url)
            try sampleScores(layers: 3).write(to: url)  // another program's store in its place
            let other = FileVersion.current(url.path)
            #expect(throws: DroptraceError.self) { try sampleScores(layers: 2).write(to: url, expected: read) }
            #expect(FileVersion.current(url.path) == other)
            // Expected absent, and a file appeared.
            #expect(throws: DroptraceError.self) { try sampleScores(layers: 2).write(to: url, expected: .absent) }
            #expect(FileVersion.current(url.path) == other)
        }
    }
}

import DroptraceSupport
import Foundation
import Pipeline
import ScoreStore
import Testing

/// A store holds one training run: another run traced into the same output
/// directory is refused, a run moved elsewhere keeps its rows.
@Suite struct StoreSeriesTests {
    let runs = DiscoveryFailureTests()

    func stored(_ output: URL) throws -> ScoreFile {
        try ScoreFile.read(from: output.appendingPathComponent("scores.h5"))
    }

    /// Gives every file of `checkpoint` a new modification time, as a run
    /// that wrote its own files would (copies of one fixture keep its time).
    func touch(_ checkpoint: URL, _ date: Date) throws {
        for name in try FileManager.default.contentsOfDirectory(atPath: checkpoint.path) {
            try FileManager.default.setAttributes([.modificationDate: date], ofItemAtPath: checkpoint.appendingPathComponent(name).path)
        }
    }

    /// Seed 2 traced into seed 1's output: its checkpoint-10 would have been
    /// taken for seed 1's checkpoint-10 replaced, and its checkpoint-30 added
    /// after seed 1's checkpoint-20, one series of two runs.
    @Test func anotherRunIntoTheSameOutputIsRefused() throws {
        let scratch = try ScratchDirectory()
        let seed1 = try SeriesBuilder(in: scratch, name: "seed-1")
        try seed1.add(step: 10)
        try seed1.add(step: 20)
        let seed2 = try SeriesBuilder(in: scratch, name: "seed-2")
        try touch(try seed2.add(step: 10), Date(timeIntervalSinceNow: -60))
        try touch(try seed2.add(step: 30), Date(timeIntervalSinceNow: -30))
        let output = scratch.path("out")
        #expect(try runs.trace(seed1.directory, output).status == 0)
        let before = try Data(contentsOf: output.appendingPathComponent("scores.h5"))
        let seed1Path = seed1.directory.resolvingSymlinksInPath().path
        let seed2Path = seed2.directory.resolvingSymlinksInPath().path
        #expect(try stored(output).metadata.seriesDirectory == seed1Path)

        let run = try runs.trace(seed2.directory, output)
        #expect(run.status == 1, "\(run.stderr)")
        let errors = runs.lines(run.stderr, "error")
        #expect(errors.count == 1 && errors[0].hasSuffix(
            "error: \(output.path)/scores.h5: holds the rows of the series in \(seed1Path) (2 checkpoints), and none of the "
                + "checkpoints found in \(seed2Path) is one of them: it is another run; use another output directory, "
                + "or pass --force to rescore every checkpoint of this one in its place (the other run's rows are dropped)"),
            "\(run.stderr)")
        #expect(try Data(contentsOf: output.appendingPathComponent("scores.h5")) == before)

        // Its own run goes on as before.
        #expect(try runs.trace(seed1.directory, output).status == 0)

        let forced = try runs.trace(seed2.directory, output, ["--force"])
        #expect(forced.status == 0, "\(forced.stderr)")
        let replaced = try stored(output)
        #expect(replaced.rows.map(\.name) == ["checkpoint-10", "checkpoint-30"])
        #expect(replaced.metadata.seriesDirectory == seed2Path)
    }

    /// Runs started from one initial checkpoint share it: one checkpoint
    /// with the stored files among others that differ is another run, and
    /// a `score` file (no series directory) holding none of the series'
    /// checkpoints is no store of this series.
    @Test func oneSharedCheckpointOrAScoreFileIsNotThisSeries() throws {
        let scratch = try ScratchDirectory()
        let seed1 = try SeriesBuilder(in: scratch, name: "seed-1")
        let shared = try seed1.add(step: 10)
        try seed1.add(step: 20)
        try seed1.add(step: 30)
        let seed2 = try SeriesBuilder(in: scratch, name: "seed-2")
        try FileManager.default.createSymbolicLink(
            at: seed2.directory.appendingPathComponent("checkpoint-10"), withDestinationURL: shared)
        try touch(try seed2.add(step: 20), Date(timeIntervalSinceNow: -60))
        try touch(try seed2.add(step: 30), Date(timeIntervalSinceNow: -30))
        let output = scratch.path("out")
        #expect(try runs.trace(seed1.directory, output).status == 0)
        let before = try Data(contentsOf: output.appendingPathComponent("scores.h5"))
        let run = try runs.trace(seed2.directory, output)
        #expect(run.status == 1)
        #expect(run.stderr.contains("and of the 3 checkpoints found in \(seed2.directory.resolvingSymlinksInPath().path) "
                                    + "under names it holds, 1 has the files it scored"), "\(run.stderr)")
        #expect(try Data(contentsOf: output.appendingPathComponent("scores.h5")) == before)

        let scored = scratch.path("scored")
        try FileManager.default.createDirectory(at: scored, withIntermediateDirectories: true)
        let score = try DroptraceCommand.run([
            "score", FixtureFiles.model("gpt2-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", scored.appendingPathComponent("scores.h5").path,
        ])
        try #require(score.status == 0, "\(score.stderr)")
        let adopted = try runs.trace(seed1.directory, scored)
        #expect(adopted.status == 1)
        #expect(adopted.stderr.contains("records no series directory (not a trace's store: `droptrace score`'s file?) "
                                        + "and holds rows (gpt2-f32) of none of the checkpoints found"), "\(adopted.stderr)")
    }

    /// A `runs/latest` link moved to a new run whose only checkpoint yet is
    /// the old run's initial one: one of one found checkpoints has the
    /// stored files, but the old run is still where the store says, with
    /// checkpoints the new one lacks: another run (its rows were adopted).
    @Test func aLinkMovedToANewRunFromTheSameStartIsAnotherRun() throws {
        let scratch = try ScratchDirectory()
        let runA = try SeriesBuilder(in: scratch, name: "runs/A")
        let initial = try runA.add(step: 10)
        try runA.add(step: 20)
        try runA.add(step: 30)
        let latest = scratch.path("runs/latest")
        try FileManager.default.createSymbolicLink(at: latest, withDestinationURL: runA.directory)
        let output = scratch.path("out")
        #expect(try runs.trace(latest, output).status == 0)
        let before = try Data(contentsOf: output.appendingPathComponent("scores.h5"))

        let runB = try SeriesBuilder(in: scratch, name: "runs/B")
        try FileManager.default.createSymbolicLink(at: runB.directory.appendingPathComponent("checkpoint-10"), withDestinationURL: initial)
        try FileManager.default.removeItem(at: latest)
        try FileManager.default.createSymbolicLink(at: latest, withDestinationURL: runB.directory)
        let run = try runs.trace(latest, output)
        #expect(run.status == 1)
        #expect(run.stderr.contains("is still there with checkpoints (checkpoint-20, checkpoint-30) that "
                                    + "\(runB.directory.resolvingSymlinksInPath().path) lacks: it is another run"), "\(run.stderr)")
        #expect(try Data(contentsOf: output.appendingPathComponent("scores.h5")) == before)
    }

    /// A series moved (or reached by another path) is recognised by its
    /// checkpoints' files: the stored rows are kept, not rescored, and the
    /// store records where it is now. A store from before the directory was
    /// recorded is taken as this series' and records it.
    @Test func movedSeriesKeepsItsRows() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch, name: "run")
        try series.add(step: 10)
        try series.add(step: 20)
        let output = scratch.path("out")
        #expect(try runs.trace(series.directory, output).status == 0)

        let moved = scratch.path("archive/run")
        try FileManager.default.createDirectory(at: moved.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.moveItem(at: series.directory, to: moved)
        try touch(try SeriesBuilder(in: scratch, name: "archive/run").add(step: 30), Date(timeIntervalSinceNow: -30))
        let run = try runs.trace(moved, output)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("2 checkpoints already scored"), "\(run.stderr)")
        #expect(run.stderr.contains("the series was in \(series.directory.resolvingSymlinksInPath().path); the store now records \(moved.resolvingSymlinksInPath().path)"))
        let store = try stored(output)
        #expect(store.rows.map(\.name) == ["checkpoint-10", "checkpoint-20", "checkpoint-30"])
        #expect(store.metadata.seriesDirectory == moved.resolvingSymlinksInPath().path)

        // Written before the directory was recorded: continued, and recorded.
        var older = store
        older.metadata.seriesDirectory = nil
        try older.write(to: output.appendingPathComponent("scores.h5"))
        let other = try SeriesBuilder(in: scratch, name: "elsewhere")
        try touch(try other.add(step: 40), Date(timeIntervalSinceNow: -10))
        #expect(try runs.trace(other.directory, output).status == 0)
        #expect(try stored(output).metadata.seriesDirectory == other.directory.resolvingSymlinksInPath().path)
    }

    /// `slurm submit` refuses what finalize would, before submitting anything.
    @Test func submitRefusesAStoreOfAnotherRun() throws {
        let series = try SlurmStepsTests.Series(steps: [(10, "llama-f32")])
        try FileManager.default.createDirectory(at: series.output, withIntermediateDirectories: true)
        try PrecisionTests.writeStore(series.store)
        let file = try HDF5File.open(at: series.store, writable: true)
        try file.setAttribute("series_directory", "/no-such-runs/seed-1")
        try file.close()

        let result = try DroptraceCommand.run(["slurm", "submit", series.pipeline.path, "--dry-run"])
        #expect(result.status == 1)
        #expect(PrecisionTests.errors(result.stderr).count == 1, "\(result.stderr)")
        #expect(result.stderr.contains("\(series.store.path): holds the rows of the series in /no-such-runs/seed-1 (1 checkpoint)"), "\(result.stderr)")
        let scripts = (try? FileManager.default.subpathsOfDirectory(atPath: series.output.appendingPathComponent("slurm").path)) ?? []
        #expect(!scripts.contains { $0.hasSuffix(".sbatch") || $0.hasSuffix(".sh") }, "nothing submitted: \(scripts)")
    }

    /// A list's series directory is the deepest directory holding every
    /// listed checkpoint.
    @Test func listedCheckpointsRecordTheirCommonDirectory() {
        func directory(_ paths: [String]) -> String {
            TraceOptions.Checkpoints.list(paths.map { URL(fileURLWithPath: $0) }).seriesDirectory
        }
        #expect(directory(["/no-such-runs/a/checkpoint-1", "/no-such-runs/a/checkpoint-2"]) == "/no-such-runs/a")
        #expect(directory(["/no-such-runs/a/checkpoint-1", "/no-such-runs/b/stage2/checkpoint-2"]) == "/no-such-runs")
        #expect(directory(["/no-such-runs/a/checkpoint-1"]) == "/no-such-runs/a")
        #expect(directory(["/checkpoint-1", "/no-such-runs/checkpoint-2"]) == "/")
    }
}

import Analysis
import DroptraceSupport
import Foundation
import Pipeline
import Reporting
import ScoreStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Writing outputs in shared directories and on full disks: nothing is
/// written through a symbolic link, only droptrace's own temporary files
/// are cleaned up, a failed write keeps the previous output byte for byte,
/// and every failure is one line naming the file.
@Suite struct OutputSafetyTests {
    private let files = FileManager.default

    private func bytes(_ url: URL) throws -> Data { try Data(contentsOf: url) }

    /// The error lines of a run's stderr.
    private func errorLines(_ result: DroptraceCommand.Result) -> [Substring] {
        result.stderr.split(separator: "\n").filter { $0.contains(" error: ") }
    }

    /// A run that failed cleanly: exit 1 (not a signal), exactly one error
    /// line, naming `path` and mentioning `words`, and no other stray output.
    private func expectOneLineFailure(_ result: DroptraceCommand.Result, naming path: String, mentioning words: [String],
                                      sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status == 1, "\(result.stderr)", sourceLocation: sourceLocation)
        let errors = errorLines(result)
        #expect(errors.count == 1, "\(result.stderr)", sourceLocation: sourceLocation)
        #expect(errors.first?.contains(path) == true, "\(result.stderr)", sourceLocation: sourceLocation)
        for word in words {
            #expect(errors.first?.contains(word) == true, "\(result.stderr) should mention \(word)",
                    sourceLocation: sourceLocation)
        }
        // Every line is a log line: no HDF5 stack dump, no crash report.
        for line in result.stderr.split(separator: "\n") {
            #expect(line.wholeMatch(of: #/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (info|warning|error): .+/#) != nil,
                    "stray output: \(line)", sourceLocation: sourceLocation)
        }
    }

    private func trace(_ series: URL, _ output: URL, _ extra: [String] = []) throws -> DroptraceCommand.Result {
        try DroptraceCommand.run(traceArguments(series, output) + extra)
    }

    private func traceArguments(_ series: URL, _ output: URL) -> [String] {
        ["trace", series.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path,
         "--threads", "1"]
    }

    // MARK: - Files droptrace did not write

    /// A report.md or figure of one's own in the output directory (a project
    /// folder given as the output) is refused before anything is scored, untouched.
    @Test(arguments: ["report.md", "figures/importance_mlp.svg"])
    func foreignReportFilesAreRefusedBeforeScoring(name: String) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let output = scratch.path("out")
        let theirs = output.appendingPathComponent(name)
        try files.createDirectory(at: theirs.deletingLastPathComponent(), withIntermediateDirectories: true)
        let text = name.hasSuffix(".svg") ? #"<?xml version="1.0" encoding="UTF-8"?>"# + "\n<svg/>\n" : "# My notes\n"
        try text.write(to: theirs, atomically: false, encoding: .utf8)
        let result = try trace(series.directory, output)
        expectOneLineFailure(result, naming: theirs.path, mentioning: ["droptrace did not write it"])
        #expect(try String(contentsOf: theirs, encoding: .utf8) == text)
        #expect(!files.fileExists(atPath: output.appendingPathComponent("scores.h5").path))
    }

    /// Reports and figures of versions before the marker, beside their
    /// store, are droptrace's: the next run replaces them.
    @Test func unmarkedReportBesideItsStoreIsReplaced() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let output = scratch.path("out")
        try #require(try trace(series.directory, output).status == 0)
        let report = output.appendingPathComponent("report.md")
        let marked = try String(contentsOf: report, encoding: .utf8)
        try String(marked.dropFirst(ReportOwnership.marker.count + 1)).write(to: report, atomically: false, encoding: .utf8)
        try series.add(step: 2)
        let result = try trace(series.directory, output)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try String(contentsOf: report, encoding: .utf8).hasPrefix(ReportOwnership.marker + "\n"))
    }

    /// What the report writer could not replace (a directory where report.md
    /// or a figure goes, a file where figures/ goes) is refused before
    /// anything is scored, as droptrace's refusal of others' files is; it was
    /// found only after every checkpoint had been scored.
    @Test(arguments: ["report.md", "figures/importance_mlp.svg", "figures"])
    func outputsOfTheWrongKindAreRefusedBeforeScoring(name: String) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let output = scratch.path("out")
        let theirs = output.appendingPathComponent(name)
        if name == "figures" {
            try files.createDirectory(at: output, withIntermediateDirectories: true)
            try "not a directory\n".write(to: theirs, atomically: false, encoding: .utf8)
        } else {
            try files.createDirectory(at: theirs, withIntermediateDirectories: true)
        }
        let result = try trace(series.directory, output)
        expectOneLineFailure(result, naming: theirs.path, mentioning: [name == "figures" ? "not a directory" : "is a directory"])
        #expect(!files.fileExists(atPath: output.appendingPathComponent("scores.h5").path))
        #expect(!result.stderr.contains("scoring "), "\(result.stderr)")
    }

    /// An output directory inside a checkpoint, which the Trainer deletes
    /// with the store in it (save_total_limit), is refused before anything is scored.
    /// A checkpoint still being written counts too (the store would be
    /// written there, and every run fail once it is finished); nothing is
    /// created inside it, not even the output directory.
    @Test(arguments: [false, true])
    func outputInsideACheckpointIsRefusedBeforeScoring(stillBeingWritten: Bool) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let checkpoint = try series.add(step: 2)
        if stillBeingWritten { try Data([1, 2, 3]).write(to: checkpoint.appendingPathComponent("model.safetensors")) }
        let output = checkpoint.appendingPathComponent("droptrace/run")
        let result = try trace(series.directory, output)
        expectOneLineFailure(result, naming: output.path, mentioning: ["inside checkpoint checkpoint-2"])
        #expect(!files.fileExists(atPath: checkpoint.appendingPathComponent("droptrace").path))
        #expect(!result.stderr.contains("scoring "), "\(result.stderr)")
    }

    /// A checkpoint entry that is a link to a directory elsewhere counts as
    /// the checkpoint: an output inside its target is refused too.
    @Test(arguments: [false, true])
    func outputInsideALinkedCheckpointIsRefused(throughTheLink: Bool) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let elsewhere = try scratch.copyOfModel("llama-f32", as: "elsewhere")
        try files.createSymbolicLink(at: series.directory.appendingPathComponent("checkpoint-2"), withDestinationURL: elsewhere)
        let output = (throughTheLink ? series.directory.appendingPathComponent("checkpoint-2") : elsewhere).appendingPathComponent("out")
        let result = try trace(series.directory, output)
        expectOneLineFailure(result, naming: output.path, mentioning: ["inside checkpoint checkpoint-2"])
        #expect(!files.fileExists(atPath: elsewhere.appendingPathComponent("out").path))
    }

    /// An output inside a checkpoint of another run (named like one,
    /// holding weight files) is refused as well: it goes with that checkpoint all
    /// the same. Inside the series directory itself, beside the final model
    /// the Trainer saves there, is fine.
    @Test(arguments: ["checkpoint-9", "global_step9"])
    func outputInsideAnotherCheckpointIsRefused(name: String) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let other = try scratch.copyOfModel("llama-f32", as: name)
        let output = other.appendingPathComponent("droptrace/run")
        let result = try trace(series.directory, output)
        expectOneLineFailure(result, naming: output.path, mentioning: ["inside checkpoint \(name)"])
        #expect(!files.fileExists(atPath: other.appendingPathComponent("droptrace").path))

        for file in ["config.json", "model.safetensors"] {
            try files.copyItem(at: FixtureFiles.model("llama-f32").appendingPathComponent(file),
                               to: series.directory.appendingPathComponent(file))
        }
        let beside = try trace(series.directory, series.directory.appendingPathComponent("droptrace"))
        #expect(beside.status == 0, "\(beside.stderr)")

        // Named like a checkpoint of the series, before that checkpoint exists: it was created, then
        // refused on every later run and taken for a corrupt checkpoint by other traces of the series.
        let named = series.directory.appendingPathComponent("checkpoint-999")
        expectOneLineFailure(try trace(series.directory, named), naming: named.path, mentioning: ["inside checkpoint checkpoint-999"])
        #expect(!files.fileExists(atPath: named.path))
        // So is the Trainer's staging name for it: held back from every trace of the series as still being saved.
        let staged = series.directory.appendingPathComponent("tmp-checkpoint-999")
        expectOneLineFailure(try trace(series.directory, staged), naming: staged.path, mentioning: ["inside checkpoint tmp-checkpoint-999"])
        #expect(!files.fileExists(atPath: staged.path))
    }

    /// A missing input (series, calibration, --eval file) is found before
    /// anything is scored or created: no output directory, no lock file.
    @Test(arguments: ["series", "calibration", "eval"])
    func missingInputIsRefusedBeforeTheOutputIsCreated(missing: String) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let absent = scratch.path("absent-\(missing)")
        let output = scratch.path("out")
        let result = try DroptraceCommand.run([
            "trace", missing == "series" ? absent.path : series.directory.path,
            "--calibration", missing == "calibration" ? absent.path : FixtureFiles.calibrationJSONL.path,
            "--output", output.path,
        ] + (missing == "eval" ? ["--eval", absent.path] : []))
        expectOneLineFailure(result, naming: absent.path, mentioning: [missing == "series" ? "not found" : "No such file or directory"])
        #expect(!files.fileExists(atPath: output.path))
    }

    /// A calibration no checkpoint can read (text, and no tokenizer.json
    /// anywhere) fails before anything is created: a cron run left an empty
    /// output directory with its lock file behind.
    @Test func calibrationNoCheckpointReadsIsRefusedBeforeTheOutputIsCreated() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        for step in [1, 2] {
            try files.removeItem(at: try series.add(step: step).appendingPathComponent("tokenizer.json"))
        }
        let output = scratch.path("out")
        let result = try DroptraceCommand.run([
            "trace", series.directory.path, "--calibration", FixtureFiles.calibrationText.path, "--output", output.path,
        ])
        expectOneLineFailure(result, naming: FixtureFiles.calibrationText.path, mentioning: ["needs the checkpoint's tokenizer.json"])
        #expect(!files.fileExists(atPath: output.path))
    }

    /// An output path with a line break (a YAML literal block, `output: |`)
    /// is refused before anything is created: it was made as `out\n`.
    @Test func outputPathWithALineBreakIsRefused() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let output = scratch.path("out\n")
        let result = try trace(series.directory, output)
        #expect(result.status == 1 && result.stderr.contains("the output directory's path holds a line break"), "\(result.stderr)")
        #expect(!files.fileExists(atPath: output.path))
    }

    /// The file system's root (`--output /`, or a link to it) is refused
    /// before anything is written: trace wrote its store, report, figures and
    /// lock there, compare its report.
    @Test func fileSystemRootIsNoOutputDirectory() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let root = scratch.path("root")
        try files.createSymbolicLink(atPath: root.path, withDestinationPath: "/")
        let stores = try ["a", "b"].enumerated().map { run, name in
            try CompareTests.writeRun(AnalysisFixtures.clearlyInherentRows(), at: scratch.path(name), run: run).path
        }
        let existedBefore = ["scores.h5", "report.md", "figures", ".droptrace.lock"].filter { files.fileExists(atPath: "/" + $0) }
        for output in [URL(fileURLWithPath: "/"), root] {
            expectOneLineFailure(try trace(series.directory, output), naming: output.path, mentioning: ["is the file system's root"])
            expectOneLineFailure(
                try DroptraceCommand.run(["compare"] + stores + ["--output", output.path]), naming: output.path,
                mentioning: ["is the file system's root"])
            expectOneLineFailure(try DroptraceCommand.run(["report", output.path]), naming: output.path, mentioning: ["is the file system's root"])
        }
        for name in ["scores.h5", "report.md", "figures", ".droptrace.lock"] where !existedBefore.contains(name) {
            #expect(!files.fileExists(atPath: "/" + name))
        }
    }

    // MARK: - Symbolic links

    @Test func symlinkedLockFileIsRefusedAndItsTargetUntouched() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("out")
        try files.createDirectory(at: output, withIntermediateDirectories: true)
        let victim = try scratch.write("someone else's file\n", to: "victim.txt")
        let lock = output.appendingPathComponent(RunLock.fileName)
        try files.createSymbolicLink(at: lock, withDestinationURL: victim)

        let error = #expect(throws: DroptraceError.self) { try RunLock(directory: output) }
        #expect(error?.path == lock.path)
        #expect(error?.message.contains("symbolic link") == true)

        // (report looks for the store before it takes the lock)
        try Data("a store".utf8).write(to: output.appendingPathComponent(ScoreFile.outputFileName))
        let result = try DroptraceCommand.run(["report", output.path])
        expectOneLineFailure(result, naming: lock.path, mentioning: ["symbolic link"])
        #expect(try String(contentsOf: victim, encoding: .utf8) == "someone else's file\n")
        #expect(try files.destinationOfSymbolicLink(atPath: lock.path) == victim.path)
    }

    /// `report` on a directory holding no store (a checkpoint's, a typo):
    /// refused, and no lock file left in it.
    @Test func reportWithoutAStoreLeavesNothingBehind() throws {
        let scratch = try ScratchDirectory()
        let directory = scratch.path("checkpoint-10")
        try files.createDirectory(at: directory, withIntermediateDirectories: true)
        expectOneLineFailure(
            try DroptraceCommand.run(["report", directory.path]), naming: directory.path, mentioning: ["no scores.h5 here"])
        #expect(try files.contentsOfDirectory(atPath: directory.path).isEmpty)
    }

    /// A scores.h5 that is a symbolic link: the store is replaced in place,
    /// so the link became a file and its target went stale; a dangling one
    /// (a share not mounted) was taken for no store and every checkpoint rescored.
    @Test(arguments: [false, true])
    func symlinkedStoreIsRefusedAndLeftAsItIs(dangling: Bool) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let elsewhere = scratch.path("elsewhere")
        if !dangling { #expect(try trace(series.directory, elsewhere).status == 0) }
        let target = elsewhere.appendingPathComponent("scores.h5")
        let before = dangling ? nil : try bytes(target)
        let output = scratch.path("out")
        try files.createDirectory(at: output, withIntermediateDirectories: true)
        let store = output.appendingPathComponent("scores.h5")
        try files.createSymbolicLink(at: store, withDestinationURL: target)
        try series.add(step: 20)

        expectOneLineFailure(try trace(series.directory, output), naming: store.path, mentioning: ["is a symbolic link to"])
        #expect(try files.destinationOfSymbolicLink(atPath: store.path) == target.path)
        #expect(dangling ? !files.fileExists(atPath: target.path) : try bytes(target) == before)
    }

    @Test func hardLinkedLockFileIsRefused() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("out")
        try files.createDirectory(at: output, withIntermediateDirectories: true)
        let victim = try scratch.write("keep me\n", to: "victim.txt")
        try files.linkItem(at: victim, to: output.appendingPathComponent(RunLock.fileName))
        #expect(throws: DroptraceError.self) { try RunLock(directory: output) }
        #expect(try String(contentsOf: victim, encoding: .utf8) == "keep me\n")
    }

    /// An output directory removed and made again while a run holds its lock
    /// (by hand, or by a second run after it) is not the run's any more: a
    /// cron run finished writing into the new directory, whose own run then
    /// found a store it had not written.
    @Test func aLockIsHeldOnlyWhileItsDirectoryIsTheSame() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("out")
        let lock = try RunLock(directory: output)
        try lock.checkStillHeld()
        try files.removeItem(at: output)
        try files.createDirectory(at: output, withIntermediateDirectories: true)
        let gone = #expect(throws: DroptraceError.self) { try lock.checkStillHeld() }
        #expect(gone?.path == output.path && gone?.message.contains("was removed or replaced while this run worked") == true)
        let second = try RunLock(directory: output)
        try second.checkStillHeld()
        #expect(throws: DroptraceError.self) { try lock.checkStillHeld() }
    }

    @Test func symlinkedFiguresDirectoryIsRefusedAndItsFilesUntouched() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("out")
        try files.createDirectory(at: output, withIntermediateDirectories: true)
        let elsewhere = scratch.path("elsewhere")
        try files.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        let theirs = ["mean_importance.svg": "<svg>theirs</svg>", ".mean_importance.svg.tmp-1": "hidden",
                      "notes.txt": "notes"]
        for (name, text) in theirs { _ = try scratch.write(text, to: "elsewhere/\(name)") }
        let figures = output.appendingPathComponent(ReportWriter.figuresDirectory)
        try files.createSymbolicLink(at: figures, withDestinationURL: elsewhere)

        let scores = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
        let writer = try ReportWriter(scoreFile: scores, analysis: try SeriesAnalysis(rows: scores.rows))
        let error = #expect(throws: DroptraceError.self) { try writer.write(to: output) }
        #expect(error?.path == figures.path)
        #expect(error?.message.contains("symbolic link") == true)
        #expect(error.map { !$0.description.contains("\n") } == true)
        #expect(!files.fileExists(atPath: output.appendingPathComponent(ReportWriter.reportFileName).path))
        ReportWriter.removeStaleTemporaryFiles(in: output)

        #expect(try files.contentsOfDirectory(atPath: elsewhere.path).sorted() == theirs.keys.sorted())
        for (name, text) in theirs {
            #expect(try String(contentsOf: elsewhere.appendingPathComponent(name), encoding: .utf8) == text)
        }
    }

    @Test func reportIsWrittenOverPlantedTemporaryLinkWithoutFollowingIt() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("out")
        try files.createDirectory(at: output, withIntermediateDirectories: true)
        let victim = try scratch.write("precious", to: "victim.txt")
        // Someone plants our next temporary name as a link, and report.md as another.
        let temporary = TemporaryFileName.forTarget(ReportWriter.reportFileName)
        try files.createSymbolicLink(at: output.appendingPathComponent(temporary), withDestinationURL: victim)
        try files.createSymbolicLink(at: output.appendingPathComponent(ReportWriter.reportFileName),
                                     withDestinationURL: victim)

        let scores = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
        let report = try ReportWriter(scoreFile: scores, analysis: try SeriesAnalysis(rows: scores.rows))
            .write(to: output)
        #expect(try String(contentsOf: victim, encoding: .utf8) == "precious")
        #expect(try files.attributesOfItem(atPath: report.path)[.type] as? FileAttributeType == .typeRegular)
        #expect(try String(contentsOf: report, encoding: .utf8).hasPrefix(ReportOwnership.marker + "\n# "))
    }

    @Test func storeIsNeverWrittenThroughAPlantedTemporaryLink() throws {
        let scratch = try ScratchDirectory()
        let victim = try scratch.write("precious", to: "victim.txt")
        let target = scratch.path("new.h5")
        // HDF5File.create builds the file in memory and creates it with O_EXCL on close.
        try files.createSymbolicLink(at: target, withDestinationURL: victim)
        let file = try HDF5File.create(at: target)
        try file.createDataset("x", values: [Float(1)])
        let error = #expect(throws: DroptraceError.self) { try file.close() }
        #expect(error?.path == target.path)
        #expect(try String(contentsOf: victim, encoding: .utf8) == "precious")
    }

    // MARK: - Stale temporary files

    /// A pid no process has now.
    private func deadPID() -> Int32 {
        var pid: Int32 = 4_000_000
        while kill(pid, 0) == 0 || errno == EPERM { pid -= 1 }
        return pid
    }

    @Test func staleCleanupRemovesOnlyDroptracesOwnTemporaryFiles() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("out")
        let figures = output.appendingPathComponent(ReportWriter.figuresDirectory)
        try files.createDirectory(at: figures, withIntermediateDirectories: true)
        let dead = deadPID()
        let stale = [
            ".scores.h5.tmp-\(dead)", ".report.md.tmp-\(dead)", "figures/.mean_importance.svg.tmp-\(dead)",
        ]
        let users = [
            ".bashrc", ".notes.tmp-\(dead)", ".scores.h5.tmp-backup", ".scores.h5.tmp-\(dead)x", ".tmp-\(dead)",
            "figures/.secret.tmp-12", "figures/.hidden", "figures/.report.md.tmp-\(dead)",
            ".report.md.tmp-1",  // pid 1 is alive: maybe another writer's
        ]
        for name in stale + users { _ = try scratch.write("x", to: "out/\(name)") }
        // A link and a directory under our own pattern are not ours either.
        let linkTarget = try scratch.write("link target", to: "target.txt")
        try files.createSymbolicLink(at: figures.appendingPathComponent(".jaccard_final.svg.tmp-\(dead)"),
                                     withDestinationURL: linkTarget)
        try files.createDirectory(at: output.appendingPathComponent(".scores.h5.tmp-\(dead - 1)"),
                                  withIntermediateDirectories: false)

        ReportWriter.removeStaleTemporaryFiles(in: output, otherTargets: ["scores.h5"])

        for name in stale { #expect(!files.fileExists(atPath: output.appendingPathComponent(name).path), "\(name)") }
        for name in users { #expect(files.fileExists(atPath: output.appendingPathComponent(name).path), "\(name)") }
        #expect(try files.destinationOfSymbolicLink(
            atPath: figures.appendingPathComponent(".jaccard_final.svg.tmp-\(dead)").path) == linkTarget.path)
        #expect(files.fileExists(atPath: output.appendingPathComponent(".scores.h5.tmp-\(dead - 1)").path))
    }

    /// A file replaced through `DirectoryHandle` (a mergekit YAML, the
    /// submission record) removes what a killed run left under its
    /// temporary name, as the store and the report do.
    @Test func replacingAFileRemovesItsKilledRunsTemporaryFile() throws {
        let scratch = try ScratchDirectory()
        let stale = try scratch.write("partial", to: ".m.yaml.tmp-\(deadPID())")
        let handle = try DirectoryHandle.create(at: scratch.url.path)
        try handle.replaceFile("m.yaml", with: Array("new".utf8))
        #expect(!files.fileExists(atPath: stale.path))
        #expect(try String(contentsOf: scratch.path("m.yaml"), encoding: .utf8) == "new")
    }

    /// `score --output` through a symbolic link writes the file it names and
    /// keeps the link (a link to nothing is refused before any work); a name
    /// too long for its temporary name is refused before any work, saying so.
    @Test func scoreOutputFollowsALinkAndLongNamesAreRefusedFirst() throws {
        let scratch = try ScratchDirectory()
        func score(_ output: URL) throws -> DroptraceCommand.Result {
            try DroptraceCommand.run([
                "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
                "--output", output.path, "--threads", "1",
            ])
        }
        let target = scratch.path("target.h5"), link = scratch.path("link.h5")
        try #require(try score(target).status == 0)
        try files.createSymbolicLink(at: link, withDestinationURL: target)
        let before = FileVersion.current(target.path)
        #expect(try score(link).status == 0)
        #expect(FileVersion.current(target.path) != before, "the file the link names is replaced")
        #expect(try files.destinationOfSymbolicLink(atPath: link.path) == target.path)
        #expect(try ScoreFile.read(from: target).rows.count == 1)
        let dangling = scratch.path("dangling.h5")
        try files.createSymbolicLink(at: dangling, withDestinationURL: scratch.path("nothing.h5"))
        expectOneLineFailure(try score(dangling), naming: dangling.path, mentioning: ["symbolic link to nothing"])
        let long = scratch.path(String(repeating: "n", count: 242) + ".h5")
        expectOneLineFailure(try score(long), naming: long.path, mentioning: ["temporary name 16 bytes longer"])
    }

    /// A checkpoint whose directory name is not UTF-8 (Foundation's listing
    /// leaves it out) fails the run naming it, instead of going unseen.
    @Test func nonUTF8CheckpointNamesAreNamedNotIgnored() throws {
        let scratch = try ScratchDirectory()
        let series = scratch.path("series")
        try files.createDirectory(at: series, withIntermediateDirectories: true)
        let raw = Array(series.path.utf8) + Array("/checkpoint-7".utf8) + [0xFF, 0]
        #expect(raw.withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { mkdir($0.baseAddress!, 0o755) } } == 0)
        let result = try trace(series, scratch.path("out"))
        #expect(result.status == 1)
        #expect(result.stderr.contains("checkpoint-7\\xff: the name is not UTF-8"), "\(result.stderr)")
    }

    /// Runs droptrace as user nobody (65534) with at most `processes`
    /// processes and threads for that user (prlimit --nproc), via setpriv.
    private static func runAsNobody(processes: Int, _ arguments: [String]) throws -> DroptraceCommand.Result {
        try DroptraceCommand.run(arguments, launcher: [
            "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/prlimit", "--nproc=\(processes)",
            "/usr/bin/env", "OPENBLAS_NUM_THREADS=1",
        ])
    }

    /// Root (who may switch to nobody, whom the limit binds) with setpriv and
    /// prlimit, and a build nobody can run.
    static let canLimitProcesses: Bool = {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit") else { return false }
        return (try? runAsNobody(processes: 1000, ["--version"]).status) == 0
    }()

    /// Under a limit on processes and threads that leaves fewer than the run
    /// needs, libdispatch waited forever for a thread (holding the lock, so
    /// every later run exited 75): now one line and exit 1, at once.
    @Test(.enabled(if: OutputSafetyTests.canLimitProcesses, "needs root, setpriv and prlimit"))
    func aThreadLimitFailsTheRunInsteadOfHangingIt() throws {
        let result = try Self.runAsNobody(processes: 3, [
            "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", "/nonexistent/s.h5", "--threads", "2",
        ])
        #expect(result.status == 1, "\(result.stderr)")
        #expect(result.stderr.contains("cannot start 5 threads (2 for --threads, 3 beside them)"), "\(result.stderr)")
    }

    /// With no thread or process to spare at all, the engine's check and the
    /// store's probe (a forked child) name the limit, which the C library's
    /// "Resource temporarily unavailable" does not. (OpenBLAS starts its own
    /// thread pool as the library loads, before droptrace runs, unless
    /// OPENBLAS_NUM_THREADS is 1: it is set here, else OpenBLAS raises SIGINT.)
    @Test(.enabled(if: OutputSafetyTests.canLimitProcesses, "needs root, setpriv and prlimit"))
    func noThreadToSpareIsNamed() throws {
        let scratch = try ScratchDirectory()
        let score = try Self.runAsNobody(processes: 1, [
            "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", "/nonexistent/s.h5", "--threads", "1",
        ])
        #expect(score.status == 1, "\(score.stderr)")
        #expect(score.stderr.contains("cannot start 4 threads (1 for --threads, 3 beside them) after 0"), "\(score.stderr)")

        let output = scratch.path("out")
        try files.createDirectory(at: output, withIntermediateDirectories: true)
        try AnalysisFixtures.scoreFile(AnalysisFixtures.clearlyInherentRows()).write(to: output.appendingPathComponent("scores.h5"), extra: nil)
        for path in [scratch.url.path, output.path] { chmod(path, 0o777) }
        let report = try Self.runAsNobody(processes: 1, ["report", output.path])
        #expect(report.status == 1, "\(report.stderr)")
        #expect(report.stderr.contains("scores.h5: cannot check the HDF5 file before reading it"), "\(report.stderr)")
        for result in [score, report] {
            #expect(result.stderr.contains("ulimit -u"), "\(result.stderr)")
        }
    }

    @Test func temporaryNamesParseOnlyAsDroptraceMakesThem() {
        #expect(TemporaryFileName.forTarget("scores.h5", pid: 42) == ".scores.h5.tmp-42")
        #expect(TemporaryFileName.parse(".scores.h5.tmp-42")! == ("scores.h5", 42))
        #expect(TemporaryFileName.parse(".a.tmp-1.tmp-7")! == ("a.tmp-1", 7))
        for name in ["scores.h5.tmp-42", ".scores.h5.tmp-", ".scores.h5.tmp-4x", ".tmp-42", ".x.tmp--1",
                     ".x.tmp-0", ".x.tmp-99999999999", ".x.tmp-٤٢"] {
            #expect(TemporaryFileName.parse(name) == nil, "\(name)")
        }
    }

    // MARK: - Full disk

    /// A shell prefix that makes every write beyond 512 bytes fail with EFBIG,
    /// as a full disk does with ENOSPC (SIGXFSZ is left at its default:
    /// droptrace ignores it itself).
    private let smallFileLimit = "ulimit -f 1"

    @Test func fullDiskDuringScoreKeepsThePreviousStore() throws {
        let scratch = try ScratchDirectory()
        let store = scratch.path("scores.h5")
        let arguments = ["score", FixtureFiles.model("llama-f32").path, "--calibration",
                         FixtureFiles.calibrationJSONL.path, "--output", store.path, "--threads", "1"]
        let first = try DroptraceCommand.run(arguments)
        try #require(first.status == 0, "\(first.stderr)")
        let before = try bytes(store)

        let result = try ChildProcess.droptraceInShell(setup: smallFileLimit, arguments)
        expectOneLineFailure(result, naming: store.path, mentioning: ["File too large"])
        #expect(try bytes(store) == before)
        #expect(try files.contentsOfDirectory(atPath: scratch.url.path) == ["scores.h5"], "no temporary file left")
    }

    /// Results on standard output that cannot all be written (a full disk
    /// under a redirect) fail the run: exit 0 left half a JSON file.
    @Test func standardOutputThatCannotBeWrittenFailsTheRun() throws {
        let scratch = try ScratchDirectory()
        let result = try ChildProcess.droptraceInShell(setup: "exec >/dev/full", [
            "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", scratch.path("scores.h5").path, "--json", "--threads", "1",
        ])
        expectOneLineFailure(result, naming: "standard output", mentioning: ["cannot write: No space left on device"])
    }

    /// Help and version text that cannot be written failed unsaid (exit 0).
    @Test(arguments: [["--help"], ["score", "--help"], ["help", "trace"], ["--version"]])
    func helpThatCannotBeWrittenFails(arguments: [String]) throws {
        let result = try ChildProcess.droptraceInShell(setup: "exec >/dev/full", arguments)
        expectOneLineFailure(result, naming: "standard output", mentioning: ["cannot write: No space left on device"])
    }

    /// A log reader that goes away (`2>&1 | head -1`, a log shipper that
    /// exits): SIGPIPE killed the run at its next log line, exit 141 and no
    /// message, leaving the series half traced. The run goes on unheard.
    @Test func aClosedLogPipeDoesNotStopTheRun() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        for step in [10, 20] { try series.add(step: step) }
        let output = scratch.path("out")
        let process = Process()
        process.executableURL = DroptraceCommand.executable
        process.arguments = traceArguments(series.directory, output)
        let log = Pipe()
        process.standardError = log
        process.standardOutput = FileHandle.nullDevice
        try log.fileHandleForReading.close()  // nobody reads the log
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 0,
                "\(process.terminationReason == .exit ? "exit" : "signal") \(process.terminationStatus)")
        #expect(try ScoreFile.read(from: output.appendingPathComponent("scores.h5")).rows.count == 2)
    }

    @Test func fullDiskDuringTraceKeepsThePreviousStoreAndStopsAtOnce() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let output = scratch.path("out")
        let first = try trace(series.directory, output)
        try #require(first.status == 0, "\(first.stderr)")
        let store = output.appendingPathComponent("scores.h5")
        let before = try bytes(store)
        let report = try bytes(output.appendingPathComponent(ReportWriter.reportFileName))

        try series.add(step: 20)
        try series.add(step: 30)
        let result = try ChildProcess.droptraceInShell(setup: smallFileLimit, traceArguments(series.directory, output))
        expectOneLineFailure(result, naming: store.path, mentioning: ["File too large"])
        #expect(!result.stderr.contains("scoring checkpoint-30"), "a store that cannot be written ends the run")
        #expect(try bytes(store) == before)
        #expect(try bytes(output.appendingPathComponent(ReportWriter.reportFileName)) == report)
        #expect(try files.contentsOfDirectory(atPath: output.path).sorted()
            == [RunLock.fileName, "figures", "report.md", "scores.h5"])
    }

    @Test func fullDiskDuringReportKeepsThePreviousReportAndFigures() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("out")
        try files.createDirectory(at: output, withIntermediateDirectories: true)
        let scores = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
        try scores.write(to: output.appendingPathComponent("scores.h5"), extra: nil)
        let first = try DroptraceCommand.run(["report", output.path, "--title", "before"])
        try #require(first.status == 0, "\(first.stderr)")
        let figures = output.appendingPathComponent(ReportWriter.figuresDirectory)
        let names = try files.contentsOfDirectory(atPath: figures.path).sorted()
        let before = try names.map { try bytes(figures.appendingPathComponent($0)) }
        let report = try bytes(output.appendingPathComponent(ReportWriter.reportFileName))

        let result = try ChildProcess.droptraceInShell(setup: smallFileLimit, ["report", output.path, "--title", "after"])
        expectOneLineFailure(result, naming: figures.path, mentioning: ["File too large"])
        #expect(try files.contentsOfDirectory(atPath: figures.path).sorted() == names)
        #expect(try names.map { try bytes(figures.appendingPathComponent($0)) } == before)
        #expect(try bytes(output.appendingPathComponent(ReportWriter.reportFileName)) == report)
    }

    /// A disk that fills after some of a new report's files are written
    /// (here: a file-size limit between the new files' sizes) leaves the
    /// previous report and figures whole, never new figures beside the old report.
    @Test func diskFullMidwayThroughAReportLeavesThePreviousOneWhole() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("out"), fresh = scratch.path("fresh")
        for directory in [output, fresh] { try files.createDirectory(at: directory, withIntermediateDirectories: true) }
        let store = output.appendingPathComponent("scores.h5")
        try AnalysisFixtures.scoreFile(AnalysisFixtures.clearlyInherentRows()).write(to: store, extra: nil)
        try #require(try DroptraceCommand.run(["report", output.path]).status == 0)
        let figures = output.appendingPathComponent(ReportWriter.figuresDirectory)
        func reportBytes(_ directory: URL) throws -> [String: Data] {
            let names = try files.contentsOfDirectory(atPath: directory.appendingPathComponent(ReportWriter.figuresDirectory).path)
            return try Dictionary(uniqueKeysWithValues: (names.map { "\(ReportWriter.figuresDirectory)/\($0)" } + [ReportWriter.reportFileName])
                .map { ($0, try bytes(directory.appendingPathComponent($0))) })
        }
        let before = try reportBytes(output)

        // The new store's report, written without a limit elsewhere: its files' sizes.
        try AnalysisFixtures.scoreFile(AnalysisFixtures.clearlyNotInherentRows()).write(to: store, extra: nil)
        try files.copyItem(at: store, to: fresh.appendingPathComponent("scores.h5"))
        try #require(try DroptraceCommand.run(["report", fresh.path]).status == 0)
        let after = try reportBytes(fresh)
        #expect(after != before)
        let blocks = Set(after.values.map { ($0.count + 511) / 512 }).sorted()
        var failures = 0
        for limit in blocks.dropLast() {
            let result = try ChildProcess.droptraceInShell(setup: "ulimit -f \(limit)", ["report", output.path])
            guard result.status != 0 else { continue }
            failures += 1
            #expect(try reportBytes(output) == before, "limit \(limit) × 512 bytes")
        }
        #expect(failures > 0)
        #expect(try files.contentsOfDirectory(atPath: figures.path).allSatisfy { TemporaryFileName.parse($0) == nil })
    }

    // MARK: - Damaged store

    @Test func damagedStoreIsRefusedWithoutForceAndSetAsideWithIt() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        // A valid store, to damage in each way.
        let good = scratch.path("good.h5")
        try AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows).write(to: good)
        let wrongLayout = scratch.path("wrong.h5")
        let file = try HDF5File.create(at: wrongLayout)
        try file.createDataset("unrelated", values: [Float(1)])
        try file.close()
        let damaged: [(kind: String, bytes: Data)] = [
            ("not HDF5", Data("not a store\n".utf8)),
            ("truncated", try bytes(good).prefix(700)),
            ("another layout", try bytes(wrongLayout)),
        ]

        for (kind, damage) in damaged {
            let output = scratch.path("out-\(kind.replacingOccurrences(of: " ", with: "-"))")
            try files.createDirectory(at: output, withIntermediateDirectories: true)
            let store = output.appendingPathComponent("scores.h5")
            try damage.write(to: store)

            let refused = try trace(series.directory, output)
            expectOneLineFailure(refused, naming: store.path, mentioning: ["--force"])
            #expect(try bytes(store) == damage, "\(kind)")

            let forced = try trace(series.directory, output, ["--force"])
            #expect(forced.status == 0, "\(kind): \(forced.stderr)")
            let aside = try files.contentsOfDirectory(atPath: output.path).filter { $0.hasPrefix("scores.h5.damaged-") }
            #expect(aside.count == 1, "\(kind)")
            #expect(aside.first?.wholeMatch(of: #/scores\.h5\.damaged-\d{8}T\d{6}Z/#) != nil, "\(aside)")
            if let name = aside.first {
                #expect(try bytes(output.appendingPathComponent(name)) == damage, "\(kind): set aside, not changed")
                #expect(forced.stderr.contains("warning") && forced.stderr.contains(name), "\(forced.stderr)")
            }
            #expect(try ScoreFile.read(from: store).rows.map(\.name) == ["checkpoint-10"], "\(kind)")
        }
    }

    /// A directory where the store goes made libhdf5 dump its error stack
    /// into the message; a FIFO blocked every command that reads the store
    /// forever (`trace` holding the lock). Each is refused in one line, untouched.
    @Test(arguments: ["directory", "FIFO"])
    func storeThatIsNoRegularFileIsRefusedInOneLine(kind: String) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let other = try StoreChecksumTests.scoredStore(in: scratch).deletingLastPathComponent()
        let output = scratch.path("out")
        try files.createDirectory(at: output, withIntermediateDirectories: true)
        let store = output.appendingPathComponent(ScoreFile.outputFileName)
        if kind == "directory" {
            try files.createDirectory(at: store, withIntermediateDirectories: false)
        } else {
            try #require(mkfifo(store.path, 0o644) == 0)
        }
        let release = FIFOReleaser(store.path, after: 60)
        defer { release.stop() }
        for arguments in [traceArguments(series.directory, output), ["report", output.path],
                          ["compare", output.path, other.path, "--output", scratch.path("compared").path]] {
            let result = try DroptraceCommand.run(arguments)
            expectOneLineFailure(result, naming: store.path, mentioning: ["not a regular file"])
        }
        var info = stat()
        #expect(lstat(store.path, &info) == 0 && info.st_mode & S_IFMT == (kind == "directory" ? S_IFDIR : S_IFIFO))
    }

    @Test func settingAsideNeverReplacesAnEarlierDamagedStore() throws {
        let scratch = try ScratchDirectory()
        let store = scratch.path("scores.h5")
        let date = Date(timeIntervalSince1970: 1_800_000_000)
        try Data("first".utf8).write(to: store)
        let first = try StoreAside.setAside(store, at: date)
        try Data("second".utf8).write(to: store)
        let second = try StoreAside.setAside(store, at: date)
        #expect(first.lastPathComponent == "scores.h5.damaged-20270115T080000Z")
        #expect(second.lastPathComponent == "scores.h5.damaged-20270115T080000Z-2")
        #expect(try String(contentsOf: first, encoding: .utf8) == "first")
        #expect(try String(contentsOf: second, encoding: .utf8) == "second")
        #expect(!files.fileExists(atPath: store.path))
    }

    // MARK: - Messages

    @Test func messagesStayOneLineWhateverThePathHolds() throws {
        let scratch = try ScratchDirectory()
        let odd = scratch.path("two\nlines\u{1B}[2K")
        let result = try DroptraceCommand.run([
            "score", odd.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("s.h5").path,
        ])
        expectOneLineFailure(result, naming: scratch.path("two lines [2K").path, mentioning: [])
        #expect(!result.stderr.contains("\u{1B}"))
    }

    @Test func foundationErrorsBecomeOneLineReasons() throws {
        let missing = URL(fileURLWithPath: "/nonexistent-\(UUID().uuidString)/file.txt")
        do {
            _ = try String(contentsOf: missing, encoding: .utf8)
            Issue.record("reading a missing file should fail")
        } catch {
            #expect(SystemError.summary(of: error) == "\(missing.path): No such file or directory")
        }
        do {
            _ = try FileManager.default.contentsOfDirectory(atPath: missing.path)
            Issue.record("listing a missing directory should fail")
        } catch {
            #expect(SystemError.summary(of: error) == "\(missing.path): No such file or directory")
        }
        do {
            _ = try JSONDecoder().decode([String: Int].self, from: Data("{\"a\": \"x\"}".utf8))
            Issue.record("decoding should fail")
        } catch {
            let summary = SystemError.summary(of: error)
            #expect(summary.hasPrefix("at a: ") && !summary.contains("\n"), "\(summary)")
        }
        #expect(SystemError.oneLine("unable to write\n, filename = 'x'\r\n\u{1B}[2Kend ") == "unable to write , filename = 'x' [2Kend")
    }
}

/// Opens a FIFO for writing, again and again from `seconds` on, until
/// stopped: a reader blocked opening it is released, so a test of code that
/// would block fails instead of hanging.
final class FIFOReleaser: @unchecked Sendable {
    private let stopped = NSLock()
    private var isStopped = false

    init(_ path: String, after seconds: TimeInterval) {
        let deadline = Date(timeIntervalSinceNow: seconds)
        Thread.detachNewThread { [self] in
            while !stopped.withLock({ isStopped }) {
                if Date() > deadline {
                    let descriptor = open(path, O_WRONLY | O_NONBLOCK)
                    if descriptor >= 0 { close(descriptor) }
                }
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
    }

    func stop() { stopped.withLock { isStopped = true } }
}

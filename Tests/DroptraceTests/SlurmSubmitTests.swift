import Cluster
import Foundation
import Pipeline
import ScoreStore
import Testing

/// `droptrace slurm submit` and `status` against the real one-node Slurm of
/// scripts/slurm-cluster.sh. Serialized: the tests share its two CPUs.
@Suite(.serialized) struct SlurmSubmitTests {
    /// A series of `steps` fixture checkpoints and a pipeline file over it.
    func pipeline(in scratch: ScratchDirectory, steps: [Int], slurm: String = "") throws -> (pipeline: URL, series: SeriesBuilder, out: URL) {
        let series = try SeriesBuilder(in: scratch)
        for step in steps { try series.add(step: step) }
        let text = """
            title: Slurm test
            series: series
            calibration: \(FixtureFiles.calibrationJSONL.path)
            output: out
            \(slurm)
            """
        return (try scratch.write(text, to: "pipeline.yaml"), series, scratch.path("out"))
    }

    func submit(_ pipeline: URL, _ extra: [String] = []) throws -> DroptraceCommand.Result {
        try DroptraceCommand.run(["slurm", "submit", pipeline.path] + extra)
    }

    func record(_ out: URL) throws -> SubmissionRecord { try SubmissionRecord.read(ClusterLayout(outDir: out)) }

    /// OUT_DIR/slurm as a symbolic link is refused before anything is
    /// written through it (no cluster needed: refused before Slurm is asked).
    @Test func symlinkedSlurmDirectoryIsRefusedAndItsTargetUntouched() throws {
        let scratch = try ScratchDirectory()
        let (pipeline, _, out) = try pipeline(in: scratch, steps: [10])
        let elsewhere = scratch.path("elsewhere")
        try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: out.appendingPathComponent("slurm"), withDestinationURL: elsewhere)
        let result = try submit(pipeline, ["--dry-run"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("error: \(out.appendingPathComponent("slurm").path): is a symbolic link"), "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: elsewhere.path).isEmpty)
    }

    @Test func dryRunWritesUnitsAndScriptsSplitAtMaxArraySize() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        let maxArraySize = try SlurmCluster.client.maxArraySize()
        try #require(maxArraySize <= 2000, "the test writes 2 × MaxArraySize units")
        let (pipeline, _, out) = try pipeline(
            in: scratch, steps: [10, 20], slurm: "slurm:\n  array_parallelism: 2\n  time: \"00:10:00\"\n  sbatch_args: [--comment=dt]")
        let result = try submit(pipeline, ["--shards", "\(maxArraySize)", "--dry-run"])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try SlurmCluster.queue(out).isEmpty, "a dry run submits nothing")
        #expect(try record(out).submissions.isEmpty)

        // 2 checkpoints × MaxArraySize shards: two arrays of MaxArraySize tasks, the second after the first.
        let directory = try #require(try FileManager.default.contentsOfDirectory(at: out.appendingPathComponent("slurm"), includingPropertiesForKeys: nil)
            .first { $0.lastPathComponent.hasSuffix("Z") })
        let units = try String(contentsOf: directory.appendingPathComponent("array-0.units"), encoding: .utf8).split(separator: "\n")
        #expect(units.count == maxArraySize)
        #expect(units.first == "0\t\(maxArraySize)\t\(scratch.path("series/checkpoint-10").path)")
        #expect(try String(contentsOf: directory.appendingPathComponent("array-1.units"), encoding: .utf8).split(separator: "\n").first
            == "0\t\(maxArraySize)\t\(scratch.path("series/checkpoint-20").path)")
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("array-2.units").path))

        let array = try String(contentsOf: directory.appendingPathComponent("array-0.sbatch"), encoding: .utf8)
        for expected in [
            "--array=0-\(maxArraySize - 1)%2", "--requeue", "--signal=B:USR1@60", "--open-mode=append", "--time=00:10:00",
            "--comment=dt", "--job-name=\(ClusterLayout(outDir: out).jobName)", "%A_%a.out",
            "slurm task \"$pipeline\" --checkpoint \"$checkpoint\" --shard \"$shard\" --shards \"$shards\"", "--threads \"$SLURM_CPUS_PER_TASK\"",
            "pipeline=\(pipeline.path)", "SLURM_ARRAY_TASK_ID + 1", "scontrol requeue",
        ] {
            #expect(array.contains(expected), "array script lacks \(expected)")
        }
        #expect(array.contains("droptrace=\(DroptraceCommand.executable.path)"), "the scripts call this droptrace by its absolute path")
        // The script's own lines in the task logs are timestamped as droptrace's are (they were bare).
        #expect(array.contains("log info \"array task ") && array.contains("log warning \"time limit near"), "\(array)")
        let stray = try ChildProcess.run("/usr/bin/env", [
            "SLURM_ARRAY_TASK_ID=\(maxArraySize)", "bash", directory.appendingPathComponent("array-0.sbatch").path])
        #expect(stray.status == 1)
        #expect(stray.stderr.wholeMatch(of: try Regex(#"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ error: .*array-0\.units: no unit for array task \d+\n"#)) != nil,
                "\(stray.stderr)")
        let finalize = try String(contentsOf: directory.appendingPathComponent("finalize.sbatch"), encoding: .utf8)
        #expect(finalize.contains("slurm finalize \(pipeline.path)") && finalize.contains("finalize.exit"))

        // submit.sh submits them as submit would: the second array after the first (the throttle), finalize after both.
        let submitScript = directory.appendingPathComponent("submit.sh")
        #expect(result.stdout.contains("dry run: \(submitScript.path) submits these jobs in order"), "\(result.stdout)")
        let calls = scratch.path("sbatch-calls")
        try FileManager.default.createDirectory(at: scratch.path("bin"), withIntermediateDirectories: true)
        let fakeSbatch = try scratch.write("""
            #!/bin/bash
            n=$(( $(cat \(calls.path) 2>/dev/null | wc -l) + 101 ))
            echo "$*" >> \(calls.path)
            echo "$n;cluster"
            """, to: "bin/sbatch")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fakeSbatch.path)
        let ran = try ChildProcess.run("/usr/bin/env", [
            "PATH=\(fakeSbatch.deletingLastPathComponent().path):/usr/bin:/bin", submitScript.path])
        #expect(ran.status == 0, "\(ran.stderr)")
        let submitted = try String(contentsOf: calls, encoding: .utf8).split(separator: "\n").map(String.init)
        try #require(submitted.count == 3, "\(submitted)")
        #expect(submitted[0].hasSuffix("array-0.sbatch") && !submitted[0].contains("--dependency"))
        #expect(submitted[1].hasSuffix("array-1.sbatch") && submitted[1].contains("--dependency=afterany:101 "))
        #expect(submitted[2].hasSuffix("finalize.sbatch") && submitted[2].contains("--dependency=afterany:101:102 "))
        #expect(ran.stdout == "103;cluster\n", "finalize's id is printed: \(ran.stdout)")
    }

    /// sbatch expands %j, %A and the like in --output: a % of the output
    /// directory's own path is written %%, so the logs land where status looks.
    @Test func percentInTheOutputPathIsLiteralInLogPaths() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let pipeline = try scratch.write(
            "series: series\ncalibration: \(FixtureFiles.calibrationJSONL.path)\noutput: run%jdir\n", to: "pipeline.yaml")
        let result = try submit(pipeline, ["--dry-run"])
        try #require(result.status == 0, "\(result.stderr)")
        let slurm = scratch.path("run%jdir/slurm")
        let directory = try #require(try FileManager.default.contentsOfDirectory(at: slurm, includingPropertiesForKeys: nil)
            .first { $0.lastPathComponent.hasSuffix("Z") })
        let logs = directory.appendingPathComponent("logs").path.replacingOccurrences(of: "%", with: "%%")
        let array = try String(contentsOf: directory.appendingPathComponent("array-0.sbatch"), encoding: .utf8)
        #expect(array.contains("--output=\(logs)/array-0-%A_%a.out"), "\(array)")
        let finalize = try String(contentsOf: directory.appendingPathComponent("finalize.sbatch"), encoding: .utf8)
        #expect(finalize.contains("--output=\(logs)/finalize-%j.out"), "\(finalize)")
    }

    @Test func queuedWorkIsNeverSubmittedTwice() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        // Held jobs stay pending, so the queue is stable while the test looks at it.
        let (pipeline, series, out) = try pipeline(in: scratch, steps: [10, 20], slurm: "slurm:\n  shards: 2\n  sbatch_args: [--hold]")
        defer { SlurmCluster.cancelAll(out) }

        var result = try submit(pipeline)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("finalize job"))
        var queued = try SlurmCluster.queue(out)
        #expect(queued.filter { $0.arrayTaskID != nil }.count == 4)
        #expect(queued.filter { $0.arrayTaskID == nil }.count == 1, "one finalize job")

        // A second submit (cron) while the first is queued: nothing new.
        result = try submit(pipeline)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("nothing new to submit"), "\(result.stdout)")
        #expect(try SlurmCluster.queue(out).count == queued.count)

        // A checkpoint added between submits is the only new work; its
        // finalize runs after everything of this directory still queued.
        try series.add(step: 30)
        result = try submit(pipeline)
        try #require(result.status == 0, "\(result.stderr)")
        var latest = try #require(try record(out).submissions.last)
        #expect(latest.arrays.flatMap(\.units).map(\.checkpoint) == ["checkpoint-30", "checkpoint-30"])
        #expect(latest.arrays.flatMap(\.units).map(\.shard) == [0, 1])
        let finalizeScript = try String(contentsOf: out.appendingPathComponent("slurm/\(latest.id)/finalize.sbatch"), encoding: .utf8)
        for job in Set(queued.map(\.jobID)) { #expect(finalizeScript.contains(String(job)), "finalize waits for job \(job)") }

        // A cancelled task is submitted again, and only it.
        let first = try #require(try record(out).submissions.first?.arrays.first)
        _ = try SlurmCluster.client.check("scancel", ["\(first.jobID)_1"])
        #expect(try SlurmCluster.waitUntil(seconds: 20) {
            try !SlurmCluster.queue(out).contains { $0.jobID == first.jobID && $0.arrayTaskID == 1 }
        })
        var status = try DroptraceCommand.run(["slurm", "status", out.path, "--json"])
        try #require(status.status == 0, "\(status.stderr)")
        let parsed = try JSONDecoder().decode(SlurmStatus.self, from: Data(status.stdout.utf8))
        #expect(parsed.units.count == 6)
        #expect(parsed.units.filter { $0.state == .failed }.map(\.job) == ["\(first.jobID)_1"])
        #expect(parsed.units.filter { $0.state == .pending }.count == 5)

        result = try submit(pipeline)
        try #require(result.status == 0, "\(result.stderr)")
        latest = try #require(try record(out).submissions.last)
        #expect(latest.arrays.flatMap(\.units) == [first.units[1]])
        queued = try SlurmCluster.queue(out)
        #expect(queued.filter { $0.arrayTaskID != nil }.count == 6)

        status = try DroptraceCommand.run(["slurm", "status", out.path])
        try #require(status.status == 0, "\(status.stderr)")
        #expect(status.stdout.contains("checkpoint-10") && status.stdout.contains("shard tasks: 6 pending"), "\(status.stdout)")
    }

    @Test func arraysAboveMaxArraySizeAreSplitAndThrottledInAll() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        let maxArraySize = try SlurmCluster.client.maxArraySize()
        try #require(maxArraySize <= 100, "the test submits 2 × MaxArraySize held tasks")
        let (pipeline, _, out) = try pipeline(in: scratch, steps: [10, 20], slurm: "slurm:\n  sbatch_args: [--hold]")
        defer { SlurmCluster.cancelAll(out) }
        let result = try submit(pipeline, ["--shards", "\(maxArraySize)", "--array-parallelism", "1"])
        try #require(result.status == 0, "\(result.stderr)")
        let submission = try #require(try record(out).submissions.last)
        #expect(submission.arrays.map(\.units.count) == [maxArraySize, maxArraySize])
        #expect(try SlurmCluster.queue(out).filter { $0.arrayTaskID != nil }.count == 2 * maxArraySize)
        // The second array waits for the first, so the throttle holds over both.
        let second = try String(contentsOf: out.appendingPathComponent("slurm/\(submission.id)/array-1.sbatch"), encoding: .utf8)
        #expect(second.contains("--dependency=afterany:\(submission.arrays[0].jobID)") && second.contains("%1"))
        #expect(result.stdout.contains("array job \(submission.arrays[1].jobID): \(maxArraySize) tasks"))
    }

    @Test func secondSubmitWhileTheFirstHoldsTheLockExits75() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        let (pipeline, _, out) = try pipeline(in: scratch, steps: [10])
        let lock = try RunLock(directory: out.appendingPathComponent("slurm"))
        defer { withExtendedLifetime(lock) {} }
        let result = try submit(pipeline)
        #expect(result.status == 75, "\(result.stderr)")
        #expect(try SlurmCluster.queue(out).isEmpty)
    }

    @Test func damagedSubmissionRecordStopsSubmitAndStatus() throws {
        let scratch = try ScratchDirectory()
        let (pipeline, _, out) = try pipeline(in: scratch, steps: [10])
        let slurm = out.appendingPathComponent("slurm")
        try FileManager.default.createDirectory(at: slurm, withIntermediateDirectories: true)
        let record = slurm.appendingPathComponent("submissions.json")
        // Well-formed records of what no submit records: `status` trapped on shard 2⁶³ − 1 (printed as shard + 1).
        func crafted(id: String = "20261203T184030Z", job: Int = 5, checkpoint: String = "checkpoint-10", shard: Int = 0, shards: Int = 1) -> String {
            #"{"version": 1, "submissions": [{"id": "\#(id)", "submitted": "2026-12-03T18:40:30Z", "pipeline": "\#(pipeline.path)", "arrays": "#
                + #"[{"jobID": \#(job), "units": [{"checkpoint": "\#(checkpoint)", "directory": "/series/\#(checkpoint)", "#
                + #""shard": \#(shard), "shards": \#(shards), "fingerprint": ""}]}], "finalizeJob": 6}]}"#
        }
        let implausible = [crafted(shard: Int.max, shards: 0), crafted(shard: 2, shards: 2), crafted(id: "../../x"), crafted(id: ".."),
                           crafted(job: 0), crafted(checkpoint: "a/b"), crafted(checkpoint: "..")]
        for damaged in ["{\"version\": 1, \"submissions\": [{\"id\": 3}]}", "\u{0}\u{1}not json", "{\"version\": 2, \"submissions\": []}"] + implausible {
            try Data(damaged.utf8).write(to: record)
            for arguments in [["slurm", "submit", pipeline.path, "--dry-run"], ["slurm", "status", out.path]] {
                let result = try DroptraceCommand.run(arguments)
                #expect(result.status == 1, "\(arguments)")
                #expect(result.stderr.contains("\(record.path): "), "\(result.stderr)")
                #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
                #expect(!implausible.contains(damaged) || result.stderr.contains("is not a droptrace submission record (submission '"),
                        "\(result.stderr)")
            }
            #expect(try Data(contentsOf: record) == Data(damaged.utf8), "the record is left as it was")
            #expect(try FileManager.default.contentsOfDirectory(atPath: slurm.path).filter { !$0.hasPrefix(".") } == ["submissions.json"])
        }
    }

    /// A job sbatch refuses (a partition the cluster lacks) is named as the
    /// pipeline's setting, and the submission's directory, holding scripts
    /// of no job, does not stay behind.
    @Test func aJobSbatchRefusesNamesThePipelineAndLeavesNoSubmission() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        let (pipeline, _, out) = try pipeline(in: scratch, steps: [10], slurm: "slurm:\n  partition: nosuch")
        defer { SlurmCluster.cancelAll(out) }
        let result = try submit(pipeline)
        #expect(result.status == 1)
        let errors = result.stderr.split(separator: "\n").filter { $0.contains(" error: ") }
        #expect(errors.count == 1 && errors[0].contains("\(pipeline.path): sbatch refused a job")
                && errors[0].contains("nothing was submitted"), "\(result.stderr)")
        let entries = try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("slurm").path)
        #expect(!entries.contains { $0.first?.isNumber == true }, "\(entries)")
        #expect(try record(out).submissions.isEmpty)
    }

    /// One output directory reached through a symbolic link has one job
    /// name: a submit by the other path found none of the queued jobs and
    /// submitted every shard again.
    @Test func theJobNameIsTheDirectorysHoweverItIsReached() throws {
        let scratch = try ScratchDirectory()
        try FileManager.default.createDirectory(at: scratch.path("real"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: scratch.path("link"), withDestinationURL: scratch.path("real"))
        for tail in ["out", "out/"] {
            #expect(ClusterLayout(outDir: scratch.path("link/\(tail)")).jobName == ClusterLayout(outDir: scratch.path("real/out")).jobName)
        }
        #expect(ClusterLayout(outDir: scratch.path("real/other")).jobName != ClusterLayout(outDir: scratch.path("real/out")).jobName)
    }

    /// Shards scored by `slurm task` run by hand (or by a dry run's
    /// submit.sh) are in no submission: status lists them (it refused the
    /// directory, saying nothing was submitted).
    @Test func statusListsPartialsNoSubmissionRecorded() throws {
        guard SlurmCluster.required() else { return }
        let scratch = try ScratchDirectory()
        let handRun = scratch.path("out/partials/checkpoint-10")
        try FileManager.default.createDirectory(at: handRun, withIntermediateDirectories: true)
        for name in ["shard-1-of-2.h5", "shard-01-of-2.h5", "notes.txt"] {
            FileManager.default.createFile(atPath: handRun.appendingPathComponent(name).path, contents: Data())
        }
        let status = try DroptraceCommand.run(["slurm", "status", scratch.path("out").path])
        #expect(status.status == 0, "\(status.stderr)")
        let rows = status.stdout.split(separator: "\n").filter { $0.hasPrefix("checkpoint-10 ") }
        #expect(rows.count == 1, "only the partial's own spelling counts: \(status.stdout)")
        #expect(rows.first.map { $0.contains(" 2/2 ") && $0.contains("partial done") && $0.contains("no submission recorded it") } == true,
                "\(status.stdout)")
        #expect(status.stdout.contains("shard tasks: 1 partial done"), "\(status.stdout)")
    }

    @Test func badSlurmSettingsAreOneLineErrors() throws {
        let scratch = try ScratchDirectory()
        for (section, problem) in [
            ("slurm:\n  shards: 0", "slurm.shards must be between 1"),
            ("slurm:\n  partitoin: x", "unknown setting \"slurm.partitoin\""),
            ("slurm: 3", "setting \"slurm\" must be a mapping"),
            ("slurm:\n  time: \"1 day\"", "slurm.time must be one word"),
            // A quoted empty value was left out of every job unsaid (the option --time '' is refused).
            ("slurm:\n  time: \"\"", "slurm.time is empty; give a value or leave the setting out"),
            ("slurm:\n  mem: ''", "slurm.mem is empty"),
            ("slurm:\n  sbatch_args: [account=x]", "slurm.sbatch_args entries must be sbatch options"),
            // Options droptrace sets itself: another job name hid the jobs from its queue (every shard submitted again).
            ("slurm:\n  sbatch_args: [--job-name=mine]", "slurm.sbatch_args sets --job-name, which droptrace sets itself"),
            ("slurm:\n  sbatch_args: [-Jmine]", "slurm.sbatch_args sets -J, which droptrace sets itself"),
            ("slurm:\n  sbatch_args: [--array=0-3]", "slurm.sbatch_args sets --array"),
        ] {
            let scratch = try ScratchDirectory()
            let (pipeline, _, out) = try pipeline(in: scratch, steps: [], slurm: section)
            let result = try submit(pipeline, ["--dry-run"])
            #expect(result.status == 1)
            #expect(result.stderr.contains("\(pipeline.path): \(problem)"), "\(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out.path))
        }
        let (pipeline, _, _) = try pipeline(in: scratch, steps: [10])
        // An option's bad value is a usage error, before the pipeline file is read.
        let result = try submit(pipeline, ["--shards", "0", "--dry-run"])
        #expect(result.status == 64 && result.stderr.contains("option --shards must be between 1"), "\(result.stderr)")
        let status = try DroptraceCommand.run(["slurm", "status", scratch.path("nowhere").path])
        #expect(status.status == 1 && status.stderr.contains("nowhere: not found: give the output directory"), "\(status.stderr)")
        let file = try DroptraceCommand.run(["slurm", "status", pipeline.path])
        #expect(file.status == 1 && file.stderr.contains("not a directory: give the output directory"), "\(file.stderr)")
        try FileManager.default.createDirectory(at: scratch.path("empty"), withIntermediateDirectories: true)
        let empty = try DroptraceCommand.run(["slurm", "status", scratch.path("empty").path])
        #expect(empty.status == 1 && empty.stderr.contains("nothing submitted here yet"), "\(empty.stderr)")
        // An empty path is no directory (it read the working directory).
        let blank = try DroptraceCommand.run(["slurm", "status", ""])
        #expect(blank.status == 64 && blank.stderr.contains("an empty argument follows \"status\": no option or argument of droptrace takes an empty value"), "\(blank.stderr)")
    }
}

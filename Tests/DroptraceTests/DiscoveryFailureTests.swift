import CheckpointIO
import DroptraceSupport
import Foundation
@testable import Pipeline
import ScoreStore
import Testing

/// What series discovery says about directories it cannot trace: never
/// silence, never "a later run will pick it up" for what waiting cannot fix.
@Suite struct DiscoveryFailureTests {
    func trace(_ series: URL, _ output: URL, _ extra: [String] = []) throws -> DroptraceCommand.Result {
        try DroptraceCommand.run([
            "trace", series.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path,
            "--threads", "1",
        ] + extra)
    }

    /// The lines of `stderr` logged at `level`.
    func lines(_ stderr: String, _ level: String) -> [Substring] {
        stderr.split(separator: "\n").filter { $0.contains(" \(level): ") }
    }

    /// Sets the modification time of `directory` and everything in it `age` seconds back.
    func age(_ directory: URL, by age: TimeInterval) throws {
        let past = [FileAttributeKey.modificationDate: Date(timeIntervalSinceNow: -age)]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory.path) {
            try FileManager.default.setAttributes(past, ofItemAtPath: directory.appendingPathComponent(name).path)
        }
        try FileManager.default.setAttributes(past, ofItemAtPath: directory.path)
    }

    /// A checkpoint directory the user may not list (another account's)
    /// looked empty: "being written", then "corrupt", never the permission.
    /// Run as root, droptrace runs as nobody (root lists any directory).
    @Test func unlistableCheckpointDirectoryFailsNamingThePermission() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let closed = try series.add(step: 2)
        let output = scratch.path("out")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: output.path)
        try FileManager.default.setAttributes([.posixPermissions: 0], ofItemAtPath: closed.path)
        defer { try? FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: closed.path) }
        let arguments = [
            "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path,
            "--threads", "1",
        ]
        let result = getuid() == 0
            ? try ChildProcess.run("/usr/bin/setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                                        DroptraceCommand.executable.path] + arguments)
            : try DroptraceCommand.run(arguments)
        #expect(result.status == 1)
        let errors = lines(result.stderr, "error")
        #expect(errors.count == 1 && errors[0].hasSuffix("error: \(closed.path): cannot list the checkpoint directory: Permission denied"),
                "\(result.stderr)")
        #expect(!result.stderr.contains("later run"), "\(result.stderr)")
    }

    @Test func checkpointNamedByNoRuleIsNamedInAWarning() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        try series.add(step: 0, name: "final")
        let logs = series.directory.appendingPathComponent("runs")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        try Data("x".utf8).write(to: logs.appendingPathComponent("events.out.tfevents.1"))

        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == ["checkpoint-10"])
        #expect(result.warnings.count == 1)
        #expect(result.warnings.first?.hasPrefix(series.directory.appendingPathComponent("final").path + ": ") == true)
        #expect(result.warnings.first?.contains("checkpoint-<N>") == true)

        let run = try trace(series.directory, scratch.path("out"))
        #expect(run.status == 0, "\(run.stderr)")
        #expect(lines(run.stderr, "warning").contains { $0.contains("/final: looks like a checkpoint") })
    }

    /// Symbolic links named like checkpoints that lead to none (a missing
    /// target, a loop, a file, the series directory itself) were passed over in
    /// silence: each is a failure line naming it, and the run exits 1.
    @Test func brokenLinksNamedLikeCheckpointsFailNamingThem() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let files = FileManager.default
        func link(_ name: String, to target: String) throws {
            try files.createSymbolicLink(atPath: series.directory.appendingPathComponent(name).path, withDestinationPath: target)
        }
        try link("checkpoint-2", to: "checkpoint-gone")
        try link("checkpoint-3", to: ".")
        try link("checkpoint-4", to: "checkpoint-5")
        try link("checkpoint-5", to: "checkpoint-4")
        try Data("x".utf8).write(to: series.directory.appendingPathComponent("notes.txt"))
        try link("checkpoint-6", to: "notes.txt")

        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == ["checkpoint-1"])
        #expect(result.failed.map(\.name).sorted() == ["checkpoint-2", "checkpoint-3", "checkpoint-4", "checkpoint-5", "checkpoint-6"])
        let broken = Dictionary(result.failed.map { ($0.name, $0.error) }, uniquingKeysWith: { a, _ in a })
        #expect(broken["checkpoint-2"]?.contains("its target does not exist") == true, "\(broken)")
        #expect(broken["checkpoint-3"]?.contains("leads back to") == true, "\(broken)")
        #expect(broken["checkpoint-4"]?.contains("its links loop") == true, "\(broken)")
        #expect(broken["checkpoint-5"]?.contains("its links loop") == true, "\(broken)")
        #expect(broken["checkpoint-6"]?.contains("leads to a file") == true, "\(broken)")
        #expect(broken["checkpoint-2"]?.hasPrefix(series.directory.appendingPathComponent("checkpoint-2").path + ": ") == true)

        let run = try trace(series.directory, scratch.path("out"))
        #expect(run.status == 1, "\(run.stderr)")
        for step in 2...6 { #expect(run.stderr.contains("/checkpoint-\(step): a symbolic link named like a checkpoint"), "\(run.stderr)") }
    }

    @Test func singleCheckpointOrUnnamedCheckpointsSayWhatWasExpected() throws {
        let scratch = try ScratchDirectory()
        let single = try scratch.copyOfModel("llama-f32")
        var run = try trace(single, scratch.path("out1"))
        #expect(run.status == 1)
        var errors = lines(run.stderr, "error")
        #expect(errors.count == 1 && errors[0].contains("\(single.path): is a single checkpoint, not a series"), "\(run.stderr)")
        #expect(run.stderr.contains("checkpoint-<N>") && run.stderr.contains("droptrace score"))
        let file = single.appendingPathComponent("model.safetensors")
        run = try trace(file, scratch.path("out1"))
        errors = lines(run.stderr, "error")
        #expect(run.status == 1 && errors.count == 1 && errors[0].contains("\(file.path): is a file, not a series directory"))

        let series = try SeriesBuilder(in: scratch, name: "unnamed")
        try series.add(step: 0, name: "best")
        try series.add(step: 0, name: "last")
        run = try trace(series.directory, scratch.path("out2"))
        #expect(run.status == 1)
        errors = lines(run.stderr, "error")
        #expect(errors.count == 1 && errors[0].contains("\(series.directory.path): holds checkpoints (best, last)"), "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out2/scores.h5").path))

        // An empty run directory (training has not saved yet) is not an error, but says what it waits for.
        let empty = try SeriesBuilder(in: scratch, name: "empty")
        run = try trace(empty.directory, scratch.path("out3"))
        #expect(run.status == 0)
        #expect(lines(run.stderr, "warning").contains { $0.contains("\(empty.directory.path): no checkpoints yet") && $0.contains("step<N>") })
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out3").path), "nothing to write: no output directory")

        // A checkpoint still being written (skipped for now) writes nothing either.
        let writing = try SeriesBuilder(in: scratch, name: "writing")
        try Data([1, 2, 3]).write(to: try writing.add(step: 1).appendingPathComponent("model.safetensors"))
        run = try trace(writing.directory, scratch.path("out4"))
        #expect(run.status == 0)
        #expect(lines(run.stderr, "warning").contains { $0.contains("skipping checkpoint-1 for now") }, "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out4").path))
    }

    @Test func shardedTrainingFormatsAreReportedWithTheirConversion() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        func file(_ relative: String, in directory: URL) throws {
            let url = directory.appendingPathComponent(relative)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(repeating: 7, count: 64).write(to: url)
        }
        let config = try Data(contentsOf: FixtureFiles.model("llama-f32").appendingPathComponent("config.json"))
        func checkpoint(_ name: String, _ files: [String]) throws -> URL {
            let directory = series.directory.appendingPathComponent(name)
            for relative in files { try file(relative, in: directory) }
            try config.write(to: directory.appendingPathComponent("config.json"))
            return directory
        }
        let fsdp = try checkpoint("checkpoint-100", ["pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/.metadata", "optimizer.bin"])
        let zero = try checkpoint("checkpoint-200", [
            "global_step200/zero_pp_rank_0_mp_rank_00_model_states.pt",
            "global_step200/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", "latest", "zero_to_fp32.py",
        ])
        let bare = try checkpoint("global_step300", ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"])
        // ZeRO-2 under the Trainer: the model is saved whole beside the shards, and is readable.
        let readable = try series.add(step: 400)
        try file("global_step400/zero_pp_rank_0_mp_rank_00_optim_states.pt", in: readable)

        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == ["checkpoint-400"])
        #expect(result.incomplete.isEmpty, "never 'still being written'")
        try #require(result.failed.map(\.name) == ["checkpoint-100", "checkpoint-200", "global_step300"])
        let errors = result.failed.map(\.error)
        #expect(errors[0].hasPrefix("\(fsdp.path): holds an FSDP sharded state dict (pytorch_model_fsdp_0/__0_0.distcp)"))
        #expect(errors[0].contains("accelerate merge-weights \(fsdp.path)/pytorch_model_fsdp_0 \(fsdp.path)"))
        #expect(errors[1].hasPrefix("\(zero.path): holds DeepSpeed ZeRO shards"))
        #expect(errors[1].contains("python \(zero.path)/zero_to_fp32.py \(zero.path) \(zero.path) --safe_serialization"))
        #expect(errors[2].hasPrefix("\(bare.path): holds DeepSpeed ZeRO shards (mp_rank_00_model_states.pt)"))
        #expect(errors[2].contains("zero_to_fp32.py \(series.directory.path) OUT_DIR -t global_step300"))
        #expect(errors.allSatisfy { !$0.contains("\n") })

        // The run scores what it can, names each failure once, and exits 1.
        let run = try trace(series.directory, scratch.path("out"))
        #expect(run.status == 1)
        #expect(lines(run.stderr, "error").count == 3, "\(run.stderr)")
        #expect(try ScoreFile.read(from: scratch.path("out/scores.h5")).rows.map(\.name) == ["checkpoint-400"])

        // `score` on such a checkpoint gives the same diagnosis.
        let score = try DroptraceCommand.run([
            "score", fsdp.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("one.h5").path,
        ])
        #expect(score.status == 1 && score.stderr.contains("accelerate merge-weights"))
    }

    /// A LoRA run's checkpoint-<N> holds the adapter alone (the Trainer and
    /// TRL save `model.save_pretrained` of the PEFT model: adapter_config.json
    /// and adapter_model.safetensors, no config.json), as in huggingface/peft#298
    /// and microsoft/dp-transformers#53. transformers loads it only by fetching
    /// the base model the adapter names. It was taken for a checkpoint still
    /// being written, every run for the settle time, then for a corrupt one.
    @Test func peftAdapterCheckpointIsRefusedAtOnceWithTheMerge() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let adapterConfig = Data(#"{"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M", "peft_type": "LORA", "r": 8}"#.utf8)
        func checkpoint(_ name: String, _ files: [String]) throws -> URL {
            let directory = series.directory.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            for file in files { try Data(repeating: 7, count: 64).write(to: directory.appendingPathComponent(file)) }
            try adapterConfig.write(to: directory.appendingPathComponent("adapter_config.json"))
            return directory
        }
        let lora = try checkpoint("checkpoint-100", [
            "adapter_model.safetensors", "optimizer.pt", "rng_state.pth", "scheduler.pt", "training_args.bin",
        ])
        // Older PEFT under the Trainer: the PEFT model's whole state dict as pytorch_model.bin, no config.json.
        let wrapped = try checkpoint("checkpoint-200", ["pytorch_model.bin", "training_args.bin"])
        try series.add(step: 300)

        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == ["checkpoint-300"])
        #expect(result.incomplete.isEmpty, "never 'still being written'")
        try #require(result.failed.map(\.name) == ["checkpoint-100", "checkpoint-200"])
        let errors = result.failed.map(\.error)
        #expect(errors[0].hasPrefix("\(lora.path): holds a PEFT adapter (adapter_model.safetensors) without the model's weights"))
        #expect(errors[1].hasPrefix("\(wrapped.path): holds a PEFT adapter (adapter_config.json)"))
        #expect(errors.allSatisfy { $0.contains("\"HuggingFaceTB/SmolLM2-135M\" in adapter_config.json") && $0.contains("merge_and_unload()") })
        #expect(errors.allSatisfy { !$0.contains("\n") })

        // `score` gives the same diagnosis, also where an export copied config.json beside the adapter.
        try Data(contentsOf: FixtureFiles.model("llama-f32").appendingPathComponent("config.json"))
            .write(to: lora.appendingPathComponent("config.json"))
        let score = try DroptraceCommand.run([
            "score", lora.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("one.h5").path,
        ])
        #expect(score.status == 1)
        #expect(score.stderr.contains("\(lora.path): holds a PEFT adapter (adapter_model.safetensors)"), "\(score.stderr)")
    }

    /// A PEFT adapter saved beside whole-model weights: transformers with
    /// peft loads the base model adapter_config.json names and applies the
    /// adapter, while droptrace scored the weights alone (exit 0, the base
    /// model's scores) in `score` and in every row of a trace.
    @Test func peftAdapterBesideModelWeightsIsRefused() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let checkpoint = try series.add(step: 2)
        try Data(#"{"base_model_name_or_path": "base", "peft_type": "LORA", "r": 8}"#.utf8)
            .write(to: checkpoint.appendingPathComponent("adapter_config.json"))
        try Data(repeating: 7, count: 64).write(to: checkpoint.appendingPathComponent("adapter_model.safetensors"))

        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == ["checkpoint-1"])
        let error = try #require(result.failed.first?.error)
        #expect(error.hasPrefix("\(checkpoint.path): holds a PEFT adapter (adapter_model.safetensors) beside model weights (model.safetensors)"), "\(error)")
        let score = try DroptraceCommand.run([
            "score", checkpoint.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("one.h5").path,
        ])
        #expect(score.status == 1 && score.stderr.contains("applies the adapter"), "\(score.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("one.h5").path))
    }

    /// `score` given a series directory says it is one, and which command scores it.
    @Test func scoreOfASeriesDirectoryPointsToTrace() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        for step in [10, 20, 30] { try series.add(step: step) }
        let score = try DroptraceCommand.run([
            "score", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("one.h5").path,
        ])
        #expect(score.status == 1)
        #expect(score.stderr.contains("it holds checkpoint directories (checkpoint-10, checkpoint-20, …): `droptrace trace` scores a series"),
                "\(score.stderr)")
    }

    @Test func corruptIsAFailureAtOnceOrAfterTheSettleTime() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        // A safetensors header that is all there but is not JSON: corrupt at once.
        let badHeader = try series.add(step: 2)
        var bytes = try Data(contentsOf: badHeader.appendingPathComponent("model.safetensors"))
        bytes[8] = UInt8(ascii: "[")
        try bytes.write(to: badHeader.appendingPathComponent("model.safetensors"))
        // A .bin that is neither zip nor legacy torch: corrupt at once.
        let badBin = try series.add(step: 3)
        try FileManager.default.removeItem(at: badBin.appendingPathComponent("model.safetensors"))
        try Data("not a pickle at all".utf8).write(to: badBin.appendingPathComponent("pytorch_model.bin"))
        // Truncated and untouched for an hour: no longer "being written".
        let stale = try series.add(step: 4)
        let weights = stale.appendingPathComponent("model.safetensors")
        let half = try Data(contentsOf: weights).count / 2
        try Data(try Data(contentsOf: weights).prefix(half)).write(to: weights)
        try age(stale, by: 3600)
        // Truncated just now: still being written.
        let fresh = try series.add(step: 5)
        try Data(try Data(contentsOf: fresh.appendingPathComponent("model.safetensors")).prefix(half))
            .write(to: fresh.appendingPathComponent("model.safetensors"))

        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == ["checkpoint-1"])
        #expect(result.incomplete.map(\.name) == ["checkpoint-5"])
        try #require(result.failed.map(\.name) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"])
        #expect(result.failed[0].error.hasPrefix("\(badHeader.path): model.safetensors has a header that is not a JSON object"))
        #expect(result.failed[1].error.hasPrefix("\(badBin.path): pytorch_model.bin is neither a zip archive"))
        #expect(result.failed[2].error.hasPrefix("\(stale.path): model.safetensors has \(half) of "))
        #expect(result.failed[2].error.contains("taken as corrupt"))

        // Through the command: failures are errors and exit 1; the settle time is an option.
        var run = try trace(series.directory, scratch.path("out"))
        #expect(run.status == 1)
        #expect(lines(run.stderr, "error").count == 3, "\(run.stderr)")
        #expect(lines(run.stderr, "warning").contains { $0.contains("checkpoint-5") && $0.contains("later run") })
        run = try trace(series.directory, scratch.path("out"), ["--settle-minutes", "0"])
        #expect(run.status == 1)
        #expect(lines(run.stderr, "error").contains { $0.contains("\(fresh.path): model.safetensors has \(half) of ") })
    }

    /// A series directory holding a trainer's own checkpoint files instead of
    /// checkpoint directories (PyTorch Lightning's `.ckpt` files, Megatron-LM's
    /// `iter_<N>/`) is an error naming them and the way out, exit 1, before any
    /// output exists: it was "no checkpoints yet", exit 0, on every cron run.
    @Test func seriesOfTrainerCheckpointFilesIsAnError() throws {
        let scratch = try ScratchDirectory()
        func series(_ name: String, _ files: [String]) throws -> URL {
            let directory = scratch.path(name)
            for relative in files {
                let url = directory.appendingPathComponent(relative)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(repeating: 7, count: 64).write(to: url)
            }
            return directory
        }
        let cases = [
            (try series("lightning", ["epoch=0-step=100.ckpt", "last.ckpt", "hparams.yaml"]),
             "holds PyTorch Lightning checkpoint files (epoch=0-step=100.ckpt, last.ckpt), which droptrace cannot read"),
            (try series("megatron", ["iter_0000100/mp_rank_00/model_optim_rng.pt", "latest_checkpointed_iteration.txt"]),
             "holds Megatron-LM checkpoints (iter_0000100), which droptrace cannot read"),
        ]
        for (directory, message) in cases {
            let output = scratch.path("out-\(directory.lastPathComponent)")
            let run = try trace(directory, output)
            #expect(run.status == 1, "\(run.stderr)")
            let errors = lines(run.stderr, "error")
            #expect(errors.count == 1 && errors[0].contains("\(directory.path): \(message)") && errors[0].contains("save_pretrained"),
                    "\(run.stderr)")
            #expect(!FileManager.default.fileExists(atPath: output.path))
        }
        // Empty, or holding other files: still waiting for the first checkpoint.
        let empty = try series("empty", ["train.log"])
        #expect(try trace(empty, scratch.path("out-empty")).status == 0)
    }

    /// A config.json cut short (empty, or ending inside its JSON, as `cp`,
    /// `rsync --inplace` or a save in place leave it for a moment) is a
    /// checkpoint being written, like a short weight file: skipped, its stored
    /// row kept, until the settle time says it is corrupt. It failed the run
    /// at once ("not valid JSON", exit 1, the stored row dropped).
    @Test func configCutShortIsBeingWritten() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        _ = try series.add(step: 1)
        let resaved = try series.add(step: 2)
        let output = scratch.path("out")
        try #require(try trace(series.directory, output).status == 0)
        let config = resaved.appendingPathComponent("config.json")
        let text = try Data(contentsOf: config)
        try text.prefix(text.count / 2).write(to: config)
        let copied = try series.add(step: 3)
        try Data().write(to: copied.appendingPathComponent("config.json"))

        let run = try trace(series.directory, output)
        #expect(run.status == 0, "\(run.stderr)")
        for name in ["checkpoint-2", "checkpoint-3"] {
            #expect(lines(run.stderr, "warning").contains { $0.contains(name) && $0.contains("config.json is not complete yet") && $0.contains("later run") },
                    "\(run.stderr)")
        }
        #expect(try ScoreFile.read(from: output.appendingPathComponent("scores.h5")).rows.map(\.name) == ["checkpoint-1", "checkpoint-2"])

        try age(copied, by: 3600)
        let settled = try trace(series.directory, output)
        #expect(settled.status == 1)
        #expect(lines(settled.stderr, "error").contains {
            $0.contains("\(copied.path): config.json is not complete yet") && $0.contains("taken as corrupt")
        }, "\(settled.stderr)")
    }

    @Test func listEntryThatDoesNotExistIsAnError() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let pipeline = try scratch.write("""
            checkpoints: [series/checkpoint-1, series/checkpoint-2]
            calibration: \(FixtureFiles.calibrationJSONL.path)
            output: out
            """, to: "pipeline.yaml")
        let run = try DroptraceCommand.run(["run", pipeline.path, "--threads", "1"])
        #expect(run.status == 1)
        let errors = lines(run.stderr, "error")
        #expect(errors.count == 1 && errors[0].hasSuffix("\(series.directory.path)/checkpoint-2: checkpoint not found"), "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out/scores.h5").path))
        let missing = series.directory.appendingPathComponent("checkpoint-9")
        do {
            _ = try CheckpointDiscovery.inspect([missing])
            Issue.record("a missing checkpoint must be an error")
        } catch let error as DroptraceError {
            #expect(error == DroptraceError("checkpoint not found", path: missing.path))
        }
        // Listed from a series a moment ago and removed since (`save_total_limit` rotating it out while
        // discovery reads the others): a warning, as a checkpoint removed after discovery is; its files'
        // missing sizes and times were taken for a corrupt checkpoint untouched since 1970.
        let listed = try CheckpointDiscovery.inspect([missing], listed: true)
        #expect(listed.ready.isEmpty && listed.failed.isEmpty)
        #expect(listed.warnings == ["\(missing.path): removed while this run looked at it; not traced in this run"])
        guard case .gone = CheckpointDiscovery.state(of: missing, settleTime: 0) else {
            Issue.record("a checkpoint directory that is not there is gone, not failed")
            return
        }
    }

    /// Checkpoints a list names without steps (no naming rule, no
    /// trainer_state.json) are stored in the list's order, the one training
    /// gave them, not by name: `final` stays the final checkpoint, also when
    /// a later run adds one.
    @Test func listedCheckpointsWithoutStepsKeepTheListsOrder() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        for name in ["init", "mid", "final"] { try series.add(step: 0, name: name) }
        func run(_ names: [String]) throws -> [String] {
            let pipeline = try scratch.write("""
                checkpoints: [\(names.map { "series/\($0)" }.joined(separator: ", "))]
                calibration: \(FixtureFiles.calibrationJSONL.path)
                output: out
                """, to: "pipeline.yaml")
            let run = try DroptraceCommand.run(["run", pipeline.path, "--threads", "1"])
            #expect(run.status == 0, "\(run.stderr)")
            return try ScoreFile.read(from: scratch.path("out/scores.h5")).rows.map(\.name)
        }
        #expect(try run(["init", "final"]) == ["init", "final"])
        #expect(try run(["init", "mid", "final"]) == ["init", "mid", "final"])
    }

    // MARK: - One checkpoint, one row

    /// A directory found twice (a symbolic link) is traced once; two
    /// directories at one step (checkpoint-7 and checkpoint-007) are both
    /// refused, each naming the other, and the others are stored.
    @Test func checkpointFoundTwiceOrTwoAtOneStepAreRefused() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let ten = try series.add(step: 10)
        try series.add(step: 20)
        let seven = try series.add(step: 7, name: "checkpoint-7")
        let padded = try series.add(step: 7, name: "checkpoint-007")
        let link = series.directory.appendingPathComponent("step10")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: ten)

        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == ["checkpoint-10", "checkpoint-20"])
        #expect(result.failed.map(\.name) == ["checkpoint-007", "checkpoint-7", "step10"])
        let messages = Dictionary(uniqueKeysWithValues: result.failed.map { ($0.name, $0.error) })
        #expect(messages["step10"] == "\(link.path): is the same directory as \(ten.path) (a symbolic link or a second spelling); it is traced once, as checkpoint-10")
        #expect(messages["checkpoint-7"]?.hasPrefix("\(seven.path): is at the same point of training (step 7) as \(padded.path)") == true)
        #expect(messages["checkpoint-007"]?.hasPrefix("\(padded.path): is at the same point of training (step 7) as \(seven.path)") == true)

        let run = try trace(series.directory, scratch.path("out"))
        #expect(run.status == 1, "\(run.stderr)")
        #expect(lines(run.stderr, "error").count == 3, "\(run.stderr)")
        let store = try ScoreFile.read(from: scratch.path("out/scores.h5"))
        #expect(store.rows.map(\.name) == ["checkpoint-10", "checkpoint-20"])
    }

    /// A checkpoint renamed after it was traced (checkpoint-7 as
    /// checkpoint-007) would be a second row at its step beside the stored
    /// one: it fails, naming that row, and the store keeps its rows; --force
    /// rescores what is on disk, dropping the old name's row.
    @Test func checkpointRenamedAfterItWasTracedIsRefused() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let seven = try series.add(step: 7, name: "checkpoint-7")
        #expect(try trace(series.directory, scratch.path("out")).status == 0)
        let padded = series.directory.appendingPathComponent("checkpoint-007")
        try FileManager.default.moveItem(at: seven, to: padded)

        let run = try trace(series.directory, scratch.path("out"))
        #expect(run.status == 1, "\(run.stderr)")
        let errors = lines(run.stderr, "error")
        #expect(errors.count == 1 && errors[0].hasSuffix(
            "error: \(padded.path): is at the same point of training (step 7) as checkpoint-7, whose row the store holds; "
                + "pass --force to rescore every checkpoint (rows of checkpoints no longer on disk are dropped), or use another output directory"),
            "\(run.stderr)")
        #expect(try ScoreFile.read(from: scratch.path("out/scores.h5")).rows.map(\.name) == ["checkpoint-7", "checkpoint-10"])

        #expect(try trace(series.directory, scratch.path("out"), ["--force"]).status == 0)
        #expect(try ScoreFile.read(from: scratch.path("out/scores.h5")).rows.map(\.name) == ["checkpoint-007", "checkpoint-10"])
    }

    /// Rows are kept by name: two listed checkpoints of one name (from two
    /// runs' directories) would replace each other's row at every run. The
    /// same directory listed twice is scored once.
    @Test func listedCheckpointsOfOneNameAreRefused() throws {
        let scratch = try ScratchDirectory()
        let first = try SeriesBuilder(in: scratch)
        let mine = try first.add(step: 10)
        try first.add(step: 20)
        let theirs = scratch.path("other/checkpoint-10")
        try FileManager.default.createDirectory(at: theirs.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: FixtureFiles.model("llama-f32"), to: theirs)
        let twenty = first.directory.appendingPathComponent("checkpoint-20")

        let result = try CheckpointDiscovery.inspect([mine, twenty, theirs, twenty])
        #expect(result.ready.map(\.name) == ["checkpoint-20"])
        #expect(result.failed.map(\.error).sorted() == [
            "\(theirs.path): has the same name as \(mine.path), and the store keeps one row per name: rename one or list only one",
            "\(twenty.path): is given twice; it is traced once, as checkpoint-20",
            "\(mine.path): has the same name as \(theirs.path), and the store keeps one row per name: rename one or list only one",
        ].sorted())
    }

    /// The Trainer's staging directory, tmp-checkpoint-<N>, is a checkpoint
    /// being saved: no warning, and alone no error ("none named by a rule"
    /// failed the first cron run of a series).
    @Test func aStagedTrainerSaveIsACheckpointBeingWritten() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10, name: "tmp-checkpoint-10")
        let alone = try CheckpointDiscovery.scan(series.directory)
        #expect(alone.ready.isEmpty && alone.failed.isEmpty)
        // Counted as being written ("0 still being written" hid it).
        #expect(alone.incomplete.map(\.name) == ["tmp-checkpoint-10"])
        #expect(alone.warnings.count == 1 && alone.warnings[0].contains("no checkpoints yet"), "\(alone.warnings)")
        try series.add(step: 5)
        let beside = try CheckpointDiscovery.scan(series.directory)
        #expect(beside.ready.map(\.name) == ["checkpoint-5"] && beside.warnings.isEmpty, "\(beside.warnings)")
        #expect(beside.incomplete.map(\.name) == ["tmp-checkpoint-10"])
        // One left unchanged past the settle time (the Trainer killed before renaming it) waited for ever, exit 0.
        let settled = try CheckpointDiscovery.scan(series.directory, settleTime: 0)
        #expect(settled.incomplete.isEmpty && settled.failed.map(\.name) == ["tmp-checkpoint-10"])
        #expect(settled.failed.first?.error.contains("tmp-checkpoint-10: a save the Trainer has not renamed yet") == true
                    && settled.failed.first?.error.contains("taken as abandoned") == true, "\(settled.failed)")
        #expect(settled.ready.map(\.name) == ["checkpoint-5"])
    }

    /// Calibration the model cannot run fails every checkpoint alike: said
    /// once, naming the line (blank lines are not sequences) or the window
    /// and what to change, before anything is created (it was said per
    /// checkpoint, after the output directory was made).
    @Test(arguments: [
        ("{\"input_ids\": [1, 2]}\n\n{\"input_ids\": [512]}\n", "c.jsonl", [String](),
         "line 3: token id 512 is outside the model's vocabulary (vocab_size 512)"),
        ("{\"input_ids\": [1, 2]}\n\n{\"input_ids\": [\((0..<300).map(String.init).joined(separator: ","))]}\n", "c.jsonl",
         [String](), "line 3 has 300 tokens, more than the model's 256 positions (max_position_embeddings): cut the sequences to the positions with --seq-len 256"),
        (String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 200), "c.txt", ["--seq-len", "300"],
         "--seq-len 300 is more than the model's 256 positions (max_position_embeddings): give --seq-len 256 or less"),
        // A window longer than the model is the option's fault, not the text's (it was "not enough for one window").
        ("The quick brown fox jumps over the lazy dog.", "c.txt", ["--seq-len", "9223372036854775807"],
         "--seq-len 9223372036854775807 is more than the model's 256 positions (max_position_embeddings): give --seq-len 256 or less"),
    ])
    func aCalibrationFaultIsSaidOnceBeforeAnythingIsCreated(text: String, name: String, options: [String], message: String) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        for step in [10, 20, 30] { try series.add(step: step) }
        let calibration = try scratch.write(text, to: name)
        let out = scratch.path("out")
        let result = try DroptraceCommand.run([
            "trace", series.directory.path, "--calibration", calibration.path, "--output", out.path,
        ] + options)
        let errors = result.stderr.split(separator: "\n").filter { $0.contains(" error: ") }
        #expect(result.status == 1 && errors.count == 1, "\(result.stderr)")
        #expect(errors.first?.contains("\(calibration.path): \(message)") == true, "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.path))
    }

    /// From a pipeline file, the fault is its `seq_len` or `drop_k`, named
    /// with that file (it named the command line's `--seq-len` and the
    /// calibration, or blamed the checkpoint for a drop-k beyond its layers).
    @Test func aPipelinesSettingsBeyondTheModelAreNamedAsItsKeys() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        for step in [10, 20] { try series.add(step: step) }
        let text = try scratch.write(String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 200), to: "c.txt")
        let long = try scratch.write("{\"input_ids\": [\((0..<300).map(String.init).joined(separator: ","))]}\n", to: "c.jsonl")
        for (calibration, message) in [
            (text, "seq_len 300 is more than the model's 256 positions (max_position_embeddings): give seq_len 256 or less"),
            (long, "line 1 has 300 tokens, more than the model's 256 positions (max_position_embeddings): cut the sequences to the positions with seq_len 256"),
        ] {
            let pipeline = try scratch.write("""
                series: series
                calibration: \(calibration.path)
                seq_len: 300
                output: out
                """, to: "pipeline.yaml")
            let result = try DroptraceCommand.run(["run", pipeline.path, "--threads", "1"])
            let errors = lines(result.stderr, "error")
            let named = calibration == text ? pipeline : calibration
            #expect(result.status == 1 && errors.count == 1, "\(result.stderr)")
            #expect(errors.first?.contains("\(named.path): \(message)") == true, "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: scratch.path("out").path))
        }
        let pipeline = try scratch.write(
            "series: series\ncalibration: \(FixtureFiles.calibrationJSONL.path)\ndrop_k: [2, 100]\noutput: out\n", to: "k.yaml")
        let result = try DroptraceCommand.run(["run", pipeline.path, "--threads", "1"])
        let message = "\(pipeline.path): drop_k 100 is out of range: the model (\(series.directory.path)/checkpoint-10) has "
            + "5 layers, so drop_k is 1 to 5"
        #expect(result.status == 1 && lines(result.stderr, "error").map { $0.hasSuffix(message) } == [true], "\(result.stderr)")
    }

    /// A series directory listed as a checkpoint is refused: it was skipped
    /// as still being written ("a later run will pick it up"), for ever.
    @Test func aListedSeriesIsNoCheckpoint() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let ten = try series.add(step: 10)
        try series.add(step: 20)
        try series.add(step: 30)
        let result = try CheckpointDiscovery.inspect([ten, series.directory])
        #expect(result.ready.map(\.name) == ["checkpoint-10"] && result.incomplete.isEmpty)
        #expect(result.failed.map(\.error) == [
            "\(series.directory.path): holds checkpoint directories (checkpoint-10, checkpoint-20, …), not a checkpoint: "
                + "give it as the series directory, or list its checkpoints",
        ])
    }

    /// A checkpoint listed twice keeps its row from run to run: the second
    /// listing is refused as a duplicate, not taken for replaced files
    /// (its row was removed and rescored at every run, the store set aside).
    @Test func checkpointListedTwiceKeepsItsRowAcrossRuns() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        try series.add(step: 20)
        let pipeline = try scratch.write("""
            calibration: \(FixtureFiles.calibrationJSONL.path)
            checkpoints: [series/checkpoint-10, series/checkpoint-20, series/checkpoint-10]
            output: out
            """, to: "pipeline.yaml")
        for run in 1...2 {
            let result = try DroptraceCommand.run(["run", pipeline.path, "--threads", "1"])
            #expect(result.status == 1, "the duplicate is reported: \(result.stderr)")
            #expect(lines(result.stderr, "error").count == 1 && result.stderr.contains("is given twice; it is traced once"))
            #expect(!result.stderr.contains("removed its stored scores") && !result.stderr.contains("set aside"), "\(result.stderr)")
            #expect(result.stderr.contains(run == 1 ? "info: scoring checkpoint-10" : "2 checkpoints already scored"), "\(result.stderr)")
        }
        #expect(try ScoreFile.read(from: scratch.path("out/scores.h5")).rows.map(\.name) == ["checkpoint-10", "checkpoint-20"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path("out").path).allSatisfy { !$0.contains("replaced") })
    }

    /// A trainer_state.json count that no count can be would place the
    /// checkpoint elsewhere in training (1e30 read as Int64.min, true as
    /// step 1, 2.5 as step 2): the checkpoint fails, naming the file.
    @Test(arguments: [
        ("global_step", "1e30"), ("global_step", "-5"), ("global_step", "true"), ("global_step", "2.5"),
        ("global_step", "18446744073709551615"), ("num_input_tokens_seen", "-4096"), ("num_input_tokens_seen", "1.5e-3"),
        ("global_step", "9.3e18"),
    ])
    func trainerStateCountThatIsNoCountFailsTheCheckpoint(key: String, literal: String) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10, tokensSeen: 640)
        let bad = try series.add(step: 20, tokensSeen: 1280)
        let stateFile = bad.appendingPathComponent("trainer_state.json")
        let fields = ["global_step": "20", "num_input_tokens_seen": "1280"].merging([key: literal]) { $1 }
        _ = try Data("{\"global_step\": \(fields["global_step"]!), \"num_input_tokens_seen\": \(fields["num_input_tokens_seen"]!), \"log_history\": []}".utf8)
            .write(to: stateFile)

        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == ["checkpoint-10"])
        #expect(result.failed.map(\.name) == ["checkpoint-20"])
        #expect(result.failed.first?.error.hasPrefix("\(stateFile.path): \(key) is ") == true, "\(result.failed)")
        #expect(result.failed.first?.error.contains("not a count from 0 to 9223372036854775807") == true, "\(result.failed)")
    }

    /// A whole number written as a float is the count it writes (Python's
    /// json reads it as a float; the checkpoint failed).
    @Test func trainerStateWholeNumberWrittenAsAFloatIsTheCount() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let checkpoint = try series.add(step: 20)
        try Data(#"{"global_step": 20.0, "num_input_tokens_seen": 1.5e12, "log_history": []}"#.utf8)
            .write(to: checkpoint.appendingPathComponent("trainer_state.json"))
        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.step) == [20] && result.ready.map(\.tokens) == [1_500_000_000_000], "\(result.failed)")
    }

    /// `num_input_tokens_seen: 0` is the Trainer's default when it does not
    /// count tokens (unknown), but at step 0 it is the count: a step-0
    /// checkpoint of a counting run read as unknown, and its run's charts
    /// and comparisons fell back to steps.
    @Test(arguments: [(0, 0), (20, -1)])
    func zeroTokensSeenCountOnlyAtStepZero(step: Int, tokens: Int64) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let checkpoint = try series.add(step: step)
        try Data(#"{"global_step": \#(step), "num_input_tokens_seen": 0, "log_history": []}"#.utf8)
            .write(to: checkpoint.appendingPathComponent("trainer_state.json"))
        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.step) == [Int64(step)] && result.ready.map(\.tokens) == [tokens], "\(result.failed)")
    }

    /// A disk that fails to read a weight file's header (EIO) is the disk's
    /// fault, named as such: it read as "an incomplete header", a checkpoint
    /// "still being written" (exit 0, skipped), then "taken as corrupt". The
    /// failure is injected by a preloaded pread that fails on that file alone.
    @Test func readErrorOfAWeightHeaderIsNamedNotTakenForAWriteInProgress() throws {
        let scratch = try ScratchDirectory()
        let preload = try FailingReadLibrary.build(in: scratch)
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1)
        let failing = try series.add(step: 2).appendingPathComponent("model.safetensors").resolvingSymlinksInPath()
        let result = try DroptraceCommand.run(
            ["trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("out").path,
             "--threads", "1"],
            environment: ["LD_PRELOAD": preload.path, FailingReadLibrary.pathVariable: failing.path])
        #expect(result.status == 1, "\(result.stderr)")
        let errors = lines(result.stderr, "error")
        #expect(errors.count == 1 && errors[0].hasSuffix("checkpoint-2: model.safetensors: cannot read: Input/output error"), "\(result.stderr)")
        #expect(lines(result.stderr, "warning").isEmpty && !result.stderr.contains("incomplete header"), "\(result.stderr)")
        #expect(lines(result.stderr, "info").contains { $0.contains("1 scored") }, "\(result.stderr)")
    }
}

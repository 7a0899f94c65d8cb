import Foundation
import ScoreStore
import Testing

/// `droptrace score` end to end: text calibration tokenised by droptrace,
/// scores in the HDF5 file and in --json, against transformers.
@Suite struct ScoreCommandTests {
    /// `--samples` above the lines of a JSONL file: all lines are scored and
    /// the shortfall is said, as for text windows.
    @Test func jsonlWithFewerLinesThanSamplesSaysSo() throws {
        let scratch = try ScratchDirectory()
        let lines = try String(contentsOf: FixtureFiles.calibrationJSONL, encoding: .utf8).split(separator: "\n").count
        let result = try DroptraceCommand.run([
            "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--samples", "\(lines + 6)", "--output", scratch.path("scores.h5").path, "--threads", "1",
        ])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("only \(lines) lines, fewer than the \(lines + 6) samples requested"), "\(result.stderr)")
    }

    @Test(arguments: FixtureFiles.modelNames)
    func textCalibrationEndToEnd(model: String) throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("scores.h5")
        let (seqLen, samples) = FixtureFiles.textSettings(model)
        let result = try DroptraceCommand.run([
            "score", FixtureFiles.model(model).path, "--calibration", FixtureFiles.calibrationText.path,
            "--seq-len", "\(seqLen)", "--samples", "\(samples)", "--output", output.path, "--json", "--threads", "2",
        ])
        try #require(result.status == 0, "\(result.stderr)")

        let reference = try #require(FixtureFiles.scores(model, "text", "float32_compute"))
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        // null: a module the layer lacks (nemotron_h).
        let scores = (json["scores"] as! [String: [Any]]).mapValues { $0.map { ($0 as? NSNumber)?.doubleValue ?? .nan } }
        let gap = (json["block_gap"] as! [[Any]]).map { $0.map { ($0 as? NSNumber)?.doubleValue ?? .nan } }
        let jsonDifference = reference.maxDifference(
            attention: scores["attention"]!, mlp: scores["mlp"]!, block: scores["block"]!, blockGap: gap)
        #expect(jsonDifference <= ScoringReferenceTests.float32Tolerance, "\(model) --json: \(jsonDifference)")
        #expect((json["calibration_tokens"] as! NSNumber).intValue == seqLen * samples)

        let file = try ScoreFile.read(from: output)
        let row = try #require(file.rows.first)
        #expect(file.rows.count == 1 && row.name == model && row.step == -1)
        #expect(file.metadata.modelType == FixtureFiles.entry(model)["model_type"] as! String)
        #expect(file.metadata.numLayers == row.attention.count)
        #expect(file.metadata.calibrationTokens == Int64(seqLen * samples))
        let stored = reference.maxDifference(
            attention: row.attention.map(Double.init), mlp: row.mlp.map(Double.init), block: row.block.map(Double.init),
            blockGap: row.blockGap.map { $0.map(Double.init) })
        // float32 storage adds at most ~1e-7 on values below 1.
        #expect(stored <= ScoringReferenceTests.float32Tolerance, "\(model) stored: \(stored)")
    }

    /// The table on standard output starts with every layer's importance
    /// as stored (it gave drop sets alone: the numbers only with --json).
    @Test func theTextOutputListsEveryLayersImportance() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("scores.h5")
        let result = try DroptraceCommand.run([
            "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", output.path, "--threads", "1",
        ])
        try #require(result.status == 0, "\(result.stderr)")
        let row = try #require(try ScoreFile.read(from: output).rows.first)
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.first?.hasPrefix("Importance per layer") == true, "\(result.stdout)")
        #expect(lines.dropFirst().first == "| Layer | Attention | MLP | Block |")
        for layer in row.attention.indices {
            let cells = [row.attention[layer], row.mlp[layer], row.block[layer]].map { String(format: "%.4f", $0) }
            #expect(lines.contains("| \(layer) | \(cells.joined(separator: " | ")) |"), "layer \(layer): \(result.stdout)")
        }
    }

    /// The row takes the step and tokens seen from trainer_state.json, as a
    /// trace does (score took them from the name alone: −1 here), and a
    /// weight file given as the checkpoint names the row by its directory.
    @Test func theRowIsPlacedByTheTrainerStateAndNamedByItsDirectory() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let state = ["global_step": 400, "num_input_tokens_seen": 819_200, "log_history": []] as [String: Any]
        try JSONSerialization.data(withJSONObject: state).write(to: model.appendingPathComponent("trainer_state.json"))
        for given in [model, model.appendingPathComponent("model.safetensors")] {
            let output = scratch.path("scores.h5")
            let result = try DroptraceCommand.run([
                "score", given.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path])
            try #require(result.status == 0, "\(result.stderr)")
            let row = try #require(try ScoreFile.read(from: output).rows.first)
            #expect(row.name == model.lastPathComponent && row.step == 400 && row.tokens == 819_200, "\(given.path)")
        }
    }

    /// A checkpoint whose config drops modules itself (LLM-Drop's
    /// `drop_attn_list`, as `drop --export` writes) has no score for them:
    /// null in --json, NaN in the store, the others as scored.
    /// Resource limits too small to run in are refused in one line (a
    /// library crashed or hung under them); a soft open-file limit below
    /// the hard one is raised.
    @Test(arguments: [("ulimit -Sn 20", nil), ("ulimit -n 20", "the open-file limit (ulimit -n) is 20"),
                      ("ulimit -v 716800", "the address-space limit (ulimit -v) is 700 MiB")] as [(String, String?)])
    func resourceLimitsTooSmallAreNamed(limit: String, refusal: String?) throws {
        let scratch = try ScratchDirectory()
        let command = [DroptraceCommand.executable.path, "score", FixtureFiles.model("llama-f32").path,
                       "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("s.h5").path]
            .map { "'\($0)'" }.joined(separator: " ")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "\(limit) && exec \(command)"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if let refusal {
            #expect(process.terminationStatus == 1 && stderr.contains("error: \(refusal)"), "\(stderr)")
        } else {
            #expect(process.terminationStatus == 0, "\(stderr)")
        }
    }

    /// A checkpoint with a SentencePiece tokenizer.model but no tokenizer.json
    /// is told how to write the one droptrace reads.
    @Test func aSentencePieceModelAloneIsNamed() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try FileManager.default.removeItem(at: model.appendingPathComponent("tokenizer.json"))
        try Data([0x0A, 0x00]).write(to: model.appendingPathComponent("tokenizer.model"))
        let result = try DroptraceCommand.run([
            "score", model.path, "--calibration", FixtureFiles.calibrationText.path, "--output", scratch.path("s.h5").path,
        ])
        #expect(result.status == 1)
        #expect(result.stderr.contains("its tokenizer.model, a SentencePiece model, is not read"), "\(result.stderr)")
    }

    /// LLM-Drop's lists hold layer indices or one boolean per layer (true:
    /// dropped), as its configuration classes save them; `[false, true]` is
    /// layer 1, never layers 0 and 1.
    @Test(arguments: [[1] as [Any], [false, true, false, false, false], [false, true], [1, false]])
    func modulesTheConfigDropsAreNullInJSON(list: [Any]) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try BadInputTests().rewriteConfig(model) { $0["drop_attn_list"] = list }
        let output = scratch.path("scores.h5")
        let result = try DroptraceCommand.run([
            "score", model.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path, "--json",
        ])
        try #require(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let attention = (json["scores"] as! [String: [Any]])["attention"]!
        #expect(attention[1] is NSNull && attention.enumerated().allSatisfy { $0.offset == 1 || $0.element is NSNumber })
        let row = try #require(try ScoreFile.read(from: output).rows.first)
        #expect(row.attention[1].isNaN && row.attention.enumerated().allSatisfy { $0.offset == 1 || $0.element.isFinite })
    }

    /// A path whose bytes are not UTF-8 reached droptrace with U+FFFD in
    /// their place and was "not found"; it is a usage error that says why.
    @Test func argumentThatIsNotUTF8IsAUsageError() throws {
        let scratch = try ScratchDirectory()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        // The shell passes the bytes on as they are (Process would take Swift strings, UTF-8 always).
        process.arguments = ["-c", #"exec "$0" score "$(printf 'model\377')" --calibration "$1" --output "$2""#,
                             DroptraceCommand.executable.path, FixtureFiles.calibrationJSONL.path, scratch.path("o.h5").path]
        let err = Pipe()
        process.standardError = err
        try process.run()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 64, "\(stderr)")
        #expect(stderr.contains("argument 'model\u{FFFD}' is not UTF-8 text"), "\(stderr)")
    }

    /// A thread count no machine has is a usage error, never a count the
    /// engine's work splits overflow on.
    @Test(arguments: ["0", "4097", "288230376151711744"])
    func threadsOutOfRangeIsAUsageError(threads: String) throws {
        let scratch = try ScratchDirectory()
        let result = try DroptraceCommand.run([
            "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", scratch.path("scores.h5").path, "--threads", threads,
        ])
        #expect(result.status == 64 && result.stderr.contains("--threads must be between 1 and 4096"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("scores.h5").path))
    }

    /// Fractional options are read in decimal only: Swift's Double(String)
    /// also reads hexadecimal, which whole-number options already refuse.
    @Test(arguments: [
        (["drop", "--speed-budget"], "0x10"), (["drop", "--speed-budget"], "0x1p4"),
        (["trace", "--settle-minutes"], "0x10"), (["trace", "--settle-minutes"], "0X1P-2"),
        (["score", "--seq-len"], "0x10"),
    ])
    func hexadecimalNumberIsAUsageError(command: [String], value: String) throws {
        let scratch = try ScratchDirectory()
        let target = command[0] == "trace" ? scratch.url.path : FixtureFiles.model("llama-f32").path
        var arguments = [command[0], target, "--calibration", FixtureFiles.calibrationJSONL.path, command[1], value]
        if command[0] == "drop" { arguments += ["--target", "attention", "--count", "1"] }
        if command[0] != "drop" { arguments += ["--output", scratch.path("out").path] }
        let result = try DroptraceCommand.run(arguments)
        #expect(result.status == 64 && result.stderr.contains(command[1]), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out").path))
    }

    /// A negative number after an option is its value, refused by the
    /// option's own check as a usage error, not taken for an unknown option
    /// ("Missing value for '--drop-k <k>'"); a value missing before the next
    /// option or at the end is still one.
    @Test(arguments: [
        (["score", "--samples", "-3"], "--samples must be at least 1"),
        (["score", "--seq-len", "-1"], "--seq-len must be at least 1"),
        (["score", "--threads", "-2"], "--threads must be between 1 and 4096"),
        (["trace", "--drop-k", "-1"], "--drop-k values must be at least 1"),
        (["trace", "--drop-k", "2", "-1", "3", "--force"], "--drop-k values must be at least 1"),
        (["trace", "--drop-k", "2", "3", "--force", "--samples", "-1"], "--samples must be at least 1"),
        (["trace", "--settle-minutes", "-0.5"], "--settle-minutes must be between 0 and 1000000"),
        (["trace", "--num-fewshot", "-1"], "--num-fewshot must be a whole number from 0 to 1000"),
        (["drop", "--count", "-1"], "--count must be at least 1"),
        (["drop", "--speed-budget", "-5"], "--speed-budget must be a number of seconds above 0"),
        (["drop", "--speed-max-rounds", "-1"], "--speed-max-rounds must be a whole number from 1 to 1000"),
        (["eval", "--num-fewshot", "-1"], "--num-fewshot must be a whole number from 0 to 1000"),
        (["eval", "--drop-attention", "-1"], "The value '-1' is invalid for '--drop-attention <i,j>'"),
        (["run", "--threads", "-1"], "--threads must be between 1 and 4096"),
        (["slurm submit", "--array-parallelism", "-4"], "option --array-parallelism must be between 1 and 1000000"),
        (["slurm task", "--shard", "-1"], "shard -1 does not exist"),
        (["score", "--samples"], "Missing value for '--samples <n>'"),
        (["trace", "--drop-k", "--force"], "Missing value for '--drop-k <k>'"),
    ])
    func negativeNumberIsRefusedByTheOptionsOwnCheck(arguments: [String], message: String) throws {
        let scratch = try ScratchDirectory()
        let model = FixtureFiles.model("llama-f32").path, calibration = FixtureFiles.calibrationJSONL.path
        let pipeline = scratch.path("p.yaml").path
        let base: [String] = switch arguments[0] {
        case "score": [model, "--calibration", calibration, "--output", scratch.path("out").path]
        case "trace": [scratch.url.path, "--calibration", calibration, "--output", scratch.path("out").path]
        case "drop": [model, "--calibration", calibration, "--target", "attention"]
            + (arguments.contains("--count") ? [] : ["--count", "1"])
        case "eval": [model, "--task", "piqa=unused.jsonl"]
        case "slurm submit": [pipeline, "--dry-run"]
        case "slurm task": [pipeline, "--checkpoint", model, "--shards", "2"]
        default: [pipeline]
        }
        let command = arguments[0].split(separator: " ").map(String.init)
        let result = try DroptraceCommand.run(command + base + arguments.dropFirst())
        #expect(result.status == 64 && result.stderr.contains(message), "\(arguments): \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out").path))
    }

    /// `--output out/` names a directory: never a file written as `out`.
    @Test func outputEndingInASlashIsAUsageError() throws {
        let scratch = try ScratchDirectory()
        let result = try DroptraceCommand.run([
            "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", scratch.path("new").path + "/",
        ])
        #expect(result.status == 64 && result.stderr.contains("names a directory"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("new").path))
    }

    @Test func textCalibrationNeedsTokenizer() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("gpt2-f32")
        try FileManager.default.removeItem(at: model.appendingPathComponent("tokenizer.json"))
        let result = try DroptraceCommand.run([
            "score", model.path, "--calibration", FixtureFiles.calibrationText.path, "--seq-len", "32",
            "--output", scratch.path("scores.h5").path,
        ])
        #expect(result.status == 1)
        #expect(result.stderr.contains("tokenizer.json") && result.stderr.contains("calib.txt"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path("scores.h5").path))
    }

    /// A log line quoting something huge (here a 100,000-character setting
    /// name) keeps its start and end, not every character.
    @Test func hugeErrorLinesAreBounded() throws {
        let scratch = try ScratchDirectory()
        let name = String(repeating: "k", count: 100_000)
        let pipeline = try scratch.write("? \(name)\n: 1\nseries: s\ncalibration: c.jsonl\noutput: out\n", to: "p.yaml")
        let result = try DroptraceCommand.run(["run", pipeline.path])
        #expect(result.status == 1)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].count < 4200, "\(lines.map(\.count))")
        #expect(lines.first?.contains("characters left out") == true)
    }

    @Test func helpExplainsTheCommand() throws {
        let result = try DroptraceCommand.run(["score", "--help"])
        #expect(result.status == 0)
        for phrase in ["--calibration", "--seq-len", "--samples", "--threads", "--json", "/scores/{attention,mlp,block}"] {
            #expect(result.stdout.contains(phrase), "help lacks \(phrase)")
        }
        // The HDF5 layout's rows fit the 80 columns help is wrapped to (shapes were broken over two lines).
        let layout = result.stdout.split(separator: "\n").filter { $0.hasPrefix("  /") }
        #expect(layout.count == 6 && layout.allSatisfy { $0.hasSuffix("]") || $0.hasSuffix("(README)") }, "\(layout)")
    }
}

import Analysis
import DroptraceSupport
import Foundation
import Pipeline
import ScoreStore
import TensorEngine
import Testing

/// `--precision` and the pipeline's `precision:`: what the commands accept,
/// what the store records, and that a store is never continued in the other
/// precision. Everything that computes in bf16 runs in a child process, so
/// no test here changes the process-wide `EnginePrecision` under others.
/// (How far bf16 scores are from f32 is the engine's tests' business.)
@Suite struct PrecisionTests {
    static let computingCommands = ["score", "trace", "drop", "eval"]

    /// The lines of `stderr` that are errors (info lines go there too).
    static func errors(_ stderr: String) -> [Substring] {
        stderr.split(separator: "\n").filter { $0.contains(" error: ") }
    }

    static func readJSON(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    /// A store of `rows` one-layer rows in `precision`, written at `url`.
    static func writeStore(_ url: URL, precision: String = "f32", kernel: String? = "test kernel") throws {
        let row = CheckpointRow(name: "checkpoint-1", step: 1, attention: [0.5], mlp: [0.25], block: [0.75], blockGap: [[0.25]])
        let metadata = ScoreFileMetadata(
            modelType: "llama", numLayers: 1, calibrationSHA256: String(repeating: "ab", count: 32), calibrationTokens: 64,
            droptraceVersion: DroptraceVersion.string, precision: precision, matrixKernel: kernel)
        try ScoreFile(metadata: metadata, rows: [row]).write(to: url)
    }

    // MARK: - The option

    /// Valid arguments of `command` but for the precision, writing into `scratch`.
    static func arguments(_ command: String, in scratch: ScratchDirectory) -> [String] {
        let model = FixtureFiles.model("llama-f32").path
        let calibration = ["--calibration", FixtureFiles.calibrationJSONL.path]
        switch command {
        case "score": return ["score", model, "--output", scratch.path("scores.h5").path] + calibration
        case "trace": return ["trace", scratch.url.path, "--output", scratch.path("out").path] + calibration
        case "drop": return ["drop", model, "--target", "attention", "--count", "1"] + calibration
        default: return ["eval", model, "--task", "arc_easy=\(EvaluationTests.file("arc_easy_test").path)"]
        }
    }

    @Test(arguments: computingCommands)
    func malformedPrecisionIsUsageError(_ command: String) throws {
        let scratch = try ScratchDirectory()
        for value in ["fp8", "BF16"] {
            let result = try DroptraceCommand.run(Self.arguments(command, in: scratch) + ["--precision", value])
            #expect(result.status == 64, "\(command) --precision '\(value)': \(result.stderr)")
            #expect(result.stderr.contains("The value '\(value)' is invalid for '--precision <f32|bf16>'"), "\(result.stderr)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).isEmpty, "nothing written")
    }

    @Test(arguments: computingCommands)
    func helpExplainsPrecision(_ command: String) throws {
        let help = try DroptraceCommand.run([command, "--help"]).stdout
        let flattened = help.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(flattened.contains("--precision <f32|bf16>"), "\(help)")
        #expect(flattened.contains("bfloat16") && flattened.contains("float32 accumulation"), "\(help)")
        #expect(flattened.contains("README"), "\(help)")
    }

    @Test func pipelineCommandsTakeThePrecisionFromTheFile() throws {
        for command in [["run"], ["slurm", "task"], ["slurm", "finalize"], ["slurm", "submit"]] {
            let help = try DroptraceCommand.run(command + ["--help"])
            #expect(help.status == 0 && !help.stdout.contains("--precision <"), "\(command): \(help.stdout)")
        }
    }

    @Test func precisionNamesAreTheStoresNames() {
        #expect(ScoreFileLayout.precisions == Precision.allCases.map(\.rawValue))
    }

    // MARK: - score

    @Test func scoreRecordsPrecisionAndKernel() throws {
        let scratch = try ScratchDirectory()
        for precision in ["f32", "bf16", nil] {
            let output = scratch.path("scores-\(precision ?? "default").h5")
            let result = try DroptraceCommand.run([
                "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
                "--output", output.path, "--threads", "1", "--json",
            ] + (precision.map { ["--precision", $0] } ?? []))
            try #require(result.status == 0, "\(result.stderr)")
            let expected = precision ?? "f32"
            let json = try Self.readJSON(result.stdout)
            #expect(json["precision"] as? String == expected)
            let kernel = try #require(json["matrix_kernel"] as? String)
            #expect(!kernel.isEmpty)
            let stored = try ScoreFile.read(from: output).metadata
            #expect(stored.precision == expected)
            #expect(stored.matrixKernel == kernel)
        }
    }

    /// oneDNN capped below any bf16 matmul (a user's ONEDNN_MAX_CPU_ISA
    /// AVX2): bf16 runs emulated and says so, even when native is asked for;
    /// the label never names a kernel that did not run. Capped below its bf16
    /// instructions (AVX512_CORE) it would still build a bf16 matmul,
    /// converting inside, slower than emulation: emulated too. A kernel
    /// setting with a value droptrace does not take is said to be ignored.
    @Test(arguments: [("AVX2", "native", nil), ("AVX512_CORE", "Native", "DROPTRACE_BF16_KERNEL=Native ignored: it takes native or emulated")])
    func bf16WithoutOneDNNsBF16UnitsIsEmulatedAndSaysSo(ceiling: String, kernelSetting: String, warning: String?) throws {
        let scratch = try ScratchDirectory()
        let result = try DroptraceCommand.run([
            "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", scratch.path("scores.h5").path, "--threads", "1", "--json", "--precision", "bf16",
        ], environment: ["ONEDNN_MAX_CPU_ISA": ceiling, "DROPTRACE_BF16_KERNEL": kernelSetting])
        try #require(result.status == 0, "\(result.stderr)")
        let kernel = try #require(try Self.readJSON(result.stdout)["matrix_kernel"] as? String)
        #expect(kernel.hasPrefix("bf16 emulated"), "\(ceiling): \(kernel)")
        if let warning { #expect(result.stderr.contains(warning), "\(result.stderr)") }
    }

    // MARK: - The store

    @Test func storeWritesAndReadsPrecisionAndKernel() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("scores.h5")
        try Self.writeStore(url, precision: "bf16", kernel: "oneDNN 2.6.3 matmul bf16 (avx512_core_amx)")
        let file = try HDF5File.open(at: url)
        #expect(try file.stringAttribute("precision") == "bf16")
        #expect(try file.stringAttribute("matrix_kernel") == "oneDNN 2.6.3 matmul bf16 (avx512_core_amx)")
        try file.close()
        let read = try ScoreFile.read(from: url).metadata
        #expect(read.precision == "bf16" && read.storedPrecision == .bf16)
        #expect(read.matrixKernel == "oneDNN 2.6.3 matmul bf16 (avx512_core_amx)")
    }

    @Test func olderStoreWithoutTheAttributesReadsAsF32() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("scores.h5")
        try Self.writeStore(url, precision: "bf16")
        let file = try HDF5File.open(at: url, writable: true)
        try file.removeAttribute("precision")
        try file.removeAttribute("matrix_kernel")
        try file.close()
        let read = try ScoreFile.read(from: url).metadata
        #expect(read.precision == "f32" && read.storedPrecision == .f32)
        #expect(read.matrixKernel == nil)
    }

    @Test func storeWithBadAttributesIsRefusedNamingIt() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("scores.h5")
        for (name, value, phrase) in [
            ("precision", "fp8\nx", "root attribute precision is \"fp8 x\", expected f32 or bf16"),
            ("matrix_kernel", "a\nb", "root attribute matrix_kernel is not one line"),
            ("matrix_kernel", "", "root attribute matrix_kernel is not one line"),
            ("series_directory", "runs/seed-1", "root attribute series_directory is not an absolute path on one line"),
            ("series_directory", "/runs/seed-1\n/runs/seed-2", "root attribute series_directory is not an absolute path on one line"),
            ("layer_shapes_sha256", "abc", "root attribute layer_shapes_sha256 is not 64 lowercase hex digits"),
            ("metric", "x\ny", "root attribute metric is \"x y\", expected cosine"),
            ("model_type", "llama\n# injected", "root attribute model_type is \"llama # injected\", not a model type"),
            ("calibration_sha256", "zz", "root attribute calibration_sha256 is not 64 lowercase hex digits"),
            ("droptrace_version", "0.1.0\n# injected", "root attribute droptrace_version is not one line of text"),
            ("layer_shapes_sha256", String(repeating: "A", count: 64), "root attribute layer_shapes_sha256 is not 64 lowercase hex digits"),
        ] {
            try Self.writeStore(url)
            let file = try HDF5File.open(at: url, writable: true)
            if try file.hasAttribute(name) { try file.removeAttribute(name) }
            try file.setAttribute(name, value)
            try file.close()
            let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
            #expect(error?.path == url.path)
            #expect(error?.message.contains(phrase) == true, "\(String(describing: error))")
        }
        try Self.writeStore(url)
        let file = try HDF5File.open(at: url, writable: true)
        try file.setAttribute("calibration_tokens", Int64(-5))
        try file.close()
        let negative = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
        #expect(negative?.message.contains("root attribute calibration_tokens is -5, expected a count") == true, "\(String(describing: negative))")
        // Checkpoint names are printed: one line each.
        try Self.writeStore(url)
        let named = try HDF5File.open(at: url, writable: true)
        let count = try named.dataset("checkpoints/name").count
        try named.remove("checkpoints/name")
        try named.createDataset("checkpoints/name", strings: Array(repeating: "step\n# injected", count: count))
        try named.close()
        let name = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
        #expect(name?.message.contains("/checkpoints/name holds 'step # injected', not a checkpoint name") == true, "\(String(describing: name))")
        // libhdf5 would convert a float to the integer asked for: 5.7 layers read as 5.
        let floats = try HDF5File.open(at: url, writable: true)
        try floats.removeAttribute("num_layers")
        try floats.setAttribute("num_layers", 5.7)
        try floats.close()
        let truncated = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
        #expect(truncated?.message.contains("'num_layers' of / holds float64 values where droptrace writes integers") == true,
                "\(String(describing: truncated))")
        // The one writer refuses what the reader would.
        let error = #expect(throws: DroptraceError.self) { try Self.writeStore(scratch.path("other.h5"), precision: "f16") }
        #expect(error?.message.contains("precision") == true)
        #expect(!FileManager.default.fileExists(atPath: scratch.path("other.h5").path))
    }

    @Test func kernelsOfContinuedStoresAreEachNamedOnce() {
        func metadata(_ kernel: String?) -> ScoreFileMetadata {
            ScoreFileMetadata(modelType: "llama", numLayers: 1, calibrationSHA256: String(repeating: "0123456789abcdef", count: 4), calibrationTokens: 1,
                              droptraceVersion: "t", matrixKernel: kernel)
        }
        var store = metadata("A")
        store.recordKernels(of: metadata("A"))
        #expect(store.matrixKernel == "A")
        store.recordKernels(of: metadata("B"))
        store.recordKernels(of: metadata(nil))
        store.recordKernels(of: metadata("A; B"))
        #expect(store.matrixKernel == "A; B")
        var older = metadata(nil)
        older.recordKernels(of: metadata("C"))
        #expect(older.matrixKernel == "C")
    }

    // MARK: - trace: never continued in the other precision

    @Test func traceRefusesTheOtherPrecisionUnlessForced() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let output = scratch.path("out")
        let store = output.appendingPathComponent("scores.h5")
        func trace(_ extra: [String]) throws -> DroptraceCommand.Result {
            try DroptraceCommand.run([
                "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path,
                "--output", output.path, "--threads", "1",
            ] + extra)
        }
        var result = try trace([])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.read(from: store).metadata.precision == "f32")
        let report = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(report.contains("| Precision | f32, matrix products on "))

        try series.add(step: 20)
        let before = try Data(contentsOf: store)
        let reportBefore = try Data(contentsOf: output.appendingPathComponent("report.md"))
        result = try trace(["--precision", "bf16"])
        #expect(result.status == 1)
        #expect(Self.errors(result.stderr).count == 1, "\(result.stderr)")
        #expect(result.stderr.contains(store.path))
        #expect(result.stderr.contains("was scored in f32 precision, this run's is bf16"))
        #expect(result.stderr.contains("--precision f32") && result.stderr.contains("--force"))
        #expect(try Data(contentsOf: store) == before, "the store is untouched")
        #expect(try Data(contentsOf: output.appendingPathComponent("report.md")) == reportBefore)

        result = try trace(["--precision", "bf16", "--force"])
        try #require(result.status == 0, "\(result.stderr)")
        let forced = try ScoreFile.read(from: store)
        #expect(forced.metadata.precision == "bf16")
        #expect(forced.rows.map(\.name) == ["checkpoint-10", "checkpoint-20"])
        let bf16Report = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        // The kernel's name as the report escapes it (underscores in ISA names).
        let line = bf16Report.split(separator: "\n").first { $0.hasPrefix("| Precision | ") }
        #expect(line?.replacingOccurrences(of: "\\", with: "")
            == "| Precision | bf16, matrix products on \(forced.metadata.matrixKernel ?? "?") |")

        // The report is a function of the store: rebuilt, it states the same.
        result = try DroptraceCommand.run(["report", output.path])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8) == bf16Report)

        // Continued in its own precision, it takes new checkpoints.
        try series.add(step: 30)
        result = try trace(["--precision", "bf16"])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.read(from: store).rows.count == 3)
    }

    // MARK: - Pipeline files

    @Test func pipelineKeyIsReadAndChecked() throws {
        let scratch = try ScratchDirectory()
        let base = "series: s\ncalibration: c.jsonl\noutput: out\n"
        for (text, expected) in [("", Precision.f32), ("precision: f32\n", .f32), ("precision: bf16\n", .bf16), ("precision: \"bf16\"\n", .bf16)] {
            let url = try scratch.write(base + text, to: "ok.yaml")
            #expect(try PipelineFile.load(url).options(of: scratch.url.appendingPathComponent("pipeline.yaml"), force: false).precision == expected)
        }
        for bad in ["precision: fp8", "precision: 16", "precision: [bf16]", "precision:", "precision: {a: b}", "precision: BF16"] {
            let url = try scratch.write(base + bad + "\n", to: "bad.yaml")
            let error = #expect(throws: DroptraceError.self) { try PipelineFile.load(url) }
            #expect(error?.path == url.path, "\(bad)")
            #expect(error?.message == "precision must be f32 or bf16", "\(bad): \(String(describing: error))")
        }
        // Through the command: one line naming the file, exit 1.
        let url = try scratch.write(base + "precision: fp16\n", to: "cli.yaml")
        let result = try DroptraceCommand.run(["run", url.path])
        #expect(result.status == 1)
        #expect(Self.errors(result.stderr).count == 1 && result.stderr.contains("\(url.path): precision must be f32 or bf16"))
    }

    @Test func runFollowsThePipelineAndRefusesTheOtherPrecision() throws {
        let series = try SlurmStepsTests.Series(steps: [(10, "llama-f32")])
        let bf16 = try SlurmStepsTests.Series.pipeline(in: series.scratch, output: "out", name: "bf16.yaml", extra: "precision: bf16\n")
        var result = try series.run(bf16)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.read(from: series.store).metadata.precision == "bf16")

        let before = try Data(contentsOf: series.store)
        try series.builder.add(step: 20)
        result = try series.run()  // the f32 pipeline
        #expect(result.status == 1)
        #expect(Self.errors(result.stderr).count == 1, "\(result.stderr)")
        #expect(result.stderr.contains("\(series.store.path): was scored in bf16 precision, this run's is f32"))
        #expect(try Data(contentsOf: series.store) == before)

        result = try DroptraceCommand.run(["run", series.pipeline.path, "--threads", "1", "--force"])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.read(from: series.store).metadata.precision == "f32")
    }

    // MARK: - Slurm

    @Test func shardPartialsCarryPrecisionAndFinalizeRefusesMixing() throws {
        let series = try SlurmStepsTests.Series(steps: [(10, "llama-f32")])
        let bf16 = try SlurmStepsTests.Series.pipeline(in: series.scratch, output: "out", name: "bf16.yaml", extra: "precision: bf16\n")
        var result = try series.task(10, 0, of: 2, pipeline: bf16)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.readPartial(from: series.partial(10, 0, of: 2)).metadata.precision == "bf16")
        result = try series.task(10, 1, of: 2)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.readPartial(from: series.partial(10, 1, of: 2)).metadata.precision == "f32")

        // The f32 pipeline's finalize refuses the bf16 shard, naming it; nothing is stored.
        result = try series.finalize()
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(series.partial(10, 0, of: 2).path): was scored in bf16 precision, the pipeline's is f32"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: series.store.path))

        // A task of the f32 pipeline scores that shard again instead of keeping it.
        result = try series.task(10, 0, of: 2)
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.readPartial(from: series.partial(10, 0, of: 2)).metadata.precision == "f32")
        result = try series.finalize()
        try #require(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.read(from: series.store).metadata.precision == "f32")
    }

    @Test func finalizeAndSubmitRefuseAStoreInTheOtherPrecision() throws {
        let series = try SlurmStepsTests.Series(steps: [(10, "llama-f32")])
        try FileManager.default.createDirectory(at: series.output, withIntermediateDirectories: true)
        try Self.writeStore(series.store, precision: "bf16")
        let before = try Data(contentsOf: series.store)

        var result = try series.finalize()
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(series.store.path): was scored in bf16 precision, this run's is f32"), "\(result.stderr)")

        result = try DroptraceCommand.run(["slurm", "submit", series.pipeline.path, "--dry-run"])
        #expect(result.status == 1)
        #expect(Self.errors(result.stderr).count == 1, "\(result.stderr)")
        #expect(result.stderr.contains("\(series.store.path): was scored in bf16 precision, this run's is f32"), "\(result.stderr)")
        #expect(try Data(contentsOf: series.store) == before)
        let scripts = (try? FileManager.default.subpathsOfDirectory(atPath: series.output.appendingPathComponent("slurm").path)) ?? []
        #expect(!scripts.contains { $0.hasSuffix(".sbatch") || $0.hasSuffix(".sh") }, "nothing submitted: \(scripts)")
    }

    // MARK: - compare

    @Test func comparisonSaysWhenRunsDifferInPrecision() throws {
        let scratch = try ScratchDirectory()
        let rows = AnalysisFixtures.clearlyInherentRows(checkpoints: 4)
        let a = try CompareTests.writeRun(rows, at: scratch.path("a"))
        let b = try CompareTests.writeRun(rows, at: scratch.path("b"), run: 1)
        func report() throws -> String {
            try String(contentsOf: try CompareRuns.run(stores: [a, b], output: scratch.path("out"), title: nil), encoding: .utf8)
        }
        #expect(!(try report()).contains("different precisions"))
        let store = b.appendingPathComponent("scores.h5")
        let file = try HDF5File.open(at: store, writable: true)
        try file.removeAttribute("precision")
        try file.setAttribute("precision", "bf16")
        try file.close()
        #expect(try report().contains("The runs were scored in different precisions (bf16: b; f32: a)"))
    }

    // MARK: - drop and eval JSON

    @Test func dropAndEvalJSONStateThePrecision() throws {
        let model = FixtureFiles.model("llama-f32").path
        for precision in ["f32", "bf16"] {
            let drop = try DroptraceCommand.run([
                "drop", model, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "attention", "--count", "1",
                "--threads", "1", "--precision", precision, "--json",
            ])
            try #require(drop.status == 0, "\(drop.stderr)")
            let dropJSON = try Self.readJSON(drop.stdout)
            #expect(dropJSON["precision"] as? String == precision)
            #expect(dropJSON["dropped_attention"] != nil, "the result's own keys stay")

            let eval = try DroptraceCommand.run([
                "eval", model, "--task", "arc_easy=\(EvaluationTests.file("arc_easy_test").path)", "--threads", "1",
                "--precision", precision, "--json",
            ])
            try #require(eval.status == 0, "\(eval.stderr)")
            let evalJSON = try Self.readJSON(eval.stdout)
            #expect(evalJSON["precision"] as? String == precision)
            #expect(evalJSON["tasks"] != nil)
        }
    }
}

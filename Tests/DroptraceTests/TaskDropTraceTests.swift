import Architectures
import CheckpointIO
import Evaluation
import Foundation
import ScoreStore
import Testing
import Tokenization

/// `drop --task` and `trace --task`: the lm-evaluation-harness tasks of the
/// Evaluation module, full vs dropped, the paper's average and SDR, and
/// per-checkpoint accuracy in the store and the report.
@Suite struct TaskDropTraceTests {
    static func taskFile(_ name: String) -> String { FixtureFiles.root.appendingPathComponent("tasks/\(name).jsonl").path }
    static let taskArguments = ["--task", "piqa=" + taskFile("piqa"), "--task", "hellaswag=" + taskFile("hellaswag")]

    /// Both tasks with their own files as few-shot files.
    static let fewshotArguments = ["--task", "piqa=\(taskFile("piqa")),\(taskFile("piqa"))",
                                   "--task", "hellaswag=\(taskFile("hellaswag")),\(taskFile("hellaswag"))"]

    /// What the Evaluation module gives for `plan` on fixture `model`.
    static func expected(
        _ model: String, plan: DropPlan, arguments: [String] = taskArguments, numFewshot: Int? = nil
    ) throws -> EvaluationResult {
        let requests = try stride(from: 1, to: arguments.count, by: 2).map { try TaskRequest(argument: arguments[$0]) }
        let loaded = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(model)))
        let tokenizer = try EvaluationTokenizer.load(for: loaded.checkpoint, purpose: "evaluation", requestedBy: model)
        return try TaskSuite(requests, numFewshot: numFewshot).evaluate(model: loaded, plan: plan, tokenizer: tokenizer)
    }

    static func number(_ value: Any?) -> Double? { (value as? NSNumber)?.doubleValue }

    @Test func dropReportsPerTaskMetricsTheAverageAndSDRFromIt() throws {
        let result = try DroptraceCommand.run([
            "drop", FixtureFiles.model("gpt2-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--target", "attention", "--count", "2", "--json",
        ] + Self.taskArguments + ["--speed-max-rounds", "1"])
        try #require(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let dropped = DropPlan(attention: Set((json["dropped_attention"] as! [Any]).map { ($0 as! NSNumber).intValue }))
        let full = try Self.expected("gpt2-f32", plan: .none)
        let without = try Self.expected("gpt2-f32", plan: dropped)

        let tasks = try #require(json["tasks"] as? [String: [String: [String: Any]]])
        #expect(tasks.keys.sorted() == ["hellaswag", "piqa"])
        for (name, comparison) in tasks {
            for (label, reference) in [("full", full), ("dropped", without)] {
                let metrics = try #require(comparison[label])
                #expect(Self.number(metrics["acc"]) == reference.tasks[name]?.acc, "\(name) \(label)")
                #expect(Self.number(metrics["acc_stderr"]) == reference.tasks[name]?.acc_stderr, "\(name) \(label)")
                #expect((metrics["n"] as? NSNumber)?.intValue == reference.tasks[name]?.n)
                #expect(Self.number(metrics["acc_norm"]) == reference.tasks[name]?.acc_norm, "\(name) \(label)")
            }
        }
        #expect(tasks["hellaswag"]?["full"]?["acc_norm"] != nil, "HellaSwag defines acc_norm")

        let average = try #require(json["average"] as? [String: Any])
        #expect(Self.number(average["full"]) == full.average && Self.number(average["dropped"]) == without.average)
        let speedup = try #require(Self.number(json["decode_speedup_percent"]))
        let degradation = 100 * (full.average - without.average) / full.average
        if let sdr = Self.number(json["sdr"]) {
            #expect(abs(sdr - degradation / speedup) < 1e-9 * max(1, abs(sdr)))
        } else {
            #expect(json["decode_verdict"] as? String == "within noise")
        }
    }

    @Test func dropTableShowsTasksAndTheAverage() throws {
        let result = try DroptraceCommand.run([
            "drop", FixtureFiles.model("gpt2-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--target", "attention", "--count", "1",
        ] + Self.taskArguments + ["--speed-max-rounds", "1"])
        try #require(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("piqa acc") && result.stdout.contains("hellaswag acc_norm"))
        #expect(result.stdout.contains("average (paper)") && result.stdout.contains("on the task average"))
    }

    @Test func theOldTasksOptionIsGone() throws {
        let model = FixtureFiles.model("gpt2-f32").path
        let old = try DroptraceCommand.run([
            "drop", model, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "attention", "--count", "1",
            "--tasks", Self.taskFile("piqa"),
        ])
        #expect(old.status == 64 && old.stderr.contains("--tasks"), "\(old.stderr)")
        let help = try DroptraceCommand.run(["drop", "--help"])
        #expect(!help.stdout.contains("--tasks") && help.stdout.contains("--task <name=file[,file]>"), "\(help.stdout)")
        let lonely = try DroptraceCommand.run([
            "drop", model, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "attention", "--count", "1",
            "--num-fewshot", "2",
        ])
        #expect(lonely.status == 64 && lonely.stderr.contains("--num-fewshot"), "\(lonely.stderr)")
        let unknown = try DroptraceCommand.run([
            "drop", model, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "attention", "--count", "1",
            "--task", "squad=" + Self.taskFile("piqa"),
        ])
        #expect(unknown.status == 64 && unknown.stderr.contains("squad"), "\(unknown.stderr)")
        #expect(unknown.stderr.split(separator: "\n").filter { $0.contains("rror") }.count <= 1, "\(unknown.stderr)")
        // One few-shot limit for every command and spelling, each a usage error before any work.
        for arguments in [
            ["eval", model, "--task", "piqa:1001=" + Self.taskFile("piqa")],
            ["eval", model, "--task", "piqa=" + Self.taskFile("piqa"), "--num-fewshot", "1001"],
            ["trace", model, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", "unused",
             "--task", "piqa:99999999999999999999=" + Self.taskFile("piqa")],
        ] {
            let result = try DroptraceCommand.run(arguments)
            #expect(result.status == 64 && result.stderr.contains("from 0 to 1000"), "\(arguments): \(result.stderr)")
        }
    }

    @Test func traceStoresAccuracyPerCheckpointAndTheReportRebuildsFromTheStore() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100, model: "llama-bf16")
        try series.add(step: 200, model: "llama-f32")
        let output = scratch.path("out")
        func trace(_ tasks: [String] = Self.taskArguments) throws -> DroptraceCommand.Result {
            let result = try DroptraceCommand.run([
                "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path,
                "--seq-len", "32", "--samples", "4", "--drop-k", "2", "--eval", FixtureFiles.calibrationText.path,
                "--title", "Tasks",
            ] + tasks)
            try #require(result.status == 0, "\(result.stderr)")
            return result
        }
        _ = try trace()
        let storeURL = output.appendingPathComponent("scores.h5")
        func column(_ path: String) throws -> [Double] {
            let file = try HDF5File.open(at: storeURL)
            defer { try? file.close() }
            return try file.dataset("evaluation/tasks/\(path)").read(as: Double.self)
        }
        let final = try Self.expected("llama-f32", plan: .none)
        #expect(try column("piqa/acc_full") == [try Self.expected("llama-bf16", plan: .none).tasks["piqa"]!.acc, final.tasks["piqa"]!.acc])
        #expect(try column("hellaswag/acc_norm_full")[1] == final.tasks["hellaswag"]!.acc_norm)
        #expect(try column("piqa/acc_own_k2").count == 2 && column("hellaswag/acc_norm_own_k2").allSatisfy { !$0.isNaN })
        let file = try HDF5File.open(at: storeURL)
        let piqa = try file.group("evaluation/tasks/piqa")
        #expect(try piqa.stringAttribute("evaluation_sha256") == "90d9880ee9872d2268e3af4a8b92df7b66df524da14aaafabb655ed17481f8ab")
        #expect(try piqa.stringAttribute("fewshot_sha256") == "" && piqa.scalarAttribute("num_fewshot", as: Int64.self) == 0)
        try file.close()

        let reportURL = output.appendingPathComponent("report.md")
        let figureURL = output.appendingPathComponent("figures/task_accuracy.svg")
        let report = try String(contentsOf: reportURL, encoding: .utf8)
        #expect(report.contains("## Task accuracy over training") && report.contains("### hellaswag"))
        #expect(report.contains(String(format: "%.4f", final.tasks["piqa"]!.acc)))
        let figure = try Data(contentsOf: figureURL)

        // Nothing new: the store keeps its bytes; `report` rebuilds the same report.
        let storeBytes = try Data(contentsOf: storeURL)
        _ = try trace()
        #expect(try Data(contentsOf: storeURL) == storeBytes)
        try FileManager.default.removeItem(at: reportURL)
        try FileManager.default.removeItem(at: figureURL)
        let rebuilt = try DroptraceCommand.run(["report", output.path])
        try #require(rebuilt.status == 0, "\(rebuilt.stderr)")
        #expect(try String(contentsOf: reportURL, encoding: .utf8) == report)
        #expect(try Data(contentsOf: figureURL) == figure)

        // Another few-shot count makes every stored value stale.
        let again = try trace(Self.fewshotArguments + ["--num-fewshot", "1"])
        #expect(again.stderr.contains("measuring every checkpoint again"), "\(again.stderr)")
        let reread = try HDF5File.open(at: storeURL)
        defer { try? reread.close() }
        #expect(try reread.group("evaluation/tasks/piqa").scalarAttribute("num_fewshot", as: Int64.self) == 1)
        // Every name droptrace writes at the root is one the layout counts as its own: a later
        // rewrite carries over only what a user added (`StoreAdditions`).
        #expect(try Set(reread.childNames()) == ScoreFileLayout.rootGroups.subtracting(UnscoredCheckpoints.groups.map(\.group)))
        let attributes = try Set(reread.attributeNames())
        #expect(attributes.isSubset(of: ScoreFileLayout.rootAttributes) && attributes.contains("report_title"), "\(attributes)")
        #expect(try reread.dataset("evaluation/tasks/piqa/acc_full").read(as: Double.self)
            == [Self.expected("llama-bf16", plan: .none, arguments: Self.fewshotArguments, numFewshot: 1).tasks["piqa"]!.acc,
                Self.expected("llama-f32", plan: .none, arguments: Self.fewshotArguments, numFewshot: 1).tasks["piqa"]!.acc])
    }

    @Test func badTaskArgumentsOfTraceAreOneLineErrors() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 100, model: "llama-f32")
        let base = ["trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", scratch.path("out").path]
        let missing = try DroptraceCommand.run(base + ["--task", "piqa=" + scratch.path("nope.jsonl").path])
        #expect(missing.status == 1 && missing.stderr.contains("nope.jsonl"), "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out/scores.h5").path), "checked before scoring")
        let negative = try DroptraceCommand.run(base + ["--task", "piqa=" + Self.taskFile("piqa"), "--num-fewshot", "-1"])
        #expect(negative.status == 64, "\(negative.stderr)")
    }
}

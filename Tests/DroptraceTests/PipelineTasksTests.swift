import DroptraceSupport
import Foundation
@testable import Pipeline
import Testing

/// `tasks:` and `num_fewshot:` in pipeline files: the mapping form, paths
/// relative to the file, and every malformed or hostile shape refused with
/// one line naming the file.
@Suite struct PipelineTasksTests {
    private static let settings = "series: s\ncalibration: c.txt\noutput: out\n"

    @Test func tasksMapToRequestsRelativeToTheFile() throws {
        let scratch = try ScratchDirectory()
        let text = Self.settings + """
            tasks:
              hellaswag: {eval: tasks/hellaswag.jsonl, fewshot: tasks/hellaswag-train.jsonl}
              piqa:
                eval: /data/piqa/valid.jsonl
                num_fewshot: 0
            num_fewshot: 5

            """
        let file = try PipelineFile.load(scratch.write(text, to: "run.yaml"))
        #expect(file.tasks == [
            PipelineTask(name: "hellaswag", evaluation: "tasks/hellaswag.jsonl", fewshot: "tasks/hellaswag-train.jsonl"),
            PipelineTask(name: "piqa", evaluation: "/data/piqa/valid.jsonl", numFewshot: 0),
        ])
        let options = file.options(of: scratch.url.appendingPathComponent("pipeline.yaml"), force: false)
        #expect(options.numFewshot == 5)
        #expect(options.tasks.map(\.name) == ["hellaswag", "piqa"])
        #expect(options.tasks[0].evaluationFile.path == scratch.path("tasks/hellaswag.jsonl").standardizedFileURL.path)
        #expect(options.tasks[0].fewshotFile?.path == scratch.path("tasks/hellaswag-train.jsonl").standardizedFileURL.path)
        #expect(options.tasks[1].evaluationFile.path == "/data/piqa/valid.jsonl" && options.tasks[1].fewshotFile == nil)
        #expect(options.tasks[0].numFewshot == nil && options.tasks[1].numFewshot == 0)
    }

    @Test func withoutTasksNothingIsEvaluated() throws {
        let scratch = try ScratchDirectory()
        let file = try PipelineFile.load(scratch.write(Self.settings, to: "run.yaml"))
        let options = file.options(of: scratch.url.appendingPathComponent("pipeline.yaml"), force: false)
        #expect(options.tasks.isEmpty && options.numFewshot == nil)
    }

    private static let hostile: [(name: String, text: String, words: String)] = [
        ("list-of-strings", "tasks: [piqa=p.jsonl]\n", "tasks must map each task name"),
        ("scalar", "tasks: piqa\n", "tasks must map each task name"),
        ("empty", "tasks: {}\n", "tasks must map each task name"),
        ("null", "tasks:\n", "tasks must map each task name"),
        ("value-not-mapping", "tasks: {piqa: p.jsonl}\n", "task \"piqa\": tasks must map"),
        ("no-eval", "tasks: {piqa: {fewshot: f.jsonl}}\n", "task \"piqa\" has no eval file"),
        ("null-eval", "tasks: {piqa: {eval: }}\n", "task \"piqa\": eval must be a file path"),
        ("list-eval", "tasks: {piqa: {eval: [a, b]}}\n", "task \"piqa\": eval must be a file path"),
        ("unknown-key", "tasks: {piqa: {eval: p.jsonl, shots: 5}}\n", "unknown key \"shots\""),
        ("duplicate-task", "tasks:\n  piqa: {eval: a.jsonl}\n  piqa: {eval: b.jsonl}\n", "gives setting \"tasks.piqa\" twice"),
        ("duplicate-eval", "tasks: {piqa: {eval: a.jsonl, eval: b.jsonl}}\n", "gives setting \"tasks.piqa.eval\" twice"),
        ("unknown-task", "tasks: {squad: {eval: a.jsonl}}\n", "squad"),
        ("name-with-equals", "tasks: {\"piqa=x\": {eval: a.jsonl}}\n", "piqa=x"),
        ("multi-line-name", "tasks: {\"pi\\nqa\": {eval: a.jsonl}}\n", "pi qa"),
        ("complex-task-key", "tasks: {[piqa]: {eval: a.jsonl}}\n", "complex key"),
        ("tagged-eval", "tasks: {piqa: {eval: !!binary aGk=}}\n", "tag"),
        ("negative-fewshot", "num_fewshot: -1\n", "num_fewshot must be a whole number from 0 to 1000"),
        ("huge-fewshot", "num_fewshot: 100000000\n", "num_fewshot must be a whole number from 0 to 1000"),
        ("negative-task-fewshot", "tasks: {piqa: {eval: a.jsonl, num_fewshot: -1}}\n", "task \"piqa\": num_fewshot must be"),
        ("text-task-fewshot", "tasks: {piqa: {eval: a.jsonl, num_fewshot: five}}\n", "task \"piqa\": num_fewshot must be"),
        ("huge-task-fewshot", "tasks: {piqa: {eval: a.jsonl, num_fewshot: 99999999999999999999}}\n", "task \"piqa\": num_fewshot must be"),
        ("text-fewshot", "num_fewshot: five\n", "num_fewshot"),
        ("deep-tasks", "tasks: " + String(repeating: "{a: ", count: 80) + "1" + String(repeating: "}", count: 80) + "\n", "deep"),
    ]

    @Test("malformed tasks are refused with one line naming the file", arguments: hostile.map(\.name))
    func malformedTasksAreRefused(name: String) throws {
        let entry = Self.hostile.first { $0.name == name }!
        let scratch = try ScratchDirectory()
        let file = try scratch.write(Self.settings + entry.text, to: "\(name).yaml")
        let error = #expect(throws: DroptraceError.self) { try PipelineFile.load(file) }
        #expect(error?.path == file.path)
        #expect(error?.message.contains(entry.words) == true, "\(name): \(error?.message ?? "")")
        #expect(error?.description.contains("\n") == false)
    }

    @Test func aliasedTaskFilesStillLoad() throws {
        let scratch = try ScratchDirectory()
        let text = Self.settings + "title: &f shared.jsonl\ntasks:\n  piqa: {eval: *f, fewshot: *f}\n"
        let file = try PipelineFile.load(scratch.write(text, to: "run.yaml"))
        #expect(file.tasks == [PipelineTask(name: "piqa", evaluation: "shared.jsonl", fewshot: "shared.jsonl")])
    }
}

import DroptraceSupport
import Foundation

/// One task to evaluate: its name and its local files, as
/// `NAME=EVAL_FILE[,FEWSHOT_FILE]` on the command line (`--task`) or in a
/// pipeline file (`tasks:`). `NAME:SHOTS=…` sets this task's few-shot count.
public struct TaskRequest: Sendable, Equatable {
    /// lm-evaluation-harness's task name (one of `supportedNames`).
    public var name: String
    /// JSONL of the split the harness evaluates (validation or test).
    public var evaluationFile: URL
    /// JSONL of the split few-shot examples come from (train; dev for MMLU).
    public var fewshotFile: URL?
    /// Few-shot examples for this task, overriding the suite's count.
    public var numFewshot: Int?

    public init(name: String, evaluationFile: URL, fewshotFile: URL? = nil, numFewshot: Int? = nil) {
        self.name = name
        self.evaluationFile = evaluationFile
        self.fewshotFile = fewshotFile
        self.numFewshot = numFewshot
    }

    /// Every task name droptrace evaluates, in the registry's order.
    public static var supportedNames: [String] { TaskRegistry.tasks.map { $0.name } }

    /// The dataset each task's file rows come from, by task name.
    public static var datasets: [(name: String, dataset: String)] { TaskRegistry.tasks.map { ($0.name, $0.dataset) } }

    /// Parses `NAME[:SHOTS]=EVAL_FILE[,FEWSHOT_FILE]`; relative paths are
    /// taken relative to the directory `base` (a pipeline file's) when given;
    /// a path holding a comma is read as one when that file exists.
    /// - Throws: `DroptraceError` quoting the argument when it has no `=`,
    ///   an unknown task name, a bad shot count or an empty path.
    public init(argument: String, relativeTo base: URL? = nil) throws {
        func failure(_ problem: String) -> DroptraceError {
            DroptraceError("task \(argument.debugDescription): \(problem)")
        }
        guard let equals = argument.firstIndex(of: "=") else {
            throw failure("expected NAME=EVAL_FILE[,FEWSHOT_FILE]")
        }
        var name = String(argument[..<equals])
        var shots: Int? = nil
        if let colon = name.firstIndex(of: ":") {
            guard let count = Int(name[name.index(after: colon)...]), (0...TaskSuite.maxFewshot).contains(count) else {
                throw failure("the few-shot count after \":\" should be a whole number from 0 to \(TaskSuite.maxFewshot)")
            }
            shots = count
            name = String(name[..<colon])
        }
        guard Self.supportedNames.contains(name) else {
            throw failure("unknown task \(name.debugDescription) (supported: \(Self.supportedNames.joined(separator: ", ")))")
        }
        func url(_ path: Substring) -> URL {
            guard let base, !path.hasPrefix("/") else { return URL(commandLinePath: String(path)) }
            return base.appendingPathComponent(String(path)).standardizedFileURL
        }
        // Paths may hold commas: the first reading whose files all exist — the whole as one file, else
        // split at one comma, leftmost first — else the split at every comma (whose error names the file).
        let paths = argument[argument.index(after: equals)...]
        let commas = paths.indices.filter { paths[$0] == "," }
        let readings = [[paths]] + commas.map { [paths[..<$0], paths[paths.index(after: $0)...]] }
        let files = readings.first { $0.allSatisfy { !$0.isEmpty && FileManager.default.fileExists(atPath: url($0).path) } }
            ?? paths.split(separator: ",", omittingEmptySubsequences: false)
        guard (1...2).contains(files.count), files.allSatisfy({ !$0.isEmpty }) else {
            throw failure("expected NAME=EVAL_FILE[,FEWSHOT_FILE] (one or two non-empty paths)")
        }
        self.init(name: name, evaluationFile: url(files[0]), fewshotFile: files.count == 2 ? url(files[1]) : nil, numFewshot: shots)
    }
}

import Analysis
import DroptraceSupport
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Pipeline
import Reporting
import ScoreStore
import Testing

/// `/evaluation/tasks/...` in the store and the report's task section and
/// figure, made from what the store holds alone.
@Suite struct TaskAccuracyStoreTests {
    typealias Accuracy = TaskAccuracyRecord.Accuracy

    /// Two tasks over the 4 fixture checkpoints: hellaswag with acc_norm,
    /// piqa without; one value missing (a checkpoint rotated away).
    static func record() -> TaskAccuracyRecord {
        let names = AnalysisFixtures.knownRows.map(\.name)
        var hellaswag = TaskAccuracyRecord.Task(
            settings: .init(evaluationSHA256: String(repeating: "ab", count: 32), fewshotSHA256: String(repeating: "cd", count: 32),
                            numFewshot: 10),
            hasNormalized: true)
        var piqa = TaskAccuracyRecord.Task(
            settings: .init(evaluationSHA256: String(repeating: "ef", count: 32), fewshotSHA256: "", numFewshot: 0),
            hasNormalized: false)
        for (index, name) in names.enumerated() {
            let base = 0.25 + 0.1 * Double(index)
            hellaswag.byCheckpoint[name] = .init(
                full: Accuracy(acc: base, accNorm: base + 0.05),
                own: [1: Accuracy(acc: base - 0.05, accNorm: base), 3: Accuracy(acc: base - 0.1, accNorm: base - 0.02)])
            if index != 0 {
                piqa.byCheckpoint[name] = .init(full: Accuracy(acc: 0.5 + base / 10, accNorm: nil),
                                                own: [1: Accuracy(acc: 0.5, accNorm: nil)])
            }
        }
        return TaskAccuracyRecord(tasks: ["hellaswag": hellaswag, "piqa": piqa])
    }

    /// A store of the fixture rows with the analysis and `record`, as `trace` writes it.
    static func writeStore(_ record: TaskAccuracyRecord, to url: URL) throws -> (ScoreFile, SeriesAnalysis) {
        let store = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
        let analysis = try SeriesAnalysis(rows: store.rows, dropK: [1, 3])
        try store.write(to: url) { file in
            try analysis.write(into: file)
            try record.write(into: file, rows: store.rows.map(\.name), dropK: analysis.dropK)
        }
        return (store, analysis)
    }

    @Test func recordSurvivesTheStore() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("scores.h5")
        let record = Self.record()
        let (store, _) = try Self.writeStore(record, to: url)
        let file = try HDF5File.open(at: url)
        defer { try? file.close() }
        let names = store.rows.map(\.name)
        #expect(try TaskAccuracyRecord.read(from: file, rows: names) == record)
        #expect(record.stored(rows: names, dropK: [1, 3]) == record)

        let full = try file.dataset("evaluation/tasks/hellaswag/acc_full").read(as: Double.self)
        #expect(full == [0.25, 0.35, 0.45, 0.55].map { $0 })
        #expect(try file.dataset("evaluation/tasks/hellaswag/acc_norm_own_k3").shape == [4])
        #expect(try file.dataset("evaluation/tasks/piqa/acc_full").read(as: Double.self)[0].isNaN)
        #expect(try !file.exists("evaluation/tasks/piqa/acc_norm_full"))
        let group = try file.group("evaluation/tasks/hellaswag")
        #expect(try group.scalarAttribute("num_fewshot", as: Int64.self) == 10)
        #expect(try group.stringAttribute("fewshot_sha256") == String(repeating: "cd", count: 32))
        #expect(try file.group("evaluation/tasks/piqa").stringAttribute("fewshot_sha256") == "")
    }

    /// An accuracy for a drop-k beyond the model's layers was shown as a
    /// column ("acc own drop-999").
    @Test func accuracyForADropKNoModelOfTheStoreHasIsRefused() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("scores.h5")
        let (store, _) = try Self.writeStore(Self.record(), to: url)
        let file = try HDF5File.open(at: url, writable: true)
        defer { try? file.close() }
        try file.createDataset("evaluation/tasks/hellaswag/acc_own_k999",
                               values: try file.dataset("evaluation/tasks/hellaswag/acc_full").read(as: Double.self))
        let error = #expect(throws: DroptraceError.self) { try TaskAccuracyRecord.read(from: file, rows: store.rows.map(\.name)) }
        #expect(error?.message.hasSuffix("acc_own_k999 is for drop-999, which a model of \(store.metadata.numLayers) layers has not") == true,
                "\(String(describing: error))")
    }

    /// Groups no task is named by, and file hashes that are none, are
    /// refused (by fuzzing: a name with a line break reached the report,
    /// 3,000 groups took 9 s).
    @Test func groupsOfNoTaskAreRefused() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("scores.h5")
        let (store, _) = try Self.writeStore(Self.record(), to: url)
        func readError(_ edit: (HDF5File) throws -> Void) throws -> String {
            _ = try Self.writeStore(Self.record(), to: url)
            let file = try HDF5File.open(at: url, writable: true)
            defer { try? file.close() }
            try edit(file)
            let error = #expect(throws: DroptraceError.self) { try TaskAccuracyRecord.read(from: file, rows: store.rows.map(\.name)) }
            return error?.message ?? ""
        }
        let odd = try readError { try $0.createGroup("evaluation/tasks/Hella\nSwag") }
        #expect(odd == "/evaluation/tasks holds groups that name no task (Hella Swag): the file was changed by other software")
        let hash = try readError { try $0.group("evaluation/tasks/piqa").setAttribute("evaluation_sha256", "zz") }
        #expect(hash == "/evaluation/tasks/piqa attribute evaluation_sha256 is not 64 lowercase hex digits")
        // Few-shot examples without a few-shot file: no evaluation runs so, yet the report said "5-shot".
        let shots = try readError { try $0.group("evaluation/tasks/piqa").setAttribute("num_fewshot", Int64(5)) }
        #expect(shots == "/evaluation/tasks/piqa attribute num_fewshot is 5 with no few-shot file (fewshot_sha256 empty), "
                    + "which no evaluation runs: the file was changed by other software")
    }

    @Test func storedKeepsOnlyWhatIsWritten() {
        let record = Self.record()
        let kept = record.stored(rows: ["step0", "step100"], dropK: [3])
        #expect(kept.tasks["hellaswag"]?.byCheckpoint.keys.sorted() == ["step0", "step100"])
        #expect(kept.tasks["hellaswag"]?.dropK == [3])
        #expect(kept.tasks["piqa"]?.byCheckpoint["step0"] == nil)
        // A task with no value left (piqa has none at step0; every row rescored without it) is not written:
        // a table of nothing said its checkpoints were no longer on disk.
        let none = record.stored(rows: ["step0"], dropK: [1, 3])
        #expect(none.tasks.keys.sorted() == ["hellaswag"])
    }

    @Test func aTaskWithNoValueLeftIsNotWritten() throws {
        let scratch = try ScratchDirectory()
        var record = Self.record()
        record.tasks["piqa"]?.byCheckpoint = [:]
        let (store, _) = try Self.writeStore(record, to: scratch.path("scores.h5"))
        let file = try HDF5File.open(at: scratch.path("scores.h5"))
        defer { try? file.close() }
        #expect(try !file.exists("evaluation/tasks/piqa"))
        #expect(try TaskAccuracyRecord.read(from: file, rows: store.rows.map(\.name)).tasks.keys.sorted() == ["hellaswag"])
    }

    /// A stored column: `values` of `shape`, written as float64 or int64.
    struct Column: Sendable {
        var values: [Double]
        var shape: [Int]
        var integers = false
    }

    /// The fixture store of the 4 known rows at `url` with an `/evaluation`
    /// group of `columns` (name → one value per row), its tokens' `hash` and
    /// `final_checkpoint` `final`, opened for reading.
    private static func storeWithPerplexities(
        at url: URL, columns: [(String, [Double])], hash: String = String(repeating: "ab", count: 32), final: String
    ) throws -> (store: ScoreFile, file: HDF5File) {
        let store = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
        try store.write(to: url) { file in
            let group = try file.createGroup("evaluation")
            for (name, values) in columns { try group.createDataset(name, values: values, shape: [values.count], storage: .contiguous) }
            try group.setAttribute("evaluation_sha256", hash)
            try group.setAttribute("final_checkpoint", final)
        }
        return (store, try HDF5File.open(at: url))
    }

    /// The evaluation tokens' hash is printed in the report: one that is
    /// none (by fuzzing, "not a hash\nline2" split the report's line) is refused.
    @Test func perplexitiesWithAHashThatIsNoneAreRefused() throws {
        let scratch = try ScratchDirectory()
        let (store, file) = try Self.storeWithPerplexities(
            at: scratch.path("scores.h5"), columns: [("perplexity_full", [2, 2, 2, 2])], hash: "not a hash\nline2", final: "step1000")
        defer { try? file.close() }
        let error = #expect(throws: DroptraceError.self) { _ = try DropEvaluation.read(from: file, rows: store.rows) }
        #expect(error?.message == "/evaluation attribute evaluation_sha256 is not 64 lowercase hex digits", "\(String(describing: error))")
    }

    /// Perplexities without the final set's name cannot say whose set they
    /// removed: read as not measured (the report said "the final
    /// checkpoint's () drop-k attention layers").
    @Test func finalSetPerplexitiesOfNoNamedCheckpointAreNotMeasured() throws {
        let scratch = try ScratchDirectory()
        let (store, file) = try Self.storeWithPerplexities(
            at: scratch.path("scores.h5"), columns: [("perplexity_full", [2, 2, 2, 2]), ("perplexity_final_k1", [3, 3, 3, 3])], final: "")
        defer { try? file.close() }
        let evaluation = try #require(try DropEvaluation.read(from: file, rows: store.rows))
        #expect(evaluation.finalCheckpoint == store.rows.last?.name)
        #expect(store.rows.allSatisfy { evaluation.byCheckpoint[$0.name]?.final.isEmpty == true && evaluation.byCheckpoint[$0.name]?.full == 2 })
    }

    /// Each stored measurement is one float per checkpoint, NaN or a value
    /// of its kind: a perplexity of [3, 3] values read the first row as every
    /// checkpoint's, one value blanked the others, -2 or an accuracy of 1.5
    /// reached the report (exit 0).
    @Test(arguments: [
        ("perplexity", Column(values: Array(repeating: 2, count: 7), shape: [7]), "has shape [7] of float64, expected [4] floats"),
        ("perplexity", Column(values: [2, 2, 2, 2], shape: [2, 2]), "has shape [2, 2] of float64, expected [4] floats"),
        ("perplexity", Column(values: [2, 2, 2, 2], shape: [4], integers: true), "has shape [4] of int64, expected [4] floats"),
        ("perplexity", Column(values: [2, -2, 2, 2], shape: [4]), "holds -2.0 at checkpoint 1, expected a perplexity ≥ 1"),
        ("acc", Column(values: [0.5, 0.5], shape: [2]), "has shape [2] of float64, expected [4] floats"),
        ("acc", Column(values: [0.5, 1.5, 0.5, 0.5], shape: [4]), "holds 1.5 at checkpoint 1, expected an accuracy in 0...1"),
        ("acc", Column(values: [0.5, -0.2, 0.5, 0.5], shape: [4]), "holds -0.2 at checkpoint 1, expected an accuracy in 0...1"),
    ])
    func storedMeasurementsMustBeOnePerCheckpoint(kind: String, column: Column, message: String) throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("scores.h5")
        let store = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
        let (path, name) = kind == "perplexity" ? ("evaluation", "perplexity_full") : ("evaluation/tasks/piqa", "acc_full")
        try store.write(to: url) { file in
            let group = try file.createGroup(path)
            if column.integers {
                try group.createDataset(name, values: column.values.map { Int64($0) }, shape: column.shape, storage: .contiguous)
            } else {
                try group.createDataset(name, values: column.values, shape: column.shape, storage: .contiguous)
            }
            try group.setAttribute("evaluation_sha256", String(repeating: "ab", count: 32))
            if kind == "perplexity" {
                try group.setAttribute("final_checkpoint", "step1000")
            } else {
                try group.setAttribute("fewshot_sha256", "")
                try group.setAttribute("num_fewshot", Int64(0))
            }
        }
        let file = try HDF5File.open(at: url)
        defer { try? file.close() }
        let error = #expect(throws: DroptraceError.self) {
            if kind == "perplexity" {
                _ = try DropEvaluation.read(from: file, rows: store.rows)
            } else {
                _ = try TaskAccuracyRecord.read(from: file, rows: store.rows.map(\.name))
            }
        }
        #expect(error?.path == url.path)
        #expect(error?.message == "/\(path)/\(name) \(message)", "\(String(describing: error))")
    }

    @Test func reportHasTheTaskSectionAndFigureAndRebuildsByteForByte() throws {
        let scratch = try ScratchDirectory()
        let out = scratch.path("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let record = Self.record()
        let (store, analysis) = try Self.writeStore(record, to: out.appendingPathComponent("scores.h5"))
        let report = try ReportWriter(scoreFile: store, analysis: analysis, taskAccuracy: record).write(to: out)
        let markdown = try String(contentsOf: report, encoding: .utf8)
        #expect(markdown.contains("## Task accuracy over training"))
        #expect(markdown.contains("### hellaswag") && markdown.contains("### piqa"))
        #expect(markdown.contains("| acc full | acc own drop-1 | acc own drop-3 | acc_norm full |"))
        #expect(markdown.contains("| 0 | step0 | 0.2500 | 0.2000 | 0.1500 | 0.3000 |"), "\(markdown)")
        #expect(markdown.contains("10-shot") && markdown.contains("no few-shot file"))
        #expect(markdown.contains("figures/task_accuracy.svg"))
        let figure = out.appendingPathComponent("figures/task_accuracy.svg")
        let svg = try String(contentsOf: figure, encoding: .utf8)
        #expect(svg.contains("hellaswag: acc_norm") && svg.contains("piqa: acc") && svg.contains("own drop-3"))
        #expect(XMLParser(data: Data(svg.utf8)).parse(), "the figure is well-formed XML")

        let figureBytes = try Data(contentsOf: figure)
        try FileManager.default.removeItem(at: figure)
        _ = try ReportRebuild.run(outDir: out, title: nil)
        #expect(try String(contentsOf: report, encoding: .utf8) == markdown)
        #expect(try Data(contentsOf: figure) == figureBytes)
    }

    @Test func withoutTasksTheReportHasNoTaskPart() throws {
        let scratch = try ScratchDirectory()
        let out = scratch.path("out")
        let store = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
        let analysis = try SeriesAnalysis(rows: store.rows)
        let report = try ReportWriter(scoreFile: store, analysis: analysis).write(to: out)
        #expect(try !String(contentsOf: report, encoding: .utf8).contains("Task accuracy"))
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("figures/task_accuracy.svg").path))
    }
}

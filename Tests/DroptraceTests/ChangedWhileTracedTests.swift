import CheckpointIO
import Foundation
import Logging
@testable import Pipeline
import Scoring
import ScoreStore
import Testing

/// A checkpoint removed or saved again while a trace reads the series
/// (`save_total_limit` rotating it away, a save in place starting): no
/// failure, and nothing the store knew is lost.
@Suite struct ChangedWhileTracedTests {
    /// Does `action` when the trace starts scoring checkpoint `name`.
    final class Meddler: TraceProgress {
        let name: String
        let action: () throws -> Void
        init(when name: String, _ action: @escaping () throws -> Void) { (self.name, self.action) = (name, action) }
        func checkpointStarted(_ index: Int, of total: Int, name: String) { if name == self.name { try? action() } }
        func layerFinished(_ done: Int, of total: Int) {}
        func finished() {}
    }

    func trace(_ series: SeriesBuilder, into output: URL, progress: TraceProgress? = nil) throws -> TraceSummary {
        let options = TraceOptions(checkpoints: .series(series.directory),
                                   calibration: CalibrationSource(url: FixtureFiles.calibrationJSONL), output: output)
        return try TraceRun(options: options, log: Logger(label: "test")).run(progress: progress)
    }

    func writeState(_ checkpoint: URL, step: Int, tokens: Int) throws {
        try JSONSerialization.data(withJSONObject: ["global_step": step, "num_input_tokens_seen": tokens])
            .write(to: checkpoint.appendingPathComponent("trainer_state.json"))
    }

    /// Rescored only because its trainer_state.json now gives its tokens,
    /// then rotated away before the run read it: its row, of the very files
    /// scored, was removed for good.
    @Test func aRowOfTheSameFilesStaysWhenItsCheckpointGoesDuringARescore() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let first = try series.add(step: 10), second = try series.add(step: 20)
        let output = scratch.path("out")
        _ = try trace(series, into: output)
        try writeState(first, step: 10, tokens: 640)
        try writeState(second, step: 20, tokens: 1280)
        let summary = try trace(series, into: output, progress: Meddler(when: "checkpoint-10") {
            try FileManager.default.removeItem(at: second)
        })
        #expect(summary.failed.isEmpty && summary.incomplete.isEmpty, "\(summary.failed) \(summary.incomplete)")
        let rows = try ScoreFile.read(from: output.appendingPathComponent("scores.h5")).rows
        #expect(rows.map(\.name) == ["checkpoint-10", "checkpoint-20"])
        #expect(rows.map(\.tokens) == [640, -1])
    }

    /// A checkpoint saved again in place while the run reads the series is
    /// left for a later run, as one still being written: it was said in the
    /// log alone (the store's /pending and the report named nothing).
    @Test func aCheckpointSavedAgainMeanwhileIsPending() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let second = try series.add(step: 20)
        let output = scratch.path("out")
        let summary = try trace(series, into: output, progress: Meddler(when: "checkpoint-10") {
            let weights = try FileHandle(forWritingTo: second.appendingPathComponent("model.safetensors"))
            try weights.truncate(atOffset: 100)
            try weights.close()
        })
        #expect(summary.failed.isEmpty && summary.incomplete.map(\.name) == ["checkpoint-20"], "\(summary.incomplete)")
        let report = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(report.contains("checkpoint-20"), "the report names the checkpoint left for later")
    }
}

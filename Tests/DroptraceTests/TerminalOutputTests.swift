import DroptraceSupport
import Foundation
import Testing

/// What a terminal shows: log lines and the progress bar never share a row.
@Suite struct TerminalOutputTests {
    /// The rows a terminal would show for `text`, understanding only what
    /// droptrace writes: text, "\r", "\n" and "erase the row" (ESC [2K).
    static func screen(_ text: String) -> [String] {
        var rows: [[Character]] = [[]]
        var column = 0
        var rest = Substring(text)
        while let character = rest.first {
            if rest.hasPrefix("\u{1B}[2K") {
                rows[rows.count - 1] = []
                rest = rest.dropFirst(4)
                continue
            }
            rest = rest.dropFirst()
            switch character {
            case "\r": column = 0
            case "\n", "\r\n":
                rows.append([])
                column = 0
            default:
                var row = rows[rows.count - 1]
                while row.count < column { row.append(" ") }
                if column < row.count { row[column] = character } else { row.append(character) }
                rows[rows.count - 1] = row
                column += 1
            }
        }
        return rows.map { String($0) }.filter { !$0.isEmpty }
    }

    final class Recorder: @unchecked Sendable {
        var text = ""
    }

    @Test func logLinesScrollAboveTheStatusLine() {
        let recorder = Recorder()
        let terminal = TerminalStatus(isTerminal: true, columns: { 40 }) { recorder.text += $0 }
        terminal.show("checkpoint 1/2 a")
        terminal.printLine("log one")
        #expect(Self.screen(recorder.text) == ["log one", "checkpoint 1/2 a"])
        terminal.show("checkpoint 1/2 a [██··] 4/8 layers")
        terminal.printLine("log two")
        #expect(Self.screen(recorder.text) == ["log one", "log two", "checkpoint 1/2 a [██··] 4/8 layers"])
        terminal.show(String(repeating: "x", count: 100))
        #expect(Self.screen(recorder.text).last == String(repeating: "x", count: 39), "one row, never wrapped")
        terminal.clear()
        terminal.printLine("log three")
        #expect(Self.screen(recorder.text) == ["log one", "log two", "log three"])
    }

    @Test func noStatusLineOffATerminal() {
        let recorder = Recorder()
        let pipe = TerminalStatus(isTerminal: false) { recorder.text += $0 }
        pipe.show("bar")
        pipe.printLine("log")
        pipe.clear()
        #expect(recorder.text == "log\n")
    }

    @Test(.enabled(if: ChildProcess.hasScript, "needs util-linux script for a pseudo-terminal"))
    func traceOnATerminalKeepsLogAndBarApartAndCountsRealLayers() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        try series.add(step: 20, model: "llama-bf16")
        let result = try ChildProcess.droptraceOnTerminal([
            "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", scratch.path("out").path, "--threads", "1",
        ])
        #expect(result.status == 0, "\(result.stdout)")
        let rows = Self.screen(result.stdout)
        #expect(rows.contains { $0.contains("scoring checkpoint-20") })
        for row in rows {
            #expect(row.wholeMatch(of: #/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (info|warning): [^\x{1B}]+/#) != nil,
                    "a log line ran into something: \(row.debugDescription)")
        }
        // The bar was drawn, with the model's 5 layers, never a made-up total.
        #expect(result.stdout.contains("5/5 layers"))
        #expect(!result.stdout.contains("/1 layers"))
    }
}

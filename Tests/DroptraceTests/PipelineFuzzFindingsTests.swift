import DroptraceSupport
import Foundation
import Testing
@testable import Pipeline

/// Pipeline files droptrace-fuzz found: a setting name may be a quoted or
/// folded YAML scalar holding line breaks, and an error that quotes it must
/// still be one line.
@Suite("Pipeline setting names with line breaks give one-line errors")
struct PipelineFuzzFindingsTests {
    private static let cases: [(name: String, text: String, words: String)] = [
        // The fuzzer's input: an explicit key whose plain scalar folds over a blank line.
        ("unknown-multi-line-key", "? a:1[1, 2, 3]\n\n 1\n", "unknown setting \"a:1[1, 2, 3] 1\""),
        ("unknown-quoted-key", "\"a\\nb\": 1\nseries: s\ncalibration: c\noutput: o\n", "unknown setting \"a b\""),
        ("duplicate-quoted-key", "\"a\\nb\": 1\n\"a\\nb\": 2\n", "gives setting \"a b\" twice"),
    ]

    @Test("a setting name with line breaks is quoted on one line", arguments: cases.map(\.name))
    func settingNameStaysOnOneLine(name: String) throws {
        let entry = Self.cases.first { $0.name == name }!
        let scratch = try ScratchDirectory()
        let file = try scratch.write(entry.text, to: "\(name).yaml")
        let error = #expect(throws: DroptraceError.self) { try PipelineFile.load(file) }
        #expect(error?.path == file.path)
        #expect(error?.message.contains(entry.words) == true, "\(error?.message ?? "")")
        #expect(error?.description.contains("\n") == false)
    }
}

import DroptraceSupport
import Foundation
import Testing
@testable import Pipeline

/// Pipeline files go through guards before the YAML library sees them in
/// full: complex keys (which crash Yams' Any construction), alias expansion
/// (the "billion laughs"), deep nesting (Yams composes recursively), tags,
/// and files over 1 MiB are all one-line errors naming the file.
@Suite("Pipeline files cannot crash or exhaust the YAML library")
struct PipelineFileSafetyTests {
    private static let settings = "series: s\ncalibration: c.jsonl\noutput: out\n"

    private static let cases: [(name: String, text: String, words: String)] = [
        ("complex-key", "? a: 1\n", "complex key"),
        ("complex-flow-key", "? [a]: b\n", "complex key"),
        ("complex-mapping-key", "? {a: b}\n: c\n", "complex key"),
        ("complex-implicit-key", "[a, b]: c\n", "complex key"),
        ("nested-complex-key", settings + "title: {[a]: b}\n", "complex key"),
        ("merge-key", "base: &b {series: s}\n<<: *b\ncalibration: c\noutput: o\n", "tag"),
        ("custom-tag", "series: !!python/object s\ncalibration: c\noutput: o\n", "tag"),
        ("nested-aliases", settings + "drop_k: &a [[1, 1], [1, 1]]\ntitle: [*a, *a, [*a, *a, [*a, *a]]]\n", "setting"),
        ("deep-flow", "series: " + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000), "deep"),
        ("deep-mapping", "series: " + String(repeating: "{a: ", count: 30_000) + "1" + String(repeating: "}", count: 30_000), "deep"),
        ("deep-block", settings + "drop_k: " + String(repeating: "- ", count: 100_000) + "1\n", "deep"),
        ("duplicate", settings + "series: t\n", "twice"),
        ("too-large", settings + "title: " + String(repeating: "a", count: 1 << 20) + "\n", "1 MiB"),
        // Found by droptrace-fuzz: a setting name may be a folded or quoted
        // scalar holding line breaks; an error quoting it stays one line.
        ("unknown-multi-line-key", "? a:1[1, 2, 3]\n\n 1\n", "unknown setting \"a:1[1, 2, 3] 1\""),
        ("unknown-quoted-key", "\"a\\nb\": 1\n" + settings, "unknown setting \"a b\""),
        ("duplicate-quoted-key", "\"a\\nb\": 1\n\"a\\nb\": 2\n", "gives setting \"a b\" twice"),
    ]

    @Test("hostile pipeline files are refused with one line", arguments: cases.map(\.name))
    func hostileFileIsRefused(name: String) throws {
        let entry = Self.cases.first { $0.name == name }!
        let scratch = try ScratchDirectory()
        let file = try scratch.write(entry.text, to: "\(name).yaml")
        let error = #expect(throws: DroptraceError.self) { try PipelineFile.load(file) }
        #expect(error?.path == file.path)
        #expect(error?.message.contains(entry.words) == true, "\(error?.message ?? "")")
        #expect(error?.description.contains("\n") == false)
    }

    @Test("the shared crashers are refused", arguments: ["complex-key-min.yaml", "billion-laughs.yaml"])
    func crasherIsRefused(name: String) throws {
        let file = FixtureFiles.root.appendingPathComponent("pipeline-yaml/\(name)")
        let start = Date()
        let error = #expect(throws: DroptraceError.self) { try PipelineFile.load(file) }
        #expect(Date().timeIntervalSince(start) < 5)
        #expect(error?.path == file.path)
    }

    @Test("an aliased value in a known setting still loads")
    func ordinaryFileLoads() throws {
        let scratch = try ScratchDirectory()
        let text = "# a comment: with - indicators\ntitle: &t \"Demo - run: one\"\nseries: ../s\ncalibration: c.txt\n"
            + "seq_len: 32\ndrop_k: [1, 2]\noutput: *t\n"
        let file = try PipelineFile.load(scratch.write(text, to: "ok.yaml"))
        #expect(file.title == "Demo - run: one")
        #expect(file.output == "Demo - run: one")
        #expect(file.dropK == [1, 2])
        #expect(file.seqLen == 32)
    }

    @Test("settle_minutes sets the settle time; a negative one is refused")
    func settleMinutes() throws {
        let scratch = try ScratchDirectory()
        let settings = "series: s\ncalibration: c.txt\noutput: out\n"
        let file = try PipelineFile.load(scratch.write(settings + "settle_minutes: 2.5\n", to: "ok.yaml"))
        #expect(file.options(relativeTo: scratch.url, force: false).settleTime == 150)
        let defaulted = try PipelineFile.load(scratch.write(settings, to: "default.yaml"))
        #expect(defaulted.options(relativeTo: scratch.url, force: false).settleTime == CheckpointDiscovery.defaultSettleTime)
        let bad = try scratch.write(settings + "settle_minutes: -1\n", to: "bad.yaml")
        let error = #expect(throws: DroptraceError.self) { try PipelineFile.load(bad) }
        #expect(error?.message.contains("settle_minutes") == true)
    }

    @Test("the nesting bound counts brackets, indentation and block indicators")
    func nestingBound() {
        #expect(PipelineYAML.nestingBound(Array("a: [[1], {b: 2}]\n".utf8)) <= 4)
        #expect(PipelineYAML.nestingBound(Array(("a:\n" + (1...80).map { String(repeating: " ", count: $0) + "b:\n" }.joined()).utf8)) > 64)
        #expect(PipelineYAML.nestingBound(Array("# [[[[[[\nurl: http://x\n".utf8)) <= 2)
    }
}

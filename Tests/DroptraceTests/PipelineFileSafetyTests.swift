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
        // A listed checkpoint's name becomes its row's in the store: one with a control character or line
        // break was scored, then its store refused by every reader (no report, and --force scored it again).
        ("checkpoint-name-control", "checkpoints: [\"a/run\\rB\"]\ncalibration: c.jsonl\noutput: out\n",
         "an entry of \"checkpoints\" names checkpoint 'run B', which is no line of text"),
        ("checkpoint-name-separator", "checkpoints: [\"run\\u2028B/\"]\ncalibration: c.jsonl\noutput: out\n", "which is no line of text"),
        // A key given twice in any mapping, not only the top level: Yams keeps the last value.
        ("duplicate-slurm-key", settings + "slurm: {shards: 2, shards: 3, partition: a}\n", #"gives setting "slurm.shards" twice"#),
        ("duplicate-block-slurm-key", settings + "slurm:\n  partition: a\n  partition: b\n", #"gives setting "slurm.partition" twice"#),
        ("duplicate-nested-key", settings + "title: [{a: 1, a: 2}]\n", #"gives setting "title[0].a" twice"#),
        ("too-large", settings + "title: " + String(repeating: "a", count: 1 << 20) + "\n", "1 MiB"),
        // Found by droptrace-fuzz: a setting name may be a folded or quoted
        // scalar holding line breaks; an error quoting it stays one line.
        ("unknown-multi-line-key", "? a:1[1, 2, 3]\n\n 1\n", "unknown setting \"a:1[1, 2, 3] 1\""),
        ("unknown-quoted-key", "\"a\\nb\": 1\n" + settings, "unknown setting \"a b\""),
        ("duplicate-quoted-key", "\"a\\nb\": 1\n\"a\\nb\": 2\n", "gives setting \"a b\" twice"),
        // A core tag giving a value another type than written: the decoder
        // read the 32 and ran, where "32" (a string) is refused.
        ("str-tag", settings + "seq_len: !!str 32\n", #"uses the YAML tag "!!str" on "32""#),
        ("float-tag", settings + "seq_len: !!float 32\n", #"uses the YAML tag "!!float" on "32""#),
        ("bool-tag", settings + "samples: !!bool 32\n", #"uses the YAML tag "!!bool" on "32""#),
        // A list position is named as written, not as the decoder spells it ("Index 0").
        ("nested-list", settings + "drop_k: [[1, 2]]\n", #"setting "drop_k[0]" has the wrong type"#),
        // A quoted number where a number goes (the YAML library calls it a missing value).
        ("quoted-number", settings + "drop_k: [\"2\"]\n", #"setting "drop_k[0]" has the wrong type"#),
        // Empty text decoded as absent: the default, silently.
        ("empty-number", settings + "seq_len: \"\"\n", #"setting "seq_len" is empty text"#),
        ("empty-fraction", settings + "settle_minutes: ''\n", #"setting "settle_minutes" is empty text"#),
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

    /// A comparison pipeline file goes through the same check.
    @Test func keyGivenTwiceInAComparisonIsRefused() throws {
        let scratch = try ScratchDirectory()
        let file = try scratch.write("compare: [a, b]\noutput: o\ntitle: {x: 1, x: 2}\n", to: "compare.yaml")
        let error = #expect(throws: DroptraceError.self) { try PipelineDocument.load(file) }
        #expect(error?.path == file.path)
        #expect(error?.message.contains(#"gives setting "title.x" twice"#) == true, "\(error?.message ?? "")")
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
        #expect(file.options(of: scratch.url.appendingPathComponent("pipeline.yaml"), force: false).settleTime == 150)
        let defaulted = try PipelineFile.load(scratch.write(settings, to: "default.yaml"))
        #expect(defaulted.options(of: scratch.url.appendingPathComponent("pipeline.yaml"), force: false).settleTime == CheckpointDiscovery.defaultSettleTime)
        let bad = try scratch.write(settings + "settle_minutes: -1\n", to: "bad.yaml")
        let error = #expect(throws: DroptraceError.self) { try PipelineFile.load(bad) }
        #expect(error?.message.contains("settle_minutes") == true)
    }

    /// YAML 1.1 (Yams) reads 0x10, 0o20, 020, 0b10000, 1_6 and 0:16 as
    /// numbers in other bases; a number setting must be written in decimal.
    @Test("number settings in another base are refused, naming the setting", arguments: [
        ("seq_len: 0x10", "seq_len"), ("seq_len: 0o20", "seq_len"), ("seq_len: 020", "seq_len"),
        ("seq_len: 0b10000", "seq_len"), ("samples: 1_6", "samples"), ("samples: 0:16", "samples"),
        ("drop_k: [1, 0x2]", "drop_k"), ("num_fewshot: 0x1", "num_fewshot"), ("settle_minutes: 0x10", "settle_minutes"),
        ("settle_minutes: 1:30", "settle_minutes"), ("settle_minutes: 0x1p4", "settle_minutes"),
        ("settle_minutes: 1_0.5", "settle_minutes"), ("slurm: {shards: 0x2}", "slurm.shards"),
        // PyYAML's float needs a point and a signed exponent: these are text there.
        ("settle_minutes: 1e1", "settle_minutes"), ("settle_minutes: 1.0e1", "settle_minutes"),
        ("settle_minutes: 1e400", "settle_minutes"),
        ("tasks: {piqa: {eval: p.jsonl, num_fewshot: 0x5}}", "tasks.piqa.num_fewshot"),
    ])
    func nonDecimalNumberIsRefused(line: String, setting: String) throws {
        let scratch = try ScratchDirectory()
        let file = try scratch.write("series: s\ncalibration: c.txt\noutput: out\n" + line + "\n", to: "p.yaml")
        let error = #expect(throws: DroptraceError.self) { try PipelineFile.load(file) }
        #expect(error?.path == file.path)
        #expect(error?.message.contains("setting \"\(setting)\"") == true, "\(error?.message ?? "no error")")
        #expect(error?.message.contains("decimal") == true, "\(error?.message ?? "no error")")
    }

    @Test("decimal numbers in every spelling YAML shares with other readers still load")
    func decimalNumbersLoad() throws {
        let scratch = try ScratchDirectory()
        let text = "series: s\ncalibration: c.txt\noutput: out\nseq_len: +32\nsamples: 0\ndrop_k: [1, 20]\n"
            + "settle_minutes: 1.5e+1\nslurm: {shards: 2}\n"
        let error = #expect(throws: DroptraceError.self) { try PipelineFile.load(scratch.write(text, to: "zero.yaml")) }
        #expect(error?.message.contains("samples must be at least 1") == true, "\(error?.message ?? "no error")")
        let file = try PipelineFile.load(scratch.write(text.replacingOccurrences(of: "samples: 0", with: "samples: 4"), to: "ok.yaml"))
        #expect(file.seqLen == 32 && file.samples == 4 && file.dropK == [1, 20] && file.settleMinutes == 15 && file.slurm?.shards == 2)
        let fractions = try PipelineFile.load(scratch.write("series: s\ncalibration: c.txt\noutput: out\nsettle_minutes: .5\n", to: "f.yaml"))
        #expect(fractions.settleMinutes == 0.5)
    }

    /// YAML's null (~, null, nothing) was decoded as the text "~" or "null"
    /// (`output: ~` wrote the run into a directory named ~), an empty path
    /// meant the pipeline file's own directory (`checkpoints: [a, '']` traced
    /// it as a checkpoint), a NUL was written as %00, and a leading ~ is no
    /// home directory outside a shell.
    @Test("path settings that would name another place are refused", arguments: [
        ("series: s\ncalibration: c.txt\noutput: ~\n", "setting \"output\" is null"),
        ("series: s\ncalibration: c.txt\noutput: null\n", "setting \"output\" is null"),
        ("series: s\ncalibration: c.txt\noutput:\n", "setting \"output\" is null"),
        ("series: s\ncalibration: ~\noutput: out\n", "setting \"calibration\" is null"),
        ("series: s\ncalibration: ''\noutput: out\n", "setting \"calibration\" is empty"),
        ("series: s\ncalibration: c.txt\neval: ''\noutput: out\n", "setting \"eval\" is empty"),
        ("checkpoints: [a, ~]\ncalibration: c.txt\noutput: out\n", "an entry of \"checkpoints\" is null"),
        ("checkpoints: [a, '']\ncalibration: c.txt\noutput: out\n", "an entry of \"checkpoints\" is empty"),
        ("series: s\ncalibration: c.txt\noutput: \"out\\0x\"\n", "setting \"output\" holds a NUL character"),
        ("series: ~/runs/a\ncalibration: c.txt\noutput: out\n", "setting \"series\" begins with ~"),
        ("series: s\ncalibration: c.txt\noutput: out\ntasks: {piqa: {eval: ~/piqa.jsonl}}\n", "task \"piqa\": eval begins with ~"),
        ("checkpoints: []\ncalibration: c.txt\noutput: out\n", "checkpoints lists no checkpoint"),
        ("series: s\ncalibration: c.txt\noutput: out\ndrop_k: []\n", "drop_k lists no value"),
        ("compare: [a, ~]\noutput: out\n", "an entry of \"compare\" is null"),
        ("compare: [a, b]\noutput: ''\n", "setting \"output\" is empty"),
        ("title: \"a\\nb\"\ncompare: [a, b]\noutput: out\n", "title must be one line"),
        ("title: \"\"\ncompare: [a, b]\noutput: out\n", "title is empty"),
    ])
    func pathThatWouldNameAnotherPlaceIsRefused(text: String, words: String) throws {
        let scratch = try ScratchDirectory()
        let file = try scratch.write(text, to: "p.yaml")
        let error = #expect(throws: DroptraceError.self) { try PipelineDocument.load(file) }
        #expect(error?.path == file.path)
        #expect(error?.message.contains(words) == true, "\(error?.message ?? "no error")")
    }

    @Test("an optional path setting given as null is absent")
    func nullOptionalPathIsAbsent() throws {
        let scratch = try ScratchDirectory()
        let file = try PipelineFile.load(scratch.write("series: ~\ncheckpoints: [a]\ncalibration: c.txt\neval: null\noutput: out\n", to: "p.yaml"))
        #expect(file.series == nil && file.eval == nil && file.checkpoints == ["a"])
    }

    @Test("the nesting bound counts brackets, indentation and block indicators")
    func nestingBound() {
        #expect(PipelineYAML.nestingBound(Array("a: [[1], {b: 2}]\n".utf8)) <= 4)
        #expect(PipelineYAML.nestingBound(Array(("a:\n" + (1...80).map { String(repeating: " ", count: $0) + "b:\n" }.joined()).utf8)) > 64)
        #expect(PipelineYAML.nestingBound(Array("# [[[[[[\nurl: http://x\n".utf8)) <= 2)
        // libyaml breaks lines at CR, NEL, U+2028 and U+2029 too: lines nested by them were not seen.
        for lineBreak in ["\r", "\u{85}", "\u{2028}", "\u{2029}"] {
            let text = "series:" + (1...80).map { lineBreak + String(repeating: " ", count: $0) + "-" }.joined() + lineBreak
            #expect(PipelineYAML.nestingBound(Array(text.utf8)) > 64, "\(lineBreak.unicodeScalars.first!.value)")
        }
    }
}

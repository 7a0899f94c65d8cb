import Dropping
import DroptraceSupport
import Foundation
import Testing

/// `drop --export-mergekit`: a block drop as a mergekit passthrough YAML
/// with 0-based, end-exclusive layer ranges.
@Suite struct MergekitExportTests {
    @Test func keptLayersBecomeEndExclusiveSlices() {
        let yaml = MergekitSlices.yaml(model: "/m/ckpt", layers: 8, dropped: [3, 4, 5], dtype: "bfloat16")
        #expect(yaml.hasSuffix("""
            slices:
              - sources:
                  - model: "/m/ckpt"
                    layer_range: [0, 3]
              - sources:
                  - model: "/m/ckpt"
                    layer_range: [6, 8]
            merge_method: passthrough
            dtype: bfloat16

            """))
        #expect(yaml.contains("layers 3, 4, 5 (0-based) of 8 dropped"))
    }

    /// Only an earlier YAML of this writer is replaced: `--export-mergekit`
    /// naming the source's config.json (or any other file) is refused up front.
    @Test func onlyAnEarlierYAMLIsReplaced() throws {
        let scratch = try ScratchDirectory()
        let config = scratch.path("config.json"), earlier = scratch.path("drop.yaml")
        try Data("{\"model_type\": \"llama\"}".utf8).write(to: config)
        try Data(MergekitSlices.yaml(model: "m", layers: 4, dropped: [1], dtype: "float32").utf8).write(to: earlier)
        let error = #expect(throws: DroptraceError.self) { _ = try MergekitSlices.outputDirectory(for: config) }
        #expect(error?.path == config.path && error?.message.contains("refusing to replace") == true)
        _ = try MergekitSlices.outputDirectory(for: earlier)
        _ = try MergekitSlices.outputDirectory(for: scratch.path("new.yaml"))
    }

    @Test func dropsAtEitherEndAndScatteredDropsLeaveNoEmptySlice() {
        func ranges(_ dropped: Set<Int>, of layers: Int) -> [String] {
            MergekitSlices.yaml(model: "m", layers: layers, dropped: dropped, dtype: "float32")
                .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { $0.hasPrefix("layer_range") }
        }
        #expect(ranges([0, 1], of: 4) == ["layer_range: [2, 4]"])
        #expect(ranges([3], of: 4) == ["layer_range: [0, 3]"])
        #expect(ranges([0, 2], of: 4) == ["layer_range: [1, 2]", "layer_range: [3, 4]"])
    }

    @Test func pathsAreQuotedAsYAMLStrings() {
        let yaml = MergekitSlices.yaml(model: "/a \"b\"\\c: d#e", layers: 2, dropped: [1], dtype: "float16")
        #expect(yaml.contains(#"- model: "/a \"b\"\\c: d#e""#))
    }

    @Test func dropWritesTheSlicesOfTheBlocksItDrops() throws {
        let scratch = try ScratchDirectory()
        let yaml = scratch.path("slice.yaml")
        let result = try DroptraceCommand.run([
            "drop", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--target", "block", "--consecutive", "--count", "2", "--export-mergekit", yaml.path, "--json",
            "--speed-max-rounds", "1",
        ])
        try #require(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let dropped = try #require(json["dropped_blocks"] as? [Int])
        #expect(json["export_mergekit"] as? String == yaml.path)
        let text = try String(contentsOf: yaml, encoding: .utf8)
        let kept = (0..<5).filter { !dropped.contains($0) }
        let slices = text.split(separator: "\n").filter { $0.trimmingCharacters(in: .whitespaces).hasPrefix("layer_range") }
        // Every kept layer is in exactly one slice, every dropped one in none.
        var covered: [Int] = []
        for slice in slices {
            let numbers = slice.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
            covered += Array(numbers[0]..<numbers[1])
        }
        #expect(covered == kept)
        #expect(text.contains("merge_method: passthrough") && text.contains("dtype: float32"))
        #expect(text.contains("- model: \"\(FixtureFiles.model("llama-f32").standardizedFileURL.path)\""))
    }

    @Test func badRequestsFailAtOnceWithOneLine() throws {
        let scratch = try ScratchDirectory()
        let model = FixtureFiles.model("llama-f32").path
        let cases: [([String], Int32, String)] = [
            (["--target", "attention", "--count", "1", "--export-mergekit", scratch.path("a.yaml").path],
             64, "--export-mergekit applies to --target block only"),
            (["--target", "block", "--count", "1", "--export-mergekit", scratch.path("missing/a.yaml").path],
             1, "directory \(scratch.path("missing").path) does not exist"),
            (["--target", "block", "--count", "1", "--export-mergekit", scratch.url.path], 1, "is a directory"),
        ]
        for (arguments, status, phrase) in cases {
            let result = try DroptraceCommand.run(
                ["drop", model, "--calibration", FixtureFiles.calibrationJSONL.path] + arguments)
            let errors = result.stderr.split(separator: "\n").filter { $0.lowercased().contains("error") }
            #expect(result.status == status && errors.count == 1, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(phrase), "\(arguments): \(result.stderr)")
        }
        let gguf = FixtureFiles.root.appendingPathComponent("gguf/llama-f32.gguf").path
        let result = try DroptraceCommand.run([
            "drop", gguf, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block", "--count", "1",
            "--export-mergekit", scratch.path("g.yaml").path,
        ])
        #expect(result.status == 1 && result.stderr.contains("\(gguf): --export-mergekit needs a Hugging Face checkpoint; mergekit cannot read GGUF"),
                "the line names the file given: \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("g.yaml").path))

        let scaled = try EditedFixture("gpt2-f32") { $0["scale_attn_by_inverse_layer_idx"] = true }
        let refused = try DroptraceCommand.run([
            "drop", scaled.model.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block",
            "--count", "1", "--export-mergekit", scratch.path("s.yaml").path,
        ])
        #expect(refused.status == 1 && refused.stderr.contains("\(scaled.configPath): --export-mergekit: attention scales by"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path("s.yaml").path))

        // An architecture mergekit has no definition of is refused before any scoring.
        let beam = FixtureFiles.model("beam-f32").path
        let moved = try DroptraceCommand.run([
            "drop", beam, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block", "--count", "1",
            "--export-mergekit", scratch.path("b.yaml").path,
        ])
        #expect(moved.status == 1 && moved.stderr.contains("has no definition of BeamForCausalLM"), "\(moved.stderr)")
        #expect(!moved.stderr.contains("scoring"), "\(moved.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("b.yaml").path))
    }

    /// `--export` and `--export-mergekit` at one path, or one inside the
    /// other (also through a symbolic link): the whole run happened, the
    /// export was written, then the mergekit file failed. Now refused at once
    /// as a usage error, nothing written.
    @Test func exportAndMergekitPathsThatMeetAreRefusedAtOnce() throws {
        let scratch = try ScratchDirectory()
        try FileManager.default.createDirectory(at: scratch.path("real"), withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: scratch.path("link").path, withDestinationPath: "real")
        let out = scratch.path("real/out").path
        let cases: [(String, String, String)] = [
            (out, out, "are the same path"),
            (out, scratch.path("link/out").path, "are the same path"),
            (out, out + "/slices.yaml", "put the mergekit file inside the export directory"),
            (out + "/model", out, "put the export directory inside the mergekit file's path"),
        ]
        for (export, yaml, phrase) in cases {
            let result = try DroptraceCommand.run([
                "drop", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
                "--target", "block", "--count", "1", "--speed-max-rounds", "1", "--export", export, "--export-mergekit", yaml,
            ])
            let errors = result.stderr.split(separator: "\n").filter { $0.lowercased().contains("error") }
            #expect(result.status == 64 && errors.count == 1, "\(export) \(yaml): \(result.stderr)")
            #expect(result.stderr.contains("--export \(export) and --export-mergekit \(yaml) \(phrase)"), "\(result.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path("real").path).isEmpty)
        }
        // Apart, both are written.
        let apart = try DroptraceCommand.run([
            "drop", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--target", "block", "--count", "1", "--speed-max-rounds", "1", "--export", out, "--export-mergekit", out + ".yaml",
        ])
        #expect(apart.status == 0, "\(apart.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path("real").path).sorted() == ["out", "out.yaml"])
    }
}

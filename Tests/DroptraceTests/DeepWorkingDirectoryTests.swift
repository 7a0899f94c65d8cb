import Foundation
import ScoreStore
import Testing

/// Relative paths given below a working directory deeper than 1024 bytes
/// (well within PATH_MAX): Foundation resolved none of them there, so
/// `compare` spun forever walking a relative URL's parents up to "/",
/// `trace` called a plain output path one with a control character, and
/// `drop --export` failed with Foundation's "URL type isn't supported".
@Suite struct DeepWorkingDirectoryTests {
    /// Runs droptrace in `directory` (through sh: Process sets no working directory that deep).
    private func run(in directory: URL, _ arguments: [String]) throws -> DroptraceCommand.Result {
        try DroptraceCommand.run(arguments, environment: ["DEEP_DIRECTORY": directory.path],
                                 launcher: ["/bin/sh", "-c", #"cd "$DEEP_DIRECTORY" && exec "$@""#, "sh"])
    }

    @Test func relativePathsBelowADeepWorkingDirectory() throws {
        let scratch = try ScratchDirectory()
        var deep = scratch.url
        for _ in 0..<6 { deep.appendPathComponent(String(repeating: "d", count: 200)) }
        try FileManager.default.createDirectory(at: deep, withIntermediateDirectories: true)
        #expect(deep.path.utf8.count > 1200)
        let first = try SeriesBuilder(in: scratch, name: "first"), second = try SeriesBuilder(in: scratch, name: "second")
        try first.add(step: 10)
        try second.add(step: 20, model: "llama-bf16")
        for (series, output) in [(first, "one"), (second, "two")] {
            try FileManager.default.createSymbolicLink(at: deep.appendingPathComponent(output + "-series"), withDestinationURL: series.directory)
            let result = try run(in: deep, [
                "trace", output + "-series", "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output, "--threads", "1"])
            try #require(result.status == 0, "\(result.stderr)")
            #expect(try ScoreFile.read(from: deep.appendingPathComponent("\(output)/scores.h5")).rows.count == 1)
        }
        let compare = try run(in: deep, ["compare", "one", "two", "--output", "both"])
        #expect(compare.status == 0, "\(compare.stderr)")
        #expect(FileManager.default.fileExists(atPath: deep.appendingPathComponent("both/report.md").path))

        let drop = try run(in: deep, [
            "drop", "one-series/checkpoint-10", "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "attention",
            "--count", "1", "--speed-max-rounds", "1", "--export", "dropped", "--threads", "1"])
        #expect(drop.status == 0, "\(drop.stderr)")
        #expect(FileManager.default.fileExists(atPath: deep.appendingPathComponent("dropped/config.json").path))
    }
}

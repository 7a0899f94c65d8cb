import Foundation
import Testing

/// Bugs found by using the new commands as a new user would, each kept from
/// coming back.
struct TryoutRegressionTests {
    /// More shards than calibration windows: every array task would refuse
    /// its shard after queueing, so submit refuses at once and writes nothing.
    @Test func submitRefusesMoreShardsThanSamples() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 10)
        let pipeline = try scratch.write(
            """
            series: series
            calibration: \(FixtureFiles.calibrationJSONL.path)
            samples: 2
            output: out
            """, to: "pipeline.yaml")
        for extra in [["--shards", "3"], ["--shards", "2"]] {
            let result = try DroptraceCommand.run(["slurm", "submit", pipeline.path, "--dry-run"] + extra)
            if extra[1] == "3" {
                #expect(result.status == 1)
                #expect(result.stderr.contains("\(pipeline.path): 3 shards but samples is 2"), "\(result.stderr)")
                #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
                #expect(!FileManager.default.fileExists(atPath: scratch.path("out").path))
            } else {
                #expect(result.status == 0, "as many shards as samples is fine: \(result.stderr)")
            }
        }
    }
}

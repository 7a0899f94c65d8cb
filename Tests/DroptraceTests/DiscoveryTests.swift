import CheckpointIO
import Foundation
import Pipeline
import Testing

@Suite struct DiscoveryTests {
    @Test func stepsAndTokensFromNames() {
        #expect(CheckpointName.step("checkpoint-1500") == 1500)
        #expect(CheckpointName.step("step300") == 300)
        #expect(CheckpointName.step("step-300") == 300)
        #expect(CheckpointName.step("step_300") == 300)
        #expect(CheckpointName.step("global_step42") == 42)
        #expect(CheckpointName.step("step1000-tokens4B") == 1000)
        #expect(CheckpointName.tokens("step1000-tokens4B") == 4_000_000_000)
        #expect(CheckpointName.tokens("stage1-step1000-tokens2097") == 2097)
        #expect(CheckpointName.step("runs") == nil)
        #expect(CheckpointName.step("checkpoint-") == nil)
        #expect(CheckpointName.step("best-checkpoint-3") == nil)
    }

    @Test func scanOrdersByStepAndReadsTrainerState() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 1000, tokensSeen: 64000)
        try series.add(step: 20, name: "step20-tokens1M")
        try series.add(step: 300, name: "global_step300")
        try FileManager.default.createDirectory(at: series.directory.appendingPathComponent("logs"), withIntermediateDirectories: true)
        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == ["step20-tokens1M", "global_step300", "checkpoint-1000"])
        #expect(result.ready.map(\.tokens) == [1_000_000, -1, 64000])
        #expect(result.ready.map(\.step) == [20, 300, 1000])
    }

    /// Python's json writes a diverged loss as NaN, and the Trainer reads it
    /// back: the state's step and token count still count.
    @Test func trainerStateWithNaNLossesIsRead() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let checkpoint = try series.add(step: 20)
        try Data(#"{"global_step": 25, "num_input_tokens_seen": 4096, "log_history": [{"loss": NaN, "grad_norm": Infinity, "step": 25}]}"#.utf8)
            .write(to: checkpoint.appendingPathComponent("trainer_state.json"))
        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.step) == [25])
        #expect(result.ready.map(\.tokens) == [4096])
        // The name says 20: a renamed directory or another run's checkpoint is worth a word.
        #expect(result.warnings == [checkpoint.path + ": its name gives step 20 but its trainer_state.json says global_step 25; the row takes step 25"])
    }

    @Test func aStepBeyondInt64IsTracedAsUnknownWithAWarningNamingTheDirectory() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        try series.add(step: 5)
        let huge = try series.add(step: 1, name: "checkpoint-99999999999999999999999")
        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == ["checkpoint-5", "checkpoint-99999999999999999999999"])
        #expect(result.ready.map(\.step) == [5, -1])
        #expect(result.warnings.count == 1)
        #expect(result.warnings.first?.hasPrefix(huge.path + ": ") == true)
        #expect(result.warnings.first?.contains("beyond 9223372036854775807") == true)
    }

    @Test func incompleteCheckpointsAreReportedNotReady() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let sharded = try series.add(step: 1, model: "llama-sharded")
        let shard = try FileManager.default.contentsOfDirectory(atPath: sharded.path).first { $0.hasPrefix("model-00002") }!
        try FileManager.default.removeItem(at: sharded.appendingPathComponent(shard))
        let header = try series.add(step: 2)
        try Data([1, 2, 3]).write(to: header.appendingPathComponent("model.safetensors"))
        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.isEmpty)
        #expect(result.incomplete.map(\.name) == ["checkpoint-1", "checkpoint-2"])
        #expect(result.incomplete[0].reason.contains(shard))
    }

    /// A complete shard index that names no usable shards (a name outside the
    /// directory, no `metadata`) fails at once: waiting does not change it, and
    /// as "being written" it was skipped by every run until the settle time ran out.
    @Test func aCompleteIndexThatIsWrongFailsAtOnce() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let outside = try series.add(step: 1, model: "llama-sharded")
        let nameless = try series.add(step: 2, model: "llama-sharded")
        let indexName = "model.safetensors.index.json"
        func rewriteIndex(of checkpoint: URL, _ edit: (inout [String: Any]) -> Void) throws {
            let url = checkpoint.appendingPathComponent(indexName)
            var index = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            edit(&index)
            try FileManager.default.removeItem(at: url)
            try JSONSerialization.data(withJSONObject: index).write(to: url)
        }
        try rewriteIndex(of: outside) { index in
            var map = index["weight_map"] as! [String: String]
            map[map.keys.sorted()[0]] = "../model.safetensors"
            index["weight_map"] = map
        }
        try rewriteIndex(of: nameless) { index in _ = index.removeValue(forKey: "metadata") }
        // Nested deeper than JSON readers go (Python's json fails too): said so, not "no weight_map".
        let deep = try series.add(step: 3, model: "llama-sharded").appendingPathComponent(indexName)
        let text = try String(contentsOf: deep, encoding: .utf8)
        try (String(text.dropLast(text.hasSuffix("\n") ? 2 : 1)) + #", "deep": "# + String(repeating: "[", count: 100_000)
            + String(repeating: "]", count: 100_000) + "}").write(to: deep, atomically: true, encoding: .utf8)
        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.incomplete.isEmpty)
        #expect(result.failed.map(\.name) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"])
        #expect(result.failed[0].error.contains("\(indexName): shard name \"../model.safetensors\" in the index is not a file name"))
        #expect(result.failed[1].error.contains("\(indexName): shard index has no \"metadata\" object"))
        #expect(result.failed[2].error.contains("\(indexName): not valid JSON: Too many nested arrays"), "\(result.failed[2].error)")
    }

    /// An incomplete checkpoint dated ahead of the clock (another machine's
    /// clock, restored files) fails at once, naming the clock: it was "being
    /// written" until the clock caught up, skipped by every run meanwhile.
    /// A few seconds ahead is a write in progress still.
    @Test func incompleteCheckpointDatedInTheFutureFailsNamingTheClock() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let ahead = try series.add(step: 1)
        let slightly = try series.add(step: 2)
        for (checkpoint, seconds) in [(ahead, 365.0 * 86_400), (slightly, 30)] {
            try Data([1, 2, 3]).write(to: checkpoint.appendingPathComponent("model.safetensors"))
            for path in try FileManager.default.contentsOfDirectory(atPath: checkpoint.path).map({ checkpoint.appendingPathComponent($0).path }) + [checkpoint.path] {
                try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: seconds)], ofItemAtPath: path)
            }
        }
        let result = try CheckpointDiscovery.scan(series.directory, settleTime: 60)
        #expect(result.failed.map(\.name) == ["checkpoint-1"])
        #expect(result.failed.first?.error.contains("model.safetensors has an incomplete header, and its files are dated 525") == true,
                "\(result.failed)")
        #expect(result.failed.first?.error.contains("ahead of this machine's clock") == true)
        #expect(result.incomplete.map(\.name) == ["checkpoint-2"])
    }

    /// Files that are symbolic links (a Hugging Face cache snapshot,
    /// git-annex, a series assembled with `ln -s`) are judged by the files
    /// they point to: the links' own sizes made complete checkpoints look
    /// cut short.
    @Test(arguments: ["llama-f32", "llama-sharded", "llama-f32-bin"])
    func checkpointOfSymbolicLinksIsReady(model: String) throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let checkpoint = series.directory.appendingPathComponent("checkpoint-1")
        try FileManager.default.createDirectory(at: checkpoint, withIntermediateDirectories: true)
        let source = FixtureFiles.model(model)
        for name in try FileManager.default.contentsOfDirectory(atPath: source.path) {
            try FileManager.default.createSymbolicLink(at: checkpoint.appendingPathComponent(name), withDestinationURL: source.appendingPathComponent(name))
        }
        let result = try CheckpointDiscovery.scan(series.directory, settleTime: 0)
        #expect(result.ready.map(\.name) == ["checkpoint-1"], "\(result.incomplete) \(result.failed)")
    }

    @Test func ggufCheckpointsNeedNoConfigAndAreReadyOnlyWhenComplete() throws {
        let scratch = try ScratchDirectory()
        let series = scratch.path("series")
        let source = try Data(contentsOf: GGUFFixtures.file("llama-f32.gguf"))
        for (name, bytes) in [("step100", source), ("step200", source.prefix(source.count - 100)), ("step300", source.prefix(20))] {
            let directory = series.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try bytes.write(to: directory.appendingPathComponent("model-f32.gguf"))
        }
        let result = try CheckpointDiscovery.scan(series)
        #expect(result.ready.map(\.name) == ["step100"])
        #expect(result.incomplete.map(\.name) == ["step200", "step300"])
        #expect(result.incomplete[0].reason.contains("model-f32.gguf has \(source.count - 100) of \(source.count) bytes"))
        #expect(result.incomplete[1].reason.contains("incomplete header"))
    }

    @Test func missingSeriesDirectoryIsAnError() throws {
        let scratch = try ScratchDirectory()
        #expect(throws: (any Error).self) { try CheckpointDiscovery.scan(scratch.path("nope")) }
    }
}

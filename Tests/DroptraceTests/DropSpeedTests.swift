import Architectures
import CheckpointIO
@testable import Dropping
import Foundation
import TensorEngine
import Testing

/// How `drop` turns paired timing rounds into medians, spreads and verdicts
/// (pure, on synthetic samples: no timed assertions), when the rounds stop,
/// and what a real `drop` run reports about speed.
@Suite struct DropSpeedTests {
    /// Full and dropped decoding times (ms/token) of `rounds` rounds, the
    /// dropped model `factor` × the full one, each with its own jitter.
    static func decodeRounds(_ rounds: Int, factor: Double) -> (full: [Double], dropped: [Double]) {
        let jitter = [0.0, 0.2, -0.1, 0.15, -0.2, 0.05, 0.1, -0.05, 0.25, -0.15]
        let full = (0..<rounds).map { 10 + jitter[$0 % jitter.count] }
        let dropped = (0..<rounds).map { 10 * factor + jitter[($0 + 3) % jitter.count] }
        return (full, dropped)
    }

    @Test func spreadIsNumpysLinearInterpolation() {
        let spread = Spread([4, 1, 3, 2])
        #expect(spread.median == 2.5 && spread.q1 == 1.75 && spread.q3 == 3.25 && spread.min == 1 && spread.max == 4)
        #expect(Spread([7]) == Spread([7, 7, 7]))
    }

    @Test func signTestIsTheExactBinomialTail() {
        #expect(abs(PairedSpeed.signTest(8, 0) - 2.0 / 256) < 1e-12)
        #expect(abs(PairedSpeed.signTest(1, 9) - 22.0 / 1024) < 1e-12)
        #expect(PairedSpeed.signTest(5, 5) == 1)
        #expect(PairedSpeed.signTest(0, 0) == 1)
    }

    @Test func aClearSpeedUpIsFaster() {
        let (full, dropped) = Self.decodeRounds(10, factor: 0.8)
        let decode = PairedSpeed(full: full, dropped: dropped, higherIsBetter: false)
        #expect(decode.verdict == .faster)
        #expect(decode.droppedFasterRounds == 10 && decode.droppedSlowerRounds == 0 && decode.rounds == 10)
        #expect(decode.speedupPercent.median > 20 && decode.speedupPercent.median < 30)
        #expect(decode.speedupPercent.q1 > 0 && decode.full.median > decode.dropped.median)
        // Throughput the other way round: higher is faster.
        let prefill = PairedSpeed(full: dropped, dropped: full, higherIsBetter: true)
        #expect(prefill.verdict == .faster && prefill.speedupPercent.median > 20)
    }

    @Test func aClearSlowDownIsReportedAsSuchNotClamped() {
        let (full, dropped) = Self.decodeRounds(9, factor: 1.1)
        let decode = PairedSpeed(full: full, dropped: dropped, higherIsBetter: false)
        #expect(decode.verdict == .slower)
        #expect(decode.droppedSlowerRounds == 9 && decode.speedupPercent.median < -5)
    }

    @Test func aDifferenceTheRoundsCannotTellFromZeroIsWithinNoise() {
        // Equal models: the jitter decides each round.
        let (full, dropped) = Self.decodeRounds(10, factor: 1)
        #expect(PairedSpeed(full: full, dropped: dropped, higherIsBetter: false).verdict == .withinNoise)
        // 7 of 8 one way is p = 0.07: not enough.
        let mostly = PairedSpeed(full: [1, 1, 1, 1, 1, 1, 1, 1], dropped: [0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 1.1], higherIsBetter: false)
        #expect(mostly.verdict == .withinNoise && mostly.droppedFasterRounds == 7)
        // Too few rounds can never tell, however large the difference.
        let few = PairedSpeed(full: [2, 2, 2, 2, 2], dropped: [1, 1, 1, 1, 1], higherIsBetter: false)
        #expect(few.verdict == .withinNoise && few.speedupPercent.median == 100)
    }

    @Test func lengthSpeedConvertsSecondsToTheReportedUnits() {
        let speed = LengthSpeed(
            context: 64, generate: 64, prefillSeconds: Comparison(full: [0.5, 0.25], dropped: [0.25, 0.25]),
            decodeSeconds: Comparison(full: [0.25, 0.5], dropped: [0.125, 0.125]))
        #expect(speed.prefill.full.min == 128 && speed.prefill.full.max == 256 && speed.prefill.dropped.median == 256)
        #expect(speed.decode.full.median == 375 && speed.decode.dropped.median == 125)
        #expect(speed.decode.speedupPercent.max == 300 && speed.prefill.speedupPercent.min == 0)
    }

    @Test func roundsStopOnceTheMediansSettle() {
        let policy = RoundPolicy()
        // The dropped model (series 1 and 3) ahead in every round: the sign tests are decided too.
        let steady = [5.0, 6, 5, 6].map { [Double](repeating: $0, count: policy.minRounds - 1) }
        #expect(policy.stop(series: steady, elapsed: 1, lastRound: 0.1) == nil, "not before the minimum")
        #expect(policy.stop(series: steady.map { $0 + [$0[0]] }, elapsed: 1, lastRound: 0.1) == .stable)
        // One drifting metric keeps the rounds going.
        let drifting = steady.map { $0 + [$0[0]] } + [(1...policy.minRounds).map { 5 * pow(1.05, Double($0)) }]
        #expect(policy.stop(series: drifting, elapsed: 1, lastRound: 0.1) == nil)
    }

    /// Settled medians of a speed-up seen in 7 of 8 rounds (p = 0.07) ended
    /// the rounds, and the speed-up was reported as within noise: the rounds
    /// go on while another could decide the sign test.
    @Test func settledMediansWaitForTheSignTest() {
        let policy = RoundPolicy()
        func full(_ rounds: Int) -> [Double] { [Double](repeating: 100, count: rounds) }
        let faster = [Double](repeating: 120, count: 7) + [99]
        #expect(policy.stop(series: [full(8), faster], elapsed: 1, lastRound: 0.1) == nil)
        // 10 of 11 faster is still p = 0.012; 11 of 12 decides it.
        #expect(policy.stop(series: [full(11), faster + [120, 120, 120]], elapsed: 1, lastRound: 0.1) == nil)
        #expect(policy.stop(series: [full(12), faster + [120, 120, 120, 120]], elapsed: 1, lastRound: 0.1) == .stable)
        // 5 of 10 each way: even 10 more one way (15 of 20, p = 0.04) cannot decide it, so the rounds end.
        let even = (0..<10).map { $0 % 2 == 0 ? 100.5 : 99.5 }
        #expect(policy.stop(series: [full(10), even], elapsed: 1, lastRound: 0.1) == .stable)
    }

    @Test func theMaximumAndTheBudgetEndTheRounds() {
        var policy = RoundPolicy()
        policy.maxRounds = 12
        func drifting(_ rounds: Int) -> [[Double]] { [(1...rounds).map { pow(1.05, Double($0)) }] }
        let stops = (1...20).map { policy.stop(series: drifting($0), elapsed: 1, lastRound: 0.1) }
        #expect(stops.firstIndex { $0 != nil } == 11 && stops[11] == .maxRounds)
        // Another round of 10 s would overrun 120 s: stop, even below the minimum.
        #expect(policy.stop(series: drifting(2), elapsed: 111, lastRound: 10) == .budget)
        #expect(policy.stop(series: drifting(2), elapsed: 109, lastRound: 10) == nil)
        // A maximum below the minimum wins.
        policy.maxRounds = 3
        #expect(policy.stop(series: drifting(3), elapsed: 1, lastRound: 0.1) == .maxRounds)
    }

    /// Also across Llama 4's chunk boundaries (chunks of 10: the prefill
    /// ends inside the second chunk, decoding enters the third) and with its
    /// NoPE layer's query temperature, which prefill and decoding apply by
    /// absolute position.
    @Test(arguments: ["llama-f32", "llama4_text-f32"])
    func theDroppedDecoderSharesWeightsAndMatchesTheForward(model name: String) throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(name)))
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12, plans: [.none, DropPlan(attention: [1]), DropPlan(mlp: [0, 2]), DropPlan(blocks: [3])],
            label: name)
    }

    @Test func dropReportsMediansSpreadsAndVerdicts() throws {
        let result = try DroptraceCommand.run([
            "drop", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--target", "attention", "--count", "2", "--eval", FixtureFiles.calibrationText.path, "--seq-len", "32",
            "--speed-max-rounds", "3", "--json",
        ])
        try #require(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let speed = try #require(json["speed"] as? [String: Any])
        for model in ["full", "dropped"] {
            let report = try #require(speed[model] as? [String: Any])
            #expect(Set(report.keys) == ["prefill_tokens_per_second", "decode_ms_per_token", "flops_per_token", "kv_cache_bytes_per_token"])
        }
        // The fixture has 256 positions: LLM-Drop's lengths up to 128/128; the last is the headline.
        let lengths = try #require(speed["lengths"] as? [[String: Any]])
        #expect(lengths.map { ($0["context"] as? NSNumber)?.intValue } == [32, 64, 128])
        #expect((speed["context"] as? NSNumber)?.intValue == 128 && (speed["generate"] as? NSNumber)?.intValue == 128)
        #expect((speed["batch"] as? NSNumber)?.intValue == 1 && (speed["rounds"] as? NSNumber)?.intValue == 3)
        #expect(speed["stopped"] as? String == "max rounds" && speed["precision"] as? String == "f32")
        #expect(((speed["threads"] as? NSNumber)?.intValue ?? 0) >= 1 && !((speed["matrix_kernel"] as? String) ?? "").isEmpty)
        let flopsRatio = try #require((speed["flops_ratio"] as? NSNumber)?.doubleValue)
        #expect(flopsRatio > 0 && flopsRatio < 1)
        for metric in ["prefill", "decode"] {
            let paired = try #require(speed[metric] as? [String: Any])
            #expect((paired["rounds"] as? NSNumber)?.intValue == 3)
            // Three rounds can never tell a difference from noise.
            #expect(paired["verdict"] as? String == "within noise")
            #expect(json["\(metric)_verdict"] as? String == "within noise")
            let spread = try #require(paired["speedup_percent"] as? [String: Any])
            #expect(Set(spread.keys) == ["median", "q1", "q3", "min", "max"])
        }
        #expect(json["sdr"] == nil || json["sdr"] is NSNull, "no SDR from noise")
        #expect(json["decode_speedup_percent"] is NSNumber)

        let table = try DroptraceCommand.run([
            "drop", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--target", "attention", "--count", "2", "--eval", FixtureFiles.calibrationText.path, "--seq-len", "32",
            "--speed-max-rounds", "2",
        ])
        try #require(table.status == 0, "\(table.stderr)")
        #expect(table.stdout.contains("(IQR)") && table.stdout.contains("context/generate 128/128, medians of 2 rounds"))
        #expect(table.stdout.contains("decode  within noise") && table.stdout.contains("n/a (decode speed-up within noise)"))
    }

    /// A maximum below 8 rounds is allowed (a run that wants no timing), and
    /// the help says what it costs instead of promising 8 rounds.
    @Test func maxRoundsHelpSaysWhatFewRoundsCost() throws {
        let help = try DroptraceCommand.run(["drop", "--help"])
        try #require(help.status == 0, "\(help.stderr)")
        let text = help.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(text.contains("At most this many timing rounds; below 8 every speed-up is within noise (the sign test needs 8). (default: 20)"), "\(help.stdout)")
        #expect(!text.contains("at least 8 rounds"), "\(help.stdout)")
    }

    @Test func badSpeedOptionsAreRefused() throws {
        let base = ["drop", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
                    "--target", "attention", "--count", "1"]
        for (arguments, phrase) in [
            (["--speed-budget", "0"], "--speed-budget"), (["--speed-budget", "nan"], "--speed-budget"),
            (["--speed-budget", "-5"], "--speed-budget"), (["--speed-budget", "1e9"], "--speed-budget"),
            (["--speed-max-rounds", "0"], "--speed-max-rounds"), (["--speed-max-rounds", "5000"], "--speed-max-rounds"),
        ] {
            let result = try DroptraceCommand.run(base + arguments)
            #expect(result.status == 64, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(phrase), "\(arguments): \(result.stderr)")
        }
    }

    /// A budget below one round at the shortest length still times that one
    /// round, and the log says the budget was overrun rather than leaving the
    /// time it took to be found.
    @Test func aBudgetBelowOneRoundIsSaidToBeOverrun() throws {
        let result = try DroptraceCommand.run([
            "drop", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--target", "attention", "--count", "1", "--speed-budget", "0.000001", "--threads", "1",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("timed 1 round in ") && result.stderr.contains("budget 1e-06 s)")
            && result.stderr.contains("past the budget of 1e-06 s: one round at the shortest length"), "\(result.stderr)")
    }

    /// Seconds as the log says them: a budget under a second is not "0 s".
    @Test func secondsAndRoundsAreSaidAsTheyAre() {
        #expect(DropRun.seconds(0.001) == "0.001 s" && DropRun.seconds(2.5) == "2.5 s" && DropRun.seconds(5) == "5 s")
        #expect(DropRun.seconds(12.4) == "12 s" && DropRun.seconds(600) == "600 s")
        #expect(DropRun.rounds(1) == "1 round" && DropRun.rounds(8) == "8 rounds")
    }

    /// A model of 3 positions is timed at context 2 and one decoding step
    /// (2L − 1 positions, not 2L): it was refused, which stopped `drop`
    /// before its export. Fewer than 3 cannot time a decoding step.
    @Test func theFewestPositionsThatTimeADecodingStep() throws {
        let scratch = try ScratchDirectory()
        func run(positions: Int) throws -> DroptraceCommand.Result {
            let model = try scratch.copyOfModel("llama-f32", as: "positions-\(positions)")
            let config = model.appendingPathComponent("config.json")
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: config)) as! [String: Any]
            json["max_position_embeddings"] = positions
            try JSONSerialization.data(withJSONObject: json).write(to: config)
            return try DroptraceCommand.run([
                "drop", model.path, "--calibration", FixtureFiles.calibrationText.path, "--seq-len", String(positions),
                "--samples", "2", "--target", "attention", "--count", "1", "--speed-max-rounds", "2", "--threads", "1", "--json",
            ])
        }
        let three = try run(positions: 3)
        try #require(three.status == 0, "\(three.stderr)")
        let speed = try #require((try JSONSerialization.jsonObject(with: Data(three.stdout.utf8)) as? [String: Any])?["speed"] as? [String: Any])
        #expect((speed["context"] as? NSNumber)?.intValue == 2 && (speed["generate"] as? NSNumber)?.intValue == 2, "\(speed)")
        let two = try run(positions: 2)
        #expect(two.status == 1 && two.stderr.contains("timing decoding needs a context of at least 2 tokens and one decoding step (3 positions); the model has 2"),
                "\(two.stderr)")
    }
}

import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Pipeline
import Scoring
import ScoreStore
import Testing

/// droptrace's angular distances against PruneMe's formula computed with
/// transformers' hidden states (scripts/fixtures/make_peer_metric_references.py).
@Suite struct PeerMetricReferenceTests {
    static let tolerance = 1e-5

    static let reference: [String: [String: Any]] = {
        let url = FixtureFiles.root.appendingPathComponent("peer_metric_reference.json")
        let json = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return json["models"] as! [String: [String: Any]]
    }()

    static func vector(_ value: Any?) -> [Double] {
        (value as! [Any]).map { ($0 as? NSNumber)?.doubleValue ?? .nan }
    }

    /// The largest |a − b| over the defined entries; infinity when NaNs differ in place.
    static func difference(_ a: [Double], _ b: [Float]) -> Double {
        guard a.count == b.count else { return .infinity }
        return zip(a, b).reduce(0.0) { worst, pair in
            if pair.0.isNaN && pair.1.isNaN { return worst }
            if pair.0.isNaN != pair.1.isNaN { return .infinity }
            return max(worst, abs(pair.0 - Double(pair.1)))
        }
    }

    func stored(_ model: String) throws -> AngularDistanceScores {
        let checkpoint = try Checkpoint(directory: FixtureFiles.model(model))
        let scores = try ImportanceScorer(model: try ModelRegistry.load(checkpoint))
            .score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
        return try #require(CheckpointRow(scores: scores, name: model, step: -1, tokens: -1).angularDistance)
    }

    @Test(arguments: ["llama-f32", "gpt_neox-f32"])
    func angularDistancesEqualPruneMesFormulaOnTransformersHiddenStates(model: String) throws {
        let expected = try #require(Self.reference[model])
        let angular = try stored(model)
        let perLayer: [(String, [Float])] = [
            ("attention_angular_distance", angular.attention), ("mlp_angular_distance", angular.mlp),
            ("block_angular_distance", angular.block),
            ("attention_angular_distance_last_token", angular.attentionLastToken),
            ("mlp_angular_distance_last_token", angular.mlpLastToken),
            ("block_angular_distance_last_token", angular.blockLastToken),
        ]
        for (key, values) in perLayer {
            let worst = Self.difference(Self.vector(expected[key]), values)
            #expect(worst <= Self.tolerance, "\(model) \(key): max |droptrace − PruneMe| = \(worst)")
        }
        for (key, matrix) in [("block_gap_angular_distance", angular.blockGap),
                              ("block_gap_angular_distance_last_token", angular.blockGapLastToken)] {
            let rows = expected[key] as! [Any]
            #expect(rows.count == matrix.count)
            let worst = zip(rows, matrix).map { Self.difference(Self.vector($0), $1) }.max() ?? .infinity
            #expect(worst <= Self.tolerance, "\(model) \(key): max |droptrace − PruneMe| = \(worst)")
        }
    }

    @Test func scoreJSONCarriesTheAngularDistancesAndTheComparisons() throws {
        let scratch = try ScratchDirectory()
        let result = try DroptraceCommand.run([
            "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", scratch.path("s.h5").path, "--json",
        ])
        try #require(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let angular = try #require(json["angular_distance"] as? [String: Any])
        let lastToken = Self.vector(angular["block_gap_last_token"].map { ($0 as! [Any])[1] })
        let expected = Self.vector((Self.reference["llama-f32"]!["block_gap_angular_distance_last_token"] as! [Any])[1])
        #expect(Self.difference(expected, lastToken.map(Float.init)) <= Self.tolerance)
        let methods = try #require(json["drop_sets_by_method"] as? [[String: Any]])
        #expect(methods.count == 6)  // 3 modules × k = 25%, 50% of 5 layers (1, 3)
        let block = try #require(methods.first { $0["module"] as? String == "block" })
        let sets = try #require(block["methods"] as? [String: [Int]])
        #expect(sets["shortgpt_block_influence"] == sets["llm_drop_cosine"])
        #expect(Set(sets.keys) == ["llm_drop_cosine", "shortgpt_block_influence", "angular_distance",
                                   "angular_distance_last_token"])
        let blocks = try #require(json["best_blocks"] as? [[String: Any]])
        #expect(blocks.map { $0["n"] as? Int } == [1, 2, 3, 4])
        let best = try #require((blocks[1]["metrics"] as? [String: [String: Any]])?["angular_distance_last_token"])
        let start = try #require(best["start"] as? Int)
        #expect(best["end"] as? Int == start + 2 && best["layers"] as? [Int] == [start, start + 1])
        // The store holds the same values under the documented names.
        let stored = try ScoreFile.read(from: scratch.path("s.h5"))
        #expect(Self.difference(expected, stored.rows[0].angularDistance!.blockGapLastToken[1]) <= Self.tolerance)

        let table = try DroptraceCommand.run([
            "score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--output", scratch.path("t.h5").path,
        ])
        #expect(table.status == 0 && table.stdout.contains("0-based") && table.stdout.contains("ShortGPT"))
    }
}

extension PeerMetricReferenceTests {
    @Test func consecutiveDropsFollowTheChosenMetric() throws {
        let checkpoint = try Checkpoint(directory: FixtureFiles.model("llama-f32"))
        let scores = try ImportanceScorer(model: try ModelRegistry.load(checkpoint))
            .score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
        let expected = try #require(Self.reference["llama-f32"])
        for (metric, key) in [(BlockGapMetric.angularDistance, "block_gap_angular_distance"),
                              (.angularDistanceLastToken, "block_gap_angular_distance_last_token")] {
            let matrix = (expected[key] as! [Any]).map(Self.vector)
            for count in 1..<scores.layerCount {
                let start = try #require(metric.best(in: matrix, size: count)?.start)
                let plan = try DropSelection.consecutiveBlocks(count: count, scores: scores, metric: metric)
                #expect(plan.blocks == Set(start..<(start + count)), "\(metric) n=\(count)")
            }
        }
        // Scores rebuilt from means alone carry no angular distances to choose by.
        let meansOnly = ModuleScores(attention: scores.attention, mlp: scores.mlp, block: scores.block,
                                     blockGap: scores.blockGap)
        #expect(throws: DroptraceError.self) {
            try DropSelection.consecutiveBlocks(count: 2, scores: meansOnly, metric: .angularDistance)
        }
        let result = try DroptraceCommand.run([
            "drop", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--target", "block", "--count", "2", "--block-metric", "angular_distance",
        ])
        #expect(result.status == 64 && result.stderr.contains("--block-metric applies to --target block --consecutive only"))  // invalid usage
    }
}

extension PeerMetricReferenceTests {
    @Test func calibrationShardsScoredApartGiveTheSameAngularDistances() throws {
        let checkpoint = try Checkpoint(directory: FixtureFiles.model("gpt_neox-f32"))
        let scorer = ImportanceScorer(model: try ModelRegistry.load(checkpoint))
        let sequences = FixtureFiles.jsonlSequences()
        let whole = try stored("gpt_neox-f32")
        let shards = try [sequences[..<1], sequences[1...]].map {
            try scorer.score(Array($0), calibrationPath: "fixture")
        }
        let merged = try #require(
            CheckpointRow(scores: try ModuleScores.merged(shards), name: "m", step: -1, tokens: -1).angularDistance)
        let pairs: [([Float], [Float])] = [
            (whole.attention, merged.attention), (whole.mlpLastToken, merged.mlpLastToken),
            (whole.block, merged.block), (whole.attentionLastToken, merged.attentionLastToken),
        ] + zip(whole.blockGap + whole.blockGapLastToken, merged.blockGap + merged.blockGapLastToken).map { ($0, $1) }
        for (a, b) in pairs {
            #expect(Self.difference(a.map(Double.init), b) <= 1e-7)
        }
    }
}

import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Pipeline
import Scoring
import ScoreStore
import Testing

/// The float64 per-sequence sums every score is derived from: consistent
/// with the means, mergeable across calibration shards, stored and read back.
@Suite struct SequenceSumsTests {
    static func scorer(_ model: String = "llama-f32") throws -> ImportanceScorer {
        ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(model))))
    }

    /// |a − b| ≤ tolerance · max(|a|, |b|, 1e-300), NaN only where both are.
    static func close(_ a: [Double], _ b: [Double], relative tolerance: Double = 1e-9) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { x, y in
            (x.isNaN && y.isNaN) || abs(x - y) <= tolerance * max(abs(x), abs(y), 1e-300)
        }
    }

    static func close(_ a: [[Double]], _ b: [[Double]], relative tolerance: Double = 1e-9) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { close($0, $1, relative: tolerance) }
    }

    /// How far scores of the same sequences computed in other batches may
    /// differ: a GEMM's summation order may follow the batch's row count
    /// (AVX2 kernels do; AVX-512 ones did not), moving float32 activations by
    /// a few ulps (~1e-7 relative) and the float64 sums of their cosines by
    /// ~1e-8 (1.5e-8 seen on a Zen 3). A merging error is orders larger.
    static let batchTolerance = 1e-6

    static func close(_ a: ModuleScores, _ b: ModuleScores, relative t: Double = batchTolerance) -> Bool {
        close(a.attention, b.attention, relative: t) && close(a.mlp, b.mlp, relative: t) && close(a.block, b.block, relative: t)
            && close(a.blockGap, b.blockGap, relative: t)
    }

    static func close(_ a: SequenceSums, _ b: SequenceSums, relative t: Double = batchTolerance) -> Bool {
        a.tokens == b.tokens
            && zip(a.modules, b.modules).allSatisfy { x, y in
                close(x.sums.cosineSum, y.sums.cosineSum, relative: t)
                    && close(x.sums.angularDistanceSum, y.sums.angularDistanceSum, relative: t)
                    && close(x.sums.lastTokenCosine, y.sums.lastTokenCosine, relative: t)
            }
            && close(a.blockGap.cosineSum, b.blockGap.cosineSum, relative: t)
            && close(a.blockGap.angularDistanceSum, b.blockGap.angularDistanceSum, relative: t)
            && close(a.blockGap.lastTokenAngularDistanceSum, b.blockGap.lastTokenAngularDistanceSum, relative: t)
    }

    @Test func meansAreDerivedFromTheSums() throws {
        let sequences = FixtureFiles.jsonlSequences()
        let scores = try Self.scorer().score(sequences, calibrationPath: "fixture")
        let sums = try #require(scores.sums)
        #expect(sums.tokens == sequences.map(\.count))
        #expect(sums.layerCount == scores.layerCount)
        let total = Double(sequences.joined().count)
        for layer in 0..<scores.layerCount {
            let cosine = sums.attention.cosineSum.reduce(0.0) { $0 + $1[layer] }
            #expect(abs((1 - cosine / total) - scores.attention[layer]) <= 1e-12)
        }
        #expect(ModuleScores(sums: sums) == scores)
        // The angular distance lies in [0, 1] per token.
        for (_, module) in sums.modules {
            for (sequence, row) in module.angularDistanceSum.enumerated() {
                #expect(row.allSatisfy { $0 >= 0 && $0 <= Double(sums.tokens[sequence]) })
            }
        }
    }

    /// The gap h_i → h_{i+1} is block i itself: two code paths, one number.
    @Test func gapOfOneIsTheBlock() throws {
        let sums = try #require(try Self.scorer().score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture").sums)
        for layer in 0..<sums.layerCount {
            let cosine = sums.block.cosineSum.reduce(0.0) { $0 + $1[layer] }
            let angular = sums.block.angularDistanceSum.reduce(0.0) { $0 + $1[layer] }
            let last = sums.block.lastTokenCosine.reduce(0.0) { $0 + SequenceSums.angularDistance($1[layer]) }
            #expect(Self.close([sums.blockGap.cosineSum[layer][0]], [cosine], relative: 1e-6))
            #expect(Self.close([sums.blockGap.angularDistanceSum[layer][0]], [angular], relative: 1e-6))
            #expect(Self.close([sums.blockGap.lastTokenAngularDistanceSum[layer][0]], [last], relative: 1e-6))
        }
    }

    /// Shards of contiguous sequences, scored apart and merged in order,
    /// give the one-pass scores.
    @Test(arguments: ["llama-f32", "gpt_neox-f32"])
    func mergedShardsEqualOnePass(model: String) throws {
        let scorer = try Self.scorer(model)
        let sequences = FixtureFiles.jsonlSequences()
        let whole = try scorer.score(sequences, calibrationPath: "fixture")
        for shards in 1...3 {
            let parts = try (0..<shards).map { shard in
                let range = (shard * sequences.count / shards)..<((shard + 1) * sequences.count / shards)
                return try scorer.score(Array(sequences[range]), calibrationPath: "fixture")
            }
            let merged = try ModuleScores.merged(parts)
            #expect(Self.close(merged, whole), "\(model), \(shards) shards")
            #expect(Self.close(try #require(merged.sums), try #require(whole.sums)), "\(model), \(shards) shards")
        }
    }

    @Test func mergingRefusesMismatchedParts() throws {
        let one = SequenceSums(tokens: [3], layers: 2)
        #expect(throws: DroptraceError.self) { try SequenceSums.merged([one, SequenceSums(tokens: [3], layers: 3)]) }
        #expect(throws: DroptraceError.self) { try SequenceSums.merged([]) }
        #expect(throws: DroptraceError.self) { try SequenceSums.merged([SequenceSums(tokens: [-1], layers: 2)]) }
        #expect(throws: DroptraceError.self) { try SequenceSums.merged([SequenceSums(tokens: [Int.max], layers: 2), one]) }
        #expect(throws: DroptraceError.self) {
            try ModuleScores.merged([ModuleScores(attention: [0], mlp: [0], block: [0], blockGap: [[0]])])
        }
    }

    @Test func sumsRoundTripThroughTheStore() throws {
        let scratch = try ScratchDirectory()
        let scores = try Self.scorer().score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
        let metadata = ScoreFileMetadata(
            modelType: "llama", numLayers: scores.layerCount, calibrationSHA256: String(repeating: "0123456789abcdef", count: 4),
            calibrationTokens: Int64(try #require(scores.sums).tokens.reduce(0, +)), droptraceVersion: "t")
        let withSums = CheckpointRow(scores: scores, name: "step1", step: 1, tokens: -1)
        // A row stored before sums existed stays without them.
        var without = CheckpointRow(scores: scores, name: "step2", step: 2, tokens: -1)
        without.sums = nil
        let file = ScoreFile(metadata: metadata, rows: [withSums, without])
        let url = scratch.path("s.h5")
        try file.write(to: url)
        let read = try ScoreFile.read(from: url)
        #expect(read == file)
        #expect(read.rows[0].sums == scores.sums)
        #expect(read.rows[1].sums == nil)

        let h5 = try HDF5File.open(at: url)
        let tokens = try h5.dataset(ScoreFileLayout.PerSequence.tokens)
        #expect(tokens.shape == [2, FixtureFiles.jsonlSequences().count])
        let cosine = try h5.dataset(ScoreFileLayout.PerSequence.cosineSum("attention"))
        #expect(cosine.elementType == .float(bits: 64))
        #expect(try cosine.storageOptions().deflateLevel != nil)
        try h5.close()

        // A store whose rows all predate sums has no /per_sequence at all.
        let old = ScoreFile(metadata: metadata, rows: [without])
        try old.write(to: url)
        let plain = try HDF5File.open(at: url)
        #expect(try plain.kind(of: "per_sequence") == nil)
        try plain.close()
    }

    @Test func damagedSumsAreRefusedWithOneLine() throws {
        let scratch = try ScratchDirectory()
        let scores = try Self.scorer().score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
        let metadata = ScoreFileMetadata(
            modelType: "llama", numLayers: scores.layerCount, calibrationSHA256: String(repeating: "0123456789abcdef", count: 4),
            calibrationTokens: Int64(try #require(scores.sums).tokens.reduce(0, +)), droptraceVersion: "t")
        let url = scratch.path("s.h5")
        let sequences = FixtureFiles.jsonlSequences().count
        let edits: [(String, (HDF5File) throws -> Void)] = [
            ("negative", { file in
                try file.remove(ScoreFileLayout.PerSequence.tokens)
                try file.createDataset(ScoreFileLayout.PerSequence.tokens, values: [Int64](repeating: -5, count: sequences), shape: [1, sequences])
            }),
            ("shape", { file in
                try file.remove(ScoreFileLayout.PerSequence.lastTokenCosine("mlp"))
                try file.createDataset(ScoreFileLayout.PerSequence.lastTokenCosine("mlp"), values: [0.0], shape: [1, 1, 1])
            }),
            ("missing", { file in try file.remove(ScoreFileLayout.PerSequence.blockGapAngularDistanceSum) }),
            // Values no pass gives (by fuzzing: a last-token cosine of 5, a negative angular distance sum, merged
            // by `slurm finalize` and shown in the report).
            ("which cosines in [−1, 1] summed over 1 token cannot give", { file in
                let path = ScoreFileLayout.PerSequence.lastTokenCosine("attention")
                var values = try file.dataset(path).read(as: Double.self)
                values[0] = 5
                try file.remove(path)
                try file.createDataset(path, values: values, shape: [1, sequences, 5])
            }),
            ("which angular distances in [0, 1] summed over", { file in
                let path = ScoreFileLayout.PerSequence.angularDistanceSum("block")
                var values = try file.dataset(path).read(as: Double.self)
                values[3] = -3
                try file.remove(path)
                try file.createDataset(path, values: values, shape: [1, sequences, 5])
            }),
            // Angular distances that are not the means of their sums, as cosine importances are checked.
            ("/scores/mlp_angular_distance of checkpoint 'step1', layer 2, is 0.777, but its per-sequence sums", { file in
                let path = ScoreFileLayout.AngularDistance.mlp
                var values = try file.dataset(path).read(as: Float.self)
                values[2] = 0.777
                try file.remove(path)
                try file.createDataset(path, values: values, shape: [1, 5])
            }),
        ]
        for (word, edit) in edits {
            try ScoreFile(metadata: metadata, rows: [CheckpointRow(scores: scores, name: "step1", step: 1, tokens: -1)]).write(to: url)
            let file = try HDF5File.open(at: url, writable: true)
            try edit(file)
            try file.close()
            let error = #expect(throws: DroptraceError.self) { try ScoreFile.read(from: url) }
            #expect(error?.path == url.path)
            #expect(error?.description.contains("\n") == false)
            #expect(error?.description.contains(word) == true, "\(String(describing: error))")
        }
    }
}

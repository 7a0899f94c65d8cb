import Analysis
import DroptraceSupport
import Foundation
import Reporting
import ScoreStore
import Testing

/// The peers' metrics next to LLM-Drop's: stored angular distances, the
/// drop sets each method picks, the best contiguous block per size.
@Suite struct PeerMetricsTests {
    /// 4 layers. Cosine importance ranks attention [3, 1, 2, 0]; the angular
    /// distance over tokens agrees, the last-token one ranks [0, 3, 1, 2].
    static func row(name: String = "step100", step: Int64 = 100, angular: Bool = true) -> CheckpointRow {
        let layers = 4
        let block: [Float] = [0.1, 0.3, 0.2, 0.1]  // layers 0 and 3 tie
        // gap[i][n − 1]: mean cos(h_i, h_i+n), NaN past the last layer, n = 1 the block's own pair;
        // cosine favours [1, 3) for n = 2, the distances [2, 4).
        var gap = [[Float]](repeating: [Float](repeating: .nan, count: layers), count: layers)
        var distance = gap, lastToken = gap
        for i in 0..<layers {
            for n in 1...(layers - i) {
                gap[i][n - 1] = 0.9 - 0.1 * Float(n) + (i == 1 && n == 2 ? 0.05 : 0)
                distance[i][n - 1] = 0.05 * Float(n) + (i == 2 && n == 2 ? -0.04 : 0) + 0.001 * Float(i)
                lastToken[i][n - 1] = distance[i][n - 1]
            }
            (gap[i][0], distance[i][0], lastToken[i][0]) = (1 - block[i], block[i], block[i])
        }
        let scores = AngularDistanceScores(
            attention: [0.30, 0.10, 0.20, 0.05], mlp: [0.4, 0.3, 0.2, 0.1], block: block,
            attentionLastToken: [0.01, 0.10, 0.20, 0.05], mlpLastToken: [0.4, 0.3, 0.2, 0.1],
            blockLastToken: block, blockGap: distance, blockGapLastToken: lastToken)
        return CheckpointRow(
            name: name, step: step, attention: [0.4, 0.2, 0.3, 0.1], mlp: [0.4, 0.3, 0.2, 0.1],
            block: block, blockGap: gap, angularDistance: angular ? scores : nil)
    }

    static func file(_ rows: [CheckpointRow]) -> ScoreFile {
        ScoreFile(
            metadata: ScoreFileMetadata(
                modelType: "llama", numLayers: 4, calibrationSHA256: String(repeating: "0", count: 64),
                calibrationTokens: 160, droptraceVersion: "test"),
            rows: rows)
    }

    @Test func angularDistancesRoundTripThroughTheStore() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("scores.h5")
        let written = Self.file([Self.row(name: "old", step: 1, angular: false), Self.row()])
        try written.write(to: url)
        let read = try ScoreFile.read(from: url)
        #expect(read == written)
        // A row stored without them reads back as without them, not as zeros.
        #expect(read.rows[0].angularDistance == nil)
        #expect(read.rows[1].angularDistance?.blockGapLastToken[2][1] == Self.row().angularDistance?.blockGapLastToken[2][1])
    }

    @Test func aStoreWithoutAngularDistancesHasNoneOfTheirDatasets() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("scores.h5")
        try Self.file([Self.row(angular: false)]).write(to: url)
        let file = try HDF5File.open(at: url)
        defer { try? file.close() }
        #expect(try file.kind(of: ScoreFileLayout.AngularDistance.attention) == nil)
        #expect(try ScoreFile.read(from: url).rows[0].angularDistance == nil)
    }

    @Test func aStoreMissingOneAngularDatasetIsRefusedNamingIt() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("scores.h5")
        try Self.file([Self.row()]).write(to: url)
        do {
            let file = try HDF5File.open(at: url, writable: true)
            try file.remove(ScoreFileLayout.AngularDistance.blockGapLastToken)
            try file.close()
        }
        #expect {
            try ScoreFile.read(from: url)
        } throws: { error in
            "\(error)".contains("similarity/block_gap_angular_distance_last_token")
        }
    }

    @Test func aWrongShapeIsRefusedBeforeWriting() throws {
        let scratch = try ScratchDirectory()
        var row = Self.row()
        row.angularDistance?.mlpLastToken = [0.1]
        #expect {
            try Self.file([row]).write(to: scratch.path("scores.h5"))
        } throws: { error in
            "\(error)".contains("mlp_angular_distance_last_token has 1 entries, expected 4")
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.path("scores.h5").path))
    }

    @Test func eachMethodDropsItsLowestLayersAndDisagreementsAreNamed() throws {
        let comparison = MethodDropSets(row: Self.row(), dropK: [2])
        let attention = try #require(comparison.entries.first { $0.module == .attention })
        #expect(attention.sets.map(\.method) == [.llmDropCosine, .angularDistance, .angularDistanceLastToken])
        #expect(attention.sets.map(\.layers) == [[1, 3], [1, 3], [0, 3]])
        #expect(attention.disagreement == [0, 1])
        let block = try #require(comparison.entries.first { $0.module == .block })
        // ShortGPT's Block Influence is LLM-Drop's block importance.
        #expect(block.sets.map(\.method) == RedundancyMethod.allCases)
        #expect(block.sets[0].layers == block.sets[1].layers)
        #expect(block.disagreement.isEmpty)
    }

    @Test func withoutAngularDistancesOnlyTheCosineMethodsRemain() {
        let comparison = MethodDropSets(row: Self.row(angular: false), dropK: [1, 2])
        #expect(comparison.entries.count == 6)
        #expect(comparison.entries.allSatisfy { entry in
            entry.sets.allSatisfy { [.llmDropCosine, .shortGPTBlockInfluence].contains($0.method) }
        })
        let table = PeerMetricTables.dropSets(comparison)
        #expect(table.contains("not recorded"))
    }

    @Test func bestBlockPerSizeByEveryMetricZeroBased() throws {
        let table = BlockGapTable(row: Self.row())
        #expect(table.metrics == BlockGapMetric.allCases)
        #expect(table.rows.map(\.size) == [1, 2, 3])
        let two = try #require(table.rows.first { $0.size == 2 })
        #expect(two.choices.map(\.block.start) == [1, 2, 2])
        #expect(!two.agrees)
        #expect(two.choices[0].block == BlockRange(start: 1, size: 2))
        #expect(abs(two.choices[0].value - 0.75) < 1e-6)
        // Ties go to the lower start, as numpy's argmin and DropSelection pick.
        let one = try #require(table.rows.first { $0.size == 1 })
        #expect(one.choices[0].block.start == 0)
        let markdown = PeerMetricTables.blockGaps(table)
        #expect(markdown.contains("0-based, inclusive"))
        #expect(markdown.contains("| 2 | 1–2 | 0.7500 |"))
    }

    @Test func bestBlockSkipsUndefinedCellsAndRefusesImpossibleSizes() {
        let nan = Float.nan
        let matrix: [[Float]] = [[nan, 0.2], [0.1, nan]]
        #expect(BlockGapTable.best(matrix, size: 1, metric: .angularDistance)?.block.start == 1)
        #expect(BlockGapTable.best(matrix, size: 0, metric: .cosine) == nil)
        #expect(BlockGapTable.best(matrix, size: 3, metric: .cosine) == nil)
        #expect(BlockGapTable.best([[nan]], size: 1, metric: .cosine) == nil)
        // A one-layer model has no block to drop but the whole model.
        var single = Self.row(angular: false)
        single.attention = [0.1]
        single.blockGap = [[0.9]]
        #expect(BlockGapTable(row: single).rows.isEmpty)
    }

    @Test func theReportShowsThePeersMetricsAndTheNGapHeatmaps() throws {
        let scratch = try ScratchDirectory()
        let rows = [Self.row(name: "step10", step: 10), Self.row(name: "step100", step: 100)]
        let analysis = try SeriesAnalysis(rows: rows)
        let writer = try ReportWriter(scoreFile: Self.file(rows), analysis: analysis)
        try writer.write(to: scratch.url)
        let markdown = try String(contentsOf: scratch.path("report.md"), encoding: .utf8)
        #expect(markdown.contains("## The peers' metrics"))
        #expect(markdown.contains("ShortGPT's Block Influence"))
        #expect(markdown.contains("| 2 | 1–2 | 0.7500 | 2–3 |"))
        for metric in BlockGapMetric.allCases {
            let name = "figures/block_gap_\(metric.rawValue).svg"
            #expect(markdown.contains("](\(name))"))
            let svg = try String(contentsOf: scratch.path(name), encoding: .utf8)
            #expect(svg.contains("0-based"))
        }
        // A store without angular distances says so and draws only the cosine matrix.
        let old = [Self.row(angular: false)]
        let oldMarkdown = try ReportWriter(scoreFile: Self.file(old), analysis: try SeriesAnalysis(rows: old)).markdown()
        #expect(oldMarkdown.contains("holds no angular distances"))
        #expect(oldMarkdown.contains("block_gap_cosine.svg") && !oldMarkdown.contains("block_gap_angular_distance.svg"))
    }
}

import Foundation
import Testing
import Analysis
import CheckpointIO
import DroptraceSupport
import Reporting
import ScoreStore
import Scoring

/// The series analysis of modules that are not in every layer: Nemotron-H's
/// layers each hold one module (attention, a Mamba-2 mixer or an MLP), and a
/// checkpoint's own drop lists remove modules. A layer whose module is scored
/// at no checkpoint is left out of that module's means, correlations, drop-k
/// sets and the verdict, which were all undefined before.
@Suite struct ModuleLayersAnalysisTests {
    static let layers = 8
    static let attentionLayers = [1, 4, 7]
    static let mlpLayers = [0, 2, 3, 5, 6]

    /// Per-sequence sums of `checkpoints` checkpoints of an 8-layer model
    /// built as Nemotron-H builds one: attention in layers 1, 4 and 7, an MLP
    /// in the others (their scores NaN elsewhere, as a pass records a module a
    /// layer lacks), a block everywhere. Attention is far less important than
    /// MLP and ranks 7 < 4 < 1 throughout: an inherent run.
    static func rows(checkpoints: Int = 5, sequences: Int = 12) -> [CheckpointRow] {
        var synthetic = SyntheticSums(seed: 7)
        let attentionCosine = [0.0, 0.95, 0, 0, 0.97, 0, 0, 0.99]
        let mlpCosine = (0..<layers).map { 0.6 + 0.02 * Double($0) }
        return (0..<checkpoints).map { index in
            var sums = synthetic.checkpoint(
                truth: [.attention: attentionCosine, .mlp: mlpCosine, .block: mlpCosine],
                sequences: sequences, noise: 0.002)
            for (module, present) in [(ModuleKind.attention, attentionLayers), (.mlp, mlpLayers)] {
                var cosine = module.sums(in: sums).cosineSum.flatMap { $0 }
                for sequence in 0..<sequences {
                    for layer in 0..<layers where !present.contains(layer) { cosine[sequence * layers + layer] = .nan }
                }
                sums.set(module, cosineSum: cosine)
            }
            // Angular distances as a pass records them beside the cosines (defined where they are), so every
            // method ranks the same layers.
            for module in ModuleKind.allCases {
                let cosine = module.sums(in: sums).cosineSum
                let angular = cosine.enumerated().map { sequence, row in
                    row.map { acos(min(1, max(-1, $0 / Double(sums.tokens[sequence])))) / .pi * Double(sums.tokens[sequence]) }
                }
                let last = cosine.enumerated().map { sequence, row in row.map { $0 / Double(sums.tokens[sequence]) } }
                switch module {
                case .attention: (sums.attention.angularDistanceSum, sums.attention.lastTokenCosine) = (angular, last)
                case .mlp: (sums.mlp.angularDistanceSum, sums.mlp.lastTokenCosine) = (angular, last)
                case .block: (sums.block.angularDistanceSum, sums.block.lastTokenCosine) = (angular, last)
                }
            }
            let step = Int64(index) * 1000
            return CheckpointRow(scores: ModuleScores(sums: sums), name: "step\(step)", step: step, tokens: step * 4096)
        }
    }

    @Test func eachModuleIsAnalysedOnTheLayersItIsIn() throws {
        let rows = Self.rows()
        let analysis = try SeriesAnalysis(rows: rows)
        #expect(analysis.attention.layers == Self.attentionLayers)
        #expect(analysis.mlp.layers == Self.mlpLayers)
        #expect(analysis.block.layers == Array(0..<Self.layers))
        // 25% and 50% of each module's own layers: attention 3 → 1, 2; MLP 5 → 1, 3; block 8 → 2, 4.
        #expect(analysis.dropK == [1, 2, 3, 4])
        #expect(analysis.attention.dropSets.keys.sorted() == [1, 2, 3])
        #expect(analysis.mlp.dropSets.keys.sorted() == [1, 2, 3, 4])
        #expect(analysis.attentionDropK == [1, 2, 3])
        for index in rows.indices {
            #expect(analysis.attention.dropSet(checkpoint: index, k: 2) == [4, 7])
            #expect(analysis.mlp.dropSet(checkpoint: index, k: 2).allSatisfy(Self.mlpLayers.contains))
            let attention = Self.attentionLayers.map { Double(rows[index].attention[$0]) }
            #expect(abs(analysis.attention.meanImportance[index] - attention.reduce(0, +) / 3) < 1e-12)
            #expect(analysis.attention.spearmanFinal[index] == 1)
            #expect(analysis.mlp.meanImportance[index].isFinite)
        }
        // The verdict judges the drop-2 set of the 3 attention layers, and every criterion is measured.
        #expect(analysis.verdict.k == 2)
        #expect(analysis.verdict.outcome == .inherent, "\(analysis.verdict.reason)")
        #expect(analysis.verdict.criteria.allSatisfy { $0.status == .pass })
        let uncertainty = try #require(analysis.uncertainty)
        #expect(uncertainty.attention.dropProbability.keys.sorted() == [1, 2, 3])
        #expect(uncertainty.attention.meanImportance.allSatisfy { $0.low.isFinite && $0.high.isFinite })
        #expect(uncertainty.attention.spearmanFinal.allSatisfy { $0.low.isFinite })
    }

    @Test func theAnalysisRoundTripsThroughTheStoreWithItsLayers() throws {
        let rows = Self.rows()
        let analysis = try SeriesAnalysis(rows: rows)
        let scratch = try ScratchDirectory()
        let url = scratch.path("layers.h5")
        let scores = AnalysisFixtures.scoreFile(rows)
        try scores.write(to: url) { file in try analysis.write(into: file) }
        do {
            let file = try HDF5File.open(at: url)
            defer { try? file.close() }
            #expect(try SeriesAnalysis.read(from: file, rows: scores.rows) == analysis)
            try analysis.requireRecomputed(from: scores.rows, path: url.path)
            let group = try file.group(AnalysisLayout.moduleGroup(.attention))
            #expect(try group.numericAttribute(AnalysisLayout.Attribute.moduleLayers, as: Int64.self) == [1, 4, 7])
            #expect(try !file.exists(AnalysisLayout.moduleGroup(.attention) + "/" + AnalysisLayout.dropSets(k: 4)))
            #expect(try file.exists(AnalysisLayout.moduleGroup(.mlp) + "/" + AnalysisLayout.dropSets(k: 4)))
        }
        // An attribute naming no list of layers is refused naming it; without it (a file written before it
        // existed) the module is in every layer, which these rows contradict.
        for edit in [[Int64](), [4, 1], [1, 4, 8]] {
            try Self.editAttention(url) { group in
                try group.setAttribute(AnalysisLayout.Attribute.moduleLayers, edit)
            }
            let file = try HDF5File.open(at: url)
            defer { try? file.close() }
            let error = try #require(throws: DroptraceError.self) { try SeriesAnalysis.read(from: file) }
            #expect(error.description.contains("attribute layers"), "\(error)")
        }
        try Self.editAttention(url) { group in try group.removeAttribute(AnalysisLayout.Attribute.moduleLayers) }
        let file = try HDF5File.open(at: url)
        defer { try? file.close() }
        #expect(throws: DroptraceError.self) { try SeriesAnalysis.read(from: file, rows: scores.rows) }
    }

    static func editAttention(_ url: URL, _ change: (HDF5Group) throws -> Void) throws {
        let file = try HDF5File.open(at: url, writable: true)
        defer { try? file.close() }
        try change(try file.group(AnalysisLayout.moduleGroup(.attention)))
    }

    @Test func attentionDroppedFromALayerAtEveryCheckpointLeavesTheVerdictToTheOthers() throws {
        // As LLM-Drop's exports load: the configured drop list removes layer 2's attention from every checkpoint.
        var rows = AnalysisFixtures.clearlyInherentRows()
        for index in rows.indices { rows[index].attention[2] = .nan }
        let analysis = try SeriesAnalysis(rows: rows)
        #expect(analysis.attention.layers == [0, 1, 3, 4])
        #expect(analysis.verdict.k == 2)
        #expect(analysis.verdict.outcome == .inherent, "\(analysis.verdict.reason)")
        #expect(analysis.attention.dropSet(checkpoint: rows.count - 1, k: 2) == [3, 4])
        // Undefined at one checkpoint only, the layer is still attention's: that checkpoint's mean is undefined.
        var partly = AnalysisFixtures.clearlyInherentRows()
        partly[1].attention[2] = .nan
        let partial = try SeriesAnalysis(rows: partly)
        #expect(partial.attention.layers == Array(0..<5))
        #expect(partial.attention.meanImportance[1].isNaN && partial.attention.meanImportance[0].isFinite)
    }

    @Test func attentionInOneLayerIsInconclusive() throws {
        var rows = AnalysisFixtures.clearlyInherentRows()
        for index in rows.indices {
            for layer in [0, 1, 2, 3] { rows[index].attention[layer] = .nan }
        }
        let analysis = try SeriesAnalysis(rows: rows)
        #expect(analysis.verdict.k == 1)
        #expect(analysis.verdict.outcome == .inconclusive)
        #expect(analysis.verdict.reason.contains("Attention is in 1 layer"), "\(analysis.verdict.reason)")
        #expect(analysis.verdict.criteria[1].detail.contains("every layer with attention (1 of 5)"))
    }

    @Test func aCheckpointsMethodDropSetsHoldOnlyScoredLayers() {
        let row = Self.rows(checkpoints: 1)[0]
        #expect(MethodDropSets.defaultDropK(row: row) == [1, 2, 3, 4])
        let sets = MethodDropSets(row: row, dropK: [1, 2, 3, 4])
        let attention = sets.entries.filter { $0.module == .attention }
        #expect(attention.map(\.k) == [1, 2, 3])
        for entry in sets.entries {
            let present = entry.module == .attention ? Self.attentionLayers
                : entry.module == .mlp ? Self.mlpLayers : Array(0..<Self.layers)
            #expect(entry.sets.allSatisfy { $0.layers.count == entry.k && $0.layers.allSatisfy(present.contains) })
        }
    }

    @Test func theReportSaysWhichLayersAModuleIsIn() throws {
        let rows = Self.rows()
        let markdown = try ReportWriter(scoreFile: AnalysisFixtures.scoreFile(rows), analysis: try SeriesAnalysis(rows: rows))
            .markdown()
        #expect(markdown.contains("Attention is in 3 of the 8 layers, so k ≤ 3 for it; MLP is in 5 of the 8 layers"))
        #expect(markdown.contains("| Attention k=3 |") && !markdown.contains("Attention k=4"))
        #expect(markdown.contains("**Verdict: inherent.**"))
    }

    /// `trace` over a Nemotron-H series end to end: its Mamba-2 and
    /// attention layers (0, 2, 4, 6 of the fixture's 8) are attention's, its
    /// MLP and expert layers MLP's, and every criterion of the verdict is
    /// measured on them.
    @Test func aNemotronHTraceJudgesAttentionOnItsOwnLayers() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        for step in [10, 20, 30] { try series.add(step: step, model: "nemotron_h-f32") }
        let output = scratch.path("out")
        let result = try DroptraceCommand.run([
            "trace", series.directory.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path,
            "--threads", "1",
        ])
        try #require(result.status == 0, "\(result.stderr)")
        let url = output.appendingPathComponent("scores.h5")
        let file = try HDF5File.open(at: url)
        defer { try? file.close() }
        let store = try ScoreFile.read(from: url)
        let analysis = try SeriesAnalysis.read(from: file, rows: store.rows)
        #expect(analysis.attention.layers == [0, 2, 4, 6])
        #expect(analysis.mlp.layers == [1, 3, 5, 7])
        #expect(analysis.dropK == [1, 2, 4])
        #expect(analysis.verdict.k == 2)
        #expect(analysis.verdict.criteria.allSatisfy { !$0.value.isNaN }, "\(analysis.verdict.criteria.map(\.detail))")
        #expect(analysis.attention.meanImportance.allSatisfy(\.isFinite) && analysis.mlp.meanImportance.allSatisfy(\.isFinite))
        #expect(analysis.attention.dropSet(checkpoint: 2, k: 2).allSatisfy([0, 2, 4, 6].contains))
        let report = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(report.contains("Attention is in 4 of the 8 layers, so k ≤ 4 for it; MLP is in 4 of the 8 layers"))
    }
}

import Foundation
import Testing
import Analysis
import DroptraceSupport
import ScoreStore

/// Series analysis against values computed by hand; one parent suite so
/// `swift test --filter Analysis` selects exactly these tests.
@Suite struct AnalysisTests {}

// MARK: - Known score sets (shared with ReportTests)

/// Small score sets whose analysis is worked out by hand in the tests.
enum AnalysisFixtures {
    static let steps: [Int64] = [0, 100, 1000, 10000]

    /// 4 checkpoints × 5 layers. Attention rankings (most redundant first):
    ///   c0 [1,3,2,0,4]  c1 [3,1,2,0,4]  c2 [1,3,4,2,0] (layers 1 and 3 tie)  c3 [1,3,4,2,0]
    /// so drop-1 goes {1}, {3}, {1}, {1} (changes and changes back) and
    /// drop-3 goes {1,2,3}, {1,2,3}, {1,3,4}, {1,3,4}.
    static let attention: [[Float]] = [
        [0.40, 0.10, 0.30, 0.20, 0.50],
        [0.40, 0.20, 0.30, 0.10, 0.50],
        [0.50, 0.10, 0.30, 0.10, 0.20],
        [0.60, 0.05, 0.30, 0.08, 0.25],
    ]
    /// MLP ranking [4,3,2,1,0] at every checkpoint, and always more important
    /// than attention on average.
    static let mlp: [[Float]] = (0..<4).map { index in
        (0..<5).map { layer in 0.9 - 0.1 * Float(layer) - 0.01 * Float(index) }
    }
    /// Block: c0 is constant (no rank correlation defined), then [0,1,2,3,4].
    static let block: [[Float]] = [
        [0.7, 0.7, 0.7, 0.7, 0.7],
        [0.5, 0.6, 0.7, 0.8, 0.9],
        [0.5, 0.6, 0.7, 0.8, 0.9],
        [0.5, 0.6, 0.7, 0.8, 0.9],
    ]

    static var knownRows: [CheckpointRow] {
        rows(attention: attention, mlp: mlp, block: block, steps: steps)
    }

    static func rows(attention: [[Float]], mlp: [[Float]], block: [[Float]], steps: [Int64]) -> [CheckpointRow] {
        steps.indices.map { index in
            CheckpointRow(
                name: "step\(steps[index])", step: steps[index], tokens: steps[index] * 2048,
                attention: attention[index], mlp: mlp[index], block: block[index],
                blockGap: blockGap(agreeingWith: block[index]))
        }
    }

    /// A run where attention is clearly and stably redundant: layers 3 and 4
    /// are always the least important attention layers, and attention sits
    /// far below MLP throughout.
    static func clearlyInherentRows(checkpoints: Int = 6) -> [CheckpointRow] {
        let steps = (0..<checkpoints).map { Int64($0) * 1000 }
        let attention = steps.indices.map { index in
            [0.30, 0.20, 0.10, 0.02, 0.01].map { Float($0) + 0.001 * Float(index) }
        }
        let mlp = steps.indices.map { _ in [Float](arrayLiteral: 0.5, 0.4, 0.45, 0.3, 0.6) }
        return rows(attention: attention, mlp: mlp, block: mlp, steps: steps)
    }

    /// A run where attention is more important than MLP and its ranking
    /// rotates at every checkpoint, so the drop set never settles early.
    static func clearlyNotInherentRows(checkpoints: Int = 6) -> [CheckpointRow] {
        let steps = (0..<checkpoints).map { Int64($0) * 1000 }
        let attention = steps.indices.map { index in
            (0..<5).map { layer in 0.8 + 0.01 * Float((layer + index) % 5) }
        }
        let mlp = steps.indices.map { _ in [Float](arrayLiteral: 0.2, 0.1, 0.15, 0.3, 0.25) }
        return rows(attention: attention, mlp: mlp, block: mlp, steps: steps)
    }

    static func scoreFile(_ rows: [CheckpointRow]) -> ScoreFile {
        ScoreFile(
            metadata: ScoreFileMetadata(
                modelType: "llama", numLayers: rows[0].attention.count,
                calibrationSHA256: String(repeating: "0123456789abcdef", count: 4),
                calibrationTokens: Int64(rows.lazy.compactMap(\.sums).first?.tokens.reduce(0, +) ?? 65_536),
                droptraceVersion: DroptraceVersion.string),
            rows: rows)
    }
}

/// NaN-aware closeness for correlation values.
private func close(_ a: Double, _ b: Double, tolerance: Double = 1e-12) -> Bool {
    (a.isNaN && b.isNaN) || abs(a - b) <= tolerance
}

private func closeAll(_ a: [Double], _ b: [Double], tolerance: Double = 1e-12) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { close($0, $1, tolerance: tolerance) }
}

extension AnalysisTests {
    @Suite struct RankStatisticsTests {
        @Test func rankingSortsAscendingWithTiesToTheLowerLayer() {
            #expect(RankStatistics.ranking([0.2, 0.1, 0.2, 0.1]) == [1, 3, 0, 2])
            #expect(RankStatistics.ranking([0.5, 0.1, 0.3, 0.1, 0.2]) == [1, 3, 4, 2, 0])
            // An undefined score is never proposed for dropping.
            #expect(RankStatistics.ranking([.nan, 0.1, 0.3]) == [1, 2, 0])
        }

        @Test func averageRanksShareTiedPositions() {
            #expect(RankStatistics.averageRanks([0.2, 0.1, 0.2, 0.1]) == [3.5, 1.5, 3.5, 1.5])
            #expect(RankStatistics.averageRanks([0.5, 0.1, 0.3, 0.1, 0.2]) == [5, 1.5, 4, 1.5, 3])
            #expect(RankStatistics.averageRanks([7, 7, 7]) == [2, 2, 2])
        }

        @Test func spearmanWithTiesUsesAverageRanks() {
            // x ranks [5, 1.5, 4, 1.5, 3], y ranks [4, 2, 3, 1, 5]: deviations from 3 are
            // [2, -1.5, 1, -1.5, 0] and [1, -1, 0, -2, 2]; Σdxdy = 6.5, Σdx² = 9.5, Σdy² = 10.
            let rho = RankStatistics.spearman([0.5, 0.1, 0.3, 0.1, 0.2], [0.4, 0.2, 0.3, 0.1, 0.5])
            #expect(close(rho, 6.5 / (9.5 * 10).squareRoot()))
            // Without ties it is 1 − 6Σd²/(n(n²−1)): d = [-1, 0, -1, 0, 2] → 1 − 36/120.
            #expect(close(RankStatistics.spearman([4, 1, 3, 2, 5], [5, 1, 4, 2, 3]), 0.7))
            #expect(close(RankStatistics.spearman([1, 2, 3], [30, 20, 10]), -1))
        }

        @Test func kendallTauBCorrectsForTies() {
            // 10 pairs: 7 concordant, 2 discordant, 1 tied in x only → 5 / √(9 · 10).
            let tau = RankStatistics.kendallTauB([0.5, 0.1, 0.3, 0.1, 0.2], [0.4, 0.2, 0.3, 0.1, 0.5])
            #expect(close(tau, 5 / 90.0.squareRoot()))
            // No ties: 8 concordant, 2 discordant → 0.6.
            #expect(close(RankStatistics.kendallTauB([4, 1, 3, 2, 5], [5, 1, 4, 2, 3]), 0.6))
            // Ties on both sides, one pair tied in both: x = [1,1,2], y = [1,1,3]
            // → n1 = n2 = 1, 2 concordant → 2 / √(2 · 2) = 1.
            #expect(close(RankStatistics.kendallTauB([1, 1, 2], [1, 1, 3]), 1))
            let x: [Double] = [1, 1, 2, 3], y: [Double] = [1, 2, 2, 1]
            // Ties on different pairs: (0,1) tied in x; (0,2) C; (0,3) and (1,2) tied in y;
            // (1,3) D; (2,3) D
            // → (1 − 2) / √((6 − 1)(6 − 2)) = −1/√20.
            #expect(close(RankStatistics.kendallTauB(x, y), -1 / 20.0.squareRoot()))
        }

        @Test func correlationsAreUndefinedForConstantOrTooShortVectors() {
            #expect(RankStatistics.spearman([1, 1, 1], [1, 2, 3]).isNaN)
            #expect(RankStatistics.kendallTauB([1, 2, 3], [4, 4, 4]).isNaN)
            #expect(RankStatistics.spearman([1], [1]).isNaN)
            #expect(RankStatistics.kendallTauB([1, 2], [1]).isNaN)
            #expect(RankStatistics.spearman([1, .nan, 3], [1, 2, 3]).isNaN)
        }
    }

    @Suite struct DropSetTests {
        @Test func defaultDropKIsAQuarterAndAHalfRounded() {
            #expect(DropSets.defaultDropK(layers: 5) == [1, 3])    // 1.25 → 1, 2.5 → 3
            #expect(DropSets.defaultDropK(layers: 4) == [1, 2])
            #expect(DropSets.defaultDropK(layers: 6) == [2, 3])    // 1.5 → 2
            #expect(DropSets.defaultDropK(layers: 32) == [8, 16])
            #expect(DropSets.defaultDropK(layers: 2) == [1])       // deduplicated
            #expect(DropSets.defaultDropK(layers: 1) == [1])       // at least 1
            #expect(DropSets.defaultDropK(layers: 24) == [6, 12])
            #expect(DropSets.defaultDropK(moduleLayers: [3, 5, 8]) == [1, 2, 3, 4])
        }

        @Test func dropSetIsTheKMostRedundantSortedByLayer() {
            #expect(DropSets.dropSet(ranking: [3, 1, 2, 0, 4], k: 3) == [1, 2, 3])
            #expect(DropSets.dropSet(ranking: [3, 1, 2, 0, 4], k: 1) == [3])
        }

        @Test func jaccardIsIntersectionOverUnion() {
            #expect(DropSets.jaccard([1, 2, 3], [1, 3, 4]) == 0.5)
            #expect(DropSets.jaccard([1], [3]) == 0)
            #expect(DropSets.jaccard([2, 1], [1, 2]) == 1)
            #expect(DropSets.jaccard([], []) == 1)
        }

        @Test func stabilisationNeedsEveryLaterSetToMatch() {
            #expect(DropSets.stabilisationIndex([[1], [3], [1], [1]]) == 2)  // changes and changes back
            #expect(DropSets.stabilisationIndex([[1, 2], [1, 2], [2, 1]]) == 0)
            #expect(DropSets.stabilisationIndex([[1], [2], [3]]) == 2)
            #expect(DropSets.stabilisationIndex([[5]]) == 0)
            #expect(DropSets.stabilisationIndex([]) == nil)
        }
    }

    @Suite struct SeriesTests {
        let analysis = try! SeriesAnalysis(rows: AnalysisFixtures.knownRows)

        @Test func rankingsAndDropSets() {
            #expect(analysis.dropK == [1, 3])
            #expect(analysis.attention.rankings == [[1, 3, 2, 0, 4], [3, 1, 2, 0, 4], [1, 3, 4, 2, 0], [1, 3, 4, 2, 0]])
            #expect(analysis.attention.dropSets[1] == [[1], [3], [1], [1]])
            #expect(analysis.attention.dropSets[3] == [[1, 2, 3], [1, 2, 3], [1, 3, 4], [1, 3, 4]])
            #expect(analysis.mlp.dropSets[3] == Array(repeating: [2, 3, 4], count: 4))
            // A constant vector ranks by layer index.
            #expect(analysis.block.rankings[0] == [0, 1, 2, 3, 4])
            #expect(analysis.attention.dropSet(checkpoint: 1, k: 3) == [1, 2, 3])
        }

        @Test func correlationsWithTheFinalAndThePreviousCheckpoint() {
            let attention = analysis.attention
            // c0 vs c3: 0.7 / 0.6 (no ties); c1 vs c3: ranks [4,2,3,1,5] vs [5,1,4,2,3]
            // → d = [-1,1,-1,-1,2], Σd² = 8 → 1 − 48/120 = 0.6, and 7 C / 3 D → 0.4;
            // c2 vs c3: Σdxdy = 9.5 over √(9.5 · 10), and 9 C with one x tie → 9/√90.
            #expect(closeAll(attention.spearmanFinal, [0.7, 0.6, 9.5 / 95.0.squareRoot(), 1]))
            #expect(closeAll(attention.kendallFinal, [0.6, 0.4, 9 / 90.0.squareRoot(), 1]))
            // c1 vs c0 swaps layers 1 and 3 (adjacent ranks): 1 − 12/120 and 8/10;
            // c2 vs c1 is the tied example of the RankStatistics tests.
            #expect(closeAll(attention.spearmanPrevious, [.nan, 0.9, 6.5 / 95.0.squareRoot(), 9.5 / 95.0.squareRoot()]))
            #expect(closeAll(attention.kendallPrevious, [.nan, 0.8, 5 / 90.0.squareRoot(), 9 / 90.0.squareRoot()]))
            // The constant block vector of c0 has no correlation with anything.
            #expect(closeAll(analysis.block.spearmanFinal, [.nan, 1, 1, 1]))
            #expect(closeAll(analysis.block.kendallPrevious, [.nan, .nan, 1, 1]))
            #expect(closeAll(analysis.mlp.kendallFinal, [1, 1, 1, 1]))
        }

        @Test func jaccardWithTheFinalDropSet() {
            #expect(analysis.attention.jaccardFinal[1] == [1, 0, 1, 1])
            #expect(analysis.attention.jaccardFinal[3] == [0.5, 0.5, 1, 1])  // {1,2,3} vs {1,3,4}: 2/4
        }

        @Test func stabilisationStepAndIndex() {
            // drop-1 is {1} at c0 but changes to {3} and back: it settles at c2 (step 1000).
            #expect(analysis.attention.stabilisation[1] == Stabilisation(index: 2, step: 1000))
            #expect(analysis.attention.stabilisation[3] == Stabilisation(index: 2, step: 1000))
            #expect(analysis.mlp.stabilisation[3] == Stabilisation(index: 0, step: 0))
            #expect(analysis.block.stabilisation[1] == Stabilisation(index: 0, step: 0))  // {0} throughout
        }

        @Test func meanImportance() {
            #expect(closeAll(analysis.attention.meanImportance, [0.3, 0.3, 0.24, 0.256], tolerance: 1e-7))
            #expect(closeAll(analysis.mlp.meanImportance, [0.7, 0.69, 0.68, 0.67], tolerance: 1e-7))
        }

        @Test func customDropKIsSortedAndDeduplicated() throws {
            let custom = try SeriesAnalysis(rows: AnalysisFixtures.knownRows, dropK: [2, 2, 1])
            #expect(custom.dropK == [1, 2])
            #expect(custom.attention.dropSets[2] == [[1, 3], [1, 3], [1, 3], [1, 3]])
            // The verdict always uses round(L/2), whatever was asked for.
            #expect(custom.verdict.k == 3)
        }

        @Test func badInputIsRejected() {
            #expect(throws: DroptraceError.self) { try SeriesAnalysis(rows: []) }
            #expect(throws: DroptraceError.self) { try SeriesAnalysis(rows: AnalysisFixtures.knownRows, dropK: [6]) }
            #expect(throws: DroptraceError.self) { try SeriesAnalysis(rows: AnalysisFixtures.knownRows, dropK: [0]) }
            var rows = AnalysisFixtures.knownRows
            rows[2].mlp.removeLast()
            #expect(throws: DroptraceError.self) { try SeriesAnalysis(rows: rows) }
        }
    }

    @Suite struct VerdictTests {
        private func criterion(_ verdict: Verdict, _ id: String) -> VerdictCriterion {
            verdict.criteria.first { $0.id == id }!
        }

        @Test func knownSeriesPassesAtTheBoundary() throws {
            let verdict = try SeriesAnalysis(rows: AnalysisFixtures.knownRows).verdict
            #expect(verdict.k == 3)
            #expect(criterion(verdict, "attention_below_mlp").value == 1)
            // Jaccard of c0, c1, c2 with the final drop-3 set: 0.5, 0.5, 1 → median 0.5.
            #expect(criterion(verdict, "drop_set_agreement").value == 0.5)
            // Settles at step 1000 of 0...10000, at index 2: counted from 1, the 3rd ("checkpoint 2 of 4" read as the 2nd).
            #expect(criterion(verdict, "early_stabilisation").value == 0.1)
            #expect(criterion(verdict, "early_stabilisation").detail == "settles at step 1000 (the 3rd of 4 checkpoints)")
            #expect(verdict.outcome == .inherent)
            #expect([1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111].map(Verdict.ordinal)
                == ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"])
        }

        @Test func clearlyInherent() throws {
            let verdict = try SeriesAnalysis(rows: AnalysisFixtures.clearlyInherentRows()).verdict
            #expect(verdict.outcome == .inherent)
            #expect(verdict.criteria.allSatisfy { $0.passed })
            #expect(criterion(verdict, "drop_set_agreement").value == 1)
            #expect(criterion(verdict, "early_stabilisation").value == 0)
        }

        @Test func clearlyNotInherent() throws {
            let verdict = try SeriesAnalysis(rows: AnalysisFixtures.clearlyNotInherentRows()).verdict
            #expect(verdict.outcome == .notInherent)
            #expect(criterion(verdict, "attention_below_mlp").value == 0)
            #expect(!criterion(verdict, "attention_below_mlp").passed)
            // The ranking rotates every checkpoint, so only the last one is settled.
            #expect(criterion(verdict, "early_stabilisation").value == 1)
            #expect(verdict.reason.contains("attention below MLP"))
        }

        @Test func unknownStepsFallBackToCheckpointIndex() throws {
            var rows = Array(AnalysisFixtures.knownRows)
            for index in rows.indices { rows[index].step = -1 }
            let verdict = try SeriesAnalysis(rows: rows).verdict
            // Settles at checkpoint 2 of 0...3.
            #expect(close(criterion(verdict, "early_stabilisation").value, 2.0 / 3.0))
            #expect(!criterion(verdict, "early_stabilisation").passed)
            #expect(verdict.outcome == .notInherent)
        }

        @Test func tooFewCheckpointsIsInconclusive() throws {
            let two = try SeriesAnalysis(rows: Array(AnalysisFixtures.clearlyInherentRows().prefix(2))).verdict
            #expect(two.outcome == .inconclusive)
            let one = try SeriesAnalysis(rows: [AnalysisFixtures.knownRows[0]])
            #expect(one.verdict.outcome == .inconclusive)
            #expect(one.verdict.reason.contains("1 checkpoint"))
            #expect(criterion(one.verdict, "drop_set_agreement").value.isNaN)
            #expect(one.attention.stabilisation[3] == Stabilisation(index: 0, step: 0))
            #expect(one.attention.spearmanPrevious[0].isNaN)
        }

        @Test func aOneLayerModelIsInconclusiveWithCriteriaTwoAndThreeUnmeasured() throws {
            // Its drop-1 set is {0} at every checkpoint whatever the scores: criteria 2 and 3 would pass by construction.
            let steps: [Int64] = [0, 1000, 2000, 3000]
            let rows = AnalysisFixtures.rows(
                attention: steps.map { [0.01 + Float($0) * 1e-6] }, mlp: steps.map { _ in [0.5] },
                block: steps.map { _ in [0.5] }, steps: steps)
            let analysis = try SeriesAnalysis(rows: rows)
            #expect(analysis.verdict.outcome == .inconclusive)
            #expect(analysis.verdict.reason.contains("1 layer"))
            #expect(criterion(analysis.verdict, "attention_below_mlp").value == 1)
            for id in ["drop_set_agreement", "early_stabilisation"] {
                #expect(criterion(analysis.verdict, id).value.isNaN)
                #expect(criterion(analysis.verdict, id).detail.contains("whole 1-layer model"))
            }
            // Stored and read back, the verdict is the one its criteria give.
            let scratch = try ScratchDirectory()
            let url = scratch.path("one-layer.h5")
            let scores = AnalysisFixtures.scoreFile(rows)
            try scores.write(to: url) { file in try analysis.write(into: file) }
            let file = try HDF5File.open(at: url)
            defer { try? file.close() }
            #expect(try SeriesAnalysis.read(from: file, rows: scores.rows) == analysis)
        }

        @Test func undefinedScoresAreLeftOutOrInconclusive() throws {
            var rows = AnalysisFixtures.clearlyInherentRows()
            rows[2].attention[1] = .nan
            let partly = try SeriesAnalysis(rows: rows).verdict
            // 5 of 6 checkpoints have defined means, all with attention below MLP.
            #expect(criterion(partly, "attention_below_mlp").value == 1)
            #expect(criterion(partly, "attention_below_mlp").detail.contains("5 of 5 checkpoints (1 with undefined"))
            #expect(partly.outcome == .inherent)
            // No MLP score at all: no mean to compare with (a layer whose MLP is undefined at every checkpoint
            // would be one without an MLP, left out: ModuleLayersAnalysisTests).
            for index in rows.indices { rows[index].mlp = rows[index].mlp.map { _ in .nan } }
            let verdict = try SeriesAnalysis(rows: rows).verdict
            #expect(verdict.outcome == .inconclusive)
            #expect(verdict.reason.contains("attention below MLP"))
        }
    }

    @Suite struct StoreTests {
        @Test func roundTripThroughTheScoreFile() throws {
            let scratch = try ScratchDirectory()
            let url = scratch.path("scores.h5")
            let scores = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
            let analysis = try SeriesAnalysis(rows: scores.rows)
            try scores.write(to: url) { file in try analysis.write(into: file) }

            #expect(try ScoreFile.read(from: url) == scores)
            let file = try HDF5File.open(at: url)
            defer { try? file.close() }
            #expect(try SeriesAnalysis.isStored(in: file))
            let stored = try SeriesAnalysis.read(from: file)
            #expect(stored == analysis)

            // The documented layout, as h5py would see it.
            let rankings = try file.dataset("analysis/attention/rankings")
            #expect(rankings.shape == [4, 5])
            #expect(rankings.elementType == .integer(bits: 32, signed: true))
            #expect(try file.dataset("analysis/mlp/drop_k3").shape == [4, 3])
            #expect(try file.dataset("analysis/block/kendall_final").elementType == .float(bits: 64))
            #expect(try file.dataset("analysis/attention/jaccard_final_k3").read(as: Double.self) == [0.5, 0.5, 1, 1])
            let group = try file.group("analysis/attention")
            #expect(try group.scalarAttribute("stabilisation_step_k1", as: Int64.self) == 1000)
            #expect(try group.scalarAttribute("stabilisation_index_k1", as: Int64.self) == 2)
            let root = try file.group("analysis")
            #expect(try root.numericAttribute("drop_k", as: Int64.self) == [1, 3])
            #expect(try root.stringAttribute("verdict") == "inherent")
            let json = try root.stringAttribute("verdict_criteria")
            let criteria = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [[String: Any]]
            #expect(criteria.map { $0["id"] as! String }
                == ["attention_below_mlp", "drop_set_agreement", "early_stabilisation"])
            #expect(criteria.allSatisfy { $0["passed"] as? Bool == true })
        }

        @Test func unmeasurableCriteriaRoundTripAsNull() throws {
            let scratch = try ScratchDirectory()
            let url = scratch.path("one.h5")
            let scores = AnalysisFixtures.scoreFile([AnalysisFixtures.knownRows[0]])
            let analysis = try SeriesAnalysis(rows: scores.rows)
            try scores.write(to: url) { file in try analysis.write(into: file) }
            let file = try HDF5File.open(at: url)
            defer { try? file.close() }
            #expect(try SeriesAnalysis.read(from: file) == analysis)
            #expect(try file.group("analysis").stringAttribute("verdict_criteria").contains("\"value\":null"))
        }

        @Test func rewritingReplacesTheEarlierAnalysis() throws {
            let scratch = try ScratchDirectory()
            let url = scratch.path("scores.h5")
            let scores = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
            try scores.write(to: url) { file in try SeriesAnalysis(rows: scores.rows, dropK: [2]).write(into: file) }
            let file = try HDF5File.open(at: url, writable: true)
            let analysis = try SeriesAnalysis(rows: scores.rows)
            try analysis.write(into: file)
            #expect(try SeriesAnalysis.read(from: file) == analysis)
            #expect(try !file.exists("analysis/attention/drop_k2"))
            try file.close()
        }

        /// The store of the fixture rows with their analysis, open for
        /// writing (its directory lives as long as `scratch`).
        func fixtureStore() throws -> (scratch: ScratchDirectory, file: HDF5File, scores: ScoreFile) {
            let scratch = try ScratchDirectory()
            let url = scratch.path("scores.h5")
            let scores = AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows)
            try scores.write(to: url) { file in try SeriesAnalysis(rows: scores.rows).write(into: file) }
            return (scratch, try HDF5File.open(at: url, writable: true), scores)
        }

        /// The error reading the analysis of the fixture store after `edit`
        /// changed its attributes in place.
        func readError(after edit: (HDF5File) throws -> Void) throws -> String {
            let (scratch, file, _) = try fixtureStore()
            defer { try? file.close() }
            try edit(file)
            let error = #expect(throws: DroptraceError.self) { try SeriesAnalysis.read(from: file) }
            #expect(error?.path == scratch.path("scores.h5").path)
            return error?.message ?? ""
        }

        /// The checkpoint a drop set settled at must be one of the store's
        /// (index and step as stored): an index past the rows crashed `report`.
        @Test(arguments: [(Int64(50), Int64(1000)), (-3, 1000), (2, 7)])
        func stabilisationOutsideTheSeriesIsRefused(index: Int64, step: Int64) throws {
            let message = try readError { file in
                let group = try file.group("analysis/attention")
                try group.setAttribute("stabilisation_index_k1", index)
                try group.setAttribute("stabilisation_step_k1", step)
            }
            #expect(message == "/analysis/attention attributes stabilisation_index_k1 = \(index) and stabilisation_step_k1 = \(step) name no checkpoint of the 4 stored")
        }

        /// Values no analysis gives are refused, naming the dataset: by
        /// fuzzing, a Kendall τ of 1e30 crashed the figures, a Jaccard
        /// overlap of −7 was printed; the drop-k list is each k once,
        /// sorted (4,000 repeats took 10 s and a 6 MB report); rankings name
        /// each layer once.
        @Test(arguments: [
            ("analysis/attention/kendall_final", [0.5, 1e30, 0.2, 1], "/analysis/attention/kendall_final holds 1e+30, outside [−1, 1]"),
            ("analysis/mlp/spearman_previous", [.nan, -1.5, 0.2, 1], "/analysis/mlp/spearman_previous holds -1.5, outside [−1, 1]"),
            ("analysis/block/jaccard_final_k1", [1, -7, 0, 1], "/analysis/block/jaccard_final_k1 holds -7.0, outside [0, 1]"),
            ("analysis/attention/mean_importance", [0.1, 0.2, -123, 0.1], "/analysis/attention/mean_importance holds -123.0, outside [0, 2]"),
        ] as [(String, [Double], String)])
        func valuesNoAnalysisGivesAreRefused(dataset: String, values: [Double], message: String) throws {
            let error = try readError { file in
                try file.remove(dataset)
                try file.createDataset(dataset, values: values)
            }
            #expect(error.hasPrefix(message), "\(error)")
        }

        /// An analysis within every range that is not the one the rows give
        /// (a drop set, a mean importance, a stabilisation edited: the report
        /// then contradicted itself) is refused where a store's analysis is
        /// read for a report, a comparison or a reseal.
        @Test func analysisThatIsNotTheRowsOneIsRefused() throws {
            let (scratch, file, scores) = try fixtureStore()
            defer { withExtendedLifetime(scratch) { try? file.close() } }
            #expect(try SeriesAnalysis.read(from: file, rows: scores.rows) == SeriesAnalysis(rows: scores.rows))
            let means = try file.dataset("analysis/mlp/mean_importance").read(as: Double.self)
            try file.remove("analysis/mlp/mean_importance")
            try file.createDataset("analysis/mlp/mean_importance", values: [means[0] + 0.5] + means.dropFirst())
            let error = #expect(throws: DroptraceError.self) { try SeriesAnalysis.read(from: file, rows: scores.rows) }
            #expect(error?.message.hasPrefix("/analysis/mlp is not the analysis of the store's rows") == true, "\(String(describing: error))")
            try file.remove("analysis/mlp/mean_importance")
            try file.createDataset("analysis/mlp/mean_importance", values: means)
            // The verdict's criteria too: a threshold of −3 was printed as "≥ -3.000".
            let root = try file.group("analysis")
            var criteria = try JSONSerialization.jsonObject(with: Data(try root.stringAttribute("verdict_criteria").utf8)) as! [[String: Any]]
            criteria[0]["threshold"] = -3.0
            try root.setAttribute("verdict_criteria", String(decoding: try JSONSerialization.data(withJSONObject: criteria, options: .sortedKeys), as: UTF8.self))
            let verdict = #expect(throws: DroptraceError.self) { try SeriesAnalysis.read(from: file, rows: scores.rows) }
            #expect(verdict?.message.hasPrefix("/analysis attributes verdict and verdict_criteria are not the verdict of the store's rows") == true,
                    "\(String(describing: verdict))")
            // Wording is not judgement: a store whose criteria an earlier version worded otherwise still reads,
            // worded as this version words it.
            criteria[0]["threshold"] = Verdict.attentionBelowMLPFraction
            let current = criteria[2]["detail"] as! String
            criteria[2]["detail"] = "settles at step 1000 (checkpoint 2 of 4)"
            try root.setAttribute("verdict_criteria", String(decoding: try JSONSerialization.data(withJSONObject: criteria, options: .sortedKeys), as: UTF8.self))
            #expect(try SeriesAnalysis.read(from: file, rows: scores.rows).verdict.criteria[2].detail == current)
            var others = scores.rows
            others[0].step += 1
            let steps = #expect(throws: DroptraceError.self) { try SeriesAnalysis.read(from: file, rows: others) }
            #expect(steps?.message.contains("their steps or layers differ") == true, "\(String(describing: steps))")
        }

        @Test func repeatedDropKAndRepeatedLayersAreRefused() throws {
            let repeated = try readError { try $0.group("analysis").setAttribute("drop_k", [Int64(1), 1, 3]) }
            #expect(repeated == "/analysis attribute drop_k is not a sorted list of distinct values")
            let twice = try readError { file in
                let rankings = try file.dataset("analysis/attention/rankings").read(as: Int32.self)
                try file.remove("analysis/attention/rankings")
                try file.createDataset("analysis/attention/rankings", values: [rankings[1]] + rankings.dropFirst(), shape: [4, 5])
            }
            #expect(twice == "/analysis/attention/rankings names a layer twice in row 0")
        }

        /// The verdict's k follows from the layer count; another one printed
        /// "drop-4611686018427387904 set is layers —".
        @Test func verdictKOtherThanHalfTheLayersIsRefused() throws {
            let message = try readError { try $0.group("analysis").setAttribute("verdict_k", Int64(1) << 62) }
            #expect(message == "/analysis attribute verdict_k is 4611686018427387904, but the verdict of attention in 5 layers judges drop-3")
        }

        @Test func missingAnalysisNamesTheFile() throws {
            let scratch = try ScratchDirectory()
            let url = scratch.path("plain.h5")
            try AnalysisFixtures.scoreFile(AnalysisFixtures.knownRows).write(to: url)
            let file = try HDF5File.open(at: url)
            defer { try? file.close() }
            #expect(try !SeriesAnalysis.isStored(in: file))
            let error = #expect(throws: DroptraceError.self) { try SeriesAnalysis.read(from: file) }
            #expect(error?.path == url.path)
        }
    }
}

import Dispatch
import DroptraceSupport

/// Bootstrap over calibration sequences: how much importance, rankings,
/// drop sets and the verdict move with the calibration sample.
///
/// Replicate r draws S sequence indices uniformly with replacement
/// (`BootstrapSettings.generator(replicate:)`) and recomputes, from the
/// stored per-sequence sums, importance = 1 − Σcos / Σtokens over the drawn
/// sequences for every module, layer and checkpoint, rounded to float32 as
/// `/scores` holds it: the point analysis ranks those float32 scores, so two
/// layers tied there are tied in every replicate that draws the sample
/// itself, and share their drop-set places as the point estimate's tie
/// does (in float64 a difference beyond float32's precision would decide
/// every replicate one way). All checkpoints share
/// the calibration tokens, so replicate r uses the same draw for every
/// module and checkpoint: a replicate is one alternative calibration set,
/// and statistics across checkpoints (correlation with the final
/// checkpoint, the verdict's criteria) are taken within a replicate.
///
/// Cost: B · C · S · (3L + 1) additions plus B · C · 3 rankings of L and
/// Kendall's O(L²); checkpoints run in parallel. 154 checkpoints × 32
/// layers × 64 sequences × 1000 replicates takes about 2 CPU seconds in a
/// release build (about 1 s on two idle cores).
public enum ImportanceBootstrap {
    public struct Result: Sendable, Equatable {
        public var uncertainty: SeriesUncertainty
        /// Criterion id → interval of the verdict's criterion value.
        public var criterionIntervals: [String: ConfidenceInterval]
    }

    /// - Parameters:
    ///   - sums: [C] per-sequence sums (`/per_sequence`), all of the same
    ///     S ≥ 2 sequences of at least one token each and L layers.
    ///   - layers: L ≥ 1.
    ///   - steps: [C] training steps (-1 when unknown), for the verdict's criterion 3.
    ///   - dropK: the analysed k values, each in 1...L.
    ///   - names: [C] checkpoint names for error messages (row indices when nil).
    ///   - moduleLayers: [3] the layers each module is in (`ModuleSeries.layers`,
    ///     `ModuleKind` order; all L when nil): means, rank correlations and
    ///     the verdict's drop set are taken over those, drop-k probabilities
    ///     exist for k up to their count, as in the point analysis.
    /// - Throws: `DroptraceError` naming the checkpoint whose sums do not
    ///   fit, or when `settings` are out of range.
    public static func run(sums: [SequenceSums], layers: Int, steps: [Int64], dropK: [Int],
                           settings: BootstrapSettings = .standard, names: [String]? = nil,
                           moduleLayers: [[Int]]? = nil) throws -> Result {
        let settings = try settings.validated()
        guard !sums.isEmpty, sums.count == steps.count else {
            throw DroptraceError("the bootstrap needs per-sequence sums for each of the \(steps.count) checkpoints, "
                                    + "got \(sums.count)")
        }
        guard layers > 0 else { throw DroptraceError("the bootstrap needs at least one layer") }
        if let bad = dropK.first(where: { !(1...layers).contains($0) }) {
            throw DroptraceError("drop-k \(bad) is out of range: the model has \(layers) layers, so drop-k is 1 to \(layers)")
        }
        func checkpoint(_ index: Int) -> String {
            names.flatMap { index < $0.count ? "checkpoint '\($0[index])'" : nil } ?? "checkpoint \(index)"
        }
        let sequences = sums[0].sequenceCount
        guard sequences >= 2 else {
            throw DroptraceError("the bootstrap needs at least 2 calibration sequences, \(checkpoint(0)) has "
                                    + "\(sequences)")
        }
        for (index, row) in sums.enumerated() {
            do {
                try row.validate()
            } catch let error as DroptraceError {
                throw DroptraceError("\(checkpoint(index)): \(error.message)")
            }
            guard row.sequenceCount == sequences, row.layerCount == layers else {
                throw DroptraceError("\(checkpoint(index)) has per-sequence sums of \(row.sequenceCount) sequences × "
                                        + "\(row.layerCount) layers, expected \(sequences) × \(layers)")
            }
            if let empty = row.tokens.first(where: { $0 < 1 }) {
                throw DroptraceError("\(checkpoint(index)) has a token count of \(empty) in its per-sequence sums; "
                                        + "every calibration sequence has at least one token")
            }
        }
        let present = moduleLayers ?? Array(repeating: Array(0..<layers), count: 3)
        guard present.count == 3, present.allSatisfy({ !$0.isEmpty && $0.allSatisfy((0..<layers).contains) }) else {
            throw DroptraceError("the bootstrap needs, for each module, a non-empty list of its layers among the \(layers)")
        }
        let resampler = Resampler(settings: settings, layers: layers, sequences: sequences, dropK: dropK,
                                  present: present, verdictK: Verdict.verdictK(layers: present[0].count),
                                  matrices: sums.map(Resampler.matrix))
        return resampler.run(steps: steps)
    }
}

/// The work of `ImportanceBootstrap.run` on validated input.
private struct Resampler: Sendable {
    let settings: BootstrapSettings
    let layers: Int
    let sequences: Int
    let dropK: [Int]
    /// [3] the layers each module is in.
    let present: [[Int]]
    let verdictK: Int
    /// [C] of [S × (3L + 1)]: each sequence's cosine sums of attention, MLP
    /// and block, then its token count, so one row sum resamples everything.
    let matrices: [[Double]]

    static let modules = ModuleKind.allCases
    var width: Int { 3 * layers + 1 }
    var replicates: Int { settings.replicates }

    static func matrix(_ sums: SequenceSums) -> [Double] {
        var matrix: [Double] = []
        matrix.reserveCapacity(sums.sequenceCount * (3 * sums.layerCount + 1))
        for sequence in 0..<sums.sequenceCount {
            for module in modules { matrix += module.sums(in: sums).cosineSum[sequence] }
            matrix.append(Double(sums.tokens[sequence]))
        }
        return matrix
    }

    /// The final checkpoint's replicates, which every checkpoint's
    /// replicate r is compared with.
    struct Final {
        /// [3][B][L] importance over each module's layers (the first A of
        /// each L, `present`), module-major.
        var importance: [Double]
        /// [3][B][L] average ranks of `importance` (the first A of each L).
        var ranks: [Double]
        /// [B][L] membership of the attention drop-k set at the verdict's k.
        var attentionMembers: [Bool]
    }

    /// What one checkpoint contributes.
    struct Summary {
        /// [3][L] interval ends.
        var low: [Float]
        var high: [Float]
        /// [3][K][L] drop-k membership shares.
        var probability: [Float]
        /// [3][B] replicate mean importance over layers.
        var means: [Double]
        var meanInterval: [ConfidenceInterval]
        var spearman: [ConfidenceInterval]
        var kendall: [ConfidenceInterval]
        /// [B] Jaccard of the attention drop-k set (verdict k) with the final's.
        var jaccard: [Double]
    }

    func run(steps: [Int64]) -> ImportanceBootstrap.Result {
        let count = matrices.count
        let finalImportance = importance(checkpoint: count - 1)
        let final = makeFinal(finalImportance)
        let results = UnsafeMutableBufferPointer<Summary>.allocate(capacity: count)
        defer {
            _ = results.deinitialize()
            results.deallocate()
        }
        results.baseAddress!.advanced(by: count - 1)
            .initialize(to: summarise(importance: finalImportance, final: final, isFinal: true))
        // Checkpoints are independent given the final one's replicates, and
        // each replicate's draw is regenerated from its own stream, so the
        // result does not depend on the thread count or order.
        if count > 1 {
            DispatchQueue.concurrentPerform(iterations: count - 1) { checkpoint in
                let summary = summarise(importance: importance(checkpoint: checkpoint), final: final, isFinal: false)
                results.baseAddress!.advanced(by: checkpoint).initialize(to: summary)
            }
        }
        let summaries = Array(results)
        return ImportanceBootstrap.Result(
            uncertainty: SeriesUncertainty(
                settings: settings, sequences: sequences, attention: assemble(summaries, module: 0),
                mlp: assemble(summaries, module: 1), block: assemble(summaries, module: 2)),
            criterionIntervals: criterionIntervals(summaries, steps: steps))
    }

    /// [3][B][L] resampled importance of one checkpoint.
    func importance(checkpoint: Int) -> [Double] {
        let (layers, width, replicates, sequences) = (self.layers, self.width, self.replicates, self.sequences)
        var output = [Double](repeating: 0, count: 3 * replicates * layers)
        var total = [Double](repeating: 0, count: width)
        var draws = [Int](repeating: 0, count: sequences)
        matrices[checkpoint].withUnsafeBufferPointer { matrix in
            total.withUnsafeMutableBufferPointer { total in
                output.withUnsafeMutableBufferPointer { output in
                    for replicate in 0..<replicates {
                        // Rows weighted by how often they were drawn: about a
                        // third of the sequences are not drawn at all.
                        var generator = settings.generator(replicate: replicate)
                        for sequence in 0..<sequences { draws[sequence] = 0 }
                        for _ in 0..<sequences { draws[generator.index(below: sequences)] += 1 }
                        for column in 0..<width { total[column] = 0 }
                        for sequence in 0..<sequences where draws[sequence] > 0 {
                            let weight = Double(draws[sequence]), row = sequence * width
                            for column in 0..<width { total[column] += weight * matrix[row + column] }
                        }
                        let tokens = total[width - 1]
                        for module in 0..<3 {
                            let base = (module * replicates + replicate) * layers
                            for layer in 0..<layers {
                                output[base + layer] = Double(Float(1 - total[module * layers + layer] / tokens))
                            }
                        }
                    }
                }
            }
        }
        return output
    }

    /// Adds one replicate's drop-k membership to `counts[base + layer]`: 1
    /// for each of the k least important layers; layers tied exactly at
    /// the set's edge share its places left to them (m of t tied layers
    /// inside: m/t each), so a tie broken by layer index counts for no layer
    /// as certain membership (a zero-initialised output projection makes
    /// every importance 0 at step 0).
    static func countMembers(_ values: UnsafeBufferPointer<Double>, order: UnsafeBufferPointer<Int>, k: Int,
                             into counts: inout [Double], at base: Int) {
        let layers = values.count
        guard k > 0, k < layers, values[order[k - 1]] == values[order[k]] else {
            for layer in order.prefix(k) { counts[base + layer] += 1 }
            return
        }
        let edge = values[order[k - 1]]
        var inside = 0, tied = 0
        for (position, layer) in order.enumerated() {
            if values[layer] == edge {
                tied += 1
                if position < k { inside += 1 }
            } else if position < k {
                counts[base + layer] += 1
            }
        }
        let share = Double(inside) / Double(tied)
        for layer in order where values[layer] == edge { counts[base + layer] += share }
    }

    func makeFinal(_ importance: [Double]) -> Final {
        var compact = [Double](repeating: .nan, count: importance.count), ranks = compact
        var members = [Bool](repeating: false, count: replicates * layers)
        for module in 0..<3 {
            let count = present[module].count
            for replicate in 0..<replicates {
                let base = (module * replicates + replicate) * layers
                let values = Array(importance[base..<(base + layers)])
                let own = present[module].map { values[$0] }
                compact.replaceSubrange(base..<(base + count), with: own)
                ranks.replaceSubrange(base..<(base + count), with: RankStatistics.averageRanks(own))
                if module == 0 {
                    for layer in RankStatistics.ranking(values).prefix(verdictK) { members[replicate * layers + layer] = true }
                }
            }
        }
        return Final(importance: compact, ranks: ranks, attentionMembers: members)
    }

    func summarise(importance: [Double], final: Final, isFinal: Bool) -> Summary {
        importance.withUnsafeBufferPointer { importance in
            final.importance.withUnsafeBufferPointer { finalImportance in
                final.ranks.withUnsafeBufferPointer { finalRanks in
                    summarise(importance: importance, finalImportance: finalImportance, finalRanks: finalRanks,
                              finalMembers: final.attentionMembers, isFinal: isFinal)
                }
            }
        }
    }

    /// `summarise` on the replicates' storage; its inner loop runs 3·B
    /// times per checkpoint and allocates nothing.
    private func summarise(
        importance: UnsafeBufferPointer<Double>, finalImportance: UnsafeBufferPointer<Double>,
        finalRanks: UnsafeBufferPointer<Double>, finalMembers: [Bool], isFinal: Bool
    ) -> Summary {
        let confidence = settings.confidence
        var low = [Float](repeating: 0, count: 3 * layers), high = low
        var counts = [Double](repeating: 0, count: 3 * dropK.count * layers)
        var means = [Double](repeating: 0, count: 3 * replicates)
        var spearman = [Double](repeating: 0, count: replicates), kendall = spearman
        var jaccard = [Double](repeating: 0, count: replicates)
        var meanInterval: [ConfidenceInterval] = [], spearmanInterval: [ConfidenceInterval] = []
        var kendallInterval: [ConfidenceInterval] = []
        var column = [Double](repeating: 0, count: replicates)
        // One replicate's ranking of all layers, and its importance, ranking and ranks over the module's layers.
        let order = UnsafeMutableBufferPointer<Int>.allocate(capacity: layers)
        let own = UnsafeMutableBufferPointer<Double>.allocate(capacity: layers)
        let ownOrder = UnsafeMutableBufferPointer<Int>.allocate(capacity: layers)
        let ranks = UnsafeMutableBufferPointer<Double>.allocate(capacity: layers)
        defer {
            order.deallocate()
            own.deallocate()
            ownOrder.deallocate()
            ranks.deallocate()
        }
        for module in 0..<3 {
            let count = present[module].count
            let compact = (own: UnsafeMutableBufferPointer(rebasing: own[0..<count]),
                           order: UnsafeMutableBufferPointer(rebasing: ownOrder[0..<count]),
                           ranks: UnsafeMutableBufferPointer(rebasing: ranks[0..<count]))
            for replicate in 0..<replicates {
                let base = (module * replicates + replicate) * layers
                let slice = base..<(base + layers)
                let values = UnsafeBufferPointer(rebasing: importance[slice])
                for (index, layer) in present[module].enumerated() { compact.own[index] = values[layer] }
                // NaN propagates, as in the point analysis.
                means[module * replicates + replicate] = compact.own.reduce(0, +) / Double(count)
                RankStatistics.ranking(values, into: order)
                for (kIndex, k) in dropK.enumerated() where k <= count {
                    Self.countMembers(values, order: UnsafeBufferPointer(order), k: k,
                                      into: &counts, at: (module * dropK.count + kIndex) * layers)
                }
                if module == 0 {
                    var shared = 0
                    for layer in order.prefix(verdictK) where finalMembers[replicate * layers + layer] {
                        shared += 1
                    }
                    // Both sets have k members: |A ∪ B| = 2k − |A ∩ B|. A set a tie at its edge or an
                    // undefined score decides is none, as in the point verdict (`Verdict.evaluate`).
                    let undecided = !isFinal && verdictK < count
                        && (compact.own.contains { $0.isNaN } || values[order[verdictK - 1]] == values[order[verdictK]])
                    jaccard[replicate] = undecided ? .nan : Double(shared) / Double(2 * verdictK - shared)
                }
                let ownSlice = base..<(base + count)
                RankStatistics.ranking(UnsafeBufferPointer(compact.own), into: compact.order)
                RankStatistics.averageRanks(UnsafeBufferPointer(compact.own), order: UnsafeBufferPointer(compact.order),
                                            into: compact.ranks)
                let rho = RankStatistics.pearson(UnsafeBufferPointer(compact.ranks),
                                                 UnsafeBufferPointer(rebasing: finalRanks[ownSlice]))
                spearman[replicate] = count < 2 ? .nan : rho
                if isFinal {
                    // A vector's τ-b with itself is 1 whenever ρ is defined.
                    kendall[replicate] = spearman[replicate].isNaN ? .nan : 1
                } else {
                    kendall[replicate] = RankStatistics.kendallTauB(
                        UnsafeBufferPointer(compact.own), UnsafeBufferPointer(rebasing: finalImportance[ownSlice]))
                }
            }
            for layer in 0..<layers {
                for replicate in 0..<replicates {
                    column[replicate] = importance[(module * replicates + replicate) * layers + layer]
                }
                let interval = Bootstrap.percentileInterval(&column, confidence: confidence)
                low[module * layers + layer] = Float(interval.low)
                high[module * layers + layer] = Float(interval.high)
            }
            var moduleMeans = Array(means[(module * replicates)..<((module + 1) * replicates)])
            meanInterval.append(Bootstrap.percentileInterval(&moduleMeans, confidence: confidence))
            spearmanInterval.append(Bootstrap.percentileInterval(&spearman, confidence: confidence))
            kendallInterval.append(Bootstrap.percentileInterval(&kendall, confidence: confidence))
        }
        let share = 1 / Double(replicates)
        return Summary(low: low, high: high, probability: counts.map { Float($0 * share) }, means: means,
                       meanInterval: meanInterval, spearman: spearmanInterval, kendall: kendallInterval,
                       jaccard: jaccard)
    }

    func assemble(_ summaries: [Summary], module: Int) -> ModuleUncertainty {
        let range = (module * layers)..<((module + 1) * layers)
        var probability: [Int: [[Float]]] = [:]
        for (kIndex, k) in dropK.enumerated() where k <= present[module].count {
            let base = (module * dropK.count + kIndex) * layers
            probability[k] = summaries.map { Array($0.probability[base..<(base + layers)]) }
        }
        return ModuleUncertainty(
            importanceLow: summaries.map { Array($0.low[range]) }, importanceHigh: summaries.map { Array($0.high[range]) },
            dropProbability: probability, meanImportance: summaries.map { $0.meanInterval[module] },
            spearmanFinal: summaries.map { $0.spearman[module] }, kendallFinal: summaries.map { $0.kendall[module] })
    }

    /// Each replicate's verdict criteria, measured exactly as the point verdict's.
    func criterionIntervals(_ summaries: [Summary], steps: [Int64]) -> [String: ConfidenceInterval] {
        var values = [[Double]](repeating: [], count: 3)
        for replicate in 0..<replicates {
            let measured = Verdict.measure(
                attentionMean: summaries.map { $0.means[replicate] },
                mlpMean: summaries.map { $0.means[replicates + replicate] },
                jaccardWithFinal: summaries.map { $0.jaccard[replicate] }, steps: steps).values
            for index in 0..<3 { values[index].append(measured[index]) }
        }
        let ids = [Verdict.CriterionID.attentionBelowMLP, Verdict.CriterionID.dropSetAgreement,
                   Verdict.CriterionID.earlyStabilisation]
        var intervals: [String: ConfidenceInterval] = [:]
        for (index, id) in ids.enumerated() {
            intervals[id] = Bootstrap.percentileInterval(&values[index], confidence: settings.confidence)
        }
        return intervals
    }
}

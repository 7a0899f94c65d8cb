import Foundation
import DroptraceSupport
import ScoreStore

/// Storing the analysis in the score file, in the layout of `AnalysisLayout`,
/// so `droptrace report` can rebuild the report from the file alone.
extension SeriesAnalysis {
    /// Writes `/analysis/...` into `file`, replacing any earlier analysis.
    /// Meant for `ScoreFile.write(to:extra:)`, which calls it on the fresh
    /// file before the atomic rename.
    public func write(into file: HDF5File) throws {
        if try file.exists(AnalysisLayout.group) {
            try file.remove(AnalysisLayout.group)
        }
        let root = try file.createGroup(AnalysisLayout.group)
        typealias Names = AnalysisLayout.Attribute
        try root.setAttribute(Names.dropK, dropK.map(Int64.init))
        try root.setAttribute(Names.verdict, verdict.outcome.rawValue)
        try root.setAttribute(Names.verdictK, Int64(verdict.k))
        try root.setAttribute(Names.verdictReason, verdict.reason)
        try root.setAttribute(Names.verdictRule, Verdict.ruleDescription)
        try root.setAttribute(Names.verdictCriteria, try Self.criteriaJSON(verdict.criteria))

        let count = checkpointCount
        let storage = ScoreFileLayout.storage
        for module in ModuleKind.allCases {
            let series = self[module]
            let group = try file.createGroup(AnalysisLayout.moduleGroup(module))
            try group.setAttribute(Names.moduleLayers, series.layers.map(Int64.init))
            try group.createDataset(AnalysisLayout.rankings, values: series.rankings.flatMap { $0.map(Int32.init) },
                                    shape: [count, layers], storage: storage)
            let perCheckpoint: [(String, [Double])] = [
                (AnalysisLayout.spearmanFinal, series.spearmanFinal),
                (AnalysisLayout.kendallFinal, series.kendallFinal),
                (AnalysisLayout.spearmanPrevious, series.spearmanPrevious),
                (AnalysisLayout.kendallPrevious, series.kendallPrevious),
                (AnalysisLayout.meanImportance, series.meanImportance),
            ]
            for (name, values) in perCheckpoint {
                try group.createDataset(name, values: values, storage: storage)
            }
            for k in series.analysedK(dropK) {
                try group.createDataset(AnalysisLayout.dropSets(k: k),
                                        values: series.dropSets[k]!.flatMap { $0.map(Int32.init) },
                                        shape: [count, k], storage: storage)
                try group.createDataset(AnalysisLayout.jaccardFinal(k: k), values: series.jaccardFinal[k]!,
                                        storage: storage)
                let settled = series.stabilisation[k]!
                try group.setAttribute(Names.stabilisationStep(k: k), settled.step)
                try group.setAttribute(Names.stabilisationIndex(k: k), Int64(settled.index))
            }
        }
        if let uncertainty {
            try uncertainty.write(into: file, checkpoints: count, layers: layers, dropK: dropK)
        }
    }

    /// Whether `file` holds an `/analysis` group.
    public static func isStored(in file: HDF5File) throws -> Bool {
        try file.kind(of: AnalysisLayout.group) == .group
    }

    /// Reads back what `write(into:)` stored; checkpoint steps come from
    /// `/checkpoints/step` of the same file. Shapes are checked so a damaged
    /// or foreign file gives one clear error instead of a wrong report.
    public static func read(from file: HDF5File) throws -> SeriesAnalysis {
        let path = file.filePath
        guard try isStored(in: file) else {
            throw DroptraceError("no /\(AnalysisLayout.group) group: the analysis was never stored in this file",
                                 path: path)
        }
        let steps = try file.dataset(ScoreFileLayout.checkpointSteps).read(as: Int64.self)
        let count = steps.count
        let root = try file.group(AnalysisLayout.group)
        typealias Names = AnalysisLayout.Attribute
        let dropK = try root.numericAttribute(Names.dropK, as: Int64.self).map { Int(clamping: $0) }
        // The writer stores each k once, sorted (the commands' lists are made so).
        guard dropK == Array(Set(dropK)).sorted() else {
            throw DroptraceError("/\(AnalysisLayout.group) attribute \(Names.dropK) is not a sorted list of distinct values", path: path)
        }

        let outcomeName = try root.stringAttribute(Names.verdict)
        guard let outcome = Verdict.Outcome(rawValue: outcomeName) else {
            throw DroptraceError("/\(AnalysisLayout.group) attribute \(Names.verdict) is '\(outcomeName)', expected "
                                    + Verdict.Outcome.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", "),
                                 path: path)
        }
        let criteriaJSON = try root.stringAttribute(Names.verdictCriteria)
        let criteria: [VerdictCriterion]
        do {
            criteria = try JSONDecoder().decode([VerdictCriterion].self, from: Data(criteriaJSON.utf8))
        } catch {
            throw DroptraceError("/\(AnalysisLayout.group) attribute \(Names.verdictCriteria) is not valid criteria "
                                    + "JSON: \(SystemError.summary(of: error))", path: path)
        }
        if let criterion = criteria.first(where: { $0.implausibility != nil }) {
            throw DroptraceError("/\(AnalysisLayout.group) attribute \(Names.verdictCriteria): criterion "
                                    + "'\(SystemError.oneLine(String(criterion.id.prefix(40))))' \(criterion.implausibility!), "
                                    + "where no run puts it: the file was changed by other software", path: path)
        }
        let verdict = Verdict(
            outcome: outcome, k: Int(try root.scalarAttribute(Names.verdictK, as: Int64.self)),
            criteria: criteria, reason: try root.stringAttribute(Names.verdictReason))
        let rankingsShape = try file.dataset(AnalysisLayout.moduleGroup(.attention) + "/" + AnalysisLayout.rankings)
            .shape
        guard rankingsShape.count == 2, rankingsShape[0] == count, rankingsShape[1] > 0 else {
            throw DroptraceError("/\(AnalysisLayout.moduleGroup(.attention))/\(AnalysisLayout.rankings) has shape "
                                    + "\(rankingsShape), expected [\(count), layers]", path: path)
        }
        let layers = rankingsShape[1]
        try SeriesAnalysis.checkDropK(dropK, layers: layers, path: path)
        let reader = StoredModuleReader(file: file, count: count, layers: layers, steps: steps, dropK: dropK)
        let attentionLayers = try reader.moduleLayers(.attention).count
        // A report never states a verdict its own criteria table contradicts.
        let ruled = Verdict.decide(criteria, checkpoints: count, attentionLayers: attentionLayers).0
        guard criteria.count == 3, outcome == ruled else {
            throw DroptraceError("/\(AnalysisLayout.group) attribute \(Names.verdict) is '\(outcomeName)', but its criteria "
                                    + "(\(Names.verdictCriteria)) give '\(ruled.rawValue)'", path: path)
        }
        // The verdict judges the drop set of half the layers with attention (Verdict.verdictK).
        guard verdict.k == Verdict.verdictK(layers: attentionLayers) else {
            throw DroptraceError("/\(AnalysisLayout.group) attribute \(Names.verdictK) is \(verdict.k), but the verdict of "
                                    + "attention in \(attentionLayers) layers judges drop-\(Verdict.verdictK(layers: attentionLayers))",
                                 path: path)
        }
        return SeriesAnalysis(
            steps: steps, layers: layers, dropK: dropK, attention: try reader.read(.attention),
            mlp: try reader.read(.mlp), block: try reader.read(.block), verdict: verdict,
            uncertainty: try SeriesUncertainty.read(with: reader))
    }

    /// `read(from:)`, checked to be the analysis of `rows` (the store's):
    /// its point analysis — rankings, drop sets, rank correlations,
    /// overlaps, stabilisation, mean importance — and its verdict (judged
    /// with the stored bootstrap intervals) are the ones the rows give (the
    /// writer stores exactly those), so an edited `/analysis` is never
    /// reported as the run's. The verdict comes back worded as this version
    /// words it: stored wording is never shown (an edited detail would be).
    /// - Throws: `DroptraceError` naming the file and the module that differs.
    public static func read(from file: HDF5File, rows: [CheckpointRow]) throws -> SeriesAnalysis {
        var analysis = try read(from: file)
        let path = file.filePath
        guard analysis.steps == rows.map(\.step), analysis.layers == rows.first?.attention.count else {
            throw DroptraceError("/\(AnalysisLayout.group) is not the analysis of the store's checkpoints (their steps or layers differ)", path: path)
        }
        for module in ModuleKind.allCases {
            let expected = ModuleSeries(
                module: module, importance: rows.map { module.importance(in: $0).map(Double.init) }, steps: analysis.steps,
                dropK: analysis.dropK)
            guard analysis[module] == expected else {
                throw DroptraceError(
                    "/\(AnalysisLayout.moduleGroup(module)) is not the analysis of the store's rows: the file was changed by other "
                        + "software (`droptrace trace` on its series analyses them again)", path: path)
            }
        }
        if let stored = analysis.uncertainty?.sequences, let sums = rows.first?.sums, sums.sequenceCount != stored {
            throw DroptraceError(
                "/\(AnalysisLayout.group) attribute \(AnalysisLayout.Attribute.bootstrapSequences) is \(stored), but the "
                    + "per-sequence sums hold \(sums.sequenceCount) sequences: the file was changed by other software", path: path)
        }
        // The verdict from the same series, with the bootstrap intervals its criteria were judged with.
        let intervals = Dictionary(
            analysis.verdict.criteria.compactMap { criterion in criterion.interval.map { (criterion.id, $0) } },
            uniquingKeysWith: { first, _ in first })
        let verdict = Verdict.evaluate(
            attention: analysis.attention, mlp: analysis.mlp,
            attentionImportance: rows.map { ModuleKind.attention.importance(in: $0).map(Double.init) },
            steps: analysis.steps, intervals: intervals.isEmpty ? nil : intervals,
            confidence: analysis.uncertainty?.settings.confidence ?? BootstrapSettings.defaultConfidence)
        guard verdict.judgement == analysis.verdict.judgement else {
            throw DroptraceError(
                "/\(AnalysisLayout.group) attributes verdict and verdict_criteria are not the verdict of the store's rows: the file "
                    + "was changed by other software, or judged by an earlier droptrace's rule (`droptrace trace` on its series "
                    + "analyses them again)", path: path)
        }
        analysis.verdict = verdict
        return analysis
    }

    /// Throws unless this analysis is what `init(rows:dropK:bootstrap:)`
    /// computes from `rows` with the analysis's own drop-k and bootstrap
    /// settings: reading checks the point analysis and the verdict against
    /// the rows, but takes the bootstrap's intervals and drop-k
    /// probabilities as stored (within their ranges), since recomputing them
    /// costs the bootstrap. `reseal` runs this on the store it accepts, so an
    /// edited seed, confidence or sequence count cannot name intervals they
    /// did not give. Bootstrap numbers are compared to float32 precision
    /// (`agree`): another droptrace version may differ in the last bits.
    /// - Throws: `DroptraceError` naming `path` and the first part that differs.
    public func requireRecomputed(from rows: [CheckpointRow], path: String) throws {
        let again = try SeriesAnalysis(rows: rows, dropK: dropK, bootstrap: uncertainty?.settings ?? .standard)
        func refuse(_ what: String) -> DroptraceError {
            DroptraceError("/\(AnalysisLayout.group): \(what): the file was changed by other software, or analysed by "
                               + "another droptrace version (delete /\(AnalysisLayout.group) and reseal; the next trace "
                               + "analyses the series again)", path: path)
        }
        guard steps == again.steps, layers == again.layers,
              ModuleKind.allCases.allSatisfy({ self[$0] == again[$0] }) else {
            throw refuse("it is not the analysis of the store's rows")
        }
        typealias Names = AnalysisLayout.Attribute
        switch (uncertainty, again.uncertainty) {
        case (nil, nil):
            break
        case (nil, _?):
            throw refuse("it has no bootstrap intervals, though the rows hold the per-sequence sums they come from")
        case (_?, nil):
            throw refuse("it holds bootstrap intervals, though the rows hold no per-sequence sums of 2 or more sequences")
        case let (stored?, computed?):
            if let module = ModuleKind.allCases.first(where: { !stored[$0].agrees(with: computed[$0], by: Self.agree) }) {
                throw refuse("the intervals or drop-k probabilities of /\(AnalysisLayout.moduleGroup(module)) are not the "
                                 + "ones its bootstrap (\(Names.bootstrapReplicates), \(Names.bootstrapSeed), "
                                 + "\(Names.bootstrapConfidence) as stored) gives")
            }
        }
        let criteriaAgree = verdict.outcome == again.verdict.outcome && verdict.criteria.count == again.verdict.criteria.count
            && zip(verdict.criteria, again.verdict.criteria).allSatisfy { mine, theirs in
                guard mine.id == theirs.id, mine.status == theirs.status else { return false }
                guard let stored = mine.interval, let computed = theirs.interval else {
                    return mine.interval == nil && theirs.interval == nil
                }
                return stored.agrees(with: computed, by: Self.agree)
            }
        guard criteriaAgree else { throw refuse("its verdict criteria are not the ones the rows and their bootstrap give") }
    }

    /// Equal to float32 precision (relative 1e-6, absolute 1e-9), NaN
    /// matching NaN.
    private static func agree(_ a: Double, _ b: Double) -> Bool {
        ConfidenceInterval.sameValue(a, b) || abs(a - b) <= 1e-6 * max(abs(a), abs(b)) + 1e-9
    }

    static func criteriaJSON(_ criteria: [VerdictCriterion]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(criteria), as: UTF8.self)
    }
}

/// Reads one `/analysis/<module>` group, checking every shape.
struct StoredModuleReader {
    let file: HDF5File
    let count: Int
    let layers: Int
    let steps: [Int64]
    let dropK: [Int]

    /// The values a per-checkpoint series can take (NaN aside, where
    /// undefined), with room for rounding.
    enum Domain {
        case correlation, overlap, importance

        var range: ClosedRange<Double> {
            switch self {
            case .correlation: -1.000001...1.000001
            case .overlap: 0...1.000001
            case .importance: -0.001...2.001  // 1 − mean cos
            }
        }

        var text: String {
            switch self {
            case .correlation: "[−1, 1]"
            case .overlap: "[0, 1]"
            case .importance: "[0, 2]"
            }
        }
    }

    /// The module group's `layers` attribute: distinct layers in ascending
    /// order, at least one; every layer in files written before it existed.
    func moduleLayers(_ module: ModuleKind) throws -> [Int] {
        let base = AnalysisLayout.moduleGroup(module)
        let group = try file.group(base)
        let name = AnalysisLayout.Attribute.moduleLayers
        guard try group.hasAttribute(name) else { return Array(0..<layers) }
        let stored = try group.numericAttribute(name, as: Int64.self)
        guard !stored.isEmpty, stored.allSatisfy({ (0..<Int64(layers)).contains($0) }),
              zip(stored, stored.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw DroptraceError("/\(base) attribute \(name) is not a list of distinct layers 0..<\(layers) in ascending order",
                                 path: file.filePath)
        }
        return stored.map { Int($0) }
    }

    func read(_ module: ModuleKind) throws -> ModuleSeries {
        let base = AnalysisLayout.moduleGroup(module)
        let present = try moduleLayers(module)
        func floats(_ name: String, within domain: Domain) throws -> [Double] {
            let values = try dataset("\(base)/\(name)", shape: [count]).read(as: Double.self)
            if let bad = values.first(where: { !$0.isNaN && !domain.range.contains($0) }) {
                throw DroptraceError(
                    "/\(base)/\(name) holds \(bad), outside \(domain.text): it was not written by droptrace", path: file.filePath)
            }
            return values
        }
        /// Rows of distinct layer indices: drop sets, and rankings (each a permutation of the layers).
        func layerRows(_ name: String, width: Int) throws -> [[Int]] {
            let flat = try dataset("\(base)/\(name)", shape: [count, width]).read(as: Int32.self).map { Int($0) }
            if let bad = flat.first(where: { !(0..<layers).contains($0) }) {
                throw DroptraceError("/\(base)/\(name) holds layer index \(bad), outside 0..<\(layers)",
                                     path: file.filePath)
            }
            let rows = (0..<count).map { Array(flat[($0 * width)..<(($0 + 1) * width)]) }
            if let row = rows.firstIndex(where: { Set($0).count != width }) {
                throw DroptraceError("/\(base)/\(name) names a layer twice in row \(row)", path: file.filePath)
            }
            return rows
        }

        let group = try file.group(base)
        var dropSets: [Int: [[Int]]] = [:]
        var jaccard: [Int: [Double]] = [:]
        var stabilisation: [Int: Stabilisation] = [:]
        for k in dropK where k <= present.count {
            dropSets[k] = try layerRows(AnalysisLayout.dropSets(k: k), width: k)
            jaccard[k] = try floats(AnalysisLayout.jaccardFinal(k: k), within: .overlap)
            let index = try group.scalarAttribute(AnalysisLayout.Attribute.stabilisationIndex(k: k), as: Int64.self)
            let step = try group.scalarAttribute(AnalysisLayout.Attribute.stabilisationStep(k: k), as: Int64.self)
            // A checkpoint of the series, and its step as stored.
            guard (0..<Int64(count)).contains(index), step == steps[Int(index)] else {
                throw DroptraceError(
                    "/\(base) attributes \(AnalysisLayout.Attribute.stabilisationIndex(k: k)) = \(index) and "
                        + "\(AnalysisLayout.Attribute.stabilisationStep(k: k)) = \(step) name no checkpoint of the \(count) stored",
                    path: file.filePath)
            }
            stabilisation[k] = Stabilisation(index: Int(index), step: step)
        }
        return ModuleSeries(
            module: module, layers: present, rankings: try layerRows(AnalysisLayout.rankings, width: layers), dropSets: dropSets,
            spearmanFinal: try floats(AnalysisLayout.spearmanFinal, within: .correlation),
            kendallFinal: try floats(AnalysisLayout.kendallFinal, within: .correlation),
            spearmanPrevious: try floats(AnalysisLayout.spearmanPrevious, within: .correlation),
            kendallPrevious: try floats(AnalysisLayout.kendallPrevious, within: .correlation),
            jaccardFinal: jaccard, stabilisation: stabilisation,
            meanImportance: try floats(AnalysisLayout.meanImportance, within: .importance))
    }

    func dataset(_ path: String, shape: [Int]) throws -> HDF5Dataset {
        guard try file.kind(of: path) == .dataset else {
            throw DroptraceError("missing dataset /\(path) (analysis written by another version?)", path: file.filePath)
        }
        let dataset = try file.dataset(path)
        guard dataset.shape == shape, dataset.elementType.isNumeric else {
            throw DroptraceError("/\(path) has shape \(dataset.shape) of \(dataset.elementType), expected \(shape) "
                                    + "numbers", path: file.filePath)
        }
        return dataset
    }
}

import DroptraceSupport
import ScoreStore

/// The bootstrap's part of `/analysis` (see `AnalysisLayout`): the settings
/// as attributes of `/analysis`, intervals and drop-k probabilities next to
/// each module's other datasets.
extension SeriesUncertainty {
    func write(into file: HDF5File, checkpoints count: Int, layers: Int, dropK: [Int]) throws {
        typealias Names = AnalysisLayout.Attribute
        let root = try file.group(AnalysisLayout.group)
        try root.setAttribute(Names.bootstrapReplicates, Int64(settings.replicates))
        try root.setAttribute(Names.bootstrapSeed, Int64(settings.seed))
        try root.setAttribute(Names.bootstrapConfidence, settings.confidence)
        try root.setAttribute(Names.bootstrapSequences, Int64(sequences))
        let storage = ScoreFileLayout.storage
        for module in ModuleKind.allCases {
            let series = self[module]
            let group = try file.group(AnalysisLayout.moduleGroup(module))
            let matrices = [(AnalysisLayout.importanceLow, series.importanceLow),
                            (AnalysisLayout.importanceHigh, series.importanceHigh)]
                + dropK.compactMap { k in series.dropProbability[k].map { (AnalysisLayout.dropProbability(k: k), $0) } }
            for (name, rows) in matrices {
                try group.createDataset(name, values: rows.flatMap { $0 }, shape: [count, layers], storage: storage)
            }
            for (name, intervals) in Self.perCheckpoint(series) {
                let (low, high) = AnalysisLayout.intervalEnds(name)
                try group.createDataset(low, values: intervals.map(\.low), storage: storage)
                try group.createDataset(high, values: intervals.map(\.high), storage: storage)
            }
        }
    }

    /// The per-checkpoint statistics that have intervals, by dataset name.
    static func perCheckpoint(_ series: ModuleUncertainty) -> [(String, [ConfidenceInterval])] {
        [(AnalysisLayout.meanImportance, series.meanImportance),
         (AnalysisLayout.spearmanFinal, series.spearmanFinal),
         (AnalysisLayout.kendallFinal, series.kendallFinal)]
    }

    /// What `write` stored, or nil when the analysis has no bootstrap (no
    /// `bootstrap_replicates` attribute). Every shape and range is checked.
    static func read(with reader: StoredModuleReader) throws -> SeriesUncertainty? {
        typealias Names = AnalysisLayout.Attribute
        let file = reader.file
        let root = try file.group(AnalysisLayout.group)
        guard try root.hasAttribute(Names.bootstrapReplicates) else { return nil }
        func bad(_ what: String) -> DroptraceError {
            DroptraceError("/\(AnalysisLayout.group) attribute \(what)", path: file.filePath)
        }
        let replicates = try root.scalarAttribute(Names.bootstrapReplicates, as: Int64.self)
        let seed = try root.scalarAttribute(Names.bootstrapSeed, as: Int64.self)
        let confidence = try root.scalarAttribute(Names.bootstrapConfidence, as: Double.self)
        let sequences = try root.scalarAttribute(Names.bootstrapSequences, as: Int64.self)
        guard seed >= 0 else { throw bad("\(Names.bootstrapSeed) is \(seed), expected ≥ 0") }
        guard sequences >= 2, sequences <= Int64(Int32.max) else {
            throw bad("\(Names.bootstrapSequences) is \(sequences), expected ≥ 2")
        }
        let range = BootstrapSettings.replicateRange
        guard replicates >= Int64(range.lowerBound), replicates <= Int64(range.upperBound) else {
            throw bad("\(Names.bootstrapReplicates) is \(replicates), expected \(range.lowerBound)...\(range.upperBound)")
        }
        let settings = BootstrapSettings(replicates: Int(replicates), seed: UInt64(seed), confidence: confidence)
        guard (try? settings.validated()) != nil else {
            throw bad("\(Names.bootstrapConfidence) is \(confidence), expected strictly between 0 and 1")
        }
        return SeriesUncertainty(
            settings: settings, sequences: Int(sequences), attention: try reader.readUncertainty(.attention),
            mlp: try reader.readUncertainty(.mlp), block: try reader.readUncertainty(.block))
    }
}

extension StoredModuleReader {
    func readUncertainty(_ module: ModuleKind) throws -> ModuleUncertainty {
        let base = AnalysisLayout.moduleGroup(module)
        func matrix(_ name: String) throws -> [[Float]] {
            let flat = try dataset("\(base)/\(name)", shape: [count, layers]).read(as: Float.self)
            return (0..<count).map { Array(flat[($0 * layers)..<(($0 + 1) * layers)]) }
        }
        /// Throws unless each interval is one a bootstrap gives: ends in
        /// order and in `domain`, or both NaN (nothing measured).
        func check(_ low: [Double], _ high: [Double], _ name: String, _ domain: Domain) throws {
            for (index, (a, b)) in zip(low, high).enumerated() where !(a.isNaN && b.isNaN) {
                guard domain.range.contains(a), domain.range.contains(b), a <= b else {
                    throw DroptraceError(
                        "/\(base)/\(name) holds the interval [\(a), \(b)] at \(index), not one within \(domain.text) in order: "
                            + "it was not written by droptrace", path: file.filePath)
                }
            }
        }
        func intervals(_ name: String, _ domain: Domain) throws -> [ConfidenceInterval] {
            let (lowName, highName) = AnalysisLayout.intervalEnds(name)
            let low = try dataset("\(base)/\(lowName)", shape: [count]).read(as: Double.self)
            let high = try dataset("\(base)/\(highName)", shape: [count]).read(as: Double.self)
            try check(low, high, name, domain)
            return zip(low, high).map { ConfidenceInterval(low: $0, high: $1) }
        }
        let (importanceLow, importanceHigh) = (try matrix(AnalysisLayout.importanceLow), try matrix(AnalysisLayout.importanceHigh))
        try check(
            importanceLow.joined().map(Double.init), importanceHigh.joined().map(Double.init),
            "\(AnalysisLayout.importanceLow), \(AnalysisLayout.importanceHigh)", .importance)
        var probability: [Int: [[Float]]] = [:]
        let present = try moduleLayers(module).count
        for k in dropK where k <= present {
            let name = AnalysisLayout.dropProbability(k: k)
            let rows = try matrix(name)
            if let outside = rows.joined().first(where: { !($0 >= 0 && $0 <= 1) }) {
                throw DroptraceError("/\(base)/\(name) holds \(outside), not a probability in [0, 1]",
                                     path: file.filePath)
            }
            // Each replicate drops k layers (fewer only where importances are undefined): a checkpoint's
            // probabilities add up to at most k. (`reseal` recomputes them all.)
            if let index = rows.indices.first(where: { rows[$0].reduce(0, +) > Float(k) + 1e-3 }) {
                throw DroptraceError(
                    "/\(base)/\(name) holds probabilities adding up to \(rows[index].reduce(0, +)) for checkpoint \(index + 1), "
                        + "more than the \(k) layers each replicate drops: it was not written by droptrace", path: file.filePath)
            }
            probability[k] = rows
        }
        return ModuleUncertainty(
            importanceLow: importanceLow, importanceHigh: importanceHigh, dropProbability: probability,
            meanImportance: try intervals(AnalysisLayout.meanImportance, .importance),
            spearmanFinal: try intervals(AnalysisLayout.spearmanFinal, .correlation),
            kendallFinal: try intervals(AnalysisLayout.kendallFinal, .correlation))
    }
}

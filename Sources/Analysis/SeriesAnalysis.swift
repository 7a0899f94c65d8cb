import DroptraceSupport
import ScoreStore

/// The analysis of a whole training run: for attention, MLP and block,
/// rankings, drop-k sets, rank correlations, overlaps and stabilisation,
/// plus the verdict on whether attention redundancy is inherent.
///
/// A pure computation on score-file rows (`init(rows:dropK:)`); it can be
/// stored in and read back from the score file (`AnalysisStore.swift`).
public struct SeriesAnalysis: Sendable, Equatable {
    /// [C] training steps of the checkpoints, in row order (-1 when unknown).
    public var steps: [Int64]
    /// L.
    public var layers: Int
    /// The analysed k values, ascending.
    public var dropK: [Int]
    public var attention: ModuleSeries
    public var mlp: ModuleSeries
    public var block: ModuleSeries
    public var verdict: Verdict
    /// Bootstrap intervals and drop-k stability; nil when the rows carry no
    /// per-sequence sums (stores written before they were recorded).
    public var uncertainty: SeriesUncertainty?

    public init(
        steps: [Int64], layers: Int, dropK: [Int], attention: ModuleSeries, mlp: ModuleSeries, block: ModuleSeries,
        verdict: Verdict, uncertainty: SeriesUncertainty? = nil
    ) {
        self.steps = steps
        self.layers = layers
        self.dropK = dropK
        self.attention = attention
        self.mlp = mlp
        self.block = block
        self.verdict = verdict
        self.uncertainty = uncertainty
    }

    /// Throws unless `dropK` is non-empty and each value is in 1...`layers`;
    /// the error names `path` (the file that says how many layers) when
    /// given, or the pipeline file of `setting` with `path` in the message.
    public static func checkDropK(
        _ dropK: [Int], layers: Int, path: String? = nil, setting: UserSetting = UserSetting(name: "drop-k")
    ) throws {
        if let bad = dropK.first(where: { !(1...max(layers, 1)).contains($0) }) {
            let model = switch (setting.file, path) {
            case (.some, .some(let path)): "the model (\(path))"
            default: "the model"
            }
            throw DroptraceError(
                "\(setting.name) \(bad) is out of range: \(model) has \(layers) layers, so \(setting.name) is 1 to \(layers)",
                path: setting.file ?? path)
        }
        guard !dropK.isEmpty else { throw DroptraceError("no drop-k values to analyse", path: path) }
    }

    /// Analyses `rows` (ordered by step, as a score file keeps them).
    /// `dropK` defaults to each module's `defaultDropK` (`analysedDropK`);
    /// values are deduplicated and sorted, and each must be in 1...L. When
    /// every row carries its per-sequence sums, the analysis also gets
    /// bootstrap intervals (`ImportanceBootstrap`, drawn as `bootstrap`
    /// says) and the verdict weighs them; rows stored without sums give the
    /// point analysis alone.
    /// - Throws: `DroptraceError` for rows of different layer counts, a bad
    ///   k, or sums that do not fit the rows.
    public init(rows: [CheckpointRow], dropK: [Int]? = nil, bootstrap: BootstrapSettings = .standard) throws {
        guard let first = rows.first else {
            throw DroptraceError("cannot analyse a run without checkpoints")
        }
        let layers = first.attention.count
        guard layers > 0 else {
            throw DroptraceError("cannot analyse checkpoint '\(first.name)': it has no layers")
        }
        for row in rows {
            for module in ModuleKind.allCases where module.importance(in: row).count != layers {
                throw DroptraceError(
                    "cannot analyse checkpoint '\(row.name)': \(module.rawValue) has "
                        + "\(module.importance(in: row).count) layers, the first checkpoint has \(layers)")
            }
        }
        let steps = rows.map(\.step)
        let importance = Dictionary(uniqueKeysWithValues: ModuleKind.allCases.map { module in
            (module, rows.map { module.importance(in: $0).map(Double.init) })
        })
        let ks = try Self.analysedDropK(
            dropK, layers: layers,
            moduleLayers: ModuleKind.allCases.map { ModuleSeries.presentLayers(importance[$0]!).count })
        func series(_ module: ModuleKind) -> ModuleSeries {
            ModuleSeries(module: module, importance: importance[module]!, steps: steps, dropK: ks)
        }
        let attention = series(.attention), mlp = series(.mlp), block = series(.block)
        // One sequence has no spread to resample: the point analysis alone.
        let sums = rows.compactMap(\.sums)
        let bootstrapped = sums.count == rows.count && sums.allSatisfy({ $0.sequenceCount >= 2 })
            ? try ImportanceBootstrap.run(sums: sums, layers: layers, steps: steps, dropK: ks, settings: bootstrap,
                                          names: rows.map(\.name), moduleLayers: [attention.layers, mlp.layers, block.layers])
            : nil
        self.init(
            steps: steps, layers: layers, dropK: ks, attention: attention, mlp: mlp, block: block,
            verdict: Verdict.evaluate(
                attention: attention, mlp: mlp, attentionImportance: importance[.attention]!, steps: steps,
                intervals: bootstrapped?.criterionIntervals, confidence: bootstrap.confidence),
            uncertainty: bootstrapped?.uncertainty)
    }

    /// The k values an analysis of `layers` layers asked for `dropK` uses:
    /// deduplicated and sorted; when nil, the defaults of each module's
    /// layer count (`DropSets.defaultDropK(moduleLayers:)`; `moduleLayers`
    /// [3] in `ModuleKind` order, every module in all `layers` when nil).
    /// - Throws: `DroptraceError` as `checkDropK`.
    public static func analysedDropK(_ dropK: [Int]?, layers: Int, moduleLayers: [Int]? = nil) throws -> [Int] {
        let ks = Array(Set(dropK ?? DropSets.defaultDropK(moduleLayers: moduleLayers ?? [layers]))).sorted()
        try checkDropK(ks, layers: layers)
        return ks
    }

    /// C.
    public var checkpointCount: Int { steps.count }

    /// The analysed k attention has drop-k sets for (those up to its layer
    /// count): the k whose drops perplexity and task accuracy are measured at.
    public var attentionDropK: [Int] { attention.analysedK(dropK) }

    public subscript(module: ModuleKind) -> ModuleSeries {
        switch module {
        case .attention: attention
        case .mlp: mlp
        case .block: block
        }
    }
}

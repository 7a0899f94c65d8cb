import DroptraceSupport
import ScoreStore

/// One run of a comparison: what its store holds.
public struct ComparedRun: Sendable {
    /// How the comparison names the run (e.g. its output directory's name).
    public var label: String
    /// The store it was read from, for messages.
    public var path: String
    public var scoreFile: ScoreFile
    /// The run's own analysis: the stored one, or computed from its rows when
    /// the store has none. Its verdict is the run's verdict.
    public var analysis: SeriesAnalysis
    /// Whether `analysis` was read from the store (false: computed from the
    /// rows of a file without one, such as `droptrace score`'s).
    public var analysisStored: Bool

    public init(label: String, path: String, scoreFile: ScoreFile, analysis: SeriesAnalysis, analysisStored: Bool = true) {
        self.label = label
        self.path = path
        self.scoreFile = scoreFile
        self.analysis = analysis
        self.analysisStored = analysisStored
    }
}

/// Mean and spread of one number across the runs that have it.
public struct Spread: Sendable, Equatable {
    /// Runs with a finite value.
    public var count: Int
    /// NaN when `count` is 0.
    public var mean: Double
    public var min: Double
    public var max: Double
    /// Sample standard deviation (n − 1); NaN when `count` < 2.
    public var standardDeviation: Double

    public init(_ values: [Double]) {
        let finite = values.filter(\.isFinite)
        count = finite.count
        guard let lo = finite.min(), let hi = finite.max() else {
            (mean, min, max, standardDeviation) = (.nan, .nan, .nan, .nan)
            return
        }
        let mean = finite.reduce(0, +) / Double(finite.count)
        self.mean = mean
        (min, max) = (lo, hi)
        standardDeviation = finite.count < 2 ? .nan
            : (finite.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(finite.count - 1)).squareRoot()
    }

    /// max − min; NaN when no run has a value.
    public var range: Double { max - min }
}

/// Several runs of one architecture side by side (seeds of one recipe, the
/// same recipe on other data...): per training position (matched by tokens
/// seen, else by step, else by checkpoint name), the mean and spread of
/// importance per layer and module across runs, how far their drop-k sets
/// agree, and each run's own verdict.
///
/// A pure computation on the runs' rows and analyses.
public struct RunComparison: Sendable {
    /// How checkpoints of different runs are matched.
    public enum Alignment: String, Sendable {
        /// Every checkpoint of every run records its tokens seen.
        case tokens
        /// Every checkpoint records its step (but not all their tokens).
        case step
        /// Neither is known everywhere: checkpoints match by name.
        case name
    }

    /// One point of training, with the row of each run there (nil: a gap).
    public struct Position: Sendable, Equatable {
        /// Tokens seen (`.tokens`) or step (`.step`); -1 with `.name`.
        public var value: Int64
        /// The checkpoint's name; where runs name it differently (matched by
        /// tokens or step), each name once in run order, joined by " / ".
        public var name: String
        /// [R] row index of each run at this position, nil where the run has no such checkpoint.
        public var rows: [Int?]

        /// Runs that have this checkpoint.
        public var present: Int { rows.compactMap { $0 }.count }
    }

    public var runs: [ComparedRun]
    public var modelType: String
    /// L, the same in every run.
    public var layers: Int
    public var alignment: Alignment
    /// Positions in training order.
    public var positions: [Position]
    /// The compared drop-k sizes: 25% and 50% of the layers each module is
    /// in (its fewest in any run, `ModuleSeries.layers`), together; a module
    /// is compared at those up to its own count (`agreement`, `dropCounts`).
    public var dropK: [Int]
    /// The k the runs' verdicts use: round(A/2) of the A layers with attention.
    public var verdictK: Int
    /// module → [P][L] importance of each layer across runs.
    public var importance: [ModuleKind: [[Spread]]]
    /// module → [P] the runs' mean importance over layers, across runs.
    public var meanImportance: [ModuleKind: [Spread]]
    /// module → k → [P] mean pairwise Jaccard of the runs' drop-k sets (NaN
    /// where fewer than two runs have the checkpoint).
    public var agreement: [ModuleKind: [Int: [Double]]]
    /// module → k → [P][L] how many runs present at the position have the layer in their drop-k set.
    public var dropCounts: [ModuleKind: [Int: [[Int]]]]

    /// Compares `runs`.
    /// - Throws: `DroptraceError` naming the offending store when fewer than
    ///   two runs are given, a store holds no checkpoint, the runs differ in
    ///   model_type, num_layers, hidden_size or layer shapes (`isSameModel`), two stores hold the same run
    ///   (`ScoreFile.isSameRun`: a copy), or no key matches checkpoints (names repeated within a store).
    public init(runs: [ComparedRun]) throws {
        guard let first = runs.first else { throw DroptraceError("no stores to compare") }
        guard runs.count >= 2 else {
            throw DroptraceError("only one store given; compare needs at least two", path: first.path)
        }
        let model = first.scoreFile.metadata
        for (index, run) in runs.enumerated() {
            let metadata = run.scoreFile.metadata
            // Every pair: a store that records no width or layer shapes agrees with any, so
            // agreeing with the first store alone does not make two later ones agree.
            for earlier in runs[..<index] where !metadata.isSameModel(as: earlier.scoreFile.metadata) {
                let (this, other) = metadata.describedApart(from: earlier.scoreFile.metadata)
                throw DroptraceError(
                    "holds \(SystemError.oneLine(this)), but \(earlier.path) holds \(SystemError.oneLine(other)); compare needs "
                        + "stores of one architecture (the same model_type, num_layers, hidden_size and layer shapes)",
                    path: run.path)
            }
            guard !run.scoreFile.rows.isEmpty else {
                throw DroptraceError("holds no checkpoints", path: run.path)
            }
            // A copy counted as a second run would show agreement that was never measured.
            if let copy = runs[..<index].first(where: { run.scoreFile.isSameRun(as: $0.scoreFile) }) {
                throw DroptraceError(
                    "holds the same run as \(copy.path) (the same checkpoints scored on the same calibration in the same "
                        + "precision: a copy); compare needs distinct runs", path: run.path)
            }
            guard run.analysis.checkpointCount == run.scoreFile.rows.count, run.analysis.layers == metadata.numLayers
            else {
                throw DroptraceError("its analysis does not belong to its rows; rerun `droptrace trace`", path: run.path)
            }
        }
        let layers = model.numLayers
        let (alignment, positions) = try Self.align(runs)
        let moduleLayers = Dictionary(uniqueKeysWithValues: ModuleKind.allCases.map { module in
            (module, runs.map { $0.analysis[module].layers.count }.min()!)
        })
        let dropK = DropSets.defaultDropK(moduleLayers: Array(moduleLayers.values))

        var importance: [ModuleKind: [[Spread]]] = [:]
        var meanImportance: [ModuleKind: [Spread]] = [:]
        var agreement: [ModuleKind: [Int: [Double]]] = [:]
        var dropCounts: [ModuleKind: [Int: [[Int]]]] = [:]
        for module in ModuleKind.allCases {
            // [R][C][L] as Double, and each row's ranking.
            let values = runs.map { run in run.scoreFile.rows.map { module.importance(in: $0).map(Double.init) } }
            let rankings = values.map { $0.map(RankStatistics.ranking) }
            importance[module] = positions.map { position in
                (0..<layers).map { layer in
                    Spread(position.rows.enumerated().compactMap { run, row in row.map { values[run][$0][layer] } })
                }
            }
            meanImportance[module] = positions.map { position in
                Spread(position.rows.enumerated().compactMap { run, row in
                    row.map { runs[run].analysis[module].meanImportance[$0] }
                })
            }
            for k in dropK where k <= moduleLayers[module]! {
                let sets = positions.map { position in
                    position.rows.enumerated().compactMap { run, row in
                        row.map { DropSets.dropSet(ranking: rankings[run][$0], k: k) }
                    }
                }
                agreement[module, default: [:]][k] = sets.map(Self.meanPairwiseJaccard)
                dropCounts[module, default: [:]][k] = sets.map { present in
                    (0..<layers).map { layer in present.filter { $0.contains(layer) }.count }
                }
            }
        }
        self.runs = runs
        modelType = model.modelType
        self.layers = layers
        self.alignment = alignment
        self.positions = positions
        self.dropK = dropK
        verdictK = Verdict.verdictK(layers: moduleLayers[.attention]!)
        self.importance = importance
        self.meanImportance = meanImportance
        self.agreement = agreement
        self.dropCounts = dropCounts
    }

    /// Whether every run was scored on the same calibration tokens.
    public var sameCalibration: Bool {
        Set(runs.map(\.scoreFile.metadata.calibrationSHA256)).count == 1
    }

    /// Whether every run reached the same verdict.
    public var verdictHoldsInEveryRun: Bool {
        Set(runs.map(\.analysis.verdict.outcome)).count == 1
    }

    /// The last position every run has, if any: where the runs' final
    /// states are compared.
    public var lastCommonPosition: Int? {
        positions.lastIndex { $0.present == runs.count }
    }

    /// Mean Jaccard overlap over all pairs of `sets`; NaN with fewer than two.
    public static func meanPairwiseJaccard(_ sets: [[Int]]) -> Double {
        guard sets.count >= 2 else { return .nan }
        var total = 0.0, pairs = 0
        for i in sets.indices {
            for j in sets.indices where j > i {
                total += DropSets.jaccard(sets[i], sets[j])
                pairs += 1
            }
        }
        return total / Double(pairs)
    }

    /// Matches checkpoints by the first key every run knows for every row
    /// without repeats: tokens seen, then step, then name.
    static func align(_ runs: [ComparedRun]) throws -> (Alignment, [Position]) {
        func usable(_ key: (CheckpointRow) -> Int64) -> Bool {
            runs.allSatisfy { run in
                let keys = run.scoreFile.rows.map(key)
                return keys.allSatisfy { $0 >= 0 } && Set(keys).count == keys.count
            }
        }
        let keys: [(Alignment, (CheckpointRow) -> Int64)] = [(.tokens, { $0.tokens }), (.step, { $0.step })]
        for (alignment, key) in keys where usable(key) {
            let values = Set(runs.flatMap { $0.scoreFile.rows.map(key) }).sorted()
            let lookup = runs.map { run in
                Dictionary(run.scoreFile.rows.enumerated().map { (key($1), $0) }, uniquingKeysWith: { a, _ in a })
            }
            let positions = values.map { value in
                let rows = lookup.map { $0[value] }
                var names: [String] = []
                for (run, row) in rows.enumerated() {
                    if let row, case let name = runs[run].scoreFile.rows[row].name, !names.contains(name) { names.append(name) }
                }
                return Position(value: value, name: names.joined(separator: " / "), rows: rows)
            }
            return (alignment, positions)
        }
        var names: [String] = []
        var seen = Set<String>()
        var lookup: [[String: Int]] = []
        for run in runs {
            var rows: [String: Int] = [:]
            for (index, row) in run.scoreFile.rows.enumerated() {
                guard rows[row.name] == nil else {
                    throw DroptraceError(
                        "holds checkpoint '\(SystemError.oneLine(row.name))' twice and its steps are unknown, so its "
                            + "checkpoints cannot be matched with the other runs'", path: run.path)
                }
                rows[row.name] = index
                if seen.insert(row.name).inserted { names.append(row.name) }
            }
            lookup.append(rows)
        }
        return (.name, names.map { name in Position(value: -1, name: name, rows: lookup.map { $0[name] }) })
    }
}

/// Where a drop-k set stops changing.
public struct Stabilisation: Sendable, Equatable {
    /// Index of the earliest checkpoint from which the drop-k set is the same
    /// at every later checkpoint.
    public var index: Int
    /// That checkpoint's training step (-1 when the step is unknown).
    public var step: Int64

    public init(index: Int, step: Int64) {
        self.index = index
        self.step = step
    }
}

/// Everything the analysis derives for one module type across the run.
/// Arrays indexed by checkpoint follow the score file's row order (by step).
///
/// The module is analysed on the layers it is in (`layers`): a layer whose
/// score is undefined at every checkpoint has no such module (Nemotron-H's
/// layers hold attention, a Mamba-2 mixer or an MLP alone) or had it removed
/// by the checkpoints' own drop lists. Means and rank correlations are taken
/// over the module's layers, and drop-k sets exist for k up to their count.
public struct ModuleSeries: Sendable {
    public var module: ModuleKind
    /// [A]: the layers the module is in, ascending (every layer of most models).
    public var layers: [Int]
    /// [C][L]: layer indices by ascending importance, ties to the lower index,
    /// undefined scores last.
    public var rankings: [[Int]]
    /// k → [C][k]: the k least important layers, sorted by layer index; for
    /// each analysed k up to A (a module in fewer layers has no drop-k set).
    public var dropSets: [Int: [[Int]]]
    /// [C] rank correlations with the final checkpoint's importance vector
    /// over the module's layers
    /// (1 for the final checkpoint itself unless its vector is constant).
    public var spearmanFinal: [Double]
    public var kendallFinal: [Double]
    /// [C] rank correlations with the previous checkpoint (NaN for the first).
    public var spearmanPrevious: [Double]
    public var kendallPrevious: [Double]
    /// k → [C]: Jaccard overlap of each drop-k set with the final checkpoint's.
    public var jaccardFinal: [Int: [Double]]
    /// k → where the drop-k set settles.
    public var stabilisation: [Int: Stabilisation]
    /// [C] mean importance over the module's layers.
    public var meanImportance: [Double]

    public init(
        module: ModuleKind, layers: [Int], rankings: [[Int]], dropSets: [Int: [[Int]]],
        spearmanFinal: [Double], kendallFinal: [Double], spearmanPrevious: [Double], kendallPrevious: [Double],
        jaccardFinal: [Int: [Double]], stabilisation: [Int: Stabilisation], meanImportance: [Double]
    ) {
        self.module = module
        self.layers = layers
        self.rankings = rankings
        self.dropSets = dropSets
        self.spearmanFinal = spearmanFinal
        self.kendallFinal = kendallFinal
        self.spearmanPrevious = spearmanPrevious
        self.kendallPrevious = kendallPrevious
        self.jaccardFinal = jaccardFinal
        self.stabilisation = stabilisation
        self.meanImportance = meanImportance
    }

    /// Computes the series from `importance` ([C][L], C ≥ 1) at the given
    /// `steps` ([C]) for every k in `dropK` (each in 1...L) up to the number
    /// of layers the module is in (`presentLayers`).
    public init(module: ModuleKind, importance: [[Double]], steps: [Int64], dropK: [Int]) {
        precondition(!importance.isEmpty && importance.count == steps.count, "one step per checkpoint")
        let count = importance.count
        let layers = Self.presentLayers(importance)
        // Correlations and means over the module's layers only: an absent one would make every one undefined.
        let present = importance.map { row in layers.map { row[$0] } }
        let final = present[count - 1]
        let rankings = importance.map(RankStatistics.ranking)

        var dropSets: [Int: [[Int]]] = [:]
        var jaccard: [Int: [Double]] = [:]
        var stabilisation: [Int: Stabilisation] = [:]
        for k in dropK where k <= layers.count {
            let sets = rankings.map { DropSets.dropSet(ranking: $0, k: k) }
            dropSets[k] = sets
            jaccard[k] = sets.map { DropSets.jaccard($0, sets[count - 1]) }
            let index = DropSets.stabilisationIndex(sets)!
            stabilisation[k] = Stabilisation(index: index, step: steps[index])
        }

        self.init(
            module: module, layers: layers, rankings: rankings, dropSets: dropSets,
            spearmanFinal: present.map { RankStatistics.spearman($0, final) },
            kendallFinal: present.map { RankStatistics.kendallTauB($0, final) },
            spearmanPrevious: present.indices.map { index in
                index == 0 ? .nan : RankStatistics.spearman(present[index], present[index - 1])
            },
            kendallPrevious: present.indices.map { index in
                index == 0 ? .nan : RankStatistics.kendallTauB(present[index], present[index - 1])
            },
            jaccardFinal: jaccard, stabilisation: stabilisation,
            // NaN propagates: a checkpoint with an undefined score among the module's layers has no mean.
            meanImportance: present.map { $0.reduce(0, +) / Double($0.count) })
    }

    /// The layers a module is in, from its importance ([C][L]): those with
    /// a score at some checkpoint. A layer scored at none lacks the module
    /// or had it dropped; every layer when none is scored at all (nothing
    /// to tell them apart by).
    public static func presentLayers(_ importance: [[Double]]) -> [Int] {
        let layers = importance.first?.count ?? 0
        let present = (0..<layers).filter { layer in importance.contains { !$0[layer].isNaN } }
        return present.isEmpty ? Array(0..<layers) : present
    }

    /// The k of `dropK` this module has drop-k sets for: those up to its layer count.
    public func analysedK(_ dropK: [Int]) -> [Int] {
        dropK.filter { $0 <= layers.count }
    }

    public var checkpointCount: Int { rankings.count }

    /// The drop-k set of one checkpoint ([] if k was not analysed).
    public func dropSet(checkpoint: Int, k: Int) -> [Int] {
        dropSets[k]?[checkpoint] ?? []
    }
}

extension ModuleSeries: Equatable {
    // Undefined correlations are NaN; a series must still equal itself and
    // its own round trip through a file, so NaNs in the same places match.
    public static func == (lhs: ModuleSeries, rhs: ModuleSeries) -> Bool {
        func same(_ a: [Double], _ b: [Double]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) }
        }
        func same(_ a: [Int: [Double]], _ b: [Int: [Double]]) -> Bool {
            Set(a.keys) == Set(b.keys) && a.allSatisfy { key, value in same(value, b[key]!) }
        }
        return lhs.module == rhs.module && lhs.layers == rhs.layers && lhs.rankings == rhs.rankings && lhs.dropSets == rhs.dropSets
            && same(lhs.spearmanFinal, rhs.spearmanFinal) && same(lhs.kendallFinal, rhs.kendallFinal)
            && same(lhs.spearmanPrevious, rhs.spearmanPrevious) && same(lhs.kendallPrevious, rhs.kendallPrevious)
            && same(lhs.jaccardFinal, rhs.jaccardFinal) && lhs.stabilisation == rhs.stabilisation
            && same(lhs.meanImportance, rhs.meanImportance)
    }
}

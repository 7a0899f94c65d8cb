import DroptraceSupport

/// Bootstrap results for one module type (C checkpoints, L layers).
public struct ModuleUncertainty: Sendable, Equatable {
    /// [C][L] ends of the importance intervals (float32, as stored).
    public var importanceLow: [[Float]]
    public var importanceHigh: [[Float]]
    /// k → [C][L]: the share of replicates in which the layer is in the
    /// checkpoint's drop-k set.
    public var dropProbability: [Int: [[Float]]]
    /// [C] intervals of the mean importance over layers.
    public var meanImportance: [ConfidenceInterval]
    /// [C] intervals of Spearman ρ and Kendall τ-b with the final checkpoint
    /// (each replicate correlates with the same replicate of the final one).
    public var spearmanFinal: [ConfidenceInterval]
    public var kendallFinal: [ConfidenceInterval]

    public init(importanceLow: [[Float]], importanceHigh: [[Float]], dropProbability: [Int: [[Float]]],
                meanImportance: [ConfidenceInterval], spearmanFinal: [ConfidenceInterval],
                kendallFinal: [ConfidenceInterval]) {
        self.importanceLow = importanceLow
        self.importanceHigh = importanceHigh
        self.dropProbability = dropProbability
        self.meanImportance = meanImportance
        self.spearmanFinal = spearmanFinal
        self.kendallFinal = kendallFinal
    }

    /// The importance interval of one layer at one checkpoint.
    public func importance(checkpoint: Int, layer: Int) -> ConfidenceInterval {
        ConfidenceInterval(low: Double(importanceLow[checkpoint][layer]),
                           high: Double(importanceHigh[checkpoint][layer]))
    }

    /// The drop-k membership probability of a layer (NaN if k was not analysed).
    public func dropProbability(checkpoint: Int, layer: Int, k: Int) -> Double {
        dropProbability[k].map { Double($0[checkpoint][layer]) } ?? .nan
    }

    /// Whether `dropSet` (the point estimate's drop-k set of `checkpoint`) is
    /// stable: every member is in the drop-k set in at least
    /// `SeriesUncertainty.stableProbability` of the replicates. False when k
    /// was not analysed.
    public func isStable(_ dropSet: [Int], checkpoint: Int, k: Int) -> Bool {
        guard let rows = dropProbability[k] else { return false }
        return dropSet.allSatisfy { rows[checkpoint][$0] >= Self.clearlyIn }
    }

    /// Whether the layer's drop-k membership is unsettled under resampling:
    /// neither clearly in (probability ≥ 0.95) nor clearly out (≤ 0.05).
    public func isUnstable(checkpoint: Int, layer: Int, k: Int) -> Bool {
        guard let rows = dropProbability[k] else { return false }
        return rows[checkpoint][layer] > Self.clearlyOut && rows[checkpoint][layer] < Self.clearlyIn
    }

    // The thresholds as float32, the type the shares are stored in: a share
    // of exactly 950 in 1000 replicates is Float(0.95), below the Double 0.95.
    // With at most 20,000 replicates (`BootstrapSettings.replicateRange`) a
    // share on the other side of 0.95 or 0.05 never rounds onto it.
    private static let clearlyIn = Float(SeriesUncertainty.stableProbability)
    private static let clearlyOut = Float(1 - SeriesUncertainty.stableProbability)
}

/// How much the analysis moves with the calibration sample: percentile
/// bootstrap intervals from resampling calibration sequences (see
/// `ImportanceBootstrap`).
public struct SeriesUncertainty: Sendable, Equatable {
    public var settings: BootstrapSettings
    /// S, the calibration sequences resampled.
    public var sequences: Int
    public var attention: ModuleUncertainty
    public var mlp: ModuleUncertainty
    public var block: ModuleUncertainty

    /// A drop set is stable when each member's probability is at least this.
    public static let stableProbability = 0.95

    /// Fewer calibration sequences than this make rough intervals, and the
    /// report says so: the percentile bootstrap's coverage falls short of its
    /// confidence for small samples (Efron & Tibshirani, *An Introduction to
    /// the Bootstrap*, 1993, ch. 13).
    public static let fewSequences = 10

    public init(settings: BootstrapSettings, sequences: Int, attention: ModuleUncertainty, mlp: ModuleUncertainty,
                block: ModuleUncertainty) {
        self.settings = settings
        self.sequences = sequences
        self.attention = attention
        self.mlp = mlp
        self.block = block
    }

    public subscript(module: ModuleKind) -> ModuleUncertainty {
        switch module {
        case .attention: attention
        case .mlp: mlp
        case .block: block
        }
    }
}

extension ModuleUncertainty {
    // NaN ends (undefined scores) must match their own round trip.
    public static func == (lhs: ModuleUncertainty, rhs: ModuleUncertainty) -> Bool {
        lhs.agrees(with: rhs, by: ConfidenceInterval.sameValue)
    }

    /// Whether the two hold the same numbers by `same` (applied to every
    /// interval end and probability): `==` exactly, or within a tolerance.
    func agrees(with other: ModuleUncertainty, by same: (Double, Double) -> Bool) -> Bool {
        func rows(_ a: [[Float]], _ b: [[Float]]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { x, y in
                x.count == y.count && zip(x, y).allSatisfy { same(Double($0), Double($1)) }
            }
        }
        func intervals(_ a: [ConfidenceInterval], _ b: [ConfidenceInterval]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { $0.agrees(with: $1, by: same) }
        }
        return rows(importanceLow, other.importanceLow) && rows(importanceHigh, other.importanceHigh)
            && Set(dropProbability.keys) == Set(other.dropProbability.keys)
            && dropProbability.allSatisfy { k, probability in rows(probability, other.dropProbability[k]!) }
            && intervals(meanImportance, other.meanImportance) && intervals(spearmanFinal, other.spearmanFinal)
            && intervals(kendallFinal, other.kendallFinal)
    }
}

import ScoreStore

/// The published ways of measuring how redundant a layer is, each read from
/// the same pass. Lower is more redundant for every one of them, so each
/// drops its k lowest layers.
public enum RedundancyMethod: String, CaseIterable, Sendable, Codable {
    /// LLM-Drop (He et al. 2024): importance = 1 − mean over tokens of
    /// cos(input, output) of the module on the residual stream.
    case llmDropCosine = "llm_drop_cosine"
    /// ShortGPT's Block Influence (Men et al. 2024): BI_i = 1 − mean over
    /// tokens of cos(h_i, h_{i+1}), i.e. exactly LLM-Drop's block importance
    /// (defined for blocks only).
    case shortGPTBlockInfluence = "shortgpt_block_influence"
    /// Gromov et al. (2024) angular distance arccos(cos)/π, mean over tokens.
    case angularDistance = "angular_distance"
    /// The same at each sequence's last token, mean over sequences (PruneMe's
    /// and Gromov et al.'s choice).
    case angularDistanceLastToken = "angular_distance_last_token"

    /// Name for tables and prose.
    public var displayName: String {
        switch self {
        case .llmDropCosine: "LLM-Drop (1 − cos)"
        case .shortGPTBlockInfluence: "ShortGPT BI (1 − cos)"
        case .angularDistance: "Angular distance"
        case .angularDistanceLastToken: "Angular distance, last token (PruneMe)"
        }
    }

    /// The methods that score `module`: ShortGPT scores whole blocks only.
    public static func methods(for module: ModuleKind) -> [RedundancyMethod] {
        allCases.filter { $0 != .shortGPTBlockInfluence || module == .block }
    }

    /// The method's per-layer values [L] for `module` in `row`; nil when the
    /// row does not record them (angular distances in an older store).
    public func values(_ module: ModuleKind, in row: CheckpointRow) -> [Float]? {
        switch self {
        case .llmDropCosine, .shortGPTBlockInfluence: return module.importance(in: row)
        case .angularDistance, .angularDistanceLastToken:
            guard let angular = row.angularDistance else { return nil }
            let last = self == .angularDistanceLastToken
            switch module {
            case .attention: return last ? angular.attentionLastToken : angular.attention
            case .mlp: return last ? angular.mlpLastToken : angular.mlp
            case .block: return last ? angular.blockLastToken : angular.block
            }
        }
    }
}

/// Which layers each method would drop, for one checkpoint, and where the
/// methods disagree.
public struct MethodDropSets: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var module: ModuleKind
        public var k: Int
        /// The k lowest layers by each method (0-based, ascending), in
        /// `RedundancyMethod` order; methods the row does not record are left out.
        public var sets: [(method: RedundancyMethod, layers: [Int])]
        /// Layers in some of `sets` but not all, ascending; empty when they agree.
        public var disagreement: [Int]

        public static func == (lhs: Entry, rhs: Entry) -> Bool {
            lhs.module == rhs.module && lhs.k == rhs.k && lhs.disagreement == rhs.disagreement
                && lhs.sets.map(\.method) == rhs.sets.map(\.method) && lhs.sets.map(\.layers) == rhs.sets.map(\.layers)
        }
    }

    /// One entry per module type and k, modules in `ModuleKind` order.
    public var entries: [Entry]

    /// - Parameter dropK: k values; for each module those in 1...A, A the
    ///   layers it has a score in (a layer without the module, or whose
    ///   module was dropped, has none), others are skipped.
    public init(row: CheckpointRow, dropK: [Int]) {
        var entries: [Entry] = []
        for module in ModuleKind.allCases {
            let layers = module.importance(in: row).count
            let scored = module.importance(in: row).filter { !$0.isNaN }.count
            for k in dropK where k >= 1 && k <= scored {
                let sets = RedundancyMethod.methods(for: module).compactMap { method -> (RedundancyMethod, [Int])? in
                    guard let values = method.values(module, in: row), values.count == layers else { return nil }
                    let ranking = RankStatistics.ranking(values.map(Double.init))
                    return (method, DropSets.dropSet(ranking: ranking, k: k))
                }
                let union = Set(sets.flatMap(\.1))
                let common = sets.dropFirst().reduce(Set(sets.first?.1 ?? [])) { $0.intersection($1.1) }
                entries.append(Entry(module: module, k: k, sets: sets, disagreement: union.subtracting(common).sorted()))
            }
        }
        self.entries = entries
    }

    /// The k values shown for a single checkpoint: 25% and 50% of the
    /// layers each module has a score in (`DropSets.defaultDropK`), together.
    public static func defaultDropK(row: CheckpointRow) -> [Int] {
        DropSets.defaultDropK(moduleLayers: ModuleKind.allCases.map { module in
            module.importance(in: row).filter { !$0.isNaN }.count
        })
    }
}
